"""Known answers and invariants of the CLIP methods (gcpl.clip), on fixed tensors and on a tiny
random CLIPModel."""
# ruff: noqa: F811  (pytest fixtures imported from test_clip_fixtures)

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_clip_fixtures import (  # noqa: F401
    make_split,
    memory_clip,
    split_file,
    tiny_clip,
    tiny_clip_dir,
)

from gcpl.clip.config import (
    GROUPS,
    ClipJob,
    ClipSettings,
    CocoopConfig,
    CoopConfig,
    KgCoopConfig,
    LinearProbeConfig,
    MapleConfig,
    PromptSrcConfig,
    TipFConfig,
    job_identity,
)
from gcpl.clip.model import frozen_state


def job_for(method: str, data, out, **kw) -> ClipJob:
    """A small job: few epochs; method groups (tip=TipConfig(...), ...) go into its ClipSettings."""
    small = dict(linear_probe=LinearProbeConfig(max_iter=50, search_steps=2), tip_f=TipFConfig(epochs=2),
                 coop=CoopConfig(epochs=2), kgcoop=KgCoopConfig(epochs=2),
                 cocoop=CocoopConfig(epochs=1), maple=MapleConfig(epochs=2),
                 promptsrc=PromptSrcConfig(epochs=3))
    small.update(kw)
    groups = {k: small.pop(k) for k in list(small) if k in GROUPS}
    shots, seed = small.pop("shots", 2), small.pop("seed", 1)
    return ClipJob(method=method, data=str(data), out=str(out), shots=shots, seed=seed, clip=ClipSettings(**groups),
                   **small)


def support_of(clip, job: ClipJob):
    from gcpl.clip.base import Support
    from gcpl.clip.preprocess import ImageBank
    from gcpl.data.splits import few_shot, read_samples

    classes, pool = read_samples(job.data, "train")
    samples = few_shot(pool, job.shots, job.seed)
    return classes, Support(clip, samples, len(classes), ImageBank([s.path for s in samples], clip.spec))


# ----------------------------------------------------------------------------- zero-shot CLIP


def test_zero_shot_follows_the_template(tiny_clip, split_file, tmp_path):
    from gcpl.clip.classic import ZeroShotClip
    from gcpl.clip.features import template_texts

    classes = ["blue", "green", "red"]
    assert template_texts("a photo of a {}, a type of colour.", classes)[2] == "a photo of a red, a type of colour."
    job = job_for("clip-zs", split_file, tmp_path, template="itap of a {}!")
    m = ZeroShotClip(job, tiny_clip, classes)
    tensors, meta = m.fit(None, tmp_path)
    ids = tiny_clip.tokenize([f"itap of a {c}!" for c in classes])
    with torch.no_grad():
        ref = F.normalize(tiny_clip.model.get_text_features(input_ids=ids).pooler_output, dim=-1)
    assert torch.allclose(tensors["text"], ref, atol=1e-5) and meta["template"] == "itap of a {}!"
    m.load(tensors, meta)
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    img = F.normalize(tiny_clip.model.get_image_features(pixel_values=px).pooler_output, dim=-1)
    expected = tiny_clip.model.logit_scale.exp() * img @ ref.t()
    assert torch.allclose(m.logits(px), expected, atol=1e-4)


def test_template_needs_one_slot(split_file, tmp_path):
    from gcpl.errors import GcplError

    for bad in ("a photo", "{} and {}", "a {x} {}"):
        with pytest.raises(GcplError):
            job_for("clip-zs", split_file, tmp_path, template=bad)


# ----------------------------------------------------------------------------- linear probe


def test_linear_probe_solves_a_separable_toy_problem():
    from gcpl.clip.classic import fit_logreg, predict

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    x = torch.cat([c + 0.5 * torch.randn(10, 3, generator=g) for c in centres])
    y = torch.arange(3).repeat_interleave(10)
    w, b = fit_logreg(x, y, 3, c=1.0)
    assert w.shape == (3, 3) and b.shape == (3,)
    assert bool((predict(x, w, b) == y).all())
    xt = torch.cat([c + 0.5 * torch.randn(5, 3, generator=g) for c in centres])
    assert bool((predict(xt, w, b) == torch.arange(3).repeat_interleave(5)).all())
    # stronger regularisation shrinks the weights (scikit-learn's C)
    w_small, _ = fit_logreg(x, y, 3, c=1e-3)
    assert w_small.norm() < w.norm()


def test_c_search_follows_lpclip():
    from gcpl.clip.classic import search_c

    peak = 1e2
    def score(c):  # best just right of 1e2
        return -abs(math.log10(c) - math.log10(peak) - 0.3)

    c, trace = search_c(score, steps=8)
    assert [t["C"] for t in trace[:7]] == [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
    assert trace[7]["C"] == pytest.approx(10.0) and trace[8]["C"] == pytest.approx(1e3)
    assert len(trace) == 7 + 16 and abs(math.log10(c) - 2.3) < 0.1
    flat = search_c(lambda c: 0.5, steps=1)[0]  # ties: the first of the grid, then the left end
    assert flat == pytest.approx(1e5)


# ----------------------------------------------------------------------------- Tip-Adapter


def test_tip_adapter_logits_on_fixed_tensors():
    from gcpl.clip.tip import tip_logits

    f = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = tip_logits(f, text, keys, values, alpha=2.0, beta=3.0, scale=10.0)
    # image 0: zero-shot (10, 0); affinities (1, 0, 0.8) -> exp(-3 (1 - a)) = (1, e^-3, e^-0.6)
    # image 1: zero-shot (6, 8); affinities (0.6, 0.8, 0.96) -> (e^-1.2, e^-0.6, e^-0.12)
    expected = torch.tensor([[10 + 2 * 1.0, 2 * (math.exp(-3) + math.exp(-0.6))],
                             [6 + 2 * math.exp(-1.2), 8 + 2 * (math.exp(-0.6) + math.exp(-0.12))]])
    assert torch.allclose(out, expected, atol=1e-5)


def test_tip_search_grid_and_order():
    from gcpl.clip.tip import best_of, search_grid

    betas, alphas = search_grid((7.0, 3.0), (200, 20))
    assert len(betas) == 200 and len(alphas) == 20
    assert betas[0] == pytest.approx(0.1) and betas[1] == pytest.approx(0.1 + 6.9 / 200)
    assert alphas[-1] == pytest.approx(0.1 + 19 * 2.9 / 20)
    correct = torch.zeros(3, 2, dtype=torch.long)
    correct[1, 1] = correct[2, 0] = 5
    assert best_of(correct, [1.0, 2.0, 3.0], [0.5, 0.7]) == (2.0, 0.7, 5)  # first best, beta outer


def test_tip_cache_keys_are_normalised_means(tiny_clip, split_file, tmp_path):
    from gcpl.clip.tip import TipAdapter

    job = job_for("tip-adapter", split_file, tmp_path)
    classes, support = support_of(tiny_clip, job)
    keys, values = TipAdapter(job, tiny_clip, classes).cache(support)
    assert keys.shape == (6, tiny_clip.embed_dim) and torch.allclose(keys.norm(dim=-1), torch.ones(6))
    assert torch.equal(values.argmax(-1), support.labels) and values.sum() == 6


# ----------------------------------------------------------------------------- KgCoOp


def test_kgcoop_regulariser_on_fixed_tensors():
    from gcpl.clip.coop import kg_loss

    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    hand = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    # cosines 1/sqrt(2) and 1: 1 - mean = 1 - (0.70711 + 1) / 2
    assert float(kg_loss(text, hand)) == pytest.approx(1 - (1 / math.sqrt(2) + 1) / 2, abs=1e-6)
    # = half the paper's mean squared distance of the normalised features
    d = ((F.normalize(text, dim=-1) - F.normalize(hand, dim=-1)) ** 2).sum(-1).mean()
    assert float(kg_loss(text, hand)) == pytest.approx(float(d) / 2, abs=1e-6)


# ----------------------------------------------------------------------------- schedules


def test_dassl_schedule():
    from gcpl.clip.loop import dassl_lr, epoch_batches

    assert dassl_lr(0, 0.002, 10) == 1e-5
    assert dassl_lr(1, 0.002, 10) == pytest.approx(0.002)
    assert dassl_lr(6, 0.002, 10) == pytest.approx(0.002 * (1 + math.cos(math.pi * 5 / 10)) / 2)
    g = torch.Generator().manual_seed(0)
    assert [len(b) for b in epoch_batches(10, 4, g)] == [4, 4]  # Dassl drops the partial batch
    assert [len(b) for b in epoch_batches(3, 4, g)] == [3]  # ... unless there is no full one
    assert [len(b) for b in epoch_batches(10, 4, g, drop_last=False)] == [4, 4, 2]


def test_promptsrc_aggregation_weights_are_gaussian():
    from gcpl.clip.deep import gpa_weights

    w = gpa_weights(50, 30.0, 30.0)
    assert sum(w) == pytest.approx(1.0) and len(w) == 50
    for i, j in ((1, 30), (10, 45), (29, 31)):
        ratio = math.exp(-0.5 * ((i - 30) / 30) ** 2 + 0.5 * ((j - 30) / 30) ** 2)
        assert w[i - 1] / w[j - 1] == pytest.approx(ratio)
    sharp = gpa_weights(50, 45.0, 5.0)
    assert max(range(50), key=lambda k: sharp[k]) == 44 and sum(sharp) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- trained prompts


@pytest.mark.parametrize("method,learnable", [
    ("coop", {"ctx"}), ("kgcoop", {"ctx"}),
    ("cocoop", {"prompts.ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
                "meta_net.linear2.bias"}),
    ("maple", {"prompts.ctx", "prompts.deep.0", "coupling.proj.weight", "coupling.proj.bias",
               "coupling.deep_proj.0.weight", "coupling.deep_proj.0.bias"}),
    ("promptsrc", {"prompts.ctx", "prompts.deep.0", "vision.shallow", "vision.deep.0"}),
])
def test_training_changes_only_the_prompts(tiny_clip, split_file, tmp_path, method, learnable):
    from gcpl.clip.loop import init_generator
    from gcpl.clip.methods import make_method

    job = job_for(method, split_file, tmp_path)
    classes, support = support_of(tiny_clip, job)
    before = frozen_state(tiny_clip)
    m = make_method(job, tiny_clip, classes)
    initial = {k: v.clone() for k, v in m.build(init_generator(job.seed, method)).state_dict().items()}
    tensors, meta = m.fit(support, tmp_path, progress=False)
    after = frozen_state(tiny_clip)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in tiny_clip.model.parameters())
    assert set(tensors) == learnable and set(initial) == learnable
    assert any(not torch.equal(initial[k], tensors[k]) for k in learnable)
    if method in ("coop", "kgcoop"):
        assert not torch.equal(initial["ctx"], tensors["ctx"])
    assert len(meta["train_log"]) == meta["epochs"]


def test_context_init_and_prompt_text(tiny_clip):
    from gcpl.clip.prompts import TextPrompts

    classes = ["red", "dark green"]
    init = TextPrompts(tiny_clip, classes, None, "a photo of a")
    assert init.n_ctx == 4 and init.prefix_text == "a photo of a"
    emb = tiny_clip.token_embeddings(tiny_clip.tokenize(["a photo of a red."]))
    assert torch.equal(init.ctx.data, emb[0, 1:5]) and torch.equal(init.embeds()[0], emb[0])
    maple = TextPrompts(tiny_clip, classes, 2, "a photo of a", deep=1)  # "a photo" learned, "of a" stays text
    assert torch.equal(maple.ctx.data, emb[0, 1:3]) and torch.equal(maple.embeds()[0], emb[0])
    rand = TextPrompts(tiny_clip, classes, 16, "", generator=torch.Generator().manual_seed(0))
    assert rand.prefix_text == " ".join(["X"] * 16) and rand.ctx.shape == (16, tiny_clip.text_width)
    assert 0.01 < float(rand.ctx.detach().std()) < 0.03
    x_ids = tiny_clip.tokenize([rand.prefix_text + " dark green."])
    assert torch.equal(rand.ids[1], x_ids[0])  # the class name follows the 16 context slots
    csc = TextPrompts(tiny_clip, classes, 4, "", csc=True, generator=torch.Generator().manual_seed(0))
    assert csc.ctx.shape == (2, 4, tiny_clip.text_width) and csc.embeds().shape == (2, 77, tiny_clip.text_width)


def test_cocoop_meta_network_shifts_each_image(tiny_clip, split_file, tmp_path):
    from gcpl.clip.coop import CoCoOp
    from gcpl.clip.loop import init_generator

    job = job_for("cocoop", split_file, tmp_path)
    m = CoCoOp(job, tiny_clip, ["blue", "green", "red"])
    m.learner = m.build(init_generator(1, "cocoop"))
    with torch.no_grad():  # a live hidden unit whatever the random draw (the tiny E / 16 is 1 unit)
        m.learner.meta_net.linear1.bias.fill_(1.0)
    img = F.normalize(torch.randn(3, tiny_clip.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    shift = m.learner.meta_net(img)
    assert shift.shape == (3, tiny_clip.text_width)
    assert m.learner.meta_net.linear1.out_features == max(1, tiny_clip.embed_dim // 16)
    with torch.no_grad():
        logits = m.conditional_logits(img)
        ctx = m.learner.prompts.ctx.unsqueeze(0) + shift.unsqueeze(1)
        per_image = F.normalize(m.learner.prompts.features_per_image(tiny_clip, ctx), dim=-1)  # (B, C, E)
    assert logits.shape == (3, 3)
    assert not torch.allclose(per_image[0], per_image[1])  # each image has its own class prompts
    # image 1's logits come from image 1's own prompts, not from image 0's
    assert torch.allclose(logits[1], tiny_clip.logit_scale * per_image[1] @ img[1], atol=1e-5)
    assert not torch.allclose(logits[1], tiny_clip.logit_scale * per_image[0] @ img[1], atol=1e-5)
    # no shift: every image gets the plain context's prompts
    with torch.no_grad():
        plain = F.normalize(m.learner.prompts.features(tiny_clip), dim=-1)
        same = m.learner.prompts.features_per_image(tiny_clip, m.learner.prompts.ctx.unsqueeze(0).repeat(2, 1, 1))
    assert torch.allclose(F.normalize(same, dim=-1)[1], plain, atol=1e-5)


@pytest.mark.parametrize("layers", [2, 4])
def test_maple_coupling_maps_every_prompted_layer(tiny_clip, split_file, tmp_path, layers):
    from gcpl.clip.deep import MaPLe
    from gcpl.clip.loop import init_generator

    clip = tiny_clip if layers == 2 else memory_clip(layers, layers)
    job = job_for("maple", split_file, tmp_path, maple=MapleConfig(depth=9 if layers == 2 else 3))
    m = MaPLe(job, clip, ["blue", "green", "red"])
    m.learner = m.build(init_generator(1, "maple"))
    depth = m.depth()
    assert depth == min(9 if layers == 2 else 3, layers)
    v0, vdeep = m.learner.vision_prompts()
    text_deep = list(m.learner.prompts.deep)
    assert len(text_deep) == len(vdeep) == depth - 1
    assert v0.shape == (2, clip.vision_width) and m.learner.prompts.ctx.shape == (2, clip.text_width)
    assert torch.allclose(v0, m.learner.coupling.proj(m.learner.prompts.ctx))
    for t, v, f in zip(text_deep, vdeep, m.learner.coupling.deep_proj):
        assert t.shape == (2, clip.text_width) and v.shape == (2, clip.vision_width)
        assert f.in_features == clip.text_width and f.out_features == clip.vision_width
        assert torch.allclose(v, f(t))
    if len(vdeep) > 1:  # the deep maps start as copies of one map (MaPLe's _get_clones)
        assert torch.equal(m.learner.coupling.deep_proj[0].weight, m.learner.coupling.deep_proj[1].weight)
    # the vision prompts reach the tower: changing a deep language prompt changes the image features
    px = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = clip.encode_images(px, v0, vdeep)
        if text_deep:
            text_deep[-1].add_(1.0)
            b = clip.encode_images(px, *m.learner.vision_prompts())
            assert not torch.allclose(a, b)


def test_job_identity_keeps_the_methods_groups(split_file, tmp_path):
    ident = job_identity(job_for("coop", split_file, tmp_path))
    assert "coop" in ident and "prompt" in ident and "tip" not in ident and "kgcoop" not in ident
    assert "out" not in ident and "device" not in ident and ident["shots"] == 2
    assert set(job_identity(job_for("tip-adapter-f", split_file, tmp_path))) >= {"tip", "tip_f", "validation"}


def test_promptsrc_tests_the_gaussian_aggregate_of_its_epochs(tiny_clip, split_file, tmp_path, monkeypatch):
    from gcpl.clip.deep import PromptSRC, gpa_weights

    job = job_for("promptsrc", split_file, tmp_path, promptsrc=PromptSrcConfig(epochs=3, gpa_mean=2.0, gpa_std=1.0))
    classes, support = support_of(tiny_clip, job)
    seen = []
    original = PromptSRC.on_epoch_end

    def record(self, epoch):
        seen.append({k: v.detach().clone() for k, v in self.learner.state_dict().items()})
        original(self, epoch)

    monkeypatch.setattr(PromptSRC, "on_epoch_end", record)
    tensors, meta = PromptSRC(job, tiny_clip, classes).fit(support, tmp_path, progress=False)
    w = gpa_weights(3, 2.0, 1.0)
    assert meta["gpa_weights"] == pytest.approx(w) and w[0] == pytest.approx(w[2])
    for k in tensors:
        assert torch.allclose(tensors[k], sum(wi * s[k] for wi, s in zip(w, seen)), atol=1e-6)
    assert not torch.allclose(tensors["prompts.ctx"], seen[-1]["prompts.ctx"])  # not simply the last epoch


def test_promptsrc_self_regulation_on_fixed_tensors():
    from gcpl.clip.deep import scl_loss

    g = torch.Generator().manual_seed(0)
    text, img = F.normalize(torch.randn(3, 4, generator=g), dim=-1), F.normalize(torch.randn(2, 4, generator=g), dim=-1)
    logits = 10 * img @ text.t()
    assert float(scl_loss(text, text, img, img, logits, logits, 25, 10)) == pytest.approx(0.0, abs=1e-7)
    other = text + 0.1
    expected = 25 * (0.1) + 0  # L1 mean of a constant 0.1 shift, same images and logits
    assert float(scl_loss(other, text, img, img, logits, logits, 25, 10)) == pytest.approx(expected, rel=1e-5)
    zs = logits.flip(1)
    p, q = F.softmax(zs, 1), F.softmax(logits, 1)
    kl = float((p * (p.log() - q.log())).sum() / logits.numel())
    assert float(scl_loss(text, text, img, img, logits, zs, 25, 10)) == pytest.approx(kl, rel=1e-5)
