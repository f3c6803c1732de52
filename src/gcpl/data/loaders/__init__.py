"""Dataset loaders: each dataset as its owners distribute it -> one canonical `Split`, and the
registry of the datasets gcpl knows (`DATASETS`, `get_dataset`: Table 1 prompt and initialiser
word, layout, download address, default test fraction, loader). Each loader registers its dataset
where it is defined, with `@register_dataset(DatasetInfo(...))` (catalog.py); one module per
dataset family (cars.py, flowers.py, cornseeds.py, medical.py, folder.py), shared pieces in
common.py.

    from gcpl.data.loaders import prepare_dataset, class_counts
    path, split = prepare_dataset("cars", "/data/stanford_cars", seed=0)

`prepare_dataset` writes (or reuses) the split JSON; the per-dataset loaders (`load_cars`, ...,
all `(root, seed=0, test_fraction=None) -> Split`) only read.
"""

from .catalog import DATASETS, DatasetInfo, get_dataset, register_dataset
from .common import stratified_split
from .matfile import loadmat
from .prepare import class_counts, prepare_dataset, split_file_name

# Importing a loader module registers its datasets: this order is the order of DATASETS (help
# texts, tables), so it is kept by hand. A new dataset family: a module here, imported below.
# isort: off
from .cars import load_cars
from .flowers import load_flowers102
from .cornseeds import load_cornseeds
from .medical import load_crc5k, load_isic2018, load_lc25000
from .folder import load_folder, load_fractals
# isort: on

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
    "register_dataset",
    "split_file_name",
    "stratified_split",
]
