"""`prepare_dataset`: load a dataset once, write its split file, and reuse that file afterwards."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import GcplError
from ...io import read_json, write_json
from ...settings import setting
from ..splits import PARTS, Split
from .catalog import get_dataset
from .common import check_fraction


def split_file_name(name: str, seed: int, test_fraction: float | None = None) -> str:
    """`gcpl_split_<name>_seed<seed>.json`; a non-default test fraction adds `_test<fraction>`."""
    suffix = "" if test_fraction is None else f"_test{test_fraction:g}"
    return f"gcpl_split_{name}_seed{seed}{suffix}.json"


def _describe(settings: dict) -> str:
    f = settings.get("test_fraction")
    frac = "the official split" if f is None else f"test fraction {f}"
    return f"dataset {settings.get('dataset')!r}, seed {settings.get('seed')}, {frac}"


def _same(a: dict, b: dict) -> bool:
    if a.get("dataset") != b.get("dataset") or a.get("seed") != b.get("seed"):
        return False
    fa, fb = a.get("test_fraction"), b.get("test_fraction")
    if fa is None or fb is None:
        return fa is None and fb is None
    return math.isclose(float(fa), float(fb), rel_tol=0, abs_tol=1e-9)


def _reuse(path: Path, settings: dict) -> Split:
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:
        raise GcplError(f"split file {path} is not valid JSON ({e}); delete it to re-create it") from None
    stored = obj.get("settings") if isinstance(obj, dict) else None
    if isinstance(stored, dict) and not _same(stored, settings):
        raise GcplError(
            f"split file {path} was made for {_describe(stored)}, not {_describe(settings)}; "
            f"delete it or write the split elsewhere (out=...)"
        )
    split = Split.from_json(path)
    for part in PARTS:
        for s in split.part(part):
            if not os.path.isfile(s.path):
                raise GcplError(
                    f"split file {path} lists {s.path}, which does not exist; restore the dataset "
                    f"or delete the split file to re-create it"
                )
    return split


def _write(split: Split, path: Path, settings: dict) -> None:
    split.to_json(path, relative_to=path.parent)
    obj = read_json(path)
    write_json(path, {"settings": settings, **obj})


def prepare_dataset(
    name: str,
    root: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    test_fraction: float | None = None,
) -> tuple[Path, Split]:
    """Load dataset `name` from `root`, write its split JSON and return (path, split).

    The split file goes to `out` (a file path, or an existing folder to put the default name in),
    by default `root/gcpl_split_<name>_seed<seed>.json` (`..._test<f>.json` for a test fraction
    other than the preset's). Image paths below the file's folder are stored relative to it.
    An existing split file is reused, never re-drawn, so every method sees the same images; one
    recorded with other settings (dataset, seed, test fraction) is an error. A file without
    recorded settings (written by hand or by `Split.to_json`) is reused as is.
    The returned split has absolute paths and is what `Split.from_json(path)` gives.
    """
    preset = get_dataset(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            seed = int(str(seed))
        except ValueError:
            raise GcplError(f"seed must be an integer, got {seed!r}") from None
    if test_fraction is not None:
        test_fraction = check_fraction(test_fraction, preset.name)
        if preset.test_fraction is None:
            raise GcplError(
                f"{preset.title} has an official train/test split; "
                f"a test fraction ({test_fraction}) does not apply"
            )
    effective = preset.test_fraction if test_fraction is None else test_fraction
    default_fraction = (
        test_fraction is None
        or preset.test_fraction is not None
        and math.isclose(test_fraction, preset.test_fraction, rel_tol=0, abs_tol=1e-9)
    )
    fname = split_file_name(preset.name, seed, None if default_fraction else test_fraction)
    root_path = Path(root).expanduser()
    if out is None:
        path = root_path / fname
    else:
        out_path = Path(out).expanduser()
        is_dir = out_path.is_dir() or str(out).endswith(("/", os.sep))
        path = out_path / fname if is_dir else out_path
    path = path.absolute()
    settings = {"dataset": preset.name, "seed": seed, "test_fraction": effective}

    if path.is_file():
        return path, _reuse(path, settings)
    if out is None and root_path.is_dir() and not os.access(root_path, os.W_OK):
        raise GcplError(
            f"cannot write the split file into {root_path} (not writable); give an output path "
            f"for it (out=...)"
        )
    split = preset.loader(root_path, seed=seed, test_fraction=test_fraction)
    if not split.train or not split.test:
        raise GcplError(
            f"{preset.name} under {root_path} gave {len(split.train)} training and "
            f"{len(split.test)} test images; both must be non-empty"
        )
    try:
        _write(split, path, settings)
    except OSError as e:
        raise GcplError(f"cannot write the split file {path}: {e.strerror or e}") from None
    return path, Split.from_json(path)


@dataclass
class PrepareJob:
    """`gcpl prepare`: read a dataset as distributed and write its canonical split JSON."""

    dataset: str = setting(help="cars, flowers102, cornseeds, crc5k, isic2018, lc25000, fractals or folder", flag="")
    root: str = setting(help="the dataset's folder as downloaded")
    out: str | None = setting(None, "split JSON to write (default: ROOT/gcpl_split_<dataset>_seed<seed>.json)")
    seed: int = setting(0, "seed of the stratified split (datasets without an official one)")
    test_fraction: float | None = setting(None, "held-out fraction (default: the dataset's)")


def class_counts(split: Split) -> dict[str, dict[str, int]]:
    """Images per class and part, in class order: {class name: {"train": n, ["val": n,] "test": n}}.

    "val" appears only when the split has a validation part.
    """
    parts = [p for p in PARTS if p != "val" or split.val]
    out = {c: {p: 0 for p in parts} for c in split.classes}
    for p in parts:
        for s in split.part(p):
            out[split.classes[s.label]][p] += 1
    return out
