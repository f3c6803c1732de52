"""`gcpl predict` through `gcpl.cli.main`: a trained tiny run over nested folders, a loose file
and an unreadable file; the CSV/JSONL; resume after a torn line; Ctrl-C; zero-shot; the
confidence fit on a known answer; one-line errors."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil

import pytest
import torch
from conftest import make_class_folder

from gcpl.cli import main
from gcpl.confidence import fit_margin, margin_confidence, probabilities, ranked_errors
from gcpl.io import read_jsonl
from gcpl.runs import TrainedRun

FAST = ["--n-samples", "2,4", "--keep", "2,1", "--images-per-batch", "2"]  # 3 classes: 3 x 2 + 2 x 2 = 10 calls


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """6 images: 4 readable in nested folders (one also given as a file), a broken one, a loose file."""
    root = tmp_path_factory.mktemp("inputs")
    make_class_folder(root / "photos" / "deep", classes=("red", "blue"), per_class=1, seed=1)
    make_class_folder(root / "photos", classes=("green",), per_class=2, seed=2)
    (root / "photos" / "broken.png").write_text("not an image")
    (root / "photos" / ".hidden.png").write_text("skipped: hidden")
    make_class_folder(root / "loose", classes=("yellow",), per_class=1, seed=3)
    given = [root / "photos", root / "loose" / "yellow" / "000.png", root / "photos" / "green" / "001.png"]
    return [str(p) for p in given]


def _predict(model, paths, out, *extra):
    return main(["predict", *paths, "--out", str(out), "--model", str(model), *FAST, *extra])


@pytest.fixture(scope="module")
def predicted(tiny_model_dir, run, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "out"
    assert _predict(tiny_model_dir, inputs, out, "--run-dir", str(run)) == 0
    return out


def test_predict_writes_jsonl_csv_and_config(predicted, run, capsys):
    recs = read_jsonl(predicted / "predictions.jsonl")
    assert [r["index"] for r in recs] == list(range(6))
    paths = [r["path"] for r in recs]
    assert paths == sorted(paths) and len(set(paths)) == 6 and not any(".hidden" in p for p in paths)
    assert any(p.endswith("deep/red/000.png") for p in paths) and any(p.endswith("loose/yellow/000.png") for p in paths)
    skipped = [r for r in recs if "skipped" in r]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("broken.png") and "not an image" in skipped[0]["skipped"]
    classes = ["blue", "green", "red"]
    for r in (r for r in recs if "pred" in r):
        assert r["pred"] in classes and r["unet_calls"] == 10
        assert [t[0] for t in r["topk"]][0] == r["pred"] and sorted(t[0] for t in r["topk"]) == classes
        probs = [t[2] for t in r["topk"]]
        assert sum(probs) == pytest.approx(1.0) and probs == sorted(probs, reverse=True)  # k = 3 = all classes
        assert r["confidence"] == probs[0] and 1 / 3 <= r["confidence"] <= 1
    rows = list(csv.DictReader((predicted / "predictions.csv").open()))
    assert list(rows[0]) == ["index", "path", "pred", "confidence", "calibrated", "top1", "top2", "top3", "skipped"]
    assert [r["path"] for r in rows] == paths
    for row, rec in zip(rows, recs):
        assert row["pred"] == rec.get("pred", "") and row["skipped"] == rec.get("skipped", "")
        if "confidence" in rec:
            assert float(row["confidence"]) == pytest.approx(rec["confidence"], abs=1e-6)
    cfg = json.loads((predicted / "config.json").read_text())
    assert cfg["run_tokens"] == TrainedRun.open(run).digest and cfg["classes"] == classes and cfg["versions"]["torch"]
    t = cfg["temperature"]  # no held-out images: uncalibrated relative scores, said everywhere
    assert t["value"] is None and t["calibrated"] is False and "uncalibrated" in t["how"]
    assert all(r["calibrated"] is False for r in recs if "pred" in r)
    assert all(row["calibrated"] == ("no" if row["pred"] else "") for row in rows)


def test_resume_after_torn_line_predicts_only_the_missing(predicted, tiny_model_dir, run, inputs, tmp_path,
                                                          monkeypatch):
    import gcpl.jobs.predict

    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    (out / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    (out / "predictions.csv").unlink()
    loaded = []
    real = gcpl.jobs.predict.load_batch
    monkeypatch.setattr(gcpl.jobs.predict, "load_batch", lambda paths, *a, **k: loaded.extend(paths) or real(paths, *a, **k))
    assert _predict(tiny_model_dir, inputs, out, "--run-dir", str(run)) == 0
    full = read_jsonl(predicted / "predictions.jsonl")
    assert loaded == [r["path"] for r in full[3:]]  # no support images: the temperature is stored, not refitted
    again = read_jsonl(out / "predictions.jsonl")
    assert again[:3] == full[:3] and len(again) == 6
    for a, b in zip(again, full):
        assert a.keys() == b.keys() and a.get("pred") == b.get("pred") and a["path"] == b["path"]
        if "topk" in a:
            assert a["confidence"] == pytest.approx(b["confidence"], rel=1e-5)
            assert [t[1] for t in a["topk"]] == pytest.approx([t[1] for t in b["topk"]], rel=1e-5)
    assert (out / "predictions.csv").read_text().count("\n") == 7


def test_rerun_with_other_settings_or_other_tokens_is_refused(predicted, tiny_model_dir, run, inputs, tmp_path,
                                                               capsys):
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    before = (out / "predictions.jsonl").read_text()
    assert _predict(tiny_model_dir, inputs, out, "--run-dir", str(run), "--top-k", "2") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings" in err and "top_k: 5 -> 2" in err
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "run_tokens": "0" * 16}))  # as if trained further since
    assert _predict(tiny_model_dir, inputs, out, "--run-dir", str(run)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other class tokens" in err
    assert (out / "predictions.jsonl").read_text() == before
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "config.json").write_text(json.dumps({"command": "eval", "settings": {}}))
    assert _predict(tiny_model_dir, inputs, evaluation, "--run-dir", str(run)) == 2
    assert "holds the output of `gcpl eval`" in capsys.readouterr().err


def test_ctrl_c_finishes_the_chunk_then_stops(tiny_model_dir, run, inputs, tmp_path, monkeypatch, capsys):
    import gcpl.scoring

    @contextlib.contextmanager
    def pressed(unit="work"):
        class Stop:
            requested = True

        yield Stop()

    monkeypatch.setattr(gcpl.scoring, "deferred_interrupt", pressed)
    out = tmp_path / "out"
    assert _predict(tiny_model_dir, inputs, out, "--run-dir", str(run), "--temperature", "0.01") == 130
    assert "interrupted; 2 of 6 images done" in capsys.readouterr().err
    assert len(read_jsonl(out / "predictions.jsonl")) == 2
    assert (out / "predictions.csv").read_text().count("\n") == 3


def test_zero_shot_predict(tiny_model_dir, inputs, tmp_path):
    out = tmp_path / "zs"
    assert _predict(tiny_model_dir, inputs, out, "--zero-shot", "--classes", "red,green,blue", "--template",
                    "a {} square.", "--top-k", "2") == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["classes"] == ["red", "green", "blue"] and cfg["template"] == "a {} square." and cfg["run_tokens"] is None
    assert cfg["temperature"]["value"] is None and "uncalibrated" in cfg["temperature"]["how"]
    recs = [r for r in read_jsonl(out / "predictions.jsonl") if "pred" in r]
    assert len(recs) == 5 and all(len(r["topk"]) == 2 and r["confidence"] == r["topk"][0][2] for r in recs)


def test_margin_fit_known_answer():
    # margins 0 (right 1 time in 4) and 1 (right 3 times in 4): without a penalty the logistic fit is
    # exact, logit(1/4) = -ln 3 = intercept, logit(3/4) = ln 3 = slope + intercept
    ms = [0.0] * 4 + [1.0] * 4
    hits = [True, False, False, False, True, True, True, False]
    slope, intercept, how = fit_margin(ms, hits, penalty=0.0)
    assert (slope, intercept) == pytest.approx((2 * math.log(3), -math.log(3)), rel=1e-8)
    assert margin_confidence(1.0, slope, intercept) == pytest.approx(0.75)
    assert margin_confidence(0.0, slope, intercept) == pytest.approx(0.25)  # a tie: finite, not 0
    assert margin_confidence(0.5, slope, intercept) == pytest.approx(0.5)  # halfway
    assert how["images"] == 8 and how["accuracy"] == 0.5
    # every held-out prediction right: the penalty keeps the fit finite, the confidence near 1
    slope, intercept, _ = fit_margin([0.01, 0.1, 0.5], [True] * 3)
    assert math.isfinite(slope) and math.isfinite(intercept) and margin_confidence(0.1, slope, intercept) > 0.95
    assert margin_confidence(math.inf, slope, intercept) == 1.0  # one class scored: nothing to confuse it with


def test_probabilities_follow_the_ranking():
    # racing: class 2 was dropped after few pairs with a lower mean than the winner's; the ranking wins
    ranked = ranked_errors({0: 1.0, 1: 1.2, 2: 0.9}, [0, 1, 2])
    assert ranked == [(0, 1.0), (1, 1.2), (2, 1.2)]
    p = probabilities(torch.tensor([1.0, 1.2, 1.2, math.inf]), 0.1)
    assert float(p.sum()) == pytest.approx(1.0) and float(p[3]) == 0 and p[0] > p[1] == p[2]
    spread = probabilities(torch.tensor([[1.0, 2.0], [10.0, 20.0]]), None)  # per-image spread: scale-free
    assert torch.allclose(spread[0], spread[1])


def test_api_predict_is_exported():
    import gcpl.api
    import gcpl.jobs.predict

    assert gcpl.api.predict is gcpl.jobs.predict.predict and gcpl.api.PredictJob is gcpl.jobs.predict.PredictJob


@pytest.mark.parametrize("case", ["missing run", "run without tokens", "no images", "missing path", "no source",
                                  "zero-shot without classes"])
def test_one_line_errors_write_nothing(case, tiny_model_dir, run, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    image = run.parent / "data" / "red" / "000.png"
    args, msg = {
        "missing run": ([str(image), "--run-dir", str(tmp_path / "nope")], "does not exist"),
        "run without tokens": ([str(image), "--run-dir", str(empty)], "no tokens.json"),
        "no images": ([str(empty), "--run-dir", str(run)], "no image files"),
        "missing path": ([str(tmp_path / "gone.png"), "--run-dir", str(run)], "gone.png does not exist"),
        "no source": ([str(image)], "--run-dir"),
        "zero-shot without classes": ([str(image), "--zero-shot"], "--classes"),
    }[case]
    out = tmp_path / "out"
    assert main(["predict", *args, "--out", str(out), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gcpl predict: error:") and "\n" not in err and msg in err, err
    assert not out.exists()
