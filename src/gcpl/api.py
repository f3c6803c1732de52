"""The two jobs behind `gcpl train` and `gcpl eval`: data -> latents -> training / scoring -> files.

Run folder of `train`:
    config.json                    every setting, model facts, classes, versions
    split.json                     the few-shot support set actually used
    tokens.json                    template, init word, and per class its token and embedding file
    embeddings/<token>.safetensors diffusers textual-inversion files ({token: tensor[1, D]})
    train_log.jsonl, checkpoint/   loss curve; resumable state
Folder of `eval`:
    config.json, predictions.jsonl (one line per image, appended as it goes: resumable),
    results.json, results.md, confusion.png (with matplotlib)
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .backbone import load_backbone
from .classify import ClassifyConfig, DiffusionClassifier
from .data.images import load_batch
from .data.splits import Sample, Split, few_shot, read_samples
from .distributed import default_device_name, world
from .errors import GcplError
from .io import append_jsonl, atomic_write_text, read_json, read_jsonl, write_json
from .latents import encode, encode_files
from .metrics import compute_metrics
from .tokens import (PromptSlot, check_template, encode_prompts, encode_slot_prompts, load_embedding_file,
                     save_embedding_file, token_names)
from .train import TrainConfig, Trainer, run_training

log = logging.getLogger(__name__)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("gcpl", "torch", "diffusers", "transformers", "accelerate", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# where the data and the trained run live is not a setting: folders may be moved or reached by
# another path between a run and its resume; what they hold is checked instead (the class list)
_PATH_SETTINGS = ("data", "run")


def _check_same_job(path: Path, settings: dict, classes: list[str], what: str) -> dict:
    """A resumed job must have the settings and the classes of the job that started the folder;
    returns the stored config for the caller's own checks."""
    stored = read_json(path)
    old = stored.get("settings", {})
    new = json.loads(json.dumps(settings))  # tuples -> lists, as stored
    diff = [k for k in new if k not in _PATH_SETTINGS and old.get(k) != new[k]]
    if diff:
        raise GcplError(
            f"{path.parent} holds {what} with other settings ({', '.join(diff)}); "
            "use the same settings to resume, or another --out"
        )
    if stored.get("classes") is not None and stored["classes"] != list(classes):
        raise GcplError(f"{path.parent} holds {what} of other classes ({len(stored['classes'])} stored, "
                        f"{len(classes)} given); resume with the same data, or another --out")
    return stored


# --- train -------------------------------------------------------------------------------------


@dataclass
class TrainJob:
    data: str  # class-per-folder directory or split JSON (its "train" list)
    out: str  # run folder
    shots: int = 16  # images per class drawn from the data (seeded by train.seed)
    model: str | None = None  # hub id, local diffusers folder, or "tiny"; None: SD-1.4 (bundled when offline)
    device: str | None = None
    dtype: str | None = None
    resolution: int | None = None  # image size in pixels; None: the model's native size
    allow_fewer: bool = False  # classes with fewer than `shots` images use all they have
    strict: bool = False  # unreadable images are errors instead of warnings
    resume: bool = False
    compile: bool = False  # torch.compile the UNet (GPU speed; same results up to float rounding)
    train: TrainConfig = field(default_factory=TrainConfig)

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("out"), d.pop("resume"), d.pop("device"), d.pop("compile")
        # steps may grow on resume (train longer); checkpoint cadence is not a result-changing setting
        d["train"].pop("checkpoint_every"), d["train"].pop("log_every"), d["train"].pop("steps")
        return d


def train(job: TrainJob, progress: bool = True, backbone=None) -> Path:
    out = Path(job.out)
    cfg = job.train
    check_template(cfg.template)
    settings = job.settings()
    if (out / "config.json").exists() and not job.resume:
        raise GcplError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    classes, pool = read_samples(job.data, "train")  # check the data before loading a model
    if (out / "config.json").exists():
        _check_same_job(out / "config.json", settings, classes, "a training run")
    support = few_shot(pool, job.shots, cfg.seed, job.allow_fewer)
    w = world()
    bb = backbone or load_backbone(job.model, job.device or default_device_name(w), job.dtype, job.compile)
    size = job.resolution or bb.resolution
    stats, kept_idx, skipped = encode_files(bb.vae, [s.path for s in support], size, flip=cfg.flip,
                                            strict=job.strict)
    kept = [support[i] for i in kept_idx]
    lost = sorted(set(range(len(classes))) - {s.label for s in kept})
    if lost:
        raise GcplError(f"class {classes[lost[0]]!r} has no readable training image left; fix or replace its images")
    labels = torch.tensor([s.label for s in kept])
    tokens = token_names(classes, bb.tokenizer)
    config = {
        "command": "train",
        "settings": settings,
        "model": bb.describe(),
        "resolution": size,
        "classes": classes,
        "tokens": tokens,
        "skipped_images": [{"path": p, "reason": r} for p, r in skipped],
        "versions": versions(),
    }
    if w.is_main:
        write_json(out / "config.json", config)
        Split(classes=classes, train=kept).to_json(out / "split.json")

    if w.active and cfg.method == "gcpl":
        # Classes are independent in GCPL: each process trains its own share of them.
        mine = [c for c in range(len(classes)) if w.owns(c)]
        rows = torch.nonzero(torch.isin(labels, torch.tensor(mine))).flatten()
        remap = {c: i for i, c in enumerate(mine)}
        sub_labels = torch.tensor([remap[int(l)] for l in labels[rows]])
        trainer = Trainer(bb, [classes[c] for c in mine], stats.subset(rows), sub_labels, cfg)
        state = run_training(trainer, out, resume=job.resume, progress=progress and w.is_main,
                             tag=f"-rank{w.rank}of{w.size}")
        save_embeddings(out, [tokens[c] for c in mine], state.vectors)
    else:
        trainer = Trainer(bb, classes, stats, labels, cfg, world=w)
        tag = f"-rank{w.rank}of{w.size}" if w.active else ""
        state = run_training(trainer, out, resume=job.resume, progress=progress and w.is_main, tag=tag)
        if w.is_main:
            save_embeddings(out, tokens, state.vectors)
    w.barrier()
    if w.is_main:
        write_tokens_index(out, classes, tokens, cfg)
    w.barrier()
    return out


def _embedding_file(token: str) -> str:
    return f"embeddings/{token.strip('<>')}.safetensors"


def save_embeddings(out: Path, tokens: list[str], vectors: torch.Tensor) -> None:
    for tok, vec in zip(tokens, vectors):
        save_embedding_file(out / _embedding_file(tok), tok, vec)


def write_tokens_index(out: Path, classes: list[str], tokens: list[str], cfg: TrainConfig) -> None:
    rows = [{"class_name": n, "token": t, "file": _embedding_file(t)} for n, t in zip(classes, tokens)]
    write_json(out / "tokens.json", {"template": cfg.template, "init_word": cfg.init_word, "classes": rows})


def load_run(run: str | Path, backbone) -> tuple[list[str], torch.Tensor, str, str]:
    """A trained run folder -> (classes, (C, D) vectors, template, init word)."""
    run = Path(run)
    if not (run / "tokens.json").exists():
        raise GcplError(f"{run} is not a finished training run (no tokens.json); run `gcpl train` first")
    meta = read_json(run / "tokens.json")
    vecs, classes = [], []
    for row in meta["classes"]:
        _, v = load_embedding_file(run / row["file"], backbone.hidden_size)
        vecs.append(v)
        classes.append(row["class_name"])
    return classes, torch.stack(vecs), meta["template"], meta["init_word"]


# --- eval --------------------------------------------------------------------------------------


@dataclass
class EvalJob:
    data: str  # class-per-folder directory or split JSON (its `part` list)
    out: str
    run: str | None = None  # trained run folder (GCPL / CoMPLe tokens)
    zero_shot: bool = False  # plain class names in the template instead of learned tokens
    template: str | None = None  # zero-shot template; default: the run's, else "A photo of {}."
    model: str | None = None  # default: the run's model
    device: str | None = None
    dtype: str | None = None
    resolution: int | None = None  # default: the run's, else the model's native size
    part: str = "test"  # which list of a split JSON
    limit: int | None = None  # evaluate only the first N images (after a seeded shuffle)
    images_per_batch: int = 8  # images scored together (their UNet calls share batches)
    strict: bool = False
    compile: bool = False  # torch.compile the UNet
    calibrate: int = 0  # support images per class (from the run's split.json) to calibrate class scores
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)

    def settings(self) -> dict:
        d = asdict(self)
        for k in ("out", "device", "images_per_batch", "compile"):
            d.pop(k)
        d["classify"].pop("batch")
        return d


def run_fingerprint(run: str | Path) -> str:
    """A digest of a trained run's class tokens (tokens.json and every embedding file): an
    evaluation resumed over a run trained further or anew since must not mix old and new scores."""
    import hashlib

    run = Path(run)
    h = hashlib.sha256((run / "tokens.json").read_bytes())
    for f in sorted((run / "embeddings").glob("*.safetensors")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


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
    bb = backbone or load_backbone(model, job.device or default_device_name(w), job.dtype, job.compile)
    data_classes, samples = read_samples(job.data, job.part)
    classes, embeds, template, source = _class_embeddings(job, bb, data_classes)
    if not job.zero_shot:
        unknown = sorted({s.class_name for s in samples} - set(classes))
        if unknown:
            raise GcplError(
                f"test class {unknown[0]!r} was not learned by run {job.run} (it learned {len(classes)} classes: "
                f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); train on it or drop it from the test data"
            )
    index = {c: i for i, c in enumerate(classes)}
    samples = [Sample(s.path, index[s.class_name], s.class_name) for s in samples]
    if job.limit is not None:
        g = torch.Generator().manual_seed(job.classify.seed)
        samples = [samples[i] for i in torch.randperm(len(samples), generator=g)[: job.limit].tolist()]

    size = job.resolution or run_cfg.get("resolution") or bb.resolution
    settings = job.settings()
    tokens_digest = run_fingerprint(job.run) if job.run else None
    if (out / "config.json").exists():
        stored = _check_same_job(out / "config.json", settings, classes, "an evaluation")
        if stored.get("run_tokens", tokens_digest) != tokens_digest:
            raise GcplError(f"{out} holds an evaluation of other class tokens (the run was trained further or "
                            "anew since); remove it or evaluate into another --out")
    n_samples, keep = job.classify.schedule(len(classes))
    w.barrier()
    if w.is_main:
        write_json(out / "config.json", {
            "command": "eval", "settings": settings, "source": source, "run_tokens": tokens_digest,
            "template": template, "classes": classes,
            "schedule": {"n_samples": list(n_samples), "keep": list(keep)}, "resolution": size,
            "model": bb.describe(), "versions": versions(),
        })
        _merge_predictions(out)  # fold shard files of an earlier multi-process run in; drop torn lines
    w.barrier()
    done_idx = {r["index"] for r in read_jsonl(out / "predictions.jsonl")}
    # Each process scores its own share of the images into its own file (merged at the end).
    pred_file = out / (f"predictions-rank{w.rank}of{w.size}.jsonl" if w.active else "predictions.jsonl")
    todo = [i for i in range(len(samples)) if i not in done_idx and w.owns(i)]
    latent_shape = (bb.latent_channels, size // bb.vae_scale, size // bb.vae_scale)
    clf = DiffusionClassifier(bb, embeds, job.classify, latent_shape)
    if job.calibrate:
        _calibrate(clf, job, bb, classes, size)
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc="eval", unit="img", disable=not progress)
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
    bar.close()
    w.barrier()
    if w.is_main:
        _merge_predictions(out)
        summarize(out, classes)
    w.barrier()
    return read_json(out / "results.json")


def _calibrate(clf: DiffusionClassifier, job: EvalJob, bb, classes: list[str], size: int) -> None:
    if not job.run:
        raise GcplError("--calibrate needs a trained run (its support images); it does not apply to --zero-shot")
    support = Split.from_json(Path(job.run) / "split.json").train
    index = {c: i for i, c in enumerate(classes)}
    picked = [s for c in classes for s in [s for s in support if s.class_name == c][: job.calibrate]]
    stats, kept, _ = encode_files(bb.vae, [s.path for s in picked], size)
    labels = torch.tensor([index[picked[i].class_name] for i in kept])
    calls = clf.calibrate(stats.mean[:, 0] * bb.scaling_factor, labels)
    log.info("calibrated class scores on %d support images (%d UNet calls)", len(kept), calls)


def _merge_predictions(out: Path) -> None:
    """predictions.jsonl := its records plus every shard file's, by image index; shard files removed."""
    files = [out / "predictions.jsonl", *sorted(out.glob("predictions-rank*.jsonl"))]
    records = {}
    for f in files:
        for r in read_jsonl(f):
            records.setdefault(r["index"], r)
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(records[i]) + "\n" for i in sorted(records)))
    for f in files[1:]:
        f.unlink()


def summarize(out: Path, classes: list[str]) -> dict:
    records = read_jsonl(out / "predictions.jsonl")
    scored = [r for r in records if "pred" in r]
    skipped = [r for r in records if "skipped" in r]
    m = compute_metrics([r["label"] for r in scored], [r["pred"] for r in scored],
                        [r["ranking"] for r in scored], len(classes))
    m["classes"] = classes
    m["skipped_images"] = len(skipped)
    m["unet_calls_per_image"] = (sum(r["unet_calls"] for r in scored) / len(scored)) if scored else 0
    write_json(out / "results.json", m)
    atomic_write_text(out / "results.md", results_markdown(m))
    try:
        from .report import confusion_png

        confusion_png(m["confusion_matrix"], classes, out / "confusion.png")
    except ImportError:
        pass
    return m


def results_markdown(m: dict) -> str:
    if not m.get("n_images"):
        return "# Results\n\nNo image was scored.\n"
    lines = [
        "# Results", "",
        f"- images: {m['n_images']} (skipped unreadable: {m['skipped_images']})",
        f"- top-1: {100 * m['top1']:.2f}%", f"- top-5: {100 * m['top5']:.2f}%",
        f"- mean per-class accuracy: {100 * m['mean_per_class_accuracy']:.2f}%",
        f"- macro-F1: {100 * m['macro_f1']:.2f}%",
        f"- UNet calls per image: {m['unet_calls_per_image']:.1f}", "",
        "| class | accuracy |", "|---|---|",
    ]
    lines += [f"| {c} | {100 * a:.1f}% |" for c, a in zip(m["classes"], m["per_class_accuracy"])]
    return "\n".join(lines) + "\n"
