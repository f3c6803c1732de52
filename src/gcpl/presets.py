"""Dataset presets: the prompt template and initializer word of the paper's Table 1, per dataset.

`template` has one `{}` slot for the class name (`Preset.prompt(name)` fills it); `init_word` is
the word whose embedding initializes the learned class token; `test_fraction` is the default
held-out fraction for datasets without an official split (None: the dataset has one);
`loader(root, seed=0, test_fraction=None) -> Split` reads the dataset as distributed.

The `folder` preset (any folder with one sub-folder per class) is not in the paper: its generic
template "A photo of {}." and initializer "object" are our choice, as is its 0.3 test fraction
(and cornseeds' 0.3, which the paper does not state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .data.loaders import class_counts, prepare_dataset
from .data.loaders.datasets import DEFAULT_TEST_FRACTION, EXPECTED, HINTS, LOADERS
from .data.splits import Split
from .errors import GcplError

__all__ = ["ALIASES", "PRESETS", "Preset", "class_counts", "get_preset", "prepare_dataset"]


@dataclass(frozen=True)
class Preset:
    name: str
    template: str
    init_word: str
    test_fraction: float | None
    loader: Callable[..., Split]
    description: str
    download_hint: str

    def prompt(self, class_name: str) -> str:
        return self.template.format(class_name)


def _preset(name: str, template: str, init_word: str, description: str) -> Preset:
    return Preset(
        name=name,
        template=template,
        init_word=init_word,
        test_fraction=DEFAULT_TEST_FRACTION[name],
        loader=LOADERS[name],
        description=f"{description} Layout: {EXPECTED[name]}.",
        download_hint=HINTS[name],
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "cars", "A photo of {}, a type of car.", "car",
            "StanfordCars: 196 car models (make, model, year), official train/test split.",
        ),
        _preset(
            "flowers102", "A photo of {}, a type of flower.", "flower",
            "Oxford Flowers102: 102 flower species, official train/val/test split.",
        ),
        _preset(
            "cornseeds", "A photo of {} corn seed.", "seed",
            "Corn seeds: 4 kernel conditions (pure, broken, discolored, silkcut), "
            "seeded stratified split (test 0.3).",
        ),
        _preset(
            "crc5k", "{} tissue.", "tissue",
            "Kather 2016 colorectal cancer texture tiles: 8 tissue types, "
            "seeded stratified split (test 0.5).",
        ),
        _preset(
            "isic2018", "{} skin lesion.", "skin",
            "ISIC 2018 task 3 dermoscopy: 7 lesion diagnoses, seeded stratified split of the "
            "training set (test 0.3).",
        ),
        _preset(
            "lc25000", "{} tissue.", "tissue",
            "LC25000 lung and colon histopathology: 5 classes, seeded stratified split (test 0.3).",
        ),
        _preset(
            "fractals", "{} fractal.", "fractal",
            "FractalDB-60: 60 fractal categories, one folder each, seeded stratified split "
            "(test 0.3).",
        ),
        _preset(
            "folder", "A photo of {}.", "object",
            "Any image folder with one sub-folder per class (names: folder names with a numeric "
            "prefix like 01_ removed and underscores as spaces), seeded stratified split "
            "(test 0.3) unless it has train/ and test/ folders.",
        ),
    )
}

ALIASES = {
    "stanford_cars": "cars",
    "stanfordcars": "cars",
    "flowers": "flowers102",
    "oxford_flowers102": "flowers102",
    "seeds": "cornseeds",
    "corn": "cornseeds",
    "crc": "crc5k",
    "kather": "crc5k",
    "colorectal": "crc5k",
    "isic": "isic2018",
    "skin": "isic2018",
    "lc25k": "lc25000",
    "lungcolon": "lc25000",
    "fractal": "fractals",
    "fractaldb60": "fractals",
    "fractaldb-60": "fractals",
}


def get_preset(name: str) -> Preset:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        raise GcplError(f"unknown dataset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]
