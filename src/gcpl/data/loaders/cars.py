"""StanfordCars as distributed: the devkit (`cars_meta.mat`, `cars_train_annos.mat`,
`cars_test_annos_withlabels.mat`), the all-in-one `cars_annos.mat`, or Kaggle's CSVs (`names.csv`,
`anno_train.csv`, `anno_test.csv`); always the official train/test split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import GcplError
from ..splits import Sample, Split
from .catalog import DatasetInfo, register_dataset
from .common import (
    ImageIndex,
    as_int,
    as_str,
    find_dir,
    find_file,
    mat_var,
    not_found,
    official_root,
    read_csv_rows,
)
from .matfile import loadmat


def _cars_class_names(path: Path, var: str = "class_names") -> list[str]:
    raw = mat_var(path, var)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise GcplError(f"{path}: {var!r} is not a list of class names")
    return [as_str(v, f"{path}: {var}[{i}]") for i, v in enumerate(raw)]


def _cars_struct(path: Path, fields: Sequence[str]) -> list[dict]:
    rows = mat_var(path, "annotations")
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
    raise not_found(key, root, f"found {meta.name} but no {' or '.join(n + '/' for n in names)}")


@register_dataset(
    DatasetInfo(
        name="cars", title="StanfordCars", aliases=("stanford_cars", "stanfordcars"),
        template="A photo of {}, a type of car.", init_word="car", test_fraction=None,
        code_template="A photo of a {}, a type of car.",
        layout="""devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/ and
            cars_test/ (also accepted: the same under stanford_cars/, cars_annos.mat with car_ims/, or names.csv,
            anno_train.csv and anno_test.csv with cars_train/ and cars_test/ or train/ and test/)""",
        download="""download from https://ai.stanford.edu/~jkrause/cars/car_dataset.html (offline since 2023; a mirror in
            torchvision's layout: https://www.kaggle.com/datasets/rickyyyyyyy/torchvision-stanford-cars)""",
        description="StanfordCars: 196 car models (make, model, year), official train/test split.",
    )
)
def load_cars(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root = official_root("cars", root, test_fraction)
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
            raise not_found("cars", root, detail)
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
                    annos, i, as_str(r["fname"], f"{annos}: entry {i + 1} fname"),
                    as_int(r["class"], f"{annos}: entry {i + 1} class"), classes, index,
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
            is_test = as_int(r["test"], f"{where} test")
            if is_test not in (0, 1):
                raise GcplError(f"{where} has test flag {is_test}; expected 0 or 1")
            s = _cars_sample(
                allinone, i, as_str(r["relative_im_path"], f"{where} relative_im_path"),
                as_int(r["class"], f"{where} class"), classes, index,
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

    raise not_found("cars", root)
