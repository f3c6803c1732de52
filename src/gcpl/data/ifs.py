"""IFS fractal systems and their rendering in the manner of FractalDB (Kataoka et al., ACCV 2020):
`FractalClass` (one category), the chaos game, the rendering with its class-independent nuisances
(`NUISANCE`), and the FractalDB category draw (`_random_class`, accepted by the filling rate).

A category is 2-7 affine maps w_i(x) = A_i x + b_i with all six coefficients drawn from U(-1, 1)
(each map redrawn until it is a contraction), map probabilities proportional to |det A_i|, and is
accepted only when its nuisance-free render fills at least 20 % of the canvas (FractalDB's filling
rate). Images are drawn by a vectorised chaos game (thousands of chains in parallel), accumulated
as log density at 4x the output resolution and box-downsampled (antialiased).

Everything is deterministic given the seed (`_rng`: generators seeded from a hash of namespaced
keys). The benchmark, the pretraining pool and the dataset folders built from these categories
live in `gcpl.data.fractals`, which also re-exports every name here; the underscore helpers are
shared with it only. See docs/FRACTALS.md.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import GcplError

VERSION = 2  # bump when the same seed would give different images or parameters

MIN_MAPS, MAX_MAPS = 2, 7  # FractalDB: 2-7 maps per category
FILL_MIN = 0.2  # FractalDB's filling-rate threshold
POINTS_PER_PIXEL = 4  # chaos-game points per pixel of the internal (supersampled) canvas
DENSITY_REF_PERCENTILE = 99.5  # this percentile of the non-empty pixel counts maps to full intensity
FILL_SIZE = 64  # the fill rate is measured on the nuisance-free render at this size
MAX_SINGULAR = 0.999  # every map (also perturbed / jittered) must be a contraction

# Class-independent nuisances of `FractalClass.render(nuisance=True)`; written to fractals.json.
NUISANCE = {
    "jitter_std": 0.02,  # FractalDB-style instance jitter: N(0, std) on every coefficient
    "rotation_deg": [-20.0, 20.0],  # uniform; photos of objects are near-upright, not at any angle
    "flip_prob": 0.5,  # horizontal mirror
    "scale": [0.7, 0.95],  # longer side of the fractal's bounding box / canvas side
    "translation": "uniform over the room left in the canvas (the fractal stays inside)",
    "fg_saturation": [0.25, 1.0],  # HSV of the fractal colour (hue uniform in [0, 1])
    "bg_saturation": [0.0, 0.7],  # HSV of the background colour (hue and value uniform in [0, 1])
    "min_luma_contrast": 0.3,  # |luma(fractal) - luma(background)| at least this
    "fg_gradient_prob": 0.5,  # fractal colour graded towards a second colour along a random direction
    "bg_gradient_prob": 0.5,  # same for the background
    "gradient_hue_shift": 0.12,  # second colour: hue +- this, value +- gradient_value_shift
    "gradient_value_shift": 0.3,
    "bg_texture_amp": [0.0, 0.08],  # smooth low-contrast noise texture on the background
    "blur_prob": 0.5,
    "blur_sigma_px": [0.3, 0.6],  # Gaussian blur, output pixels
    "pixel_noise_std": [0.0, 0.02],  # sensor noise
    "density": "log1p(count) / log1p(99.5th percentile of non-empty counts), clipped to 1; 4 points per internal pixel",
    "supersample": "4x up to 64 px, fewer above (internal side ~256 px), box-downsampled",
}


# ---------------------------------------------------------------------------------------------
# seeds


def _rng(*keys) -> np.random.Generator:
    """A generator seeded from a hash of `keys` (namespaced, order-independent of other draws)."""
    digest = hashlib.sha256(repr(("gcpl.fractals", VERSION) + tuple(keys)).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GcplError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise GcplError(f"{name} must be {rng}, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# IFS parameters


def probs_from_maps(maps: np.ndarray) -> np.ndarray:
    """FractalDB's map probabilities: proportional to |det A_i|."""
    det = np.abs(maps[:, 0, 0] * maps[:, 1, 1] - maps[:, 0, 1] * maps[:, 1, 0])
    det = np.maximum(det, 1e-6)
    return det / det.sum()


def _contractive(m: np.ndarray) -> bool:
    return bool(np.linalg.norm(m[:, :2], 2) < MAX_SINGULAR)


def _random_map(rng: np.random.Generator) -> np.ndarray:
    while True:  # ~40 % of U(-1, 1) matrices are contractions
        m = rng.uniform(-1.0, 1.0, size=(2, 3))
        if _contractive(m):
            return m


def param_distance(a: "FractalClass", b: "FractalClass") -> float:
    """Distance between two IFS: symmetric mean, over maps, of the Euclidean distance (six
    coefficients) to the nearest map of the other system. 0 for identical systems; independent
    of map order and defined for different numbers of maps."""
    x = a.maps.reshape(len(a.maps), 6)
    y = b.maps.reshape(len(b.maps), 6)
    d = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1)
    return float(0.5 * (d.min(1).mean() + d.min(0).mean()))


# ---------------------------------------------------------------------------------------------
# chaos game and rendering


def _chaos_game(maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator, n_points: int,
                burn: int = 8, steps: int = 32) -> np.ndarray:
    """(2, n_points) points (x row, y row) of the attractor: `n_points / steps` chains run in
    parallel, each started at the fixed point of a map (which lies on the attractor), the first
    `burn` steps discarded."""
    k = len(maps)
    chains = max(1, -(-n_points // steps))
    cum = np.cumsum(probs)
    cum[-1] = 1.0
    coef = maps.reshape(k, 6).T.copy()  # rows a00, a01, b0, a10, a11, b1; one column per map
    fixed = np.stack([np.linalg.solve(np.eye(2) - m[:, :2], m[:, 2]) for m in maps])
    choice = np.minimum(np.searchsorted(cum, rng.random((burn + steps + 1, chains)), side="right"), k - 1)
    x, y = fixed[choice[0], 0], fixed[choice[0], 1]
    out = np.empty((2, steps, chains))
    for t in range(burn + steps):
        a00, a01, b0, a10, a11, b1 = coef[:, choice[t + 1]]
        x, y = a00 * x + a01 * y + b0, a10 * x + a11 * y + b1
        if t >= burn:
            out[0, t - burn] = x
            out[1, t - burn] = y
    return out.reshape(2, -1)[:, :n_points]


def _supersample(size: int) -> int:
    return max(1, min(4, 256 // size))


def _density(points: np.ndarray, side: int) -> np.ndarray:
    """Log point density on a side x side grid, in [0, 1]; `points` (2, n) in pixel units."""
    ix = points[0].astype(np.int64)  # truncation == floor for the non-negative points kept below
    iy = points[1].astype(np.int64)
    ok = (points[0] >= 0) & (ix < side) & (points[1] >= 0) & (iy < side)
    counts = np.bincount(iy[ok] * side + ix[ok], minlength=side * side).astype(np.float64)
    nz = counts[counts > 0]
    if nz.size == 0:
        return counts.reshape(side, side)
    ref = max(np.percentile(nz, DENSITY_REF_PERCENTILE), 2.0)
    return np.minimum(np.log1p(counts) / math.log1p(ref), 1.0).reshape(side, side)


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return img
    h, w = img.shape[:2]
    return img.reshape(h // f, f, w // f, f, *img.shape[2:]).mean(axis=(1, 3))


def _bbox(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.array([points[0].min(), points[1].min()]), np.array([points[0].max(), points[1].max()])


def _fit(points: np.ndarray, side: float, extent: float, offset: tuple[float, float]) -> np.ndarray:
    """Scale (2, n) points isotropically so the longer side of their bounding box is `extent`
    pixels and centre the box at side/2 + offset (pixels); y grows downwards in the image."""
    lo, hi = _bbox(points)
    f = extent / float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-9))
    c = (lo + hi) / 2
    return np.stack([(points[0] - c[0]) * f + (side / 2 + offset[0]),
                     (c[1] - points[1]) * f + (side / 2 + offset[1])])


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _shifted(rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray:
    dh, dv = NUISANCE["gradient_hue_shift"], NUISANCE["gradient_value_shift"]
    return _hsv(h + rng.uniform(-dh, dh), s, v + rng.uniform(-dv, dv))


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 1) linear ramp 0..1 along a random direction."""
    a = rng.uniform(0, 2 * math.pi)
    c = (np.arange(size) + 0.5) / size - 0.5
    t = math.cos(a) * c[None, :] + math.sin(a) * c[:, None]
    return ((t - t.min()) / max(t.max() - t.min(), 1e-9))[..., None]


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    g = int(rng.integers(3, 9))
    coarse = rng.standard_normal((g, g)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64)


def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    tmp = sum(k[i] * pad[:, i:i + w] for i in range(2 * r + 1))
    return sum(k[i] * tmp[i:i + h] for i in range(2 * r + 1))


@dataclass(eq=False)
class FractalClass:
    """One IFS category. `maps[i] = [A_i | b_i]` (2x3), `probs` proportional to |det A_i|."""

    name: str
    maps: np.ndarray  # (k, 2, 3) affine [A | b]
    probs: np.ndarray  # (k,)
    family: str = ""  # benchmark: the parent's id, shared by siblings; pretrain: ""
    _fill: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.maps = np.asarray(self.maps, dtype=np.float64).reshape(-1, 2, 3)
        self.probs = np.asarray(self.probs, dtype=np.float64).reshape(-1)
        if len(self.maps) < 1 or len(self.probs) != len(self.maps):
            raise GcplError(f"fractal {self.name!r}: need k >= 1 maps and k probabilities")
        if not all(_contractive(m) for m in self.maps):
            raise GcplError(f"fractal {self.name!r}: every map must be a contraction (largest singular value < 1)")

    def jittered(self, rng: np.random.Generator, std: float | None = None) -> "FractalClass":
        """A FractalDB-style instance: N(0, std) on every coefficient, probabilities recomputed;
        redrawn while a map stops being a contraction (after 10 tries the class itself)."""
        std = NUISANCE["jitter_std"] if std is None else std
        for _ in range(10):
            maps = self.maps + rng.normal(0.0, std, size=self.maps.shape)
            if all(_contractive(m) for m in maps):
                return FractalClass(self.name, maps, probs_from_maps(maps), self.family)
        return self

    def points(self, rng: np.random.Generator, n_points: int) -> np.ndarray:
        return _chaos_game(self.maps, self.probs, rng, n_points)

    def render(self, rng: np.random.Generator, size: int = 32, nuisance: bool = True) -> Image.Image:
        """An RGB image of one instance. nuisance=False: the class's own parameters, upright,
        centred, bounding box spanning the canvas, white density on black (used for the fill
        rate). nuisance=True: jittered parameters, random pose, colours, background, blur, noise."""
        size = _check_int("size", size, 4)
        ss = _supersample(size)
        side = size * ss
        n_points = POINTS_PER_PIXEL * side * side
        if not nuisance:
            pts = _fit(self.points(rng, n_points), side, side - 1e-6, (0.0, 0.0))
            alpha = _downsample(_density(pts, side), ss)
            return Image.fromarray(np.round(np.repeat(alpha[..., None], 3, -1) * 255).astype(np.uint8), "RGB")

        inst = self.jittered(rng)
        pts = inst.points(rng, n_points)
        a = rng.uniform(*np.radians(NUISANCE["rotation_deg"]))
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        pts = rot @ pts
        if rng.random() < NUISANCE["flip_prob"]:
            pts[0] = -pts[0]
        extent = rng.uniform(*NUISANCE["scale"]) * side
        lo, hi = _bbox(pts)
        span = max(hi[0] - lo[0], hi[1] - lo[1], 1e-9)
        room = (side - (hi - lo) * (extent / span)) / 2  # per axis, >= 0
        off = rng.uniform(-1, 1, 2) * np.maximum(room - 0.5 * ss, 0)
        pts = _fit(pts, side, extent, (off[0], off[1]))
        alpha = _downsample(_density(pts, side), ss)[..., None]

        # background (colour, maybe a gradient, a faint texture), then a fractal colour (maybe a
        # gradient) whose luma differs from the background's mean luma by min_luma_contrast
        bh, bs, bv = rng.uniform(0, 1), rng.uniform(*NUISANCE["bg_saturation"]), rng.uniform(0, 1)
        bg = np.broadcast_to(_hsv(bh, bs, bv), (size, size, 3))
        if rng.random() < NUISANCE["bg_gradient_prob"]:
            bg = bg + _ramp(rng, size) * (_shifted(rng, bh, bs, bv) - bg[0, 0])
        bl = _luma(bg.reshape(-1, 3).mean(0))
        bg = bg + rng.uniform(*NUISANCE["bg_texture_amp"]) * _smooth_noise(rng, size)[..., None]
        c = NUISANCE["min_luma_contrast"]
        fh, fs = rng.uniform(0, 1), rng.uniform(*NUISANCE["fg_saturation"])
        for _ in range(100):
            fv = rng.uniform(0, 1)
            fg0 = _hsv(fh, fs, fv)
            if abs(_luma(fg0) - bl) >= c:
                break
        else:  # e.g. a saturated blue is never bright enough: white or black instead
            fs, fv = 0.0, (1.0 if bl < 0.5 else 0.0)
            fg0 = _hsv(fh, fs, fv)
        fg = np.broadcast_to(fg0, (size, size, 3))
        if rng.random() < NUISANCE["fg_gradient_prob"]:
            fg1 = _shifted(rng, fh, fs, fv)
            if abs(_luma(fg1) - bl) >= c:
                fg = fg0 + _ramp(rng, size) * (fg1 - fg0)
        img = bg * (1 - alpha) + fg * alpha
        if rng.random() < NUISANCE["blur_prob"]:
            img = _gauss_blur(img, rng.uniform(*NUISANCE["blur_sigma_px"]))
        img = img + rng.normal(0, rng.uniform(*NUISANCE["pixel_noise_std"]), img.shape)
        return Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")

    def fill_rate(self) -> float:
        """FractalDB's filling rate: the fraction of non-black pixels of the nuisance-free render
        at FILL_SIZE px (seeded by 0)."""
        if self._fill is None:
            img = np.asarray(self.render(np.random.default_rng(0), FILL_SIZE, nuisance=False))
            self._fill = float((img.max(-1) > 0).mean())
        return self._fill

    def mask(self, size: int = 32) -> np.ndarray:
        """Boolean nuisance-free silhouette (used to keep siblings apart)."""
        return np.asarray(self.render(np.random.default_rng(0), size, nuisance=False)).max(-1) > 0

    def to_json(self) -> dict:
        return {"name": self.name, "family": self.family, "maps": self.maps.tolist(),
                "probs": self.probs.tolist(), "fill": self.fill_rate()}

    @classmethod
    def from_json(cls, obj: dict) -> "FractalClass":
        try:
            return cls(obj["name"], np.array(obj["maps"]), np.array(obj["probs"]), obj.get("family", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise GcplError(f"bad fractal class entry in fractals.json: {e}") from None


# ---------------------------------------------------------------------------------------------
# categories


def _accepted(c: FractalClass) -> bool:
    return c.fill_rate() >= FILL_MIN


def _random_class(rng: np.random.Generator, name: str, family: str = "") -> FractalClass:
    """A FractalDB category: 2-7 maps, coefficients U(-1, 1), redrawn until the fill rate >= 20 %."""
    for _ in range(10_000):
        k = int(rng.integers(MIN_MAPS, MAX_MAPS + 1))
        maps = np.stack([_random_map(rng) for _ in range(k)])
        c = FractalClass(name, maps, probs_from_maps(maps), family)
        if _accepted(c):
            return c
    raise GcplError("no fractal category passed the fill-rate check in 10000 draws")  # pragma: no cover
