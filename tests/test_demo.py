"""The demo, reduced, on the bundled pretrained model: GCPL must beat zero-shot and chance."""

from __future__ import annotations

import json

import pytest

from gcpl.classify import ClassifyConfig
from gcpl.demo import DemoConfig, run_demo


def test_reduced_demo_gcpl_beats_zero_shot_and_chance(tmp_path):
    # 10 classes (two families of 5 siblings; 4 classes would be 4 siblings of one parent, the
    # hardest case), fewer test images, steps and timesteps than the default demo.
    cfg = DemoConfig(out=str(tmp_path / "demo"), classes=10, shots=16, test_per_class=5, seed=0,
                     methods=("zeroshot", "gcpl"), samples=False,
                     classify=ClassifyConfig(n_samples=(4, 16), keep=(3, 1)))
    cfg.gcpl.steps = 150
    summary = run_demo(cfg, progress=False, log=lambda *a: None)
    m = summary["methods"]
    assert summary["chance"] == 0.1
    # measured with the bundled model of 2026-11-30 14:29: GCPL 58%, zero-shot 16%, chance 10%, 50 s
    assert m["gcpl"]["top1"] >= summary["chance"] + 0.25, m
    assert m["gcpl"]["top1"] >= m["zeroshot"]["top1"] + 0.25, m
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert on_disk["methods"]["gcpl"]["top1"] == m["gcpl"]["top1"]
    for f in ("report.md", "confusion.png", "split.json", "gcpl/train/tokens.json", "zeroshot/eval/results.json"):
        assert (tmp_path / "demo" / f).exists(), f


def test_demo_folder_is_reused_only_for_the_same_benchmark(tmp_path):
    """A rerun into the same --out reuses its benchmark only when seed, class count and sizes are
    those asked for; anything else is a one-line error, never a silent mix."""
    from gcpl.demo import make_benchmark
    from gcpl.errors import GcplError

    cfg = DemoConfig(out=str(tmp_path), classes=2, shots=1, test_per_class=1, seed=0)
    _, split = make_benchmark(cfg)
    _, again = make_benchmark(cfg)
    assert again.train == split.train and again.test == split.test and len(split.classes) == 2
    for change in ({"seed": 1}, {"classes": 3}, {"test_per_class": 2}):
        with pytest.raises(GcplError, match="holds another benchmark"):
            make_benchmark(DemoConfig(**{**cfg.__dict__, **change}))


@pytest.mark.parametrize("change, message", [({"classes": 1}, "--classes must be at least 2"),
                                             ({"shots": 0}, "--shots must be at least 1"),
                                             ({"methods": ("gcpl", "clip")}, "unknown method clip")])
def test_demo_settings_that_make_no_experiment_are_refused(tmp_path, change, message):
    from gcpl.errors import GcplError

    with pytest.raises(GcplError, match=message):
        run_demo(DemoConfig(out=str(tmp_path / "d"), **change), progress=False, log=lambda *a: None)
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_demo_rerun_keeps_finished_work_and_refuses_other_steps(tmp_path):
    from gcpl.errors import GcplError

    def cfg(steps):
        c = DemoConfig(out=str(tmp_path / "d"), classes=2, shots=2, test_per_class=2, seed=0, methods=("gcpl",),
                       samples=False, workers=1, classify=ClassifyConfig(n_samples=(2,), keep=(1,)))
        c.gcpl.steps = steps
        return c

    first = run_demo(cfg(2), progress=False, log=lambda *a: None)
    preds = (tmp_path / "d" / "gcpl" / "eval" / "predictions.jsonl").read_text()
    again = run_demo(cfg(2), progress=False, log=lambda *a: None)
    assert again["methods"] == first["methods"]
    assert (tmp_path / "d" / "gcpl" / "eval" / "predictions.jsonl").read_text() == preds  # nothing rescored
    with pytest.raises(GcplError, match="other class tokens"):  # trained further: old scores are stale
        run_demo(cfg(3), progress=False, log=lambda *a: None)
