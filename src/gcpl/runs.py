"""Run-folder bookkeeping shared by every job: what a folder holds, whether a job may resume
into it, and the trained class tokens it stores (`TrainedRun`).

A job writes config.json first: {"command", "settings" (every field of its settings dataclass),
...}. Rerunning a job into a folder is resuming it: allowed only when every *identity* setting
(gcpl.settings) is the same and the data holds the same classes; the error lists each difference.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
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


_NO_DIGEST = object()


def check_same_job(folder: Path, job, classes: list[str] | None, what: str, run_tokens=_NO_DIGEST,
                   identity_of=identity, upgrade=None) -> dict:
    """A job resumed into `folder` must have the identity settings and the classes of the job that
    started it, and (`run_tokens`, a TrainedRun digest or None for zero-shot) score the same class
    tokens; returns the stored config for the caller's own checks. `identity_of(settings)`: what
    must match (default: every identity setting); `upgrade(stored settings dict)`: the same settings
    under today's field names (folders written before a field was renamed)."""
    stored = read_json(folder / "config.json")
    settings = stored.get("settings", {})
    old = from_dict(type(job), upgrade(settings) if upgrade else settings)
    diff = differences(identity_of(old), identity_of(job))
    if diff:
        raise GcplError(f"{folder} holds {what} with other settings ({'; '.join(diff)}); "
                        "use the same settings to resume, or another --out")
    if classes is not None and stored.get("classes") is not None and stored["classes"] != list(classes):
        raise GcplError(f"{folder} holds {what} of other classes ({len(stored['classes'])} stored, "
                        f"{len(classes)} given); resume with the same data, or another --out")
    if run_tokens is not _NO_DIGEST and stored.get("run_tokens") != run_tokens:
        raise GcplError(f"{folder} holds {what} of other class tokens (the run was trained further or anew "
                        "since); remove it or write into another --out")
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


@dataclass
class TrainedRun:
    """A finished `gcpl train` folder: what every job that uses learned tokens needs from it.

        run = TrainedRun.open("runs/cars")          # checked without loading a model
        bb = load_backbone(run.model_for(None))     # the model it was trained with
        embeds = run.prompt_embeds(bb)              # (C, L, D), each class prompt encoded once
    """

    folder: Path
    classes: list[str]
    files: list[str]  # embedding file of each class, relative to the folder
    template: str
    init_word: str
    config: dict  # its config.json ({} for a folder without one)

    @classmethod
    def open(cls, folder: str | Path) -> "TrainedRun":
        folder = Path(folder)
        if not folder.is_dir():
            raise GcplError(f"run folder {folder} does not exist; give the --out folder of a `gcpl train` run")
        if not (folder / "tokens.json").is_file():
            raise GcplError(f"{folder} is not a finished training run (no tokens.json); run `gcpl train` first")
        meta = read_json(folder / "tokens.json")
        cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        rows = meta["classes"]
        return cls(folder, [r["class_name"] for r in rows], [r["file"] for r in rows], meta["template"],
                   meta["init_word"], cfg)

    def model_for(self, model: str | None) -> str | None:
        """`model` when given, else the model the run was trained with (its setting, else what it loaded)."""
        return model or self.config.get("settings", {}).get("model") or self.config.get("model", {}).get("model")

    def resolution_for(self, resolution: int | None, backbone) -> int:
        """`resolution` when given, else the run's training resolution, else the model's native one."""
        return resolution or self.config.get("resolution") or backbone.resolution

    @property
    def digest(self) -> str:
        """A digest of the class tokens (tokens.json and every embedding file): an evaluation resumed
        over a run trained further or anew since must not mix old and new scores."""
        h = hashlib.sha256((self.folder / "tokens.json").read_bytes())
        for f in sorted((self.folder / "embeddings").glob("*.safetensors")):
            h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()[:16]

    def vectors(self, backbone) -> torch.Tensor:
        """(C, D) learned token vectors, in the order of `classes`."""
        return torch.stack([load_embedding_file(self.folder / f, backbone.hidden_size)[1] for f in self.files])

    @torch.no_grad()
    def prompt_embeds(self, backbone, template: str | None = None) -> torch.Tensor:
        """(C, L, D) prompt embeddings of every class (the run's template unless another is given)."""
        from .tokens import PromptSlot, check_template, encode_slot_prompts

        slot = PromptSlot.from_template(backbone.tokenizer, check_template(template or self.template), self.init_word)
        return encode_slot_prompts(backbone.text_encoder, slot, self.vectors(backbone).to(backbone.device))

    def check_classes(self, wanted, what: str = "test class") -> None:
        """One line for the first class in `wanted` the run did not learn."""
        unknown = [c for c in dict.fromkeys(wanted) if c not in self.classes]
        if unknown:
            raise GcplError(f"{what} {unknown[0]!r} was not learned by run {self.folder} (it learned "
                            f"{len(self.classes)} classes: {', '.join(self.classes[:5])}"
                            f"{', ...' if len(self.classes) > 5 else ''})")

    def support(self, shots: int, classes: list[str] | None = None) -> list[Sample]:
        """The first `shots` of each class in the run's support set (split.json `train`), in the order
        of `classes` (default: the run's): the confidence calibration, the classifier evidence."""
        support = Split.from_json(self.folder / "split.json").train
        picked = [s for c in (classes or self.classes) for s in [s for s in support if s.class_name == c][:shots]]
        if not picked:
            raise GcplError(f"{self.folder / 'split.json'} lists no support image of the run's classes")
        return picked
