"""Shared fixtures: a tiny random-weight Stable Diffusion folder (real CLIP tokenizer files) built
once per test session, and small generated class-per-folder image datasets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models run fastest on one thread (measured: a 3-method grid 4 s on 1 thread, 26 s on 2).
torch.set_num_threads(1)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from gcpl.tiny_model import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_v_model_dir(tmp_path_factory):
    from gcpl.tiny_model import TinySDConfig, build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-v"), TinySDConfig(prediction_type="v_prediction"))


@pytest.fixture(scope="session")
def backbone(tiny_model_dir):
    from gcpl.backbone import load_backbone

    return load_backbone(str(tiny_model_dir), device="cpu")


def make_class_folder(root, classes=("red", "green", "blue"), per_class=4, size=20, seed=0):
    """Noisy coloured squares, one subfolder per class; returns root."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            x, y = rng.integers(0, size // 2, 2)
            img[y : y + size // 2, x : x + size // 2] = COLOURS[name]
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def class_folder(tmp_path):
    return make_class_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """A run trained for 2 steps on 3 classes x 2 images of the tiny random model (predict, sample)."""
    from gcpl.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    data = make_class_folder(root / "data", per_class=2)
    assert main(["train", str(data), "--out", str(root / "run"), "--model", str(tiny_model_dir), "--shots", "2",
                 "--steps", "2", "--template", "a photo of {}.", "--init-word", "object"]) == 0
    return root / "run"
