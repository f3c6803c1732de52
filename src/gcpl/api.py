"""gcpl's Python API: every job a command runs, as a settings dataclass and a function.

    from gcpl.api import EvalJob, TrainJob, evaluate, train
    from gcpl.trainer import TrainConfig

    run = train(TrainJob(data="images/train", out="runs/lib", model="tiny", shots=8,
                         train=TrainConfig(template="{} fractal.", init_word="fractal", steps=50)))
    metrics = evaluate(EvalJob(data="images/test", out="runs/lib/eval", run=str(run)))

A job's settings are the command's options (`gcpl train --help` lists TrainJob's); rerunning a
job into the same folder resumes it. Each function checks its settings and data before it writes
anything and raises gcpl.GcplError (one line) for what the user can fix.
"""

from .jobs.evaluate import EvalJob, evaluate
from .jobs.predict import PredictJob, predict
from .jobs.sample import SampleJob, sample
from .jobs.train import TrainJob, train
from .runs import TrainedRun

__all__ = ["EvalJob", "PredictJob", "SampleJob", "TrainJob", "TrainedRun", "evaluate", "predict", "sample", "train"]
