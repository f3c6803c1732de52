"""Everyday use, second pass: the files a job writes: text outputs get the user's umask like the
PNGs, the demo's report links only pictures that exist, results.md shows the confusion matrix."""

from __future__ import annotations

import os
import re
import stat

import pytest

from gcpl.cli import main
from gcpl.io import append_jsonl, atomic_write_bytes, atomic_write_text, write_json, write_jsonl


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_text_outputs_get_the_users_umask(mask, mode, umask, tmp_path):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_jsonl(tmp_path / "b.jsonl", [{"x": 1}])
    atomic_write_text(tmp_path / "c.csv", "a,b\n")
    atomic_write_text(tmp_path / "d.md", "# d\n")
    atomic_write_bytes(tmp_path / "e.safetensors", b"\0")
    append_jsonl(tmp_path / "f.jsonl", {"x": 1})
    for f in ("a.json", "b.jsonl", "c.csv", "d.md", "e.safetensors", "f.jsonl"):
        assert _mode(tmp_path / f) == mode, (f, oct(_mode(tmp_path / f)))
    atomic_write_text(tmp_path / "c.csv", "rewritten\n")  # replacing a file: the umask again
    assert _mode(tmp_path / "c.csv") == mode


def test_a_predict_folder_is_readable_by_others_under_umask_022(tiny_run, tmp_path, umask):
    umask(0o022)
    out = tmp_path / "p"
    assert main(["predict", str(tiny_run.parent / "data"), "--run-dir", str(tiny_run), "--out", str(out),
                 "--n-samples", "2", "--keep", "1"]) == 0
    files = [f for f in out.rglob("*") if f.is_file()]
    assert {f.suffix for f in files} >= {".json", ".jsonl", ".csv"}
    assert all(_mode(f) == 0o644 for f in files), {f.name: oct(_mode(f)) for f in files}


# --- the demo's report ----------------------------------------------------------------------------------


def _demo(out, *extra):
    return main(["demo", "--out", str(out), "--classes", "2", "--shots", "1", "--test-per-class", "1", "--methods",
                 "gcpl", "--steps", "2", "--n-samples", "2", "--keep", "1", "--workers", "1", *extra])


def test_demo_without_samples_links_no_samples_png(tmp_path, capsys):
    out = tmp_path / "d"
    assert _demo(out, "--no-samples") == 0
    report = (out / "report.md").read_text()
    assert not (out / "samples.png").exists() and "samples.png" not in report
    assert "samples.png" not in capsys.readouterr().out
    for link in re.findall(r"\]\(([^)]+)\)", report):  # every picture it shows exists
        assert (out / link).exists(), link
    assert _demo(out) == 0  # with samples (the finished work is kept): made and linked
    assert (out / "samples.png").exists() and "](samples.png)" in (out / "report.md").read_text()


def test_demo_report_links_only_what_was_made():
    from gcpl.demo import report_markdown

    summary = {"settings": {"shots": 1, "test_per_class": 1, "seed": 0, "methods": ("gcpl",)}, "classes": ["a", "b"],
               "methods": {"gcpl": {"top1": 1.0, "mean_per_class_accuracy": 1.0, "macro_f1": 1.0,
                                    "unet_calls_per_image": 2}}, "chance": 0.5, "seconds": {"total": 1.0}}
    md = report_markdown(summary, confusion=False)
    assert "samples.png" not in md and "confusion.png" not in md
    md = report_markdown({**summary, "seconds": {"samples": 1.0, "total": 2.0}})
    assert "](samples.png)" in md and "](confusion.png)" in md


# --- results.md's confusion matrix ----------------------------------------------------------------------


def _metrics(n_classes: int) -> dict:
    classes = [f"c{i}" for i in range(n_classes)]
    cm = [[0] * n_classes for _ in classes]
    for i in range(n_classes):
        cm[i][i] = 2
    cm[0][1], cm[0][0] = 1, 1
    return {"n_images": 2 * n_classes, "skipped_images": 0, "top1": 0.9, "top5": 1.0, "mean_per_class_accuracy": 0.9,
            "macro_f1": 0.9, "classes": classes, "per_class_accuracy": [0.5] + [1.0] * (n_classes - 1),
            "confusion_matrix": cm, "unet_calls_per_image": 4}


def test_results_md_has_the_confusion_matrix_as_a_table_up_to_20_classes():
    from gcpl.reports.eval import results_markdown

    md = results_markdown(_metrics(3))
    assert "| true \\ predicted | c0 | c1 | c2 |" in md
    assert "| c0 | 1 | 1 | 0 |" in md and "| c2 | 0 | 0 | 2 |" in md and "confusion.png" not in md
    md = results_markdown(_metrics(20))
    assert len(re.findall(r"\n\| c\d+ \|", md)) == 20 + 20  # per-class rows and confusion rows
    md = results_markdown(_metrics(21))
    assert "true \\ predicted" not in md and "[confusion.png](confusion.png)" in md
    assert "](confusion.png)" not in results_markdown(_metrics(21), confusion_png=False)


def test_an_evaluation_writes_the_table_into_results_md(tiny_run, class_folder, tmp_path):
    out = tmp_path / "e"
    assert main(["eval", str(class_folder), "--run-dir", str(tiny_run), "--out", str(out), "--n-samples", "2",
                 "--keep", "1", "--limit", "3"]) == 0
    md = (out / "results.md").read_text()
    assert "## Confusion matrix" in md and "| true \\ predicted | blue | green | red |" in md
