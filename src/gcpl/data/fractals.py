"""The IFS fractal benchmark and pretraining pool, and the class-per-folder datasets written from them.

Two uses of the categories of `gcpl.data.ifs` (whose names are re-exported here):

* a fine-grained few-shot benchmark (`benchmark_classes`, `generate_benchmark`): the classes come
  in families, siblings derived from one parent IFS by perturbing one of its maps, and every image
  carries class-independent nuisances (pose, colour, background, blur, noise, parameter jitter);
* the pretraining corpus of a tiny text-to-image model (`pretrain_classes`): independent FractalDB
  categories, captioned "<name> fractal.".

`write_dataset` writes out/<class>/0000.png ... and out/fractals.json (every parameter, seed, size,
version); `benchmark_split`, `gcpl fractals` (`FractalsJob`, `run_fractals`) and the pixel
baselines build on it. Everything is deterministic given the seed: the benchmark and the
pretraining pool draw from different seed namespaces and from disjoint halves of the built-in word
list, so they never share a name or a parameter set. See docs/FRACTALS.md for the design and the
measured pixel baselines.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GcplError
from ..io import read_json, write_json
from ..settings import setting
from .ifs import (
    DENSITY_REF_PERCENTILE,
    FILL_MIN,
    FILL_SIZE,
    MAX_MAPS,
    MAX_SINGULAR,
    MIN_MAPS,
    NUISANCE,
    POINTS_PER_PIXEL,
    VERSION,
    FractalClass,
    _accepted,
    _check_int,
    _contractive,
    _random_class,
    _rng,
    param_distance,
    probs_from_maps,
)
from .splits import Sample, Split

__all__ = [
    "BENCHMARK_WORDS", "DENSITY_REF_PERCENTILE", "FAMILY_DEFAULTS", "FILL_MIN", "FILL_SIZE", "FORMAT", "MAX_MAPS",
    "MAX_SINGULAR", "MIN_MAPS", "NUISANCE", "POINTS_PER_PIXEL", "PRETRAIN_WORDS", "VERSION", "WORDS", "FractalClass",
    "FractalsJob", "benchmark_classes", "benchmark_split", "generate_benchmark", "instance_rng", "jitter_oracle",
    "load_classes", "param_distance", "pixel_baselines", "pretrain_classes", "probs_from_maps", "run_fractals",
    "write_dataset",
]

FORMAT = "gcpl-fractals"

# Benchmark families (see docs/FRACTALS.md): every benchmark class is a sibling of a parent IFS,
# i.e. the parent with `n_perturbed` of its maps (chosen with the map probabilities) moved by
# U(-perturb, perturb) on each of their six coefficients (clipped to [-1, 1]).
FAMILY_DEFAULTS = {
    "family_size": 5,  # siblings per parent: 10 classes -> 2 parents
    "perturb": 0.2,  # half-width of the uniform offset per coefficient (coefficients live in [-1, 1])
    "n_perturbed": 1,  # maps moved per sibling
    "max_iou": 0.85,  # siblings whose nuisance-free 32 px masks overlap more than this are redrawn
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
# named categories: the pretraining pool and the benchmark families


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
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700: the dataset is read like any folder the user makes
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
