"""The demo, reduced, on the bundled pretrained model: GCPL must beat zero-shot and chance."""

from __future__ import annotations

import json

from gcpl.classify import ClassifyConfig
from gcpl.demo import DemoConfig, run_demo


def test_reduced_demo_gcpl_beats_zero_shot_and_chance(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "demo"), classes=4, shots=16, test_per_class=10, seed=0,
                     methods=("zeroshot", "gcpl"), samples=False,
                     classify=ClassifyConfig(n_samples=(10,), keep=(1,)))
    cfg.gcpl.steps = 100
    summary = run_demo(cfg, progress=False, log=lambda *a: None)
    m = summary["methods"]
    assert summary["chance"] == 0.25
    assert m["gcpl"]["top1"] >= summary["chance"] + 0.2, m
    assert m["gcpl"]["top1"] >= m["zeroshot"]["top1"] + 0.2, m
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert on_disk["methods"]["gcpl"]["top1"] == m["gcpl"]["top1"]
    for f in ("report.md", "confusion.png", "split.json", "gcpl/train/tokens.json", "zeroshot/eval/results.json"):
        assert (tmp_path / "demo" / f).exists(), f
