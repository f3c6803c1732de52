"""gcpl: few-shot fine-grained classification with a frozen text-to-image diffusion model.

Every command is a function over a settings dataclass (its fields are the command's options):

    train(TrainJob) -> run folder          `gcpl train`: one learned token per class
    evaluate(EvalJob) -> metrics           `gcpl eval`: labelled test images
    predict(PredictJob) -> files           `gcpl predict`: unlabelled images, with a confidence
    sample(SampleJob) -> images            `gcpl sample`: images from the learned tokens

    import gcpl

    run = gcpl.train(gcpl.TrainJob(data="images/train", out="runs/mine", model="tiny", shots=4,
                                   train=gcpl.TrainConfig(template="{} fractal.", init_word="fractal", steps=50)))
    metrics = gcpl.evaluate(gcpl.EvalJob(data="images/test", out="runs/mine/eval", run=str(run)))

Also: TrainConfig (token training settings), ClassifyConfig (the diffusion classifier),
TrainedRun (a finished run folder), load_backbone (a frozen SD-1.x/2.x: hub id, folder or
"tiny"), DiffusionClassifier, GcplError (bad input the user can fix; a one-line message).
Everything is imported lazily, so `import gcpl` stays cheap.
"""

__version__ = "0.1.0"

_API = {
    "train": "api", "evaluate": "api", "predict": "api", "sample": "api",
    "TrainJob": "api", "EvalJob": "api", "PredictJob": "api", "SampleJob": "api", "TrainedRun": "api",
    "TrainConfig": "trainer", "Trainer": "trainer",
    "ClassifyConfig": "classify", "DiffusionClassifier": "classify",
    "load_backbone": "backbone", "Backbone": "backbone",
    "GcplError": "errors",
}
__all__ = sorted(_API)


def __getattr__(name):
    """The public API, imported on first use (see the module docstring)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'gcpl' has no attribute {name!r}")


def __dir__():
    """The module's names with the lazily imported API (help(gcpl) lists it)."""
    return sorted({*globals(), *_API})
