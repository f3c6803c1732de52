"""The README is true: the "Your own images" shell block runs verbatim through bash (it makes its
own images with `gcpl fractals`), then every Python snippet runs verbatim (bundled models,
offline); every other `gcpl` command it shows (they need datasets or GPUs) parses with today's
options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _commands(block: str) -> list[list[str]]:
    """`gcpl ...` command lines of a bash block (continuations joined, comments dropped)."""
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    out = []
    for line in lines:
        line = line.split(" #")[0].strip()
        m = re.search(r"(?:^|-m gcpl\.cli |\bgcpl )(train|eval|predict|sample|demo|experiment|report|prepare|fractals)\b"
                      r"(.*)", line)
        if line.startswith("#") or not m or "..." in line:
            continue
        out.append([m.group(1), *shlex.split(m.group(2))])
    return out


def test_every_gcpl_command_in_the_readme_parses():
    from gcpl.cli import build_parser

    parser = build_parser()
    commands = [c for b in _blocks("bash") for c in _commands(b)]
    assert len(commands) >= 15
    for argv in commands:
        parser.parse_args(argv)  # SystemExit on an option that no longer exists


def test_the_own_images_block_runs_verbatim_then_every_python_snippet(tmp_path, monkeypatch):
    """The "Your own images" shell block, run by bash exactly as written, with `gcpl` found the way
    the README's set-up makes it found (the environment's bin folder on PATH, as `. .venv/bin/activate`
    does); then every Python snippet of the README, verbatim, in the same folder."""
    import os
    import subprocess
    import sys

    (block,) = [b for b in _blocks("bash", _section("Your own images")) if "gcpl " in b]
    assert [c[0] for c in _commands(block)] == ["fractals", "train", "eval", "predict", "sample"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "top-1" in done.stdout
    results = (tmp_path / "runs" / "mine" / "eval" / "results.md").read_text()
    assert "expected calibration error" in results and "Confusion matrix" in results
    rows = (tmp_path / "runs" / "mine" / "predict" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 12 and all(r.split(",")[4] == "yes" for r in rows[1:])  # calibrated
    assert len(list((tmp_path / "runs" / "mine" / "samples").glob("*.png"))) == 4 * 4 + 1  # + grid.png
    monkeypatch.chdir(tmp_path)
    snippets = _blocks("python")
    assert len(snippets) >= 2
    for code in snippets:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("doc", ["docs/DESIGN.md", "README.md"])
def test_docs_never_point_outside_the_repository(doc):
    assert "../shared" not in (REPO / doc).read_text()
