"""How gcpl.data is cut into modules: small files, and the names other code imports still there."""

from __future__ import annotations

from pathlib import Path

import gcpl.data
from gcpl.data import fractals, ifs


def test_no_module_of_gcpl_data_is_over_400_lines():
    root = Path(gcpl.data.__file__).parent
    sizes = {p.relative_to(root).as_posix(): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_fractals_still_offers_the_ifs_names():
    for name in ("FractalClass", "NUISANCE", "VERSION", "FILL_MIN", "FILL_SIZE", "MIN_MAPS", "MAX_MAPS",
                 "probs_from_maps", "param_distance", "_accepted"):
        assert getattr(fractals, name) is getattr(ifs, name)
    for name in fractals.__all__:
        assert hasattr(fractals, name)
