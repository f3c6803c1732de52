"""The image sets of a CLIP run: the training pool the shots come from, the test images, and the
validation images the methods that search hyperparameters choose them on. No support image is
ever a test or validation image, and no test image is ever a validation image.

- Data: a split JSON (its train list is the pool, its test list the test set, its val list the
  validation pool), or a class-per-folder directory. A folder without `test_data` is split as
  `gcpl prepare --dataset folder` splits it (its train/ and test/ folders, else a stratified split
  seeded with FOLDER_SPLIT_SEED, test fraction 0.3), and the run writes the split it used into
  its folder (data_split.json).
- Validation (`validation.source` split, the official protocol): the split's val list (Flowers102's
  official val split, the val part of any split file), else a val part drawn from the training
  pool: in each class, round(fraction * its images) (at least 1) of its images that are not
  support images, seeded with VAL_SEED (one val part per split for every seed, as CoOp's fixed
  split files, whose val part is 20% of the training images: split_trainval). Per method:
  Tip-Adapter(-F) search on all of it (gaopengcuhk/Tip-Adapter main.py:170, the dataset's whole
  val split), the linear probe on min(shots, validation.shots) images per class of it drawn with
  the run's seed (KaiyangZhou/CoOp lpclip/linear_probe.py:25, 43-51). Where no image is left
  outside the support set, and with `validation.source` shots, they cross-validate on the shots.
  The prompt learners validate on nothing: Dassl tests the last epoch (TEST.FINAL_MODEL
  "last_step", htyao89/KgCoOp Dassl.ProGrad.pytorch/dassl/config/defaults.py:211).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..data.loaders import get_dataset
from ..data.splits import Sample, Split, few_shot, read_samples, seeded_subset
from ..errors import GcplError
from .config import ClipJob

FOLDER_SPLIT_SEED = 0
VAL_SEED = 0
#: what each method validates on: "all" the validation images, "few" per class, or nothing
VALIDATES = {"linear-probe": "few", "tip-adapter": "all", "tip-adapter-f": "all"}
NOTHING = {"clip-zs": "none: nothing to choose"}
LAST_EPOCH = "none: the last epoch is tested (Dassl's TEST.FINAL_MODEL last_step)"


@dataclass
class RunData:
    classes: list[str]
    pool: list[Sample]  # the training pool the shots are drawn from
    test: list[Sample]  # the scored test images (the --limit subset)
    val: list[Sample]  # the split's val list ([] when it has none)
    split: Split | None = None  # the split this run drew from a class folder (written to the run folder)


def _split_folder(path: Path) -> Split:
    split = get_dataset("folder").loader(path, seed=FOLDER_SPLIT_SEED)
    if not split.test:
        raise GcplError(f"{path} is a class folder that gives no test image when split; give test images as "
                        "--test-data, or a split JSON")
    return split


def run_data(job: ClipJob) -> RunData:
    """The pool, test and val images of a job (test images checked against the training classes)."""
    path, split = Path(job.data), None
    if path.is_dir() and job.test_data is None:
        split = _split_folder(path)
        classes, pool, val, test_from = list(split.classes), split.train, split.val, split.test
    else:
        classes, pool = read_samples(job.data, "train")
        val = Split.from_json(path).val if path.suffix.lower() == ".json" and path.is_file() else []
        test_from = read_samples(job.test_data or job.data, "test")[1]
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.class_name for s in test_from} - set(index))
    if unknown:
        raise GcplError(f"test class {unknown[0]!r} is not among the {len(classes)} training classes "
                        f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); drop it from the test data")
    test = [Sample(s.path, index[s.class_name], s.class_name) for s in test_from]
    return RunData(classes, list(pool), seeded_subset(test, job.limit, job.test_seed), list(val), split)


def _ordered(samples: list[Sample], seed: int) -> list[Sample]:
    """Every sample, grouped by class, each class in a seeded order (gcpl.data.splits.few_shot)."""
    if not samples:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer than --shots": all of them is what is asked
        return few_shot(samples, len(samples), seed, allow_fewer=True)


def _first(samples: list[Sample], cap) -> list[Sample]:
    """The first cap(label) samples of each class, in the given order."""
    used: dict[int, int] = {}
    out = []
    for s in samples:
        if used.get(s.label, 0) < cap(s.label):
            used[s.label] = used.get(s.label, 0) + 1
            out.append(s)
    return out


def drawn_val(pool: list[Sample], support: list[Sample], fraction: float) -> list[Sample]:
    """The val part of a training pool: per class the first round(fraction * n) (at least 1) of its
    images in a VAL_SEED order that are not support images (so every seed has the same val part
    but where its own shots fall into it)."""
    taken = {s.path for s in support}
    sizes: dict[int, int] = {}
    for s in pool:
        sizes[s.label] = sizes.get(s.label, 0) + 1
    rest = [s for s in _ordered(pool, VAL_SEED) if s.path not in taken]
    return _first(rest, lambda label: max(1, round(fraction * sizes[label])))


def validation_set(job: ClipJob, data: RunData, support: list[Sample]) -> tuple[list[Sample] | None, dict]:
    """(the method's validation images, or None to cross-validate on the shots / validate on
    nothing; what it validates on, as config.json records it)."""
    kind = VALIDATES.get(job.method)
    if kind is None:
        return None, {"on": NOTHING.get(job.method, LAST_EPOCH), "images": 0}
    v = job.clip.validation
    folds = {"on": "folds of the support shots (cross-validation)", "images": 0}
    if v.source == "shots":
        return None, folds
    taken = {s.path for s in support}
    if data.val:
        pool, where = [s for s in data.val if s.path not in taken], "the split's val list"
    else:
        pool = drawn_val(data.pool, support, v.fraction)
        where = f"a val part of the training pool ({v.fraction:g} of each class, support images excluded)"
    if kind == "few":
        per_class = min(job.shots, v.shots)
        pool = _first(_ordered(pool, job.seed), lambda label: per_class)
        where += f", {per_class} per class"
    if not pool:
        folds["on"] += " (no image outside the support set to validate on)"
        return None, folds
    return pool, {"on": where, "images": len(pool)}


def check_apart(support: list[Sample], val: list[Sample] | None, test: list[Sample]) -> None:
    """One-line errors when a support or validation image is also a test image."""
    scored = {s.path for s in test}
    for what, group in (("support", support), ("validation", val or [])):
        both = [s.path for s in group if s.path in scored]
        if both:
            raise GcplError(f"{len(both)} {what} image(s) are also test images (e.g. {both[0]}); the test images must "
                            "be apart from the training pool and the val list")

