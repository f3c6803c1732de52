"""Everyday use, second pass: one process per output folder. Each command that writes an --out holds
OUT/.gcpl.lock while it runs; a second process is refused in one line naming the owner; a lock
left by a process that is gone is taken over with a note; nested jobs of one process go on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from gcpl.cli import main
from gcpl.errors import GcplError
from gcpl.lock import LOCK_FILE, held_by, output_lock

# a second process that holds a folder's lock until its stdin is closed
HOLD = ("import sys\nfrom gcpl.lock import output_lock\nwith output_lock(sys.argv[1], 'hold', sys.argv[2]):\n"
        "    print('locked', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def holder():
    procs = []

    def start(folder, name=LOCK_FILE) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _release(p: subprocess.Popen) -> None:
    p.stdin.close()
    assert p.wait(timeout=30) == 0


def _refused(capsys, folder, pid) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "is in use by another gcpl process" in err[0] and f"PID {pid} on {socket.gethostname()}" in err[0]
    assert "python -c" in err[0] and "since 20" in err[0] and str(folder) in err[0]
    return err[0]


def _train(model, data, out, *extra):
    return main(["train", str(data), "--out", str(out), "--model", str(model), "--shots", "2", "--steps", "2",
                 "--template", "a photo of {}.", "--init-word", "object", *extra])


def _eval(run, data, out):
    return main(["eval", str(data), "--run-dir", str(run), "--out", str(out), "--n-samples", "2", "--keep", "1",
                 "--limit", "3"])


def _predict(run, data, out):
    return main(["predict", str(data), "--run-dir", str(run), "--out", str(out), "--n-samples", "2", "--keep", "1"])


def test_train_is_refused_while_another_process_holds_its_folder(tiny_model_dir, class_folder, tmp_path, holder,
                                                                 capsys):
    out = tmp_path / "r"
    p = holder(out)
    assert _train(tiny_model_dir, class_folder, out) == 2
    assert "gcpl train: error:" in _refused(capsys, out, p.pid)
    assert not (out / "config.json").exists()  # nothing written
    _release(p)
    assert not (out / LOCK_FILE).exists()
    assert _train(tiny_model_dir, class_folder, out) == 0
    assert not (out / LOCK_FILE).exists()  # released when the job ends


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_are_refused_while_another_process_holds_their_folder(command, tiny_run, class_folder,
                                                                               tmp_path, holder, capsys):
    run = _eval if command == "eval" else _predict
    out = tmp_path / command
    assert run(tiny_run, class_folder, out) == 0
    before = (out / "predictions.jsonl").read_text()
    capsys.readouterr()
    p = holder(out)
    assert run(tiny_run, class_folder, out) == 2
    _refused(capsys, out, p.pid)
    assert (out / "predictions.jsonl").read_text() == before
    _release(p)
    assert run(tiny_run, class_folder, out) == 0  # resumed: nothing left to do


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(tiny_run, class_folder, tmp_path, holder,
                                                                   capsys):
    out = tmp_path / "e"
    p = holder(out)
    p.send_signal(signal.SIGKILL)  # gone without releasing its lock
    p.wait()
    assert held_by(out)["pid"] == p.pid
    assert _eval(tiny_run, class_folder, out) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "took over the lock" in notes[0] and f"PID {p.pid}" in notes[0]
    assert not (out / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_refused_and_says_which_file_to_delete(tiny_run, class_folder, tmp_path,
                                                                           capsys):
    out = tmp_path / "e"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "command": "gcpl eval x",
                                             "since": "2030-01-01 00:00:00"}))
    assert _eval(tiny_run, class_folder, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PID 1 on elsewhere.example, `gcpl eval x`, since 2030-01-01 00:00:00" in err[0]
    assert f"delete {out / LOCK_FILE}" in err[0]


@pytest.mark.parametrize("argv", [
    ["sample", "--run-dir", "RUN", "--out", "OUT"],
    ["demo", "--out", "OUT", "--classes", "2", "--shots", "1", "--test-per-class", "1", "--methods", "gcpl"],
    ["experiment", "--out", "OUT", "--data", "nowhere.json", "--methods", "zeroshot"],
])
def test_sample_demo_and_experiment_lock_their_folder(argv, tiny_run, tmp_path, holder, capsys):
    out = tmp_path / "o"
    p = holder(out)
    argv = [str(out) if a == "OUT" else str(tiny_run) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    assert f"gcpl {argv[0]}: error:" in _refused(capsys, out, p.pid)
    assert not (out / "config.json").exists()


def test_experiment_shards_hold_their_own_locks(tmp_path, holder, capsys):
    out = tmp_path / "x"
    p = holder(out, f"{LOCK_FILE}.shard-0-of-2")
    argv = ["experiment", "--out", str(out), "--data", "nowhere.json", "--methods", "zeroshot", "--shard"]
    assert main([*argv, "0/2"]) == 2
    _refused(capsys, out, p.pid)
    assert main([*argv, "1/2"]) == 2  # the other shard runs (and stops on the missing data)
    err = capsys.readouterr().err
    assert "in use" not in err and "nowhere.json" in err


def test_the_lock_holds_the_owner_while_the_job_runs(tiny_model_dir, class_folder, tmp_path, monkeypatch):
    from gcpl.trainer import Trainer

    out = tmp_path / "r"
    seen = []
    real = Trainer.step

    def step(self, st):
        seen.append(held_by(out))
        return real(self, st)

    monkeypatch.setattr(Trainer, "step", step)
    assert _train(tiny_model_dir, class_folder, out) == 0
    owner = seen[0]
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["job"] == "train"
    assert set(owner) == {"pid", "host", "command", "job", "since"}


def test_a_refused_job_leaves_no_lock_and_no_folder(tiny_model_dir, class_folder, tmp_path, capsys):
    out = tmp_path / "new" / "r"
    assert _train(tiny_model_dir, class_folder, out, "--init-word", "fighter jet") == 2
    assert not (tmp_path / "new").exists()


def test_nested_locks_of_one_process_are_re_entrant(tmp_path):
    with output_lock(tmp_path, "demo"):
        with output_lock(tmp_path, "eval"):
            assert held_by(tmp_path)["job"] == "demo"
        assert (tmp_path / LOCK_FILE).exists()  # still held by the outer block
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_on_errors_and_ctrl_c(tmp_path):
    for exc in (GcplError("bad"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with output_lock(tmp_path, "train"):
                raise exc
        assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_file_being_written_is_waited_for_then_judged(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")  # created, not yet written: an old empty one is left by a crash
    os.utime(lock, (0, 0))
    with pytest.warns(UserWarning, match="took over"):
        with output_lock(tmp_path, "train"):
            assert held_by(tmp_path)["pid"] == os.getpid()


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["sample", "--run-dir", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file; give a folder as --out" in err[0]
