"""Classification metrics from per-image predictions: top-1, top-5, mean per-class accuracy,
macro-F1 and the confusion matrix (rows: true class, columns: predicted class)."""

from __future__ import annotations

import numpy as np


def compute_metrics(labels: list[int], preds: list[int], rankings: list[list[int]], n_classes: int) -> dict:
    y, p = np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)
    if len(y) == 0:
        return {"n_images": 0}
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (y, p), 1)
    support = cm.sum(1)
    tp = np.diag(cm).astype(float)
    present = support > 0
    per_class_acc = np.divide(tp, support, out=np.zeros(n_classes), where=present)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n_classes), where=cm.sum(0) > 0)
    recall = per_class_acc
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=(precision + recall) > 0)
    top5 = np.mean([yy in r[:5] for yy, r in zip(y, rankings)])
    return {
        "n_images": int(len(y)),
        "top1": float((y == p).mean()),
        "top5": float(top5),
        "mean_per_class_accuracy": float(per_class_acc[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class_accuracy": per_class_acc.tolist(),
        "confusion_matrix": cm.tolist(),
    }


def calibration_bins(confidences, correct, n_bins: int = 10) -> list[dict]:
    """Equal-width bins of the confidence on [0, 1] (the last bin closed): per non-empty bin its
    range, image count, mean confidence and accuracy (a reliability diagram's points)."""
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    which = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(sel.sum()),
                        "confidence": float(conf[sel].mean()), "accuracy": float(hit[sel].mean())})
    return out


def expected_calibration_error(confidences, correct, n_bins: int = 10) -> float:
    """ECE (Guo et al. 2017): the image-weighted mean over equal-width confidence bins of
    |accuracy - mean confidence|; 0 for perfectly calibrated confidences."""
    bins = calibration_bins(confidences, correct, n_bins)
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n) if n else 0.0
