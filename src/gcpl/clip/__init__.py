"""The CLIP-based few-shot methods of the paper's Table 2, on transformers' CLIPModel.

    from gcpl.clip import ClipJob, run_clip
    metrics = run_clip(ClipJob(method="coop", data="split.json", out="runs/coop-16-1", shots=16, seed=1))

Methods: clip-zs (zero-shot CLIP), linear-probe, tip-adapter, tip-adapter-f, coop, kgcoop,
cocoop, maple, promptsrc; the same data, split files, shots (gcpl.data.splits.few_shot), seeds,
test subset and result files as GCPL. Module map: model (loading, tower passes with prompts),
preprocess (PIL/numpy pixels), features, prompts (learnable prompt modules), loop (epochs,
schedules, checkpoints), classic / tip / coop / deep (the methods), config (ClipJob), runner
(run_clip). Hyperparameters and their sources: each module's docstring and docs/CLIP.md.
"""

from .config import ClipJob, job_identity
from .methods import clip_methods, make_method
from .runner import run_clip

__all__ = ["ClipJob", "clip_methods", "job_identity", "make_method", "run_clip"]
