"""`gcpl sample` through `gcpl.cli.main` on a trained tiny run: n images of the run's size, a grid
with a label strip per class, the same images for a seed; the demo's labelled samples.png; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gcpl.cli import main
from gcpl.generation import LABEL_HEIGHT, label_grid, samples_png


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def _sample(model, run, out, *extra):
    return main(["sample", "--run-dir", str(run), "--out", str(out), "--model", str(model), "--steps", "2", *extra])


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_sample_writes_n_images_and_a_labelled_grid(tiny_model_dir, run, tmp_path, capsys):
    out = tmp_path / "a"
    assert _sample(tiny_model_dir, run, out, "--class", "red", "-n", "3") == 0
    assert "3 images" in capsys.readouterr().out
    files = [out / f"red-{k:03d}.png" for k in range(3)]
    assert sorted(p.name for p in out.glob("*.png")) == sorted([f.name for f in files] + ["grid.png"])
    assert all(_pixels(f).shape == (16, 16, 3) for f in files)  # the run's resolution
    grid = _pixels(out / "grid.png")
    assert grid.shape == (LABEL_HEIGHT + 256, 3 * 256, 3)  # 16 px cells enlarged 16x, under a label strip
    strip = grid[:LABEL_HEIGHT]
    assert (strip < 100).any() and (strip[:, 200:] == 255).all()  # dark text at the left, white after it
    assert np.array_equal(grid[LABEL_HEIGHT::16, :256:16], _pixels(files[0]))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["classes"] == ["red"] and cfg["template"] == "a photo of {}." and cfg["files"] == [f.name for f in files]

    same, other = tmp_path / "b", tmp_path / "c"
    assert _sample(tiny_model_dir, run, same, "--class", "red", "-n", "2", "--batch", "1") == 0
    assert _sample(tiny_model_dir, run, other, "--class", "red", "-n", "1", "--seed", "1") == 0
    for k in range(2):  # the same seed: the same images, whatever n and the batch size
        assert np.array_equal(_pixels(same / f"red-{k:03d}.png"), _pixels(files[k]))
    assert not np.array_equal(_pixels(other / "red-000.png"), _pixels(files[0]))


def test_every_class_by_default_and_a_row_each(tiny_model_dir, run, tmp_path):
    out = tmp_path / "all"
    assert _sample(tiny_model_dir, run, out, "-n", "1", "--scheduler", "euler", "--guidance", "1") == 0
    assert sorted(p.name for p in out.glob("*-000.png")) == ["blue-000.png", "green-000.png", "red-000.png"]
    assert _pixels(out / "grid.png").shape == (3 * (LABEL_HEIGHT + 256), 256, 3)


@pytest.mark.parametrize("case", ["unknown class", "missing run"])
def test_one_line_errors(case, tiny_model_dir, run, tmp_path, capsys):
    out = tmp_path / "out"
    args, msg = {"unknown class": ([run, "--class", "purple"], "class 'purple' was not learned by run"),
                 "missing run": ([tmp_path / "nope"], "does not exist")}[case]
    assert main(["sample", "--run-dir", str(args[0]), *args[1:], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gcpl sample: error:") and "\n" not in err and msg in err, err
    assert not out.exists()


def test_demo_samples_png_labels_each_class_row(backbone, run, tmp_path):
    from gcpl.data.splits import Split

    samples_png(backbone, run, Split.from_json(run / "split.json"), tmp_path / "samples.png", per_class=2, real=1,
                steps=2)
    grid = _pixels(tmp_path / "samples.png")
    assert grid.shape == (3 * (LABEL_HEIGHT + 256), (1 + 2) * 256 + 64, 3)  # 1 real, a gap, 2 generated
    for row in range(3):
        strip = grid[row * (LABEL_HEIGHT + 256):][:LABEL_HEIGHT]
        assert (strip < 100).any()
        assert (grid[row * (LABEL_HEIGHT + 256) + LABEL_HEIGHT:][:256, 256:320] == 255).all()  # the gap


def test_label_grid_differs_per_label():
    cell = np.zeros((8, 8, 3), np.uint8)
    a = np.asarray(label_grid([("alpha", [cell])], scale=4))
    b = np.asarray(label_grid([("beta", [cell])], scale=4))
    assert a.shape == b.shape == (LABEL_HEIGHT + 32, 32, 3) and not np.array_equal(a, b)
