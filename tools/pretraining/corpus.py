"""Procedural captioned image corpus for pretraining the bundled tiny text-to-image model.

Two kinds of samples, both deterministic given (seed, index):

* **Shapes** (`kind="shapes"`): one or two geometric objects (circle, square, triangle, star, ring,
  cross, diamond, hexagon, heart, crescent) with a colour (11 colour words), a texture (plain,
  striped, dotted, checkered), a size (small, large) and a position (left, right, top, bottom,
  center) on a background (black, white, gray or another colour word). The caption mentions a
  random subset of the rendered attributes, always the shape, in a fixed word order with varied
  phrasing, e.g. "a large red striped circle on the left, blue background.",
  "a photo of a green star.", "a small yellow dotted square at the top and a blue ring at the
  bottom, black background.". Whatever a caption says is true of the image.
* **Fractals** (`kind="fractal"`): IFS fractal categories from `gcpl.data.fractals.pretrain_classes`
  (about 200), each captioned with its own word: "<word> fractal." (65%), "a <word> fractal."
  (20%), "a photo of a <word> fractal." / "an image of a <word> fractal." (10%), "<word>." (5%).
  The fractal's colour is drawn by its renderer and is not put in the caption.

Captions are phrased from the stored attributes with a caller-supplied generator, so a training
loop can re-phrase the same image differently at every step (`caption(attrs, rng)`).

Images are rendered 2x supersampled and box-filtered, then stored as uint8 HxWx3.
`CaptionedPool` renders N samples once into memory (40k 32x32 images: 123 MB). `probe_sets`
renders the held-out instances both tiny models are probed with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 225),
    "yellow": (240, 220, 30),
    "orange": (250, 140, 20),
    "purple": (140, 50, 185),
    "pink": (250, 135, 195),
    "white": (245, 245, 245),
    "cyan": (40, 215, 225),
    "brown": (130, 80, 40),
    "gray": (128, 128, 128),
}
BLACK = (8, 8, 8)
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon", "heart", "crescent")
TEXTURES = ("plain", "striped", "dotted", "checkered")
SIZES = ("small", "large")
POSITIONS = ("center", "left", "right", "top", "bottom")
POSITION_PHRASES = {
    "center": ("in the center", "in the middle"),
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
}
PREFIXES = ("a photo of", "an image of", "a picture of")
_LIGHT = {"yellow", "white", "cyan", "pink"}  # textures on these use a black partner colour


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass
class CorpusConfig:
    seed: int = 0
    image_size: int = 32
    fractal_fraction: float = 0.5  # share of samples that are fractal categories
    n_fractal_classes: int = 200
    two_object_fraction: float = 0.2  # share of shape samples with two objects
    fractal_nuisance: bool = True


# ----------------------------------------------------------------------------------------------
# Shape masks (2x supersampled, coordinates in [0, 1], y pointing down)


def _polygon_mask(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y1 == y2:
            continue
        cond = (y1 > py) != (y2 > py)
        xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (px < xint)
    return inside


def _regular(n: int, r: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    a = phase + 2 * np.pi * np.arange(n) / n
    return r * np.cos(a), r * np.sin(a)


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    """Soft mask (float32, size x size) of `shape` centred at (cx, cy) with radius r (image units)."""
    s = 2 * size
    g = (np.arange(s, dtype=np.float64) + 0.5) / s
    X, Y = np.meshgrid(g, g)
    # shape coordinates: unit radius, y up
    c, si = np.cos(rot), np.sin(rot)
    dx, dy = (X - cx) / r, -(Y - cy) / r
    x, y = c * dx + si * dy, -si * dx + c * dy
    rr = x * x + y * y
    if shape == "circle":
        m = rr <= 1.0
    elif shape == "ring":
        m = (rr <= 1.0) & (rr >= 0.55**2)
    elif shape == "square":
        m = np.maximum(abs(x), abs(y)) <= 0.8
    elif shape == "diamond":
        m = abs(x) + abs(y) <= 1.0
    elif shape == "triangle":
        m = (y >= -0.6) & (y <= 1.0 - np.sqrt(3) * abs(x) * 1.15)
    elif shape == "cross":
        m = ((abs(x) <= 0.3) & (abs(y) <= 1.0)) | ((abs(y) <= 0.3) & (abs(x) <= 1.0))
    elif shape == "hexagon":
        vx, vy = _regular(6, 1.0, 0.0)
        m = _polygon_mask(x, y, vx, vy)
    elif shape == "star":
        ox, oy = _regular(5, 1.05, np.pi / 2)
        ix, iy = _regular(5, 0.45, np.pi / 2 + np.pi / 5)
        vx = np.stack([ox, ix], 1).ravel()
        vy = np.stack([oy, iy], 1).ravel()
        m = _polygon_mask(x, y, vx, vy)
    elif shape == "heart":
        hx, hy = x * 1.15, y * 1.15 + 0.15
        m = (hx * hx + hy * hy - 1) ** 3 - hx * hx * hy**3 <= 0
    elif shape == "crescent":
        m = (rr <= 1.0) & ((x - 0.45) ** 2 + (y - 0.2) ** 2 >= 0.8**2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m.reshape(size, 2, size, 2).mean(axis=(1, 3)).astype(np.float32)


def texture_pattern(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (size, size) map: True where the object shows its partner colour."""
    yy, xx = np.mgrid[0:size, 0:size]
    scale = size / 32.0
    if texture == "plain":
        return np.zeros((size, size), dtype=bool)
    if texture == "striped":
        period = max(2, int(round(4 * scale)))
        off = int(rng.integers(period))
        direction = int(rng.integers(3))  # horizontal, vertical, diagonal
        coord = [yy, xx, xx + yy][direction]
        return ((coord + off) % period) < period / 2
    if texture == "dotted":
        period = max(3, int(round(5 * scale)))
        ox, oy = rng.integers(period, size=2)
        dx = (xx + ox) % period - period / 2 + 0.5
        dy = (yy + oy) % period - period / 2 + 0.5
        return dx * dx + dy * dy <= (0.3 * period) ** 2
    if texture == "checkered":
        period = max(2, int(round(3 * scale)))
        ox, oy = rng.integers(period, size=2)
        return (((xx + ox) // period) + ((yy + oy) // period)) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _jitter(rgb, rng, amount=18) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.integers(-amount, amount + 1, size=3), 0, 255)


# ----------------------------------------------------------------------------------------------
# Corpus

RESERVED_WORDS = frozenset(SHAPES) | frozenset(COLOURS) | frozenset(TEXTURES) | frozenset(SIZES) | frozenset(
    POSITIONS) | {"black", "background", "fractal", "photo", "image", "picture", "middle", "and"}


def fractal_classes(n: int, seed: int) -> list:
    """`n` pretraining fractal categories whose names are not words of the shapes vocabulary
    (e.g. "diamond" is both): the first n acceptable ones of `pretrain_classes(n + k, seed)`,
    which are the same classes `pretrain_classes(n, seed)` gives, minus the clashing ones."""
    from gcpl.data.fractals import PRETRAIN_WORDS, pretrain_classes

    k = len(RESERVED_WORDS & set(PRETRAIN_WORDS))
    classes = pretrain_classes(min(n + k, len(PRETRAIN_WORDS)), seed)
    return [c for c in classes if c.name not in RESERVED_WORDS][:n]


@dataclass
class Corpus:
    """Deterministic stream of (image uint8 HxWx3, attrs dict); `caption(attrs, rng)` phrases it."""

    cfg: CorpusConfig = field(default_factory=CorpusConfig)

    def __post_init__(self):
        self._fractals = None
        if self.cfg.fractal_fraction > 0:
            self._fractals = fractal_classes(self.cfg.n_fractal_classes, self.cfg.seed)

    @property
    def fractal_words(self) -> list[str]:
        return [c.name for c in self._fractals] if self._fractals else []

    def rng(self, index: int) -> np.random.Generator:
        """Per-sample generator: a hash of (seed, index)."""
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 0x5EED, index]))

    def sample(self, index: int) -> tuple[np.ndarray, dict]:
        rng = self.rng(index)
        if self._fractals and rng.random() < self.cfg.fractal_fraction:
            k = int(rng.integers(len(self._fractals)))
            cls = self._fractals[k]
            img = cls.render(rng, size=self.cfg.image_size, nuisance=self.cfg.fractal_nuisance)
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if arr.shape[:2] != (self.cfg.image_size, self.cfg.image_size):
                from PIL import Image

                arr = np.asarray(img.convert("RGB").resize((self.cfg.image_size,) * 2, Image.BILINEAR), np.uint8)
            return arr, {"kind": "fractal", "word": cls.name, "class_index": k}
        return self._render_shapes(rng)

    def _render_shapes(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        size = self.cfg.image_size
        colour_names = list(COLOURS)
        two = rng.random() < self.cfg.two_object_fraction
        if two:
            pair = [("left", "right"), ("top", "bottom")][int(rng.integers(2))]
            if rng.random() < 0.5:
                pair = pair[::-1]
            positions, sizes = list(pair), ["small", "small"]
        else:
            positions = [POSITIONS[int(rng.integers(len(POSITIONS)))]]
            sizes = [SIZES[int(rng.integers(2))]]
        objects = []
        used = set()
        for pos, sz in zip(positions, sizes):
            colour = colour_names[int(rng.integers(len(colour_names)))]
            while colour in used:
                colour = colour_names[int(rng.integers(len(colour_names)))]
            used.add(colour)
            objects.append(
                dict(
                    shape=SHAPES[int(rng.integers(len(SHAPES)))],
                    colour=colour,
                    # small textured shapes lose their outline at 32 px: mostly plain
                    texture=TEXTURES[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2] if sz == "large" else [0.7, 0.1, 0.1, 0.1]))],
                    size=sz,
                    position=pos,
                )
            )
        # background: never the colour of an object
        u = rng.random()
        if u < 0.35:
            bg = "black"
        else:
            choices = [c for c in colour_names if c not in used]
            if u < 0.5 and "white" in choices:
                bg = "white"
            elif u < 0.6 and "gray" in choices:
                bg = "gray"
            else:
                bg = choices[int(rng.integers(len(choices)))]
        bg_rgb = BLACK if bg == "black" else COLOURS[bg]
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = _jitter(bg_rgb, rng, 10)
        for obj in objects:
            off = 0.27 if obj["size"] == "small" else 0.17
            r = rng.uniform(0.13, 0.18) if obj["size"] == "small" else rng.uniform(0.3, 0.36)
            cx, cy = 0.5, 0.5
            cx += {"left": -off, "right": off}.get(obj["position"], 0.0)
            cy += {"top": -off, "bottom": off}.get(obj["position"], 0.0)
            cx += rng.uniform(-0.04, 0.04)
            cy += rng.uniform(-0.04, 0.04)
            rot = rng.uniform(-0.15, 0.15)
            m = shape_mask(obj["shape"], size, cx, cy, r, rot)[..., None]
            col = _jitter(COLOURS[obj["colour"]], rng)
            colour_img = np.broadcast_to(col, (size, size, 3)).copy()
            if obj["texture"] != "plain":
                partner = np.array(BLACK if obj["colour"] in _LIGHT else (245, 245, 245), np.float32)
                pat = texture_pattern(obj["texture"], size, rng)
                colour_img[pat] = partner
            img = img * (1 - m) + colour_img * m
        out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return out, {"kind": "shapes", "objects": objects, "background": bg}

    # -- captions ------------------------------------------------------------------------------

    @staticmethod
    def caption(attrs: dict, rng: np.random.Generator) -> str:
        if attrs["kind"] == "fractal":
            w = attrs["word"]
            u = rng.random()
            if u < 0.65:
                return f"{w} fractal."
            if u < 0.85:
                return f"{_article(w)} {w} fractal."
            if u < 0.95:
                return f"{PREFIXES[int(rng.integers(2))]} {_article(w)} {w} fractal."
            return f"{w}."
        objs = attrs["objects"]
        two = len(objs) == 2
        parts = []
        for obj in objs:
            words = []
            if not two and rng.random() < 0.5:
                words.append(obj["size"])
            if rng.random() < 0.85:
                words.append(obj["colour"])
            if obj["texture"] != "plain" and rng.random() < 0.6:
                words.append(obj["texture"])
            elif obj["texture"] == "plain" and rng.random() < 0.1:
                words.append("plain")
            words.append(obj["shape"])
            phrase = " ".join(words)
            if rng.random() < 0.85:
                phrase = f"{_article(phrase)} {phrase}"
            if two or rng.random() < 0.55:
                opts = POSITION_PHRASES[obj["position"]]
                phrase += " " + opts[int(rng.integers(len(opts)))]
            parts.append(phrase)
        text = " and ".join(parts)
        if rng.random() < 0.12:
            if not text.startswith(("a ", "an ")):
                text = f"{_article(text)} {text}"
            text = f"{PREFIXES[int(rng.integers(len(PREFIXES)))]} {text}"
        if rng.random() < 0.6:
            bg = attrs["background"]
            form = int(rng.integers(3))
            text += [f", {bg} background", f" on a {bg} background", f" against a {bg} background"][form]
        return text + "."


_WORKER_CORPUS: "Corpus | None" = None


def _worker_init(corpus: "Corpus") -> None:
    global _WORKER_CORPUS
    _WORKER_CORPUS = corpus


def _worker_render(span: tuple[int, int]):
    lo, hi = span
    out = [_WORKER_CORPUS.sample(i) for i in range(lo, hi)]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


class CaptionedPool:
    """`n` corpus samples rendered once into memory: images (n, H, W, 3) uint8 and attrs.
    `workers` > 1 renders in a process pool; the result is identical (per-index seeding)."""

    def __init__(self, corpus: Corpus, n: int, start: int = 0, workers: int = 1, log=None):
        t0 = time.perf_counter()
        size = corpus.cfg.image_size
        self.corpus = corpus
        self.images = np.empty((n, size, size, 3), dtype=np.uint8)
        self.attrs: list[dict] = []
        chunk = 1000
        spans = [(start + lo, start + min(n, lo + chunk)) for lo in range(0, n, chunk)]
        if workers > 1 and n > chunk:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers, initializer=_worker_init, initargs=(corpus,)) as pool:
                results = pool.imap(_worker_render, spans)
                self._collect(results, spans, start, n, t0, log)
        else:
            _worker_init(corpus)
            self._collect(map(_worker_render, spans), spans, start, n, t0, log)
        self.seconds = time.perf_counter() - t0

    def _collect(self, results, spans, start, n, t0, log):
        for (lo, hi), (imgs, attrs) in zip(spans, results):
            self.images[lo - start:hi - start] = imgs
            self.attrs.extend(attrs)
            if log is not None and (hi - start) % 10000 == 0:
                log(f"pool: {hi - start}/{n} images ({time.perf_counter() - t0:.0f} s)")

    def __len__(self) -> int:
        return len(self.images)

    def captions(self, indices, rng: np.random.Generator) -> list[str]:
        return [Corpus.caption(self.attrs[int(i)], rng) for i in indices]

    def summary(self) -> dict:
        kinds = [a["kind"] for a in self.attrs]
        return {
            "n_images": len(self),
            "n_fractal": kinds.count("fractal"),
            "n_shapes": kinds.count("shapes"),
            "n_fractal_classes": len({a["word"] for a in self.attrs if a["kind"] == "fractal"}),
            "render_seconds": round(self.seconds, 1),
        }


# ---------------------------------------------------------------------------------------------- probe images

PROBE_SEED = 0x9B0BE  # the seed namespace of the held-out probe images


def probe_sets(corpus: Corpus, seed: int, per_class: int, n_way: int = 10,
               all_fractals: int = 0) -> dict[str, tuple[np.ndarray, list[int], list[str]]]:
    """Unseen rendered instances for the probes of both tiny models (the SD's word probe, the
    CLIP's zero-shot probe; the same seeds, so with more per class the first 4 of each class are
    those of a 4-per-class probe): `per_class` of each of the first `n_way` pretraining fractal
    categories ("fractal", prompts "<word> fractal.") and of the 10 shapes, single objects ("shape",
    prompts "a <shape>."); with `all_fractals` > 0, also that many of each of all the corpus's
    categories ("fractal_all"). Returns {name: (images uint8 (N, H, W, 3), labels, prompts)}."""
    size = corpus.cfg.image_size
    groups = {}

    def fractal_group(classes, k):
        imgs, labels = [], []
        for c, cls in enumerate(classes):
            for j in range(k):
                rng = np.random.default_rng(np.random.SeedSequence([seed, PROBE_SEED, c, j]))
                imgs.append(np.asarray(cls.render(rng, size=size).convert("RGB"), np.uint8))
                labels.append(c)
        return np.stack(imgs), labels, [f"{cls.name} fractal." for cls in classes]

    if corpus._fractals:
        groups["fractal"] = fractal_group(corpus._fractals[:n_way], per_class)
    shapes = list(SHAPES[:n_way])
    imgs, labels, counts, i = [], [], {s: 0 for s in shapes}, 0
    while min(counts.values()) < per_class and i < 200 * per_class * n_way:
        rng = np.random.default_rng(np.random.SeedSequence([seed, PROBE_SEED, 10**6 + i]))
        i += 1
        img, attrs = corpus._render_shapes(rng)
        if len(attrs["objects"]) == 1 and counts.get(attrs["objects"][0]["shape"], per_class) < per_class:
            counts[attrs["objects"][0]["shape"]] += 1
            imgs.append(img)
            labels.append(shapes.index(attrs["objects"][0]["shape"]))
    groups["shape"] = (np.stack(imgs), labels, [f"a {s}." for s in shapes])
    if all_fractals and corpus._fractals and len(corpus._fractals) > n_way:
        groups["fractal_all"] = fractal_group(corpus._fractals, all_fractals)
    return groups
