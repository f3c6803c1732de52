"""gcpl: few-shot fine-grained classification with a frozen text-to-image diffusion model.

Public API (imported lazily, so `import gcpl` stays cheap):
    load_backbone                 gcpl.backbone   frozen SD-1.x/2.x (hub id, folder, or "tiny")
    TrainConfig, TrainJob         GCPL / CoMPLe token training (run with gcpl.api.train)
    ClassifyConfig, EvalJob, evaluate, DiffusionClassifier   the few-shot diffusion classifier
    GcplError                     bad input the user can fix (one-line message)
"""

__version__ = "0.1.0"

_API = {
    "load_backbone": "backbone", "Backbone": "backbone",
    "TrainConfig": "train", "Trainer": "train",
    "TrainJob": "api", "EvalJob": "api", "evaluate": "api",
    "ClassifyConfig": "classify", "DiffusionClassifier": "classify",
    "GcplError": "errors",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'gcpl' has no attribute {name!r}")
