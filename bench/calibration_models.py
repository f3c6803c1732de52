"""Which confidence model to fit on held-out images: cross-validated on the demo's calibration images.

For each finished demo folder (`gcpl demo --out D --seed S`) and each diffusion method in it, the
method's trained run scores the demo's calibration images (D/calibration.json, 4 rendered images
per class that are neither train nor test images) with the demo's classifier; the predictions are
cached in --cache. Then every confidence model is fitted on 4 of 5 folds of each run's calibration
images and scored on the fifth; the out-of-fold confidences of every run are pooled for one ECE
(10 equal-width bins), log loss and Brier score per model. With 40 images a run the per-run ECE
is mostly noise; the pooled log loss is the steadier yardstick. No test image is read.

    python bench/calibration_models.py runs/demo_s0 runs/demo_s1 runs/demo_s2 --cache runs/calib_models

`--test-floor` instead reads the demos' test predictions (their confidences as gcpl fitted them)
and prints each method's ECE next to the ECE that perfectly calibrated confidences would get on
the same images (hits drawn as Bernoulli(confidence), 2,000 draws: mean and 90th percentile), the
noise floor of a 120-image ECE.

Models: `temperature` (softmax of -mean error / T over the classes, T by NLL: gcpl's first model),
`margin` (logistic regression of right/wrong on the relative margin (e_2 - e_1) / e_1 of the two
best classes, gcpl.confidence), `sqrt-margin` (the same on its square root), `log-margin` (on its
log). Each fit with the penalty of --penalty on the standardised feature (gcpl.confidence.fit_logistic).
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

from gcpl.confidence import error_row, fit_logistic, probabilities, relative_margin
from gcpl.io import read_json, read_jsonl
from gcpl.metrics import expected_calibration_error

FOLDS = 5


def _fit_temperature(E: torch.Tensor, y: torch.Tensor) -> float:
    """T minimising the NLL of softmax(-E / T), by a search over log T."""
    finite = E.isfinite()
    gaps = torch.where(finite, E - E.where(finite, math.inf).min(1, keepdim=True).values, 0.0)
    s = float(gaps.sum() / finite.sum()) or 1.0

    def nll(log_t):
        logits = torch.where(finite, -E / math.exp(log_t), -math.inf)
        return float(-(torch.log_softmax(logits, -1).gather(1, y[:, None])).mean())

    grid = [math.log(s) + k / 10 for k in range(-80, 41)]
    return math.exp(min(grid, key=nll))


def _scored(folder: Path, method: str, cache: Path) -> tuple[list[dict], list[str]]:
    """The calibration images' predictions by the demo's run of `method` (computed once, cached)."""
    cfg = read_json(folder / method / "eval" / "config.json")
    out = cache / f"{folder.name}_{method}"
    if not (out / "results.json").exists():
        c = cfg["settings"]["classify"]
        subprocess.run([sys.executable, "-m", "gcpl.cli", "eval", str(folder / "calibration.json"), "--part", "val",
                        "--run-dir", str(folder / method / "train"), "--out", str(out),
                        "--n-samples", ",".join(map(str, c["n_samples"])), "--keep", ",".join(map(str, c["keep"])),
                        "--spacing", c["spacing"], "--seed", str(c["seed"])], check=True)
    rows = read_jsonl(out / "predictions.jsonl")
    return rows, cfg["classes"]


def _features(rows: list[dict], classes: list[str]):
    index = {c: i for i, c in enumerate(classes)}
    errors = [{index[c]: e for c, e in r["errors"].items()} for r in rows]
    E = torch.stack([error_row(e, r["ranking"], len(classes)) for e, r in zip(errors, rows)])
    margins = [relative_margin(e, r["ranking"]) for e, r in zip(errors, rows)]
    return E, torch.tensor([r["label"] for r in rows]), margins, [r["pred"] == r["label"] for r in rows]


MARGIN_MODELS = {"margin": lambda m: m, "sqrt-margin": math.sqrt, "log-margin": lambda m: math.log(max(m, 1e-9))}


def out_of_fold(E, y, margins, hits, penalty: float = 1e-2) -> dict[str, list[float]]:
    """Out-of-fold confidences of the prediction under every model (folds: every FOLDS-th image)."""
    n = len(hits)
    conf = {name: [0.0] * n for name in ["temperature", *MARGIN_MODELS]}
    for k in range(FOLDS):
        test = [i for i in range(n) if i % FOLDS == k]
        train = [i for i in range(n) if i % FOLDS != k]
        T = _fit_temperature(E[train], y[train])
        p = probabilities(E[test], T).max(1).values
        for i, v in zip(test, p.tolist()):
            conf["temperature"][i] = v
        for name, feature in MARGIN_MODELS.items():
            x = [feature(margins[i]) if math.isfinite(margins[i]) else math.inf for i in train]
            slope, intercept, _ = fit_logistic(x, [hits[i] for i in train], penalty)
            for i in test:
                conf[name][i] = (1 / (1 + math.exp(-(slope * feature(margins[i]) + intercept)))
                                 if math.isfinite(margins[i]) else 1.0)
    return conf


def test_floor(demos: list[str], methods: list[str], draws: int = 2000) -> dict:
    """ECE of each demo method's test confidences and the ECE of perfectly calibrated ones."""
    rng = random.Random(0)
    out = {}
    print(f"{'demo/method':<22} {'images':>6} {'top-1':>6} {'mean conf':>9} {'ECE':>6}  calibrated: mean / 90th pct")
    for d in demos:
        for method in methods:
            rows = read_jsonl(Path(d) / method / "eval" / "predictions.jsonl")
            conf = [r["confidence"] for r in rows]
            hits = [r["pred"] == r["label"] for r in rows]
            sims = sorted(expected_calibration_error(conf, [rng.random() < c for c in conf]) for _ in range(draws))
            ece = expected_calibration_error(conf, hits)
            name = f"{Path(d).name}/{method}"
            out[name] = {"ece": ece, "floor_mean": sum(sims) / draws, "floor_p90": sims[int(0.9 * draws)]}
            print(f"{name:<22} {len(rows):>6} {100 * sum(hits) / len(hits):>5.1f}% {100 * sum(conf) / len(conf):>8.1f}% "
                  f"{ece:>6.3f}  {out[name]['floor_mean']:.3f} / {out[name]['floor_p90']:.3f}")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demos", nargs="+", help="finished `gcpl demo` folders")
    ap.add_argument("--methods", default="gcpl,comple")
    ap.add_argument("--cache", default="runs/calib_models", help="where the calibration images' predictions go")
    ap.add_argument("--penalty", type=float, default=1e-2, help="of the margin fits (gcpl's default 1e-2)")
    ap.add_argument("--out", help="also write the JSON result here")
    ap.add_argument("--test-floor", action="store_true", help="the demos' test ECE next to its noise floor")
    args = ap.parse_args(argv)
    if args.test_floor:
        result = test_floor(args.demos, args.methods.split(","))
        C.emit_json(result, args.out)
        return result
    pooled: dict[str, list[float]] = {}
    hits_all: list[bool] = []
    per_run = {}
    for d in args.demos:
        for method in args.methods.split(","):
            rows, classes = _scored(Path(d), method, Path(args.cache))
            E, y, margins, hits = _features(rows, classes)
            conf = out_of_fold(E, y, margins, hits, args.penalty)
            per_run[f"{Path(d).name}/{method}"] = {k: expected_calibration_error(v, hits) for k, v in conf.items()}
            for k, v in conf.items():
                pooled.setdefault(k, []).extend(v)
            hits_all += hits
    acc = sum(hits_all) / len(hits_all)
    print(f"{len(hits_all)} calibration images, accuracy {100 * acc:.1f}%; {FOLDS}-fold, out-of-fold ECE (10 bins)")
    print(f"{'model':<14} {'pooled ECE':>10} {'log loss':>9} {'Brier':>7} {'mean conf':>10}  ECE per run")
    result = {"images": len(hits_all), "accuracy": acc, "models": {}}
    for k, v in pooled.items():
        ece = expected_calibration_error(v, hits_all)
        eps = 1e-6
        logloss = -sum(math.log(max(c, eps)) if h else math.log(max(1 - c, eps)) for c, h in zip(v, hits_all)) / len(v)
        brier = sum((c - h) ** 2 for c, h in zip(v, hits_all)) / len(v)
        runs = " ".join(f"{r[k]:.3f}" for r in per_run.values())
        print(f"{k:<14} {ece:>10.3f} {logloss:>9.3f} {brier:>7.3f} {100 * sum(v) / len(v):>9.1f}%  {runs}")
        result["models"][k] = {"pooled_ece": ece, "log_loss": logloss, "brier": brier, "mean_confidence": sum(v) / len(v),
                               "per_run_ece": {r: e[k] for r, e in per_run.items()}}
    C.emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
