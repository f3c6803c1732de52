"""Every method gcpl can run on a split, in one registry, and one `run_method` (train if needed,
then evaluate) that the demo and the experiment runner share.

A run of a method lives in one folder: `train/` (when the method learns anything) and `eval/`
(predictions.jsonl, results.json, results.md: the same files for every method). Rerunning a
finished run recomputes nothing; an interrupted one resumes. A method is added by one decorated
class (`@register_method`, gcpl.method_registry): the diffusion methods here, the CLIP
competitors in gcpl.clip (imported here, so `METHODS` holds every method once this module is
imported).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .backbone import BUNDLED_NAMES, device_setting, dtype_setting, model_setting, resolution_setting
from .classify import ClassifyConfig
from .clip import ClipJob, run_clip
from .clip.config import ClipSettings
from .errors import GcplError
from .method_registry import FAMILIES, METHODS, MethodInfo, register_method
from .settings import setting
from .trainer import TrainConfig

__all__ = ["METHODS", "MethodInfo", "MethodRun", "RunSettings", "all_methods", "method_names", "order", "run_method",
           "uses_shots"]


@dataclass
class RunSettings:
    """What every method run of an experiment shares, beyond its method, shots and seed (options of
    `gcpl experiment`; the demo fills them itself)."""

    model: str | None = model_setting()
    clip_model: str | None = setting(None, "CLIPModel of the CLIP methods: hub id, folder or 'tiny' (default: "
                                     "openai/clip-vit-base-patch16; the bundled tiny CLIP with the bundled --model "
                                     "or when HF_HUB_OFFLINE=1)")
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting()
    allow_fewer: bool = setting(False, "classes with fewer than --shots images use all they have")
    strict: bool = setting(False, "fail on unreadable images instead of skipping them", identity=False)
    limit: int | None = setting(None, "score a seeded random subset of N test images per run (seeded by the "
                                "classifier's seed)")
    calibrate: int = setting(0, "remove each learned token's generic error level, measured on N support images "
                             "per class (0: off)", metavar="N")
    images_per_batch: int = setting(8, "images scored together", identity=False)
    calibration_data: str | None = setting(None, "labelled held-out images (class folders or a split JSON's val, "
                                           "else test, list) to calibrate the diffusion methods' confidences on "
                                           "(ECE in results)", metavar="DATA")

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise GcplError("--limit must be at least 1")
        if self.calibrate < 0 or self.images_per_batch < 1:
            raise GcplError("--calibrate must be at least 0 and --images-per-batch at least 1")


@dataclass
class MethodRun:
    """One method on one split, shots and seed: everything a runner needs."""

    method: str
    folder: Path  # holds train/ and eval/
    data: str  # split JSON with train and test lists
    shots: int  # 0 for methods that use no training images
    seed: int  # few-shot draw and training randomness
    template: str
    init_word: str
    settings: RunSettings = field(default_factory=RunSettings)
    train: TrainConfig = field(default_factory=TrainConfig)  # diffusion tokens; method and seed are set here
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)  # its seed is the evaluation seed
    dataset: str | None = None  # the registry name: the CLIP methods' official per-dataset settings
    clip: ClipSettings = field(default_factory=ClipSettings)  # the CLIP methods' settings (None: official)


@register_method("zeroshot", short="Zero-shot", label="zero-shot diffusion classifier (class names)",
                 family="diffusion", uses_shots=False, demo_seconds=600)
class ZeroShotDiffusion:
    """The diffusion classifier with plain class names in the template (no training)."""

    @staticmethod
    def run(run: MethodRun, progress: bool, backbone) -> dict:
        from .jobs.evaluate import EvalJob, evaluate

        s = run.settings
        job = EvalJob(data=run.data, out=str(run.folder / "eval"), zero_shot=True, template=run.template,
                      model=s.model, device=s.device, dtype=s.dtype, resolution=s.resolution, part="test",
                      limit=s.limit, images_per_batch=s.images_per_batch, strict=s.strict, classify=run.classify)
        return evaluate(job, progress=progress, backbone=backbone)


class LearnedTokens:
    """GCPL or CoMPLe: train the class tokens (resume=True: a finished run is only checked), then
    classify with them."""

    @staticmethod
    def run(run: MethodRun, progress: bool, backbone) -> dict:
        from .jobs.evaluate import EvalJob, evaluate
        from .jobs.train import TrainJob, train

        s = run.settings
        tc = dataclasses.replace(run.train, method=run.method, seed=run.seed, template=run.template,
                                 init_word=run.init_word)
        folder = run.folder / "train"
        train(TrainJob(data=run.data, out=str(folder), shots=run.shots, model=s.model, device=s.device,
                       dtype=s.dtype, resolution=s.resolution, allow_fewer=s.allow_fewer, strict=s.strict,
                       resume=True, train=tc), progress=progress, backbone=backbone)
        job = EvalJob(data=run.data, out=str(run.folder / "eval"), run=str(folder), model=s.model,
                      device=s.device, dtype=s.dtype, resolution=s.resolution, part="test", limit=s.limit,
                      images_per_batch=s.images_per_batch, strict=s.strict, calibrate=s.calibrate,
                      calibration_data=s.calibration_data, classify=run.classify)
        return evaluate(job, progress=progress, backbone=backbone)


@register_method("gcpl", short="GCPL", label="GCPL (learned class tokens)", family="diffusion", trains=True,
                 demo_seconds=800)
class Gcpl(LearnedTokens):
    """One token per class, trained as if alone (paper Eq. 1-2)."""


@register_method("comple", short="CoMPLe", label="CoMPLe (joint contrastive tokens)", family="diffusion",
                 trains=True, demo_seconds=1000)
class Comple(LearnedTokens):
    """All tokens jointly with the contrastive loss (paper Eq. 3)."""


def _run_clip(run: MethodRun, progress: bool, backbone) -> dict:
    """A CLIP competitor (gcpl.clip) on the same split, shots, seed and test subset, with the
    official settings of run.dataset for what run.clip leaves unset (the run's template is the
    dataset's own prompt, used where the official code has none); its run folder (what it learned
    and its predictions) is run.folder/eval, like every method's results."""
    s = run.settings
    clip_model = s.clip_model or ("tiny" if s.model in BUNDLED_NAMES else None)
    job = ClipJob(method=run.method, data=run.data, out=str(run.folder / "eval"), shots=max(run.shots, 1),
                  seed=run.seed, dataset=run.dataset, template=run.template, device=s.device, limit=s.limit,
                  eval_seed=run.classify.seed, allow_fewer=s.allow_fewer, strict=s.strict, clip=run.clip,
                  **({"model": clip_model} if clip_model else {}))
    return run_clip(job, progress=progress)


ALIASES = {"zero-shot": "zeroshot", "zs": "zeroshot"}


def method_names(text: str | tuple | list) -> tuple[str, ...]:
    """'gcpl, Zero-shot' -> ('gcpl', 'zeroshot'), checked against the registry (one-line errors);
    'all' -> every method."""
    items = text.split(",") if isinstance(text, str) else list(text)
    known = all_methods()
    if [str(x).strip().lower() for x in items] == ["all"]:
        return known
    names = tuple(ALIASES.get(x.strip().lower(), x.strip().lower()) for x in items if str(x).strip())
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise GcplError(f"unknown method {', '.join(unknown) or '(none given)'}; use some of {', '.join(known)}")
    if len(set(names)) != len(names):
        raise GcplError(f"methods {','.join(names)} name a method twice")
    return names


def all_methods() -> tuple[str, ...]:
    """Every registered method, the diffusion family first, each family in registration order."""
    return tuple(n for fam in FAMILIES for n, m in METHODS.items() if m.family == fam)


def order(name: str) -> int:
    """Position of a method in tables and run lists (`all_methods` order; unknown names last)."""
    names = all_methods()
    return names.index(name) if name in names else len(names)


def uses_shots(name: str) -> bool:
    """False for methods that see no training image (zero-shot): one run per seed, shots 0."""
    return METHODS[name].uses_shots if name in METHODS else True


def run_method(run: MethodRun, progress: bool = True, backbone=None) -> dict:
    """Train (if the method learns) and evaluate one method into run.folder; returns the metrics."""
    info = METHODS[run.method]
    if info.family == "clip":
        return _run_clip(run, progress, backbone)
    return info.impl.run(run, progress, backbone)
