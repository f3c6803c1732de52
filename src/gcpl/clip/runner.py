"""`run_clip(job)`: one CLIP method on one split, shots and seed, into one run folder, with the
files of `gcpl eval`.

Run folder:
    config.json         every setting (dataclasses.asdict), the identity settings, classes, model
                        facts, versions
    split.json          the support set used (readable images only) (all methods but clip-zs)
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
`gcpl eval` picks it. A rerun on a finished folder returns its results and recomputes nothing;
an interrupted one resumes (training from its last checkpoint, testing from the last scored
image); a rerun with other identity settings or other classes is refused with a one-line error
(gcpl.runs.check_same_job on `job_identity`; settings stored under older field names are read
through `upgrade_settings`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import checkpoint
from ..data.splits import Sample, Split, few_shot, read_samples, seeded_subset
from ..errors import GcplError
from ..io import append_jsonl, atomic_write_text, read_json, read_jsonl, write_json
from ..method_registry import METHODS
from ..reports.eval import summarize
from ..runs import check_same_job, versions
from .base import Support
from .config import ClipJob, job_identity, upgrade_settings
from .methods import make_method
from .model import Clip, load_clip
from .preprocess import ImageBank, eval_batch

log = logging.getLogger(__name__)


def _test_samples(job: ClipJob, classes: list[str]) -> list[Sample]:
    _, samples = read_samples(job.test_data or job.data, "test")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.class_name for s in samples} - set(index))
    if unknown:
        raise GcplError(f"test class {unknown[0]!r} is not among the {len(classes)} training classes "
                        f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); drop it from the test data")
    samples = [Sample(s.path, index[s.class_name], s.class_name) for s in samples]
    return seeded_subset(samples, job.limit, job.test_seed)


def _val_samples(job: ClipJob, classes: list[str]) -> list[Sample] | None:
    if "validation" not in METHODS[job.method].groups or job.validation.source != "split":
        return None
    p = Path(job.data)
    if p.suffix.lower() != ".json" or p.is_dir():
        raise GcplError(f"--val-source split needs a split JSON with a val list; {job.data} is a folder "
                        "(use --val-source shots)")
    split = Split.from_json(p)
    if not split.val:
        raise GcplError(f"split file {job.data} has no val list; use --val-source shots")
    n = min(job.shots, job.validation.shots)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small val class is not an error here
        return few_shot(split.val, n, job.seed, allow_fewer=True)


def _check_folder(out: Path, job: ClipJob, classes: list[str]) -> dict | None:
    """The stored config of the CLIP run in `out` that this job resumes (None: a new folder)."""
    path = out / "config.json"
    if not path.exists():
        return None
    command = read_json(path).get("command")
    if command != "clip":
        raise GcplError(f"{out} holds another kind of run ({command!r}); use another --out")
    return check_same_job(out, job, classes, "a CLIP run", identity_of=job_identity, upgrade=upgrade_settings)


def run_clip(job: ClipJob, progress: bool = True, clip: Clip | None = None) -> dict:
    """Train (when the method learns) and evaluate one CLIP method into job.out; returns the
    metrics of gcpl's summarize (also in out/results.json)."""
    out = Path(job.out)
    classes, pool = read_samples(job.data, "train")
    stored = _check_folder(out, job, classes)
    if stored is not None and (out / "results.json").exists() and stored.get("finished"):
        return read_json(out / "results.json")
    test = _test_samples(job, classes)
    if stored is not None and stored.get("n_test") not in (None, len(test)):
        raise GcplError(f"{out} holds an evaluation of {stored['n_test']} test images, {len(test)} given; "
                        "resume with the same test data, or another --out")
    support_samples = few_shot(pool, job.shots, job.seed, job.allow_fewer) if METHODS[job.method].uses_shots else []
    val = _val_samples(job, classes)
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
        "command": "clip", "method": job.method, "settings": dataclasses.asdict(job), "identity": job_identity(job),
        "classes": classes, "model": clip.describe(), "n_support": len(support.samples) if support else 0,
        "n_test": len(test), "skipped_support": [{"path": p, "reason": r} for p, r in skipped_support],
        "versions": versions(), "finished": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    if support is not None:
        Split(classes=classes, train=support.samples).to_json(out / "split.json")

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
    pred_file = out / "predictions.jsonl"
    records = read_jsonl(pred_file)
    done = {r["index"] for r in records}
    if pred_file.exists():
        text = pred_file.read_text()
        if len(records) != len(text.splitlines()) or (text and not text.endswith("\n")):
            # a torn last line from a crash: keep the whole records only, then append after them
            atomic_write_text(pred_file, "".join(json.dumps(r) + "\n" for r in records))
    todo = [i for i in range(len(test)) if i not in done]
    bar = tqdm(total=len(test), initial=len(test) - len(todo), desc=f"eval {job.method}", unit="img",
               disable=not progress)
    for j in range(0, len(todo), job.eval_batch):
        chunk = todo[j : j + job.eval_batch]
        pixels, kept, skipped = eval_batch([test[i].path for i in chunk], method.clip.spec, job.strict)
        unread = [i for k, i in enumerate(chunk) if k not in set(kept)]
        for i, (path, reason) in zip(unread, skipped):
            append_jsonl(pred_file, {"index": i, "path": path, "skipped": reason})
        if kept:
            logits = method.logits(pixels).float().cpu()
            for k, row in zip(kept, logits):
                i = chunk[k]
                s = test[i]
                ranking = torch.argsort(row, descending=True, stable=True).tolist()
                append_jsonl(pred_file, {
                    "index": i, "path": s.path, "label": s.label, "class_name": s.class_name,
                    "pred": ranking[0], "pred_name": classes[ranking[0]], "top5": ranking[:5], "ranking": ranking,
                    "logits": {c: float(v) for c, v in zip(classes, row.tolist())},
                })
        bar.update(len(chunk))
    bar.close()
