"""A 2-process CPU launch (torchrun, gloo) gives the results of a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from gcpl.cli import main
from gcpl.io import read_jsonl


def _launch(args, tmp_path):
    env = {**os.environ, "GCPL_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gcpl.cli", *args]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _vectors(run):
    return {f.name: load_file(f) for f in sorted((run / "embeddings").iterdir())}


@pytest.mark.parametrize("method", ["gcpl", "comple"])
def test_two_process_train_and_eval_match_one_process(tiny_model_dir, class_folder, tmp_path, method):
    common = ["--model", str(tiny_model_dir), "--shots", "3", "--steps", "3", "--method", method,
              "--template", "a photo of {}.", "--batch", "2"]
    if method == "comple":
        common += ["--groups", "2"]
    ev = ["--model", str(tiny_model_dir), "--n-samples", "2,4", "--keep", "2,1"]
    one, two = tmp_path / "one", tmp_path / "two"
    torch.set_num_threads(1)
    assert main(["train", str(class_folder), "--out", str(one / "run"), *common]) == 0
    _launch(["train", str(class_folder), "--out", str(two / "run"), *common], tmp_path)

    a, b = _vectors(one / "run"), _vectors(two / "run")
    assert a.keys() == b.keys()
    for f in a:
        for k in a[f]:
            torch.testing.assert_close(a[f][k], b[f][k], rtol=1e-4, atol=1e-5)
    assert json.loads((one / "run" / "tokens.json").read_text()) == json.loads((two / "run" / "tokens.json").read_text())

    if method == "comple":  # eval sharding does not depend on the method: launched once
        return
    assert main(["eval", str(class_folder), "--run-dir", str(one / "run"), "--out", str(one / "eval"), *ev]) == 0
    _launch(["eval", str(class_folder), "--run-dir", str(two / "run"), "--out", str(two / "eval"), *ev], tmp_path)
    pa, pb = read_jsonl(one / "eval" / "predictions.jsonl"), read_jsonl(two / "eval" / "predictions.jsonl")
    assert [r["index"] for r in pb] == list(range(12)) and not list((two / "eval").glob("predictions-rank*"))
    assert [r["pred"] for r in pa] == [r["pred"] for r in pb]
    ra, rb = (json.loads((d / "eval" / "results.json").read_text()) for d in (one, two))
    assert ra["confusion_matrix"] == rb["confusion_matrix"]
