"""gcpl's Python API: every job a command runs, as a settings dataclass and a function.

    from gcpl import EvalJob, TrainConfig, TrainJob, evaluate, train     # or from gcpl.api

    run = train(TrainJob(data="images/train", out="runs/lib", model="tiny", shots=8,
                         train=TrainConfig(template="{} fractal.", init_word="fractal", steps=50)))
    metrics = evaluate(EvalJob(data="images/test", out="runs/lib/eval", run=str(run)))

A job's settings are the command's options (`gcpl train --help` lists TrainJob's); rerunning a
job into the same folder resumes it, and a folder is written by one process at a time (gcpl.lock).
Each function checks its settings and data before it writes anything and raises gcpl.GcplError
(one line) for what the user can fix.
"""

from .jobs.evaluate import EvalJob, evaluate
from .jobs.predict import PredictJob, predict
from .jobs.sample import SampleJob, sample
from .jobs.train import TrainJob, train
from .runs import TrainedRun
from .trainer import TrainConfig

__all__ = ["EvalJob", "PredictJob", "SampleJob", "TrainConfig", "TrainJob", "TrainedRun", "evaluate", "predict",
           "sample", "train"]
