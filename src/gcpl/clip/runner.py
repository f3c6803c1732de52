"""`run_clip(job)`: one CLIP method on one split, shots and seed, into one run folder, with the
files of `gcpl eval`.

Run folder:
    config.json         every setting (dataclasses.asdict) with the official values filled in for
                        the dataset and shots, where each value of the method came from
                        ("official": {dest: {value, source}}), what the method validated on, the
                        identity settings, classes, model facts, versions
    split.json          the support set used (readable images only) (all methods but clip-zs)
    val.json            the method's validation images (linear probe, Tip-Adapter(-F))
    data_split.json     the train/test split drawn from a class folder given as data
    checkpoint/         epoch-NNNN.safetensors + latest.json while a trained method trains
                        (gcpl.checkpoint's rotating snapshots, gcpl.clip.loop)
    learned.safetensors what the method learned or built (context vectors, cache, linear head ...),
                        its facts (chosen C / alpha / beta, schedule, loss log) in the header
    predictions.jsonl   one line per test image (index, path, label, class_name, pred, pred_name,
                        top5, ranking, logits per class), appended as it goes
    results.json, results.md (and confusion.png with matplotlib): gcpl's summarize

The support set is drawn with gcpl.data.splits.few_shot(pool, shots, seed, allow_fewer), exactly
as GCPL's training draws it, so every method sees the same images for a seed; the `limit` test
subset is the first `limit` of torch.randperm seeded by eval_seed (default: seed), exactly as
`gcpl eval` picks it. The validation images come from gcpl.clip.sets; a support or validation
image that is also a test image is refused with a one-line error. A rerun on a finished folder
returns its results and recomputes nothing; an interrupted one resumes (training from its last
checkpoint, testing from the last scored image); a rerun with other identity settings (after the
official values are filled in) or other classes is refused with a one-line error
(gcpl.runs.check_same_job on `job_identity`; settings of older folders are read through
`upgrade_settings`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from .. import checkpoint
from ..data.splits import Sample, Split, few_shot
from ..errors import GcplError
from ..io import read_json, resume_jsonl, write_json
from ..method_registry import METHODS
from ..reports.eval import summarize
from ..runs import check_same_job, versions
from ..scoring import Item, score_into
from ..settings import flat
from .base import Support
from .config import ClipJob, job_identity, upgrade_settings
from .methods import make_method
from .model import Clip, load_clip
from .official import resolve, resolved
from .preprocess import ImageBank, eval_batch
from .sets import check_apart, run_data, validation_set

log = logging.getLogger(__name__)


def _check_folder(out: Path, job: ClipJob, classes: list[str]) -> dict | None:
    """The stored config of the CLIP run in `out` that this (resolved) job resumes (None: a new folder)."""
    path = out / "config.json"
    if not path.exists():
        return None
    stored = read_json(path)
    if stored.get("command") != "clip":
        raise GcplError(f"{out} holds another kind of run ({stored.get('command')!r}); use another --out")
    return check_same_job(out, job, classes, "a CLIP run", identity_of=lambda j: job_identity(resolved(j)),
                          upgrade=lambda s: upgrade_settings(s, stored.get("classes")))


def official_record(job: ClipJob, sources: dict[str, str]) -> dict:
    """{dest: {"value", "source"}} of the settings of the job's method that the table covers."""
    values = flat(job.clip)
    return {dest: {"value": values[dest], "source": src} for dest, src in sources.items()}


def run_clip(job: ClipJob, progress: bool = True, clip: Clip | None = None) -> dict:
    """Train (when the method learns) and evaluate one CLIP method into job.out; returns the
    metrics of gcpl's summarize (also in out/results.json)."""
    job, sources = resolve(job)
    out = Path(job.out)
    data = run_data(job)
    classes = data.classes
    stored = _check_folder(out, job, classes)
    if stored is not None and (out / "results.json").exists() and stored.get("finished"):
        return read_json(out / "results.json")
    test = data.test
    if stored is not None and stored.get("n_test") not in (None, len(test)):
        raise GcplError(f"{out} holds an evaluation of {stored['n_test']} test images, {len(test)} given; "
                        "resume with the same test data, or another --out")
    support_samples = few_shot(data.pool, job.shots, job.seed, job.allow_fewer) if METHODS[job.method].uses_shots else []
    val, validated = validation_set(job, data, support_samples)
    check_apart(support_samples, val, test)
    clip = clip or load_clip(job.model, job.device, job.dtype)
    method = make_method(job, clip, classes)

    support = None
    skipped_support = []
    if method.needs_support:
        bank = ImageBank([s.path for s in support_samples], clip.spec, job.strict)
        skipped_support = bank.skipped
        kept = [support_samples[i] for i in bank.kept]
        lost = sorted(set(range(len(classes))) - {s.label for s in kept})
        if lost:
            raise GcplError(f"class {classes[lost[0]]!r} has no readable support image left; fix or replace its images")
        support = Support(clip, kept, len(classes), bank, job.eval_batch, job.strict, val)

    config = {
        "command": "clip", "method": job.method, "dataset": job.dataset, "settings": dataclasses.asdict(job),
        "official": official_record(job, sources), "validation": validated, "identity": job_identity(job),
        "classes": classes, "model": clip.describe(), "n_support": len(support.samples) if support else 0,
        "n_test": len(test), "skipped_support": [{"path": p, "reason": r} for p, r in skipped_support],
        "versions": versions(), "finished": False,
    }
    if method.classes != classes:
        config["prompt_classes"] = method.classes
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    if data.split is not None:
        data.split.to_json(out / "data_split.json")
    if support is not None:
        Split(classes=classes, train=support.samples).to_json(out / "split.json")
    if val:
        Split(classes=classes, val=val).to_json(out / "val.json")

    learned = out / "learned.safetensors"
    if learned.exists():
        tensors, meta = checkpoint.load(learned)
    else:
        tensors, meta = method.fit(support, out, progress)
        checkpoint.save(learned, tensors, meta)
        tensors, meta = checkpoint.load(learned)  # test exactly what was saved (and what a resume would load)
    method.load(tensors, meta)

    _evaluate(method, job, classes, test, out, progress)
    metrics = summarize(out, classes)
    config["finished"] = True
    write_json(out / "config.json", config)
    return metrics


def _evaluate(method, job: ClipJob, classes: list[str], test: list[Sample], out: Path, progress: bool) -> None:
    """The test images into predictions.jsonl through gcpl.scoring (resumable, Ctrl-C safe)."""
    pred_file = out / "predictions.jsonl"
    done = {r["index"] for r in resume_jsonl(pred_file)}
    todo = [Item(i, test[i].path) for i in range(len(test)) if i not in done]

    def read(paths):
        return eval_batch(paths, method.clip.spec, job.strict)

    def score(pixels, items):
        records = []
        for it, row in zip(items, method.logits(pixels).float().cpu()):
            s = test[it.index]
            ranking = torch.argsort(row, descending=True, stable=True).tolist()
            records.append({"label": s.label, "class_name": s.class_name, "pred": ranking[0],
                            "pred_name": classes[ranking[0]], "top5": ranking[:5], "ranking": ranking,
                            "logits": {c: float(v) for c, v in zip(classes, row.tolist())}})
        return records

    score_into(pred_file, todo, read, score, chunk=job.eval_batch, total=len(test), done=len(test) - len(todo),
               desc=f"eval {job.method}", progress=progress)
