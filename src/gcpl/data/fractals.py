"""IFS fractal images in the manner of FractalDB (Kataoka et al., ACCV 2020).

Two uses:

* a fine-grained few-shot benchmark (`benchmark_classes`, `generate_benchmark`): the classes come
  in families, siblings derived from one parent IFS by perturbing one of its maps, and every image
  carries class-independent nuisances (pose, colour, background, blur, noise, parameter jitter);
* the pretraining corpus of a tiny text-to-image model (`pretrain_classes`): independent FractalDB
  categories, captioned "<name> fractal.".

A category is 2-7 affine maps w_i(x) = A_i x + b_i with all six coefficients drawn from U(-1, 1)
(each map redrawn until it is a contraction), map probabilities proportional to |det A_i|, and is
accepted only when its nuisance-free render fills at least 20 % of the canvas (FractalDB's filling
rate). Images are drawn by a vectorised chaos game (thousands of chains in parallel), accumulated
as log density at 4x the output resolution and box-downsampled (antialiased).

Everything is deterministic given the seed: the benchmark and the pretraining pool draw from
different seed namespaces and from disjoint halves of the built-in word list, so they never share
a name or a parameter set. See docs/FRACTALS.md for the design and the measured pixel baselines.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import GcplError
from ..io import read_json, write_json
from ..settings import setting
from .splits import Sample, Split

VERSION = 2  # bump when the same seed would give different images or parameters
FORMAT = "gcpl-fractals"

MIN_MAPS, MAX_MAPS = 2, 7  # FractalDB: 2-7 maps per category
FILL_MIN = 0.2  # FractalDB's filling-rate threshold
POINTS_PER_PIXEL = 4  # chaos-game points per pixel of the internal (supersampled) canvas
DENSITY_REF_PERCENTILE = 99.5  # this percentile of the non-empty pixel counts maps to full intensity
FILL_SIZE = 64  # the fill rate is measured on the nuisance-free render at this size
MAX_SINGULAR = 0.999  # every map (also perturbed / jittered) must be a contraction

# Benchmark families (see docs/FRACTALS.md): every benchmark class is a sibling of a parent IFS,
# i.e. the parent with `n_perturbed` of its maps (chosen with the map probabilities) moved by
# U(-perturb, perturb) on each of their six coefficients (clipped to [-1, 1]).
FAMILY_DEFAULTS = {
    "family_size": 5,  # siblings per parent: 10 classes -> 2 parents
    "perturb": 0.2,  # half-width of the uniform offset per coefficient (coefficients live in [-1, 1])
    "n_perturbed": 1,  # maps moved per sibling
    "max_iou": 0.85,  # siblings whose nuisance-free 32 px masks overlap more than this are redrawn
}

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

# fmt: off
WORDS: tuple[str, ...] = (
    # animals
    "cat", "dog", "horse", "cow", "sheep", "goat", "pig", "rabbit", "mouse", "rat",
    "fox", "wolf", "bear", "lion", "tiger", "zebra", "giraffe", "camel", "donkey", "deer",
    "moose", "elk", "otter", "beaver", "badger", "squirrel", "hedgehog", "mole", "bat", "whale",
    "dolphin", "shark", "seal", "walrus", "penguin", "eagle", "hawk", "owl", "falcon", "parrot",
    "pigeon", "sparrow", "robin", "crow", "raven", "swan", "goose", "duck", "chicken", "turkey",
    "heron", "stork", "flamingo", "peacock", "ostrich", "frog", "toad", "turtle", "tortoise", "lizard",
    "snake", "crocodile", "alligator", "salmon", "trout", "cod", "tuna", "carp", "eel", "octopus",
    "squid", "crab", "lobster", "shrimp", "oyster", "clam", "snail", "slug", "worm", "ant",
    "bee", "wasp", "beetle", "butterfly", "moth", "spider", "scorpion", "cricket", "grasshopper", "ladybug",
    "dragonfly", "mosquito", "koala", "kangaroo", "panda", "monkey", "gorilla", "lemur", "hippo", "rhino",
    "buffalo", "bison", "llama", "yak", "hamster", "ferret", "weasel", "lynx", "leopard", "cheetah",
    "jaguar", "puma", "hyena", "jackal", "coyote", "raccoon", "skunk", "possum", "sloth", "armadillo",
    "anteater", "porcupine", "seahorse", "starfish", "jellyfish", "pelican", "gull", "puffin", "toucan", "vulture",
    "magpie", "finch", "wren", "lark", "goldfish", "pony", "mule", "ox", "lamb", "puppy",
    # plants and food
    "oak", "maple", "pine", "birch", "willow", "cedar", "elm", "palm", "cactus", "fern",
    "moss", "ivy", "rose", "tulip", "daisy", "lily", "orchid", "lotus", "poppy", "sunflower",
    "dandelion", "clover", "thistle", "bamboo", "reed", "mushroom", "acorn", "apple", "pear", "plum",
    "peach", "cherry", "grape", "lemon", "banana", "mango", "melon", "berry", "strawberry", "coconut",
    "walnut", "almond", "peanut", "carrot", "potato", "onion", "garlic", "pepper", "tomato", "cabbage",
    "lettuce", "pumpkin", "bean", "pea", "corn", "rice", "wheat", "barley", "bread", "cake",
    "cookie", "pie", "muffin", "pancake", "waffle", "cheese", "butter", "honey", "jam", "soup",
    "noodle", "pizza", "sandwich", "egg", "candy", "pretzel", "donut", "cereal", "salad", "tea",
    # household and everyday objects
    "chair", "table", "bed", "sofa", "lamp", "clock", "mirror", "window", "door", "key",
    "lock", "bell", "drum", "guitar", "piano", "violin", "flute", "trumpet", "harp", "whistle",
    "bottle", "cup", "mug", "bowl", "plate", "spoon", "fork", "knife", "kettle", "teapot",
    "jar", "basket", "bucket", "barrel", "box", "crate", "bag", "purse", "wallet", "coin",
    "ring", "necklace", "crown", "hat", "cap", "helmet", "boot", "shoe", "sock", "glove",
    "scarf", "coat", "shirt", "dress", "button", "needle", "thread", "rope", "chain", "ladder",
    "hammer", "saw", "drill", "shovel", "rake", "axe", "wrench", "nail", "screw", "anchor",
    "compass", "map", "book", "pencil", "pen", "brush", "candle", "lantern", "torch", "umbrella",
    "kite", "balloon", "ball", "doll", "puzzle", "dice", "card", "flag", "banner", "tent",
    "blanket", "pillow", "carpet", "curtain", "towel", "soap", "comb", "broom", "mop", "sponge",
    "wheel", "bicycle", "car", "truck", "bus", "train", "tram", "boat", "ship", "canoe",
    "raft", "sled", "wagon", "cart", "rocket", "plane", "glider", "engine", "robot", "camera",
    "phone", "radio", "computer", "envelope", "stamp", "ticket", "badge", "medal", "trophy", "shield",
    "sword", "spear", "arrow", "cannon", "pipe", "hose", "faucet", "sink", "bathtub", "oven",
    "stove", "fridge", "toaster", "blender", "fan", "heater", "spade", "trowel", "magnet", "battery",
    "bulb", "wire", "cable", "gear", "bolt", "hinge", "handle", "knob", "switch", "plug",
    "socket", "tile", "brick", "stone", "rock", "pebble", "shell", "feather", "bone", "skull",
    "horn", "tusk", "claw", "mask", "crayon", "scissors", "stapler", "ruler", "eraser", "notebook",
    "backpack", "suitcase", "cushion", "vase", "pot", "pan", "tray", "napkin", "cradle", "hammock",
    # places and nature
    "mountain", "hill", "valley", "canyon", "cliff", "cave", "island", "beach", "desert", "forest",
    "jungle", "meadow", "field", "garden", "park", "river", "lake", "pond", "ocean", "sea",
    "bay", "harbor", "waterfall", "glacier", "volcano", "swamp", "marsh", "prairie", "plateau", "lagoon",
    "reef", "dune", "oasis", "city", "village", "town", "farm", "barn", "castle", "palace",
    "tower", "bridge", "tunnel", "road", "street", "path", "fence", "wall", "gate", "temple",
    "church", "library", "museum", "school", "market", "station", "airport", "lighthouse", "windmill", "cottage",
    "cabin", "hut", "igloo", "pyramid", "fountain", "stadium", "theater", "factory", "kitchen", "attic",
    # sky, weather and materials
    "sun", "moon", "planet", "comet", "cloud", "rain", "snow", "storm", "thunder", "lightning",
    "rainbow", "wind", "fog", "frost", "ice", "flame", "smoke", "dust", "sand", "mud",
    "crystal", "diamond", "pearl", "copper", "iron", "marble", "glass", "paper", "cotton", "wool",
    "silk", "leather", "rubber", "velvet", "clay", "wax", "chalk", "coal", "salt", "sugar",
)
# fmt: on
BENCHMARK_WORDS: tuple[str, ...] = WORDS[0::2]  # even positions
PRETRAIN_WORDS: tuple[str, ...] = WORDS[1::2]  # odd positions: disjoint from the benchmark's


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


def _names(pool: tuple[str, ...], n: int, rng: np.random.Generator, what: str) -> list[str]:
    if n > len(pool):
        raise GcplError(f"{what}: at most {len(pool)} classes (one name each), asked for {n}")
    return [pool[i] for i in rng.permutation(len(pool))[:n]]


def pretrain_classes(n_classes: int, seed: int) -> list[FractalClass]:
    """`n_classes` independent FractalDB categories for pretraining, named from PRETRAIN_WORDS.
    Disjoint from `benchmark_classes` for every seed (other names, other seed namespace)."""
    n_classes = _check_int("n_classes", n_classes, 1, len(PRETRAIN_WORDS))
    seed = _check_int("seed", seed, 0)
    names = _names(PRETRAIN_WORDS, n_classes, _rng("pretrain", "names", seed), "pretrain_classes")
    return [_random_class(_rng("pretrain", "class", seed, i), name) for i, name in enumerate(names)]


def _sibling(parent: FractalClass, rng: np.random.Generator, name: str, perturb: float,
             n_perturbed: int) -> FractalClass:
    for _ in range(1000):
        maps = parent.maps.copy()
        which = rng.choice(len(maps), size=min(n_perturbed, len(maps)), replace=False, p=parent.probs)
        for i in which:
            m = np.clip(maps[i] + rng.uniform(-perturb, perturb, size=(2, 3)), -1.0, 1.0)
            if not _contractive(m):
                break
            maps[i] = m
        else:
            c = FractalClass(name, maps, probs_from_maps(maps), parent.family)
            if _accepted(c):
                return c
    raise GcplError("could not derive a sibling that passes the fill-rate check; lower perturb")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def benchmark_classes(n_classes: int, seed: int, **knobs) -> list[FractalClass]:
    """Fine-grained benchmark classes: ceil(n / family_size) parent FractalDB categories, each with
    `family_size` siblings (the parent with `n_perturbed` maps moved by U(-perturb, perturb) per
    coefficient). Parents themselves are not classes. Siblings are redrawn while their 32 px
    nuisance-free silhouettes overlap an earlier sibling's by more than `max_iou` (IoU), so that no
    two classes are indistinguishable. Knobs and defaults: FAMILY_DEFAULTS."""
    unknown = set(knobs) - set(FAMILY_DEFAULTS)
    if unknown:
        raise GcplError(f"unknown benchmark knob(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(FAMILY_DEFAULTS)}")
    kn = {**FAMILY_DEFAULTS, **knobs}
    n_classes = _check_int("n_classes", n_classes, 1, len(BENCHMARK_WORDS))
    seed = _check_int("seed", seed, 0)
    family_size = _check_int("family_size", kn["family_size"], 1)
    n_perturbed = _check_int("n_perturbed", kn["n_perturbed"], 1, MAX_MAPS)
    perturb, max_iou = float(kn["perturb"]), float(kn["max_iou"])
    if not 0 < perturb <= 1:
        raise GcplError(f"perturb must be in (0, 1], got {perturb}")
    if not 0 < max_iou <= 1:
        raise GcplError(f"max_iou must be in (0, 1], got {max_iou}")
    names = _names(BENCHMARK_WORDS, n_classes, _rng("benchmark", "names", seed), "benchmark_classes")
    out: list[FractalClass] = []
    n_families = -(-n_classes // family_size)
    for f in range(n_families):
        members = names[f * family_size:(f + 1) * family_size]
        fam_rng = _rng("benchmark", "family", seed, f)
        for _attempt in range(20):  # a parent whose siblings cannot be told apart is replaced
            parent = _random_class(fam_rng, "parent", family=f"s{seed}f{f}")
            sibs: list[FractalClass] = []
            masks: list[np.ndarray] = []
            tries = 0
            while len(sibs) < len(members) and tries < 50 * len(members):
                tries += 1
                c = _sibling(parent, fam_rng, members[len(sibs)], perturb, n_perturbed)
                m = c.mask(32)
                if all(_iou(m, o) <= max_iou for o in masks):
                    sibs.append(c)
                    masks.append(m)
            if len(sibs) == len(members):
                out.extend(sibs)
                break
        else:
            raise GcplError("could not draw distinguishable siblings; raise perturb or max_iou")
    return out


# ---------------------------------------------------------------------------------------------
# datasets


def instance_rng(seed: int, class_name: str, index: int) -> np.random.Generator:
    """The generator of image `index` of class `class_name` in a dataset written with `seed`."""
    return _rng("instance", seed, class_name, index)


def write_dataset(classes: list[FractalClass], out: str | Path, per_class: int, seed: int,
                  size: int = 32, *, meta: dict | None = None) -> Path:
    """Write out/<class name>/0000.png ... (per_class images each) and out/fractals.json (every
    parameter, seed, size, version). The folder is built beside `out` and moved into place at the
    end, so a crash never leaves a half-written dataset; `out` must not exist or be empty."""
    out = Path(out)
    per_class = _check_int("per_class", per_class, 1)
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, 4)
    if not classes:
        raise GcplError("write_dataset: no classes")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise GcplError("write_dataset: class names must be unique")
    for n in names:
        if not n or "/" in n or n.startswith(".") or os.sep in n:
            raise GcplError(f"write_dataset: class name {n!r} is not a valid folder name")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GcplError(f"{out} exists and is not an empty folder; choose another --out or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        for c in classes:
            d = tmp / c.name
            d.mkdir()
            for i in range(per_class):
                img = c.render(instance_rng(seed, c.name, i), size)
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                (d / f"{i:04d}.png").write_bytes(buf.getvalue())
        write_json(tmp / "fractals.json", {
            "format": FORMAT, "version": VERSION, "seed": seed, "size": size, "per_class": per_class,
            "fill_min": FILL_MIN, "fill_size": FILL_SIZE, "nuisance": NUISANCE,
            **({"meta": meta} if meta else {}),
            "classes": [c.to_json() for c in classes],
        })
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_classes(path: str | Path) -> list[FractalClass]:
    """The classes of a dataset folder written by `write_dataset` (or of its fractals.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "fractals.json"
    if not path.exists():
        raise GcplError(f"{path} not found; write the dataset with `gcpl fractals` first")
    obj = read_json(path)
    if obj.get("format") != FORMAT:
        raise GcplError(f"{path} is not a gcpl fractal dataset description")
    return [FractalClass.from_json(c) for c in obj["classes"]]


def generate_benchmark(out, n_classes: int = 10, per_class: int = 100, seed: int = 0,
                       size: int = 32) -> Path:
    """Fine-grained benchmark classes written as a class-per-folder dataset under `out`."""
    classes = benchmark_classes(n_classes, seed)
    meta = {"pool": "benchmark", "n_classes": n_classes, "knobs": dict(FAMILY_DEFAULTS)}
    return write_dataset(classes, out, per_class, seed, size, meta=meta)


def benchmark_split(folder: str | Path, test_per_class: int, split_file: str | Path | None = None):
    """The split of a folder written by `generate_benchmark`: in each class the last `test_per_class`
    images are test, the others train (instances are i.i.d. draws, so any fixed choice is as random
    as another). Written to `split_file` (default folder/split.json, paths relative to its folder)."""
    folder = Path(folder)
    meta = read_json(folder / "fractals.json")
    per_class = int(meta["per_class"])
    if not 1 <= test_per_class < per_class:
        raise GcplError(f"--test-per-class must be between 1 and --per-class - 1 ({per_class - 1}), "
                        f"got {test_per_class}")
    names = sorted(c["name"] for c in meta["classes"])
    split = Split(classes=names)
    for label, name in enumerate(names):
        files = sorted((folder / name).glob("*.png"))
        if len(files) != per_class:
            raise GcplError(f"{folder} holds another benchmark (class {name!r} has {len(files)} images, "
                            f"expected {per_class}); remove it or choose another --out")
        cut = per_class - test_per_class
        split.train += [Sample(str(f), label, name) for f in files[:cut]]
        split.test += [Sample(str(f), label, name) for f in files[cut:]]
    split_file = Path(split_file) if split_file is not None else folder / "split.json"
    split.to_json(split_file, relative_to=split_file.parent)
    return split_file, split


@dataclass
class FractalsJob:
    """`gcpl fractals`: the fine-grained IFS fractal benchmark as a class-per-folder dataset."""

    out: str = setting(help="folder to write (must not exist or be empty)")
    classes: int = setting(10, "fractal categories (families of 5 siblings)")
    per_class: int = setting(100, "images per class")
    seed: int = setting(0, "the categories and every image")
    size: int = setting(32, "image side in pixels")
    test_per_class: int | None = setting(None, "also write OUT/split.json with the last N images of each class "
                                         "as test, the rest as train")


def run_fractals(job: FractalsJob) -> tuple[Path, Path | None]:
    if job.test_per_class is not None and not 1 <= job.test_per_class < job.per_class:
        raise GcplError(f"--test-per-class must be between 1 and --per-class - 1 ({job.per_class - 1})")
    out = generate_benchmark(job.out, n_classes=job.classes, per_class=job.per_class, seed=job.seed, size=job.size)
    split = benchmark_split(out, job.test_per_class)[0] if job.test_per_class is not None else None
    return out, split


# ---------------------------------------------------------------------------------------------
# sanity baseline (not a test): how far do raw pixels get?


def pixel_baselines(n_classes: int = 10, shots: int = 16, n_test: int = 50, seed: int = 0,
                    size: int = 32, classes: list[FractalClass] | None = None) -> dict:
    """Accuracy of 1-nearest-neighbour (L2 on raw RGB pixels, shots plus their horizontal mirror
    images) and of nearest class mean, on benchmark classes: train = instances 0..shots-1, test =
    the next n_test instances (the same images `generate_benchmark` writes). `classes` replaces
    the benchmark classes (e.g. independent `pretrain_classes`, for comparison)."""
    classes = benchmark_classes(n_classes, seed) if classes is None else list(classes)
    n_classes = len(classes)

    def imgs(c, lo, hi):
        return np.stack([np.asarray(c.render(instance_rng(seed, c.name, i), size), dtype=np.float32) / 255
                         for i in range(lo, hi)])

    tr = [imgs(c, 0, shots) for c in classes]
    te = [imgs(c, shots, shots + n_test) for c in classes]
    xtr = np.concatenate([np.concatenate([t, t[:, :, ::-1]]) for t in tr]).reshape(-1, size * size * 3)
    ytr = np.repeat(np.arange(n_classes), 2 * shots)
    xte = np.concatenate(te).reshape(-1, size * size * 3)
    yte = np.repeat(np.arange(n_classes), n_test)

    def sqd(a, b):
        return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]

    nn = ytr[sqd(xte, xtr).argmin(1)]
    means = np.stack([xtr[ytr == k].mean(0) for k in range(n_classes)])
    ncm = sqd(xte, means).argmin(1)
    return {"seed": seed, "n_classes": n_classes, "shots": shots, "n_test": n_test, "size": size,
            "chance": 1.0 / n_classes, "nn1_flip": float((nn == yte).mean()),
            "nearest_mean": float((ncm == yte).mean())}


def jitter_oracle(n_classes: int = 10, seed: int = 0, per_class: int = 20, size: int = 32) -> float:
    """Are the classes separable in principle? Accuracy of matching FractalDB-jittered instances
    rendered WITHOUT any other nuisance (canonical pose, white on black) to the nearest class
    template (the un-jittered render, L2): the ceiling the parameter jitter leaves, not a method."""
    classes = benchmark_classes(n_classes, seed)

    def dens(c):
        return np.asarray(c.render(np.random.default_rng(1), size, nuisance=False), dtype=np.float64)[..., 0].ravel()

    templates = np.stack([dens(c) for c in classes])
    hits = 0
    for k, c in enumerate(classes):
        for j in range(per_class):
            x = dens(c.jittered(_rng("oracle", seed, k, j)))
            hits += int(((templates - x) ** 2).sum(1).argmin() == k)
    return hits / (n_classes * per_class)
