"""Pretraining of the bundled tiny model: corpus, both stages, checkpoints/resume, saved folder."""

from __future__ import annotations

import importlib
import json
import re
import warnings

import numpy as np
import pytest
import torch
from pretraining.corpus import COLOURS, RESERVED_WORDS, CaptionedPool, Corpus, CorpusConfig
from pretraining.sd import PretrainConfig, lr_at, pretrain

from gcpl.tiny_model import TinySDConfig

MICRO = TinySDConfig(text_hidden=32, text_layers=2, text_heads=2, unet_channels=(16, 32), unet_head_dim=4,
                     vae_channels=(16, 32), image_size=16)


def micro_cfg(**kw) -> PretrainConfig:
    base = dict(model=MICRO, seed=3, pool_size=96, n_fractal_classes=4, vae_steps=3, vae_batch=4, steps=3,
                batch=4, warmup=1, scale_samples=64, ckpt_every=1000, log_every=1, threads=1, probe_per_class=1)
    base.update(kw)
    return PretrainConfig(**base)


def _tool():
    return importlib.import_module("pretrain_tiny")  # tools/ is on the tests' path (pyproject.toml)


# ---------------------------------------------------------------------------------------------- corpus


def test_corpus_is_deterministic():
    cfg = CorpusConfig(seed=5, n_fractal_classes=4)
    a, b = CaptionedPool(Corpus(cfg), 40), CaptionedPool(Corpus(cfg), 40)
    assert np.array_equal(a.images, b.images) and a.attrs == b.attrs
    ca = a.captions(range(40), np.random.default_rng(1))
    assert ca == b.captions(range(40), np.random.default_rng(1))
    # a sample depends only on (seed, index), not on what was rendered before
    img, attrs = Corpus(cfg).sample(17)
    assert np.array_equal(img, a.images[17]) and attrs == a.attrs[17]
    other = CaptionedPool(Corpus(CorpusConfig(seed=6, n_fractal_classes=4)), 40)
    assert not np.array_equal(a.images, other.images)
    assert {x["kind"] for x in a.attrs} == {"shapes", "fractal"}


def _near(img: np.ndarray, rgb, tol: float = 45.0) -> np.ndarray:
    return np.abs(img.astype(np.float32) - np.array(rgb, np.float32)).max(-1) <= tol


def test_captions_describe_the_image():
    corpus = Corpus(CorpusConfig(seed=0, n_fractal_classes=4))
    rng = np.random.default_rng(0)
    checked = {"colour": 0, "background": 0, "position": 0, "fractal": 0}
    for i in range(300):
        img, attrs = corpus.sample(i)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        cap = Corpus.caption(attrs, rng)
        words = set(re.findall(r"[a-z]+", cap))
        if attrs["kind"] == "fractal":
            assert attrs["word"] in words and attrs["word"] not in RESERVED_WORDS
            checked["fractal"] += 1
            continue
        objs = attrs["objects"]
        for obj in objs:
            assert obj["shape"] in words
        for c in COLOURS:  # every colour word named is visibly there
            if re.search(rf"\b{c}\b", cap):
                assert _near(img, COLOURS[c]).sum() >= 4, (i, cap)
                checked["colour"] += 1
        m = re.search(r"(\w+) background", cap)
        if m and m.group(1) != "black":
            assert _near(img, COLOURS[m.group(1)], 25).mean() >= 0.3, (i, cap)
            checked["background"] += 1
        if len(objs) == 1 and objs[0]["position"] in ("left", "right") and objs[0]["size"] == "small":
            bg = img[0, 0].astype(np.float32)
            fg = np.abs(img.astype(np.float32) - bg).max(-1) > 60
            xs = np.nonzero(fg)[1]
            if len(xs):
                assert (xs.mean() < 16) == (objs[0]["position"] == "left"), (i, cap)
                checked["position"] += 1
    assert min(checked.values()) >= 5, checked


def test_red_circle_is_red():
    corpus = Corpus(CorpusConfig(seed=0, fractal_fraction=0.0))
    n = 0
    for i in range(400):
        img, attrs = corpus.sample(i)
        for obj in attrs["objects"]:
            if obj["colour"] == "red":
                assert (_near(img, COLOURS["red"]) & (img[..., 0] > 150)).sum() >= 4
                n += 1
    assert n >= 10


def test_lr_schedule():
    assert lr_at(0, 1.0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_at(99, 1.0, 100, 10, "cosine", 0.1) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(50, 1.0, 100, 10, "constant", 0.1) == 1.0


# ---------------------------------------------------------------------------------------------- training


def _weights(res) -> dict:
    return {f"{n}.{k}": v.clone() for n in ("vae", "text_encoder", "unet")
            for k, v in res.components[n].state_dict().items()}


def test_micro_run_saves_a_loadable_pipeline(tmp_path):
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    res = pretrain(micro_cfg(), tmp_path / "run", log=lambda s: None)
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["stage"] == "vae"] == [1, 2, 3]
    assert [r["step"] for r in log if r["stage"] == "unet"] == [1, 2, 3]
    assert all(np.isfinite(r.get("loss", r.get("recon_mse"))) for r in log)
    sf = res.stats["vae"]["scaling_factor"]
    assert sf > 0 and sf != pytest.approx(0.18215)
    assert res.components["vae"].config.scaling_factor == sf
    assert 0 <= res.stats["unet"]["probe_fractal_acc"] <= 1 and 0 <= res.stats["unet"]["probe_shape_acc"] <= 1

    tool = _tool()
    folder = tmp_path / "pipe"
    sizes = tool.save_fp16(res.components, folder, card={"stats": res.stats})
    assert set(sizes) == {"text_encoder", "vae", "unet"} and all(v > 0 for v in sizes.values())
    assert json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"] == sf
    assert AutoencoderKL.from_pretrained(folder / "vae").config.scaling_factor == sf
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    assert pipe.vae.config.scaling_factor == sf
    from safetensors import safe_open

    for sub in ("text_encoder", "vae", "unet"):  # stored in fp16
        (f,) = (folder / sub).glob("*.safetensors")
        with safe_open(str(f), "pt") as st:
            assert {st.get_slice(k).get_dtype() for k in st.keys()} == {"F16"}, sub
    with warnings.catch_warnings():  # diffusers >= 0.36 prefers dtype=
        warnings.simplefilter("ignore", FutureWarning)
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red circle.", num_inference_steps=2, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 16, 16, 3) and np.isfinite(img).all()
    # the fp16 weights are the trained ones (rounded)
    w = res.components["unet"].state_dict()
    for k, v in pipe.unet.state_dict().items():
        torch.testing.assert_close(v, w[k].half().float())


def test_resume_equals_uninterrupted(tmp_path):
    cfg = micro_cfg(vae_steps=2, steps=4, ckpt_every=2)
    quiet = dict(log=lambda s: None)
    full = pretrain(cfg, tmp_path / "a", **quiet)
    assert pretrain(cfg, tmp_path / "b", stop_after=1, **quiet) is None  # inside stage 1
    assert pretrain(cfg, tmp_path / "b", resume=True, stop_after=3, **quiet) is None  # 1 VAE + 2 UNet steps
    resumed = pretrain(cfg, tmp_path / "b", resume=True, **quiet)
    wa, wb = _weights(full), _weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert resumed.stats["vae"]["scaling_factor"] == full.stats["vae"]["scaling_factor"]
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                       for x in (p / "train_log.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")
    # checkpoints are safetensors + JSON only
    files = {p.suffix for p in (tmp_path / "b" / "checkpoints").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json"}
    with pytest.raises(ValueError, match="different settings"):
        pretrain(micro_cfg(vae_steps=2, steps=4, lr=1e-3), tmp_path / "b", resume=True, **quiet)


def test_continuation_starts_from_the_source_and_resumes_exactly(tmp_path):
    """--init-from: stage 2 starts from the finished source run's final (EMA) weights and VAE,
    skips stage 1, and a continuation interrupted and resumed equals an uninterrupted one."""
    from pretraining.sd import init_source

    quiet = dict(log=lambda s: None)
    src = pretrain(micro_cfg(vae_steps=2, steps=3, ema_decay=0.9), tmp_path / "src", **quiet)
    src_ckpt = tmp_path / "src" / "checkpoints"
    cfg = micro_cfg(vae_steps=2, steps=3, lr=1e-3, init=init_source(src_ckpt))
    assert cfg.depth() == 1 and "init" in cfg.identity() and "init" not in micro_cfg().identity()

    # zero steps of continuation = the source's final weights, VAE and scaling factor included
    zero = pretrain(PretrainConfig(**{**cfg.__dict__, "steps": 0, "probe_per_class": 0}), tmp_path / "zero",
                    init_dir=src_ckpt, **quiet)
    ws, wz = _weights(src), _weights(zero)
    for k in ws:
        assert torch.equal(ws[k], wz[k]), k
    assert zero.stats["vae"]["scaling_factor"] == src.stats["vae"]["scaling_factor"]

    full = pretrain(cfg, tmp_path / "a", init_dir=src_ckpt, **quiet)
    log = [json.loads(x) for x in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["unet"] * 3  # no stage 1
    assert any(not torch.equal(ws[k], v) for k, v in _weights(full).items())  # it trained
    assert pretrain(cfg, tmp_path / "b", init_dir=src_ckpt, stop_after=2, **quiet) is None
    resumed = pretrain(cfg, tmp_path / "b", init_dir=src_ckpt, resume=True, **quiet)
    wa, wb = _weights(full), _weights(resumed)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

    # the model card of a continuation lists both runs and both commands
    tool = _tool()
    folder = tmp_path / "pipe"
    build = {"pretrain_config": cfg.identity(), "stats": full.stats, "fractal_words": full.corpus.fractal_words,
             "argv": ["--init-from", str(src_ckpt), "--out", "/elsewhere", "--steps", "3", "--resume",
                      "--stop-after", "2", "--sample-steps", "2"], "finished": "today"}
    tool.save_fp16(full.components, folder, card=build)
    (folder / "train_log.jsonl").write_text((tmp_path / "a" / "train_log.jsonl").read_text())
    tool.write_card(folder, build)
    card = (folder / "README.md").read_text()
    assert "| 2, run 1: text encoder + UNet, from scratch" in card and "| 2, run 2: text encoder + UNet, continued" in card
    cmds = [x for x in card.splitlines() if x.startswith("python tools/pretrain_tiny.py")]
    assert len(cmds) == 2 and f"--ckpt-dir {src_ckpt}" in cmds[0] and f"--init-from {src_ckpt}" in cmds[1]
    assert "--steps 3" in cmds[0] and "--lr 0.0005" in cmds[0]  # the source's own settings
    # the last command writes this folder and leaves out flags that do not change the weights
    assert f"--out {folder}" in cmds[1] and "/elsewhere" not in cmds[1]
    assert "--resume" not in cmds[1] and "--stop-after" not in cmds[1] and "--steps 3" in cmds[1]

    assert pretrain(micro_cfg(vae_steps=2, steps=4), tmp_path / "half", stop_after=3, **quiet) is None
    with pytest.raises(ValueError, match="unfinished run"):
        init_source(tmp_path / "half" / "checkpoints")
    with pytest.raises(ValueError, match="different model size"):
        big = TinySDConfig(**{**MICRO.__dict__, "unet_channels": (8, 16)})
        pretrain(micro_cfg(model=big, init=init_source(src_ckpt)), tmp_path / "c", init_dir=src_ckpt, **quiet)
