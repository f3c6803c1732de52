"""The CLIP competitors as their authors configure them (gcpl.clip.official): every official value
pinned against the table with its file and line, their resolution into a job (explicit values
win), the linear probe against scikit-learn, Tip-Adapter's validation search and Tip-Adapter-F's
second search, PromptSRC's template ensemble, deep text prompts, class names, precision, and
`gcpl experiment` on replicas of StanfordCars and Flowers102 recording the official values."""
# ruff: noqa: F811  (pytest fixtures imported from test_clip_fixtures)

from __future__ import annotations

import ast

import pytest
import torch
import torch.nn.functional as F
from test_clip_fixtures import make_split, split_file, tiny_clip, tiny_clip_dir  # noqa: F401
from test_clip_methods import job_for, support_of

from gcpl.clip.config import ClipJob, ClipSettings, TipConfig
from gcpl.clip.official import DATASET_PROMPT, IMAGENET_TEMPLATES, SPECIALISED, TABLE, official, resolve
from gcpl.errors import GcplError
from gcpl.io import read_json
from gcpl.method_registry import METHODS
from gcpl.settings import flat, replace

COOP, TIP, KG = "KaiyangZhou/CoOp", "gaopengcuhk/Tip-Adapter", "htyao89/KgCoOp/KgCoOp"
MAPLE = "muzairkhattak/multimodal-prompt-learning/configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"
SRC = "muzairkhattak/PromptSRC/configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml"
COCOOP = f"{COOP}/configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"
KG_YAML = f"{KG}/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"

# dest | dataset (- = none) | shots | value | where: the official file:line ("gcpl" for gcpl's choice)
PINS = f"""
clip_template | cars | 16 | 'a photo of a {{}}.' | {COOP}/trainers/zsclip.py:19
clip_template | flowers102 | 16 | 'a photo of a {{}}, a type of flower.' | {COOP}/trainers/zsclip.py:15
clip_template | - | 16 | DATASET_PROMPT | gcpl
clip_template | crc5k | 16 | DATASET_PROMPT | gcpl
clip_class_names | - | 16 | 'spaces' | {COOP}/trainers/coop.py:98
clip_class_names | cars | 16 | 'year-first' | {COOP}/datasets/stanford_cars.py:68-71
clip_class_names | flowers102 | 16 | 'spaces' | {COOP}/trainers/coop.py:98
tip_alpha | - | 16 | 1.17 | {TIP}/configs/imagenet.yaml:21
tip_alpha | cars | 16 | 3.0 | {TIP}/configs/stanford_cars.yaml:21
tip_alpha | flowers102 | 16 | 10.0 | {TIP}/configs/oxford_flowers.yaml:21
tip_alpha | isic2018 | 16 | 1.17 | gcpl
tip_beta | - | 16 | 1.0 | {TIP}/configs/imagenet.yaml:20
tip_beta | cars | 16 | 1.0 | {TIP}/configs/stanford_cars.yaml:20
tip_beta | flowers102 | 16 | 1.0 | {TIP}/configs/oxford_flowers.yaml:20
tip_search_scale | - | 16 | (7.0, 3.0) | {TIP}/configs/imagenet.yaml:17
tip_search_scale | cars | 16 | (20.0, 10.0) | {TIP}/configs/stanford_cars.yaml:17
tip_search_scale | flowers102 | 16 | (50.0, 50.0) | {TIP}/configs/oxford_flowers.yaml:17
tip_search_steps | - | 16 | (200, 20) | {TIP}/configs/imagenet.yaml:18
tip_search_steps | cars | 16 | (200, 20) | {TIP}/configs/stanford_cars.yaml:18
tip_search_steps | flowers102 | 16 | (200, 20) | {TIP}/configs/oxford_flowers.yaml:18
tip_augment_epochs | - | 16 | 10 | {TIP}/configs/imagenet.yaml:30
tip_augment_epochs | cars | 16 | 10 | {TIP}/configs/stanford_cars.yaml:30
tip_augment_epochs | flowers102 | 16 | 10 | {TIP}/configs/oxford_flowers.yaml:30
tipf_lr | - | 16 | 0.001 | {TIP}/configs/imagenet.yaml:29
tipf_lr | cars | 16 | 0.001 | {TIP}/configs/stanford_cars.yaml:29
tipf_lr | flowers102 | 16 | 0.001 | {TIP}/configs/oxford_flowers.yaml:29
tipf_epochs | - | 16 | 20 | {TIP}/configs/imagenet.yaml:31
tipf_epochs | cars | 16 | 20 | {TIP}/configs/stanford_cars.yaml:31
tipf_epochs | flowers102 | 16 | 20 | {TIP}/configs/oxford_flowers.yaml:31
coop_epochs | cars | 1 | 50 | {COOP}/configs/trainers/CoOp/vit_b16_ep50.yaml:18
coop_epochs | cars | 2 | 100 | {COOP}/configs/trainers/CoOp/vit_b16_ep100.yaml:18
coop_epochs | flowers102 | 4 | 100 | {COOP}/configs/trainers/CoOp/vit_b16_ep100.yaml:18
coop_epochs | - | 8 | 200 | {COOP}/configs/trainers/CoOp/vit_b16.yaml:18
coop_epochs | cars | 16 | 200 | {COOP}/configs/trainers/CoOp/vit_b16.yaml:18
coop_lr | cars | 1 | 0.002 | {COOP}/configs/trainers/CoOp/vit_b16_ep50.yaml:17
coop_lr | cars | 16 | 0.002 | {COOP}/configs/trainers/CoOp/vit_b16.yaml:17
coop_batch | flowers102 | 2 | 32 | {COOP}/configs/trainers/CoOp/vit_b16_ep100.yaml:3
coop_n_ctx | cars | 16 | 16 | {COOP}/COOP.md:18-22
coop_ctx_init | cars | 16 | '' | {COOP}/train.py:93
kg_lr | cars | 16 | 0.002 | {KG_YAML}:17
kg_batch | cars | 16 | 128 | {KG_YAML}:3
kg_epochs | flowers102 | 1 | 100 | {KG_YAML}:18
kg_ctx_init | cars | 16 | 'a photo of a' | {KG}/trainers/kgcoop.py:96
kg_lambda_ | flowers102 | 16 | 8.0 | {KG}/scripts/xd_train.sh:8
cocoop_ctx_init | cars | 16 | 'a photo of a' | {COCOOP}:34
cocoop_lr | cars | 16 | 0.002 | {COCOOP}:17
cocoop_batch | cars | 16 | 1 | {COCOOP}:3
cocoop_epochs | cars | 16 | 10 | {COCOOP}:18
maple_n_ctx | cars | 16 | 2 | {MAPLE}:33
maple_ctx_init | cars | 16 | 'a photo of a' | {MAPLE}:34
maple_depth | cars | 16 | 9 | {MAPLE}:36
maple_lr | cars | 16 | 0.0035 | {MAPLE}:17
maple_batch | cars | 16 | 4 | {MAPLE}:3
maple_epochs | cars | 16 | 5 | {MAPLE}:18
src_n_ctx_text | cars | 16 | 4 | {SRC}:35
src_n_ctx_vision | cars | 16 | 4 | {SRC}:34
src_ctx_init | cars | 16 | 'a photo of a' | {SRC}:36
src_depth_text | cars | 16 | 9 | {SRC}:39
src_depth_vision | cars | 16 | 9 | {SRC}:38
src_text_weight | cars | 16 | 25.0 | {SRC}:40
src_image_weight | cars | 16 | 10.0 | {SRC}:41
src_lr | cars | 16 | 0.0025 | {SRC}:18
src_batch | cars | 16 | 4 | {SRC}:4
src_epochs | cars | 16 | 50 | {SRC}:19
src_gpa_mean | - | 16 | 30.0 | {SRC}:43
src_gpa_mean | cars | 16 | 45.0 | {SRC}:46
src_gpa_mean | flowers102 | 16 | 45.0 | {SRC}:46
src_gpa_mean | folder | 16 | 30.0 | {SRC}:43
src_gpa_mean | fractals | 16 | 45.0 | gcpl
src_gpa_std | - | 16 | 30.0 | {SRC}:44
src_gpa_std | cars | 16 | 5.0 | {SRC}:47
src_gpa_std | flowers102 | 16 | 5.0 | {SRC}:47
src_gpa_std | lc25000 | 16 | 5.0 | gcpl
src_teacher | flowers102 | 16 | 'ensemble' | muzairkhattak/PromptSRC/trainers/promptsrc.py:121-128
"""


def _pins():
    for line in PINS.strip().splitlines():
        dest, dataset, shots, value, where = (x.strip() for x in line.split("|"))
        value = DATASET_PROMPT if value == "DATASET_PROMPT" else ast.literal_eval(value)
        yield dest, None if dataset == "-" else dataset, int(shots), value, where


@pytest.mark.parametrize("dest, dataset, shots, value, where", list(_pins()))
def test_each_official_value_and_its_source(dest, dataset, shots, value, where):
    c = official(dest, dataset, shots)
    assert c.value == value and type(c.value) is type(value)
    assert c.source.startswith("gcpl: " if where == "gcpl" else f"official: {where}"), c.source


def test_the_pins_cover_the_table():
    pinned = {(d, ds) for d, ds, *_ in _pins()}
    assert {d for d, _ in pinned} == set(TABLE)
    for dest, row in TABLE.items():  # every per-dataset value: no dataset, cars, flowers102
        if row.datasets:
            assert {(dest, None), (dest, "cars"), (dest, "flowers102")} <= pinned, dest


def test_every_row_names_registered_methods_that_use_its_group():
    import gcpl.methods  # noqa: F401  (every method registered)
    from gcpl.clip.config import GROUPS

    dests = flat(ClipSettings())
    prefixes = {"text": "clip", "validation": "val", "linear_probe": "lp", "tip_f": "tipf", "kgcoop": "kg",
                "promptsrc": "src"}
    for dest, row in TABLE.items():
        assert dest in dests and row.methods
        group = next(g for g in GROUPS if dest.startswith(prefixes.get(g, g) + "_"))
        for m in row.methods:
            assert METHODS[m].family == "clip" and group in METHODS[m].groups, (dest, m)


# ----------------------------------------------------------------------------- resolution


def test_resolve_fills_the_official_values_and_keeps_given_ones():
    settings = replace(ClipSettings(), {"tip_beta": 2.5, "clip_template": "itap of a {}."})
    job, sources = resolve(ClipJob(method="tip-adapter-f", data="s.json", out="o", dataset="Stanford_Cars", shots=1,
                                   clip=settings))
    assert job.dataset == "cars" and job.clip.tip.alpha == 3.0 and job.clip.tip.beta == 2.5
    assert job.clip.tip.search_scale == (20.0, 10.0) and job.clip.tip_f.epochs == 20
    assert job.clip.text.template == "itap of a {}." and job.clip.text.class_names == "year-first"
    assert sources["tip_beta"] == sources["clip_template"] == "given"
    assert sources["tip_alpha"] == f"official: {TIP}/configs/stanford_cars.yaml:21"
    assert "coop_epochs" not in sources and "tipf_lr" in sources  # the sources of the method's settings
    again, again_sources = resolve(job)
    assert again == job and set(again_sources.values()) == {"given"}  # resolving twice changes nothing
    with pytest.raises(GcplError, match="unknown dataset 'imagenet'"):
        ClipJob(method="clip-zs", data="s.json", out="o", dataset="imagenet")


def test_datasets_without_an_official_config_get_the_generic_values_and_their_own_prompt():
    job, sources = resolve(ClipJob(method="promptsrc", data="s.json", out="o", dataset="crc5k",
                                   template="An H&E image of {} tissue."))
    assert job.clip.text.template == "An H&E image of {} tissue." and sources["clip_template"].startswith("gcpl:")
    assert (job.clip.promptsrc.gpa_mean, job.clip.promptsrc.gpa_std) == (45.0, 5.0)
    assert sources["src_gpa_mean"].startswith("gcpl:") and sources["src_lr"].startswith("official:")
    plain, _ = resolve(ClipJob(method="promptsrc", data="s.json", out="o"))  # no dataset: the generic values
    assert (plain.clip.promptsrc.gpa_mean, plain.clip.text.template) == (30.0, "a photo of a {}.")
    tip, src = resolve(ClipJob(method="tip-adapter", data="s.json", out="o", dataset="fractals"))
    assert tip.clip.tip.alpha == 1.17 and src["tip_alpha"].startswith("gcpl: Tip-Adapter has no config")


def test_every_dataset_of_the_registry_resolves():
    from gcpl.data.loaders import DATASETS

    for name in DATASETS:
        for method in ("clip-zs", "tip-adapter-f", "coop", "kgcoop", "promptsrc", "maple", "cocoop"):
            job, sources = resolve(ClipJob(method=method, data="s.json", out="o", dataset=name, shots=4))
            assert None not in flat(job.clip).values(), (name, method)
            assert all(s.startswith(("official: ", "gcpl: ")) for s in sources.values())
    assert set(SPECIALISED) < set(DATASETS)


# ----------------------------------------------------------------------------- class names, precision


def test_class_names_as_the_official_code_prompts_them():
    from gcpl.clip.features import prompt_names

    names = ["AM General Hummer SUV 2000", "Acura_RL Sedan 2012", "pink primrose", "x_y", "Model 3"]
    assert prompt_names(names, "as-given") == names
    assert prompt_names(names, "spaces") == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "pink primrose",
                                             "x y", "Model 3"]
    assert prompt_names(names, "year-first") == ["2000 AM General Hummer SUV", "2012 Acura RL Sedan",
                                                 "pink primrose", "x y", "Model 3"]


def test_the_towers_run_in_fp16_on_cuda_and_fp32_on_cpu():
    from gcpl.clip.model import clip_dtype

    assert clip_dtype(None, torch.device("cuda")) == torch.float16
    assert clip_dtype(None, torch.device("cpu")) == torch.float32
    assert clip_dtype("bf16", torch.device("cuda")) == torch.bfloat16


# ----------------------------------------------------------------------------- linear probe


def _sklearn_fit(x, y, c):
    sklearn = pytest.importorskip("sklearn.linear_model")
    return sklearn.LogisticRegression(C=c, solver="lbfgs", max_iter=10000, tol=1e-10).fit(x.double().numpy(),
                                                                                          y.numpy())


def _same_fit(x, y, held, n_classes, c):
    from gcpl.clip.classic import fit_logreg, predict

    w, b = fit_logreg(x, y, n_classes, c)
    ref = _sklearn_fit(x, y, c)
    assert torch.allclose(w.double(), torch.from_numpy(ref.coef_), atol=1e-3)
    assert torch.allclose(b.double(), torch.from_numpy(ref.intercept_), atol=1e-3)
    ours = float((predict(held, w, b) == y).float().mean())
    theirs = float((torch.from_numpy(ref.predict(held.double().numpy())) == y).float().mean())
    assert abs(ours - theirs) <= 1e-4


@pytest.mark.parametrize("c", [0.01, 0.1, 1.0])
def test_linear_probe_fit_matches_scikit_learn(tiny_clip, split_file, tmp_path, c):
    """The same objective as lpclip's LogisticRegression(solver="lbfgs", penalty="l2", C): the same
    coefficients (1e-3) and accuracy (1e-4) as scikit-learn's solution, on the tiny CLIP's features
    of the shots and on 64-dimensional features of 10 classes."""
    job = job_for("linear-probe", split_file, tmp_path, shots=4)
    classes, support = support_of(tiny_clip, job)
    x, y = support.features().cpu(), support.labels
    g = torch.Generator().manual_seed(0)
    x = torch.cat([x, x + 0.3 * torch.randn(x.shape, generator=g)])  # more points than dimensions
    y = torch.cat([y, y])
    _same_fit(x, y, x + 0.3 * torch.randn(x.shape, generator=g), len(classes), c)
    centres = torch.randn(10, 64, generator=g).repeat_interleave(30, 0)
    gx = centres * 0.3 + torch.randn(300, 64, generator=g) * 0.5
    _same_fit(gx, torch.arange(10).repeat_interleave(30), centres * 0.3 + torch.randn(300, 64, generator=g) * 0.5,
              10, c)


# ----------------------------------------------------------------------------- Tip-Adapter searches


def _search_hp(features, labels, text, affinity_of, values, scale_steps, scale):
    """Tip-Adapter's utils.py search_hp, as written: beta outer, alpha inner, strictly better wins."""
    (sb, sa), (nb, na) = scale_steps
    best = (0.0, 0.0, 0.0)
    for beta in [i * (sb - 0.1) / nb + 0.1 for i in range(nb)]:
        for alpha in [i * (sa - 0.1) / na + 0.1 for i in range(na)]:
            cache = torch.exp(-beta * (1 - affinity_of(features))) @ values
            logits = scale * features @ text.t() + alpha * cache
            acc = float((logits.argmax(-1) == labels).float().mean())
            if acc > best[0]:
                best = (acc, beta, alpha)
    return best[2], best[1]


def _val_support(tiny_clip, job):
    from gcpl.clip.base import normed
    from gcpl.data.splits import Split

    classes, support = support_of(tiny_clip, job)
    support.val = Split.from_json(job.data).val
    vx, vy = support.val_features()
    return classes, support, normed(vx), vy


def test_tip_adapter_searches_alpha_beta_on_the_validation_images(tiny_clip, split_file, tmp_path):
    from gcpl.clip.tip import TipAdapter

    tip = TipConfig(search_scale=(5.0, 4.0), search_steps=(20, 8))
    job = job_for("tip-adapter", split_file, tmp_path, shots=1, tip=tip)  # a search at 1 shot too
    classes, support, vx, vy = _val_support(tiny_clip, job)
    m = TipAdapter(job, tiny_clip, classes)
    tensors, meta = m.fit(support, tmp_path)
    keys, values, text = tensors["keys"], tensors["values"], tensors["text"]
    alpha, beta = _search_hp(vx, vy, text, lambda f: f @ keys.t(), values, (tip.search_scale, tip.search_steps),
                             tiny_clip.logit_scale)
    assert (meta["alpha"], meta["beta"]) == pytest.approx((alpha, beta))
    assert meta["search"].startswith("validation images: ") and meta["search"].endswith(f"/{len(vy)} at the best")
    off = job_for("tip-adapter", split_file, tmp_path, shots=1, tip=TipConfig(search=False, alpha=2.0, beta=3.0))
    assert TipAdapter(off, tiny_clip, classes).fit(support, tmp_path)[1]["alpha"] == 2.0


def test_tip_adapter_f_searches_again_with_its_fine_tuned_keys(tiny_clip, split_file, tmp_path):
    from gcpl.clip.tip import TipAdapterF

    tip = TipConfig(search_scale=(5.0, 4.0), search_steps=(20, 8), alpha=3.0, beta=1.0)
    job = job_for("tip-adapter-f", split_file, tmp_path, tip=tip)
    classes, support, vx, vy = _val_support(tiny_clip, job)
    tensors, meta = TipAdapterF(job, tiny_clip, classes).fit(support, tmp_path / "f", progress=False)
    tuned, initial, values = tensors["keys"], tensors["initial_keys"], tensors["values"]
    assert not torch.allclose(tuned, initial)  # the keys were fine-tuned ...
    assert meta["trained_with"] == {"alpha": 3.0, "beta": 1.0}  # ... at the config's init alpha, beta
    alpha, beta = _search_hp(vx, vy, tensors["text"], lambda f: f @ tuned.t(), values,
                             (tip.search_scale, tip.search_steps), tiny_clip.logit_scale)
    assert (meta["alpha"], meta["beta"]) == pytest.approx((alpha, beta))  # the second search: the tuned keys
    first = _search_hp(vx, vy, tensors["text"], lambda f: f @ initial.t(), values,
                       (tip.search_scale, tip.search_steps), tiny_clip.logit_scale)
    before = meta["before_fine_tuning"]
    assert (before["alpha"], before["beta"]) == pytest.approx(first)  # Tip-Adapter's own, on the initial keys
    assert len(meta["train_log"]) == 2  # the last epoch is kept, not the best test epoch


# ----------------------------------------------------------------------------- PromptSRC, deep prompts


def test_promptsrc_teacher_is_the_mean_over_the_60_imagenet_templates(tiny_clip, split_file, tmp_path):
    from gcpl.clip.config import PromptSrcConfig
    from gcpl.clip.deep import PromptSRC
    from gcpl.clip.features import text_classifier

    assert len(IMAGENET_TEMPLATES) == 60 == len(set(IMAGENET_TEMPLATES))
    assert IMAGENET_TEMPLATES[0] == "a photo of a {}." and IMAGENET_TEMPLATES[-1] == "itap of the {}."
    classes = ["dark_red", "green"]
    m = PromptSRC(job_for("promptsrc", split_file, tmp_path), tiny_clip, classes)
    m.prepare()
    raw = torch.stack([tiny_clip.encode_texts([t.format(c) for c in ("dark red", "green")]) for t in IMAGENET_TEMPLATES])
    assert torch.allclose(m.hand, F.normalize(raw.mean(0), dim=-1), atol=1e-5)  # averaged, then normalised
    single = PromptSRC(job_for("promptsrc", split_file, tmp_path, promptsrc=PromptSrcConfig(teacher="single")),
                       tiny_clip, classes)
    single.prepare()
    assert torch.allclose(single.hand, text_classifier(tiny_clip, "a photo of a {}.", ["dark red", "green"]))


@pytest.mark.parametrize("method", ["maple", "promptsrc"])
def test_deep_text_prompts_change_the_text_features(tiny_clip, split_file, tmp_path, method):
    from gcpl.clip.loop import init_generator
    from gcpl.clip.methods import make_method

    m = make_method(job_for(method, split_file, tmp_path), tiny_clip, ["blue", "green", "red"])
    m.learner = m.build(init_generator(1, method))
    prompts = m.learner.prompts
    assert len(prompts.deep) == tiny_clip.text_layers - 1 >= 1
    with torch.no_grad():
        deep, shallow = prompts.features(tiny_clip), prompts.features(tiny_clip, deep=False)
        assert not torch.allclose(deep, shallow)
        prompts.deep[0].add_(torch.randn(prompts.deep[0].shape, generator=torch.Generator().manual_seed(0)))
        assert not torch.allclose(prompts.features(tiny_clip), deep)
        assert torch.allclose(prompts.features(tiny_clip, deep=False), shallow)


# ----------------------------------------------------------------------------- gcpl experiment


def _cli(args) -> int:
    from gcpl.cli import main

    return main(args)


ACCEPTANCE = ("tip-adapter", "tip-adapter-f", "promptsrc", "clip-zs", "coop", "kgcoop")


def _experiment(dataset, root, out, clip_dir, *extra):
    args = ["experiment", "--dataset", dataset, "--root", str(root), "--out", str(out), "--methods",
            ",".join(ACCEPTANCE), "--shots", "1", "--seeds", "1", "--clip-model", str(clip_dir), "--device", "cpu",
            "-q", *extra]
    assert _cli(args) == 0
    runs = {m: read_json(out / m / ("shots0" if m == "clip-zs" else "shots1") / "seed1" / "eval" / "config.json")
            for m in ACCEPTANCE}
    return runs, (out / "summary.md").read_text(), read_json(out / "experiment.json")


def _value(cfg, dest):
    return cfg["official"][dest]["value"], cfg["official"][dest]["source"]


@pytest.fixture(autouse=True)
def no_confusion_plot(monkeypatch):
    import gcpl.reports.plots

    monkeypatch.setattr(gcpl.reports.plots, "confusion_png", lambda *a, **k: None, raising=False)


def test_experiment_on_a_cars_replica_records_the_official_values(tmp_path, tiny_clip_dir):
    from test_loaders import make_cars_devkit

    make_cars_devkit(tmp_path / "cars")
    runs, md, exp = _experiment("cars", tmp_path / "cars", tmp_path / "out", tiny_clip_dir, "--tip-beta", "2")
    tip = runs["tip-adapter"]
    assert _value(tip, "tip_alpha") == (3.0, f"official: {TIP}/configs/stanford_cars.yaml:21")
    assert _value(tip, "tip_search_scale") == ([20.0, 10.0], f"official: {TIP}/configs/stanford_cars.yaml:17")
    assert _value(tip, "tip_beta") == (2.0, "given") and exp["settings"]["clip"]["tip"]["beta"] == 2.0
    assert tip["settings"]["clip"]["tip"]["beta"] == 2.0 and tip["dataset"] == "cars"
    assert tip["validation"]["on"].startswith("a val part of the training pool")  # cars has no val list
    assert _value(runs["tip-adapter-f"], "tipf_epochs")[0] == 20
    assert _value(runs["promptsrc"], "src_gpa_mean") == (45.0, f"official: {SRC}:46 (line 45 names the datasets)")
    assert _value(runs["promptsrc"], "src_gpa_std")[0] == 5.0
    assert _value(runs["promptsrc"], "src_teacher")[0] == "ensemble"
    assert _value(runs["coop"], "coop_epochs") == (50, f"official: {COOP}/configs/trainers/CoOp/vit_b16_ep50.yaml:18 "
                                                       f"({COOP}/COOP.md:18)")
    for m in ("clip-zs", "kgcoop", "tip-adapter"):
        assert _value(runs[m], "clip_template")[0] == "a photo of a {}."  # CoOp's, not Table 1's
    assert runs["clip-zs"]["prompt_classes"][0] == "2000 AM General Hummer SUV"
    assert exp["settings"]["template"] == "A photo of a {}, a type of car."  # GCPL keeps the paper's prompt
    assert "## CLIP methods: settings and validation" in md
    assert f"| `--tip-alpha` | `3.0` | official: {TIP}/configs/stanford_cars.yaml:21 |" in md
    assert "| `--tip-beta` | `2.0` | given |" in md
    assert "- validated on: a val part of the training pool" in md
    assert "- validated on: none: the last epoch is tested" in md


def test_experiment_on_a_flowers_replica_searches_on_its_val_split(tmp_path, tiny_clip_dir):
    from test_loaders import make_flowers

    n = 102
    labels = [c for c in range(1, n + 1) for _ in range(3)]
    make_flowers(tmp_path / "flowers", labels=labels, trnid=range(1, 3 * n, 3), valid=range(2, 3 * n, 3),
                 tstid=range(3, 3 * n + 1, 3))
    runs, md, _ = _experiment("flowers", tmp_path / "flowers", tmp_path / "out", tiny_clip_dir, "--limit", "10",
                              "--coop-epochs", "1", "--kg-epochs", "1", "--src-epochs", "2", "--tipf-epochs", "1",
                              "--tip-augment-epochs", "1")
    for m in ("tip-adapter", "tip-adapter-f"):
        assert runs[m]["validation"] == {"on": "the split's val list", "images": n}  # Flowers102's official val
        assert _value(runs[m], "tip_alpha") == (10.0, f"official: {TIP}/configs/oxford_flowers.yaml:21")
        assert _value(runs[m], "tip_search_scale")[0] == [50.0, 50.0]
        assert _value(runs[m], "tip_augment_epochs") == (1, "given")
    val = read_json(tmp_path / "out" / "tip-adapter" / "shots1" / "seed1" / "eval" / "val.json")["val"]
    assert all("image_" in s["path"] and int(s["path"][-9:-4]) % 3 == 2 for s in val)  # the valid ids only
    assert _value(runs["tip-adapter-f"], "tipf_epochs") == (1, "given")
    assert _value(runs["promptsrc"], "src_gpa_mean")[0] == 45.0 and _value(runs["promptsrc"], "src_epochs")[0] == 2
    flower = "a photo of a {}, a type of flower."
    assert all(_value(runs[m], "clip_template")[0] == flower for m in ("clip-zs", "kgcoop", "tip-adapter"))
    assert runs["coop"]["validation"]["on"].startswith("none")
    assert "- validated on: the split's val list: 102 images (shot 1)" in md
    assert f"| `--clip-template` | `{flower}` | official: {COOP}/trainers/zsclip.py:15" in md


def test_the_docs_show_the_table_the_code_resolves():
    from pathlib import Path

    from gcpl.clip.official import markdown_table

    docs = (Path(__file__).resolve().parent.parent / "docs" / "CLIP.md").read_text()
    start = docs.index("<!-- official-table: generated by gcpl.clip.official.markdown_table() -->\n")
    end = docs.index("<!-- /official-table -->")
    assert docs[docs.index("\n", start) + 1 : end] == markdown_table(), "regenerate the table in docs/CLIP.md"


def test_an_experiment_folder_with_clip_runs_of_an_earlier_release_is_refused(tmp_path):
    from gcpl.experiment import ExperimentConfig, _record_experiment, _sha256
    from gcpl.io import write_json

    split = make_split(tmp_path / "data")
    for methods, refused in ((["gcpl", "tip-adapter"], True), (["gcpl"], False)):
        out = tmp_path / "-".join(methods)
        cfg = ExperimentConfig(out=str(out), data=str(split), methods=("gcpl", "coop"), shots=(1,), seeds=(1,))
        settings = cfg.result_settings()
        del settings["clip"]  # experiment.json before the CLIP settings were experiment settings
        settings["split_sha256"] = _sha256(split)
        write_json(out / "experiment.json", {"settings": settings, "grid": {"methods": methods, "shots": [1],
                                                                            "seeds": [1]}})
        if refused:
            with pytest.raises(GcplError, match="CLIP runs made without the official per-dataset settings"):
                _record_experiment(cfg, split)
        else:
            record = _record_experiment(cfg, split)
            assert record["settings"]["clip"]["tip"]["alpha"] is None and record["grid"]["methods"] == ["gcpl", "coop"]


def test_a_bad_clip_option_of_an_experiment_is_one_line(tmp_path, capsys):
    split = make_split(tmp_path / "data")
    args = ["experiment", "--data", str(split), "--out", str(tmp_path / "o"), "--methods", "clip-zs", "-q"]
    assert _cli([*args, "--clip-template", "a photo"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("gcpl experiment: error: template 'a photo'")
    assert _cli([*args, "--dataset", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
