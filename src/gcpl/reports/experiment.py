"""Tables and plots of an experiment folder (see gcpl.experiment), rebuilt from its finished runs.

A run is finished when its eval/results.json exists (evaluate writes it last, atomically).
Writes into the experiment folder:
    summary.md              top-1 and mean per-class accuracy, mean ± std over seeds, per method x
                            shots (the layout of the paper's Table 2), the CLIP methods' settings
                            with their sources and what each validated on, every run, missing runs
    summary.csv             one row per (method, shots): seeds, mean and std of each metric in %
    accuracy_vs_shots.png   top-1 vs shots, one line per method with std error bars, zero-shot as a
                            horizontal line with a ±std band (the paper's Figure 3); needs matplotlib
and per run eval/per_class.md (and eval/confusion.png when it is missing).
std is the sample standard deviation over seeds (n - 1 in the denominator); empty for one seed.
Zero-shot runs (shots 0) do not use training images: the wide tables repeat them for every shots value.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..classify import ClassifyConfig, default_budget
from ..errors import GcplError
from ..io import atomic_write_text, read_json
from ..methods import METHODS, order, uses_shots
from ..settings import setting

LABELS = {k: m.short for k, m in METHODS.items()}
METRICS = (  # (results.json key, column stem, header)
    ("top1", "top1", "top-1 (%)"),
    ("mean_per_class_accuracy", "mean_per_class_acc", "mean per-class acc. (%)"),
    ("top5", "top5", "top-5 (%)"),
    ("macro_f1", "macro_f1", "macro-F1 (%)"),
)
CSV_COLUMNS = ["method", "shots", "n_seeds", "seeds", "test_images"] + [
    f"{stem}_{s}" for _, stem, _ in METRICS for s in ("mean", "std")
]
_RUN_DIR = re.compile(r"^shots(\d+)$"), re.compile(r"^seed(-?\d+)$")


@dataclass
class ReportJob:
    """`gcpl report`: rebuild the tables and plots of experiment folders from their finished runs;
    with several folders (one per dataset) also the paper's Table 2 and Figure 3 across them."""

    run_dirs: tuple[str, ...] = setting(help="experiment --out folder(s); several: also table2.md/.csv and "
                                        "figure3.png across them", flag="")
    shots: int | None = setting(None, "several folders: the shots of Table 2 (default: the largest present)")
    out: str | None = setting(None, "several folders: where table2.* and figure3.png go (default: their common "
                              "parent folder)")


@dataclass
class RunResult:
    method: str
    shots: int
    seed: int
    folder: Path  # the run folder (holds train/ and eval/)
    results: dict


_order = order


def find_runs(out: str | Path) -> list[RunResult]:
    """Finished runs under out/<method>/shots<k>/seed<s>/, sorted by (method order, shots, seed)."""
    out = Path(out)
    runs = []
    for res in out.glob("*/shots*/seed*/eval/results.json"):
        folder = res.parent.parent
        ks, ss = _RUN_DIR[0].match(folder.parent.name), _RUN_DIR[1].match(folder.name)
        if not ks or not ss:
            continue
        try:
            m = read_json(res)
        except (OSError, ValueError):
            continue
        if "top1" not in m:  # no image scored
            continue
        runs.append(RunResult(folder.parent.parent.name, int(ks[1]), int(ss[1]), folder, m))
    return sorted(runs, key=lambda r: (_order(r.method), r.method, r.shots, r.seed))


def _stats(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: list[RunResult]) -> list[dict]:
    """One row per (method, shots): seeds and mean/std (in %) of each metric over the seeds."""
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for r in runs:
        groups.setdefault((r.method, r.shots), []).append(r)
    rows = []
    for (method, shots), group in groups.items():
        n_img = sorted({r.results["n_images"] for r in group})
        row = {"method": method, "shots": shots, "n_seeds": len(group), "seeds": [r.seed for r in group],
               "test_images": n_img[0] if len(n_img) == 1 else f"{n_img[0]}-{n_img[-1]}"}
        for key, stem, _ in METRICS:
            row[f"{stem}_mean"], row[f"{stem}_std"] = _stats([100 * float(r.results[key]) for r in group])
        rows.append(row)
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _num(x) -> str:
    return "" if x is None else f"{x:.6f}"


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([r["method"], r["shots"], r["n_seeds"], ";".join(map(str, r["seeds"])), r["test_images"]]
                   + [_num(r[c]) for c in CSV_COLUMNS[5:]])
    return buf.getvalue()


def _wide_table(rows: list[dict], shots: list[int], stem: str) -> list[str]:
    by = {(r["method"], r["shots"]): r for r in rows}
    methods = sorted({r["method"] for r in rows}, key=lambda m: (_order(m), m))
    cols = shots or [0]
    head = ["method"] + ([f"{k}-shot" for k in shots] if shots else ["zero-shot"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = []
        for k in cols:
            r = by.get((m, k if uses_shots(m) else 0))
            cells.append(_pm(r[f"{stem}_mean"], r[f"{stem}_std"]) if r else "–")
        label = LABELS.get(m, m) + (" †" if not uses_shots(m) and shots else "")
        lines.append("| " + " | ".join([label] + cells) + " |")
    return lines


PRESET_NOTES = {
    "paper": "paper (the authors' released code: GCPL lr 2e-3 = 5e-4 x 4 accumulated images, 500 steps, squashed "
             "training images, the code's templates; CoMPLe: the paper's lr 1e-3, batch 4, lambda 1e-3)",
    "default": "default (the paper's text: GCPL lr 5e-4, 500 steps; CoMPLe lr 1e-3, 4000 steps; or the model's "
               "recommended settings)",
}


def classifier_note(s: dict) -> str:
    """Which classifier produced an experiment's numbers, from its settings."""
    spacing = s.get("spacing") or "nested"
    if spacing == "auto":  # what `auto` resolves to for the trained methods' tokens
        spacing = "ranked" if s.get("n_samples") is None and s.get("keep") is None else "nested"
    if s.get("n_samples") is None and s.get("keep") is None:
        if spacing == "ranked":
            return ("gcpl's ranked stages: timestep strata in the order the support set ranks them "
                    "(gcpl.classify.ranked_schedule; a tenth of Li et al.'s calls at 100 classes)")
        if spacing == "li":
            return "Li et al.'s adaptive schedule (Flowers: 20,50,100,500 (t, noise) pairs, keep 20,10,5,1)"
        if spacing == "race":
            d, per_class = ClassifyConfig(), default_budget(1) - default_budget(0)
            return (f"racing (experimental): paired tests drop classes, at most {per_class} UNet calls per "
                    f"class + {default_budget(0)} per image, confidence {s.get('confidence', d.confidence)}, "
                    f"timesteps ordered and weighted by {d.evidence_shots} support images per class")
        return "gcpl's default: nested stages for the class count (gcpl.classify.default_schedule)"
    return (f"fixed stages ({'Li et al.' if spacing == 'li' else 'nested'} spacing): n_samples "
            f"{s.get('n_samples')}, keep {s.get('keep')}")


def _get(s: dict, dotted: str, old: str):
    """A setting of experiment.json: its nested place (today), else its flat key (earlier releases)."""
    node = s
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return s.get(old)
        node = node[k]
    return node


def _header(exp: dict | None, out: Path) -> list[str]:
    lines = ["# Experiment summary", ""]
    if not exp:
        return lines
    s = exp.get("settings", {})
    clf = s.get("classify") or {k: s.get(k) for k in ("spacing", "n_samples", "keep", "confidence") if k in s}
    steps = [_get(s, f"{m}.steps", f"steps_{m}") or "the preset’s" for m in ("gcpl", "comple")]
    limit = _get(s, "run.limit", "limit")
    facts = [
        ("dataset", s.get("dataset") or "(split file)"), ("split", exp.get("split")),
        ("model", _get(s, "run.model", "model") or "default (SD-1.4)"), ("template", s.get("template")),
        ("init word", s.get("init_word")),
        ("training recipe", PRESET_NOTES.get(s.get("preset", "default"), s.get("preset"))),
        ("steps", f"GCPL {steps[0]}, CoMPLe {steps[1]}"),
        ("classifier", classifier_note(clf)),
        ("CLIP model", _get(s, "run.clip_model", "clip_model")),
        ("test images per run", "all" if limit is None else f"a seeded subset of {limit}"),
    ]
    return lines + [f"- {k}: {v}" for k, v in facts if v is not None] + [""]


def _planned(exp: dict | None) -> list[tuple[str, int, int]]:
    if not exp or "grid" not in exp:
        return []
    g = exp["grid"]
    out = []
    for m in sorted(g.get("methods", []), key=lambda m: (_order(m), m)):
        for k in g.get("shots", []) if uses_shots(m) else [0]:
            out += [(m, k, s) for s in g.get("seeds", [])]
    return out


def per_class_markdown(m: dict) -> str:
    """Per-class accuracy of one run from its results.json (confusion matrix rows: true classes)."""
    classes, cm = m["classes"], m["confusion_matrix"]
    lines = ["# Per-class accuracy", "", f"top-1 {100 * m['top1']:.2f}%, mean per-class accuracy "
             f"{100 * m['mean_per_class_accuracy']:.2f}%, {m['n_images']} images", "",
             "| class | test images | correct | accuracy | most often predicted instead |", "|---|---|---|---|---|"]
    for i, name in enumerate(classes):
        row = cm[i]
        n, ok = sum(row), row[i]
        wrong = [(row[j], classes[j]) for j in range(len(classes)) if j != i and row[j]]
        other = max(wrong, key=lambda x: (x[0], -classes.index(x[1]))) if wrong else None
        acc = f"{100 * ok / n:.1f}%" if n else "–"
        lines.append(f"| {name} | {n} | {ok} | {acc} | {f'{other[1]} ({other[0]})' if other else ''} |")
    return "\n".join(lines) + "\n"


def _run_files(r: RunResult) -> None:
    ev = r.folder / "eval"
    atomic_write_text(ev / "per_class.md", per_class_markdown(r.results))
    if not (ev / "confusion.png").exists():
        try:
            from .plots import confusion_png

            confusion_png(r.results["confusion_matrix"], r.results["classes"], ev / "confusion.png")
        except ImportError:
            pass


def summary_markdown(rows: list[dict], runs: list[RunResult], exp: dict | None, out: Path) -> str:
    lines = _header(exp, out)
    planned = _planned(exp)
    done = {(r.method, r.shots, r.seed) for r in runs}
    missing = [p for p in planned if p not in done]
    if planned:
        lines += [f"Finished runs: {len(done & set(planned))} of {len(planned)} planned"
                  + (f" (and {len(done - set(planned))} others)" if done - set(planned) else "") + ".", ""]
    if not rows:
        return "\n".join(lines + ["No finished run yet.", ""])
    shots = sorted({r["shots"] for r in rows if uses_shots(r["method"])}
                   | {k for _, k, _ in planned if k > 0})
    lines += ["## Results", "",
              "Mean ± std over seeds (std: sample standard deviation; none for a single seed). "
              "Zero-shot uses no training images (shots 0).", "",
              "| method | shots | seeds | " + " | ".join(h for _, _, h in METRICS) + " | test images |",
              "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    for r in rows:
        cells = [_pm(r[f"{stem}_mean"], r[f"{stem}_std"]) for _, stem, _ in METRICS]
        lines.append(f"| {LABELS.get(r['method'], r['method'])} | {r['shots']} | {r['n_seeds']} | "
                     + " | ".join(cells) + f" | {r['test_images']} |")
    foot = ["", "† zero-shot does not depend on shots: its runs (one per seed) are repeated in every column.", ""]
    lines += ["", "## Top-1 accuracy (%) by shots (layout of the paper's Table 2)", ""]
    lines += _wide_table(rows, shots, "top1") + foot
    lines += ["## Mean per-class accuracy (%) by shots", ""]
    lines += _wide_table(rows, shots, "mean_per_class_acc") + foot
    lines += clip_settings_markdown(runs)
    lines += ["## Runs", "", "| method | shots | seed | top-1 (%) | mean per-class acc. (%) | images | files |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        rel = r.folder.relative_to(out).as_posix()
        files = " ".join(f"[{f.split('.')[0]}]({rel}/eval/{f})"
                         for f in ("results.md", "per_class.md", "confusion.png") if (r.folder / "eval" / f).exists())
        lines.append(f"| {LABELS.get(r.method, r.method)} | {r.shots} | {r.seed} | {100 * r.results['top1']:.2f} | "
                     f"{100 * r.results['mean_per_class_accuracy']:.2f} | {r.results['n_images']} | {files} |")
    if missing:
        lines += ["", "## Missing runs", "", ", ".join(f"{m}/shots{k}/seed{s}" for m, k, s in missing)]
    return "\n".join(lines) + "\n"


def _shots(ks) -> str:
    ks = sorted(ks)
    return f"shot{'s' if len(ks) > 1 or ks[0] != 1 else ''} {', '.join(map(str, ks))}"


def clip_settings_markdown(runs: list[RunResult]) -> list[str]:
    """Per CLIP method of the finished runs: what it validated on, and every setting of the
    official table (gcpl.clip.official) with its value and source as each run's eval/config.json
    records them (a value that differs by shot count once per value)."""
    methods: dict[str, dict] = {}
    for r in runs:
        if r.method not in METHODS or METHODS[r.method].family != "clip":
            continue
        try:
            cfg = read_json(r.folder / "eval" / "config.json")
        except (OSError, ValueError):
            continue
        m = methods.setdefault(r.method, {"settings": {}, "validation": {}})
        for dest, rec in (cfg.get("official") or {}).items():
            key = (json.dumps(rec.get("value")), rec.get("source", ""))
            m["settings"].setdefault(dest, {}).setdefault(key, set()).add(r.shots)
        v = cfg.get("validation") or {}
        if v.get("on"):
            m["validation"].setdefault(v["on"], {}).setdefault(r.shots, set()).add(int(v.get("images", 0)))
    if not methods:
        return []
    lines = ["## CLIP methods: settings and validation", "",
             "Each CLIP method runs with its official code's settings for the dataset (gcpl.clip.official; "
             "docs/CLIP.md gives the table). A source is the official file and line, `gcpl:` where the official "
             "code never configured the dataset, or `given` for a command-line option. No method validates on test "
             "images.", ""]
    for method in sorted(methods, key=lambda m: (_order(m), m)):
        m = methods[method]
        lines += [f"### {METHODS[method].label}", ""]
        for on, by_shots in m["validation"].items():
            counts = sorted({n for ns in by_shots.values() for n in ns})
            images = "" if counts == [0] else f": {counts[0]}" + (f"-{counts[-1]}" if len(counts) > 1 else "") + " images"
            lines.append(f"- validated on: {on}{images} ({_shots(by_shots)})")
        if m["settings"]:
            lines += ["", "| option | value | source |", "|---|---|---|"]
            for dest, values in m["settings"].items():
                option = "--" + dest.rstrip("_").replace("_", "-")
                for (value, source), ks in values.items():
                    shown = json.loads(value)
                    shown = ", ".join(map(str, shown)) if isinstance(shown, list) else "''" if shown == "" else shown
                    at = f" ({_shots(ks)})" if len(values) > 1 else ""
                    lines.append(f"| `{option}` | `{shown}`{at} | {source} |")
        lines.append("")
    return lines


def plot_methods(rows: list[dict]) -> dict:
    """Method -> (legend label, uses shots) of the rows' methods, in table order (for reports.plots)."""
    names = sorted({r["method"] for r in rows}, key=lambda m: (_order(m), m))
    return {m: (LABELS.get(m, m), uses_shots(m)) for m in names}


def summarize_experiment(out: str | Path) -> dict:
    """Read the finished runs of an experiment folder and (re)write its summary files."""
    out = Path(out)
    if not out.is_dir():
        raise GcplError(f"{out} is not a folder; give the --out folder of `gcpl experiment`")
    exp_file = out / "experiment.json"
    exp = read_json(exp_file) if exp_file.exists() else None
    runs = find_runs(out)
    if exp is None and not runs:
        raise GcplError(f"{out} holds no experiment (no experiment.json and no <method>/shots<k>/seed<s>/eval "
                        "runs); give the --out folder of `gcpl experiment`")
    for r in runs:
        _run_files(r)
    rows = aggregate(runs)
    atomic_write_text(out / "summary.csv", _csv(rows))
    atomic_write_text(out / "summary.md", summary_markdown(rows, runs, exp, out))
    files = [out / "summary.md", out / "summary.csv"]
    if rows:
        try:
            from .plots import accuracy_plot

            ds = (exp or {}).get("settings", {}).get("dataset")
            accuracy_plot(rows, out / "accuracy_vs_shots.png", plot_methods(rows),
                          f"{ds}: top-1 vs shots (mean ± std over seeds)" if ds else "")
            files.append(out / "accuracy_vs_shots.png")
        except ImportError:
            pass
    return {"rows": rows, "runs": [{"method": r.method, "shots": r.shots, "seed": r.seed,
                                    "folder": str(r.folder), "results": r.results} for r in runs],
            "missing": [f"{m}/shots{k}/seed{s}" for m, k, s in _planned(exp)
                        if (m, k, s) not in {(r.method, r.shots, r.seed) for r in runs}],
            "files": [str(f) for f in files]}
