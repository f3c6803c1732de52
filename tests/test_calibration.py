"""Honest confidences: the confidence is fitted on images the tokens were not trained on (never
the support set), stored in the run folder and reused; ECE is the standard definition."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_class_folder

from gcpl.cli import main
from gcpl.confidence import calibrated_probabilities, error_row, fit_margin, margin_confidence, relative_margin
from gcpl.errors import GcplError
from gcpl.io import read_jsonl
from gcpl.metrics import calibration_bins, expected_calibration_error


def _errors(n: int, n_classes: int, margin: float, noise: float, seed: int):
    """(n, C) mean errors and labels: the true class lower by `margin`, every error with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(n_classes, (n,), generator=g)
    E = 1 + noise * torch.randn(n, n_classes, generator=g, dtype=torch.float64)
    E[torch.arange(n), y] -= margin
    return E, y


def _margins(E, y):
    """(relative margins of the two best classes, was the best the true class) of error rows."""
    ms = [relative_margin({c: float(e) for c, e in enumerate(row)}, row.argsort().tolist()) for row in E]
    return ms, (E.argmin(1) == y).tolist()


def test_a_support_fit_is_near_1_and_a_held_out_fit_is_honest():
    """Support images (the tokens' training images) are separated perfectly: a confidence fitted
    on them puts every new image near 1 although the classifier is right ~60% of the time; fitted
    on held-out images of the same kind as the new ones, the confidence matches the accuracy (ECE
    small)."""
    support = _margins(*_errors(60, 10, margin=0.5, noise=0.02, seed=0))  # memorised: margin >> noise
    held = _margins(*_errors(1000, 10, margin=0.1, noise=0.05, seed=1))
    new_m, new_hit = _margins(*_errors(2000, 10, margin=0.1, noise=0.05, seed=2))
    conf_new = {}
    for name, (ms, hits) in {"support": support, "held out": held}.items():
        slope, intercept, _ = fit_margin(ms, hits)
        conf = [margin_confidence(m, slope, intercept) for m in new_m]
        conf_new[name] = (sum(conf) / len(conf), expected_calibration_error(conf, new_hit))
    acc = sum(new_hit) / len(new_hit)
    assert 0.4 < acc < 0.8
    assert conf_new["support"][0] > 0.95 and conf_new["support"][1] > 0.2  # over-confident
    assert abs(conf_new["held out"][0] - acc) < 0.03 and conf_new["held out"][1] < 0.1


def test_the_confidence_follows_the_finalists_margin_and_the_probabilities_sum_to_1():
    """Two finalists tied on their shared pairs: about a coin toss; a clear winner: near the held-out
    rate of such images; the other classes share the rest by their relative scores."""
    tied = {0: 0.100, 1: 0.1000001, 2: 0.30, 3: 0.30}  # finalists 0 and 1 on the same pairs: a coin toss
    clear = {0: 0.100, 1: 0.120, 2: 0.30, 3: 0.30}
    ranking = [0, 1, 2, 3]
    ms = [relative_margin(tied, ranking), relative_margin(clear, ranking)]
    assert ms[0] == pytest.approx(1e-6) and ms[1] == pytest.approx(0.2)
    slope, intercept, _ = fit_margin([1e-6] * 20 + [0.2] * 20, [True, False] * 10 + [True] * 19 + [False])
    conf = [margin_confidence(m, slope, intercept) for m in ms]
    assert conf[0] == pytest.approx(0.5, abs=0.05) and conf[1] == pytest.approx(0.95, abs=0.05)  # penalty: shrunk
    for errors in (tied, clear):
        row = error_row(errors, ranking, 4)
        p = calibrated_probabilities(row, 0, relative_margin(errors, ranking), slope, intercept)
        assert float(p.sum()) == pytest.approx(1.0) and float(p[0]) == pytest.approx(
            margin_confidence(relative_margin(errors, ranking), slope, intercept))
        assert float(p[1]) > float(p[2]) == pytest.approx(float(p[3]))


def test_ece_equals_scikit_learns_reliability_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.05, 0.999, 500)
    correct = rng.uniform(size=500) < conf ** 1.5  # over-confident
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    edges = np.linspace(0.0, 1.0 + 1e-8, 11)
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=10)
    counts = counts[counts > 0]
    ece_sklearn = float(np.sum(counts * np.abs(prob_true - prob_pred)) / counts.sum())
    assert expected_calibration_error(conf, correct) == pytest.approx(ece_sklearn, abs=1e-12)
    bins = calibration_bins(conf, correct)
    assert [b["accuracy"] for b in bins] == pytest.approx(list(prob_true))
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def held_run(tiny_model_dir, tmp_path_factory):
    """A run trained with --holdout 1: 2 shots per class, 1 more image per class held out."""
    root = tmp_path_factory.mktemp("held")
    data = make_class_folder(root / "data", per_class=4)
    assert main(["train", str(data), "--out", str(root / "run"), "--model", str(tiny_model_dir), "--shots", "2",
                 "--holdout", "1", "--steps", "2", "--template", "a photo of {}.", "--init-word", "object"]) == 0
    return root, data


def test_holdout_keeps_images_out_of_training_for_calibration(held_run):
    root, _ = held_run
    split = json.loads((root / "run" / "split.json").read_text())
    train, val = {r["path"] for r in split["train"]}, {r["path"] for r in split["val"]}
    assert len(train) == 6 and len(val) == 3 and not train & val
    assert sorted(r["class_name"] for r in split["val"]) == ["blue", "green", "red"]


def test_predict_calibrates_on_the_held_out_shots_once(held_run, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import gcpl.calibration

    root, data = held_run
    fast = ["--n-samples", "2,4", "--keep", "2,1", "--model", str(tiny_model_dir)]
    assert main(["predict", str(data), "--run-dir", str(root / "run"), "--out", str(tmp_path / "p1"), *fast]) == 0
    t = json.loads((tmp_path / "p1" / "config.json").read_text())["temperature"]
    assert t["calibrated"] is True and t["n_images"] == 3 and "held-out shots" in t["fitted_on"]
    assert "fitting the confidence on 3 held-out images" in capsys.readouterr().err
    recs = [r for r in read_jsonl(tmp_path / "p1" / "predictions.jsonl") if "pred" in r]
    assert recs and all(r["calibrated"] is True and 0 < r["confidence"] <= 1 for r in recs)
    stored = json.loads((root / "run" / "calibration.json").read_text())
    assert len(stored["fits"]) == 1 and stored["fits"][0]["slope"] == t["slope"] and t["value"] is None
    # another predict with the same classifier reuses the stored fit: no calibration image is scored
    monkeypatch.setattr(gcpl.calibration, "score_margins", lambda *a, **k: pytest.fail("refitted"))
    assert main(["predict", str(data), "--run-dir", str(root / "run"), "--out", str(tmp_path / "p2"), *fast]) == 0
    assert json.loads((tmp_path / "p2" / "config.json").read_text())["temperature"]["intercept"] == t["intercept"]


def test_calibration_images_must_not_be_training_images(held_run, tiny_model_dir, tmp_path, capsys):
    root, data = held_run
    assert main(["predict", str(data), "--run-dir", str(root / "run"), "--out", str(tmp_path / "p"),
                 "--calibration-data", str(data), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is one the tokens were trained on" in err and "\n" not in err
    assert not (tmp_path / "p" / "config.json").exists()


def test_eval_reports_ece_with_held_out_images(held_run, tiny_model_dir, tmp_path):
    root, data = held_run
    assert main(["eval", str(data), "--run-dir", str(root / "run"), "--out", str(tmp_path / "e"), "--n-samples",
                 "2,4", "--keep", "2,1", "--model", str(tiny_model_dir)]) == 0
    m = json.loads((tmp_path / "e" / "results.json").read_text())
    c = m["calibration"]
    assert c["n_images"] == m["n_images"] == 12 and 0 <= c["ece"] <= 1 and sum(b["n"] for b in c["bins"]) == 12
    assert "expected calibration error" in (tmp_path / "e" / "results.md").read_text()
    fit = json.loads((tmp_path / "e" / "config.json").read_text())["calibration"]
    assert math.isfinite(fit["slope"]) and math.isfinite(fit["intercept"]) and fit["n_images"] == 3


def test_holdout_needs_images_left_after_the_shots(tiny_model_dir, tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=2)
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--model", str(tiny_model_dir), "--shots", "2",
                 "--holdout", "1", "--steps", "1"]) == 2
    assert "--holdout 1: class" in capsys.readouterr().err
    with pytest.raises(GcplError):
        from gcpl.jobs.train import TrainJob

        TrainJob(data="d", out="o", holdout=-1)


def test_the_removed_fit_shots_option_is_ignored_with_a_note(tiny_run, tiny_model_dir, tmp_path, capsys):
    assert main(["predict", str(tiny_run.parent / "data"), "--run-dir", str(tiny_run), "--out", str(tmp_path / "p"),
                 "--n-samples", "2", "--keep", "1", "--fit-shots", "1", "--model", str(tiny_model_dir)]) == 0
    err = capsys.readouterr().err
    assert "--fit-shots is no longer used (the confidence is fitted on held-out images" in err
    assert "confidences are uncalibrated relative scores" in err
