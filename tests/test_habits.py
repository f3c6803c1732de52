"""Habits CI keeps: no import cycle in the package (function-local imports included)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "tools" / "check_imports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_package_has_no_import_cycle(capsys):
    assert _checker().main([str(REPO / "src" / "gcpl")]) == 0, capsys.readouterr().out


def test_a_cycle_behind_a_function_local_import_is_found(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    return a\n")
    (pkg / "c.py").write_text("import pkg.a\n")  # imports into the cycle, not part of it
    assert _checker().main([str(pkg)]) == 1
    out = capsys.readouterr().out
    assert "import cycle among 2 modules: pkg.a -> pkg.sub.b; pkg.sub.b -> pkg.a" in out
