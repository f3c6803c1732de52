"""Run-folder bookkeeping shared by every job: what a folder holds, whether a job may resume
into it, and the trained class tokens it stores.

A job writes config.json first: {"command", "settings" (every field of its settings dataclass),
...}. Rerunning a job into a folder is resuming it: allowed only when every *identity* setting
(gcpl.settings) is the same and the data holds the same classes; the error lists each difference.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import torch

from .data.splits import Sample, Split
from .errors import GcplError
from .io import read_json, write_json
from .settings import differences, from_dict, identity
from .tokens import load_embedding_file, save_embedding_file


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("gcpl", "torch", "diffusers", "transformers", "accelerate", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def stored_settings(folder: str | Path, cls):
    """The settings dataclass a folder's config.json was written with (None: no config.json)."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return None
    return from_dict(cls, read_json(path).get("settings", {}))


def check_same_job(folder: Path, job, classes: list[str] | None, what: str) -> dict:
    """A job resumed into `folder` must have the identity settings and the classes of the job that
    started it; returns the stored config for the caller's own checks."""
    stored = read_json(folder / "config.json")
    old = from_dict(type(job), stored.get("settings", {}))
    diff = differences(identity(old), identity(job))
    if diff:
        raise GcplError(f"{folder} holds {what} with other settings ({'; '.join(diff)}); "
                        "use the same settings to resume, or another --out")
    if classes is not None and stored.get("classes") is not None and stored["classes"] != list(classes):
        raise GcplError(f"{folder} holds {what} of other classes ({len(stored['classes'])} stored, "
                        f"{len(classes)} given); resume with the same data, or another --out")
    return stored


# --- trained class tokens ----------------------------------------------------------------------------


def embedding_file(token: str) -> str:
    return f"embeddings/{token.strip('<>')}.safetensors"


def save_embeddings(out: Path, tokens: list[str], vectors: torch.Tensor) -> None:
    for tok, vec in zip(tokens, vectors):
        save_embedding_file(out / embedding_file(tok), tok, vec)


def write_tokens_index(out: Path, classes: list[str], tokens: list[str], template: str, init_word: str) -> None:
    rows = [{"class_name": n, "token": t, "file": embedding_file(t)} for n, t in zip(classes, tokens)]
    write_json(out / "tokens.json", {"template": template, "init_word": init_word, "classes": rows})


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


def support_samples(run: str | Path, classes: list[str], shots: int) -> list[Sample]:
    """The first `shots` of each class in a trained run's support set (run/split.json `train`),
    in the order of `classes` (calibration, the predict temperature, the racing evidence)."""
    support = Split.from_json(Path(run) / "split.json").train
    picked = [s for c in classes for s in [s for s in support if s.class_name == c][:shots]]
    if not picked:
        raise GcplError(f"{Path(run) / 'split.json'} lists no support image of the run's classes")
    return picked


def run_fingerprint(run: str | Path) -> str:
    """A digest of a trained run's class tokens (tokens.json and every embedding file): an
    evaluation resumed over a run trained further or anew since must not mix old and new scores."""
    run = Path(run)
    h = hashlib.sha256((run / "tokens.json").read_bytes())
    for f in sorted((run / "embeddings").glob("*.safetensors")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]
