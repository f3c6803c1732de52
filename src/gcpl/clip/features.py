"""Features of a frozen CLIP, computed once per run: class text features of a template (or the
mean over an ensemble of templates) and image features of a list of files (the eval view), in
batches; and the class names as the official code puts them into prompts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GcplError
from .model import Clip
from .preprocess import eval_batch


def prompt_names(classes: list[str], rule: str) -> list[str]:
    """Class names as they enter the prompts: as-given; spaces ("_" as " ", as every official
    code does); year-first (spaces, and a trailing model year moved to the front, as CoOp's
    StanfordCars reader writes "2012 Acura RL Sedan" for "Acura RL Sedan 2012")."""
    if rule == "as-given":
        return list(classes)
    names = [" ".join(c.replace("_", " ").split()) or c for c in classes]
    if rule == "year-first":
        names = [" ".join([n.rsplit(" ", 1)[1], n.rsplit(" ", 1)[0]]) if _ends_in_year(n) else n for n in names]
    return names


def _ends_in_year(name: str) -> bool:
    last = name.rsplit(" ", 1)[-1]
    return " " in name and len(last) == 4 and last.isdigit()


def template_texts(template: str, classes: list[str]) -> list[str]:
    """The hand-crafted prompt of every class: template.format(name) (zero-shot CLIP)."""
    return [template.format(c) for c in classes]


def text_classifier(clip: Clip, template: str, classes: list[str]) -> torch.Tensor:
    """(C, E) L2-normalised text features of the template for each class."""
    return F.normalize(clip.encode_texts(template_texts(template, classes)), dim=-1)


def ensemble_classifier(clip: Clip, templates, classes: list[str]) -> torch.Tensor:
    """(C, E) L2-normalised mean over the templates of each class's text features, averaged before
    normalising as PromptSRC's frozen text features are (trainers/promptsrc.py:121-128, 200)."""
    total = sum(clip.encode_texts(template_texts(t, classes)) for t in templates)
    return F.normalize(total / len(templates), dim=-1)


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
