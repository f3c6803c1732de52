"""The CLIP-based few-shot methods of the paper's Table 2, on transformers' CLIPModel.

    from gcpl.clip import ClipJob, run_clip
    metrics = run_clip(ClipJob(method="coop", data="split.json", out="runs/coop-16-1", shots=16, seed=1,
                               dataset="cars"))

Methods: clip-zs (zero-shot CLIP), linear-probe, tip-adapter, tip-adapter-f, coop, kgcoop,
cocoop, maple, promptsrc; the same data, split files, shots (gcpl.data.splits.few_shot), seeds,
test subset and result files as GCPL, each with its official settings for the dataset. Module
map: model (loading, tower passes with prompts), preprocess (PIL/numpy pixels), features,
prompts (learnable prompt modules), loop (epochs, schedules, checkpoints), classic / tip / coop /
deep (the methods), config (ClipJob, ClipSettings), official (the per-dataset table of official
settings with their sources, `resolve`), sets (pool, validation and test images), runner
(run_clip). Hyperparameters and their sources: gcpl.clip.official and docs/CLIP.md.
"""

from .config import ClipJob, ClipSettings, job_identity
from .methods import clip_methods, make_method
from .official import resolve
from .runner import run_clip

__all__ = ["ClipJob", "ClipSettings", "clip_methods", "job_identity", "make_method", "resolve", "run_clip"]
