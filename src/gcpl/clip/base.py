"""What every CLIP method is given (the support set, its images and features, validation data)
and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.splits import Sample
from .config import ClipJob
from .features import image_features, prompt_names
from .model import Clip
from .official import resolved
from .preprocess import ImageBank


@dataclass
class Support:
    """The few-shot support set of a run (readable images only, grouped by class, each class in
    its drawn order) and the method's validation images (gcpl.clip.sets.validation_set; None:
    cross-validate on the shots)."""

    clip: Clip
    samples: list[Sample]
    n_classes: int
    bank: ImageBank  # decoded images: the source of augmented training views
    batch: int = 64
    strict: bool = False
    val: list[Sample] | None = None
    _features: torch.Tensor | None = field(default=None, repr=False)
    _val: tuple | None = field(default=None, repr=False)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)

    def features(self) -> torch.Tensor:
        """(N, E) eval-view image features (not normalised), the test transform."""
        if self._features is None:
            f, kept, _ = image_features(self.clip, [s.path for s in self.samples], self.batch, self.strict,
                                        "support images")
            if len(kept) != len(self.samples):  # a file that read once and not now
                raise RuntimeError("a support image became unreadable during the run")
            self._features = f
        return self._features

    def val_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (M, E) not normalised, labels (M,)) of the validation images."""
        if self._val is None:
            f, kept, _ = image_features(self.clip, [s.path for s in self.val], self.batch, self.strict,
                                        "validation images")
            self._val = (f, torch.tensor([self.val[i].label for i in kept], dtype=torch.long))
        return self._val

    def folds(self, k: int) -> list[list[int]]:
        """k folds of the support set: the j-th drawn image of each class goes to fold j mod k."""
        seen: dict[int, int] = {}
        out: list[list[int]] = [[] for _ in range(k)]
        for i, s in enumerate(self.samples):
            j = seen.get(s.label, 0)
            seen[s.label] = j + 1
            out[j % k].append(i)
        return out

    def min_shots(self) -> int:
        counts: dict[int, int] = {}
        for s in self.samples:
            counts[s.label] = counts.get(s.label, 0) + 1
        return min(counts.values()) if counts else 0


class ClipMethod:
    """A CLIP method: `fit` (train or build from the support set) returns the tensors and facts
    that define it (saved as the run's learned.safetensors), `load` restores them, `logits`
    scores normalised test pixels. `job` is resolved (every official value filled in), `classes`
    are the class names as the prompts have them (text.class_names), `settings` the job's method
    groups and `template` its hand-crafted prompt."""

    name = ""
    needs_support = True

    def __init__(self, job: ClipJob, clip: Clip, classes: list[str]):
        self.job, self.clip = resolved(job), clip
        self.settings = self.job.clip
        self.template = self.settings.text.template
        self.classes = prompt_names(list(classes), self.settings.text.class_names)

    def fit(self, support: Support | None, folder: Path, progress: bool = True) -> tuple[dict, dict]:
        raise NotImplementedError

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        raise NotImplementedError

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def normed(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def cosine_logits(clip: Clip, pixels: torch.Tensor, text: torch.Tensor, prompts: tuple = ()) -> torch.Tensor:
    """CLIP's logits exp(logit_scale) * cos(image, class): normalised text features (C, E) against
    the images (encoded with vision `prompts`, the arguments encode_images takes after the pixels)."""
    with torch.no_grad():
        return clip.logit_scale * normed(clip.encode_images(pixels, *prompts)) @ text.t()
