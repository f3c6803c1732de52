"""Everyday use, second pass: rerunning `gcpl train` is resuming it (as eval and predict do), the
first Ctrl-C says at once what it waits for, and `--resume` needs no data argument."""

from __future__ import annotations

import json
import os
import signal

import torch
from safetensors.torch import load_file

from gcpl.cli import main
from gcpl.io import read_jsonl
from gcpl.lock import LOCK_FILE


def _train(model, data, out, *extra):
    return main(["train", str(data), "--out", str(out), "--model", str(model), "--shots", "3", "--steps", "4",
                 "--template", "a photo of {}.", "--init-word", "object", "--checkpoint-every", "2", *extra])


def _files(folder):
    return {f: f.stat().st_mtime_ns for f in folder.rglob("*") if f.is_file()}


def test_the_same_command_twice_is_a_no_op_when_finished(tiny_model_dir, class_folder, tmp_path, capsys,
                                                         monkeypatch):
    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run) == 0
    before = _files(run)

    def no_model(*a, **k):
        raise AssertionError("a finished run must not load the model again")

    monkeypatch.setattr("gcpl.jobs.train.load_backbone", no_model)
    capsys.readouterr()
    assert _train(tiny_model_dir, class_folder, run) == 0
    assert _files(run) == before
    assert "already holds a run" not in capsys.readouterr().err


def test_the_same_command_continues_an_interrupted_run(tiny_model_dir, class_folder, tmp_path, capsys, monkeypatch):
    from gcpl.trainer import Trainer

    straight = tmp_path / "a"
    assert _train(tiny_model_dir, class_folder, straight) == 0
    real = Trainer.step

    def interrupted(self, st):
        loss = real(self, st)
        if st.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C during step 2
        return loss

    monkeypatch.setattr(Trainer, "step", interrupted)
    run = tmp_path / "b"
    capsys.readouterr()
    assert _train(tiny_model_dir, class_folder, run) == 130
    err = capsys.readouterr().err
    assert "finishing the training step in hand (Ctrl-C again to stop now)" in err
    assert "checkpoint saved at step 2 of 4" in err and "rerun the same command" in err
    assert not (run / LOCK_FILE).exists()  # released on Ctrl-C
    monkeypatch.setattr(Trainer, "step", real)
    assert _train(tiny_model_dir, class_folder, run) == 0  # no --resume: the same command continues
    assert read_jsonl(run / "train_log.jsonl")[-1]["step"] == 4
    for f in (straight / "embeddings").iterdir():
        a, b = load_file(f), load_file(run / "embeddings" / f.name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_alone_needs_no_data(tiny_model_dir, class_folder, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run, "--steps", "2", "--lr", "0.01") == 0
    assert main(["train", "--resume", "--out", str(run), "--steps", "4"]) == 0
    stored = json.loads((run / "config.json").read_text())["settings"]
    assert stored["data"] == str(class_folder) and stored["train"]["lr"] == 0.01
    assert read_jsonl(run / "train_log.jsonl")[-1]["step"] == 4
    # without a run to resume, or without data and --resume: one line each
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give the training data" in err[0] and "holds no run to resume" in err[0]
    assert main(["train", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give the training data" in err[0] and "--resume" in err[0]
    assert not (tmp_path / "none").exists()


def test_a_changed_identity_option_is_refused_in_one_line(tiny_model_dir, class_folder, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(tiny_model_dir, class_folder, run) == 0
    before = _files(run)
    capsys.readouterr()
    assert _train(tiny_model_dir, class_folder, run, "--seed", "5", "--method", "comple") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gcpl train: error:")
    assert "train.seed: 0 -> 5" in err[0] and "train.method: 'gcpl' -> 'comple'" in err[0]
    assert _files(run) == before
    # bookkeeping is not identity: another checkpoint interval resumes (finished: nothing to do)
    assert _train(tiny_model_dir, class_folder, run, "--checkpoint-every", "1") == 0


def test_train_into_a_folder_of_another_command_is_refused(tiny_model_dir, class_folder, tmp_path, capsys):
    out = tmp_path / "e"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "eval", "settings": {}}))
    assert _train(tiny_model_dir, class_folder, out) == 2
    assert "holds the output of `gcpl eval`" in capsys.readouterr().err
