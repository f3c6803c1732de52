"""The paper's protocol: zero-shot, GCPL and CoMPLe over a grid of shots x seeds, one folder per run.

    out/
      experiment.json                          settings, the grid, the split file, versions
      gcpl_split_<dataset>_seed<s>.json        the train/test split (when made from --root)
      <method>/shots<k>/seed<s>/train/         a `gcpl train` run folder (gcpl, comple)
      <method>/shots<k>/seed<s>/eval/          a `gcpl eval` folder (+ per_class.md)
      zeroshot/shots0/seed<s>/eval/            zero-shot: no training images, one run per seed
      summary.md, summary.csv, accuracy_vs_shots.png   rebuilt from the finished runs

Every run of the grid uses the same train/test split (drawn once, seeded by `split_seed`); the
seed of a run draws its few-shot support set and its training randomness, and (unless
`eval_seed` is set) the classifier's fixed noise and the `limit` subset of test images, so every
method of one seed is scored on the same images with the same noise. Zero-shot does not depend on
shots: it runs once per seed under `shots0/` and the summary repeats it for every shots value.

Resume: a run whose eval/results.json exists and counts every test image is skipped; a
half-finished one continues (training from its checkpoint, evaluation from predictions.jsonl).
Sharding (`shard=(i, n)`): the grid's runs, sorted by (method, shots, seed), go round-robin to n
shards; shard i runs every n-th one from the i-th. Each shard writes only its own run folders and
the summary is rebuilt from whatever is finished, so n machines can share one output folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import GcplError
from .io import read_json, write_json

log = logging.getLogger(__name__)

METHODS = ("zeroshot", "gcpl", "comple")  # also the order of rows in tables and of the run list
DEFAULT_TEMPLATE, DEFAULT_INIT_WORD = "A photo of {}.", "object"  # TrainConfig's defaults

# Settings that do not change results: a rerun may change them (the grid may also grow).
_NOT_RESULT_SETTINGS = (
    "out", "root", "data", "shard", "device", "methods", "shots", "seeds", "checkpoint_every",
    "images_per_batch", "classify_batch", "max_batch",
)


@dataclass
class ExperimentConfig:
    out: str  # experiment folder
    dataset: str | None = None  # preset name (gcpl.presets): default template / init word, loader for root
    root: str | None = None  # dataset as distributed; prepare_dataset writes its split JSON into out/
    data: str | None = None  # or: a split JSON (train and test lists)
    methods: tuple[str, ...] = METHODS
    shots: tuple[int, ...] = (1, 4, 8, 16)
    seeds: tuple[int, ...] = (1, 2, 3)
    template: str | None = None  # default: the preset's, else "A photo of {}."
    init_word: str | None = None  # default: the preset's, else "object"
    model: str | None = None  # as for gcpl train: hub id, diffusers folder, "tiny"; None: SD-1.4
    device: str | None = None
    dtype: str | None = None
    resolution: int | None = None
    steps_gcpl: int = 500  # optimiser steps (each trains every class on batch samples)
    steps_comple: int = 4000  # optimiser steps of `batch` samples from the whole support set
    lr_gcpl: float | None = None  # None: the paper's 5e-4
    lr_comple: float | None = None  # None: the paper's 1e-3
    batch_gcpl: int | None = None  # None: TrainConfig's 4 (paper)
    batch_comple: int | None = None  # None: TrainConfig's 4 (paper)
    lam: float = 1e-3  # CoMPLe negative weight
    n_samples: tuple[int, ...] | None = None  # classifier schedule; None: by class count
    keep: tuple[int, ...] | None = None
    limit: int | None = None  # score a seeded random subset of N test images per run
    eval_seed: int | None = None  # classifier noise seed; None: the run's seed
    split_seed: int = 0  # seed of the train/test split made from root (datasets without an official one)
    test_fraction: float | None = None  # None: the preset's
    allow_fewer: bool = False  # classes with fewer training images than shots use all they have
    strict: bool = False  # unreadable images are errors
    checkpoint_every: int = 100
    images_per_batch: int = 8
    classify_batch: int = 64
    max_batch: int = 64
    shard: tuple[int, int] = (0, 1)  # (i, n): this process runs shard i of n

    def __post_init__(self):
        self.methods = tuple(self.methods)
        self.shots, self.seeds = tuple(int(k) for k in self.shots), tuple(int(s) for s in self.seeds)
        for name in ("n_samples", "keep"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        self.shard = tuple(self.shard)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise GcplError(f"--methods {','.join(self.methods) or '(none)'}: use some of {','.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise GcplError(f"--methods {','.join(self.methods)} names a method twice")
        trained = any(m != "zeroshot" for m in self.methods)
        if trained and (not self.shots or any(k < 1 for k in self.shots)):
            raise GcplError(f"--shots {list(self.shots)}: give one or more numbers of images per class, each >= 1")
        if not self.seeds:
            raise GcplError("--seeds: give at least one seed")
        if len(set(self.shots)) != len(self.shots) or len(set(self.seeds)) != len(self.seeds):
            raise GcplError("--shots and --seeds must not repeat a value")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise GcplError(f"--shard {i}/{n}: use i/n with 0 <= i < n, e.g. 0/2 and 1/2 for two machines")
        if self.steps_gcpl < 1 or self.steps_comple < 1:
            raise GcplError("--steps-gcpl and --steps-comple must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise GcplError("--limit must be at least 1")
        if (self.root is None) == (self.data is None):
            raise GcplError("give the data either as --root (a dataset folder, with --dataset) or --data (a split JSON)")
        if self.root is not None and self.dataset is None:
            raise GcplError("--root needs --dataset (e.g. --dataset cars, or --dataset folder for a class-per-folder tree)")

    def preset(self):
        if self.dataset is None:
            return None
        from .presets import get_preset

        return get_preset(self.dataset)

    def resolved_template(self) -> tuple[str, str]:
        p = self.preset()
        template = self.template or (p.template if p else DEFAULT_TEMPLATE)
        init_word = self.init_word or (p.init_word if p else DEFAULT_INIT_WORD)
        return template, init_word

    def result_settings(self) -> dict:
        """The settings that change results; a rerun into the same folder must keep them."""
        d = json.loads(json.dumps(asdict(self)))
        for k in _NOT_RESULT_SETTINGS:
            d.pop(k)
        d["dataset"] = self.preset().name if self.dataset else None
        d["template"], d["init_word"] = self.resolved_template()
        return d


@dataclass(frozen=True)
class Run:
    method: str
    shots: int  # 0 for zero-shot
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}/shots{self.shots}/seed{self.seed}"

    def folder(self, out: str | Path) -> Path:
        return Path(out) / self.method / f"shots{self.shots}" / f"seed{self.seed}"


def plan_runs(cfg: ExperimentConfig) -> list[Run]:
    """Every run of the grid, sorted by (method order, shots, seed); zero-shot once per seed."""
    runs = []
    for m in METHODS:
        if m not in cfg.methods:
            continue
        for k in [0] if m == "zeroshot" else sorted(cfg.shots):
            runs += [Run(m, k, s) for s in sorted(cfg.seeds)]
    return runs


def shard_runs(runs: list[Run], shard: tuple[int, int]) -> list[Run]:
    """Round robin: shard i of n gets runs i, i+n, i+2n, ... of the sorted list."""
    i, n = shard
    return runs[i::n]


# --- the data ------------------------------------------------------------------------------------


def _split_file(cfg: ExperimentConfig) -> Path:
    """The split JSON every run uses: --data, or the one prepare_dataset writes into out/."""
    if cfg.data is not None:
        p = Path(cfg.data)
        if p.is_dir():
            raise GcplError(
                f"--data {cfg.data} is a folder; an experiment needs a split JSON with train and test lists, "
                f"or give the folder as --root {cfg.data} --dataset folder (a seeded split is drawn)"
            )
        if not p.is_file():
            raise GcplError(f"--data {cfg.data} does not exist; give a split JSON with train and test lists")
        from .data.splits import Split

        split = Split.from_json(p)
        if not split.train or not split.test:
            raise GcplError(f"split file {cfg.data} needs non-empty train and test lists for an experiment")
        return p.absolute()
    from .data.loaders import prepare_dataset

    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    path, _ = prepare_dataset(cfg.dataset, cfg.root, out=Path(cfg.out), seed=cfg.split_seed,
                              test_fraction=cfg.test_fraction)
    return Path(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_experiment(cfg: ExperimentConfig, split: Path) -> dict:
    """Write (or check and extend) out/experiment.json; settings must match an existing one."""
    from .api import versions

    out = Path(cfg.out)
    settings = cfg.result_settings()
    settings["split_sha256"] = _sha256(split)
    grid = {"methods": list(cfg.methods), "shots": sorted(cfg.shots), "seeds": sorted(cfg.seeds)}
    path = out / "experiment.json"
    if path.exists():
        old = read_json(path)
        prev = old.get("settings", {})
        diff = [k for k in sorted(set(prev) | set(settings)) if prev.get(k) != settings.get(k)]
        if diff:
            shown = ", ".join(f"{k}: {prev.get(k)!r} -> {settings.get(k)!r}" for k in diff[:3])
            raise GcplError(
                f"{out} holds an experiment with other settings ({shown}); rerun with the same settings "
                f"to resume or add runs, or choose another --out"
            )
        og = old.get("grid", {})
        order = {m: i for i, m in enumerate(METHODS)}
        grid = {
            "methods": sorted(set(og.get("methods", [])) | set(grid["methods"]), key=order.get),
            "shots": sorted(set(og.get("shots", [])) | set(grid["shots"])),
            "seeds": sorted(set(og.get("seeds", [])) | set(grid["seeds"])),
        }
    record = {
        "command": "experiment",
        "settings": settings,
        "grid": grid,
        "split": str(split),
        "config": json.loads(json.dumps(asdict(cfg))),  # as last invoked (this shard)
        "layout": "<method>/shots<k>/seed<s>/{train,eval}; zero-shot under zeroshot/shots0/seed<s>",
        "versions": versions(),
    }
    write_json(path, record)
    return record


# --- one run -------------------------------------------------------------------------------------


def _expected_images(split: Path, limit: int | None) -> int:
    from .data.splits import Split

    n = len(Split.from_json(split).test)
    return n if limit is None else min(limit, n)


def eval_finished(folder: Path, expected: int | None = None) -> bool:
    """eval/results.json exists (written last, atomically) and accounts for every test image."""
    res = folder / "eval" / "results.json"
    if not res.exists():
        return False
    if expected is None:
        return True
    try:
        m = read_json(res)
    except (OSError, ValueError):
        return False
    return int(m.get("n_images", 0)) + int(m.get("skipped_images", 0)) == expected


def _train_finished(train_dir: Path, steps: int) -> bool:
    state = train_dir / "checkpoint" / "state.json"
    if not (train_dir / "tokens.json").exists() or not state.exists():
        return False
    try:
        return int(read_json(state)["step"]) >= steps
    except (OSError, ValueError, KeyError):
        return False


def _train_job(cfg: ExperimentConfig, run: Run, split: Path):
    from .api import TrainJob
    from .train import TrainConfig

    template, init_word = cfg.resolved_template()
    gcpl = run.method == "gcpl"
    tc = TrainConfig(
        method=run.method, template=template, init_word=init_word,
        steps=cfg.steps_gcpl if gcpl else cfg.steps_comple,
        lr=cfg.lr_gcpl if gcpl else cfg.lr_comple, lam=cfg.lam, seed=run.seed,
        max_batch=cfg.max_batch, checkpoint_every=cfg.checkpoint_every,
        **({"batch": b} if (b := cfg.batch_gcpl if gcpl else cfg.batch_comple) is not None else {}),
    )
    return TrainJob(
        data=str(split), out=str(run.folder(cfg.out) / "train"), shots=run.shots, model=cfg.model,
        device=cfg.device, dtype=cfg.dtype, resolution=cfg.resolution, allow_fewer=cfg.allow_fewer,
        strict=cfg.strict, resume=True, train=tc,
    )


def _eval_job(cfg: ExperimentConfig, run: Run, split: Path):
    from .api import EvalJob
    from .classify import ClassifyConfig

    template, _ = cfg.resolved_template()
    zs = run.method == "zeroshot"
    folder = run.folder(cfg.out)
    return EvalJob(
        data=str(split), out=str(folder / "eval"), run=None if zs else str(folder / "train"), zero_shot=zs,
        template=template if zs else None, model=cfg.model, device=cfg.device, dtype=cfg.dtype,
        resolution=cfg.resolution, part="test", limit=cfg.limit, images_per_batch=cfg.images_per_batch,
        strict=cfg.strict,
        classify=ClassifyConfig(n_samples=cfg.n_samples, keep=cfg.keep, batch=cfg.classify_batch,
                                seed=run.seed if cfg.eval_seed is None else cfg.eval_seed),
    )


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
    log.info(msg)


def run_experiment(cfg: ExperimentConfig, progress: bool = True, backbone=None) -> Path:
    """Run this shard's part of the grid (skipping finished runs) and rebuild the summary."""
    from . import api
    from .tokens import check_template

    template, _ = cfg.resolved_template()
    check_template(template)
    out = Path(cfg.out)
    split = _split_file(cfg)
    _record_experiment(cfg, split)
    expected = _expected_images(split, cfg.limit)
    mine = shard_runs(plan_runs(cfg), cfg.shard)
    todo = [r for r in mine if not eval_finished(r.folder(out), expected)]
    _say(progress, f"experiment {out}: shard {cfg.shard[0]}/{cfg.shard[1]} has {len(mine)} runs, "
                   f"{len(mine) - len(todo)} already finished")
    bb = backbone
    for j, run in enumerate(todo, 1):
        if bb is None:  # loaded once, only when there is work
            from .backbone import load_backbone

            bb = load_backbone(cfg.model, cfg.device, cfg.dtype)
        _say(progress, f"[{j}/{len(todo)}] {run.name}")
        if run.method != "zeroshot":
            job = _train_job(cfg, run, split)
            if not _train_finished(Path(job.out), job.train.steps):
                api.train(job, progress=progress, backbone=bb)
        m = api.evaluate(_eval_job(cfg, run, split), progress=progress, backbone=bb)
        if m.get("n_images"):
            _say(progress, f"    top-1 {100 * m['top1']:.2f}%  mean per-class {100 * m['mean_per_class_accuracy']:.2f}%")
    from .summary import summarize_experiment

    summarize_experiment(out)
    return out


# --- command line ----------------------------------------------------------------------------------


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/2, got {s!r}") from None
    return i, n


def _methods(s: str) -> tuple[str, ...]:
    alias = {"zero-shot": "zeroshot", "zs": "zeroshot"}
    return tuple(alias.get(x.strip().lower(), x.strip().lower()) for x in s.split(",") if x.strip())


def add_cli(sub) -> dict:
    """Add the `experiment` and `report` subcommands to an argparse subparsers object; returns
    {"experiment": handler, "report": handler}, each handler(args) doing the work."""
    from .cli import _add_model_args, _ints

    d = ExperimentConfig(out="", data="-")
    e = sub.add_parser("experiment", help="the paper's protocol: methods x shots x seeds, then a summary",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--dataset", help="dataset preset (cars, flowers102, cornseeds, crc5k, isic2018, lc25000, "
                   "fractals, folder): default template and init word, and the loader for --root")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="dataset folder as distributed (needs --dataset); its split JSON is written "
                     "into --out")
    src.add_argument("--data", help="a split JSON with train and test lists")
    e.add_argument("--out", required=True, help="experiment folder (rerun with the same one to resume)")
    e.add_argument("--methods", type=_methods, default=d.methods, help="comma-separated: zeroshot,gcpl,comple")
    e.add_argument("--shots", type=_ints, default=d.shots, help="images per class, e.g. 1,4,8,16")
    e.add_argument("--seeds", type=_ints, default=d.seeds, help="e.g. 1,2,3")
    e.add_argument("--shard", type=_shard, default=(0, 1), help="run shard i of n (0-based), e.g. 0/2 and 1/2 "
                   "on two GPUs writing to the same --out")
    e.add_argument("--template", help="prompt with one {} (default: the preset's)")
    e.add_argument("--init-word", help="single-token initializer word (default: the preset's)")
    e.add_argument("--steps-gcpl", type=int, default=d.steps_gcpl,
                   help=f"GCPL optimiser steps, each on --batch-gcpl samples of every class (default {d.steps_gcpl})")
    e.add_argument("--steps-comple", type=int, default=d.steps_comple,
                   help=f"CoMPLe optimiser steps of --batch-comple samples (default {d.steps_comple})")
    e.add_argument("--lr-gcpl", type=float, help="default: paper's 5e-4")
    e.add_argument("--lr-comple", type=float, help="default: paper's 1e-3")
    e.add_argument("--batch-gcpl", type=int, help="samples per class per step (default 4)")
    e.add_argument("--batch-comple", type=int, help="samples per step (default 4)")
    e.add_argument("--lam", type=float, default=d.lam, help="CoMPLe negative weight lambda")
    e.add_argument("--n-samples", type=_ints, help="classifier: cumulative (t, noise) pairs per stage")
    e.add_argument("--keep", type=_ints, help="classifier: classes kept after each stage")
    e.add_argument("--limit", type=int, help="score a seeded random subset of N test images per run")
    e.add_argument("--eval-seed", type=int, help="classifier noise seed for every run (default: the run's seed)")
    e.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the train/test split drawn "
                   "from --root (datasets without an official split)")
    e.add_argument("--test-fraction", type=float, help="held-out fraction (default: the preset's)")
    e.add_argument("--allow-fewer", action="store_true", help="classes with fewer than --shots images use all")
    e.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    e.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    e.add_argument("--images-per-batch", type=int, default=d.images_per_batch)
    e.add_argument("--classify-batch", type=int, default=d.classify_batch, help="UNet samples per call in eval")
    e.add_argument("--max-batch", type=int, default=d.max_batch, help="UNet samples per training forward")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_model_args(e)

    r = sub.add_parser("report", help="rebuild summary.md/.csv and plots of an experiment folder")
    r.add_argument("run_dir", help="the experiment's --out folder")
    return {"experiment": cmd_experiment, "report": cmd_report}


def config_from_args(a) -> ExperimentConfig:
    return ExperimentConfig(
        out=a.out, dataset=a.dataset, root=a.root, data=a.data, methods=a.methods, shots=a.shots, seeds=a.seeds,
        template=a.template, init_word=a.init_word, model=a.model, device=a.device, dtype=a.dtype,
        resolution=a.resolution, steps_gcpl=a.steps_gcpl, steps_comple=a.steps_comple, lr_gcpl=a.lr_gcpl,
        lr_comple=a.lr_comple, batch_gcpl=a.batch_gcpl, batch_comple=a.batch_comple, lam=a.lam,
        n_samples=a.n_samples, keep=a.keep, limit=a.limit, eval_seed=a.eval_seed, split_seed=a.split_seed,
        test_fraction=a.test_fraction, allow_fewer=a.allow_fewer, strict=a.strict,
        checkpoint_every=a.checkpoint_every, images_per_batch=a.images_per_batch,
        classify_batch=a.classify_batch, max_batch=a.max_batch, shard=a.shard,
    )


def cmd_experiment(a) -> None:
    out = run_experiment(config_from_args(a), progress=not a.quiet)
    print(f"summary -> {out}/summary.md, {out}/summary.csv, {out}/accuracy_vs_shots.png")


def cmd_report(a) -> None:
    from .summary import summarize_experiment

    s = summarize_experiment(a.run_dir)
    print(f"{len(s['runs'])} finished runs -> {Path(a.run_dir)}/summary.md, summary.csv, accuracy_vs_shots.png")
