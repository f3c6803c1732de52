"""Contrastive pretraining of the bundled tiny CLIP: micro run, saved folder, exact resume, card."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pretraining.clip import (
    ClipPretrainConfig,
    TinyClipConfig,
    Tokens,
    build_clip,
    clip_loss,
    init_source,
    pixel_values,
    pretrain_clip,
    save_clip_folder,
)

REPO = Path(__file__).resolve().parents[1]
TINY_SD = REPO / "src" / "gcpl" / "assets" / "tiny-sd"
MICRO = TinyClipConfig(image_size=16, patch_size=4, vision_hidden=32, vision_layers=1, vision_heads=2,
                       text_hidden=32, text_layers=1, text_heads=2, projection_dim=16)
QUIET = dict(log=lambda s: None)


def micro_cfg(**kw) -> ClipPretrainConfig:
    base = dict(model=MICRO, seed=3, pool_size=48, n_fractal_classes=4, steps=3, batch=8, warmup=1,
                ckpt_every=1000, log_every=1, threads=1, probe_per_class=1)
    base.update(kw)
    return ClipPretrainConfig(**base)


def _tool():
    return importlib.import_module("pretrain_tiny_clip")  # tools/ is on the tests' path (pyproject.toml)


def _weights(res) -> dict:
    return {k: v.clone() for k, v in res.model.state_dict().items()}


def test_defaults_are_the_tiny_sd_corpus():
    """The CLIP sees the images and captions the bundled SD saw: same corpus settings."""
    build = json.loads((TINY_SD / "gcpl_build.json").read_text())
    sd = build["pretrain_config"]
    d = ClipPretrainConfig()
    assert (d.seed, d.pool_size, d.fractal_fraction, d.n_fractal_classes, d.model.image_size) == (
        sd["seed"], sd["pool_size"], sd["fractal_fraction"], sd["n_fractal_classes"], sd["model"]["image_size"])
    m = d.model  # the text tower has the SD text encoder's shape
    assert (m.text_hidden, m.text_layers, m.text_heads) == (
        sd["model"]["text_hidden"], sd["model"]["text_layers"], sd["model"]["text_heads"])


def test_loss_and_padding():
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    loss, a, b = clip_loss(img, img.clone(), torch.tensor(np.log(100.0)))
    assert a == 1 and b == 1 and loss < 0.1
    loss_r, _, _ = clip_loss(img, img.roll(1, 0), torch.tensor(np.log(100.0)))
    assert loss_r > 1
    # padding to the longest caption gives the features of the usual padding to 77
    model, tok = build_clip(MICRO)
    caps = ["a red circle.", "a photo of a mask fractal, on a very long caption"]
    with torch.no_grad():
        f = model.get_text_features(input_ids=Tokens(tok)(caps)).pooler_output
        f77 = model.get_text_features(input_ids=tok(caps, padding="max_length", max_length=77,
                                                    return_tensors="pt").input_ids).pooler_output
    torch.testing.assert_close(f, f77, atol=1e-5, rtol=1e-5)


def test_micro_run_saves_a_loadable_clip(tmp_path):
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

    res = pretrain_clip(micro_cfg(probe_every=2), tmp_path / "run", **QUIET)
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["stage"] == "clip"] == [1, 2, 3]
    assert [r["step"] for r in log if r["stage"] == "probe"] == [2]
    assert all(np.isfinite(r["loss"]) for r in log if r["stage"] == "clip")
    pr = res.stats["probe"]
    for g in ("fractal", "shape"):
        assert 0 <= pr[f"probe_{g}_acc"] <= 1 and pr[f"probe_{g}_chance"] == {"fractal": 0.25, "shape": 0.1}[g]

    folder = tmp_path / "tiny-clip"
    build = {"pretrain_config": micro_cfg().identity(), "stats": res.stats, "fractal_words": res.corpus.fractal_words,
             "argv": ["--out", "/elsewhere", "--steps", "3", "--resume", "--stop-after", "2"], "finished": "today"}
    files = save_clip_folder(res.model, res.tokenizer, folder, build=build)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt",
            "tokenizer_config.json", "gcpl_build.json"} <= set(files)
    for f in ("vocab.json", "merges.txt"):  # the tiny SD's tokenizer
        assert (folder / f).read_bytes() == (TINY_SD / "tokenizer" / f).read_bytes()
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as st:
        assert {st.get_slice(k).get_dtype() for k in st.keys()} == {"F16"}
    loaded = CLIPModel.from_pretrained(folder)  # plain call: fp32
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    w = res.model.state_dict()
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, w[k].half().float(), atol=0, rtol=0)
    assert CLIPModel.from_pretrained(folder, dtype=torch.bfloat16).dtype == torch.bfloat16
    # the processor (tokenizer + image processor) reproduces the training inputs
    proc = CLIPProcessor.from_pretrained(folder)
    from PIL import Image

    imgs = res.pool.images[:3]
    px = proc(images=[Image.fromarray(x) for x in imgs], return_tensors="pt").pixel_values
    torch.testing.assert_close(px, pixel_values(imgs))
    assert CLIPTokenizer.from_pretrained(folder)("a red circle.").input_ids == res.tokenizer("a red circle.").input_ids
    with torch.no_grad():
        out = loaded(**proc(text=["a red circle.", "mask fractal."], images=[Image.fromarray(x) for x in imgs],
                            return_tensors="pt", padding=True))
    assert out.logits_per_image.shape == (3, 2) and torch.isfinite(out.logits_per_image).all()

    # the model card lists the command (the folder as --out, run-control flags left out)
    (folder / "train_log.jsonl").write_text((tmp_path / "run" / "train_log.jsonl").read_text())
    tool = _tool()
    tool.write_card(folder, build)
    card = (folder / "README.md").read_text()
    cmds = [x for x in card.splitlines() if x.startswith("python tools/pretrain_tiny_clip.py")]
    assert len(cmds) == 2 and f"--out {folder}" in cmds[0] and "--steps 3" in cmds[0]
    assert "/elsewhere" not in cmds[0] and "--resume" not in cmds[0] and "--stop-after" not in cmds[0]
    assert cmds[1].startswith(f"python tools/pretrain_tiny_clip.py --card-only {folder}")
    assert "Zero-shot probe" in card and "10 shape words" in card and (folder / "loss_curve.png").exists()


def test_resume_equals_uninterrupted(tmp_path):
    cfg = micro_cfg(steps=4, ckpt_every=2, ema_decay=0.9, probe_per_class=0)
    full = pretrain_clip(cfg, tmp_path / "a", **QUIET)
    # the interrupted run keeps its pool in a cache: the resumes load it (the same images)
    cached = dataclasses.replace(cfg, pool_cache=str(tmp_path / "pools"))
    assert pretrain_clip(cached, tmp_path / "b", stop_after=1, **QUIET) is None
    resumed = pretrain_clip(cached, tmp_path / "b", resume=True, **QUIET)
    assert resumed.stats["pool_from_cache"] and not full.stats["pool_from_cache"]
    assert np.array_equal(resumed.pool.images, full.pool.images) and resumed.pool.attrs == full.pool.attrs
    wa, wb = _weights(full), _weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                       for x in (p / "train_log.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")
    files = {p.suffix for p in (tmp_path / "b" / "checkpoints").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json"}
    with pytest.raises(ValueError, match="different settings"):
        pretrain_clip(micro_cfg(steps=4, ckpt_every=2, ema_decay=0.9, lr=1e-4), tmp_path / "b", resume=True, **QUIET)

    # a continuation starts from the finished run's final (EMA) weights
    src = tmp_path / "a" / "checkpoints"
    zero = pretrain_clip(micro_cfg(steps=0, probe_per_class=0, init=init_source(src)), tmp_path / "c",
                         init_dir=src, **QUIET)
    for k, v in _weights(zero).items():
        assert torch.equal(v, wa[k]), k
    with pytest.raises(ValueError, match="no checkpoint"):
        init_source(tmp_path / "nothing")


def test_bundled_tiny_clip():
    """The shipped folder: at most 20 MB, loads as fp32 with plain from_pretrained, and its build
    record shows the zero-shot probe at >= 3x chance on both word sets."""
    folder = REPO / "src" / "gcpl" / "assets" / "tiny-clip"
    if not (folder / "model.safetensors").exists():
        pytest.skip("no bundled tiny-clip")
    from transformers import CLIPModel

    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) <= 20e6
    model = CLIPModel.from_pretrained(folder)
    assert model.dtype == torch.float32 and model.config.vision_config.image_size == 32
    build = json.loads((folder / "gcpl_build.json").read_text())
    probe = build["stats"]["probe"]
    for g in ("fractal", "shape"):
        assert probe[f"probe_{g}_acc"] >= 3 * probe[f"probe_{g}_chance"] == pytest.approx(0.3)
    assert "Zero-shot probe" in (folder / "README.md").read_text()
