"""The jobs behind `gcpl train` and `gcpl eval`: data -> latents -> training / scoring -> files.

Run folder of `train`:
    config.json                    every setting (resolved), model facts, classes, versions
    split.json                     the few-shot support set actually used
    tokens.json                    template, init word, and per class its token and embedding file
    embeddings/<token>.safetensors diffusers textual-inversion files ({token: tensor[1, D]})
    train_log.jsonl, checkpoint/   loss curve; resumable state
Folder of `eval`:
    config.json, predictions.jsonl (one line per image, appended as it goes: resumable),
    results.json, results.md, confusion.png (with matplotlib)

Nothing is written before the settings and the data are checked; rerunning a job into its folder
resumes it when its identity settings (gcpl.settings) are the same, and is refused otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .backbone import (
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
from .classify import ClassifyConfig, DiffusionClassifier
from .data.images import load_batch
from .data.splits import Sample, Split, few_shot, read_samples, seeded_subset
from .distributed import default_device_name, world
from .errors import GcplError, Interrupted
from .evidence import FILE as EVIDENCE_FILE
from .evidence import load_or_learn_evidence
from .interrupt import deferred_interrupt
from .io import append_jsonl, read_json, read_jsonl, write_json
from .latents import encode, encode_files
from .predict import PredictJob, predict
from .results import merge_predictions, summarize
from .runs import (
    check_same_job,
    load_run,
    run_fingerprint,
    save_embeddings,
    stored_settings,
    support_samples,
    versions,
    write_tokens_index,
)
from .sample import generate, label_grid
from .settings import plain, setting
from .tokens import PromptSlot, check_template, encode_prompts, encode_slot_prompts, single_token_id, token_names
from .train import TrainConfig, Trainer, check_resumable, checkpoint_step, run_training

log = logging.getLogger(__name__)

__all__ = ["EvalJob", "PredictJob", "TrainJob", "evaluate", "load_run", "predict", "summarize", "train", "versions"]


# --- train -------------------------------------------------------------------------------------


@dataclass
class TrainJob:
    data: str = setting(help="folder with one subfolder per class, or a split JSON (its train list)",
                        flag="", identity=False)
    out: str = setting(help="run folder to write", identity=False)
    shots: int = setting(16, "training images per class, drawn with --seed")
    model: str | None = model_setting()
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting()
    allow_fewer: bool = setting(False, "classes with fewer than --shots images use all they have")
    strict: bool = setting(False, "fail on unreadable images instead of skipping them", identity=False)
    resume: bool = setting(False, "continue the run in --out from its checkpoint, with its stored settings",
                           identity=False)
    compile: bool = compile_setting()
    validation_every: int = setting(0, "every N steps, generate images of --validation-classes from the tokens so "
                                    "far into RUN/validation/stepN.png (0: never)", identity=False, metavar="N")
    validation_classes: tuple[str, ...] | None = setting(
        None, "classes drawn by --validation-every, comma-separated (default: the first 4)", identity=False,
        metavar="NAME")
    validation_images: int = setting(2, "images per class at each validation", identity=False)
    train: TrainConfig = setting(default_factory=TrainConfig, help="training settings")

    def __post_init__(self):
        if self.shots < 1:
            raise GcplError(f"--shots must be at least 1, got {self.shots}")
        if isinstance(self.validation_classes, str):
            self.validation_classes = (self.validation_classes,)
        if self.validation_every < 0 or self.validation_images < 1:
            raise GcplError("--validation-every must be at least 0 and --validation-images at least 1")


def resume_settings(job: TrainJob, given: set[str]) -> TrainJob:
    """`gcpl train --resume`: the stored settings of the run in job.out, with the options the user
    gave on top (a given option that differs from the run's is refused later, by the identity check)."""
    from .settings import replace

    stored = stored_settings(job.out, TrainJob)
    if stored is None:
        return job
    values = {k: v for k, v in _flat(job).items() if k in given}
    return replace(stored, {**values, "out": job.out, "resume": True})


def _flat(obj) -> dict:
    out = {}
    for k, v in asdict(obj).items():
        out.update(v if isinstance(v, dict) else {k: v})
    return out


def train(job: TrainJob, progress: bool = True, backbone=None) -> Path:
    out = Path(job.out)
    check_template(job.train.template)
    if (out / "config.json").exists() and not job.resume:
        raise GcplError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    model_path = resolve_model_path(job.model) if backbone is None else None
    recommended = backbone.recommended if backbone is not None else _recommended(model_path)
    job = TrainJob(**{**job.__dict__, "train": job.train.resolved(recommended)})
    cfg = job.train
    classes, pool = read_samples(job.data, "train")  # check the data before loading a model
    shown = _validation_classes(job, classes)
    if (out / "config.json").exists():
        check_same_job(out, job, classes, "a training run")
        check_resumable(out / "checkpoint", cfg.steps)
        if (out / "tokens.json").exists() and checkpoint_step(out / "checkpoint") == cfg.steps:
            return out  # finished with these settings: nothing to do
    support = few_shot(pool, job.shots, cfg.seed, job.allow_fewer)
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
        Split(classes=classes, train=kept).to_json(out / "split.json")
    w.barrier()
    if shown and w.active:
        log.warning("validation images are not drawn in multi-process runs (--validation-every ignored)")
    hook = _validation_hook(job, bb, classes, shown, out, size) if shown and not w.active else None
    state = run_training(trainer, out, resume=job.resume, progress=progress and w.is_main, tag=tag, after_step=hook)
    if w.is_main or (w.active and cfg.method == "gcpl"):
        save_embeddings(out, my_tokens, state.vectors)
    w.barrier()
    if w.is_main:
        write_tokens_index(out, classes, tokens, cfg.template, cfg.init_word)
        _loss_curve(out, cfg)
    w.barrier()
    return out


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
        from .report import loss_curve_png

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
    import warnings

    warnings.warn("the bundled model demonstrates the method in its own procedural world (shapes and IFS "
                  "fractals from `gcpl fractals`); on other images, photos above all, it does not help: use a "
                  "Stable Diffusion (e.g. --model CompVis/stable-diffusion-v1-4)", BundledModelNote, stacklevel=2)


def _recommended(model_path: str) -> dict:
    return recommended_training(model_path) if Path(model_path).is_dir() else {}


# --- eval --------------------------------------------------------------------------------------


@dataclass
class EvalJob:
    data: str = setting(help="folder with one subfolder per class, or a split JSON (its --part list)",
                        flag="", identity=False)
    out: str = setting(help="folder for predictions and results", identity=False)
    # not "--run": launchers (torchrun, accelerate) prefix-match it to their own --run-path
    run: str | None = setting(None, "trained run folder (from gcpl train)", flag="--run-dir", identity=False)
    zero_shot: bool = setting(False, "plain class names in the template instead of learned tokens")
    template: str | None = setting(None, "zero-shot template with one {} (default: 'A photo of {}.')")
    model: str | None = setting(None, "hub id, local diffusers folder or 'tiny' (default: the run's model)")
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting("the run's, else the model's native size")
    part: str = setting("test", "which list of a split JSON", choices=("train", "val", "test"))
    limit: int | None = setting(None, "evaluate a seeded random subset of N images (seeded by --seed)")
    images_per_batch: int = setting(8, "images scored together (their UNet calls share batches)", identity=False)
    strict: bool = setting(False, "fail on unreadable images instead of skipping them", identity=False)
    compile: bool = compile_setting()
    calibrate: int = setting(0, "remove each learned token's generic error level, measured on N support "
                             "images per class (0: off)", metavar="N")
    classify: ClassifyConfig = setting(default_factory=ClassifyConfig, help="classifier settings")

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise GcplError(f"--limit must be at least 1, got {self.limit}")
        if self.calibrate < 0 or self.images_per_batch < 1:
            raise GcplError("--calibrate must be at least 0 and --images-per-batch at least 1")


def _class_embeddings(job: EvalJob, bb, data_classes: list[str]) -> tuple[list[str], torch.Tensor, str, dict]:
    """(classes, (C, L, D) prompt embeddings encoded once, template, source) of a run or zero-shot."""
    if job.run and job.zero_shot:
        raise GcplError("give either a trained run or --zero-shot, not both")
    if job.run:
        classes, vectors, template, init_word = load_run(job.run, bb)
        slot = PromptSlot.from_template(bb.tokenizer, template, init_word)
        with torch.no_grad():
            embeds = encode_slot_prompts(bb.text_encoder, slot, vectors.to(bb.device))
        return classes, embeds, template, {"run": str(job.run)}
    if not job.zero_shot:
        raise GcplError("give a trained run folder (--run-dir) or --zero-shot")
    template = check_template(job.template or "A photo of {}.")
    with torch.no_grad():
        embeds = encode_prompts(bb.tokenizer, bb.text_encoder, [template.format(c) for c in data_classes])
    return list(data_classes), embeds, template, {"zero_shot": True}


def evaluate(job: EvalJob, progress: bool = True, backbone=None) -> dict:
    out = Path(job.out)
    run_cfg = read_json(Path(job.run) / "config.json") if job.run and (Path(job.run) / "config.json").exists() else {}
    # the model the run was trained with (its own setting, else the model it actually loaded)
    model = job.model or run_cfg.get("settings", {}).get("model") or run_cfg.get("model", {}).get("model")
    w = world()
    data_classes, samples = read_samples(job.data, job.part)
    bb = backbone or load_backbone(model, job.device or default_device_name(w), job.dtype, job.compile)
    classes, embeds, template, source = _class_embeddings(job, bb, data_classes)
    if not job.zero_shot:
        unknown = sorted({s.class_name for s in samples} - set(classes))
        if unknown:
            raise GcplError(
                f"test class {unknown[0]!r} was not learned by run {job.run} (it learned {len(classes)} classes: "
                f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); train on it or drop it from the test data"
            )
    index = {c: i for i, c in enumerate(classes)}
    samples = seeded_subset([Sample(s.path, index[s.class_name], s.class_name) for s in samples], job.limit,
                            job.classify.seed)
    size = job.resolution or run_cfg.get("resolution") or bb.resolution
    tokens_digest = run_fingerprint(job.run) if job.run else None
    if (out / "config.json").exists():
        stored = check_same_job(out, job, classes, "an evaluation")
        if stored.get("run_tokens", tokens_digest) != tokens_digest:
            raise GcplError(f"{out} holds an evaluation of other class tokens (the run was trained further or "
                            "anew since); remove it or evaluate into another --out")
    latent_shape = (bb.latent_channels, size // bb.vae_scale, size // bb.vae_scale)
    clf = DiffusionClassifier(bb, embeds, job.classify, latent_shape)
    schedule = job.classify.describe(len(classes))
    if job.run and job.classify.racing:
        # learned once on the support set by the main process, stored in the run folder, read by the others
        evidence = load_or_learn_evidence(job.run, clf, classes, size, log=log.info) if w.is_main else None
        w.barrier()
        if not w.is_main:
            evidence = load_or_learn_evidence(job.run, clf, classes, size)
        clf.use_evidence(evidence)
        schedule["evidence"] = (f"{Path(job.run) / EVIDENCE_FILE} (learned on the support set)" if evidence
                                else "none (--evidence-shots 0: timesteps evenly spread, equal weights)")
    elif job.classify.racing:
        schedule["evidence"] = "none (zero-shot has no support set: timesteps evenly spread, equal weights)"
    if job.calibrate:
        _calibrate(clf, job, bb, classes, size)
    w.barrier()
    if w.is_main:
        write_json(out / "config.json", {
            "command": "eval", "settings": plain(job), "source": source, "run_tokens": tokens_digest,
            "template": template, "classes": classes, "schedule": schedule, "resolution": size,
            "model": bb.describe(), "versions": versions(),
        })
        merge_predictions(out)  # fold shard files of an earlier multi-process run in; drop torn lines
    w.barrier()
    done_idx = {r["index"] for r in read_jsonl(out / "predictions.jsonl")}
    # Each process scores its own share of the images into its own file (merged at the end).
    pred_file = out / (f"predictions-rank{w.rank}of{w.size}.jsonl" if w.active else "predictions.jsonl")
    todo = [i for i in range(len(samples)) if i not in done_idx and w.owns(i)]
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc="eval", unit="img", disable=not progress)
    with deferred_interrupt() as stop:
        _score_all(job, clf, bb, samples, classes, todo, size, pred_file, bar, stop)
    bar.close()
    w.barrier()
    if w.is_main:
        merge_predictions(out)
        summarize(out, classes)
    w.barrier()
    return read_json(out / "results.json")


def _score_all(job, clf, bb, samples, classes, todo, size, pred_file, bar, stop) -> None:
    """Score the `todo` images chunk by chunk, one JSONL line each as soon as it is known; Ctrl-C
    ends after the chunk in hand (its lines are on disk)."""
    for j in range(0, len(todo), job.images_per_batch):
        chunk = todo[j : j + job.images_per_batch]
        loaded = load_batch([samples[i].path for i in chunk], size, strict=job.strict, allow_empty=True)
        kept = set(loaded.kept)
        unread = [i for k, i in enumerate(chunk) if k not in kept]  # in order, like loaded.skipped
        for i, (path, reason) in zip(unread, loaded.skipped):
            append_jsonl(pred_file, {"index": i, "path": path, "skipped": reason})
        if loaded.kept:
            x0 = encode(bb.vae, loaded.pixels).mean[:, 0] * bb.scaling_factor
            for k, score in zip(loaded.kept, clf.score(x0)):
                i = chunk[k]
                s = samples[i]
                append_jsonl(pred_file, {
                    "index": i, "path": s.path, "label": s.label, "class_name": s.class_name,
                    "pred": score.pred, "pred_name": classes[score.pred], "top5": score.ranking[:5],
                    "ranking": score.ranking, "unet_calls": score.unet_calls,
                    "errors": {classes[c]: e for c, e in score.mean_error.items()},
                })
        bar.update(len(chunk))
        if stop.requested and j + job.images_per_batch < len(todo):
            bar.close()
            done = len(samples) - len(todo) + j + len(chunk)
            raise Interrupted(f"{done} of {len(samples)} images scored and kept in {pred_file}")


def _calibrate(clf: DiffusionClassifier, job: EvalJob, bb, classes: list[str], size: int) -> None:
    if not job.run:
        raise GcplError("--calibrate needs a trained run (its support images); it does not apply to --zero-shot")
    index = {c: i for i, c in enumerate(classes)}
    picked = support_samples(job.run, classes, job.calibrate)
    stats, kept, _ = encode_files(bb.vae, [s.path for s in picked], size)
    labels = torch.tensor([index[picked[i].class_name] for i in kept])
    calls = clf.calibrate(stats.mean[:, 0] * bb.scaling_factor, labels)
    log.info("calibrated class scores on %d support images (%d UNet calls)", len(kept), calls)
