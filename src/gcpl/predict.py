"""`gcpl predict`: classify unlabelled images with a trained run's class tokens (or, zero-shot,
with plain class names) and say how sure the classifier is.

Inputs: image files (taken as given) and folders (searched recursively, gcpl.data.folders.
images_under), as absolute paths, sorted and deduplicated. Output folder (`--out`):

    config.json        settings, the run's token digest (gcpl.runs.run_fingerprint), classes,
                       template, the softmax temperature with how it was obtained, the classifier,
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

Confidence: the diffusion classifier gives each class c its mean denoising error e_c (lower is
better; gcpl.classify.ImageScore.mean_error) and a ranking. With racing, a class dropped early
has its mean over fewer, other (t, noise) pairs than the winner, so raw means of different
classes are not always comparable: the errors are first made non-decreasing along the
classifier's ranking (running maximum, `ranked_errors`), so a class ranked lower never gets a
higher probability. Then p_c = softmax(-e_c / T) over every class the classifier evaluated (all
of them: racing and fixed stages score every class on at least its first pairs; a class without
an error would get 0). `confidence` is p of the predicted class; `topk` lists the first k of the
ranking with their raw mean error and p.

The temperature T (in units of the mean error):
- `--temperature T`: used as given;
- a trained run (default): fitted once, on the run's support set (split.json's `train` list,
  the first `--fit-shots` images of each class: the shots the tokens were trained on), by
  minimising the negative log-likelihood of the true class (`fit_temperature`: the NLL is convex
  in 1/T, its minimum is found by bisection on the derivative). It is stored in the output
  folder's config.json ("temperature": value, how, support images, NLL at the fit and at T = 1)
  and reused when the job resumes. The support images are the tokens' training images, so the
  fit is in-sample: expect it to be somewhat over-confident on new images;
- zero-shot (no support set): each image's errors are divided by their standard deviation over
  the classes, then softmax at temperature 1 (T = that spread, per image).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .backbone import compile_setting, device_setting, dtype_setting, load_backbone, resolution_setting
from .classify import ClassifyConfig, DiffusionClassifier
from .data.folders import IMAGE_EXTENSIONS, images_under
from .data.images import load_batch
from .errors import GcplError, Interrupted
from .evidence import load_or_learn_evidence
from .interrupt import deferred_interrupt
from .io import append_jsonl, atomic_write_text, read_json, read_jsonl, write_json
from .latents import encode
from .runs import check_same_job, load_run, run_fingerprint, support_samples, versions
from .settings import plain, setting
from .tokens import PromptSlot, check_template, encode_prompts, encode_slot_prompts

__all__ = ["PredictJob", "fit_temperature", "find_images", "predict", "probabilities", "ranked_errors"]

ZERO_SHOT_TEMPLATE = "A photo of {}."


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
    temperature: float | None = setting(None, "softmax temperature over mean errors (default: fitted on the run's "
                                        "support set; zero-shot: each image's error spread)")
    fit_shots: int = setting(2, "support images per class the temperature is fitted on", metavar="N")
    images_per_batch: int = setting(8, "images scored together (their UNet calls share batches)", identity=False)
    compile: bool = compile_setting()
    classify: ClassifyConfig = setting(default_factory=ClassifyConfig, help="classifier settings")

    def __post_init__(self):
        if isinstance(self.paths, (str, os.PathLike)):
            self.paths = (os.fspath(self.paths),)
        self.paths = tuple(os.fspath(p) for p in self.paths)
        if self.classes is not None:
            self.classes = tuple(self.classes)
        if self.top_k < 1 or self.fit_shots < 1 or self.images_per_batch < 1:
            raise GcplError("--top-k, --fit-shots and --images-per-batch must be at least 1")
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


def run_classes(run: str | Path) -> list[str]:
    """The classes a trained run learned (its tokens.json), checked without loading a model."""
    run = Path(run)
    if not run.is_dir():
        raise GcplError(f"run folder {run} does not exist; give the --out folder of a `gcpl train` run")
    if not (run / "tokens.json").is_file():
        raise GcplError(f"{run} is not a finished training run (no tokens.json); run `gcpl train` first")
    return [r["class_name"] for r in read_json(run / "tokens.json")["classes"]]


def run_model(run: str | Path | None, model: str | None) -> str | None:
    """`model` when given, else the model the run was trained with (its setting, else what it loaded)."""
    cfg_file = Path(run) / "config.json" if run else None
    cfg = read_json(cfg_file) if cfg_file and cfg_file.exists() else {}
    return model or cfg.get("settings", {}).get("model") or cfg.get("model", {}).get("model")


# --- confidence --------------------------------------------------------------------------------


def ranked_errors(mean_error: dict[int, float], ranking: list[int]) -> list[tuple[int, float]]:
    """(class, error) along the ranking (best first), errors made non-decreasing (running max):
    a class ranked below another never looks better than it. Classes without an error are left out."""
    out, top = [], -math.inf
    for c in ranking:
        if c in mean_error:
            top = max(top, float(mean_error[c]))
            out.append((c, top))
    return out


def _error_row(mean_error: dict[int, float], ranking: list[int], n_classes: int) -> torch.Tensor:
    row = torch.full((n_classes,), math.inf, dtype=torch.float64)
    for c, e in ranked_errors(mean_error, ranking):
        row[c] = e
    return row


def probabilities(errors: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Softmax of -errors / T over the last axis (inf errors: probability 0). T None: each row's
    standard deviation over its finite errors (1 when they are all equal)."""
    errors = torch.as_tensor(errors, dtype=torch.float64)
    finite = errors.isfinite()
    if temperature is None:
        x = torch.where(finite, errors, 0.0)
        n = finite.sum(-1, keepdim=True).clamp(min=1)
        mean = x.sum(-1, keepdim=True) / n
        var = (torch.where(finite, errors - mean, 0.0) ** 2).sum(-1, keepdim=True) / n
        temperature = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
    logits = torch.where(finite, -errors / temperature, -math.inf)
    return torch.softmax(logits, -1)


def support_nll(errors: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under `probabilities(errors, temperature)`."""
    logits = torch.where(errors.isfinite(), -errors / temperature, -math.inf)
    return float(-(torch.log_softmax(logits, -1).gather(1, labels[:, None])).mean())


def fit_temperature(errors, labels, lo: float = 1e-6, hi: float = 1e4) -> tuple[float, dict]:
    """The temperature T minimising `support_nll` of (M, C) errors (inf: class not scored) with
    true classes `labels` (M,). The NLL is convex in b = 1/T (its derivative, the mean of e_true -
    E_p[e], increases with b), so b is found by bisection on the derivative, in log space over
    [lo, hi] / s, s = the mean gap of the errors to each row's best. A perfectly separated support
    set has no minimum: the bound hi / s is used (and said). Returns (T, how)."""
    E = torch.as_tensor(errors, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    ok = E.gather(1, y[:, None])[:, 0].isfinite()
    E, y = E[ok], y[ok]
    finite = E.isfinite()
    if len(E) == 0:
        raise GcplError("no support image has an error for its own class; cannot fit a temperature")
    gaps = torch.where(finite, E - E.where(finite, math.inf).min(1, keepdim=True).values, 0.0)
    s = float(gaps.sum() / finite.sum())
    if s <= 0:
        return 1.0, {"how": "support errors are all equal: T = 1", "images": len(E)}
    Ez = torch.where(finite, E, 0.0)

    def slope(b: float) -> float:
        p = probabilities(E, 1 / b)
        return float((Ez.gather(1, y[:, None])[:, 0] - (p * Ez).sum(1)).mean())

    a, b = math.log(lo / s), math.log(hi / s)
    if slope(math.exp(b)) <= 0:
        beta, how = math.exp(b), f"the support set is separated perfectly: bound 1/T = {hi:g} / mean error gap"
    elif slope(math.exp(a)) >= 0:
        beta, how = math.exp(a), f"the support errors carry no signal: bound 1/T = {lo:g} / mean error gap"
    else:
        for _ in range(60):
            mid = (a + b) / 2
            a, b = (mid, b) if slope(math.exp(mid)) < 0 else (a, mid)
        beta, how = math.exp((a + b) / 2), "minimum of the support NLL (bisection on its derivative in 1/T)"
    T = 1 / beta
    return T, {"how": how, "images": len(E), "nll": support_nll(E, y, T), "nll_at_1": support_nll(E, y, 1.0)}


def _fit_on_support(job: PredictJob, clf: DiffusionClassifier, bb, classes: list[str], size: int) -> dict:
    picked = support_samples(job.run, classes, job.fit_shots)
    loaded = load_batch([s.path for s in picked], size)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[picked[k].class_name] for k in loaded.kept])
    x0 = encode(bb.vae, loaded.pixels).mean[:, 0] * bb.scaling_factor
    scores = clf.score(x0)
    E = torch.stack([_error_row(s.mean_error, s.ranking, len(classes)) for s in scores])
    T, how = fit_temperature(E, labels)
    return {"value": T, **how, "fitted_on": f"support set: the first {job.fit_shots} image(s) per class of "
            "the run's split.json train list", "unet_calls": sum(s.unet_calls for s in scores)}


def _temperature(job: PredictJob, clf, bb, classes, size) -> dict:
    if job.temperature is not None:
        return {"value": job.temperature, "how": "given (--temperature)"}
    if job.zero_shot:
        return {"value": None, "how": "zero-shot: per image, the standard deviation of its errors over the classes"}
    return _fit_on_support(job, clf, bb, classes, size)


# --- the job -----------------------------------------------------------------------------------


def _check_source(job: PredictJob) -> list[str]:
    if job.run and job.zero_shot:
        raise GcplError("give either a trained run (--run-dir) or --zero-shot, not both")
    if job.run:
        if job.classes:
            raise GcplError("--classes is for --zero-shot; a run's classes are the ones it learned")
        return run_classes(job.run)
    if not job.zero_shot:
        raise GcplError("give a trained run folder (--run-dir) or --zero-shot with --classes")
    if not job.classes or len(set(job.classes)) < 2:
        raise GcplError("--zero-shot needs at least two distinct class names: --classes a,b,c")
    check_template(job.template or ZERO_SHOT_TEMPLATE)
    return list(job.classes)


@torch.no_grad()
def _class_embeddings(job: PredictJob, bb, classes: list[str]) -> tuple[torch.Tensor, str]:
    """((C, L, D) class prompt embeddings, template): the run's learned tokens, or zero-shot names."""
    if job.zero_shot:
        template = check_template(job.template or ZERO_SHOT_TEMPLATE)
        return encode_prompts(bb.tokenizer, bb.text_encoder, [template.format(c) for c in classes]), template
    _, vectors, template, init_word = load_run(job.run, bb)
    slot = PromptSlot.from_template(bb.tokenizer, template, init_word)
    return encode_slot_prompts(bb.text_encoder, slot, vectors.to(bb.device)), template


def predict(job: PredictJob, progress: bool = True, backbone=None) -> dict:
    """Classify the images of `job.paths` into `job.out` (see the module docstring for the files
    and how the confidence is computed). Nothing is written before the settings, the run and the
    inputs are checked. Ctrl-C finishes the chunk of images in hand, then raises Interrupted.
    Returns {"out", "csv", "jsonl", "images" (lines in the JSONL), "predicted" (this call),
    "skipped" (unreadable, in the JSONL), "temperature" (config.json's record)}."""
    out = Path(job.out)
    classes = _check_source(job)
    images = find_images(job.paths)
    digest = run_fingerprint(job.run) if job.run else None
    stored = None
    if (out / "config.json").exists():
        command = read_json(out / "config.json").get("command")
        if command != "predict":
            raise GcplError(f"{out} holds the output of `gcpl {command}`, not predictions; choose another --out")
        stored = check_same_job(out, job, classes, "predictions")
        if stored.get("run_tokens") != digest:
            raise GcplError(f"{out} holds predictions of other class tokens (the run was trained further or anew "
                            "since); remove it or predict into another --out")
    run_cfg = read_json(Path(job.run) / "config.json") if job.run and (Path(job.run) / "config.json").exists() else {}
    bb = backbone or load_backbone(run_model(job.run, job.model), job.device, job.dtype, job.compile)
    embeds, template = _class_embeddings(job, bb, classes)
    size = job.resolution or run_cfg.get("resolution") or bb.resolution
    clf = DiffusionClassifier(bb, embeds, job.classify, (bb.latent_channels, size // bb.vae_scale,
                                                         size // bb.vae_scale))
    if job.run and job.classify.racing:
        clf.use_evidence(load_or_learn_evidence(job.run, clf, classes, size))
    if stored is None:
        temperature = _temperature(job, clf, bb, classes, size)
        write_json(out / "config.json", {
            "command": "predict", "settings": plain(job),
            "source": {"run": str(job.run)} if job.run else {"zero_shot": True}, "run_tokens": digest,
            "classes": classes, "template": template, "resolution": size, "temperature": temperature,
            "confidence": "softmax of -(mean error) / temperature over the classes, errors made non-decreasing "
                          "along the classifier's ranking (gcpl.predict)",
            "classifier": job.classify.describe(len(classes)), "model": bb.describe(), "versions": versions(),
        })
    else:
        temperature = stored["temperature"]
    jsonl = out / "predictions.jsonl"
    records = read_jsonl(jsonl)
    atomic_write_text(jsonl, "".join(_line(r) for r in records))  # drop a torn last line before appending
    done = {r["path"] for r in records}
    todo = [p for p in images if p not in done]
    position = {p: i for i, p in enumerate(sorted(done | set(images)))}
    k = min(job.top_k, len(classes))
    bar = tqdm(total=len(images), initial=len(images) - len(todo), desc="predict", unit="img", disable=not progress)
    predicted = 0
    try:
        with deferred_interrupt() as stop:
            for j in range(0, len(todo), job.images_per_batch):
                chunk = todo[j : j + job.images_per_batch]
                loaded = load_batch(chunk, size, allow_empty=True)
                for path, reason in loaded.skipped:
                    append_jsonl(jsonl, {"index": position[path], "path": path, "skipped": reason})
                if loaded.kept:
                    x0 = encode(bb.vae, loaded.pixels).mean[:, 0] * bb.scaling_factor
                    for i, score in zip(loaded.kept, clf.score(x0)):
                        append_jsonl(jsonl, _record(position[chunk[i]], chunk[i], score, classes,
                                                    temperature["value"], k))
                predicted += len(chunk)
                bar.update(len(chunk))
                if stop.requested and j + job.images_per_batch < len(todo):
                    raise Interrupted(f"{len(done) + predicted} of {len(position)} images done, kept in {jsonl}")
    finally:
        bar.close()
        records = _finish(out, k)
    return {"out": str(out), "csv": str(out / "predictions.csv"), "jsonl": str(jsonl), "images": len(records),
            "predicted": predicted, "skipped": sum("skipped" in r for r in records), "temperature": temperature}


def _line(record: dict) -> str:
    return json.dumps(record) + "\n"


def _record(index: int, path: str, score, classes: list[str], temperature: float | None, k: int) -> dict:
    row = _error_row(score.mean_error, score.ranking, len(classes))
    p = probabilities(row, temperature)
    ranked = [c for c, _ in ranked_errors(score.mean_error, score.ranking)]
    return {"index": index, "path": path, "pred": classes[score.pred], "confidence": float(p[score.pred]),
            "topk": [[classes[c], float(score.mean_error[c]), float(p[c])] for c in ranked[:k]],
            "unet_calls": score.unet_calls}


def _finish(out: Path, k: int) -> list[dict]:
    """predictions.jsonl sorted by path (index = row) and predictions.csv rebuilt from it."""
    records = sorted(read_jsonl(out / "predictions.jsonl"), key=lambda r: r["path"])
    for i, r in enumerate(records):
        r["index"] = i
    atomic_write_text(out / "predictions.jsonl", "".join(_line(r) for r in records))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "path", "pred", "confidence", *[f"top{i + 1}" for i in range(k)], "skipped"])
    for r in records:
        top = [t[0] for t in r.get("topk", [])]
        conf = f"{r['confidence']:.6f}" if "confidence" in r else ""
        w.writerow([r["index"], r["path"], r.get("pred", ""), conf, *(top + [""] * (k - len(top)))[:k],
                    r.get("skipped", "")])
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    return records
