"""Every method gcpl can run on a split, in one registry, and one `run_method` (train if needed,
then evaluate) that the demo and the experiment runner share.

A run of a method lives in one folder: `train/` (when the method learns anything) and `eval/`
(predictions.jsonl, results.json, results.md: the same files for every method). Rerunning a
finished run recomputes nothing; an interrupted one resumes. To add a method, add a `Method`
to METHODS with its runner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .classify import ClassifyConfig
from .errors import GcplError
from .train import TrainConfig


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
    model: str | None = None  # the diffusion model (hub id, folder, "tiny")
    clip_model: str | None = None  # the CLIP methods' CLIPModel (hub id, folder, "tiny"); None: ClipJob's default
    device: str | None = None
    dtype: str | None = None
    resolution: int | None = None
    allow_fewer: bool = False
    strict: bool = False
    limit: int | None = None  # a seeded subset of test images (seeded by classify.seed)
    calibrate: int = 0
    images_per_batch: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)  # diffusion tokens; method and seed are set here
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)  # its seed is the evaluation seed


@dataclass(frozen=True)
class Method:
    name: str  # as given to --methods
    short: str  # in wide tables (experiment summaries)
    label: str  # in the demo's table
    uses_shots: bool  # False: runs once per seed, whatever the shots (zero-shot)
    runner: Callable[[MethodRun, bool, object], dict]  # (run, progress, backbone or None) -> metrics
    family: str = "diffusion"  # "diffusion" (needs the SD backbone) or "clip"
    demo_seconds: float = 0.0  # CPU seconds on the demo benchmark (measured; orders the demo's work only)


def _zero_shot(run: MethodRun, progress: bool, backbone) -> dict:
    from .api import EvalJob, evaluate

    job = EvalJob(data=run.data, out=str(run.folder / "eval"), zero_shot=True, template=run.template,
                  model=run.model, device=run.device, dtype=run.dtype, resolution=run.resolution, part="test",
                  limit=run.limit, images_per_batch=run.images_per_batch, strict=run.strict, classify=run.classify)
    return evaluate(job, progress=progress, backbone=backbone)


def _tokens(run: MethodRun, progress: bool, backbone) -> dict:
    """GCPL or CoMPLe: train the class tokens (resume=True: a finished run is only checked), then
    classify with them."""
    from .api import EvalJob, TrainJob, evaluate, train

    tc = dataclasses.replace(run.train, method=run.method, seed=run.seed, template=run.template,
                             init_word=run.init_word)
    folder = run.folder / "train"
    train(TrainJob(data=run.data, out=str(folder), shots=run.shots, model=run.model, device=run.device,
                   dtype=run.dtype, resolution=run.resolution, allow_fewer=run.allow_fewer, strict=run.strict,
                   resume=True, train=tc), progress=progress, backbone=backbone)
    job = EvalJob(data=run.data, out=str(run.folder / "eval"), run=str(folder), model=run.model, device=run.device,
                  dtype=run.dtype, resolution=run.resolution, part="test", limit=run.limit,
                  images_per_batch=run.images_per_batch, strict=run.strict, calibrate=run.calibrate,
                  classify=run.classify)
    return evaluate(job, progress=progress, backbone=backbone)


def _clip(run: MethodRun, progress: bool, backbone) -> dict:
    """A CLIP competitor (gcpl.clip) on the same split, shots, seed and test subset; its run folder
    (what it learned and its predictions) is run.folder/eval, like every method's results."""
    from .clip import ClipJob, run_clip

    job = ClipJob(method=run.method, data=run.data, out=str(run.folder / "eval"), shots=max(run.shots, 1),
                  seed=run.seed, template=run.template, device=run.device, limit=run.limit,
                  eval_seed=run.classify.seed, allow_fewer=run.allow_fewer, strict=run.strict,
                  **({"model": run.clip_model} if run.clip_model else {}))
    return run_clip(job, progress=progress)


def _clip_methods() -> tuple[Method, ...]:
    from .clip.config import METHODS as CLIP
    from .clip.config import USES_SHOTS
    from .clip.methods import LABELS, SHORT

    # single-thread CPU seconds of each on the demo benchmark (10 classes, 16 shots, 12 test images
    # each; bundled tiny CLIP), measured on the 2-core machine of docs/PERFORMANCE.md
    seconds = {"clip-zs": 2, "linear-probe": 7, "tip-adapter": 6, "tip-adapter-f": 13, "coop": 127, "kgcoop": 40,
               "cocoop": 87, "maple": 16, "promptsrc": 179}
    return tuple(Method(n, SHORT[n], LABELS[n], n in USES_SHOTS, _clip, family="clip", demo_seconds=seconds[n])
                 for n in CLIP)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zeroshot", "Zero-shot", "zero-shot diffusion classifier (class names)", False, _zero_shot,
           demo_seconds=600),
    Method("gcpl", "GCPL", "GCPL (learned class tokens)", True, _tokens, demo_seconds=800),
    Method("comple", "CoMPLe", "CoMPLe (joint contrastive tokens)", True, _tokens, demo_seconds=1000),
    *_clip_methods(),
)}
ALIASES = {"zero-shot": "zeroshot", "zs": "zeroshot"}


def method_names(text: str | tuple | list) -> tuple[str, ...]:
    """'gcpl, Zero-shot' -> ('gcpl', 'zeroshot'), checked against the registry (one-line errors);
    'all' -> every method."""
    items = text.split(",") if isinstance(text, str) else list(text)
    if [str(x).strip().lower() for x in items] == ["all"]:
        return tuple(METHODS)
    names = tuple(ALIASES.get(x.strip().lower(), x.strip().lower()) for x in items if str(x).strip())
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise GcplError(f"unknown method {', '.join(unknown) or '(none given)'}; use some of {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise GcplError(f"methods {','.join(names)} name a method twice")
    return names


def order(name: str) -> int:
    """Position of a method in tables and run lists (registry order; unknown names last)."""
    names = list(METHODS)
    return names.index(name) if name in names else len(names)


def uses_shots(name: str) -> bool:
    """False for methods that see no training image (zero-shot): one run per seed, shots 0."""
    return METHODS[name].uses_shots if name in METHODS else True


def run_method(run: MethodRun, progress: bool = True, backbone=None) -> dict:
    """Train (if the method learns) and evaluate one method into run.folder; returns the metrics."""
    return METHODS[run.method].runner(run, progress, backbone)
