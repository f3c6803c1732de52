"""tools/check_copies.py: a marked copy that matches its source passes, a drifted one fails with
one line naming it, --fix rewrites it from the source, and this repository's copies all match."""

from __future__ import annotations

import textwrap
from pathlib import Path

import check_copies
import pytest

SOURCE = '''
def scale(values, factor):
    """Multiply every value by factor."""
    return [v * factor for v in values]


class Box:
    @property
    def size(self):
        return 2

    def area(self, w, h):
        return w * h
'''

FAITHFUL = '''
import os


# Copied from fakepkg.maths.scale with factor->ratio
def scale(values, ratio):
    """Multiply every value by ratio."""
    return [v * ratio for v in values]


class Other:
    # Copied from fakepkg.maths.Box.area
    def area(self, w, h):
        return w * h


NOTE = """
# Copied from fakepkg.nowhere.thing  (inside a string: not a mark)
"""
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "src" / "fakepkg").mkdir(parents=True)
    (tmp_path / "src" / "fakepkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "fakepkg" / "maths.py").write_text(textwrap.dedent(SOURCE))
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "helper.py").write_text(FAITHFUL)
    return tmp_path


def run(root: Path, *args: str) -> int:
    return check_copies.main(["--root", str(root), *args])


def test_faithful_copies_pass(repo, capsys):
    assert run(repo) == 0
    assert "every marked copy matches" in capsys.readouterr().out


def test_a_drifted_copy_fails_with_one_line(repo, capsys):
    helper = repo / "tools" / "helper.py"
    helper.write_text(FAITHFUL.replace("[v * ratio for v in values]", "[v * ratio + 1 for v in values]"))
    assert run(repo) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["tools/helper.py:5: copy of fakepkg.maths.scale differs from its source "
                     "(run tools/check_copies.py --fix)"]


def test_fix_rewrites_the_copy(repo, capsys):
    helper = repo / "tools" / "helper.py"
    helper.write_text(FAITHFUL.replace("        return w * h", "        return h * w"))
    assert run(repo) == 1
    assert "copy of fakepkg.maths.Box.area differs" in capsys.readouterr().out
    assert run(repo, "--fix") == 0
    assert "tools/helper.py:12: fixed the copy of fakepkg.maths.Box.area" in capsys.readouterr().out
    assert helper.read_text() == FAITHFUL
    assert run(repo) == 0


def test_a_source_that_moved_fails(repo, capsys):
    (repo / "tools" / "helper.py").write_text(FAITHFUL.replace("fakepkg.maths.scale", "fakepkg.gone.scale"))
    assert run(repo, "--fix") == 1
    assert capsys.readouterr().out.splitlines() == ["tools/helper.py:5: source fakepkg.gone.scale not found"]


def test_replacements_and_all_casing():
    assert check_copies.parse_replacements("A->B, c->d all-casing") == ([("A", "B"), ("c", "d")], True)
    assert check_copies._replace("Foo foo FOO", [("Foo", "Bar")], True) == "Bar bar BAR"
    with pytest.raises(ValueError, match="old->new"):
        check_copies.parse_replacements("nothing")


def test_this_repository_passes(capsys):
    assert check_copies.main([]) == 0, capsys.readouterr().out
