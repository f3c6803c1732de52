"""Corn seeds (Kaggle's kernel images): `train.csv` with the images it lists, or one folder per
kernel condition; a seeded stratified split that keeps both views of one kernel together."""

from __future__ import annotations

from pathlib import Path

from ...errors import GcplError
from ..folders import class_name
from ..splits import Sample, Split
from . import names as N
from .catalog import DatasetInfo, register_dataset
from .common import (
    ImageIndex,
    find_file,
    read_csv_dicts,
    root_and_fraction,
    split_coded_folders,
    stratified_split,
)


@register_dataset(
    DatasetInfo(
        name="cornseeds", title="Corn seeds", aliases=("seeds", "corn"),
        template="A photo of {} corn seed.", init_word="seed", test_fraction=0.3,
        code_template="A photo of a {}, a type of corn seed.",
        layout="""train.csv (columns image,label) with the images it lists, or one folder per class named pure, broken,
            discolored, silkcut""",
        download="""download the corn kernel images (train.csv + train/) from
            https://www.kaggle.com/competitions/kaggle-pog-series-s01e03/data""",
        description="""Corn seeds: 4 kernel conditions (pure, broken, discolored, silkcut),
            seeded stratified split (test 0.3).""",
    )
)
def load_cornseeds(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root, frac = root_and_fraction("cornseeds", root, test_fraction)
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
    by_code = {c: c for c in classes}
    return split_coded_folders("cornseeds", root, by_code, lambda n: class_name(n).lower(), seed, frac, max_depth=2)
