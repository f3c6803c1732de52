"""Reading images from disk and turning them into Stable Diffusion input tensors.

- `load_rgb(path)` opens and fully decodes one file and converts any Pillow mode to 8-bit RGB
  (transparent pixels are composited onto white; 16-bit and float images are scaled by their real
  range, not clipped). Any failure raises `UnreadableImage` with a one-line message.
- `preprocess(img, size)` is the SD / diffusion-classifier transform: shorter side resized to
  `size` (bicubic), center crop to `size` x `size`, scaled to [-1, 1] — the same numbers as
  torchvision's Resize(size, BICUBIC) -> CenterCrop(size) -> ToTensor() -> Normalize(0.5, 0.5)
  on a PIL image, done with PIL and numpy only. `resize="squash"` instead resizes the whole image
  to `size` x `size` (bicubic, aspect ratio not kept), as the textual-inversion training of the
  authors' released GCPL code does (diffusers' example without --center_crop).
- `load_batch(paths, size)` does both for many files, skipping (and reporting) unreadable ones.

Truncated files fail: `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is left at its default (False).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import GcplError

__all__ = [
    "LoadedImages",
    "SkippedImageWarning",
    "UnreadableImage",
    "load_batch",
    "load_rgb",
    "preprocess",
    "to_rgb",
]


_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}


class UnreadableImage(GcplError):
    """An image file that is missing, not an image, truncated or corrupt."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = _one_line(reason)
        super().__init__(f"cannot read image {self.path}: {self.reason}")


class SkippedImageWarning(UserWarning):
    """Issued by `load_batch` for each unreadable image it skips."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file does not exist"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (format not recognised)"
    msg = _one_line(str(exc))
    if "truncated" in msg.lower():
        return f"file is truncated ({msg})"
    return f"corrupt or unsupported image ({type(exc).__name__}: {msg})"


# ----------------------------------------------------------------------------- mode conversion


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    a = np.asarray(rgba, dtype=np.uint16)
    alpha = a[..., 3:4]
    out = (a[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    v = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.repeat(v[..., None], 3, axis=2)), "RGB")


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) * (255.0 / (hi - lo))


def _bits_per_sample(img: Image.Image) -> int | None:
    if img.format == "PNG":  # Pillow < 11 opens 16-bit grey PNGs as mode "I"
        return 16
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bps = tags.get(258)
        if isinstance(bps, (tuple, list)) and bps:
            bps = bps[0]
        if isinstance(bps, int):
            return bps
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    - alpha (LA, PA, RGBA, ...) and palette/grey/RGB transparency: composited onto white;
    - I;16 / I;16B / I;16L (and "I" from a 16-bit file): value / 257 (65535 -> 255);
    - other "I" (32-bit): used as is when within 0..255, / 257 when within 0..65535, else the
      min..max range is stretched to 0..255;
    - F: x 255 when within 0..1, as is within 0..255, / 257 within 0..65535, else stretched;
      NaN counts as 0;
    - everything else (1, L, P, CMYK, YCbCr, LAB, HSV, ...): Pillow's own conversion.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    has_alpha = mode in _ALPHA_MODES or (
        mode in ("L", "P", "RGB", "1") and "transparency" in img.info
    )
    if mode == "P" and img.palette is not None and img.palette.mode == "RGBA":
        has_alpha = True
    if has_alpha:
        if mode == "La":
            img = img.convert("RGBa")
        return _composite_on_white(img.convert("RGBA"))
    if mode.startswith("I;16"):
        return _gray_to_rgb(np.asarray(img).astype(np.float64) / 257.0)
    if mode == "I":
        v = np.asarray(img).astype(np.float64)
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
        if _bits_per_sample(img) == 16 or (lo >= 0 and 255 < hi <= 65535):
            return _gray_to_rgb(v / 257.0)
        if lo >= 0 and hi <= 255:
            return _gray_to_rgb(v)
        return _gray_to_rgb(_stretch(v))
    if mode == "F":
        v = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            return _gray_to_rgb(v * 255.0)
        if lo >= 0 and hi <= 255:
            return _gray_to_rgb(v)
        if lo >= 0 and hi <= 65535:
            return _gray_to_rgb(v / 257.0)
        return _gray_to_rgb(_stretch(v))
    return img.convert("RGB")


# ----------------------------------------------------------------------------- loading


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert one image file to RGB (first frame of animations).

    EXIF orientation is applied (a photo taken in portrait comes out upright). Raises
    `UnreadableImage` naming the file and the reason on any failure.
    """
    try:
        with Image.open(path) as im:
            im.load()
            try:
                oriented = ImageOps.exif_transpose(im)
            except Exception:  # malformed EXIF: keep the pixels as stored
                oriented = im
            return to_rgb(oriented)
    except UnreadableImage:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder error means "cannot read this file"
        raise UnreadableImage(path, _reason(e)) from None


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise GcplError(f"image size must be a positive integer, got {size!r}")
    return int(size)


RESIZE_MODES = ("crop", "squash")


def preprocess(img: Image.Image, size: int, resize: str = "crop") -> torch.Tensor:
    """crop: shorter side -> `size` (bicubic), center crop `size` x `size`; squash: the whole image
    -> `size` x `size` (bicubic). Returns float32 (3, size, size) in [-1, 1]."""
    size = _check_size(size)
    if resize not in RESIZE_MODES:
        raise GcplError(f"resize mode {resize!r} is unknown; use crop or squash")
    if img.mode != "RGB" or "transparency" in img.info:
        img = to_rgb(img)
    w, h = img.size
    if w <= 0 or h <= 0:
        raise GcplError(f"cannot preprocess an empty image ({w}x{h})")
    if resize == "squash":
        if (w, h) != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        return _to_tensor(img)
    # torchvision Resize(int): the shorter edge becomes `size`, the longer int(size * long / short).
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    # torchvision CenterCrop: offsets rounded with Python's round().
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if (new_w, new_h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return _to_tensor(img)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # ToTensor
    a = (a - np.float32(0.5)) / np.float32(0.5)  # Normalize(0.5, 0.5)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


@dataclass
class LoadedImages:
    """Result of `load_batch`: pixels of the files that loaded, in input order."""

    pixels: torch.Tensor  # (N, 3, size, size) float32 in [-1, 1]
    kept: list[int] = field(default_factory=list)  # indices into `paths` of the rows of `pixels`
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.kept)


def load_batch(
    paths: Iterable[str | os.PathLike],
    size: int,
    strict: bool = False,
    *,
    allow_empty: bool = False,
    resize: str = "crop",
) -> LoadedImages:
    """Load and preprocess many files into one (N, 3, size, size) tensor.

    Unreadable files are skipped with a `SkippedImageWarning` naming the file (or raise
    `UnreadableImage` when `strict`); `kept` maps rows back to `paths`, `skipped` lists
    (path, reason). Raises GcplError when no file could be read (or `paths` is empty), unless
    `allow_empty`, which returns a (0, 3, size, size) tensor instead (for callers that load one
    chunk of a larger set at a time). Holds every image in memory: pass batches.
    """
    size = _check_size(size)
    paths = [str(p) for p in paths]
    if not paths and not allow_empty:
        raise GcplError("no image files to load")
    tensors: list[torch.Tensor] = []
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for i, p in enumerate(paths):
        try:
            img = load_rgb(p)
        except UnreadableImage as e:
            if strict:
                raise
            skipped.append((p, e.reason))
            warnings.warn(f"skipping unreadable image {p}: {e.reason}", SkippedImageWarning, stacklevel=2)
            continue
        tensors.append(preprocess(img, size, resize))
        kept.append(i)
    if not tensors:
        if allow_empty:
            empty = torch.empty((0, 3, size, size), dtype=torch.float32)
            return LoadedImages(pixels=empty, kept=kept, skipped=skipped)
        first_path, first_reason = skipped[0]
        raise GcplError(
            f"none of the {len(paths)} image file(s) could be read "
            f"(e.g. {first_path}: {first_reason})"
        )
    return LoadedImages(pixels=torch.stack(tensors), kept=kept, skipped=skipped)
