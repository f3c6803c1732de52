"""Everyday use, as a new user meets it (CLI in-process): model-aware defaults, resume with the
stored settings, nothing written before validation, Ctrl-C, clean warnings and notes, the
crashes of the first hour, help and outputs, fast failure without network."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from conftest import make_class_folder

from gcpl.cli import main
from gcpl.io import read_jsonl


def _train(model, data, out, *extra):
    return main(["train", str(data), "--out", str(out), "--model", str(model), "--shots", "3", "--steps", "4",
                 "--template", "a photo of {}.", "--init-word", "object", "--checkpoint-every", "2", *extra])


def _eval(model, data, out, *extra):
    return main(["eval", str(data), "--out", str(out), "--model", str(model), "--n-samples", "2,4",
                 "--keep", "2,1", "--images-per-batch", "2", *extra])


def _err(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# --- 3. model-aware defaults -------------------------------------------------------------------------


def test_the_bundled_model_brings_its_training_settings_and_flags_win(tmp_path):
    from gcpl.data.fractals import generate_benchmark

    data = generate_benchmark(tmp_path / "f", n_classes=2, per_class=3, seed=0)
    run = tmp_path / "r"
    assert main(["train", str(data), "--out", str(run), "--model", "tiny", "--shots", "2", "--steps", "1"]) == 0
    t = json.loads((run / "config.json").read_text())["settings"]["train"]
    assert (t["lr"], t["steps"], t["batch"]) == (5e-3, 1, 4)  # lr from the model folder, steps given
    run2 = tmp_path / "r2"
    assert main(["train", str(data), "--out", str(run2), "--model", "tiny", "--shots", "2", "--steps", "1",
                 "--lr", "1e-4"]) == 0
    assert json.loads((run2 / "config.json").read_text())["settings"]["train"]["lr"] == 1e-4


# --- 6. nothing written before validation; resume with the stored settings -------------------------------


def test_a_refused_run_writes_nothing_and_the_retry_works(tiny_model_dir, class_folder, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run, "--init-word", "fighter jet") == 2
    assert "must be a single token" in _err(capsys)
    assert not run.exists() or not any(run.iterdir())
    assert _train(tiny_model_dir, class_folder, run) == 0


def test_resume_alone_continues_with_the_stored_settings(tiny_model_dir, class_folder, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run, "--lr", "0.01", "--seed", "3") == 0
    # no flags but --resume (and a longer run): the stored lr, seed, template, model are used
    assert main(["train", str(class_folder), "--out", str(run), "--resume", "--steps", "6"]) == 0
    stored = json.loads((run / "config.json").read_text())["settings"]
    assert (stored["train"]["lr"], stored["train"]["seed"], stored["train"]["steps"]) == (0.01, 3, 6)
    assert read_jsonl(run / "train_log.jsonl")[-1]["step"] == 6
    # a flag given and different is refused, naming every difference old -> new
    capsys.readouterr()
    assert main(["train", str(class_folder), "--out", str(run), "--resume", "--lr", "0.02", "--seed", "4"]) == 2
    err = _err(capsys)
    assert "train.lr: 0.01 -> 0.02" in err and "train.seed: 3 -> 4" in err


# --- 7. Ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_in_eval_keeps_the_scored_images_and_says_how_to_continue(tiny_model_dir, class_folder, tmp_path,
                                                                          capsys, monkeypatch):
    from gcpl.classify import DiffusionClassifier

    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run) == 0
    full = tmp_path / "full"
    assert _eval(tiny_model_dir, class_folder, full, "--run-dir", str(run)) == 0
    real = DiffusionClassifier.score
    calls = []

    def interrupted(self, x0):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # in the middle of the second chunk
        return real(self, x0)

    monkeypatch.setattr(DiffusionClassifier, "score", interrupted)
    ev = tmp_path / "ev"
    capsys.readouterr()
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(run)) == 130
    err = capsys.readouterr().err
    assert "4 of 12 images done and kept" in err and "rerun the same command to continue" in err
    assert len(read_jsonl(ev / "predictions.jsonl")) == 4  # both finished chunks are on disk
    monkeypatch.setattr(DiffusionClassifier, "score", real)
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(run)) == 0
    assert read_jsonl(ev / "predictions.jsonl") == read_jsonl(full / "predictions.jsonl")


# --- 8. the crashes of the first hour ---------------------------------------------------------------------


def test_limit_zero_and_all_unreadable_images_end_cleanly(tiny_model_dir, class_folder, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run) == 0
    assert _eval(tiny_model_dir, class_folder, tmp_path / "e0", "--run-dir", str(run), "--limit", "0") == 2
    assert "--limit must be at least 1" in _err(capsys)
    bad = make_class_folder(tmp_path / "bad", per_class=2)
    for p in bad.rglob("*.png"):
        p.write_bytes(b"not a png")
    assert _eval(tiny_model_dir, bad, tmp_path / "e1", "--run-dir", str(run)) == 0
    out = capsys.readouterr()
    assert "no image was scored" in out.out and out.err.count("warning: skipping unreadable image") == 6
    assert "No image was scored (skipped unreadable: 6)" in (tmp_path / "e1" / "results.md").read_text()


def test_calibrate_finds_the_shots_of_a_run_trained_from_a_relative_split(tiny_model_dir, tmp_path, monkeypatch):
    from gcpl.data.folders import read_class_folder
    from gcpl.data.splits import Split

    data = make_class_folder(tmp_path / "d", per_class=4)
    classes, samples = read_class_folder(data)
    Split(classes=classes, train=samples, test=samples).to_json(tmp_path / "split.json", relative_to=tmp_path)
    monkeypatch.chdir(tmp_path)  # the split file and everything in it relative to the working folder
    assert _train(tiny_model_dir, "split.json", "run") == 0
    assert _eval(tiny_model_dir, "split.json", "ev", "--run-dir", "run", "--calibrate", "2") == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["n_images"] == 12


# --- 10. help and outputs ------------------------------------------------------------------------------


def test_help_version_and_verbose_anywhere(capsys):
    from gcpl import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"gcpl {__version__}"
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: 16)" in text and "turn off: random horizontal flips" in text
    assert main(["-v", "report", "--help"]) == 0 and main(["report", "-v", "--help"]) == 0


def test_fractals_can_write_a_split(tmp_path, capsys):
    assert main(["fractals", "--out", str(tmp_path / "f"), "--classes", "2", "--per-class", "5",
                 "--test-per-class", "2"]) == 0
    split = json.loads((tmp_path / "f" / "split.json").read_text())
    assert len(split["train"]) == 6 and len(split["test"]) == 4
    assert main(["fractals", "--out", str(tmp_path / "g"), "--per-class", "5", "--test-per-class", "5"]) == 2
    assert "--test-per-class must be between 1 and" in _err(capsys)


def test_results_list_only_tested_classes_and_top5_only_when_it_means_something():
    from gcpl.reports.eval import results_markdown

    m = {"n_images": 2, "skipped_images": 0, "top1": 0.5, "top5": 1.0, "mean_per_class_accuracy": 0.5,
         "macro_f1": 0.5, "classes": ["a", "b", "c"], "per_class_accuracy": [1.0, 0.0, 0.0],
         "confusion_matrix": [[1, 0, 0], [0, 0, 1], [0, 0, 0]], "unet_calls_per_image": 10}
    md = results_markdown(m)
    assert "| a | 1 | 100.0% |" in md and "| b | 1 | 0.0% |" in md and "| c | 0 |" not in md
    assert "top-5" not in md and "1 learned class(es) have no test image" in md


# --- 11. the bundled model says what it is for --------------------------------------------------------------


def test_the_bundled_model_on_other_images_prints_a_note(tmp_path, capsys):
    data = make_class_folder(tmp_path / "d", per_class=2)
    assert main(["train", str(data), "--out", str(tmp_path / "r"), "--model", "tiny", "--shots", "1",
                 "--steps", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: the bundled model demonstrates the method in its own procedural world") == 1
    assert "warning" not in err


# --- 12. training you can watch ------------------------------------------------------------------------------


def test_a_run_folder_has_its_loss_curve(tiny_model_dir, class_folder, tmp_path):
    assert _train(tiny_model_dir, class_folder, tmp_path / "r") == 0
    assert (tmp_path / "r" / "loss_curve.png").stat().st_size > 3000


def test_validation_images_every_n_steps_leave_training_unchanged(tiny_model_dir, class_folder, tmp_path, capsys):
    from safetensors.torch import load_file

    assert _train(tiny_model_dir, class_folder, tmp_path / "plain") == 0
    assert _train(tiny_model_dir, class_folder, tmp_path / "watched", "--validation-every", "3",
                  "--validation-classes", "red,blue", "--validation-images", "1") == 0
    shots = sorted(p.name for p in (tmp_path / "watched" / "validation").iterdir())
    assert shots == ["step3.png", "step4.png"]  # every 3 steps, and the last
    for f in sorted((tmp_path / "plain" / "embeddings").iterdir()):
        a, b = load_file(f), load_file(tmp_path / "watched" / "embeddings" / f.name)
        assert all(torch.equal(a[k], b[k]) for k in a), f.name  # drawing images does not change training
    assert not (tmp_path / "plain" / "validation").exists()
    assert _train(tiny_model_dir, class_folder, tmp_path / "bad", "--validation-every", "2",
                  "--validation-classes", "purple") == 2
    assert "'purple' is not a class" in _err(capsys) and not (tmp_path / "bad").exists()


# --- 5. no network: fail in seconds ----------------------------------------------------------------------------


def test_an_unreachable_hub_fails_fast_with_one_line(class_folder, tmp_path, capsys, monkeypatch):
    import socket

    def no_network(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    t = time.perf_counter()
    assert main(["train", str(class_folder), "--out", str(tmp_path / "r"), "--model", "someone/not-downloaded",
                 "--shots", "1"]) == 2
    assert time.perf_counter() - t < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model tiny" in err[0] and "HF_HUB_OFFLINE=1" in err[0]


@pytest.mark.parametrize("argv", [["eval", "d", "--out", "o"], ["experiment", "--out", "o"]])
def test_usage_errors_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"gcpl {argv[0]}: error:")
