"""The one reader of image folders and its one naming rule, used by `gcpl train DIR`, `gcpl eval
DIR`, `gcpl predict`, `gcpl prepare folder` (and the dataset loaders) and so by the zero-shot prompts.

- Image files: names ending in IMAGE_EXTENSIONS (any case); hidden entries (".x") and macOS's
  `__MACOSX` folders are skipped; folders are searched recursively, following links; sorted.
- A class folder's class name: `class_name(folder name)`: a numeric prefix such as "01_" dropped,
  underscores as spaces ("001.sea_shell" -> "sea shell", "01_TUMOR" -> "TUMOR").
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..errors import GcplError
from .sample import Sample

#: File-name suffixes treated as images (lower case, with the dot, compare to `Path.suffix.lower()`).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def is_hidden(name: str) -> bool:
    """Hidden entries and the `__MACOSX` resource-fork folders that macOS zips carry."""
    return name.startswith(".") or name == "__MACOSX"


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of IMAGE_EXTENSIONS (case-insensitive) and is not hidden."""
    name = os.path.basename(os.fspath(path))
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def images_under(folder: str | os.PathLike) -> list[str]:
    """Image files below `folder` (recursively, following links, hidden entries skipped), sorted by
    their path relative to `folder`; returned as `folder`-joined paths."""
    folder = os.fspath(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        for f in filenames:
            full = os.path.join(dirpath, f)
            if is_image_file(f) and os.path.isfile(full):
                found.append(os.path.relpath(full, folder))
    return [os.path.join(folder, r) for r in sorted(found)]


def has_images(folder: str | os.PathLike) -> bool:
    for _dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        if any(is_image_file(f) for f in filenames):
            return True
    return False


_PREFIX = re.compile(r"^\d+[\s._-]+")


def class_name(folder_name: str) -> str:
    """`01_TUMOR` -> `TUMOR`, `001.sea_shell` -> `sea shell` (a bare number stays)."""
    name = _PREFIX.sub("", folder_name) or folder_name
    name = re.sub(r"\s+", " ", name.replace("_", " ")).strip()
    return name or folder_name


def check_unique(names: Sequence[str], folders: Sequence) -> None:
    seen: dict[str, object] = {}
    for n, f in zip(names, folders):
        if n in seen:
            raise GcplError(f"class folders {seen[n]} and {f} both give the class name {n!r}; rename one of them")
        seen[n] = f


def subfolders(folder: str | os.PathLike) -> list[Path]:
    """Sub-folders of `folder` that are not hidden, sorted by name ([] when it cannot be read)."""
    try:
        return sorted((Path(e.path) for e in os.scandir(folder) if e.is_dir() and not is_hidden(e.name)),
                      key=lambda p: p.name)
    except OSError:
        return []


def class_folders(folder: str | os.PathLike) -> list[Path]:
    """Sub-folders of `folder` that hold at least one image, sorted by name."""
    return [s for s in subfolders(folder) if has_images(s)]


def read_class_folder(root: str | Path):
    """`root/<class folder>/<image files>` -> (classes, samples), classes named by `class_name` in
    folder-name order, labels in that order, images as `images_under` finds them. Files directly in
    `root` are ignored (with a warning when they are images); a class folder without images is an
    error. Sample paths are absolute (links not resolved)."""
    root_s = os.path.abspath(os.fspath(root))
    if not os.path.exists(root_s):
        raise GcplError(f"data folder {root} does not exist")
    if not os.path.isdir(root_s):
        raise GcplError(f"data folder {root} is not a folder")
    try:
        entries = sorted(os.listdir(root_s))
    except OSError as e:
        raise GcplError(f"cannot read data folder {root} ({e.strerror or e})") from None
    folders = [e for e in entries if not is_hidden(e) and os.path.isdir(os.path.join(root_s, e))]
    if not folders:
        raise GcplError(f"{root} has no class subfolders; expected {root}/<class name>/<image files>")
    loose = [e for e in entries if is_image_file(e) and os.path.isfile(os.path.join(root_s, e))]
    if loose:
        warnings.warn(f"ignoring {len(loose)} image file(s) directly in {root} (e.g. {loose[0]}); "
                      "images must be inside class subfolders", stacklevel=2)
    classes = [class_name(f) for f in folders]
    check_unique(classes, [os.path.join(os.fspath(root), f) for f in folders])
    samples = []
    for label, (folder, name) in enumerate(zip(folders, classes)):
        files = images_under(os.path.join(root_s, folder))
        if not files:
            exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            raise GcplError(f"class folder {os.path.join(os.fspath(root), folder)} has no image files ({exts})")
        samples.extend(Sample(f, label, name) for f in files)
    return classes, samples

