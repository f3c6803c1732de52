"""The dataset registry: a dataset is one decorated loader; names are unique; the order is fixed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gcpl.data.folders import class_folders, class_name
from gcpl.data.loaders import (
    DATASETS,
    DatasetInfo,
    catalog,
    get_dataset,
    load_cars,
    prepare_dataset,
    register_dataset,
)
from gcpl.data.loaders.common import root_and_fraction, split_class_folders
from gcpl.data.splits import Split
from gcpl.errors import GcplError
from gcpl.registry import Registry

ORDER = ("cars", "flowers102", "cornseeds", "crc5k", "isic2018", "lc25000", "fractals", "folder")


def shapes_folder(root: Path, per_class: int = 4) -> Path:
    for k, shape in enumerate(["circle", "square"]):
        for i in range(per_class):
            (root / shape).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * k, 10 * i, 0)).save(root / shape / f"{i}.png")
    return root


def test_a_new_dataset_is_one_decorated_loader(tmp_path, monkeypatch):
    fresh: Registry[DatasetInfo] = Registry("dataset")
    for name, info in DATASETS.items():
        fresh.add(name, info)
    monkeypatch.setattr(catalog, "DATASETS", fresh)  # what the test registers goes away with it

    @register_dataset(
        DatasetInfo(
            name="tinyshapes", title="Tiny shapes", aliases=("tiny", "shapes"),
            template="A photo of a {} shape.", init_word="shape", test_fraction=0.5,
            layout="""one folder of images per shape
                (circle/, square/)""",
            download="draw them",
            description="Two drawn shapes, seeded stratified split (test 0.5).",
        )
    )
    def load_tinyshapes(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
        root, frac = root_and_fraction("tinyshapes", root, test_fraction)
        folders = class_folders(root)
        return split_class_folders("tinyshapes", folders, [class_name(f.name) for f in folders], root, seed, frac)

    info = get_dataset(" Tiny ")
    assert info is fresh["tinyshapes"] and info.loader is load_tinyshapes
    assert info.layout == "one folder of images per shape (circle/, square/)"  # prose: white space folded
    assert fresh.names() == (*ORDER, "tinyshapes")
    assert info.prompt("circle") == "A photo of a circle shape."

    root = shapes_folder(tmp_path / "shapes")
    path, split = prepare_dataset("shapes", root, seed=3)
    assert path == root / "gcpl_split_tinyshapes_seed3.json"
    assert split.classes == ["circle", "square"]
    assert [s.label for s in split.train] == [0, 0, 1, 1] and [s.label for s in split.test] == [0, 0, 1, 1]
    assert split == Split.from_json(path) == info.loader(root, seed=3)

    with pytest.raises(GcplError, match=r"Tiny shapes not found under .*: expected one folder of images per shape"):
        load_tinyshapes(tmp_path / "missing")

    monkeypatch.undo()
    assert "tinyshapes" not in DATASETS and DATASETS.names() == ORDER
    with pytest.raises(GcplError, match="unknown dataset 'tiny'"):
        get_dataset("tiny")


def test_a_name_registered_twice_raises():
    def load_again(root, seed=0, test_fraction=None):  # pragma: no cover - never registered
        raise AssertionError

    with pytest.raises(ValueError, match="dataset 'cars' is registered twice"):
        register_dataset(dataclasses.replace(DATASETS["cars"], loader=None))(load_again)
    assert DATASETS.names() == ORDER and DATASETS["cars"].loader is load_cars

    fresh: Registry[DatasetInfo] = Registry("dataset")
    fresh.register("x", lambda f: f)(load_again)
    with pytest.raises(ValueError, match="dataset 'x' is registered twice"):
        fresh.register("x", lambda f: f)(load_again)


def test_registration_order_does_not_depend_on_what_is_imported_first():
    assert DATASETS.names() == ORDER
    code = (
        "import gcpl.data.loaders.folder, gcpl.data.loaders.medical\n"
        "from gcpl.data.loaders import DATASETS\n"
        "print(','.join(DATASETS.names()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ",".join(ORDER)
