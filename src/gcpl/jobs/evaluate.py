"""`gcpl eval`: labelled test images -> the diffusion classifier -> predictions and metrics.

Folder:
    config.json          settings, what the tokens are (run digest or zero-shot), the classifier,
                         the model, versions
    predictions.jsonl    one line per image, appended as it goes (resumable)
    results.json, results.md, confusion.png (with matplotlib)

Nothing is written before the settings, the run and the data are checked; rerunning into the
folder resumes it when its identity settings are the same and the run's tokens did not change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import compile_setting, device_setting, dtype_setting, load_backbone, resolution_setting
from ..calibration import confidence, fit_for
from ..classify import ClassifyConfig, DiffusionClassifier
from ..data.images import load_batch
from ..data.splits import Sample, read_samples, seeded_subset
from ..distributed import default_device_name, world
from ..errors import GcplError
from ..evidence import FILE as EVIDENCE_FILE
from ..evidence import load_or_learn_evidence
from ..io import read_json, resume_jsonl, write_json
from ..latents import encode, encode_files
from ..lock import locked
from ..reports.eval import merge_predictions, summarize
from ..runs import TrainedRun, check_same_job, versions
from ..scoring import Item, score_into
from ..settings import plain, setting
from ..tokens import check_template, encode_prompts

log = logging.getLogger(__name__)

__all__ = ["EvalJob", "evaluate"]

ZERO_SHOT_TEMPLATE = "A photo of {}."


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
    calibration_data: str | None = setting(
        None, "labelled images the tokens were not trained on (class folders or a split JSON's val, else test, "
        "list): fit the confidence on them and report the test images' calibration (ECE); a run "
        "trained with --holdout uses its held-out shots without it", metavar="DATA")
    classify: ClassifyConfig = setting(default_factory=ClassifyConfig, help="classifier settings")

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise GcplError(f"--limit must be at least 1, got {self.limit}")
        if self.calibrate < 0 or self.images_per_batch < 1:
            raise GcplError("--calibrate must be at least 0 and --images-per-batch at least 1")


def _class_embeddings(job: EvalJob, run: TrainedRun | None, bb, data_classes: list[str]):
    """(classes, (C, L, D) prompt embeddings encoded once, template, source) of a run or zero-shot."""
    if run is not None:
        return run.classes, run.prompt_embeds(bb), run.template, {"run": str(job.run)}
    template = check_template(job.template or ZERO_SHOT_TEMPLATE)
    with torch.no_grad():
        embeds = encode_prompts(bb.tokenizer, bb.text_encoder, [template.format(c) for c in data_classes])
    return list(data_classes), embeds, template, {"zero_shot": True}


def _trained_run(job: EvalJob) -> TrainedRun | None:
    if job.run and job.zero_shot:
        raise GcplError("give either a trained run or --zero-shot, not both")
    if not job.run and not job.zero_shot:
        raise GcplError("give a trained run folder (--run-dir) or --zero-shot")
    return TrainedRun.open(job.run) if job.run else None


@locked("eval")
def evaluate(job: EvalJob, progress: bool = True, backbone=None) -> dict:
    """Score the test images of `job.data` into `job.out` (see the module docstring); returns the
    metrics (results.json). Ctrl-C finishes the chunk of images in hand, then raises Interrupted.
    Rerunning the same job resumes it; the folder is locked while the job runs (gcpl.lock).

        from gcpl import EvalJob, evaluate

        metrics = evaluate(EvalJob(data="images/test", out="runs/mine/eval", run="runs/mine"))
        print(metrics["top1"], metrics["confusion_matrix"])
    """
    out = Path(job.out)
    run = _trained_run(job)
    w = world()
    data_classes, samples = read_samples(job.data, job.part)
    if run is not None:
        run.check_classes([s.class_name for s in samples])
    model = run.model_for(job.model) if run is not None else job.model
    bb = backbone or load_backbone(model, job.device or default_device_name(w), job.dtype, job.compile)
    classes, embeds, template, source = _class_embeddings(job, run, bb, data_classes)
    index = {c: i for i, c in enumerate(classes)}
    samples = seeded_subset([Sample(s.path, index[s.class_name], s.class_name) for s in samples], job.limit,
                            job.classify.seed)
    size = run.resolution_for(job.resolution, bb) if run is not None else job.resolution or bb.resolution
    digest = run.digest if run is not None else None
    if (out / "config.json").exists():
        check_same_job(out, job, classes, "an evaluation", run_tokens=digest)
    latent_shape = (bb.latent_channels, size // bb.vae_scale, size // bb.vae_scale)
    ccfg = job.classify.resolved(trained=run is not None)  # `auto`: ranked stages for learned tokens
    clf = DiffusionClassifier(bb, embeds, ccfg, latent_shape)
    schedule = ccfg.describe(len(classes))
    if run is not None and ccfg.uses_evidence:
        # learned once on the support set by the main process, stored in the run folder, read by the others
        evidence = load_or_learn_evidence(run, clf, classes, size, log=log.info) if w.is_main else None
        w.barrier()
        if not w.is_main:
            evidence = load_or_learn_evidence(run, clf, classes, size)
        clf.use_evidence(evidence)
        schedule["evidence"] = (f"{run.folder / EVIDENCE_FILE} (learned on the support set)" if evidence
                                else "none (--evidence-shots 0: timesteps evenly spread, equal weights)")
    elif ccfg.uses_evidence:
        schedule["evidence"] = "none (zero-shot has no support set: timesteps evenly spread, equal weights)"
    if job.calibrate:
        _calibrate(clf, job, run, bb, classes, size)
    fit = fit_for(run, clf, classes, size, job.calibration_data, log=log.info) if w.is_main else None
    if w.active:  # the main process fitted it (stored in the run folder); the others read it
        w.barrier()
        fit = fit_for(run, clf, classes, size, job.calibration_data) if not w.is_main else fit
    w.barrier()
    if w.is_main:
        write_json(out / "config.json", {
            "command": "eval", "settings": plain(job), "source": source, "run_tokens": digest,
            "template": template, "classes": classes, "schedule": schedule, "resolution": size,
            "calibration": {k: v for k, v in fit.items() if k != "key"} if fit else None,
            "model": bb.describe(), "versions": versions(),
        })
        merge_predictions(out)  # fold shard files of an earlier multi-process run in; drop torn lines
    w.barrier()
    done_idx = {r["index"] for r in resume_jsonl(out / "predictions.jsonl")}
    # Each process scores its own share of the images into its own file (merged at the end).
    pred_file = out / (f"predictions-rank{w.rank}of{w.size}.jsonl" if w.active else "predictions.jsonl")
    todo = [Item(i, samples[i].path) for i in range(len(samples)) if i not in done_idx and w.owns(i)]

    def read(paths):
        loaded = load_batch(paths, size, strict=job.strict, allow_empty=True)
        return loaded.pixels, loaded.kept, loaded.skipped

    def score(pixels, items):
        x0 = encode(bb.vae, pixels).mean[:, 0] * bb.scaling_factor
        records = []
        for it, sc in zip(items, clf.score(x0)):
            s = samples[it.index]
            records.append({
                "label": s.label, "class_name": s.class_name, "pred": sc.pred, "pred_name": classes[sc.pred],
                "top5": sc.ranking[:5], "ranking": sc.ranking, "unet_calls": sc.unet_calls,
                "errors": {classes[c]: e for c, e in sc.mean_error.items()},
                **({"confidence": confidence(sc, fit)} if fit else {}),
            })
        return records

    score_into(pred_file, todo, read, score, chunk=job.images_per_batch, total=len(samples),
               done=len(samples) - len(todo), desc="eval", progress=progress)
    w.barrier()
    if w.is_main:
        merge_predictions(out)
        summarize(out, classes)
    w.barrier()
    return read_json(out / "results.json")


def _calibrate(clf: DiffusionClassifier, job: EvalJob, run: TrainedRun | None, bb, classes: list[str],
               size: int) -> None:
    if run is None:
        raise GcplError("--calibrate needs a trained run (its support images); it does not apply to --zero-shot")
    index = {c: i for i, c in enumerate(classes)}
    picked = run.support(job.calibrate, classes)
    stats, kept, _ = encode_files(bb.vae, [s.path for s in picked], size)
    labels = torch.tensor([index[picked[i].class_name] for i in kept])
    calls = clf.calibrate(stats.mean[:, 0] * bb.scaling_factor, labels)
    log.info("calibrated class scores on %d support images (%d UNet calls)", len(kept), calls)
