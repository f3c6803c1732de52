"""The CLIP methods by name (the names of `gcpl experiment --methods`)."""

from __future__ import annotations

from .base import ClipMethod
from .classic import LinearProbe, ZeroShotClip
from .config import METHODS, ClipJob
from .coop import CoCoOp, CoOp, KgCoOp
from .deep import MaPLe, PromptSRC
from .model import Clip
from .tip import TipAdapter, TipAdapterF

CLASSES: dict[str, type[ClipMethod]] = {
    "clip-zs": ZeroShotClip, "linear-probe": LinearProbe, "tip-adapter": TipAdapter, "tip-adapter-f": TipAdapterF,
    "coop": CoOp, "kgcoop": KgCoOp, "cocoop": CoCoOp, "maple": MaPLe, "promptsrc": PromptSRC,
}
assert tuple(CLASSES) == METHODS

LABELS = {
    "clip-zs": "zero-shot CLIP (hand-crafted prompt)",
    "linear-probe": "linear probe CLIP",
    "tip-adapter": "Tip-Adapter (training-free cache)",
    "tip-adapter-f": "Tip-Adapter-F (fine-tuned cache)",
    "coop": "CoOp (learned context)",
    "kgcoop": "KgCoOp (knowledge-guided context)",
    "cocoop": "CoCoOp (image-conditional context)",
    "maple": "MaPLe (coupled deep prompts)",
    "promptsrc": "PromptSRC (self-regulated deep prompts)",
}
SHORT = {"clip-zs": "CLIP-ZS", "linear-probe": "LP-CLIP", "tip-adapter": "Tip", "tip-adapter-f": "Tip-F",
         "coop": "CoOp", "kgcoop": "KgCoOp", "cocoop": "CoCoOp", "maple": "MaPLe", "promptsrc": "PromptSRC"}


def make_method(job: ClipJob, clip: Clip, classes: list[str]) -> ClipMethod:
    return CLASSES[job.method](job, clip, classes)
