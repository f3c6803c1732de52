"""Dataset loaders: tiny on-disk replicas of each dataset's distributed layout.

`.mat` files are written by a minimal MATLAB level-5 writer below (both byte orders, compressed
or not, MATLAB's habit of storing doubles as uint8); two fixtures written by scipy.io.savemat
check the reader against an independent writer.
"""

from __future__ import annotations

import base64
import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcpl.data.folders import class_name as humanize
from gcpl.data.loaders import (
    DATASETS,
    class_counts,
    get_dataset,
    load_cars,
    load_cornseeds,
    load_crc5k,
    load_flowers102,
    load_folder,
    load_fractals,
    load_isic2018,
    load_lc25000,
    loadmat,
    prepare_dataset,
    stratified_split,
)
from gcpl.data.loaders import prepare as prepare_mod
from gcpl.data.loaders.names import FLOWERS102
from gcpl.data.splits import Sample, Split
from gcpl.errors import GcplError

# ------------------------------------------------------------------------------------------------
# helpers


def img(path: Path, color=(0, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def write_csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


class raises_one_line:
    """pytest.raises(GcplError, match=...) that also checks the message is one line."""

    def __init__(self, match: str):
        self.ctx = pytest.raises(GcplError, match=match)

    def __enter__(self):
        self.info = self.ctx.__enter__()
        return self.info

    def __exit__(self, *exc):
        suppress = self.ctx.__exit__(*exc)
        assert "\n" not in str(self.info.value)
        return suppress


def counts(samples, n_classes):
    out = [0] * n_classes
    for s in samples:
        out[s.label] += 1
    return out


# -- a minimal MATLAB level-5 writer --------------------------------------------------------------


class Num:
    """A numeric row vector of MATLAB class double, stored with data type `code` (MATLAB stores
    small integral doubles as miUINT8 / miUINT16)."""

    def __init__(self, values, code="f8"):
        self.values, self.code = list(values), code


_MI = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 9}


def _el(o: str, mtype: int, payload: bytes) -> bytes:
    n = len(payload)
    if 0 < n <= 4 and mtype != 14:  # small data element
        return struct.pack(o + "I", (n << 16) | mtype) + payload + b"\0" * (4 - n)
    return struct.pack(o + "II", mtype, n) + payload + b"\0" * (-n % 8)


def _matrix(o: str, value, name: str = "") -> bytes:
    def head(cls, dims):
        return (
            _el(o, 6, struct.pack(o + "II", cls, 0))
            + _el(o, 5, struct.pack(o + "i" * len(dims), *dims))
            + _el(o, 1, name.encode())
        )

    if isinstance(value, int | float):
        value = Num([value])
    if isinstance(value, Num):
        data = np.asarray(value.values, dtype=np.dtype(value.code).newbyteorder(o)).tobytes()
        body = head(6, (1, len(value.values))) + _el(o, _MI[value.code], data)
    elif isinstance(value, str):
        body = head(4, (1, len(value))) + _el(o, 4, value.encode("utf-16-le" if o == "<" else "utf-16-be"))
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        fields = list(value[0])
        body = head(2, (1, len(value)))
        body += _el(o, 5, struct.pack(o + "i", 32))
        body += _el(o, 1, b"".join(f.encode().ljust(32, b"\0") for f in fields))
        for row in value:
            for f in fields:
                body += _el(o, 14, _matrix(o, row[f]))
    elif isinstance(value, list):  # cell row
        body = head(1, (1, len(value))) + b"".join(_el(o, 14, _matrix(o, v)) for v in value)
    else:
        raise TypeError(value)
    return body


def write_mat(path: Path, variables: dict, *, compress=True, big_endian=False) -> Path:
    o = ">" if big_endian else "<"
    text = b"MATLAB 5.0 MAT-file, written by gcpl tests".ljust(116, b" ")
    out = text + b"\0" * 8 + struct.pack(o + "H", 0x0100) + (b"MI" if big_endian else b"IM")
    for name, value in variables.items():
        element = _el(o, 14, _matrix(o, value, name))
        if compress:
            z = zlib.compress(element)
            element = struct.pack(o + "II", 15, len(z)) + z
        out += element
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


# scipy.io.savemat(..., do_compression=True) output (scipy 1.17): class_names = 1x3 cell, and
# annotations = 1x4 struct (bbox_* as uint8 / uint16 / double, class uint8, fname char).
SCIPY_META = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IE1vbiBOb3Yg"
    "MzAgMDg6NDI6NDggMjAyNgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAABSU0PAAAAlAAAAHic42NgYLBgZGBgA9IcQAxkggErEp8ZSnMDcXJOYnFxfF5i"
    "bmoxWB0fEAcwIPSzYNEvhWSuAJTv6KvgnpqXWpSYo+BRmpubWqQQHBqmYGRgYMAAN9eDgLnCaOaC"
    "+I7JpUWJCkE+CsGpKYl5QAMNjYh2pxyaeSB+UGKugrN+mIJzYlF6vkIY0EjfzLzMMrjRAFrCHfw="
)
SCIPY_ANNOS = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IE1vbiBOb3Yg"
    "MzAgMDg6NDI6NDggMjAyNgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAABSU0PAAAAwgAAAHic42NgYJBgY2AAIgYOIGZigABWKJ8RiFmgNDcQJ+bl5Zck"
    "lmTm5xVD1bHA1RkAcVJSfkV8hSGEroTSFUZQvhFDck5iMUhnWl5ibiqQ5oPqg9nPicV+GGYAu48R"
    "zEbXx01AHwtQJxNUnwWSPjYC+jih4mBwoMiBHPeyUOhPByR9LFj0cSLpE4DyDYDAUC+rIB0qTo79"
    "TFj0DcdwhrmX3HA2ojCcmUdIOMP8SW44G1MYztjcPRzDmdJywwQpnAEvhi5z"
)

CAR_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Ram C/V Cargo Van Minivan 2012"]

# ------------------------------------------------------------------------------------------------
# the MAT reader


def test_loadmat_reads_scipy_written_files(tmp_path):
    meta = tmp_path / "meta.mat"
    meta.write_bytes(SCIPY_META)
    annos = tmp_path / "annos.mat"
    annos.write_bytes(SCIPY_ANNOS)
    assert loadmat(meta) == {"class_names": CAR_NAMES}
    rows = loadmat(annos)["annotations"]
    assert [r["fname"] for r in rows] == ["00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"]
    assert [r["class"] for r in rows] == [[1], [2], [3], [1]]
    assert rows[0]["bbox_x2"] == [300.0] and rows[2]["bbox_x1"] == [3]


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("big_endian", [False, True])
def test_loadmat_round_trip(tmp_path, compress, big_endian):
    variables = {
        "labels": Num([1, 2, 77, 102], "u1"),
        "ids": Num([1000, 2], "u2"),
        "x": Num([0.5, -2.25]),
        "name": "Ram C/V",
        "names": ["a", "bb", "ccc"],
        "annotations": [{"class": Num([3], "u1"), "fname": "00001.jpg"}, {"class": 1, "fname": "x"}],
    }
    path = write_mat(tmp_path / "v.mat", variables, compress=compress, big_endian=big_endian)
    got = loadmat(path)
    assert got["labels"] == [1, 2, 77, 102]
    assert got["ids"] == [1000, 2]
    assert got["x"] == [0.5, -2.25]
    assert got["name"] == "Ram C/V"
    assert got["names"] == ["a", "bb", "ccc"]
    assert got["annotations"] == [{"class": [3], "fname": "00001.jpg"}, {"class": [1.0], "fname": "x"}]


def test_loadmat_refuses_v73_and_garbage(tmp_path):
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" ") + b"\x89HDF\r\n")
    with raises_one_line(r"v73\.mat is a MATLAB v7\.3 \(HDF5\) file.*-v7"):
        loadmat(v73)
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"hello")
    with raises_one_line(r"bad\.mat is not a MATLAB level-5 \.mat file"):
        loadmat(bad)
    cut = tmp_path / "cut.mat"
    cut.write_bytes(SCIPY_ANNOS[:200])
    with raises_one_line(r"cut\.mat is not a readable MATLAB \.mat file"):
        loadmat(cut)


# ------------------------------------------------------------------------------------------------
# StanfordCars


def make_cars_devkit(base: Path, *, test_annos_in_devkit=False, nested=False, train_label=None):
    """3 classes; train: 2 images per class, test: 1, 1, 2."""
    write_mat(base / "devkit" / "cars_meta.mat", {"class_names": CAR_NAMES})
    train_rows, test_rows = [], []
    n = 0
    for cls in (1, 2, 3):
        for _ in range(2):
            n += 1
            train_rows.append({"bbox_x1": Num([1], "u1"), "class": Num([cls], "u1"), "fname": f"{n:05d}.jpg"})
    for i, cls in enumerate((1, 2, 3, 3), start=1):
        test_rows.append({"bbox_x1": Num([1], "u1"), "class": Num([cls], "u1"), "fname": f"{i:05d}.jpg"})
    if train_label is not None:
        train_rows[0]["class"] = Num([train_label], "u1")
    write_mat(base / "devkit" / "cars_train_annos.mat", {"annotations": train_rows})
    test_at = base / "devkit" if test_annos_in_devkit else base
    write_mat(test_at / "cars_test_annos_withlabels.mat", {"annotations": test_rows}, compress=False)
    for sub, rows in (("cars_train", train_rows), ("cars_test", test_rows)):
        folder = base / sub / sub if nested else base / sub
        for r in rows:
            img(folder / r["fname"])


def check_cars(split: Split, base: Path):
    assert split.classes == CAR_NAMES
    assert counts(split.train, 3) == [2, 2, 2]
    assert counts(split.test, 3) == [1, 1, 2]
    assert split.val == []
    first = split.train[0]
    assert first.label == 0 and first.class_name == "AM General Hummer SUV 2000"
    assert Path(first.path).name == "00001.jpg" and Path(first.path).parent.name == "cars_train"
    assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in split.train + split.test)
    assert {s.class_name for s in split.test if s.label == 2} == {"Ram C/V Cargo Van Minivan 2012"}
    assert all(str(base) in s.path for s in split.test)


def test_cars_devkit_layout(tmp_path):
    make_cars_devkit(tmp_path / "cars")
    check_cars(load_cars(tmp_path / "cars"), tmp_path / "cars")


def test_cars_torchvision_and_kaggle_layouts(tmp_path):
    # torchvision: root/stanford_cars/...; Kaggle mirrors: annotations in devkit/, images nested
    make_cars_devkit(tmp_path / "tv" / "stanford_cars")
    check_cars(load_cars(tmp_path / "tv"), tmp_path / "tv")
    make_cars_devkit(tmp_path / "kg", test_annos_in_devkit=True, nested=True)
    check_cars(load_cars(tmp_path / "kg"), tmp_path / "kg")


def test_cars_all_in_one_mat(tmp_path):
    rows = []
    for i, (cls, test) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (3, 0)], start=1):
        rows.append({"relative_im_path": f"car_ims/{i:06d}.jpg", "class": Num([cls], "u1"), "test": Num([test], "u1")})
        img(tmp_path / "car_ims" / f"{i:06d}.jpg")
    write_mat(tmp_path / "cars_annos.mat", {"annotations": rows, "class_names": CAR_NAMES})
    split = load_cars(tmp_path)
    assert split.classes == CAR_NAMES
    assert counts(split.train, 3) == [1, 1, 2] and counts(split.test, 3) == [1, 1, 1]


def test_cars_csv_layout(tmp_path):
    # the Kaggle "by classes folder" distribution: names.csv, anno_{train,test}.csv (no header,
    # 1-based class last), images sorted into car_data/car_data/{train,test}/<class name>/
    base = tmp_path / "kaggle"
    write_csv(base / "names.csv", [[n] for n in CAR_NAMES])
    train = [[f"{i:05d}.jpg", 1, 2, 3, 4, c] for i, c in enumerate([1, 1, 2, 2, 3, 3], start=1)]
    test = [[f"{i:05d}.jpg", 1, 2, 3, 4, c] for i, c in enumerate([1, 2, 3, 3], start=1)]
    write_csv(base / "anno_train.csv", train)
    write_csv(base / "anno_test.csv", test)
    for part, rows in (("train", train), ("test", test)):
        for r in rows:
            folder = CAR_NAMES[r[-1] - 1].replace("/", "-")
            img(base / "car_data" / "car_data" / part / folder / r[0])
    split = load_cars(base)
    assert split.classes == CAR_NAMES
    assert counts(split.train, 3) == [2, 2, 2] and counts(split.test, 3) == [1, 1, 2]
    assert all(Path(s.path).is_file() and s.class_name == CAR_NAMES[s.label] for s in split.train + split.test)
    # a header line is not the format
    write_csv(base / "anno_test.csv", [["fname", "x1", "y1", "x2", "y2", "class"], *test])
    with raises_one_line(r"anno_test\.csv has a header"):
        load_cars(base)


def test_cars_errors(tmp_path):
    with raises_one_line(r"StanfordCars not found under .*nowhere.*devkit/cars_meta\.mat.*kaggle"):
        load_cars(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with raises_one_line(r"StanfordCars not found under .*empty: expected devkit/cars_meta\.mat"):
        load_cars(tmp_path / "empty")

    make_cars_devkit(tmp_path / "badlabel", train_label=9)
    with raises_one_line(r"cars_train_annos\.mat: entry 1 \(00001\.jpg\) has class 9, outside 1\.\.3"):
        load_cars(tmp_path / "badlabel")

    make_cars_devkit(tmp_path / "noimg")
    (tmp_path / "noimg" / "cars_test" / "00004.jpg").unlink()
    with raises_one_line(r"cars_test_annos_withlabels\.mat lists image 00004\.jpg"):
        load_cars(tmp_path / "noimg")

    make_cars_devkit(tmp_path / "nolabels")
    lab = tmp_path / "nolabels" / "cars_test_annos_withlabels.mat"
    lab.rename(lab.with_name("cars_test_annos.mat"))
    with raises_one_line(r"cars_test_annos\.mat has no test labels"):
        load_cars(tmp_path / "nolabels")

    make_cars_devkit(tmp_path / "badmeta")
    write_mat(tmp_path / "badmeta" / "devkit" / "cars_meta.mat", {"names": CAR_NAMES})
    with raises_one_line(r"cars_meta\.mat has no variable 'class_names'"):
        load_cars(tmp_path / "badmeta")

    with raises_one_line(r"official train/test split"):
        load_cars(tmp_path / "badmeta", test_fraction=0.3)


# ------------------------------------------------------------------------------------------------
# Flowers102


def make_flowers(base: Path, labels=(1, 1, 2, 2, 2, 3, 102, 102), trnid=(1, 3, 7), valid=(2, 4), tstid=(5, 6, 8)):
    write_mat(base / "imagelabels.mat", {"labels": Num(labels, "u1")})
    write_mat(base / "setid.mat", {"trnid": Num(trnid, "u2"), "valid": Num(valid), "tstid": Num(tstid, "u2")})
    for i in range(1, len(labels) + 1):
        img(base / "jpg" / f"image_{i:05d}.jpg")


def test_flowers102(tmp_path):
    make_flowers(tmp_path / "flowers-102")
    split = load_flowers102(tmp_path)  # torchvision puts it under flowers-102/
    assert split.classes == FLOWERS102 and len(split.classes) == 102
    assert split.classes[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    assert [(Path(s.path).name, s.label, s.class_name) for s in split.train] == [
        ("image_00001.jpg", 0, "pink primrose"),
        ("image_00003.jpg", 1, "hard-leaved pocket orchid"),
        ("image_00007.jpg", 101, "blackberry lily"),
    ]
    assert [Path(s.path).name for s in split.val] == ["image_00002.jpg", "image_00004.jpg"]
    assert [s.label for s in split.test] == [1, 2, 101]


def test_flowers102_errors(tmp_path):
    with raises_one_line(r"Flowers102 not found under .*: expected jpg/image_00001\.jpg.*robots\.ox\.ac\.uk"):
        load_flowers102(tmp_path)
    make_flowers(tmp_path / "a", labels=(1, 103, 2, 2, 2, 3, 4, 5))
    with raises_one_line(r"imagelabels\.mat: image 2 has label 103, outside 1\.\.102"):
        load_flowers102(tmp_path / "a")
    make_flowers(tmp_path / "b", tstid=(5, 6, 9))
    with raises_one_line(r"setid\.mat: tstid lists image 9, but imagelabels\.mat has labels for 1\.\.8"):
        load_flowers102(tmp_path / "b")
    make_flowers(tmp_path / "c")
    (tmp_path / "c" / "jpg" / "image_00006.jpg").unlink()
    with raises_one_line(r"setid\.mat lists image 6, but .*image_00006\.jpg does not exist"):
        load_flowers102(tmp_path / "c")


# ------------------------------------------------------------------------------------------------
# stratified split


def fake_samples(per_class, root="/data"):
    out = []
    for label, n in enumerate(per_class):
        out.extend(Sample(f"{root}/c{label}/{i:03d}.png", label, f"c{label}") for i in range(n))
    return out


def test_stratified_split_fractions_and_determinism():
    samples = fake_samples([10, 20, 7, 2, 1])
    classes = ["c0", "c1", "c2", "c3", "c4"]
    a = stratified_split(classes, samples, 0.3, seed=0)
    assert counts(a.test, 5) == [3, 6, 2, 1, 0]  # round(n * 0.3), >= 1 each side, a singleton trains
    assert counts(a.train, 5) == [7, 14, 5, 1, 1]
    assert sorted(s.path for s in a.train + a.test) == sorted(s.path for s in samples)
    b = stratified_split(classes, list(reversed(samples)), 0.3, seed=0)
    assert a == b  # deterministic, independent of input order
    c = stratified_split(classes, samples, 0.3, seed=1)
    assert {s.path for s in c.test} != {s.path for s in a.test}
    assert counts(stratified_split(classes, samples, 0.5, seed=0).test, 5) == [5, 10, 4, 1, 0]
    # the draw depends on paths relative to the dataset root, not on where the dataset lives
    moved = stratified_split(classes, fake_samples([10, 20, 7, 2, 1], "/else"), 0.3, seed=0, root=Path("/else"))
    here = stratified_split(classes, samples, 0.3, seed=0, root=Path("/data"))
    assert [s.path[5:] for s in here.test] == [s.path[5:] for s in moved.test]


def test_stratified_split_keeps_groups_together():
    samples = fake_samples([12, 12])
    groups = [f"{s.label}-{i // 2}" for i, s in enumerate(samples)]  # pairs of images
    split = stratified_split(["c0", "c1"], samples, 0.3, seed=3, groups=groups)
    side = {}
    for part, items in (("train", split.train), ("test", split.test)):
        for s in items:
            g = groups[samples.index(s)]
            assert side.setdefault(g, part) == part
    assert counts(split.test, 2) == [4, 4]  # round(6 groups * 0.3) = 2 groups = 4 images per class


# ------------------------------------------------------------------------------------------------
# class-folder datasets

CRC_FOLDERS = ["01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS", "06_MUCOSA", "07_ADIPOSE", "08_EMPTY"]


def test_crc5k(tmp_path):
    base = tmp_path / "Kather_texture_2016_image_tiles_5000"
    for k, folder in enumerate(CRC_FOLDERS):
        for i in range(4):
            img(base / folder / f"{i}_{k}.tif", (k * 30, 0, 0))
    split = load_crc5k(tmp_path)
    assert split.classes == ["tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty"]
    assert counts(split.test, 8) == [2] * 8 and counts(split.train, 8) == [2] * 8  # 0.5 by default
    assert all(Path(s.path).parent.name == CRC_FOLDERS[s.label] for s in split.train + split.test)
    assert counts(load_crc5k(tmp_path, test_fraction=0.25).test, 8) == [1] * 8
    (base / "08_EMPTY").rename(base / "EMPTY_not")
    with raises_one_line(r"CRC5k \(Kather 2016\) not found under .*lacks EMPTY.*zenodo"):
        load_crc5k(tmp_path)


def test_lc25000(tmp_path):
    base = tmp_path / "lung_colon_image_set"
    folders = {
        "colon_image_sets/colon_aca": "colonca", "colon_image_sets/colon_n": "colonn",
        "lung_image_sets/lung_aca": "lungaca", "lung_image_sets/lung_n": "lungn",
        "lung_image_sets/lung_scc": "lungscc",
    }
    for folder, stem in folders.items():
        for i in range(1, 11):
            img(base / folder / f"{stem}{i}.jpeg")
            # macOS zips carry AppleDouble files under __MACOSX/, found first by a plain search
            img(tmp_path / "__MACOSX" / "lung_colon_image_set" / folder / f"._{stem}{i}.jpeg")
    split = load_lc25000(tmp_path)
    assert split.classes == [
        "colon adenocarcinoma", "benign colon", "lung adenocarcinoma", "benign lung",
        "lung squamous cell carcinoma",
    ]
    assert counts(split.test, 5) == [3] * 5 and counts(split.train, 5) == [7] * 5
    assert all(Path(s.path).name.startswith(list(folders.values())[s.label]) for s in split.train)
    with raises_one_line(r"LC25000 not found under .*lung_colon_image_set/colon_image_sets"):
        load_lc25000(tmp_path / "lung_colon_image_set" / "colon_image_sets")


def make_isic(base: Path, rows, *, groupings=None, header=None):
    codes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    gt = [header or ["image", *codes]]
    for name, cls in rows:
        gt.append([name] + ["1.0" if i == cls else "0.0" for i in range(7)])
        img(base / "ISIC2018_Task3_Training_Input" / f"{name}.jpg")
    write_csv(base / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv", gt)
    if groupings:
        write_csv(
            base / "ISIC2018_Task3_Training_LesionGroupings.csv",
            [["image", "lesion_id", "diagnosis_confirm_type"], *[[n, g, "histopathology"] for n, g in groupings]],
        )


def test_isic2018(tmp_path):
    rows = [(f"ISIC_{i:07d}", i % 7) for i in range(70)]  # 10 per class
    make_isic(tmp_path, rows)
    split = load_isic2018(tmp_path)
    assert split.classes == [
        "melanoma", "melanocytic nevus", "basal cell carcinoma", "actinic keratosis",
        "benign keratosis", "dermatofibroma", "vascular lesion",
    ]
    assert counts(split.test, 7) == [3] * 7 and counts(split.train, 7) == [7] * 7
    assert split.val == []
    by_name = {Path(s.path).stem: s for s in split.train + split.test}
    assert by_name["ISIC_0000009"].label == 2 and by_name["ISIC_0000009"].class_name == "basal cell carcinoma"

    # images of one lesion never straddle train and test
    g = tmp_path / "grouped"
    make_isic(g, rows, groupings=[(n, f"HAM_{int(n[-7:]) // 14}") for n, _ in rows])
    split = load_isic2018(g)
    lesion_of = {n: int(n[-7:]) // 14 for n, _ in rows}
    tr = {lesion_of[Path(s.path).stem] for s in split.train}
    te = {lesion_of[Path(s.path).stem] for s in split.test}
    assert not tr & te

    # the official validation set, when present, becomes `val`
    make_isic(tmp_path / "v", rows)
    write_csv(
        tmp_path / "v" / "ISIC2018_Task3_Validation_GroundTruth" / "ISIC2018_Task3_Validation_GroundTruth.csv",
        [["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"], ["ISIC_1", "0", "0", "0", "0", "0", "1", "0"]],
    )
    img(tmp_path / "v" / "ISIC2018_Task3_Validation_Input" / "ISIC_1.jpg")
    val = load_isic2018(tmp_path / "v").val
    assert [(s.label, s.class_name) for s in val] == [(5, "dermatofibroma")]


def test_isic2018_errors(tmp_path):
    with raises_one_line(r"ISIC 2018 task 3 not found under .*ISIC2018_Task3_Training_Input/\*\.jpg.*isic-archive"):
        load_isic2018(tmp_path)
    make_isic(tmp_path / "h", [("ISIC_1", 0), ("ISIC_2", 1)],
              header=["img", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"])
    with raises_one_line(r"ISIC2018_Task3_Training_GroundTruth\.csv has header .*missing image"):
        load_isic2018(tmp_path / "h")
    make_isic(tmp_path / "o", [("ISIC_1", 0), ("ISIC_2", 1)])
    gt = tmp_path / "o" / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[2] = "ISIC_2,1.0,1.0,0.0,0.0,0.0,0.0,0.0"
    gt.write_text("\n".join(lines) + "\n")
    with raises_one_line(r"GroundTruth\.csv: line 3 \(ISIC_2\) is not one-hot"):
        load_isic2018(tmp_path / "o")
    make_isic(tmp_path / "m", [("ISIC_1", 0), ("ISIC_2", 1)])
    (tmp_path / "m" / "ISIC2018_Task3_Training_Input" / "ISIC_2.jpg").unlink()
    with raises_one_line(r"GroundTruth\.csv: line 3 lists image ISIC_2, but .*ISIC_2\.jpg does not exist"):
        load_isic2018(tmp_path / "m")


def make_corn_csv(base: Path, n_seeds=10):
    rows = [["seed_id", "view", "image", "label"]]
    labels = ["pure", "broken", "discolored", "silkcut"]
    k = 0
    for label in labels:
        for seed in range(n_seeds):
            for view in ("top", "bottom"):
                rows.append([f"{label}{seed}", view, f"train/{k:05d}.png", label])
                img(base / "train" / f"{k:05d}.png")
                k += 1
    write_csv(base / "train.csv", rows)
    write_csv(base / "test.csv", [["seed_id", "view", "image"], ["x", "top", "test/00000.png"]])
    return rows


def test_cornseeds_csv(tmp_path):
    base = tmp_path / "corn"  # the Kaggle competition data unpacks into corn/
    rows = make_corn_csv(base)
    split = load_cornseeds(tmp_path)
    assert split.classes == ["pure", "broken", "discolored", "silkcut"]
    assert counts(split.test, 4) == [6] * 4 and counts(split.train, 4) == [14] * 4  # 3 of 10 seeds
    seed_of = {r[2].split("/")[1]: r[0] for r in rows[1:]}
    tr = {seed_of[Path(s.path).name] for s in split.train}
    te = {seed_of[Path(s.path).name] for s in split.test}
    assert not tr & te  # both views of a kernel stay on one side
    assert all(s.class_name == split.classes[s.label] for s in split.train + split.test)


def test_cornseeds_folders_and_errors(tmp_path):
    for name in ["Pure", "Broken", "Discolored", "Silkcut"]:
        for i in range(5):
            img(tmp_path / "seeds" / name / f"{i}.png")
    split = load_cornseeds(tmp_path)
    assert split.classes == ["pure", "broken", "discolored", "silkcut"]
    assert counts(split.test, 4) == [2] * 4  # round(5 * 0.3)

    with raises_one_line(r"Corn seeds not found under .*empty.*train\.csv.*silkcut"):
        (tmp_path / "empty").mkdir()
        load_cornseeds(tmp_path / "empty")
    bad = tmp_path / "bad"
    make_corn_csv(bad, n_seeds=2)
    write_csv(bad / "train.csv", [["seed_id", "image", "class"], ["1", "train/00000.png", "pure"]])
    with raises_one_line(r"train\.csv has header .*missing label"):
        load_cornseeds(bad)
    write_csv(bad / "train.csv", [["image", "label"], ["train/00000.png", "pure"], ["train/00001.png", "rotten"]])
    with raises_one_line(r"train\.csv: line 3 has label 'rotten'"):
        load_cornseeds(bad)
    write_csv(bad / "train.csv", [["image", "label"], ["train/99999.png", "pure"]])
    with raises_one_line(r"train\.csv: line 2 lists image train/99999\.png, which does not exist"):
        load_cornseeds(bad)


def test_folder_and_fractals(tmp_path):
    base = tmp_path / "wrapper" / "FractalDB-60"  # a single wrapper folder is descended into
    for name in ["00_sierpinski_gasket", "01_koch_curve", "dragon_curve", "00007"]:
        for i in range(10):
            img(base / name / f"{i}.png")
    (base / ".hidden").mkdir()
    img(base / "noise.png")  # loose files next to the class folders are ignored
    img(tmp_path / "wrapper" / "__MACOSX" / "FractalDB-60" / "x" / "._0.png")
    for load in (load_folder, load_fractals):
        split = load(tmp_path)
        # classes in folder-name order; a bare number stays a name
        assert split.classes == ["00007", "sierpinski gasket", "koch curve", "dragon curve"]
        assert counts(split.test, 4) == [3] * 4 and counts(split.train, 4) == [7] * 4
        assert split == load(tmp_path)
    assert humanize("01_TUMOR") == "TUMOR" and humanize("12-big_cat") == "big cat" and humanize("42") == "42"

    with raises_one_line(r"An image folder not found under .*one sub-folder of images per class"):
        load_folder(tmp_path / "wrapper" / "FractalDB-60" / "00007")
    for bad in ("0", 1.0, "x"):
        with raises_one_line(r"test fraction .* must be"):
            load_folder(tmp_path, test_fraction=bad)


def test_folder_with_train_test_folders(tmp_path):
    for part, n in (("train", 3), ("val", 1), ("test", 2)):
        for cls in ("01_cat", "02_dog"):
            for i in range(n):
                img(tmp_path / part / cls / f"{i}.jpg")
    split = load_folder(tmp_path)
    assert split.classes == ["cat", "dog"]
    assert counts(split.train, 2) == [3, 3] and counts(split.val, 2) == [1, 1] and counts(split.test, 2) == [2, 2]
    with raises_one_line(r"\(train/ and test/ folders\) has an official train/test split"):
        load_folder(tmp_path, test_fraction=0.3)


def test_folder_duplicate_names(tmp_path):
    for cls in ("01_cat", "02_cat"):
        img(tmp_path / cls / "0.png")
    with raises_one_line(r"both give the class name 'cat'"):
        load_folder(tmp_path)


# ------------------------------------------------------------------------------------------------
# prepare_dataset and the split file


def make_folder_dataset(root: Path, per_class=10):
    for cls in ("01_red_fox", "02_grey_wolf"):
        for i in range(per_class):
            img(root / cls / f"{i:02d}.png")


def test_prepare_writes_and_reuses_split(tmp_path):
    root = tmp_path / "ds"
    make_folder_dataset(root)
    path, split = prepare_dataset("folder", root, seed=0)
    assert path == (root / "gcpl_split_folder_seed0.json").absolute()
    obj = json.loads(path.read_text())
    assert obj["settings"] == {"dataset": "folder", "seed": 0, "test_fraction": 0.3}
    assert obj["classes"] == ["red fox", "grey wolf"]
    assert all(not Path(r["path"]).is_absolute() for r in obj["train"] + obj["test"])
    assert split == Split.from_json(path) and Path(split.train[0].path).is_absolute()
    assert class_counts(split) == {"red fox": {"train": 7, "test": 3}, "grey wolf": {"train": 7, "test": 3}}

    # new images after the first call do not change the split: the file is reused
    img(root / "01_red_fox" / "99.png")
    path2, again = prepare_dataset("folder", root, seed=0)
    assert path2 == path and again == split
    # another seed: another file, another draw
    path3, other = prepare_dataset("folder", root, seed=1)
    assert path3.name == "gcpl_split_folder_seed1.json"
    assert {s.path for s in other.test} != {s.path for s in split.test}
    # a non-default test fraction gets its own file
    path4, half = prepare_dataset("folder", root, seed=0, test_fraction=0.5)
    assert path4.name == "gcpl_split_folder_seed0_test0.5.json"
    assert class_counts(half)["red fox"] == {"train": 5, "test": 6}  # 11 * 0.5 rounds up
    # the preset's own fraction given explicitly is the default file
    assert prepare_dataset("folder", root, seed=0, test_fraction=0.3)[0] == path


def test_prepare_out_and_mismatch(tmp_path):
    root = tmp_path / "ds"
    make_folder_dataset(root)
    out = tmp_path / "splits" / "mine.json"
    path, split = prepare_dataset("folder", root, out=out, seed=2)
    assert path == out.absolute() and out.is_file()
    assert all(Path(r["path"]).is_absolute() for r in json.loads(out.read_text())["train"])  # not below
    outdir = tmp_path / "dir"
    outdir.mkdir()
    assert prepare_dataset("folder", root, out=outdir, seed=2)[0] == (outdir / "gcpl_split_folder_seed2.json").absolute()
    with raises_one_line(r"mine\.json was made for dataset 'folder', seed 2, test fraction 0\.3, not .*seed 3"):
        prepare_dataset("folder", root, out=out, seed=3)
    with raises_one_line(r"mine\.json was made for .*not dataset 'fractals'"):
        prepare_dataset("fractals", root, out=out, seed=2)
    # a split file without recorded settings (hand-made) is reused as is
    hand = tmp_path / "hand.json"
    Split(classes=split.classes, train=split.train[:2], test=split.test[:1]).to_json(hand)
    assert len(prepare_dataset("folder", root, out=hand, seed=5)[1].train) == 2
    # a reused split whose images are gone
    Path(split.test[0].path).unlink()
    with raises_one_line(r"mine\.json lists .*, which does not exist; .*delete the split file"):
        prepare_dataset("folder", root, out=out, seed=2)


def test_prepare_errors(tmp_path, monkeypatch):
    with raises_one_line(r"unknown dataset 'imagenet'; choose one of cars, flowers102"):
        prepare_dataset("imagenet", tmp_path)
    with raises_one_line(r"StanfordCars not found under .*devkit/cars_meta\.mat"):
        prepare_dataset("cars", tmp_path / "missing")
    with raises_one_line(r"StanfordCars has an official train/test split"):
        prepare_dataset("cars", tmp_path, test_fraction=0.2)
    with raises_one_line(r"test fraction for folder must be between 0 and 1"):
        prepare_dataset("folder", tmp_path, test_fraction=1.5)
    root = tmp_path / "ro"
    make_folder_dataset(root)
    monkeypatch.setattr(prepare_mod.os, "access", lambda *a, **k: False)
    with raises_one_line(r"cannot write the split file into .*ro \(not writable\).*out="):
        prepare_dataset("folder", root)
    assert prepare_dataset("folder", root, out=tmp_path / "x.json")[0].is_file()


def test_prepare_official_split_dataset(tmp_path):
    make_cars_devkit(tmp_path / "cars")
    path, split = prepare_dataset("stanford_cars", tmp_path / "cars", seed=0)  # an alias
    assert path.name == "gcpl_split_cars_seed0.json"
    assert json.loads(path.read_text())["settings"]["test_fraction"] is None
    check_cars(split, tmp_path / "cars")
    assert class_counts(split)[CAR_NAMES[2]] == {"train": 2, "test": 2}


# ------------------------------------------------------------------------------------------------
# the dataset registry


def test_registry_table1():
    expected = {
        "cars": ("A photo of {}, a type of car.", "car", None),
        "flowers102": ("A photo of {}, a type of flower.", "flower", None),
        "cornseeds": ("A photo of {} corn seed.", "seed", 0.3),
        "crc5k": ("{} tissue.", "tissue", 0.5),
        "isic2018": ("{} skin lesion.", "skin", 0.3),
        "lc25000": ("{} tissue.", "tissue", 0.3),
        "fractals": ("{} fractal.", "fractal", 0.3),
        "folder": ("A photo of {}.", "object", 0.3),
    }
    assert {n: (p.template, p.init_word, p.test_fraction) for n, p in DATASETS.items()} == expected
    loaders = {
        "cars": load_cars, "flowers102": load_flowers102, "cornseeds": load_cornseeds, "crc5k": load_crc5k,
        "isic2018": load_isic2018, "lc25000": load_lc25000, "fractals": load_fractals, "folder": load_folder,
    }
    for name, p in DATASETS.items():
        assert p.name == name and p.loader is loaders[name]
        assert p.description and p.download and p.layout and p.title
    assert DATASETS["cars"].prompt("AM General Hummer SUV 2000") == "A photo of AM General Hummer SUV 2000, a type of car."
    assert get_dataset("Flowers").name == "flowers102"
    with raises_one_line(r"unknown dataset 'x'"):
        get_dataset("x")
