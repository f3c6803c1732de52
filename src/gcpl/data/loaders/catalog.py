"""The datasets gcpl knows: `DatasetInfo` (one dataset's facts), the `DATASETS` registry, the
`@register_dataset(DatasetInfo(...))` decorator that each loader wears, and `get_dataset`.

A dataset is registered where its loader is defined (cars.py, flowers.py, ...). The package's
`__init__` imports every loader module, and Python runs it before any of its submodules, so the
registry is full before anything can look a name up; its import order is the order of `DATASETS`
(help texts, tables).

Every loader has the signature ``load_x(root, seed=0, test_fraction=None) -> Split`` and returns
absolute sample paths. Datasets with an official split (StanfordCars, Flowers102, a folder with
train/ and test/) refuse a test fraction; the others draw a seeded stratified split
(`common.stratified_split`), ``test_fraction=None`` meaning the dataset's default
(`DatasetInfo.test_fraction`). The defaults follow the authors' code (0.3 for ISIC2018 / LC25000 /
FractalDB-60, 0.5 for CRC5k); 0.3 is gcpl's choice for corn seeds and plain folders (the paper does
not state them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ...errors import GcplError
from ...registry import Registry
from ..splits import Split

Loader = Callable[..., Split]
L = TypeVar("L", bound=Loader)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset gcpl knows: the paper's Table 1 prompt and initialiser word (the `folder` entry's
    generic ones are gcpl's choice), where to get it and how it must be laid out, and its loader
    `(root, seed=0, test_fraction=None) -> Split` (filled in by `register_dataset`)."""

    name: str
    title: str
    aliases: tuple[str, ...]
    template: str  # one {} for the class: the paper's Table 1 (flowers and folder: gcpl's choice)
    init_word: str  # single-token word initialising the learned class tokens (Table 1 = released code)
    test_fraction: float | None  # default held-out fraction; None: the dataset has an official split
    layout: str  # what the folder must hold (prose: see __post_init__)
    download: str  # where to get it (prose)
    description: str  # (prose)
    loader: Loader | None = None  # set by `register_dataset`
    code_template: str | None = None  # the released code's template (src/diffusion/templates.json) where it differs

    def __post_init__(self) -> None:
        # layout, download and description are prose, written as wrapped text: white space folded
        for name in ("layout", "download", "description"):
            object.__setattr__(self, name, " ".join(getattr(self, name).split()))

    def prompt(self, class_name: str) -> str:
        return self.template.format(class_name)

    def template_for(self, preset: str) -> str:
        """The `paper` preset trains and classifies with the released code's template."""
        return self.code_template if preset == "paper" and self.code_template else self.template


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> Callable[[L], L]:
    """Decorator on a loader `(root, seed=0, test_fraction=None) -> Split`: registers `info` with
    that loader under `info.name` (a name registered twice: ValueError) and returns the loader."""
    return DATASETS.register(info.name, lambda f: dataclasses.replace(info, loader=f))


def get_dataset(name: str) -> DatasetInfo:
    """A dataset by name or alias (case-insensitive); a one-line error lists the known ones."""
    key = str(name).strip().lower()
    for d in DATASETS.values():
        if key == d.name or key in d.aliases:
            return d
    raise GcplError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
