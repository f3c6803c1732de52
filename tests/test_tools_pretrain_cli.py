"""The pretraining scripts' command lines, derived from settings dataclasses: the options (names,
defaults) the bundled models were made with, the identity read from field metadata, and the
commands their model cards print (rebuilt from the stored builds, character for character)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pretrain_tiny
import pretrain_tiny_clip
import pytest
from pretraining.clip import ClipPretrainConfig, TinyClipConfig
from pretraining.sd import PretrainConfig

from gcpl.tiny_model import TinySDConfig

ASSETS = Path(__file__).resolve().parents[1] / "src" / "gcpl" / "assets"

SD_OPTIONS = {
    "--out", "--ckpt-dir", "--resume", "--clean", "--init-from", "--stop-after", "--seed", "--device", "--threads",
    "--workers", "--pool-size", "--fractal-fraction", "--fractal-classes", "--vae-steps", "--vae-batch", "--vae-lr",
    "--kl-weight", "--steps", "--batch", "--lr", "--lr-schedule", "--warmup", "--weight-decay", "--caption-dropout",
    "--ema", "--probe", "--text-hidden", "--text-layers", "--text-heads", "--unet-channels", "--unet-layers",
    "--unet-heads", "--vae-channels", "--image-size", "--prediction-type", "--ckpt-every", "--log-every",
    "--sample-steps", "--guidance"}
CLIP_OPTIONS = {
    "--out", "--ckpt-dir", "--resume", "--clean", "--init-from", "--stop-after", "--seed", "--device", "--threads",
    "--workers", "--pool-cache", "--pool-size", "--fractal-fraction", "--fractal-classes", "--steps", "--batch", "--lr",
    "--lr-schedule", "--warmup", "--min-lr-ratio", "--weight-decay", "--grad-clip", "--ema", "--image-size", "--patch",
    "--vision-hidden", "--vision-layers", "--vision-heads", "--text-hidden", "--text-layers", "--text-heads",
    "--projection-dim", "--probe", "--probe-every", "--ckpt-every", "--log-every"}


@pytest.mark.parametrize("tool, names", [(pretrain_tiny, SD_OPTIONS), (pretrain_tiny_clip, CLIP_OPTIONS)],
                         ids=["sd", "clip"])
def test_the_options_are_the_settings_fields(tool, names):
    actions = [a for a in tool.SCRIPT.parser()._actions if a.dest != "help"]
    assert {a.option_strings[0] for a in actions} == names
    for a in actions:  # help from the field; defaults are the dataclasses', argparse holds none
        assert a.help and a.default is argparse.SUPPRESS, a.dest


def test_sd_defaults():
    run, cfg = pretrain_tiny.parse_args([])
    assert run.out == ASSETS / "tiny-sd" and run.ckpt_dir is None and not run.resume and run.init_from is None
    assert dataclasses.replace(cfg, model=PretrainConfig().model) == PretrainConfig()
    assert cfg.model == TinySDConfig(text_hidden=64, text_layers=3, text_heads=4, unet_channels=(32, 64),
                                     unet_layers_per_block=1, unet_head_dim=8, vae_channels=(32, 64), image_size=32)
    _, _, _, samples = pretrain_tiny.SCRIPT.parse([])
    assert (samples.sample_steps, samples.guidance) == (50, 4.0)
    run, cfg = pretrain_tiny.parse_args(["--unet-channels", "16,32,64", "--unet-layers", "2", "--ema", "0",
                                         "--fractal-classes", "7", "--probe", "0", "--out", "/tmp/x"])
    assert cfg.model.unet_channels == (16, 32, 64) and cfg.model.unet_layers_per_block == 2
    assert (cfg.ema_decay, cfg.n_fractal_classes, cfg.probe_per_class, run.out) == (0.0, 7, 0, Path("/tmp/x"))


def test_clip_defaults():
    run, cfg = pretrain_tiny_clip.parse_args([])
    assert run.out == ASSETS / "tiny-clip" and cfg == ClipPretrainConfig()
    _, cfg = pretrain_tiny_clip.parse_args(["--patch", "4", "--pool-cache", "/tmp/pools", "--grad-clip", "0.5"])
    assert cfg.model == TinyClipConfig(patch_size=4) and cfg.pool_cache == "/tmp/pools" and cfg.grad_clip == 0.5


def test_identity_is_read_from_the_fields():
    bookkeeping = {"ckpt_every", "log_every", "device", "threads", "workers", "probe_per_class"}
    sd, clip = PretrainConfig(), ClipPretrainConfig()
    assert set(sd.identity()) == {f.name for f in dataclasses.fields(sd)} - bookkeeping - {"init"}
    assert set(clip.identity()) == {f.name for f in dataclasses.fields(clip)} - bookkeeping - {
        "init", "probe_every", "pool_cache"}
    assert sd.identity()["model"]["unet_channels"] == [32, 64]  # JSON form, as checkpoints store it
    assert clip.identity()["betas"] == [0.9, 0.98]
    assert PretrainConfig.from_dict(sd.identity()) == sd and ClipPretrainConfig.from_dict(clip.identity()) == clip


@pytest.mark.parametrize("tool, folder", [(pretrain_tiny, "tiny-sd"), (pretrain_tiny_clip, "tiny-clip")])
def test_the_bundled_cards_commands(tool, folder):
    """The stored command line still parses to the stored run, and the card's commands (the chain
    of source runs and the run's own) come out as the card prints them."""
    build = json.loads((ASSETS / folder / "gcpl_build.json").read_text())
    stored = build["pretrain_config"]
    _, cfg, *_ = tool.SCRIPT.parse(build["argv"])  # the config without reading --init-from's folder
    model = cfg.model if folder == "tiny-clip" else tool.SCRIPT.parse(build["argv"])[2].config()
    assert dataclasses.replace(cfg, model=model).identity() == {k: v for k, v in stored.items() if k != "init"}
    card = (ASSETS / folder / "README.md").read_text().splitlines()
    printed = [x for x in card if x.startswith(tool.SCRIPT.path + " ") and "--card-only" not in x]
    run = tool.SCRIPT.parse(build["argv"])[0]
    chain = tool.SCRIPT.source_commands(type(cfg).from_dict(stored), str(run.init_from)) if "init" in stored else []
    assert printed == chain + [tool.SCRIPT.reproduce(build["argv"], ASSETS / folder)]
