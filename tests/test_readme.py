"""The README is true: the "Your own images in three commands" block runs verbatim on generated
images, then every Python snippet runs verbatim (bundled models, offline); every other `gcpl`
command it shows parses with today's options."""

from __future__ import annotations

import re
import shlex
import shutil
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


def _own_images(root: Path) -> None:
    """my-images/train/<class>/, my-images/test/<class>/ and my-images/new/ from the fractal generator."""
    from gcpl.data.fractals import generate_benchmark

    data = generate_benchmark(root / "gen", n_classes=3, per_class=14, seed=0)
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(d.glob("*.png"))
        for part, chosen in (("train", files[:8]), ("test", files[8:12])):
            (root / "my-images" / part / d.name).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, root / "my-images" / part / d.name / f.name)
        (root / "my-images" / "new").mkdir(parents=True, exist_ok=True)
        for f in files[12:]:
            shutil.copy(f, root / "my-images" / "new" / f"{d.name}-{f.name}")
    shutil.rmtree(data)


def test_every_gcpl_command_in_the_readme_parses():
    from gcpl.cli import build_parser

    parser = build_parser()
    commands = [c for b in _blocks("bash") for c in _commands(b)]
    assert len(commands) >= 15
    for argv in commands:
        parser.parse_args(argv)  # SystemExit on an option that no longer exists


def test_own_images_in_three_commands_then_every_python_snippet(tmp_path, monkeypatch, capsys):
    from gcpl.cli import main

    _own_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    three, sample = _blocks("bash", _section("Your own images in three commands"))
    commands = _commands(three)
    assert [c[0] for c in commands] == ["train", "eval", "predict"]
    for argv in commands + _commands(sample):
        assert main(argv) == 0, argv
    assert "top-1" in capsys.readouterr().out
    assert (tmp_path / "runs" / "mine" / "predict" / "predictions.csv").exists()
    snippets = _blocks("python")
    assert len(snippets) >= 2
    for code in snippets:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("doc", ["docs/DESIGN.md", "README.md"])
def test_docs_never_point_outside_the_repository(doc):
    assert "../shared" not in (REPO / doc).read_text()
