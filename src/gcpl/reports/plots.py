"""Pictures for people: confusion matrices (and, with the experiment runner, accuracy plots).

matplotlib is an optional extra (`pip install gcpl[plots]`); callers catch ImportError.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(cm: list[list[int]], classes: list[str], path: str | Path, title: str = "Confusion matrix") -> None:
    import numpy as np

    plt = pyplot()
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    size = min(2 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_grid(mats: dict[str, list[list[int]]], classes: list[str], path: str | Path) -> None:
    """Several row-normalised confusion matrices side by side (one per method)."""
    import numpy as np

    plt = pyplot()
    n = max(1, len(mats))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.6), squeeze=False)
    for ax, (title, cm) in zip(axes[0], mats.items()):
        cm = np.asarray(cm, dtype=float)
        rows = cm.sum(1, keepdims=True)
        ax.imshow(np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0), cmap="Blues", vmin=0, vmax=1)
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{title}\ntop-1 {100 * acc:.1f}%", fontsize=9)
        if len(classes) <= 20:
            ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_curve_png(rows: list[dict], path: str | Path, title: str = "Training loss") -> None:
    """The loss of train_log.jsonl rows ({"step", "loss"}) against the step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 50 else None)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (mean over the logging interval)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_png(bins: dict[str, list[dict]], path: str | Path, title: str = "Reliability") -> None:
    """One reliability diagram per method: accuracy against mean confidence of each confidence bin
    (gcpl.metrics.calibration_bins), the diagonal is perfect calibration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, rows in bins.items():
        ax.plot([b["confidence"] for b in rows], [b["accuracy"] for b in rows], marker="o", label=name)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean of the bin)"), ax.set_ylabel("accuracy")
    ax.set_title(title), ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_plot(rows: list[dict], path: Path, methods: dict, title: str = "") -> None:
    """Top-1 vs shots (Figure 3 layout): trained methods as lines with std error bars, zero-shot flat."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_accuracy(ax, rows, methods, title or "Top-1 accuracy vs shots (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_accuracy(ax, rows: list[dict], methods: dict, title: str, fontsize: int = 10) -> None:
    """One accuracy-vs-shots panel on `ax` from (method, shots) rows with top1_mean / top1_std;
    methods: name -> (legend label, uses shots), in table order (gcpl.reports.experiment.plot_methods)."""
    def uses_shots(m):
        return methods.get(m, (m, True))[1]

    trained = [m for m in methods if uses_shots(m) and any(r["method"] == m for r in rows)]
    xs = sorted({r["shots"] for r in rows if uses_shots(r["method"])})
    for m in trained:
        pts = sorted((r for r in rows if r["method"] == m), key=lambda r: r["shots"])
        ax.errorbar([r["shots"] for r in pts], [r["top1_mean"] for r in pts],
                    yerr=[r["top1_std"] or 0.0 for r in pts], marker="o", capsize=4, label=methods.get(m, (m,))[0])
    flat = [r for r in rows if not uses_shots(r["method"])]
    for r, style in zip(flat, ("--", ":", "-.", (0, (5, 1)))):
        mean, std = r["top1_mean"], r["top1_std"] or 0.0
        line = ax.axhline(mean, linestyle=style, color="tab:gray" if len(flat) == 1 else None,
                          label=methods.get(r["method"], (r["method"],))[0] + (" (band: ± std)" if std else ""))
        if std:
            ax.axhspan(mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    if xs:
        if len(xs) > 1 and xs[0] > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, -2.0), min(hi, 102.0))  # error bars of accuracies may reach past 0 or 100
    ax.set_xlabel("shots (training images per class)", fontsize=fontsize)
    ax.set_ylabel("top-1 accuracy (%)", fontsize=fontsize)
    ax.set_title(title, fontsize=fontsize)
    ax.grid(True, alpha=0.3)
