"""Calibrated confidence: how often a trained run's classifier is right at a given margin between
its two best classes, fitted on labelled images its tokens were NOT trained on (gcpl.confidence:
p = sigmoid(slope * margin + intercept)).

Fitting on the support set (the images the tokens were trained on) learns that the classifier is
always right: every confidence comes out near 1. So the fit uses held-out images only, from the
first source that has them:

1. `--calibration-data DATA`: labelled images the user gives (a class-per-folder tree, or a split
   JSON's `val` list, else its `test` list);
2. the run's held-out shots: `gcpl train --holdout K` keeps K images per class out of training
   and lists them in RUN/split.json under `val`.

Without either there is no fit: confidences are relative scores (gcpl.confidence with each
image's own error spread), flagged as uncalibrated wherever they are written.

A fit is stored in RUN/calibration.json, keyed by what it depends on (the run's tokens, the
classifier, the image size, the images), so every later eval and predict of the run with the same
classifier reuses it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from . import __version__
from .confidence import fit_margin, margin_confidence, relative_margin
from .data.images import load_batch
from .data.splits import Sample, Split, read_samples
from .errors import GcplError
from .io import read_json, write_json
from .latents import encode
from .metrics import calibration_bins, expected_calibration_error
from .runs import TrainedRun

FILE = "calibration.json"
VERSION = 2  # 1: one softmax temperature over the mean errors


def held_out_images(run: TrainedRun | None, data: str | None, classes: list[str]) -> tuple[list[Sample], str] | None:
    """(labelled images the tokens were not trained on, where they come from), or None. `run`: the
    trained run (None for zero-shot, whose calibration needs `data`)."""
    if data:
        path = Path(data)
        part = "val" if path.suffix == ".json" and Split.from_json(path).val else "test"
        _, samples = read_samples(data, part if path.suffix == ".json" else "test")
        source = f"--calibration-data {data}" + (f" ({part} list)" if path.suffix == ".json" else "")
    elif run is None:
        return None
    else:
        split = Split.from_json(run.folder / "split.json")
        samples, source = split.val, "the run's held-out shots (gcpl train --holdout; split.json val list)"
        if not samples:
            return None
    known = set(classes)
    unknown = sorted({s.class_name for s in samples} - known)
    if unknown:
        raise GcplError(f"calibration image class {unknown[0]!r} is not one of the {len(classes)} classes")
    trained = ({str(Path(s.path).resolve()) for s in Split.from_json(run.folder / "split.json").train}
               if run is not None else set())
    overlap = [s.path for s in samples if str(Path(s.path).resolve()) in trained]
    if overlap:
        raise GcplError(f"calibration image {overlap[0]} is one the tokens were trained on; calibrate on other "
                        "images (a held-out folder, or gcpl train --holdout K)")
    if not samples:
        raise GcplError(f"{source} holds no labelled image")
    return samples, source


def _key(run: TrainedRun, clf, size: int, samples: list[Sample], classes: list[str]) -> dict:
    h = hashlib.sha256("\n".join(f"{s.path}\t{s.class_name}" for s in samples).encode()).hexdigest()[:16]
    return {"version": VERSION, "run_tokens": run.digest, "classifier": clf.cfg.describe(len(classes)),
            "noise_seed": clf.cfg.seed, "norm": clf.cfg.norm, "resolution": size, "model": clf.bb.model_id,
            "classes": hashlib.sha256("\n".join(classes).encode()).hexdigest()[:16], "images": h}


def score_margins(clf, bb, samples: list[Sample], index: dict[str, int], size: int, chunk: int = 8,
                  progress: bool = False, desc: str = "calibration") -> tuple[list[float], list[bool], int]:
    """(relative margins of the two best classes, was the prediction right, UNet calls) of labelled
    images scored by classifier clf."""
    margins, hits, calls = [], [], 0
    for i in tqdm(range(0, len(samples), chunk), desc=desc, unit="chunk", disable=not progress):
        part = samples[i : i + chunk]
        loaded = load_batch([s.path for s in part], size, allow_empty=True)
        if not loaded.kept:
            continue
        x0 = encode(bb.vae, loaded.pixels).mean[:, 0] * bb.scaling_factor
        for k, sc in zip(loaded.kept, clf.score(x0)):
            margins.append(relative_margin(sc.mean_error, sc.ranking))
            hits.append(sc.pred == index[part[k].class_name])
            calls += sc.unet_calls
    if not margins:
        raise GcplError("no calibration image could be read")
    return margins, hits, calls


def _fit(clf, samples: list[Sample], source: str, classes: list[str], size: int, log, progress: bool) -> dict:
    if log:
        log(f"fitting the confidence on {len(samples)} held-out images ({source})")
    t0 = time.perf_counter()
    margins, hits, calls = score_margins(clf, clf.bb, samples, {c: i for i, c in enumerate(classes)}, size,
                                         progress=progress)
    slope, intercept, how = fit_margin(margins, hits)
    conf = [margin_confidence(m, slope, intercept) for m in margins]
    return {"slope": slope, "intercept": intercept, **how, "fitted_on": source, "n_images": len(hits),
            "unet_calls": calls, "ece_on_fit": expected_calibration_error(conf, hits),
            "seconds": time.perf_counter() - t0, "gcpl": __version__}


def load_or_fit(run: TrainedRun, clf, classes: list[str], size: int, data: str | None = None,
                log: Callable[[str], None] | None = None, progress: bool = False) -> dict | None:
    """The run's calibration for classifier clf (fitted now on held-out images, or read from
    RUN/calibration.json), or None when there is nothing held out to fit on."""
    found = held_out_images(run, data, classes)
    if found is None:
        return None
    samples, source = found
    key = _key(run, clf, size, samples, classes)
    path = run.folder / FILE
    stored = read_json(path) if path.exists() else {"fits": []}
    for fit in stored.get("fits", []):
        if fit.get("key") == key:
            return fit
    fit = {"key": key, **_fit(clf, samples, source, classes, size, log, progress)}
    stored["fits"] = [f for f in stored.get("fits", []) if f.get("key") != key] + [fit]
    write_json(path, stored)
    return fit


def fit_for(run: TrainedRun | None, clf, classes: list[str], size: int, data: str | None = None,
            log: Callable[[str], None] | None = None, progress: bool = False) -> dict | None:
    """The calibration of a classifier: a trained run's (load_or_fit: stored in its folder), or,
    zero-shot, fitted on `data` (not stored: there is no run folder); None without held-out images."""
    if run is not None:
        return load_or_fit(run, clf, classes, size, data, log, progress)
    found = held_out_images(None, data, classes)
    if found is None:
        return None
    samples, source = found
    return _fit(clf, samples, source, classes, size, log, progress)


def confidence(score, fit: dict) -> float:
    """The calibrated probability that a classifier's prediction (gcpl.classify.ImageScore) is right."""
    return margin_confidence(relative_margin(score.mean_error, score.ranking), fit["slope"], fit["intercept"])


def calibration_report(records: list[dict]) -> dict:
    """ECE and reliability bins of scored records that carry a calibrated "confidence"."""
    scored = [r for r in records if "confidence" in r and "pred" in r and "label" in r]
    conf = [r["confidence"] for r in scored]
    hit = [r["pred"] == r["label"] for r in scored]
    return {"ece": expected_calibration_error(conf, hit), "bins": calibration_bins(conf, hit),
            "mean_confidence": sum(conf) / len(conf) if conf else None, "n_images": len(scored)}
