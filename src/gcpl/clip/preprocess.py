"""CLIP pixels with PIL and numpy only (no torchvision).

- `eval_view(img, spec)`: the test transform of CLIP, CoOp (Dassl) and Tip-Adapter: shorter side
  resized to `spec.resize` (bicubic), centre crop `spec.size` (offsets rounded as torchvision's
  CenterCrop), x / 255, normalised with the model's mean/std.
- `train_view(img, spec, g, scale)`: the training augmentation of those methods' code:
  torchvision's RandomResizedCrop(size, scale, ratio=(3/4, 4/3), bicubic) (the same sampling
  procedure: 10 tries of area x aspect, then a centre-crop fallback) and a horizontal flip with
  probability 1/2, all random draws from the torch.Generator `g` (reproducible on any machine).
  Scales: (0.08, 1) in Dassl's default config (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC),
  (0.5, 1) in Tip-Adapter's main.py.
- `ImageBank`: the decoded support images, kept in memory (training views are cut from them each
  epoch); a side longer than `max_side` is first downscaled (bicubic) so that a large dataset's
  support set fits in memory; this changes the augmented pixels only marginally.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from ..data.images import SkippedImageWarning, UnreadableImage, load_rgb
from ..errors import GcplError
from .model import ImageSpec

BICUBIC = Image.Resampling.BICUBIC
_POOL: ThreadPoolExecutor | None = None


def _map(fn, items: list) -> list:
    """fn over items on a thread pool (PIL decodes and resizes without the GIL); in order."""
    global _POOL
    workers = min(8, os.cpu_count() or 1)
    if len(items) < 4 or workers < 2:
        return [fn(x) for x in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gcpl-clip-img")
    return list(_POOL.map(fn, items))


def normalise(img: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """float32 (3, H, W): (x / 255 - mean) / std."""
    a = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    a = (a - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def eval_view(img: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """Resize the shorter side to spec.resize (bicubic), centre crop spec.size, normalise."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise GcplError(f"cannot preprocess an empty image ({w}x{h})")
    r = spec.resize
    new_w, new_h = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), BICUBIC)
    s = spec.size
    top, left = round((new_h - s) / 2.0), round((new_w - s) / 2.0)
    if (new_w, new_h) != (s, s):
        img = img.crop((left, top, left + s, top + s))
    return normalise(img, spec)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))


def _randint(g: torch.Generator, lo: int, hi_inclusive: int) -> int:
    return int(torch.randint(lo, hi_inclusive + 1, (1,), generator=g))


def crop_box(width: int, height: int, g: torch.Generator, scale=(0.08, 1.0),
             ratio=(3.0 / 4.0, 4.0 / 3.0)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop, torchvision's procedure."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, *log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(g, 0, height - h), _randint(g, 0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_params(img: Image.Image, g: torch.Generator, scale=(0.08, 1.0), flip: bool = True):
    """The random draws of one training view: (crop box (top, left, h, w), flipped)."""
    box = crop_box(img.size[0], img.size[1], g, scale)
    return box, bool(flip and float(torch.rand(1, generator=g, dtype=torch.float64)) < 0.5)


def render_view(img: Image.Image, spec: ImageSpec, box, flipped: bool) -> torch.Tensor:
    top, left, h, w = box
    out = img.resize((spec.size, spec.size), BICUBIC, box=(left, top, left + w, top + h))
    if flipped:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return normalise(out, spec)


def train_view(img: Image.Image, spec: ImageSpec, g: torch.Generator, scale=(0.08, 1.0),
               flip: bool = True) -> torch.Tensor:
    """RandomResizedCrop(spec.size, scale, bicubic) + RandomHorizontalFlip(0.5), normalised."""
    return render_view(img, spec, *view_params(img, g, scale, flip))


def load_images(paths: list[str], strict: bool = False) -> tuple[list[Image.Image | None], list[tuple[str, str]]]:
    """Decoded RGB images (None where unreadable: a warning, or an error when `strict`) and the
    (path, reason) of each unreadable one."""
    def load(p):
        try:
            return load_rgb(p)
        except UnreadableImage as e:
            if strict:
                raise
            return e

    out, skipped = [], []
    for p, r in zip(paths, _map(load, list(paths))):
        if isinstance(r, UnreadableImage):
            warnings.warn(f"skipping unreadable image {p}: {r.reason}", SkippedImageWarning, stacklevel=2)
            skipped.append((p, r.reason))
            out.append(None)
        else:
            out.append(r)
    return out, skipped


def eval_batch(paths: list[str], spec: ImageSpec, strict: bool = False):
    """(pixels (K, 3, S, S), kept indices into paths, [(path, reason)] skipped)."""
    images, skipped = load_images(paths, strict)
    kept = [i for i, im in enumerate(images) if im is not None]
    if not kept:
        return torch.zeros(0, 3, spec.size, spec.size), kept, skipped
    return torch.stack(_map(lambda i: eval_view(images[i], spec), kept)), kept, skipped


class ImageBank:
    """Decoded support images held in memory, the source of every training view."""

    def __init__(self, paths: list[str], spec: ImageSpec, strict: bool = False, max_side: int | None = None):
        self.spec = spec
        images, self.skipped = load_images(paths, strict)
        self.kept = [i for i, im in enumerate(images) if im is not None]
        cap = max_side or 4 * spec.resize
        self.images = [_cap(images[i], cap) for i in self.kept]

    def __len__(self) -> int:
        return len(self.images)

    def train_views(self, idx: list[int], g: torch.Generator, scale=(0.08, 1.0), flip: bool = True) -> torch.Tensor:
        """Augmented views of images idx: the random draws in order from g, the pixels in parallel."""
        params = [view_params(self.images[i], g, scale, flip) for i in idx]
        return torch.stack(_map(lambda k: render_view(self.images[idx[k]], self.spec, *params[k]),
                                list(range(len(idx)))))


def _cap(img: Image.Image, cap: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= cap:
        return img
    f = cap / max(w, h)
    return img.resize((max(1, round((w * f))), max(1, round(h * f))), BICUBIC)
