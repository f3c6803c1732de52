"""Oxford Flowers102 as distributed: `jpg/`, `imagelabels.mat` and `setid.mat`; the official
train/val/test split."""

from __future__ import annotations

from pathlib import Path

from ...errors import GcplError
from ..splits import Sample, Split
from . import names as N
from .catalog import DatasetInfo, register_dataset
from .common import as_int, find_dir, find_file, mat_var, not_found, official_root
from .matfile import loadmat


@register_dataset(
    DatasetInfo(
        name="flowers102", title="Flowers102", aliases=("flowers", "oxford_flowers102"),
        template="A photo of {}, a type of flower.", init_word="flower", test_fraction=None,
        code_template="a photo of a {}, a type of flower.",
        layout="jpg/image_00001.jpg ..., imagelabels.mat and setid.mat (or the same under flowers-102/)",
        download="""download 102flowers.tgz, imagelabels.mat and setid.mat from
            https://www.robots.ox.ac.uk/~vgg/data/flowers/102/""",
        description="Oxford Flowers102: 102 flower species, official train/val/test split.",
    )
)
def load_flowers102(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> Split:
    root = official_root("flowers102", root, test_fraction)
    labels_file = find_file(root, "imagelabels.mat")
    setid = find_file(root, "setid.mat")
    if labels_file is None or setid is None:
        raise not_found("flowers102", root)
    jpg = find_dir(labels_file.parent, "jpg") or find_dir(root, "jpg")
    if jpg is None:
        raise not_found("flowers102", root, f"found {labels_file.name} but no jpg/ folder")
    raw = mat_var(labels_file, "labels")
    if not isinstance(raw, list):
        raise GcplError(f"{labels_file}: 'labels' is not a numeric vector")
    labels = []
    for i, v in enumerate(raw):
        lab = as_int(v, f"{labels_file}: labels[{i + 1}]")
        if not 1 <= lab <= len(N.FLOWERS102):
            raise GcplError(
                f"{labels_file}: image {i + 1} has label {lab}, outside 1..{len(N.FLOWERS102)}"
            )
        labels.append(lab - 1)
    ids = loadmat(setid)
    parts = {}
    for part, var in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        if var not in ids or not isinstance(ids[var], list):
            raise GcplError(f"{setid} has no numeric variable {var!r}; expected trnid, valid and tstid")
        samples = []
        for v in ids[var]:
            n = as_int(v, f"{setid}: {var}")
            if not 1 <= n <= len(labels):
                raise GcplError(
                    f"{setid}: {var} lists image {n}, but {labels_file.name} has labels for "
                    f"1..{len(labels)}"
                )
            p = jpg / f"image_{n:05d}.jpg"
            if not p.is_file():
                raise GcplError(f"{setid} lists image {n}, but {p} does not exist")
            samples.append(Sample(str(p), labels[n - 1], N.FLOWERS102[labels[n - 1]]))
        parts[part] = sorted(samples, key=lambda s: s.path)
    return Split(classes=list(N.FLOWERS102), **parts)
