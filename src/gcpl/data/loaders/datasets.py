"""One loader per dataset: read it as its owners distribute it and return a canonical `Split`.

Every loader has the signature ``load_x(root, seed=0, test_fraction=None) -> Split``.
Datasets with an official split (StanfordCars, Flowers102, a folder with train/ and test/) refuse
a test fraction; the others draw a seeded stratified split (`common.stratified_split`), with
``test_fraction=None`` meaning the dataset's default (`DEFAULT_TEST_FRACTION`).
Sample paths are absolute.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import GcplError
from ..folders import check_unique, class_folders, class_name, images_under, is_hidden
from ..splits import Sample, Split
from . import names as N
from .common import (
    ImageIndex,
    check_fraction,
    find_dir,
    find_file,
    read_csv_dicts,
    read_csv_rows,
    require_root,
    stratified_split,
    walk_dirs,
)
from .matfile import loadmat


def _not_found(key: str, root: Path, detail: str = "") -> GcplError:
    d = DATASETS[key]
    detail = f" ({detail})" if detail else ""
    return GcplError(f"{d.title} not found under {root}{detail}: expected {d.layout}; {d.download}")


def _root(key: str, root: str | Path) -> Path:
    d = DATASETS[key]
    return require_root(root, d.title, d.layout, d.download)


def _official_only(key: str, test_fraction: float | None, what: str = "") -> None:
    if test_fraction is not None:
        raise GcplError(
            f"{what or DATASETS[key].title} has an official train/test split; a test fraction "
            f"({test_fraction}) does not apply"
        )


def _fraction(key: str, test_fraction: float | None) -> float:
    f = DATASETS[key].test_fraction if test_fraction is None else test_fraction
    return check_fraction(f, DATASETS[key].title)


def _int(value, where: str) -> int:
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


def _str(value, where: str) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str):
        raise GcplError(f"{where}: expected text, got {value!r}")
    return value.strip()


def _mat_var(path: Path, name: str):
    data = loadmat(path)
    if name not in data:
        have = ", ".join(sorted(data)) or "none"
        raise GcplError(f"{path} has no variable {name!r} (variables: {have})")
    return data[name]


def _samples_from_folders(folders: Sequence[Path], class_names: Sequence[str], labels=None) -> list[Sample]:
    out = []
    for i, (folder, cname) in enumerate(zip(folders, class_names)):
        label = i if labels is None else labels[i]
        out.extend(Sample(str(p), label, cname) for p in images_under(folder))
    return out


def _check_classes_nonempty(key: str, classes: Sequence[str], samples: Sequence[Sample], where: Path):
    counts = [0] * len(classes)
    for s in samples:
        counts[s.label] += 1
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise GcplError(f"{DATASETS[key].title} under {where}: no images for class(es) {', '.join(empty)}")


# -- StanfordCars ----------------------------------------------------------------------------------


def _cars_class_names(path: Path, var: str = "class_names") -> list[str]:
    raw = _mat_var(path, var)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise GcplError(f"{path}: {var!r} is not a list of class names")
    return [_str(v, f"{path}: {var}[{i}]") for i, v in enumerate(raw)]


def _cars_struct(path: Path, fields: Sequence[str]) -> list[dict]:
    rows = _mat_var(path, "annotations")
    if not isinstance(rows, list) or (rows and not isinstance(rows[0], dict)):
        raise GcplError(f"{path}: 'annotations' is not a struct array")
    if rows:
        missing = [f for f in fields if f not in rows[0]]
        if missing:
            have = ", ".join(rows[0])
            raise GcplError(
                f"{path}: annotations have fields {have}; expected {', '.join(fields)} "
                f"(missing {', '.join(missing)})"
            )
    return rows


def _cars_sample(meta: Path, i: int, fname: str, label1: int, classes, index: ImageIndex) -> Sample:
    if not 1 <= label1 <= len(classes):
        raise GcplError(
            f"{meta}: entry {i + 1} ({fname}) has class {label1}, outside 1..{len(classes)}"
        )
    p = index.resolve(fname)
    if p is None:
        raise GcplError(f"{meta} lists image {fname}, which is not under {index.folder}")
    return Sample(str(p), label1 - 1, classes[label1 - 1])


def _cars_image_dir(root: Path, base: Path, names: Sequence[str], key: str, meta: Path) -> Path:
    for where in (base, root):
        for n in names:
            d = find_dir(where, n)
            if d is not None:
                return d
    raise _not_found(key, root, f"found {meta.name} but no {' or '.join(n + '/' for n in names)}")


def load_cars(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    _official_only("cars", test_fraction)
    root = _root("cars", root)
    meta = find_file(root, "cars_meta.mat")
    train_annos = find_file(root, "cars_train_annos.mat")
    if meta is not None and train_annos is not None:
        test_annos = find_file(root, "cars_test_annos_withlabels.mat")
        if test_annos is None:
            detail = (
                "cars_test_annos.mat has no test labels; get cars_test_annos_withlabels.mat"
                if find_file(root, "cars_test_annos.mat")
                else "found the devkit but no cars_test_annos_withlabels.mat"
            )
            raise _not_found("cars", root, detail)
        classes = _cars_class_names(meta)
        base = train_annos.parent
        if base.name.lower() == "devkit":
            base = base.parent
        parts = {}
        for part, annos, dirname in (
            ("train", train_annos, "cars_train"),
            ("test", test_annos, "cars_test"),
        ):
            index = ImageIndex(_cars_image_dir(root, base, [dirname], "cars", annos))
            rows = _cars_struct(annos, ["class", "fname"])
            parts[part] = [
                _cars_sample(
                    annos, i, _str(r["fname"], f"{annos}: entry {i + 1} fname"),
                    _int(r["class"], f"{annos}: entry {i + 1} class"), classes, index,
                )
                for i, r in enumerate(rows)
            ]
        return Split(classes=classes, train=parts["train"], test=parts["test"])

    allinone = find_file(root, "cars_annos.mat")
    if allinone is not None:
        data = loadmat(allinone)
        if "class_names" in data:
            classes = _cars_class_names(allinone)
        elif meta is not None:
            classes = _cars_class_names(meta)
        else:
            raise GcplError(f"{allinone} has no 'class_names' and there is no cars_meta.mat")
        rows = _cars_struct(allinone, ["relative_im_path", "class", "test"])
        index = ImageIndex(allinone.parent)
        parts = {"train": [], "test": []}
        for i, r in enumerate(rows):
            where = f"{allinone}: entry {i + 1}"
            is_test = _int(r["test"], f"{where} test")
            if is_test not in (0, 1):
                raise GcplError(f"{where} has test flag {is_test}; expected 0 or 1")
            s = _cars_sample(
                allinone, i, _str(r["relative_im_path"], f"{where} relative_im_path"),
                _int(r["class"], f"{where} class"), classes, index,
            )
            parts["test" if is_test else "train"].append(s)
        return Split(classes=classes, train=parts["train"], test=parts["test"])

    names_csv = find_file(root, "names.csv")
    train_csv = find_file(root, "anno_train.csv")
    test_csv = find_file(root, "anno_test.csv")
    if names_csv and train_csv and test_csv:
        classes = [",".join(r).strip() for r in read_csv_rows(names_csv)]
        if classes and classes[0].lower() in ("class_name", "class_names", "name", "names"):
            classes = classes[1:]
        if not classes:
            raise GcplError(f"{names_csv} lists no class names")
        base = names_csv.parent
        parts = {}
        for part, annos, dirnames in (
            ("train", train_csv, ["cars_train", "train"]),
            ("test", test_csv, ["cars_test", "test"]),
        ):
            index = ImageIndex(_cars_image_dir(root, base, dirnames, "cars", annos))
            rows = read_csv_rows(annos)
            samples = []
            for i, r in enumerate(rows):
                if len(r) < 2:
                    raise GcplError(
                        f"{annos}: line {i + 1} has {len(r)} column(s); expected "
                        f"file name, x1, y1, x2, y2, class (no header)"
                    )
                try:
                    label1 = int(r[-1])
                except ValueError:
                    if i == 0:
                        raise GcplError(
                            f"{annos} has a header or a non-numeric class in line 1 ({','.join(r)!r}); "
                            f"expected rows of file name, x1, y1, x2, y2, class without a header"
                        ) from None
                    raise GcplError(f"{annos}: line {i + 1} class {r[-1]!r} is not a number") from None
                samples.append(_cars_sample(annos, i, r[0].strip(), label1, classes, index))
            parts[part] = samples
        return Split(classes=classes, train=parts["train"], test=parts["test"])

    raise _not_found("cars", root)


# -- Flowers102 ------------------------------------------------------------------------------------


def load_flowers102(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    _official_only("flowers102", test_fraction)
    root = _root("flowers102", root)
    labels_file = find_file(root, "imagelabels.mat")
    setid = find_file(root, "setid.mat")
    if labels_file is None or setid is None:
        raise _not_found("flowers102", root)
    jpg = find_dir(labels_file.parent, "jpg") or find_dir(root, "jpg")
    if jpg is None:
        raise _not_found("flowers102", root, f"found {labels_file.name} but no jpg/ folder")
    raw = _mat_var(labels_file, "labels")
    if not isinstance(raw, list):
        raise GcplError(f"{labels_file}: 'labels' is not a numeric vector")
    labels = []
    for i, v in enumerate(raw):
        lab = _int(v, f"{labels_file}: labels[{i + 1}]")
        if not 1 <= lab <= len(N.FLOWERS102):
            raise GcplError(
                f"{labels_file}: image {i + 1} has label {lab}, outside 1..{len(N.FLOWERS102)}"
            )
        labels.append(lab - 1)
    ids = loadmat(setid)
    parts = {}
    for part, var in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        if var not in ids or not isinstance(ids[var], list):
            raise GcplError(f"{setid} has no numeric variable {var!r}; expected trnid, valid and tstid")
        samples = []
        for v in ids[var]:
            n = _int(v, f"{setid}: {var}")
            if not 1 <= n <= len(labels):
                raise GcplError(
                    f"{setid}: {var} lists image {n}, but {labels_file.name} has labels for "
                    f"1..{len(labels)}"
                )
            p = jpg / f"image_{n:05d}.jpg"
            if not p.is_file():
                raise GcplError(f"{setid} lists image {n}, but {p} does not exist")
            samples.append(Sample(str(p), labels[n - 1], N.FLOWERS102[labels[n - 1]]))
        parts[part] = sorted(samples, key=lambda s: s.path)
    return Split(classes=list(N.FLOWERS102), **parts)


# -- class-folder datasets -------------------------------------------------------------------------


def _find_class_parent(root: Path, wanted: Sequence[str], norm, max_depth: int = 3):
    """The shallowest folder whose sub-folders, normalized with `norm`, include every `wanted` code.

    Returns (parent, {code: folder}), or (None, best partial {code: folder}) for the message.
    """
    best: dict[str, Path] = {}
    for d in walk_dirs(root, max_depth):
        try:
            subs = sorted(
                (Path(e.path) for e in os.scandir(d) if e.is_dir() and not is_hidden(e.name)),
                key=lambda p: p.name,
            )
        except OSError:
            continue
        found: dict[str, Path] = {}
        for s in subs:
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


def _crc_code(name: str) -> str:
    return class_name(name).upper()


def load_crc5k(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root = _root("crc5k", root)
    frac = _fraction("crc5k", test_fraction)
    codes = list(N.CRC5K)
    parent, found = _find_class_parent(root, codes, _crc_code)
    if parent is None:
        raise _not_found("crc5k", root, _missing_detail(codes, found))
    classes = [N.CRC5K[c] for c in codes]
    samples = _samples_from_folders([found[c] for c in codes], classes)
    _check_classes_nonempty("crc5k", classes, samples, parent)
    return stratified_split(classes, samples, frac, seed, root=parent)


def load_lc25000(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root = _root("lc25000", root)
    frac = _fraction("lc25000", test_fraction)
    codes = list(N.LC25000)
    found = {c: find_dir(root, c, max_depth=4) for c in codes}
    missing = [c for c, d in found.items() if d is None]
    if missing:
        detail = f"no {', '.join(m + '/' for m in missing)}" if len(missing) < len(codes) else ""
        raise _not_found("lc25000", root, detail)
    classes = [N.LC25000[c] for c in codes]
    samples = _samples_from_folders([found[c] for c in codes], classes)
    _check_classes_nonempty("lc25000", classes, samples, root)
    return stratified_split(classes, samples, frac, seed, root=root)


def load_cornseeds(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root = _root("cornseeds", root)
    frac = _fraction("cornseeds", test_fraction)
    classes = list(N.CORNSEEDS)
    csv_path = find_file(root, "train.csv", max_depth=2)
    if csv_path is not None:
        header, rows = read_csv_dicts(csv_path, ["image", "label"])
        index = ImageIndex(csv_path.parent)
        samples, groups = [], []
        for line, r in enumerate(rows, start=2):
            lab = r["label"].strip().lower()
            if lab not in classes:
                raise GcplError(
                    f"{csv_path}: line {line} has label {r['label']!r}; expected one of "
                    f"{', '.join(classes)}"
                )
            p = index.resolve(r["image"])
            if p is None:
                raise GcplError(f"{csv_path}: line {line} lists image {r['image']}, which does not exist")
            samples.append(Sample(str(p), classes.index(lab), lab))
            # both views (top / bottom) of one kernel share a seed_id: keep them on one side
            groups.append(f"seed:{r['seed_id']}" if r.get("seed_id") else f"img:{p}")
        if not samples:
            raise GcplError(f"{csv_path} lists no images")
        return stratified_split(classes, samples, frac, seed, groups=groups, root=csv_path.parent)
    parent, found = _find_class_parent(root, classes, lambda n: class_name(n).lower(), max_depth=2)
    if parent is None:
        raise _not_found("cornseeds", root, _missing_detail(classes, found))
    samples = _samples_from_folders([found[c] for c in classes], classes)
    _check_classes_nonempty("cornseeds", classes, samples, parent)
    return stratified_split(classes, samples, frac, seed, root=parent)


# -- ISIC 2018 -------------------------------------------------------------------------------------

_ISIC_TRAIN = ("ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth.csv")
_ISIC_VAL = ("ISIC2018_Task3_Validation_Input", "ISIC2018_Task3_Validation_GroundTruth.csv")


def _isic_part(gt: Path, images: Path, classes: list[str]) -> list[Sample]:
    codes = list(N.ISIC2018)
    _, rows = read_csv_dicts(gt, ["image", *codes])
    out = []
    for line, r in enumerate(rows, start=2):
        try:
            values = [float(r[c]) for c in codes]
        except (TypeError, ValueError):
            raise GcplError(f"{gt}: line {line} has a non-numeric diagnosis column") from None
        hot = [i for i, v in enumerate(values) if v == 1.0]
        if len(hot) != 1 or any(v not in (0.0, 1.0) for v in values):
            raise GcplError(
                f"{gt}: line {line} ({r['image']}) is not one-hot over {','.join(codes)}"
            )
        name = r["image"].strip()
        fname = name if os.path.splitext(name)[1].lower() in (".jpg", ".jpeg", ".png") else name + ".jpg"
        p = images / fname
        if not p.is_file():
            raise GcplError(f"{gt}: line {line} lists image {name}, but {p} does not exist")
        out.append(Sample(str(p), hot[0], classes[hot[0]]))
    if not out:
        raise GcplError(f"{gt} lists no images")
    return out


def _isic_groups(root: Path, samples: Sequence[Sample]) -> list[str] | None:
    path = find_file(root, "ISIC2018_Task3_Training_LesionGroupings.csv")
    if path is None:
        return None
    _, rows = read_csv_dicts(path, ["image", "lesion_id"])
    lesion = {r["image"].strip(): r["lesion_id"].strip() for r in rows}
    out = []
    for s in samples:
        stem = Path(s.path).stem
        lid = lesion.get(stem)
        out.append(f"lesion:{lid}" if lid else f"img:{stem}")
    return out


def load_isic2018(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root = _root("isic2018", root)
    frac = _fraction("isic2018", test_fraction)
    images = find_dir(root, _ISIC_TRAIN[0])
    gt = find_file(root, _ISIC_TRAIN[1])
    if images is None or gt is None:
        detail = ""
        if images is not None or gt is not None:
            detail = f"no {_ISIC_TRAIN[1]}" if gt is None else f"no {_ISIC_TRAIN[0]}/"
        raise _not_found("isic2018", root, detail)
    classes = list(N.ISIC2018.values())
    samples = _isic_part(gt, images, classes)
    split = stratified_split(
        classes, samples, frac, seed, groups=_isic_groups(root, samples), root=images
    )
    val_images, val_gt = find_dir(root, _ISIC_VAL[0]), find_file(root, _ISIC_VAL[1])
    if val_images is not None and val_gt is not None:
        split.val = _isic_part(val_gt, val_images, classes)
    return split


# -- plain folders (and FractalDB-60) --------------------------------------------------------------

_PART_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}


def _folder_layout(root: Path):
    """('parts', {part: folder}) for train/ + test/ (+ val/), or ('flat', folder); None if neither."""
    d = root
    for _ in range(4):
        try:
            subs = sorted(
                (Path(e.path) for e in os.scandir(d) if e.is_dir() and not is_hidden(e.name)),
                key=lambda p: p.name,
            )
        except OSError:
            return None
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
    root = _root(key, root)
    layout = _folder_layout(root)
    if layout is None:
        raise _not_found(key, root)
    kind, where = layout
    if kind == "parts":
        _official_only(key, test_fraction, f"{where['train'].parent} (train/ and test/ folders)")
        folder_names = sorted({f.name for part in where.values() for f in class_folders(part)})
        classes = [class_name(n) for n in folder_names]
        check_unique(classes, folder_names)
        label = {n: i for i, n in enumerate(folder_names)}
        out = {}
        for part, folder in where.items():
            cf = class_folders(folder)
            out[part] = _samples_from_folders(
                cf, [classes[label[f.name]] for f in cf], [label[f.name] for f in cf]
            )
        if len(classes) < 2:
            raise _not_found(key, root, "only one class folder")
        return Split(classes=classes, **out)
    frac = _fraction(key, test_fraction)
    folders = class_folders(where)
    classes = [class_name(f.name) for f in folders]
    check_unique(classes, folders)
    samples = _samples_from_folders(folders, classes)
    return stratified_split(classes, samples, frac, seed, root=where)


def load_folder(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    return _load_folder("folder", root, seed, test_fraction)


def load_fractals(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    return _load_folder("fractals", root, seed, test_fraction)


# --- the registry: every dataset's facts in one place -----------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset gcpl knows: the paper's Table 1 prompt and initialiser word (the `folder` entry's
    generic ones are gcpl's choice), where to get it and how it must be laid out, and its loader
    `(root, seed=0, test_fraction=None) -> Split`."""

    name: str
    title: str
    aliases: tuple[str, ...]
    template: str  # one {} for the class: the paper's Table 1 (flowers and folder: gcpl's choice)
    init_word: str  # single-token word initialising the learned class tokens (Table 1 = released code)
    test_fraction: float | None  # default held-out fraction; None: the dataset has an official split
    layout: str  # what the folder must hold
    download: str  # where to get it
    description: str
    loader: Callable[..., Split]
    code_template: str | None = None  # the released code's template (src/diffusion/templates.json) where it differs

    def prompt(self, class_name: str) -> str:
        return self.template.format(class_name)

    def template_for(self, preset: str) -> str:
        """The `paper` preset trains and classifies with the released code's template."""
        return self.code_template if preset == "paper" and self.code_template else self.template


# Test fractions follow the authors' code (0.3 for ISIC2018 / LC25000 / FractalDB-60, 0.5 for CRC5k);
# 0.3 is gcpl's choice for corn seeds and plain folders (the paper does not state them).
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo(
        name='cars', title='StanfordCars', aliases=('stanford_cars', 'stanfordcars'),
        template='A photo of {}, a type of car.', init_word='car', test_fraction=None,
        code_template='A photo of a {}, a type of car.',
        layout=(
            'devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/ '
            'and cars_test/ (also accepted: the same under stanford_cars/, cars_annos.mat with car_ims/, or '
            'names.csv, anno_train.csv and anno_test.csv with cars_train/ and cars_test/ or train/ and '
            'test/)'
        ),
        download=(
            'download from https://ai.stanford.edu/~jkrause/cars/car_dataset.html (offline since 2023; a '
            "mirror in torchvision's layout: "
            'https://www.kaggle.com/datasets/rickyyyyyyy/torchvision-stanford-cars)'
        ),
        description='StanfordCars: 196 car models (make, model, year), official train/test split.',
        loader=load_cars,
    ),
    DatasetInfo(
        name='flowers102', title='Flowers102', aliases=('flowers', 'oxford_flowers102'),
        template='A photo of {}, a type of flower.', init_word='flower', test_fraction=None,
        code_template='a photo of a {}, a type of flower.',
        layout='jpg/image_00001.jpg ..., imagelabels.mat and setid.mat (or the same under flowers-102/)',
        download=(
            'download 102flowers.tgz, imagelabels.mat and setid.mat from '
            'https://www.robots.ox.ac.uk/~vgg/data/flowers/102/'
        ),
        description='Oxford Flowers102: 102 flower species, official train/val/test split.',
        loader=load_flowers102,
    ),
    DatasetInfo(
        name='cornseeds', title='Corn seeds', aliases=('seeds', 'corn'),
        template='A photo of {} corn seed.', init_word='seed', test_fraction=0.3,
        code_template='A photo of a {}, a type of corn seed.',
        layout=(
            'train.csv (columns image,label) with the images it lists, or one folder per class named pure, '
            'broken, discolored, silkcut'
        ),
        download=(
            'download the corn kernel images (train.csv + train/) from '
            'https://www.kaggle.com/competitions/kaggle-pog-series-s01e03/data'
        ),
        description=(
            'Corn seeds: 4 kernel conditions (pure, broken, discolored, silkcut), seeded stratified split '
            '(test 0.3).'
        ),
        loader=load_cornseeds,
    ),
    DatasetInfo(
        name='crc5k', title='CRC5k (Kather 2016)', aliases=('crc', 'kather', 'colorectal'),
        template='{} tissue.', init_word='tissue', test_fraction=0.5,
        layout=(
            'one folder per class 01_TUMOR, 02_STROMA, 03_COMPLEX, 04_LYMPHO, 05_DEBRIS, 06_MUCOSA, '
            '07_ADIPOSE, 08_EMPTY (as in Kather_texture_2016_image_tiles_5000/)'
        ),
        download='download Kather_texture_2016_image_tiles_5000.zip from https://zenodo.org/records/53169',
        description='Kather 2016 colorectal cancer texture tiles: 8 tissue types, seeded stratified split (test 0.5).',
        loader=load_crc5k,
    ),
    DatasetInfo(
        name='isic2018', title='ISIC 2018 task 3', aliases=('isic', 'skin'),
        template='{} skin lesion.', init_word='skin', test_fraction=0.3,
        layout=(
            'ISIC2018_Task3_Training_Input/*.jpg and '
            'ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv'
        ),
        download=(
            'download ISIC2018_Task3_Training_Input.zip and ISIC2018_Task3_Training_GroundTruth.zip from '
            'https://challenge.isic-archive.com/data/#2018'
        ),
        description=(
            'ISIC 2018 task 3 dermoscopy: 7 lesion diagnoses, seeded stratified split of the training set '
            '(test 0.3).'
        ),
        loader=load_isic2018,
    ),
    DatasetInfo(
        name='lc25000', title='LC25000', aliases=('lc25k', 'lungcolon'),
        template='{} tissue.', init_word='tissue', test_fraction=0.3,
        layout=(
            'lung_colon_image_set/colon_image_sets/{colon_aca,colon_n} and '
            'lung_colon_image_set/lung_image_sets/{lung_aca,lung_n,lung_scc}'
        ),
        download=(
            'download LC25000 from https://github.com/tampapath/lung_colon_image_set (or '
            'https://www.kaggle.com/datasets/andrewmvd/lung-and-colon-cancer-histopathological-images)'
        ),
        description='LC25000 lung and colon histopathology: 5 classes, seeded stratified split (test 0.3).',
        loader=load_lc25000,
    ),
    DatasetInfo(
        name='fractals', title='FractalDB-60', aliases=('fractal', 'fractaldb60', 'fractaldb-60'),
        template='{} fractal.', init_word='fractal', test_fraction=0.3,
        layout=(
            'one sub-folder of images per fractal class (at least two), or train/ and test/ folders that '
            'each hold the class sub-folders'
        ),
        download=(
            'generate FractalDB-60 (see '
            'https://hirokatsukataoka16.github.io/Pretraining-without-Natural-Images/) or use any folder '
            'with one sub-folder per fractal class'
        ),
        description='FractalDB-60: 60 fractal categories, one folder each, seeded stratified split (test 0.3).',
        loader=load_fractals,
    ),
    DatasetInfo(
        name='folder', title='An image folder', aliases=(),
        template='A photo of {}.', init_word='object', test_fraction=0.3,
        layout=(
            'one sub-folder of images per class (at least two), or train/ and test/ (and optionally val/) '
            'folders that each hold the class sub-folders'
        ),
        download='put the images in one sub-folder per class',
        description=(
            'Any image folder with one sub-folder per class (class names: the folder names, a numeric prefix '
            'like 01_ dropped, underscores as spaces), seeded stratified split (test 0.3) unless it has '
            'train/ and test/ folders.'
        ),
        loader=load_folder,
    ),
)}


def get_dataset(name: str) -> DatasetInfo:
    """A dataset by name or alias (case-insensitive); a one-line error lists the known ones."""
    key = str(name).strip().lower()
    for d in DATASETS.values():
        if key == d.name or key in d.aliases:
            return d
    raise GcplError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
