"""The canonical split: train / test (/ val) lists of (path, label, class name) and its JSON file.

File format (`split.json`):
    {"classes": ["Acura RL 2012", ...],
     "train": [{"path": "images/00001.jpg", "label": 0, "class_name": "Acura RL 2012"}, ...],
     "test": [...], "val": [...]}            # "val" only where the dataset has one
Relative paths are resolved against the folder holding the JSON file (and kept absolute once read).

Also: `read_samples` (a class folder, see gcpl.data.folders, or a split file), `few_shot`
(per-class sampling that does not depend on the other classes) and `class_seed`
(the stable per-class seed other modules use for their own per-class RNGs).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import GcplError
from ..io import read_json, write_json
from .folders import read_class_folder
from .sample import Sample

PARTS = ("train", "val", "test")


@dataclass
class Split:
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)

    def part(self, name: str) -> list[Sample]:
        if name not in PARTS:
            raise GcplError(f"unknown split part {name!r}; use one of {', '.join(PARTS)}")
        return getattr(self, name)

    def to_json(self, path: str | Path, relative_to: str | Path | None = None) -> None:
        """Write the split; paths are made relative to `relative_to` when they lie below it."""
        base = Path(relative_to).resolve() if relative_to is not None else None

        def rel(p: str) -> str:
            if base is None:
                return p
            try:
                return str(Path(p).resolve().relative_to(base))
            except ValueError:
                return p

        obj = {"classes": list(self.classes)}
        for name in PARTS:
            samples = self.part(name)
            if samples or name != "val":
                obj[name] = [{**asdict(s), "path": rel(s.path)} for s in samples]
        write_json(path, obj)

    @classmethod
    def from_json(cls, path: str | Path) -> "Split":
        path = Path(path)
        if not path.is_file():
            raise GcplError(f"split file {path} does not exist")
        try:
            obj = read_json(path)
        except ValueError as e:
            raise GcplError(f"split file {path} is not valid JSON ({e})") from None
        except OSError as e:
            raise GcplError(f"cannot read split file {path} ({e.strerror or e})") from None
        if not isinstance(obj, dict) or "classes" not in obj:
            raise GcplError(f"split file {path} must be an object with 'classes', 'train' and 'test' lists")
        if not isinstance(obj["classes"], list) or not all(isinstance(c, str) for c in obj["classes"]):
            raise GcplError(f"split file {path}: 'classes' must be a list of class names (strings)")
        classes = [str(c) for c in obj["classes"]]
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if dup:
            raise GcplError(f"split file {path}: class name {dup[0]!r} appears more than once in 'classes'")
        parts = {}
        for name in PARTS:
            rows = obj.get(name, [])
            if not isinstance(rows, list):
                raise GcplError(f"split file {path}: '{name}' must be a list of samples")
            samples = []
            for i, row in enumerate(rows):
                try:
                    p, label, cname = row["path"], int(row["label"]), str(row["class_name"])
                    if not isinstance(p, str) or not p:
                        raise TypeError
                except (KeyError, TypeError, ValueError):
                    raise GcplError(
                        f"split file {path}: {name}[{i}] needs 'path', 'label' and 'class_name'"
                    ) from None
                if not 0 <= label < len(classes) or classes[label] != cname:
                    raise GcplError(
                        f"split file {path}: {name}[{i}] has label {label} / class {cname!r}, "
                        f"which does not match the 'classes' list"
                    )
                full = Path(p) if Path(p).is_absolute() else (path.parent / p).absolute()
                samples.append(Sample(str(full), label, cname))
            parts[name] = samples
        return cls(classes=classes, **parts)


def read_samples(path: str | Path, part: str) -> tuple[list[str], list[Sample]]:
    """(classes, samples) from a class folder (all its images, whatever `part`) or a split `.json`."""
    if part not in PARTS:
        raise GcplError(f"unknown split part {part!r}; use one of {', '.join(PARTS)}")
    p = Path(path)
    if p.suffix.lower() == ".json" and not p.is_dir():
        split = Split.from_json(p)
        samples = split.part(part)
        if not samples:
            raise GcplError(f"split file {path} has no {part!r} samples")
        return list(split.classes), list(samples)
    if p.is_dir() or not p.exists():
        return read_class_folder(p)
    raise GcplError(f"{path} is neither a data folder (<class name>/<image files>) nor a split .json file")


# ----------------------------------------------------------------------------- few-shot sampling


def class_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed from (seed, class name): SHA-256, the same on every run and machine."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GcplError(f"seed must be an integer, got {seed!r}")
    digest = hashlib.sha256(f"gcpl-class-seed\0{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def _permutation(n: int, k: int, rng: random.Random) -> list[int]:
    """First k entries of a Fisher-Yates shuffle of range(n), built on rng.random() only
    (whose output Python guarantees stable across versions, unlike random.sample)."""
    idx = list(range(n))
    for i in range(k):
        j = i + min(int(rng.random() * (n - i)), n - i - 1)
        idx[i], idx[j] = idx[j], idx[i]
    return idx[:k]


def few_shot(
    samples: list[Sample], shots: int, seed: int, allow_fewer: bool = False
) -> list[Sample]:
    """Pick `shots` samples per class.

    Each class is sampled on its own: its samples are sorted by path and a generator seeded with
    `class_seed(seed, class_name)` picks from them, so the picks for a class depend only on its own
    files, the seed and its name, not on other classes or on input order. Output: grouped by label
    (ascending), each class in picked order. A class with fewer than `shots` samples is an error,
    or with `allow_fewer` contributes all of them (shuffled the same way) with a warning.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots <= 0:
        raise GcplError(f"--shots must be a positive integer, got {shots!r}")
    if not samples:
        raise GcplError("no samples to draw few-shot examples from")
    by_class: dict[tuple[int, str], list[Sample]] = {}
    for s in samples:
        by_class.setdefault((s.label, s.class_name), []).append(s)
    out: list[Sample] = []
    for (_label, name), group in sorted(by_class.items()):
        group = sorted(group, key=lambda s: s.path)
        n = len(group)
        if n < shots:
            if not allow_fewer:
                raise GcplError(
                    f"class {name!r} has {n} images but --shots is {shots}; "
                    f"lower --shots or pass --allow-fewer"
                )
            warnings.warn(
                f"class {name!r} has {n} images, fewer than --shots {shots}; using all {n}",
                stacklevel=2,
            )
        rng = random.Random(class_seed(seed, name))
        out.extend(group[i] for i in _permutation(n, min(n, shots), rng))
    return out


def seeded_subset(samples: list, limit: int | None, seed: int) -> list:
    """The `--limit` images: the first `limit` of a permutation seeded by `seed`, so every method
    of an experiment (diffusion or CLIP) scores the same subset for the same seed."""
    if limit is None:
        return list(samples)
    import torch

    g = torch.Generator().manual_seed(seed)
    return [samples[i] for i in torch.randperm(len(samples), generator=g)[:limit].tolist()]
