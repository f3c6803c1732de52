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
The CLIP competitors run with their official settings for `dataset` (gcpl.clip.official), each
overridable by its option (--tip-alpha, --coop-epochs, ...: `clip`, gcpl.clip.config.ClipSettings);
each run's eval/config.json records the values and their sources, summary.md lists them.

Resume: a run whose eval/results.json exists and counts every test image is skipped; a
half-finished one continues (training from its checkpoint, evaluation from predictions.jsonl).
Sharding (`shard=(i, n)`): the grid's runs, sorted by (method, shots, seed), go round-robin to n
shards; shard i runs every n-th one from the i-th. Each shard writes only its own run folders and
the summary is rebuilt from whatever is finished, so n machines can share one output folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .backbone import load_backbone
from .classify import ClassifyConfig
from .clip.config import ClipSettings
from .data.loaders import get_dataset, prepare_dataset
from .data.splits import Split
from .errors import GcplError
from .io import read_json, write_json
from .lock import LOCK_FILE, output_lock
from .methods import METHODS, MethodRun, RunSettings, method_names, order, run_method, uses_shots
from .reports.experiment import summarize_experiment
from .runs import versions
from .settings import differences, identity, setting
from .tokens import check_template
from .trainer import PRESETS, TrainConfig

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = TrainConfig.__dataclass_fields__["template"].default  # for split files without a dataset
DEFAULT_INIT_WORD = TrainConfig.__dataclass_fields__["init_word"].default


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise GcplError(f"--shard expects i/n such as 0/2, got {text!r}") from None
    return i, n


#: TrainConfig fields an experiment sets for each run itself (not options of its groups)
_RUN_SET = ("method", "preset", "template", "init_word", "seed")
#: options of earlier releases -> their names now (accepted for one release, with a note)
DEPRECATED_OPTIONS = {
    "--steps-gcpl": ("--gcpl-steps",), "--steps-comple": ("--comple-steps",), "--lr-gcpl": ("--gcpl-lr",),
    "--lr-comple": ("--comple-lr",), "--batch-gcpl": ("--gcpl-batch",), "--batch-comple": ("--comple-batch",),
    "--lam": ("--comple-lam",), "--n-samples": ("--classify-n-samples",), "--keep": ("--classify-keep",),
    "--spacing": ("--classify-spacing",), "--max-batch": ("--gcpl-max-batch", "--comple-max-batch"),
    "--checkpoint-every": ("--gcpl-checkpoint-every", "--comple-checkpoint-every"),
}
#: experiment.json settings of earlier releases (flat) -> their dotted names now
_LEGACY_KEYS = {"steps_gcpl": "gcpl.steps", "steps_comple": "comple.steps", "lr_gcpl": "gcpl.lr",
                "lr_comple": "comple.lr", "batch_gcpl": "gcpl.batch", "batch_comple": "comple.batch",
                "lam": "comple.lam", "n_samples": "classify.n_samples", "keep": "classify.keep",
                "spacing": "classify.spacing", "model": "run.model", "clip_model": "run.clip_model",
                "resolution": "run.resolution", "allow_fewer": "run.allow_fewer", "limit": "run.limit",
                "dtype": "run.dtype"}


@dataclass
class ExperimentConfig:
    out: str = setting(help="experiment folder (rerun with the same one to resume or add runs)", identity=False)
    dataset: str | None = setting(None, "dataset (cars, flowers102, cornseeds, crc5k, isic2018, lc25000, fractals, "
                                  "folder): the default template and init word, the loader for --root, and the "
                                  "CLIP methods' official settings")
    root: str | None = setting(None, "dataset folder as distributed (needs --dataset); its split JSON is written "
                               "into --out", identity=False)
    data: str | None = setting(None, "or: a split JSON with train and test lists", identity=False)
    methods: tuple[str, ...] = setting(("zeroshot", "gcpl", "comple"), "comma-separated methods", parse=method_names,
                                       identity=False)
    shots: tuple[int, ...] = setting((1, 4, 8, 16), "images per class", identity=False)
    seeds: tuple[int, ...] = setting((1, 2, 3), "seeds: few-shot draw, training, classifier noise", identity=False)
    template: str | None = setting(None, "prompt with one {} (default: the dataset's, else 'A photo of {}.')")
    init_word: str | None = setting(None, "single-token initialiser word (default: the dataset's, else 'object')")
    preset: str = setting("paper", "training recipe: paper = the authors' released code (GCPL lr 2e-3 over 4 "
                          "accumulated images, 500 steps, squashed images, the code's templates; CoMPLe as the "
                          "paper's text); default = the paper's text or the model's recommendation",
                          choices=tuple(PRESETS))
    run: RunSettings = setting(default_factory=RunSettings, help="what every method run shares")
    gcpl: TrainConfig = setting(default_factory=TrainConfig, prefix="gcpl", hide=(*_RUN_SET, "lam", "groups"),
                                help="GCPL training (unset: the preset's)")
    comple: TrainConfig = setting(default_factory=lambda: TrainConfig(method="comple"), prefix="comple",
                                  hide=_RUN_SET, defaults={"method": "comple"}, help="CoMPLe training (unset: the "
                                  "preset's)")
    classify: ClassifyConfig = setting(
        default_factory=lambda: ClassifyConfig(spacing="li"), prefix="classify", hide=("seed",),
        defaults={"spacing": "li"}, help="the diffusion classifier of every diffusion method (default: Li et al.'s "
        "adaptive schedule, the paper's classifier)")
    clip: ClipSettings = setting(default_factory=ClipSettings, help="the CLIP methods' settings (unset: the "
                                 "official values for --dataset, gcpl.clip.official)")
    eval_seed: int | None = setting(None, "classifier noise seed for every run (default: the run's seed)")
    split_seed: int = setting(0, "seed of the train/test split drawn from --root (datasets without an official one)")
    test_fraction: float | None = setting(None, "held-out fraction (default: the dataset's)")
    shard: tuple[int, int] = setting((0, 1), "run shard i of n (0-based), e.g. 0/2 and 1/2 on two GPUs writing to "
                                     "the same --out", parse=_shard, identity=False)
    quiet: bool = setting(False, "no progress output", flag=("-q", "--quiet"), identity=False)

    def __post_init__(self):
        self.methods = method_names(self.methods)
        self.shots, self.seeds = tuple(int(k) for k in self.shots), tuple(int(s) for s in self.seeds)
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
        if (self.root is None) == (self.data is None):
            raise GcplError("give the data either as --root (a dataset folder, with --dataset) or --data (a split JSON)")
        if self.root is not None and self.dataset is None:
            raise GcplError("--root needs --dataset (e.g. --dataset cars, or --dataset folder for a class-per-folder tree)")
        if self.clip.text.template is not None:
            check_template(self.clip.text.template)

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
        for m in ("gcpl", "comple"):  # a train run may be resumed to more steps; an experiment's runs may not
            d[m]["steps"] = getattr(self, m).steps
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


def _current_keys(settings: dict) -> dict:
    """experiment.json settings of an earlier release (flat keys) in today's nested form: the
    values it stored where they moved, today's defaults for what it did not have."""
    if "steps_gcpl" not in settings:  # written by this release
        return settings
    flat_old = {_LEGACY_KEYS.get(k, k): v for k, v in settings.items()}
    fresh = _flatten(ExperimentConfig(out=".", data=".").result_settings())
    merged = {**fresh, **{k: v for k, v in flat_old.items() if k in fresh or "." not in k}}
    for k in ("dataset", "template", "init_word", "split_sha256"):
        if k in settings:
            merged[k] = settings[k]
    if "spacing" not in settings:  # before the classifier had a choice: gcpl's nested stages
        merged["classify.spacing"] = "nested"
    return _nest(merged)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _nest(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        *parents, leaf = k.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _record_experiment(cfg: ExperimentConfig, split: Path) -> dict:
    """Write (or check and extend) out/experiment.json; settings must match an existing one."""
    out = Path(cfg.out)
    settings = cfg.result_settings()
    settings["split_sha256"] = _sha256(split)
    grid = {"methods": list(cfg.methods), "shots": sorted(cfg.shots), "seeds": sorted(cfg.seeds)}
    path = out / "experiment.json"
    if path.exists():
        old = read_json(path)
        prev = _current_keys(old.get("settings", {}))
        if "clip" not in prev:  # written before the CLIP methods' settings were experiment settings
            ran = [m for m in old.get("grid", {}).get("methods", []) if m in METHODS]
            if any(METHODS[m].family == "clip" for m in ran):
                raise GcplError(f"{out} holds CLIP runs made without the official per-dataset settings of an earlier "
                                "release; choose another --out for this experiment")
            prev = {**prev, "clip": settings["clip"]}
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
    train = cfg.comple if run.method == "comple" else cfg.gcpl
    return MethodRun(
        method=run.method, folder=run.folder(cfg.out), data=str(split), shots=run.shots, seed=run.seed,
        template=template, init_word=init_word, settings=cfg.run,
        train=dataclasses.replace(train, preset=cfg.preset),
        classify=dataclasses.replace(cfg.classify, seed=run.seed if cfg.eval_seed is None else cfg.eval_seed),
        dataset=cfg.dataset_info().name if cfg.dataset else None, clip=cfg.clip,
    )


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
    log.info(msg)


def run_experiment(cfg: ExperimentConfig, progress: bool = True, backbone=None) -> Path:
    """Run this shard's part of the grid (skipping finished runs) and rebuild the summary. The
    folder is locked while it runs (gcpl.lock); the shards of one experiment run side by side into
    the same folder, so each holds a lock of its own."""
    i, n = cfg.shard
    with output_lock(cfg.out, "experiment", LOCK_FILE if n == 1 else f"{LOCK_FILE}.shard-{i}-of-{n}"):
        return _run_shard(cfg, progress, backbone)


def _run_shard(cfg: ExperimentConfig, progress: bool, backbone) -> Path:
    template, _ = cfg.resolved_template()
    check_template(template)
    out = Path(cfg.out)
    split = _split_file(cfg)
    _record_experiment(cfg, split)
    expected = _expected_images(split, cfg.run.limit)
    mine = shard_runs(plan_runs(cfg), cfg.shard)
    todo = [r for r in mine if not eval_finished(r.folder(out), expected)]
    _say(progress, f"experiment {out}: shard {cfg.shard[0]}/{cfg.shard[1]} has {len(mine)} runs, "
                   f"{len(mine) - len(todo)} already finished")
    bb = backbone
    for j, run in enumerate(todo, 1):
        if bb is None and METHODS[run.method].family == "diffusion":  # loaded once, only when needed
            bb = load_backbone(cfg.run.model, cfg.run.device, cfg.run.dtype)
        _say(progress, f"[{j}/{len(todo)}] {run.name}")
        m = run_method(method_run(cfg, run, split), progress=progress, backbone=bb)
        if m.get("n_images"):
            _say(progress, f"    top-1 {100 * m['top1']:.2f}%  mean per-class {100 * m['mean_per_class_accuracy']:.2f}%")
    summarize_experiment(out)
    return out
