"""What each command does with its settings: call the library, print where the results went."""

from __future__ import annotations

import contextlib
import sys
import warnings

from ..data.fractals import FractalsJob
from ..data.loaders.prepare import PrepareJob
from ..demo import DemoConfig
from ..experiment import DEPRECATED_OPTIONS as EXPERIMENT_DEPRECATED
from ..experiment import ExperimentConfig
from ..jobs.evaluate import EvalJob
from ..jobs.predict import PredictJob
from ..jobs.sample import SampleJob
from ..jobs.train import TrainJob, resume_settings
from ..reports.experiment import ReportJob

__all__ = ["EXPERIMENT_DEPRECATED", "DemoConfig", "EvalJob", "ExperimentConfig", "FractalsJob", "PredictJob",
           "PrepareJob", "ReportJob", "SampleJob", "TrainJob"]


class WarningCount:
    n = 0


@contextlib.contextmanager
def clean_warnings():
    """Warnings as one line each ("warning: ..."), without Python's file/line and source echo;
    yields a counter of how many were shown."""
    count = WarningCount()

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__name__.endswith("Note"):  # advice, not a problem
            print(f"note: {message}", file=sys.stderr)
            return
        count.n += 1
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.showwarning = show
        yield count


def how_to_continue(command: str) -> str:
    return {
        "train": "rerun the same command (or gcpl train --resume --out RUN) to continue from the checkpoint",
        "eval": "rerun the same command to continue (finished images are kept)",
        "predict": "rerun the same command to continue (finished images are kept)",
        "demo": "rerun the same command to continue (finished work is kept)",
        "experiment": "rerun the same command to continue (finished runs are kept)",
    }.get(command, "rerun the same command")


def train(job: TrainJob, given: set[str]) -> None:
    from ..jobs.train import train as run

    if job.resume:
        job = resume_settings(job, given)
    out = run(job)
    print(f"trained {job.train.method} tokens -> {out}/tokens.json, embeddings in {out}/embeddings/")


def evaluate(job: EvalJob, given: set[str]) -> None:
    from ..jobs.evaluate import evaluate as run

    m = run(job)
    if not m.get("n_images"):
        print(f"no image was scored -> {job.out}/results.md")
        return
    top5 = f"  top-5 {100 * m['top5']:.2f}%" if len(m["classes"]) > 5 else ""
    print(f"top-1 {100 * m['top1']:.2f}%{top5}  mean per-class {100 * m['mean_per_class_accuracy']:.2f}%  "
          f"macro-F1 {100 * m['macro_f1']:.2f}%  ({m['n_images']} images, {m['unet_calls_per_image']:.0f} UNet "
          f"calls each) -> {job.out}/results.md")


def predict(job: PredictJob, given: set[str]) -> None:
    from ..jobs.predict import predict as run

    r = run(job)
    skipped = f", {r['skipped']} unreadable" if r["skipped"] else ""
    print(f"{r['images']} images ({r['predicted']} predicted now{skipped}) -> {r['csv']}, {r['jsonl']}")


def sample(job: SampleJob, given: set[str]) -> None:
    from ..jobs.sample import sample as run

    r = run(job)
    print(f"{len(r['images'])} images -> {job.out}/, grid -> {r['grid']}")


def demo(cfg: DemoConfig, given: set[str]) -> None:
    from ..demo import run_demo

    run_demo(cfg)


def experiment(cfg: ExperimentConfig, given: set[str]) -> None:
    from ..experiment import run_experiment

    out = run_experiment(cfg, progress=not cfg.quiet)
    print(f"summary -> {out}/summary.md, {out}/summary.csv, {out}/accuracy_vs_shots.png")


def report(job: ReportJob, given: set[str]) -> None:
    from pathlib import Path

    from ..reports.experiment import summarize_experiment
    from ..reports.paper import report_datasets

    if len(job.run_dirs) == 1:
        s = summarize_experiment(job.run_dirs[0])
        print(f"{len(s['runs'])} finished runs -> {Path(job.run_dirs[0])}/summary.md, summary.csv, "
              "accuracy_vs_shots.png")
        return
    t = report_datasets(list(job.run_dirs), job.out, job.shots)
    print(f"Table 2 ({len(t['datasets'])} datasets, {t['shots']} shots) -> {', '.join(t['files'])}")


def prepare(job: PrepareJob, given: set[str]) -> None:
    from ..data.loaders import class_counts, get_dataset, prepare_dataset

    info = get_dataset(job.dataset)
    path, split = prepare_dataset(info.name, job.root, out=job.out, seed=job.seed, test_fraction=job.test_fraction)
    counts = class_counts(split)
    parts = [p for p in ("train", "val", "test") if any(p in c for c in counts.values())]
    width = max(len(c) for c in counts)
    print(f"{'class':<{width}}  " + "  ".join(f"{p:>6}" for p in parts))
    for name, c in counts.items():
        print(f"{name:<{width}}  " + "  ".join(f"{c.get(p, 0):>6}" for p in parts))
    totals = "  ".join(f"{sum(c.get(p, 0) for c in counts.values()):>6}" for p in parts)
    print(f"{'total':<{width}}  {totals}")
    print(f"{len(split.classes)} classes; split written to {path}")
    print(f'template "{info.template}", init word "{info.init_word}"')


def fractals(job: FractalsJob, given: set[str]) -> None:
    from ..data.fractals import run_fractals

    out, split = run_fractals(job)
    print(f"wrote {job.classes} classes x {job.per_class} images to {out}"
          + (f"; split ({job.test_per_class} test images per class) -> {split}" if split else ""))
