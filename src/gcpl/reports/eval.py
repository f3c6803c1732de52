"""An evaluation folder's results, rebuilt from its predictions.jsonl (one line per image, written
as it goes by every classifier of gcpl: the diffusion classifier and the CLIP methods):
results.json (machines), results.md (people), confusion.png (with matplotlib)."""

from __future__ import annotations

from pathlib import Path

from ..calibration import calibration_report
from ..io import atomic_write_text, read_jsonl, write_json, write_jsonl
from ..metrics import compute_metrics


def merge_predictions(out: Path) -> None:
    """predictions.jsonl := its records plus every shard file's, by image index; shard files removed
    (the processes of a multi-process evaluation each write their own file)."""
    files = [out / "predictions.jsonl", *sorted(out.glob("predictions-rank*.jsonl"))]
    records = {}
    for f in files:
        for r in read_jsonl(f):
            records.setdefault(r["index"], r)
    write_jsonl(out / "predictions.jsonl", [records[i] for i in sorted(records)])
    for f in files[1:]:
        f.unlink()


def summarize(out: str | Path, classes: list[str]) -> dict:
    """results.json / results.md / confusion.png of an evaluation folder; returns the metrics."""
    out = Path(out)
    records = read_jsonl(out / "predictions.jsonl")
    scored = [r for r in records if "pred" in r]
    skipped = [r for r in records if "skipped" in r]
    m = compute_metrics([r["label"] for r in scored], [r["pred"] for r in scored],
                        [r["ranking"] for r in scored], len(classes))
    m["classes"] = classes
    m["skipped_images"] = len(skipped)
    m["unet_calls_per_image"] = (sum(r.get("unet_calls", 0) for r in scored) / len(scored)) if scored else 0
    if scored and all("confidence" in r for r in scored):  # calibrated on held-out images (gcpl.calibration)
        m["calibration"] = calibration_report(scored)
    write_json(out / "results.json", m)
    plotted = False
    if "confusion_matrix" in m:
        try:
            from .plots import confusion_png

            confusion_png(m["confusion_matrix"], classes, out / "confusion.png")
            plotted = True
        except ImportError:
            pass
    atomic_write_text(out / "results.md", results_markdown(m, confusion_png=plotted))
    return m


#: results.md shows the confusion matrix as a table up to this many classes, else links confusion.png
TABLE_CLASSES = 20


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def confusion_markdown(matrix: list[list[int]], classes: list[str]) -> list[str]:
    """A confusion matrix as Markdown table lines: a row per true class that has test images (as
    the per-class table), a column per class that can be predicted (every class)."""
    lines = ["| true \\ predicted | " + " | ".join(_cell(c) for c in classes) + " |",
             "|---|" + "---:|" * len(classes)]
    lines += [f"| {_cell(c)} | " + " | ".join(str(n) for n in row) + " |"
              for c, row in zip(classes, matrix) if sum(row) > 0]
    return lines


def results_markdown(m: dict, confusion_png: bool = True) -> str:
    """results.md: the metrics, per-class accuracy, and the confusion matrix (a table up to
    TABLE_CLASSES classes; above that a link to confusion.png when it was drawn)."""
    if not m.get("n_images"):
        return (f"# Results\n\nNo image was scored (skipped unreadable: {m.get('skipped_images', 0)}).\n")
    n_classes = len(m["classes"])
    lines = ["# Results", "", f"- images: {m['n_images']} (skipped unreadable: {m['skipped_images']})",
             f"- top-1: {100 * m['top1']:.2f}%"]
    if n_classes > 5:  # with 5 classes or fewer every image is in its top 5
        lines.append(f"- top-5: {100 * m['top5']:.2f}%")
    lines += [f"- mean per-class accuracy: {100 * m['mean_per_class_accuracy']:.2f}%",
              f"- macro-F1: {100 * m['macro_f1']:.2f}%"]
    if m.get("unet_calls_per_image"):
        lines.append(f"- UNet calls per image: {m['unet_calls_per_image']:.1f}")
    if m.get("calibration"):
        c = m["calibration"]
        lines.append(f"- confidence: mean {100 * c['mean_confidence']:.1f}%, expected calibration error "
                     f"{c['ece']:.3f} (10 equal-width bins; the confidence fitted on held-out images)")
    support = [sum(row) for row in m["confusion_matrix"]]
    lines += ["", "| class | test images | accuracy |", "|---|---|---|"]
    lines += [f"| {c} | {n} | {100 * a:.1f}% |"
              for c, n, a in zip(m["classes"], support, m["per_class_accuracy"]) if n > 0]
    absent = n_classes - sum(1 for n in support if n > 0)
    if absent:
        lines += ["", f"{absent} learned class(es) have no test image and are not listed."]
    if n_classes <= TABLE_CLASSES:
        lines += ["", "## Confusion matrix", "", *confusion_markdown(m["confusion_matrix"], m["classes"])]
    elif confusion_png:
        lines += ["", f"Confusion matrix ({n_classes} classes): [confusion.png](confusion.png)"]
    else:
        lines += ["", f"Confusion matrix ({n_classes} classes): in results.json (`confusion_matrix`); install "
                  "matplotlib (the [plots] extra) for confusion.png"]
    return "\n".join(lines) + "\n"
