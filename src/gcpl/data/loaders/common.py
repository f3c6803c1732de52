"""Shared pieces of the dataset loaders: finding files, reading CSV and `.mat` values, messages and
defaults from a dataset's registered facts, reading class folders, the stratified split."""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ...errors import GcplError
from ..folders import images_under, is_hidden, subfolders
from ..splits import Sample, Split
from .catalog import get_dataset
from .matfile import loadmat

# How deep below the given root a dataset's files are looked for (archives often unpack into a
# wrapper folder, Kaggle mirrors nest one more level).
SEARCH_DEPTH = 3


def require_root(root: str | Path, what: str, expected: str, hint: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise GcplError(f"{what} not found under {root} (no such folder): expected {expected}; {hint}")
    return root.absolute()


def walk_dirs(root: Path, max_depth: int = SEARCH_DEPTH) -> Iterable[Path]:
    """Folders below `root` (root first), breadth first and sorted, hidden ones skipped."""
    level = [root]
    for depth in range(max_depth + 1):
        nxt = []
        for d in level:
            yield d
            if depth < max_depth:
                try:
                    entries = sorted(os.scandir(d), key=lambda e: e.name)
                except OSError:
                    continue
                nxt.extend(
                    Path(e.path) for e in entries if not is_hidden(e.name) and e.is_dir()
                )
        level = nxt


def find_file(root: Path, name: str, max_depth: int = SEARCH_DEPTH) -> Path | None:
    """The shallowest file called `name` (case-insensitive) below `root`."""
    low = name.lower()
    for d in walk_dirs(root, max_depth):
        try:
            with os.scandir(d) as entries:
                for e in entries:
                    if e.name.lower() == low and e.is_file():
                        return Path(e.path)
        except OSError:
            continue
    return None


def find_dir(root: Path, name: str, max_depth: int = SEARCH_DEPTH) -> Path | None:
    """The shallowest folder called `name` (case-insensitive) below `root` (root itself included)."""
    low = name.lower()
    for d in walk_dirs(root, max_depth):
        if d.name.lower() == low:
            return d
    return None


class ImageIndex:
    """Resolve a file name listed in metadata to an image under one folder.

    `folder / name` is tried first; otherwise the image is looked up by its base name anywhere
    below the folder (mirrors often nest images one level deeper, e.g. `cars_train/cars_train/`,
    or sort them into class folders).
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self._by_name: dict[str, Path] | None = None

    def resolve(self, name: str) -> Path | None:
        if self.folder is None:
            return None
        direct = self.folder / name
        if direct.is_file():
            return direct
        if self._by_name is None:
            self._by_name = {}
            for p in map(Path, images_under(self.folder)):
                self._by_name.setdefault(p.name, p)
        return self._by_name.get(Path(name).name)


# -- CSV -------------------------------------------------------------------------------------------


def read_csv_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise GcplError(f"cannot read {path}: {e}") from None


def read_csv_dicts(path: Path, required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a CSV with a header; the header must name every column in `required`."""
    rows = read_csv_rows(path)
    if not rows:
        raise GcplError(f"{path} is empty; expected a header with columns {', '.join(required)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise GcplError(
            f"{path} has header {','.join(header)!r}; expected columns {', '.join(required)} "
            f"(missing {', '.join(missing)})"
        )
    return header, [dict(zip(header, (c.strip() for c in r))) for r in rows[1:]]


# -- MATLAB and CSV values -------------------------------------------------------------------------


def as_int(value, where: str) -> int:
    """A MATLAB 1x1 numeric (a one-element list) or a CSV cell as an int."""
    v = value
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, str):
        v = v.strip()
        try:
            v = float(v)
        except ValueError:
            raise GcplError(f"{where}: {value!r} is not a number") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise GcplError(f"{where}: {value!r} is not an integer")
    return int(v)


def as_str(value, where: str) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str):
        raise GcplError(f"{where}: expected text, got {value!r}")
    return value.strip()


def mat_var(path: Path, name: str):
    data = loadmat(path)
    if name not in data:
        have = ", ".join(sorted(data)) or "none"
        raise GcplError(f"{path} has no variable {name!r} (variables: {have})")
    return data[name]


# -- a registered dataset's facts in messages and defaults ------------------------------------------


def not_found(key: str, root: Path, detail: str = "") -> GcplError:
    d = get_dataset(key)
    detail = f" ({detail})" if detail else ""
    return GcplError(f"{d.title} not found under {root}{detail}: expected {d.layout}; {d.download}")


def dataset_root(key: str, root: str | Path) -> Path:
    d = get_dataset(key)
    return require_root(root, d.title, d.layout, d.download)


def official_only(key: str, test_fraction: float | None, what: str = "") -> None:
    if test_fraction is not None:
        raise GcplError(
            f"{what or get_dataset(key).title} has an official train/test split; a test fraction "
            f"({test_fraction}) does not apply"
        )


def resolve_fraction(key: str, test_fraction: float | None) -> float:
    """`test_fraction`, or the dataset's default when it is None, checked."""
    d = get_dataset(key)
    return check_fraction(d.test_fraction if test_fraction is None else test_fraction, d.title)


def official_root(key: str, root: str | Path, test_fraction: float | None) -> Path:
    """The folder of a dataset with an official split (which refuses a test fraction)."""
    official_only(key, test_fraction)
    return dataset_root(key, root)


def root_and_fraction(key: str, root: str | Path, test_fraction: float | None) -> tuple[Path, float]:
    """The folder of a dataset whose split is drawn, and its test fraction (the default for None)."""
    path = dataset_root(key, root)
    return path, resolve_fraction(key, test_fraction)


# -- class folders ---------------------------------------------------------------------------------


def samples_from_folders(folders: Sequence[Path], class_names: Sequence[str], labels=None) -> list[Sample]:
    out = []
    for i, (folder, cname) in enumerate(zip(folders, class_names)):
        label = i if labels is None else labels[i]
        out.extend(Sample(str(p), label, cname) for p in images_under(folder))
    return out


def _find_class_parent(root: Path, wanted: Sequence[str], norm: Callable[[str], str], max_depth: int = 3):
    """The shallowest folder whose sub-folders, normalized with `norm`, include every `wanted` code.

    Returns (parent, {code: folder}), or (None, best partial {code: folder}) for the message.
    """
    best: dict[str, Path] = {}
    for d in walk_dirs(root, max_depth):
        found: dict[str, Path] = {}
        for s in subfolders(d):
            code = norm(s.name)
            if code in wanted and code not in found:
                found[code] = s
        if len(found) == len(wanted):
            return d, found
        if len(found) > len(best):
            best = found
    return None, best


def _missing_detail(wanted: Sequence[str], best: dict[str, Path]) -> str:
    if not best:
        return ""
    parent = next(iter(best.values())).parent
    missing = [w for w in wanted if w not in best]
    return f"{parent} lacks {', '.join(missing)}"


def split_class_folders(
    key: str, folders: Sequence[Path], classes: Sequence[str], where: Path, seed: int, test_fraction: float
) -> Split:
    """The images of one folder per class (in label order) under `where`, every class non-empty,
    split by `stratified_split` (paths relative to `where`)."""
    samples = samples_from_folders(folders, classes)
    counts = [0] * len(classes)
    for s in samples:
        counts[s.label] += 1
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise GcplError(f"{get_dataset(key).title} under {where}: no images for class(es) {', '.join(empty)}")
    return stratified_split(classes, samples, test_fraction, seed, root=where)


def split_coded_folders(
    key: str, root: Path, classes: Mapping[str, str], norm: Callable[[str], str], seed: int, test_fraction: float,
    max_depth: int = 3,
) -> Split:
    """`split_class_folders` of the shallowest folder below `root` that holds one sub-folder per code
    of `classes` ({code: class name}), a sub-folder's code being `norm(its name)`."""
    codes = list(classes)
    parent, found = _find_class_parent(root, codes, norm, max_depth)
    if parent is None:
        raise not_found(key, root, _missing_detail(codes, found))
    return split_class_folders(key, [found[c] for c in codes], list(classes.values()), parent, seed, test_fraction)


# -- the stratified split --------------------------------------------------------------------------


def check_fraction(test_fraction: float, what: str) -> float:
    try:
        f = float(test_fraction)
    except (TypeError, ValueError):
        raise GcplError(f"test fraction for {what} must be a number, got {test_fraction!r}") from None
    if not 0.0 < f < 1.0:
        raise GcplError(f"test fraction for {what} must be between 0 and 1 (exclusive), got {f}")
    return f


def stratified_split(
    classes: Sequence[str],
    samples: Sequence[Sample],
    test_fraction: float,
    seed: int,
    groups: Sequence[str] | None = None,
    root: Path | None = None,
) -> Split:
    """Split `samples` per class into train / test, deterministically for a given seed.

    Within each class (in label order) the samples -- or the groups, when `groups` gives a group
    key per sample (images of one physical object, which must not straddle train and test) -- are
    sorted by path (relative to `root`, so the draw does not depend on where the dataset lives),
    shuffled with `random.Random(seed)`, and the first round(n * test_fraction) go to test. Every
    class with at least two samples (groups) keeps at least one in train and one in test; a class
    with a single one keeps it in train. A group belongs to the class of its first sample.
    """

    def key(s: Sample) -> str:
        if root is not None:
            try:
                return Path(s.path).relative_to(root).as_posix()
            except ValueError:
                pass
        return s.path

    group_label: dict[str, int] = {}
    by_class: dict[int, dict[str, list[Sample]]] = defaultdict(dict)
    for i, s in enumerate(samples):
        g = groups[i] if groups is not None else f"\0{i}"
        label = group_label.setdefault(g, s.label)
        by_class[label].setdefault(g, []).append(s)
    rng = random.Random(seed)
    train: list[Sample] = []
    test: list[Sample] = []
    for label in range(len(classes)):
        members = by_class.get(label)
        if not members:
            continue
        units = [sorted(m, key=key) for m in members.values()]
        units.sort(key=lambda m: key(m[0]))
        rng.shuffle(units)
        n = len(units)
        n_test = int(n * test_fraction + 0.5)
        n_test = min(max(n_test, 1), n - 1) if n >= 2 else 0
        for u in units[:n_test]:
            test.extend(u)
        for u in units[n_test:]:
            train.extend(u)
    train.sort(key=lambda s: (s.label, key(s)))
    test.sort(key=lambda s: (s.label, key(s)))
    return Split(classes=list(classes), train=train, test=test)
