"""Fail when a deliberate copy of a function or class has drifted from its source.

    python tools/check_copies.py [--fix] [--root DIR]

A deliberate copy carries a comment on the line before its `def` / `class` naming its source by
its dotted path (like diffusers' utils/check_copies.py):

    # Copied from gcpl.losses.add_noise
    # Copied from gcpl.settings.plain with plain->as_plain, dataclass->record
    # Copied from gcpl.classify.DiffusionClassifier.score with DiffusionClassifier->Racer all-casing

The source is looked up as a module under src/, tools/ or bench/ (the longest dotted prefix that
is a module, the rest a class and its members), its code re-indented to the copy's indentation
and, with `with a->b[, c->d]`, those replacements applied in order (`all-casing`: also their
lower- and upper-case forms). Every `.py` file under src/, tools/, bench/ and tests/ is scanned
(real comments only: a "# Copied from" inside a string does not count). One line per copy that
differs or whose source cannot be found, exit status 1; `--fix` rewrites the drifted copies from
their sources instead (an unknown source still fails). Exit 0 when every copy matches.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

SCANNED = ("src", "tools", "bench", "tests")
SOURCE_ROOTS = ("src", "tools", "bench")
_MARK = re.compile(r"^#\s*Copied from\s+(?P<name>[A-Za-z_][\w.]*)(?:\s+with\s+(?P<with>.+?))?\s*$")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class Copy:
    """One marked copy: the comment's line (1-based) and the def/class lines it covers (0-based, end exclusive)."""

    path: Path
    line: int
    source: str
    replacements: list[tuple[str, str]]
    all_casing: bool
    start: int
    end: int


def parse_replacements(text: str | None) -> tuple[list[tuple[str, str]], bool]:
    """`a->b, c->d [all-casing]` -> ([(a, b), (c, d)], all_casing)."""
    if not text:
        return [], False
    all_casing = text.rstrip().endswith("all-casing")
    if all_casing:
        text = text.rstrip()[: -len("all-casing")]
    pairs = []
    for part in text.split(","):
        old, sep, new = part.strip().partition("->")
        if not sep or not old:
            raise ValueError(f"bad replacement {part.strip()!r} (expected old->new)")
        pairs.append((old, new.strip()))
    return pairs, all_casing


def _lines_of(node: ast.AST) -> tuple[int, int]:
    """0-based [start, end) of a def/class: its `def` line (decorators excluded) to its last line."""
    return node.lineno - 1, node.end_lineno


def marked_copies(path: Path) -> list[Copy]:
    """The `# Copied from` comments of a file, each with the def/class on the next line."""
    text = path.read_text()
    marks = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT and (m := _MARK.match(tok.string)):
            marks[tok.start[0]] = m
    if not marks:
        return []
    defs = {n.lineno: n for n in ast.walk(ast.parse(text, str(path))) if isinstance(n, _DEFS)}
    out = []
    for line, m in sorted(marks.items()):
        node = defs.get(line + 1)
        start, end = _lines_of(node) if node is not None else (line, line)
        pairs, all_casing = parse_replacements(m["with"])
        out.append(Copy(path, line, m["name"], pairs, all_casing, start, end))
    return out


def find_source(root: Path, dotted: str) -> list[str] | None:
    """The lines of the function or class `dotted` names (module path, then class/member names),
    looked up under root's source folders; None when there is no such object."""
    parts = dotted.split(".")
    for base in SOURCE_ROOTS:
        for k in range(len(parts) - 1, 0, -1):
            stem = root / base / Path(*parts[:k])
            for file in (stem.with_suffix(".py"), stem / "__init__.py"):
                if file.is_file():
                    lines = _object_lines(file, parts[k:])
                    if lines is not None:
                        return lines
    return None


def _object_lines(file: Path, names: list[str]) -> list[str] | None:
    text = file.read_text()
    body = ast.parse(text, str(file)).body
    node = None
    for name in names:
        node = next((n for n in body if isinstance(n, _DEFS) and n.name == name), None)
        if node is None:
            return None
        body = node.body
    start, end = _lines_of(node)
    return text.splitlines()[start:end]


def _reindent(lines: list[str], indent: str) -> list[str]:
    first = lines[0]
    strip = len(first) - len(first.lstrip())
    return [indent + line[strip:] if line.strip() else "" for line in lines]


def _replace(text: str, pairs: list[tuple[str, str]], all_casing: bool) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
        if all_casing:
            text = text.replace(old.lower(), new.lower()).replace(old.upper(), new.upper())
    return text


def expected(copy: Copy, source: list[str], copy_lines: list[str]) -> list[str]:
    """What the copy should read: the source at the copy's indentation, replacements applied."""
    indent = copy_lines[copy.start][: len(copy_lines[copy.start]) - len(copy_lines[copy.start].lstrip())]
    return _replace("\n".join(_reindent(source, indent)), copy.replacements, copy.all_casing).split("\n")


def check_file(root: Path, path: Path, fix: bool) -> list[str]:
    """Problems of one file's copies ('path:line: ...'); with fix, drifted copies are rewritten."""
    problems = []
    try:
        copies = marked_copies(path)
    except (SyntaxError, ValueError, tokenize.TokenError) as e:
        return [f"{_shown(root, path)}: {e}"]
    if not copies:
        return []
    lines = path.read_text().splitlines()
    fixed = False
    for c in reversed(copies):  # from the bottom up: a fix keeps the line numbers above it valid
        where = f"{_shown(root, path)}:{c.line}"
        if c.start == c.end:
            problems.append(f"{where}: '# Copied from {c.source}' is not followed by a def or class")
            continue
        source = find_source(root, c.source)
        if source is None:
            problems.append(f"{where}: source {c.source} not found")
            continue
        want = expected(c, source, lines)
        have = [x.rstrip() for x in lines[c.start:c.end]]
        if [x.rstrip() for x in want] == have:
            continue
        if fix:
            lines[c.start:c.end] = want
            fixed = True
            problems.append(f"{where}: fixed the copy of {c.source}")
        else:
            problems.append(f"{where}: copy of {c.source} differs from its source (run tools/check_copies.py --fix)")
    if fixed:
        path.write_text("\n".join(lines) + "\n")
    return problems[::-1]


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fix", action="store_true", help="rewrite drifted copies from their sources")
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                   help="repository root (default: this checkout)")
    a = p.parse_args(argv)
    root = a.root.resolve()
    files = sorted(f for d in SCANNED if (root / d).is_dir() for f in (root / d).rglob("*.py"))
    problems = [x for f in files for x in check_file(root, f, a.fix)]
    for x in problems:
        print(x)
    failed = [x for x in problems if ": fixed the copy of " not in x]
    if not problems:
        print(f"every marked copy matches its source ({len(files)} files)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
