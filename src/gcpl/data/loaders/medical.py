"""The medical image datasets, in registration order: CRC5k (Kather 2016 colorectal tissue tiles,
one folder per class), ISIC 2018 task 3 (dermoscopy, a ground-truth CSV, lesions kept on one side
of the split) and LC25000 (lung and colon histopathology, one folder per class); all drawn as
seeded stratified splits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ...errors import GcplError
from ..folders import class_name
from ..splits import Sample, Split
from . import names as N
from .catalog import DatasetInfo, register_dataset
from .common import (
    find_dir,
    find_file,
    not_found,
    read_csv_dicts,
    root_and_fraction,
    split_class_folders,
    split_coded_folders,
    stratified_split,
)

# -- CRC5k -----------------------------------------------------------------------------------------


def _crc_code(name: str) -> str:
    return class_name(name).upper()


@register_dataset(
    DatasetInfo(
        name="crc5k", title="CRC5k (Kather 2016)", aliases=("crc", "kather", "colorectal"),
        template="{} tissue.", init_word="tissue", test_fraction=0.5,
        layout="""one folder per class 01_TUMOR, 02_STROMA, 03_COMPLEX, 04_LYMPHO, 05_DEBRIS, 06_MUCOSA, 07_ADIPOSE,
            08_EMPTY (as in Kather_texture_2016_image_tiles_5000/)""",
        download="download Kather_texture_2016_image_tiles_5000.zip from https://zenodo.org/records/53169",
        description="Kather 2016 colorectal cancer texture tiles: 8 tissue types, seeded stratified split (test 0.5).",
    )
)
def load_crc5k(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root, frac = root_and_fraction("crc5k", root, test_fraction)
    return split_coded_folders("crc5k", root, N.CRC5K, _crc_code, seed, frac)


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


@register_dataset(
    DatasetInfo(
        name="isic2018", title="ISIC 2018 task 3", aliases=("isic", "skin"),
        template="{} skin lesion.", init_word="skin", test_fraction=0.3,
        layout="""ISIC2018_Task3_Training_Input/*.jpg and
            ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv""",
        download="""download ISIC2018_Task3_Training_Input.zip and ISIC2018_Task3_Training_GroundTruth.zip from
            https://challenge.isic-archive.com/data/#2018""",
        description="""ISIC 2018 task 3 dermoscopy: 7 lesion diagnoses,
            seeded stratified split of the training set (test 0.3).""",
    )
)
def load_isic2018(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root, frac = root_and_fraction("isic2018", root, test_fraction)
    images = find_dir(root, _ISIC_TRAIN[0])
    gt = find_file(root, _ISIC_TRAIN[1])
    if images is None or gt is None:
        detail = ""
        if images is not None or gt is not None:
            detail = f"no {_ISIC_TRAIN[1]}" if gt is None else f"no {_ISIC_TRAIN[0]}/"
        raise not_found("isic2018", root, detail)
    classes = list(N.ISIC2018.values())
    samples = _isic_part(gt, images, classes)
    split = stratified_split(
        classes, samples, frac, seed, groups=_isic_groups(root, samples), root=images
    )
    val_images, val_gt = find_dir(root, _ISIC_VAL[0]), find_file(root, _ISIC_VAL[1])
    if val_images is not None and val_gt is not None:
        split.val = _isic_part(val_gt, val_images, classes)
    return split


# -- LC25000 ---------------------------------------------------------------------------------------


@register_dataset(
    DatasetInfo(
        name="lc25000", title="LC25000", aliases=("lc25k", "lungcolon"),
        template="{} tissue.", init_word="tissue", test_fraction=0.3,
        layout="""lung_colon_image_set/colon_image_sets/{colon_aca,colon_n} and
            lung_colon_image_set/lung_image_sets/{lung_aca,lung_n,lung_scc}""",
        download="""download LC25000 from https://github.com/tampapath/lung_colon_image_set (or
            https://www.kaggle.com/datasets/andrewmvd/lung-and-colon-cancer-histopathological-images)""",
        description="LC25000 lung and colon histopathology: 5 classes, seeded stratified split (test 0.3).",
    )
)
def load_lc25000(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root, frac = root_and_fraction("lc25000", root, test_fraction)
    codes = list(N.LC25000)
    found = {c: find_dir(root, c, max_depth=4) for c in codes}
    missing = [c for c, d in found.items() if d is None]
    if missing:
        detail = f"no {', '.join(m + '/' for m in missing)}" if len(missing) < len(codes) else ""
        raise not_found("lc25000", root, detail)
    classes = [N.LC25000[c] for c in codes]
    return split_class_folders("lc25000", [found[c] for c in codes], classes, root, seed, frac)
