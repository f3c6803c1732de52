"""The canonical split: train / test (/ val) lists of (path, label, class name) and its JSON file.

File format (`split.json`):
    {"classes": ["Acura RL 2012", ...],
     "train": [{"path": "images/00001.jpg", "label": 0, "class_name": "Acura RL 2012"}, ...],
     "test": [...], "val": [...]}            # "val" only where the dataset has one
Relative paths are resolved against the folder holding the JSON file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import GcplError
from ..io import read_json, write_json

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    path: str  # absolute path once loaded
    label: int  # index into Split.classes
    class_name: str


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
        if not isinstance(obj, dict) or "classes" not in obj:
            raise GcplError(f"split file {path} must be an object with 'classes', 'train' and 'test' lists")
        classes = [str(c) for c in obj["classes"]]
        parts = {}
        for name in PARTS:
            rows = obj.get(name, [])
            samples = []
            for i, row in enumerate(rows):
                try:
                    p, label, cname = row["path"], int(row["label"]), str(row["class_name"])
                except (KeyError, TypeError, ValueError):
                    raise GcplError(
                        f"split file {path}: {name}[{i}] needs 'path', 'label' and 'class_name'"
                    ) from None
                if not 0 <= label < len(classes) or classes[label] != cname:
                    raise GcplError(
                        f"split file {path}: {name}[{i}] has label {label} / class {cname!r}, "
                        f"which does not match the 'classes' list"
                    )
                full = Path(p) if Path(p).is_absolute() else path.parent / p
                samples.append(Sample(str(full), label, cname))
            parts[name] = samples
        return cls(classes=classes, **parts)
