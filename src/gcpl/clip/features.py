"""Features of a frozen CLIP, computed once per run: class text features of a template and image
features of a list of files (the eval view), in batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GcplError
from .model import Clip
from .preprocess import eval_batch


def template_texts(template: str, classes: list[str]) -> list[str]:
    """The hand-crafted prompt of every class: template.format(name) (zero-shot CLIP)."""
    return [template.format(c) for c in classes]


def text_classifier(clip: Clip, template: str, classes: list[str]) -> torch.Tensor:
    """(C, E) L2-normalised text features of the template for each class."""
    return F.normalize(clip.encode_texts(template_texts(template, classes)), dim=-1)


def image_features(clip: Clip, paths: list[str], batch: int = 64, strict: bool = False,
                   what: str = "images") -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """(features (K, E) fp32 not normalised, kept indices into paths, skipped (path, reason))."""
    feats, kept, skipped = [], [], []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            px, k, s = eval_batch(paths[i : i + batch], clip.spec, strict)
            skipped += s
            if k:
                feats.append(clip.encode_images(px))
                kept += [i + j for j in k]
    if not kept:
        raise GcplError(f"none of the {len(paths)} {what} could be read")
    return torch.cat(feats), kept, skipped
