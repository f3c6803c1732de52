"""MATLAB ``.mat`` annotation files (StanfordCars' devkit, Flowers102's labels) through
``scipy.io.loadmat`` (the optional extra ``pip install 'gcpl[datasets]'``), as plain Python values
flattened in MATLAB's column-major order:

- numeric / logical array -> ``list`` of ``int`` / ``float`` (a 1x1 array is a one-element list)
- char array              -> ``str`` (one row), or ``list[str]`` (several rows)
- cell array              -> ``list`` of values
- struct (or object) array -> ``list`` of ``dict`` (field name -> value)

Array shapes are dropped: the annotation files only hold vectors and 1x1 scalars. MATLAB v7.3
files are HDF5 containers and are refused with a message saying how to re-save them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import GcplError


def _plain(value) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, np.ndarray):
        return value.item() if isinstance(value, np.generic) else value
    if value.dtype.names:  # struct array
        return [{k: _plain(rec[k]) for k in value.dtype.names} for rec in value.flatten(order="F")]
    if value.dtype.kind == "U":  # char array, one string per row
        rows = [str(r) for r in value.flatten(order="F")]
        return rows[0] if len(rows) == 1 else rows
    if value.dtype.kind == "O":  # cell array
        return [_plain(v) for v in value.flatten(order="F")]
    return [v.item() for v in value.flatten(order="F")]


def loadmat(path: str | Path) -> dict[str, Any]:
    """Every named variable of a MAT file (level 5: MATLAB -v6 / -v7) as plain Python values."""
    path = Path(path)
    try:
        head = path.read_bytes()[:128]
    except OSError as e:
        raise GcplError(f"cannot read {path}: {e.strerror or e}") from None
    if head[:4] == b"\x89HDF" or b"MATLAB 7.3" in head:
        raise GcplError(f"{path} is a MATLAB v7.3 (HDF5) file, which gcpl does not read; "
                        "re-save it in MATLAB with save(..., '-v7')")
    if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
        raise GcplError(f"{path} is not a MATLAB level-5 .mat file (bad header)")
    try:
        import scipy.io
    except ImportError:
        raise GcplError(f"reading {path.name} needs scipy: pip install 'gcpl[datasets]'") from None
    try:
        data = scipy.io.loadmat(str(path), chars_as_strings=True)
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds on a damaged file
        raise GcplError(f"{path} is not a readable MATLAB .mat file ({' '.join(str(e).split())[:200]})") from None
    return {k: _plain(v) for k, v in data.items() if not k.startswith("__")}
