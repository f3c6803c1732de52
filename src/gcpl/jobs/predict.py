"""`gcpl predict`: classify unlabelled images with a trained run's class tokens (or, zero-shot,
with plain class names) and say how sure the classifier is.

Inputs: image files (taken as given) and folders (searched recursively, gcpl.data.folders.
images_under), as absolute paths, sorted and deduplicated. Output folder (`--out`):

    config.json        settings, the run's token digest (gcpl.runs.TrainedRun.digest), classes,
                       template, the confidence model with how it was obtained, the classifier,
                       the model, versions
    predictions.jsonl  one line per image, appended as it goes:
                       {"index", "path", "pred", "confidence", "topk": [[class, mean error,
                       probability], ...] best first, "unet_calls"}; an unreadable image:
                       {"index", "path", "skipped": reason}
    predictions.csv    rebuilt from the JSONL when the job ends or is interrupted: index, path,
                       pred, confidence, top1..topK (class names), skipped (the reason, if any)

Rerunning into the folder resumes: images already in the JSONL are not predicted again (images
of other inputs may be added; `index` is the row in the sorted list of every image predicted
into the folder). Other identity settings, or a run whose tokens changed since, are refused.

Confidence: the probability that the prediction is right (gcpl.confidence):
- fitted on labelled images the tokens were not trained on (gcpl.calibration): `--calibration-data`,
  else the run's held-out shots (`gcpl train --holdout K`): a logistic function of the relative margin
  between the two best classes; the other classes share the rest in proportion to their relative
  scores. Stored in the run folder (calibration.json) and reused;
- `--temperature T`: softmax of the negative mean errors / T (made non-decreasing along the
  ranking), T as given, no fit;
- without either: each image's errors are divided by their spread over the classes: uncalibrated
  relative scores, flagged `"calibrated": false` in every record, "no" in the CSV's calibrated
  column, and said in one line. (Fitting on the support set would learn that the tokens classify
  their own training images right: confidences near 1 on every image.)
`topk` lists the first k of the ranking with their raw mean error and probability.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import compile_setting, device_setting, dtype_setting, load_backbone, resolution_setting
from ..calibration import fit_for
from ..classify import ClassifyConfig, DiffusionClassifier
from ..confidence import calibrated_probabilities, error_row, probabilities, ranked_errors, relative_margin
from ..data.folders import IMAGE_EXTENSIONS, images_under
from ..data.images import load_batch
from ..errors import GcplError
from ..evidence import load_or_learn_evidence
from ..io import atomic_write_text, read_json, read_jsonl, resume_jsonl, write_json, write_jsonl
from ..latents import encode
from ..lock import locked
from ..runs import TrainedRun, check_same_job, versions
from ..scoring import Item, score_into
from ..settings import plain, setting
from ..tokens import check_template, encode_prompts
from .evaluate import ZERO_SHOT_TEMPLATE

__all__ = ["PredictJob", "find_images", "predict"]


@dataclass
class PredictJob:
    paths: tuple[str, ...] = setting(help="image files and folders (folders are searched recursively)",
                                     flag="", identity=False, metavar="PATHS")
    out: str = setting(help="folder for config.json, predictions.jsonl and predictions.csv; rerunning into it "
                       "resumes", identity=False)
    run: str | None = setting(None, "trained run folder (from gcpl train)", flag="--run-dir", identity=False)
    zero_shot: bool = setting(False, "plain class names (--classes) in the template instead of learned tokens")
    classes: tuple[str, ...] | None = setting(None, "zero-shot: the class names, comma-separated")
    template: str | None = setting(None, f"zero-shot template with one {{}} (default: '{ZERO_SHOT_TEMPLATE}')")
    model: str | None = setting(None, "hub id, local diffusers folder or 'tiny' (default: the run's model)")
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting("the run's, else the model's native size")
    top_k: int = setting(5, "classes listed per image, with their mean error and probability")
    temperature: float | None = setting(None, "softmax temperature over mean errors instead of the confidence fitted "
                                        "on held-out images (--calibration-data or the run's --holdout shots; "
                                        "without them the scores are uncalibrated relative scores)")
    calibration_data: str | None = setting(None, "labelled images the tokens were not trained on (class folders or "
                                           "a split JSON's val, else test, list) to fit the confidence on",
                                           metavar="DATA")
    images_per_batch: int = setting(8, "images scored together (their UNet calls share batches)", identity=False)
    compile: bool = compile_setting()
    classify: ClassifyConfig = setting(default_factory=ClassifyConfig, help="classifier settings")

    def __post_init__(self):
        if isinstance(self.paths, (str, os.PathLike)):
            self.paths = (os.fspath(self.paths),)
        self.paths = tuple(os.fspath(p) for p in self.paths)
        if self.classes is not None:
            self.classes = tuple(self.classes)
        if self.top_k < 1 or self.images_per_batch < 1:
            raise GcplError("--top-k and --images-per-batch must be at least 1")
        if self.temperature is not None and not self.temperature > 0:
            raise GcplError(f"--temperature must be positive, got {self.temperature}")


# --- inputs ------------------------------------------------------------------------------------


def find_images(paths) -> list[str]:
    """Image files under the given folders (recursively) and the given files as they are, as
    absolute paths (links not resolved), sorted and deduplicated. A missing path or nothing found
    is a GcplError."""
    if not paths:
        raise GcplError("give the image files or folders to classify")
    found = set()
    for p in paths:
        if os.path.isdir(p):
            found.update(os.path.abspath(f) for f in images_under(p))
        elif os.path.exists(p):
            found.add(os.path.abspath(p))
        else:
            raise GcplError(f"{p} does not exist")
    if not found:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise GcplError(f"no image files ({exts}) found in {', '.join(paths)}")
    return sorted(found)


UNCALIBRATED = ("uncalibrated relative scores: each image's errors divided by their spread over the classes "
                "(no held-out images to fit the confidence on: give --calibration-data, or train with --holdout K)")


def _temperature(job: PredictJob, run: TrainedRun | None, clf, bb, classes, size) -> dict:
    """The confidence record of config.json: a fit on held-out images, a given temperature, or none
    (`value`: the softmax temperature, None for relative scores and for the fit)."""
    if job.temperature is not None:
        return {"value": job.temperature, "how": "given (--temperature)", "calibrated": True}
    fit = fit_for(run, clf, classes, size, job.calibration_data, log=_say, progress=True)
    if fit is None:
        warnings.warn(f"confidences are {UNCALIBRATED}", UncalibratedNote, stacklevel=3)
        return {"value": None, "how": UNCALIBRATED, "calibrated": False}
    return {"value": None, "slope": fit["slope"], "intercept": fit["intercept"], "how": fit["how"],
            "fitted_on": fit["fitted_on"], "n_images": fit["n_images"], "unet_calls": fit["unet_calls"],
            "calibrated": True}


class UncalibratedNote(UserWarning):
    """Predictions without held-out images to calibrate on (shown as one `note:` line)."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the job -----------------------------------------------------------------------------------


def _check_source(job: PredictJob) -> tuple[TrainedRun | None, list[str]]:
    """(the trained run or None for zero-shot, the classes), checked without loading a model."""
    if job.run and job.zero_shot:
        raise GcplError("give either a trained run (--run-dir) or --zero-shot, not both")
    if job.run:
        if job.classes:
            raise GcplError("--classes is for --zero-shot; a run's classes are the ones it learned")
        run = TrainedRun.open(job.run)
        return run, run.classes
    if not job.zero_shot:
        raise GcplError("give a trained run folder (--run-dir) or --zero-shot with --classes")
    if not job.classes or len(set(job.classes)) < 2:
        raise GcplError("--zero-shot needs at least two distinct class names: --classes a,b,c")
    check_template(job.template or ZERO_SHOT_TEMPLATE)
    return None, list(job.classes)


@torch.no_grad()
def _class_embeddings(job: PredictJob, run: TrainedRun | None, bb, classes: list[str]) -> tuple[torch.Tensor, str]:
    """((C, L, D) class prompt embeddings, template): the run's learned tokens, or zero-shot names."""
    if run is None:
        template = check_template(job.template or ZERO_SHOT_TEMPLATE)
        return encode_prompts(bb.tokenizer, bb.text_encoder, [template.format(c) for c in classes]), template
    return run.prompt_embeds(bb), run.template


@locked("predict")
def predict(job: PredictJob, progress: bool = True, backbone=None) -> dict:
    """Classify the images of `job.paths` into `job.out` (see the module docstring for the files
    and how the confidence is computed). Nothing is written before the settings, the run and the
    inputs are checked. Ctrl-C finishes the chunk of images in hand, then raises Interrupted.
    Returns {"out", "csv", "jsonl", "images" (lines in the JSONL), "predicted" (this call),
    "skipped" (unreadable, in the JSONL), "temperature" (config.json's record)}.

        from gcpl import PredictJob, predict

        r = predict(PredictJob(paths=("photos/",), out="runs/mine/predict", run="runs/mine"))
        print(r["csv"])                      # index, path, pred, confidence, top1..topK, skipped
    """
    out = Path(job.out)
    run, classes = _check_source(job)
    images = find_images(job.paths)
    digest = run.digest if run is not None else None
    stored = None
    if (out / "config.json").exists():
        command = read_json(out / "config.json").get("command")
        if command != "predict":
            raise GcplError(f"{out} holds the output of `gcpl {command}`, not predictions; choose another --out")
        stored = check_same_job(out, job, classes, "predictions", run_tokens=digest)
    bb = backbone or load_backbone(run.model_for(job.model) if run else job.model, job.device, job.dtype,
                                   job.compile)
    embeds, template = _class_embeddings(job, run, bb, classes)
    size = run.resolution_for(job.resolution, bb) if run is not None else job.resolution or bb.resolution
    ccfg = job.classify.resolved(trained=run is not None)  # `auto`: ranked stages for learned tokens
    clf = DiffusionClassifier(bb, embeds, ccfg, (bb.latent_channels, size // bb.vae_scale,
                                                         size // bb.vae_scale))
    if run is not None and ccfg.uses_evidence:
        clf.use_evidence(load_or_learn_evidence(run, clf, classes, size))
    if stored is None:
        temperature = _temperature(job, run, clf, bb, classes, size)
        write_json(out / "config.json", {
            "command": "predict", "settings": plain(job),
            "source": {"run": str(job.run)} if run is not None else {"zero_shot": True}, "run_tokens": digest,
            "classes": classes, "template": template, "resolution": size, "temperature": temperature,
            "confidence": ("sigmoid(slope * relative margin of the two best classes + intercept) for the "
                           "prediction, the rest shared by relative scores (gcpl.confidence)" if "slope" in temperature
                           else "softmax of -(mean error) / temperature over the classes, errors made "
                           "non-decreasing along the classifier's ranking (gcpl.confidence)"),
            "classifier": ccfg.describe(len(classes)), "model": bb.describe(), "versions": versions(),
        })
    else:
        temperature = stored["temperature"]
    jsonl = out / "predictions.jsonl"
    done = {r["path"] for r in resume_jsonl(jsonl)}
    todo = [p for p in images if p not in done]
    position = {p: i for i, p in enumerate(sorted(done | set(images)))}
    k = min(job.top_k, len(classes))

    def read(paths):
        loaded = load_batch(paths, size, allow_empty=True)
        return loaded.pixels, loaded.kept, loaded.skipped

    def score(pixels, items):
        x0 = encode(bb.vae, pixels).mean[:, 0] * bb.scaling_factor
        return [_record(sc, classes, temperature, k) for sc in clf.score(x0)]

    predicted = 0
    try:
        predicted = score_into(jsonl, [Item(position[p], p) for p in todo], read, score,
                               chunk=job.images_per_batch, total=len(images), done=len(images) - len(todo),
                               desc="predict", progress=progress)
    finally:
        records = _finish(out, k)
    return {"out": str(out), "csv": str(out / "predictions.csv"), "jsonl": str(jsonl), "images": len(records),
            "predicted": predicted, "skipped": sum("skipped" in r for r in records), "temperature": temperature}


def _record(score, classes: list[str], temperature: dict, k: int) -> dict:
    row = error_row(score.mean_error, score.ranking, len(classes))
    if "slope" in temperature:  # fitted on held-out images
        p = calibrated_probabilities(row, score.pred, relative_margin(score.mean_error, score.ranking),
                                     temperature["slope"], temperature["intercept"])
    else:
        p = probabilities(row, temperature["value"])
    ranked = [c for c, _ in ranked_errors(score.mean_error, score.ranking)]
    return {"pred": classes[score.pred], "confidence": float(p[score.pred]),
            "calibrated": bool(temperature.get("calibrated", True)),
            "topk": [[classes[c], float(score.mean_error[c]), float(p[c])] for c in ranked[:k]],
            "unet_calls": score.unet_calls}


def _finish(out: Path, k: int) -> list[dict]:
    """predictions.jsonl sorted by path (index = row) and predictions.csv rebuilt from it."""
    records = sorted(read_jsonl(out / "predictions.jsonl"), key=lambda r: r["path"])
    for i, r in enumerate(records):
        r["index"] = i
    write_jsonl(out / "predictions.jsonl", records)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "path", "pred", "confidence", "calibrated", *[f"top{i + 1}" for i in range(k)], "skipped"])
    for r in records:
        top = [t[0] for t in r.get("topk", [])]
        conf = f"{r['confidence']:.6f}" if "confidence" in r else ""
        calibrated = {True: "yes", False: "no"}.get(r.get("calibrated", True) if "confidence" in r else None, "")
        w.writerow([r["index"], r["path"], r.get("pred", ""), conf, calibrated, *(top + [""] * (k - len(top)))[:k],
                    r.get("skipped", "")])
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    return records
