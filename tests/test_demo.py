"""The demo, reduced, on the bundled pretrained model: GCPL must beat zero-shot and chance."""

from __future__ import annotations

import json

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
