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

import hashlib
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .backbone import BUNDLED_NAMES, device_setting, dtype_setting, load_backbone, model_setting, resolution_setting
from .classify import ClassifyConfig
from .data.loaders import get_dataset, prepare_dataset
from .data.splits import Split
from .errors import GcplError
from .io import read_json, write_json
from .methods import METHODS, MethodRun, method_names, order, run_method, uses_shots
from .runs import versions
from .settings import differences, identity, setting
from .summary import summarize_experiment
from .tokens import check_template
from .train import PRESETS, TrainConfig

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = TrainConfig.__dataclass_fields__["template"].default  # for split files without a dataset
DEFAULT_INIT_WORD = TrainConfig.__dataclass_fields__["init_word"].default


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise GcplError(f"--shard expects i/n such as 0/2, got {text!r}") from None
    return i, n


@dataclass
class ExperimentConfig:
    out: str = setting(help="experiment folder (rerun with the same one to resume or add runs)", identity=False)
    dataset: str | None = setting(None, "dataset (cars, flowers102, cornseeds, crc5k, isic2018, lc25000, fractals, "
                                  "folder): the default template and init word, and the loader for --root")
    root: str | None = setting(None, "dataset folder as distributed (needs --dataset); its split JSON is written "
                               "into --out", identity=False)
    data: str | None = setting(None, "or: a split JSON with train and test lists", identity=False)
    methods: tuple[str, ...] = setting(("zeroshot", "gcpl", "comple"), "comma-separated methods", parse=method_names,
                                       identity=False)
    shots: tuple[int, ...] = setting((1, 4, 8, 16), "images per class", identity=False)
    seeds: tuple[int, ...] = setting((1, 2, 3), "seeds: few-shot draw, training, classifier noise", identity=False)
    template: str | None = setting(None, "prompt with one {} (default: the dataset's, else 'A photo of {}.')")
    init_word: str | None = setting(None, "single-token initialiser word (default: the dataset's, else 'object')")
    model: str | None = model_setting()
    clip_model: str | None = setting(None, "CLIPModel of the CLIP methods: hub id, folder or 'tiny' (default: "
                                     "openai/clip-vit-base-patch16; the bundled tiny CLIP with the bundled --model "
                                     "or when HF_HUB_OFFLINE=1)")
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting()
    preset: str = setting("paper", "training recipe: paper = the authors' released code (GCPL lr 2e-3 over 4 "
                          "accumulated images, 500 steps, squashed images, the code's templates; CoMPLe as the "
                          "paper's text); default = the paper's text or the model's recommendation",
                          choices=tuple(PRESETS))
    steps_gcpl: int | None = setting(None, "GCPL optimiser steps (default: the preset's)")
    steps_comple: int | None = setting(None, "CoMPLe optimiser steps (default: the preset's)")
    lr_gcpl: float | None = setting(None, "GCPL lr (default: the preset's)")
    lr_comple: float | None = setting(None, "CoMPLe lr (default: the preset's)")
    batch_gcpl: int | None = setting(None, "GCPL samples per class per step (default: the preset's)")
    batch_comple: int | None = setting(None, "CoMPLe samples per step (default: the preset's)")
    lam: float = setting(1e-3, "CoMPLe negative weight lambda (paper)")
    n_samples: tuple[int, ...] | None = setting(None, "classifier: cumulative (t, noise) pairs per stage "
                                                "(default: gcpl's schedule for the class count)")
    keep: tuple[int, ...] | None = setting(None, "classifier: classes kept after each stage")
    spacing: str = setting("nested", "classifier: nested (gcpl's stages, default), li (Li et al.'s adaptive "
                           "schedule; alone: their Flowers schedule) or race (experimental)",
                           choices=("nested", "li", "race"))
    limit: int | None = setting(None, "score a seeded random subset of N test images per run")
    eval_seed: int | None = setting(None, "classifier noise seed for every run (default: the run's seed)")
    split_seed: int = setting(0, "seed of the train/test split drawn from --root (datasets without an official one)")
    test_fraction: float | None = setting(None, "held-out fraction (default: the dataset's)")
    allow_fewer: bool = setting(False, "classes with fewer than --shots images use all they have")
    strict: bool = setting(False, "fail on unreadable images instead of skipping them", identity=False)
    checkpoint_every: int = setting(100, "training steps between checkpoints", identity=False)
    images_per_batch: int = setting(8, "images scored together", identity=False)
    classify_batch: int = setting(64, "UNet samples per call in evaluation", identity=False)
    max_batch: int = setting(64, "UNet samples per training forward", identity=False)
    shard: tuple[int, int] = setting((0, 1), "run shard i of n (0-based), e.g. 0/2 and 1/2 on two GPUs writing to "
                                     "the same --out", parse=_shard, identity=False)
    quiet: bool = setting(False, "no progress output", flag=("-q", "--quiet"), identity=False)

    def __post_init__(self):
        self.methods = method_names(self.methods)
        self.shots, self.seeds = tuple(int(k) for k in self.shots), tuple(int(s) for s in self.seeds)
        for name in ("n_samples", "keep"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        self.shard = tuple(self.shard)
        trained = any(uses_shots(m) for m in self.methods)
        if trained and (not self.shots or any(k < 1 for k in self.shots)):
            raise GcplError(f"--shots {list(self.shots)}: give one or more numbers of images per class, each >= 1")
        if not self.seeds:
            raise GcplError("--seeds: give at least one seed")
        if len(set(self.shots)) != len(self.shots) or len(set(self.seeds)) != len(self.seeds):
            raise GcplError("--shots and --seeds must not repeat a value")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise GcplError(f"--shard {i}/{n}: use i/n with 0 <= i < n, e.g. 0/2 and 1/2 for two machines")
        for name in ("steps_gcpl", "steps_comple"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise GcplError(f"--{name.replace('_', '-')} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise GcplError("--limit must be at least 1")
        if (self.root is None) == (self.data is None):
            raise GcplError("give the data either as --root (a dataset folder, with --dataset) or --data (a split JSON)")
        if self.root is not None and self.dataset is None:
            raise GcplError("--root needs --dataset (e.g. --dataset cars, or --dataset folder for a class-per-folder tree)")

    def dataset_info(self):
        return get_dataset(self.dataset) if self.dataset is not None else None

    def resolved_template(self) -> tuple[str, str]:
        d = self.dataset_info()
        template = self.template or (d.template_for(self.preset) if d else DEFAULT_TEMPLATE)
        init_word = self.init_word or (d.init_word if d else DEFAULT_INIT_WORD)
        return template, init_word

    def result_settings(self) -> dict:
        """The settings that change results; a rerun into the same folder must keep them."""
        d = identity(self)
        d["dataset"] = self.dataset_info().name if self.dataset else None
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
    for m in sorted(cfg.methods, key=order):
        for k in sorted(cfg.shots) if uses_shots(m) else [0]:
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
        split = Split.from_json(p)
        if not split.train or not split.test:
            raise GcplError(f"split file {cfg.data} needs non-empty train and test lists for an experiment")
        return p.absolute()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    path, _ = prepare_dataset(cfg.dataset, cfg.root, out=Path(cfg.out), seed=cfg.split_seed,
                              test_fraction=cfg.test_fraction)
    return Path(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_experiment(cfg: ExperimentConfig, split: Path) -> dict:
    """Write (or check and extend) out/experiment.json; settings must match an existing one."""
    out = Path(cfg.out)
    settings = cfg.result_settings()
    settings["split_sha256"] = _sha256(split)
    grid = {"methods": list(cfg.methods), "shots": sorted(cfg.shots), "seeds": sorted(cfg.seeds)}
    path = out / "experiment.json"
    if path.exists():
        old = read_json(path)
        prev = old.get("settings", {})
        diff = differences(prev, settings)
        if diff:
            raise GcplError(f"{out} holds an experiment with other settings ({'; '.join(diff)}); rerun with the "
                            "same settings to resume or add runs, or choose another --out")
        og = old.get("grid", {})
        grid = {
            "methods": sorted(set(og.get("methods", [])) | set(grid["methods"]), key=order),
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


def method_run(cfg: ExperimentConfig, run: Run, split: Path) -> MethodRun:
    """What one grid cell runs: the experiment's settings for this method, shots and seed."""
    template, init_word = cfg.resolved_template()
    gcpl = run.method == "gcpl"
    tc = TrainConfig(preset=cfg.preset, steps=cfg.steps_gcpl if gcpl else cfg.steps_comple,
                     lr=cfg.lr_gcpl if gcpl else cfg.lr_comple, batch=cfg.batch_gcpl if gcpl else cfg.batch_comple,
                     lam=cfg.lam, max_batch=cfg.max_batch, checkpoint_every=cfg.checkpoint_every)
    return MethodRun(
        method=run.method, folder=run.folder(cfg.out), data=str(split), shots=run.shots, seed=run.seed,
        template=template, init_word=init_word, model=cfg.model, device=cfg.device, dtype=cfg.dtype,
        clip_model=cfg.clip_model or ("tiny" if cfg.model in BUNDLED_NAMES else None),
        resolution=cfg.resolution, allow_fewer=cfg.allow_fewer, strict=cfg.strict, limit=cfg.limit,
        images_per_batch=cfg.images_per_batch, train=tc,
        classify=ClassifyConfig(n_samples=cfg.n_samples, keep=cfg.keep, spacing=cfg.spacing, batch=cfg.classify_batch,
                                seed=run.seed if cfg.eval_seed is None else cfg.eval_seed),
    )


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
    log.info(msg)


def run_experiment(cfg: ExperimentConfig, progress: bool = True, backbone=None) -> Path:
    """Run this shard's part of the grid (skipping finished runs) and rebuild the summary."""
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
        if bb is None and METHODS[run.method].family == "diffusion":  # loaded once, only when needed
            bb = load_backbone(cfg.model, cfg.device, cfg.dtype)
        _say(progress, f"[{j}/{len(todo)}] {run.name}")
        m = run_method(method_run(cfg, run, split), progress=progress, backbone=bb)
        if m.get("n_images"):
            _say(progress, f"    top-1 {100 * m['top1']:.2f}%  mean per-class {100 * m['mean_per_class_accuracy']:.2f}%")
    summarize_experiment(out)
    return out
