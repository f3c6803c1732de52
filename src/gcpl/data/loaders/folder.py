"""Plain image folders (`folder`) and FractalDB-60 (`fractals`), both one sub-folder per class:
a seeded stratified split, or the given train/ and test/ (and val/) folders."""

from __future__ import annotations

from pathlib import Path

from ..folders import check_unique, class_folders, class_name, subfolders
from ..splits import Split
from .catalog import DatasetInfo, register_dataset
from .common import (
    dataset_root,
    not_found,
    official_only,
    resolve_fraction,
    samples_from_folders,
    stratified_split,
)

_PART_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}


def _folder_layout(root: Path):
    """('parts', {part: folder}) for train/ + test/ (+ val/), or ('flat', folder); None if neither."""
    d = root
    for _ in range(4):
        subs = subfolders(d)
        parts = {}
        for s in subs:
            part = _PART_NAMES.get(s.name.lower())
            if part and part not in parts and class_folders(s):
                parts[part] = s
        if "train" in parts and "test" in parts:
            return "parts", parts
        if len(class_folders(d)) >= 2:
            return "flat", d
        if len(subs) == 1:
            d = subs[0]
            continue
        return None
    return None


def _load_folder(key: str, root: str | Path, seed: int, test_fraction: float | None) -> Split:
    root = dataset_root(key, root)
    layout = _folder_layout(root)
    if layout is None:
        raise not_found(key, root)
    kind, where = layout
    if kind == "parts":
        official_only(key, test_fraction, f"{where['train'].parent} (train/ and test/ folders)")
        folder_names = sorted({f.name for part in where.values() for f in class_folders(part)})
        classes = [class_name(n) for n in folder_names]
        check_unique(classes, folder_names)
        label = {n: i for i, n in enumerate(folder_names)}
        out = {}
        for part, folder in where.items():
            cf = class_folders(folder)
            out[part] = samples_from_folders(
                cf, [classes[label[f.name]] for f in cf], [label[f.name] for f in cf]
            )
        if len(classes) < 2:
            raise not_found(key, root, "only one class folder")
        return Split(classes=classes, **out)
    frac = resolve_fraction(key, test_fraction)
    folders = class_folders(where)
    classes = [class_name(f.name) for f in folders]
    check_unique(classes, folders)
    samples = samples_from_folders(folders, classes)
    return stratified_split(classes, samples, frac, seed, root=where)


@register_dataset(
    DatasetInfo(
        name="fractals", title="FractalDB-60", aliases=("fractal", "fractaldb60", "fractaldb-60"),
        template="{} fractal.", init_word="fractal", test_fraction=0.3,
        layout="""one sub-folder of images per fractal class (at least two), or train/ and test/ folders that each hold
            the class sub-folders""",
        download="""generate FractalDB-60 (see https://hirokatsukataoka16.github.io/Pretraining-without-Natural-Images/)
            or use any folder with one sub-folder per fractal class""",
        description="FractalDB-60: 60 fractal categories, one folder each, seeded stratified split (test 0.3).",
    )
)
def load_fractals(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    return _load_folder("fractals", root, seed, test_fraction)


@register_dataset(
    DatasetInfo(
        name="folder", title="An image folder", aliases=(),
        template="A photo of {}.", init_word="object", test_fraction=0.3,
        layout="""one sub-folder of images per class (at least two), or train/ and test/ (and optionally val/) folders
            that each hold the class sub-folders""",
        download="put the images in one sub-folder per class",
        description="""Any image folder with one sub-folder per class (class names: the folder names, a numeric prefix
            like 01_ dropped, underscores as spaces), seeded stratified split (test 0.3) unless it has train/ and test/
            folders.""",
    )
)
def load_folder(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    return _load_folder("folder", root, seed, test_fraction)
