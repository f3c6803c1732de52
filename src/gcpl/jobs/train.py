"""`gcpl train`: data -> few-shot support set -> latents -> class tokens -> files.

Run folder:
    config.json                    every setting (resolved), model facts, classes, versions
    split.json                     the few-shot support set used
    tokens.json                    template, init word, and per class its token and embedding file
    embeddings/<token>.safetensors diffusers textual-inversion files ({token: tensor[1, D]})
    train_log.jsonl, loss_curve.png, checkpoint/   loss curve; resumable state
    validation/stepN.png           with --validation-every N

Nothing is written before the settings and the data are checked. Rerunning the same command
into a folder resumes it (a finished run is left as it is, an interrupted one continues from its
checkpoint) when its identity settings (gcpl.settings) are the same, and is refused otherwise,
naming each difference; `--resume` takes the stored settings, so `gcpl train --resume --out RUN`
needs no data argument. The folder is locked while the job runs (gcpl.lock).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import (
    BUNDLED_NAMES,
    compile_setting,
    device_setting,
    dtype_setting,
    load_backbone,
    model_setting,
    offline,
    recommended_training,
    resolution_setting,
    resolve_model_path,
)
from ..data.splits import Sample, Split, few_shot, read_samples
from ..distributed import default_device_name, world
from ..errors import GcplError
from ..generation import generate, label_grid
from ..io import read_json, read_jsonl, write_json
from ..latents import encode_files
from ..lock import locked
from ..runs import check_same_job, save_embeddings, stored_settings, versions, write_tokens_index
from ..settings import flat, plain, replace, setting
from ..tokens import PromptSlot, check_template, encode_slot_prompts, single_token_id, token_names
from ..trainer import TrainConfig, Trainer, check_resumable, checkpoint_step, run_training

log = logging.getLogger(__name__)

__all__ = ["BundledModelNote", "TrainJob", "resume_settings", "train"]


@dataclass
class TrainJob:
    out: str = setting(help="run folder to write; rerunning the same command into it resumes", identity=False)
    data: str | None = setting(None, "folder with one subfolder per class, or a split JSON (its train list); "
                               "not needed with --resume", flag="", identity=False)
    shots: int = setting(16, "training images per class, drawn with --seed")
    model: str | None = model_setting()
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting()
    allow_fewer: bool = setting(False, "classes with fewer than --shots images use all they have")
    strict: bool = setting(False, "fail on unreadable images instead of skipping them", identity=False)
    resume: bool = setting(False, "continue the run in --out from its checkpoint with its stored settings (the "
                           "options given on top must not change what the run is)", identity=False)
    compile: bool = compile_setting()
    validation_every: int = setting(0, "every N steps, generate images of --validation-classes from the tokens so "
                                    "far into RUN/validation/stepN.png (0: never)", identity=False, metavar="N")
    validation_classes: tuple[str, ...] | None = setting(
        None, "classes drawn by --validation-every, comma-separated (default: the first 4)", identity=False,
        metavar="NAME")
    validation_images: int = setting(2, "images per class at each validation", identity=False)
    holdout: int = setting(0, "keep K more images per class out of training (never the shots) to calibrate the "
                           "confidences of eval and predict (RUN/split.json val list); 0: none", metavar="K")
    train: TrainConfig = setting(default_factory=TrainConfig, help="training settings")

    def __post_init__(self):
        if self.shots < 1:
            raise GcplError(f"--shots must be at least 1, got {self.shots}")
        if isinstance(self.validation_classes, str):
            self.validation_classes = (self.validation_classes,)
        if self.validation_every < 0 or self.validation_images < 1:
            raise GcplError("--validation-every must be at least 0 and --validation-images at least 1")
        if self.holdout < 0:
            raise GcplError(f"--holdout must be at least 0, got {self.holdout}")


def resume_settings(job: TrainJob, given: set[str]) -> TrainJob:
    """`gcpl train --resume`: the stored settings of the run in job.out, with the options the user
    gave on top (a given option that differs from the run's is refused later, by the identity check)."""
    stored = stored_settings(job.out, TrainJob)
    if stored is None:
        return job
    values = {k: v for k, v in flat(job).items() if k in given}
    return replace(stored, {**values, "out": job.out, "resume": True})


@locked("train")
def train(job: TrainJob, progress: bool = True, backbone=None) -> Path:
    """Learn one token per class from the images of `job.data` into the run folder `job.out`
    (see the module docstring for its files); returns the folder. Rerunning the same job resumes
    it; Ctrl-C finishes the training step in hand, saves a checkpoint and raises Interrupted.

        from gcpl import TrainConfig, TrainJob, train

        run = train(TrainJob(data="images/train", out="runs/mine", model="tiny", shots=4,
                             train=TrainConfig(template="{} fractal.", init_word="fractal", steps=50)))
    """
    out = Path(job.out)
    check_template(job.train.template)
    if job.data is None:
        job = _stored_data(job)
    model_path = resolve_model_path(job.model) if backbone is None else None
    recommended = backbone.recommended if backbone is not None else _recommended(model_path)
    job = TrainJob(**{**job.__dict__, "train": job.train.resolved(recommended)})
    cfg = job.train
    classes, pool = read_samples(job.data, "train")  # check the data before loading a model
    shown = _validation_classes(job, classes)
    resuming = (out / "config.json").exists()  # rerunning into a run folder resumes it
    if resuming:
        command = read_json(out / "config.json").get("command")
        if command != "train":
            raise GcplError(f"{out} holds the output of `gcpl {command}`, not a training run; choose another --out")
        check_same_job(out, job, classes, "a training run")
        check_resumable(out / "checkpoint", cfg.steps)
        if (out / "tokens.json").exists() and checkpoint_step(out / "checkpoint") == cfg.steps:
            return out  # finished with these settings: nothing to do
    support = few_shot(pool, job.shots, cfg.seed, job.allow_fewer)
    held = _holdout(pool, support, job.holdout, cfg.seed)
    _note_bundled_model(job.model, support)
    w = world()
    bb = backbone or load_backbone(job.model, job.device or default_device_name(w), job.dtype, job.compile)
    single_token_id(bb.tokenizer, cfg.init_word)
    PromptSlot.from_template(bb.tokenizer, cfg.template, cfg.init_word)
    size = job.resolution or bb.resolution
    stats, kept_idx, skipped = encode_files(bb.vae, [s.path for s in support], size, flip=cfg.flip,
                                            strict=job.strict, resize=cfg.train_resize)
    kept = [support[i] for i in kept_idx]
    lost = sorted(set(range(len(classes))) - {s.label for s in kept})
    if lost:
        raise GcplError(f"class {classes[lost[0]]!r} has no readable training image left; fix or replace its images")
    labels = torch.tensor([s.label for s in kept])
    tokens = token_names(classes, bb.tokenizer)
    if w.active and cfg.method == "gcpl":
        # Classes are independent in GCPL: each process trains its own share of them.
        mine = [c for c in range(len(classes)) if w.owns(c)]
        rows = torch.nonzero(torch.isin(labels, torch.tensor(mine))).flatten()
        remap = {c: i for i, c in enumerate(mine)}
        sub_labels = torch.tensor([remap[int(label)] for label in labels[rows]])
        trainer = Trainer(bb, [classes[c] for c in mine], stats.subset(rows), sub_labels, cfg)
        my_tokens, tag = [tokens[c] for c in mine], f"-rank{w.rank}of{w.size}"
    else:
        trainer = Trainer(bb, classes, stats, labels, cfg, world=w)
        my_tokens, tag = tokens, (f"-rank{w.rank}of{w.size}" if w.active else "")
    if w.is_main:  # everything checked: the run folder is written from here on
        write_json(out / "config.json", {
            "command": "train", "settings": plain(job), "model": bb.describe(), "resolution": size,
            "classes": classes, "tokens": tokens,
            "skipped_images": [{"path": p, "reason": r} for p, r in skipped], "versions": versions(),
        })
        Split(classes=classes, train=kept, val=held).to_json(out / "split.json")
    w.barrier()
    if shown and w.active:
        log.warning("validation images are not drawn in multi-process runs (--validation-every ignored)")
    hook = _validation_hook(job, bb, classes, shown, out, size) if shown and not w.active else None
    state = run_training(trainer, out, resume=resuming, progress=progress and w.is_main, tag=tag, after_step=hook)
    if w.is_main or (w.active and cfg.method == "gcpl"):
        save_embeddings(out, my_tokens, state.vectors)
    w.barrier()
    if w.is_main:
        write_tokens_index(out, classes, tokens, cfg.template, cfg.init_word)
        _loss_curve(out, cfg)
    w.barrier()
    return out


def _stored_data(job: TrainJob) -> TrainJob:
    """A job without data: the data of the run it resumes (`--resume`), else a one-line error."""
    stored = stored_settings(job.out, TrainJob) if job.resume else None
    if stored is None or not stored.data:
        where = f"; {job.out} holds no run to resume" if job.resume else " (or --resume to continue a run)"
        raise GcplError(f"give the training data: a folder with one subfolder per class, or a split JSON{where}")
    return TrainJob(**{**job.__dict__, "data": stored.data})


def _holdout(pool: list[Sample], support: list[Sample], k: int, seed: int) -> list[Sample]:
    """k images per class that are not shots (the same seeded per-class draw as the shots, from
    what the shots left), for calibration; a class with fewer left is refused with one line."""
    if k == 0:
        return []
    taken = {s.path for s in support}
    rest = [s for s in pool if s.path not in taken]
    short = sorted({s.class_name for s in pool} - {s.class_name for s in rest})
    if short:
        raise GcplError(f"--holdout {k}: class {short[0]!r} has no image left after its shots; lower --shots or "
                        "--holdout, or give --calibration-data to eval and predict instead")
    try:
        return few_shot(rest, k, seed + 1)
    except GcplError as e:
        raise GcplError(f"--holdout {k}: {e}") from None


def _validation_classes(job: TrainJob, classes: list[str]) -> list[str]:
    """The classes drawn at each validation (checked before anything is written)."""
    if not job.validation_every:
        return []
    wanted = list(job.validation_classes or classes[:4])
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise GcplError(f"--validation-classes: {unknown[0]!r} is not a class of the data ({len(classes)} classes: "
                        f"{', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
    return wanted


def _validation_hook(job: TrainJob, bb, classes: list[str], shown: list[str], out: Path, size: int):
    """after_step for run_training: every job.validation_every steps (and at the last), images of the
    `shown` classes generated from the vectors so far (fixed seeds: the same noise at every
    validation), as one labelled grid in out/validation/stepN.png. Training is unaffected: the
    pipeline draws its noise from its own generators and never touches the trained vectors."""
    cfg = job.train
    slot = PromptSlot.from_template(bb.tokenizer, cfg.template, cfg.init_word)
    rows = torch.tensor([classes.index(c) for c in shown])

    def hook(st) -> None:
        if st.step % job.validation_every and st.step != cfg.steps:
            return
        with torch.no_grad():
            embeds = encode_slot_prompts(bb.text_encoder, slot, st.vectors.detach()[rows].to(bb.device))
        images = generate(bb, embeds, job.validation_images, size)
        path = out / "validation" / f"step{st.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        label_grid([(f"{name} (step {st.step})", list(row)) for name, row in zip(shown, images)]).save(path)

    return hook


def _loss_curve(out: Path, cfg: TrainConfig) -> None:
    rows = read_jsonl(out / "train_log.jsonl")
    if not rows:
        return
    try:  # matplotlib is the optional [plots] extra
        from ..reports.plots import loss_curve_png

        loss_curve_png(rows, out / "loss_curve.png", f"{cfg.method}: training loss (lr {cfg.lr:g}, batch {cfg.batch})")
    except ImportError:
        pass


class BundledModelNote(UserWarning):
    """The bundled model was pointed at images that are not from its procedural world."""


def _note_bundled_model(model: str | None, support: list[Sample]) -> None:
    """The bundled model knows shapes and IFS fractals only; say so when it gets other images."""
    if model not in BUNDLED_NAMES and not (model is None and offline()):
        return
    if all((Path(s.path).parent.parent / "fractals.json").is_file() for s in support):
        return  # written by `gcpl fractals`
    warnings.warn("the bundled model demonstrates the method in its own procedural world (shapes and IFS "
                  "fractals from `gcpl fractals`); on other images, photos above all, it does not help: use a "
                  "Stable Diffusion (e.g. --model CompVis/stable-diffusion-v1-4)", BundledModelNote, stacklevel=2)


def _recommended(model_path: str) -> dict:
    return recommended_training(model_path) if Path(model_path).is_dir() else {}
