"""Dataset loaders: each dataset as its owners distribute it -> one canonical `Split`, and the
registry of the datasets gcpl knows (`DATASETS`, `get_dataset`: Table 1 prompt and initialiser
word, layout, download address, default test fraction, loader).

    from gcpl.data.loaders import prepare_dataset, class_counts
    path, split = prepare_dataset("cars", "/data/stanford_cars", seed=0)

`prepare_dataset` writes (or reuses) the split JSON; the per-dataset loaders (`load_cars`, ...,
all `(root, seed=0, test_fraction=None) -> Split`) only read.
"""

from .common import stratified_split
from .datasets import (
    DATASETS,
    DatasetInfo,
    get_dataset,
    load_cars,
    load_cornseeds,
    load_crc5k,
    load_flowers102,
    load_folder,
    load_fractals,
    load_isic2018,
    load_lc25000,
)
from .matfile import loadmat
from .prepare import class_counts, prepare_dataset, split_file_name

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "class_counts",
    "get_dataset",
    "load_cars",
    "load_cornseeds",
    "load_crc5k",
    "load_flowers102",
    "load_folder",
    "load_fractals",
    "load_isic2018",
    "load_lc25000",
    "loadmat",
    "prepare_dataset",
    "split_file_name",
    "stratified_split",
]
