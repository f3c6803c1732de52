"""The paper's Table 2 and Figure 3 across several experiment folders (one per dataset).

    gcpl report runs/paper/cars runs/paper/flowers102 ... [--shots 16] [--out runs/paper]

writes into `--out` (default: the folders' common parent):
    table2.md, table2.csv   top-1 (%) per method x dataset at one shots value (default: the largest
                            any dataset has; the paper's is 16), mean ± std over seeds, and the
                            average over datasets (only for a method whose every cell is complete)
    figure3.png             top-1 vs shots: the mean over datasets first (as the paper's first
                            panel), then one panel per dataset
A cell is "missing" when no run of it finished, and shows "(k/n seeds)" when only k of the n
planned seeds did (from each folder's experiment.json); such cells are left out of the average.
Zero-shot methods use no shots: their cell is the same at every shots value.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import GcplError
from ..io import atomic_write_text, read_json
from ..methods import order, uses_shots
from .experiment import LABELS, aggregate, find_runs, plot_methods, summarize_experiment
from .plots import draw_accuracy


@dataclass
class DatasetResults:
    name: str
    folder: Path
    rows: dict[tuple[str, int], dict]  # (method, shots) -> aggregate row
    planned_seeds: dict[tuple[str, int], int]  # (method, shots) -> seeds planned (0: unknown)


def read_dataset(folder: str | Path) -> DatasetResults:
    folder = Path(folder)
    if not folder.is_dir():
        raise GcplError(f"{folder} is not a folder; give the --out folders of `gcpl experiment`")
    exp = read_json(folder / "experiment.json") if (folder / "experiment.json").exists() else {}
    runs = find_runs(folder)
    if not exp and not runs:
        raise GcplError(f"{folder} holds no experiment; give the --out folders of `gcpl experiment`")
    name = exp.get("settings", {}).get("dataset") or folder.name
    grid = exp.get("grid", {})
    planned = {(m, k if uses_shots(m) else 0): len(grid.get("seeds", []))
               for m in grid.get("methods", []) for k in (grid.get("shots", []) if uses_shots(m) else [0])}
    return DatasetResults(name, folder, {(r["method"], r["shots"]): r for r in aggregate(runs)}, planned)


def _cell(d: DatasetResults, method: str, shots: int) -> tuple[dict | None, bool]:
    """(row or None, complete): complete when every planned seed finished."""
    key = (method, shots if uses_shots(method) else 0)
    row = d.rows.get(key)
    if row is None:
        return None, False
    return row, row["n_seeds"] >= d.planned_seeds.get(key, row["n_seeds"])


def table(datasets: list[DatasetResults], shots: int) -> list[dict]:
    """One row per method: per dataset (mean, std, n_seeds, planned, complete) and the average."""
    methods = sorted({m for d in datasets for m, _ in d.rows} | {m for d in datasets for m, _ in d.planned_seeds},
                     key=lambda m: (order(m), m))
    out = []
    for m in methods:
        cells = {}
        for d in datasets:
            row, complete = _cell(d, m, shots)
            planned = d.planned_seeds.get((m, shots if uses_shots(m) else 0), 0)
            cells[d.name] = None if row is None else {"mean": row["top1_mean"], "std": row["top1_std"],
                                                      "n_seeds": row["n_seeds"], "planned": planned,
                                                      "complete": complete}
        full = [c for c in cells.values() if c is not None and c["complete"]]
        average = statistics.fmean(c["mean"] for c in full) if len(full) == len(datasets) else None
        out.append({"method": m, "cells": cells, "average": average})
    return out


def _fmt(c: dict | None) -> str:
    if c is None:
        return "missing"
    text = f"{c['mean']:.2f}" + (f" ± {c['std']:.2f}" if c["std"] is not None else "")
    return text if c["complete"] else f"{text} ({c['n_seeds']}/{c['planned']} seeds)"


def markdown(rows: list[dict], names: list[str], shots: int) -> str:
    lines = [f"# Table 2: top-1 accuracy (%) at {shots} shots", "",
             "Mean ± std over seeds per dataset; the average is over datasets, for methods complete in all of "
             "them. \"missing\": no finished run; \"(k/n seeds)\": unfinished (left out of the average).", "",
             "| method | " + " | ".join(names) + " | average |", "|---|" + "---|" * (len(names) + 1)]
    for r in rows:
        avg = "–" if r["average"] is None else f"{r['average']:.2f}"
        lines.append(f"| {LABELS.get(r['method'], r['method'])} | "
                     + " | ".join(_fmt(r["cells"][n]) for n in names) + f" | {avg} |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method"] + [f"{n}_{k}" for n in names for k in ("mean", "std", "seeds", "complete")] + ["average"])
    for r in rows:
        cells = []
        for n in names:
            c = r["cells"][n]
            cells += ["", "", 0, False] if c is None else [f"{c['mean']:.6f}", "" if c["std"] is None else
                                                           f"{c['std']:.6f}", c["n_seeds"], c["complete"]]
        w.writerow([r["method"], *cells, "" if r["average"] is None else f"{r['average']:.6f}"])
    return buf.getvalue()


def mean_over_datasets(datasets: list[DatasetResults]) -> list[dict]:
    """Figure 3's first panel: per (method, shots), the mean over datasets of the per-dataset mean
    top-1, where every dataset has that cell complete; std = spread over datasets."""
    keys = set.intersection(*(set(d.rows) for d in datasets)) if datasets else set()
    out = []
    for m, k in sorted(keys, key=lambda x: (order(x[0]), x)):
        cells = [_cell(d, m, k) for d in datasets]
        if all(complete for _, complete in cells):
            means = [row["top1_mean"] for row, _ in cells]
            out.append({"method": m, "shots": k, "top1_mean": statistics.fmean(means),
                        "top1_std": statistics.stdev(means) if len(means) > 1 else None})
    return out


def figure(datasets: list[DatasetResults], path: Path) -> None:
    from .plots import pyplot

    plt = pyplot()
    panels = [("Mean over datasets", mean_over_datasets(datasets))] + [(d.name, list(d.rows.values()))
                                                                         for d in datasets]
    cols = min(4, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels):
        if rows:
            draw_accuracy(ax, rows, plot_methods(rows), title, fontsize=8)
        else:
            ax.set_title(f"{title} (no complete runs)", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    labels = list(handles)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_datasets(folders: list[str | Path], out: str | Path | None = None, shots: int | None = None) -> dict:
    """Each folder's own summary, then Table 2 and Figure 3 across them (see the module doc)."""
    if len({Path(f).resolve() for f in folders}) != len(folders):
        raise GcplError("the same experiment folder is given twice")
    for f in folders:
        summarize_experiment(f)
    datasets = [read_dataset(f) for f in folders]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):  # two folders of one dataset: tell them apart by folder
        names = [f"{d.name} ({d.folder.name})" for d in datasets]
        for d, n in zip(datasets, names):
            d.name = n
    all_shots = {k for d in datasets for (m, k) in d.rows if uses_shots(m)}
    if shots is None:
        shots = max(all_shots) if all_shots else 0
    out = Path(out) if out is not None else Path(os.path.commonpath([Path(f).resolve().parent for f in folders]))
    rows = table(datasets, shots)
    atomic_write_text(out / "table2.md", markdown(rows, names, shots))
    atomic_write_text(out / "table2.csv", csv_text(rows, names))
    files = [out / "table2.md", out / "table2.csv"]
    try:
        figure(datasets, out / "figure3.png")
        files.append(out / "figure3.png")
    except ImportError:  # matplotlib is the optional [plots] extra
        pass
    return {"shots": shots, "datasets": names, "rows": rows, "files": [str(f) for f in files]}

