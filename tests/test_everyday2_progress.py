"""Everyday use, second pass: progress wherever something takes a while: the first Ctrl-C is
answered at once, and `gcpl sample` shows a progress bar over its images."""

from __future__ import annotations

import signal

import pytest

from gcpl.cli import main
from gcpl.interrupt import deferred_interrupt

MESSAGE = "finishing the {} in hand (Ctrl-C again to stop now)"


@pytest.mark.parametrize("unit", ["training step", "images"])
def test_the_first_ctrl_c_says_at_once_what_it_waits_for(unit, capsys):
    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt(unit) as stop:
        signal.raise_signal(signal.SIGINT)  # a real SIGINT to this process
        assert stop.requested
        assert MESSAGE.format(unit) in capsys.readouterr().err  # before the unit of work ends
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second one stops at once
    assert signal.getsignal(signal.SIGINT) is before  # restored after the block


def test_eval_and_training_pass_their_unit():
    import inspect

    from gcpl import scoring, trainer

    assert 'deferred_interrupt("training step")' in inspect.getsource(trainer.run_training)
    assert 'deferred_interrupt("images")' in inspect.getsource(scoring.score_into)


def test_sample_shows_a_progress_bar_over_its_images(tiny_run, tmp_path, capsys):
    from gcpl.jobs.sample import SampleJob, sample

    job = SampleJob(run=str(tiny_run), out=str(tmp_path / "s"), n=3, steps=2, batch=4)
    sample(job, progress=True)
    err = capsys.readouterr().err
    assert "sample" in err and "9/9" in err and "img" in err  # 3 classes x 3 images, in batches of 4
    sample(SampleJob(run=str(tiny_run), out=str(tmp_path / "q"), n=1, steps=2), progress=False)
    assert "sample" not in capsys.readouterr().err
    # the command shows it
    assert main(["sample", "--run-dir", str(tiny_run), "--out", str(tmp_path / "c"), "-n", "2", "--steps", "2"]) == 0
    assert "6/6" in capsys.readouterr().err
