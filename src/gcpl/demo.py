"""`gcpl demo`: the paper's experiment in miniature, offline, on the bundled models.

Generates the fine-grained fractal benchmark (categories the models never saw), then compares on
the same shots and test images: the zero-shot diffusion classifier with the categories' names,
GCPL, CoMPLe, the CLIP competitors that fit its time on the bundled tiny CLIP (zero-shot CLIP,
linear probe, Tip-Adapter, Tip-Adapter-F, CoOp, KgCoOp; `--methods all` adds CoCoOp, MaPLe and
PromptSRC), pixel 1-nearest-neighbour with flipped shots and the nearest class mean of the VAE
latents. The diffusion methods' confidences are calibrated on further rendered images of the same
classes (never a train or test image) and their calibration on the test images is reported (ECE,
reliability.png). Writes results.json, report.md, confusion.png, reliability.png, samples.png.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .backbone import device_setting, load_backbone, model_setting
from .baselines import nearest_class_mean, pixel_nn_with_flips
from .classify import ClassifyConfig
from .data.fractals import VERSION as FRACTALS_VERSION
from .data.fractals import benchmark_split, generate_benchmark
from .data.images import load_batch
from .data.splits import Sample, Split
from .errors import GcplError
from .generation import samples_png
from .io import atomic_write_text, read_json, write_json
from .latents import encode
from .lock import locked
from .methods import METHODS, MethodRun, RunSettings, method_names, run_method
from .metrics import compute_metrics
from .runs import versions
from .settings import setting
from .trainer import TrainConfig

# zero-shot, GCPL, CoMPLe and the CLIP competitors that fit the demo's time (CoCoOp, MaPLe,
# PromptSRC: --methods all)
DEMO_METHODS = ("zeroshot", "gcpl", "comple", "clip-zs", "linear-probe", "tip-adapter", "tip-adapter-f", "coop",
                "kgcoop")
TEMPLATE = "{} fractal."  # the paper's Table 1 template for fractals
INIT_WORD = "fractal"


@dataclass
class DemoConfig:
    out: str = setting("runs/demo", "folder for the benchmark, every method's runs and the report; rerunning "
                       "into it resumes", identity=False)
    classes: int = setting(10, "fractal categories (never seen in pretraining)")
    shots: int = setting(16, "training images per class")
    test_per_class: int = setting(12, "held-out test images per class")
    seed: int = setting(0, "benchmark, shots, training and classifier noise")
    model: str = model_setting("tiny")
    clip_model: str = setting("tiny", "CLIPModel of the CLIP methods (default: the bundled tiny CLIP, pretrained "
                              "on the same procedural images and captions as the bundled SD)")
    device: str | None = device_setting()
    steps: int | None = setting(None, "training steps of GCPL and CoMPLe (default: the demo's 300)")
    n_samples: tuple[int, ...] | None = setting(None, "classifier stages (default: the demo's schedule)")
    keep: tuple[int, ...] | None = setting(None, "classes kept after each stage (with --n-samples)")
    methods: tuple[str, ...] = setting(DEMO_METHODS, "comma-separated methods to compare, or all (adds CoCoOp, "
                                       "MaPLe and PromptSRC)", parse=method_names)
    samples: bool = setting(True, "write samples.png (images generated from the learned tokens)",
                            flag="--no-samples")
    calibrate: int = setting(0, "support images per class to calibrate the learned tokens' scores (0: off)")
    workers: int = setting(2, "processes running the methods side by side (1: all in this process)",
                           identity=False)
    calibration_per_class: int = setting(
        4, "more rendered images per class (never train or test images) that calibrate the diffusion methods' "
        "confidences (0: none)", metavar="K")
    # The demo's own preset (not options): the bundled model needs a 10x larger lr than SD-1.4.
    gcpl: TrainConfig = setting(default_factory=lambda: TrainConfig(
        method="gcpl", template=TEMPLATE, init_word=INIT_WORD, steps=300, lr=5e-3, batch=4), cli=False,
        help="GCPL training of the demo")
    comple: TrainConfig = setting(default_factory=lambda: TrainConfig(
        method="comple", template=TEMPLATE, init_word=INIT_WORD, steps=300, lr=5e-3, batch=10, groups=4), cli=False,
        help="CoMPLe training of the demo")
    # nested stages: 8 timesteps for every class, 32 for the best 4, 96 for the best 2 (304 calls)
    classify: ClassifyConfig = setting(default_factory=lambda: ClassifyConfig(n_samples=(8, 32, 96), keep=(4, 2, 1),
                                                                               spacing="nested"),
                                       cli=False, help="the demo's classifier")

    def __post_init__(self):
        self.methods = method_names(self.methods)
        if self.steps is not None:
            self.gcpl = dataclasses.replace(self.gcpl, steps=self.steps)
            self.comple = dataclasses.replace(self.comple, steps=self.steps)
        if self.n_samples is not None or self.keep is not None:
            self.classify = dataclasses.replace(self.classify, n_samples=self.n_samples, keep=self.keep)


def make_benchmark(cfg: DemoConfig) -> tuple[Path, Split]:
    data = Path(cfg.out) / "data"
    per_class = cfg.shots + cfg.test_per_class
    meta_file = data / "fractals.json"
    if not meta_file.exists():
        generate_benchmark(data, n_classes=cfg.classes, per_class=per_class, seed=cfg.seed)
    meta = read_json(meta_file)
    made = (meta.get("seed"), len(meta.get("classes", [])), meta.get("per_class"), meta.get("version"))
    if made != (cfg.seed, cfg.classes, per_class, FRACTALS_VERSION):
        raise GcplError(f"{data} holds another benchmark (seed {made[0]}, {made[1]} classes, {made[2]} images "
                        f"each, generator v{made[3]}; asked for seed {cfg.seed}, {cfg.classes} classes, "
                        f"{per_class} images each, v{FRACTALS_VERSION}); remove it or choose another --out")
    return benchmark_split(data, cfg.test_per_class, Path(cfg.out) / "split.json")


def make_calibration_set(cfg: DemoConfig, split: Split) -> Path | None:
    """Further rendered instances of the benchmark's classes (instances per_class .. per_class + K - 1
    of each class's seeded stream, never a train or test image): the labelled held-out images the
    diffusion methods' confidences are calibrated on. A split JSON with them as its val list."""
    if cfg.calibration_per_class <= 0:
        return None
    per_class = cfg.shots + cfg.test_per_class
    data, path = Path(cfg.out) / "calibration", Path(cfg.out) / "calibration.json"
    if not (data / "fractals.json").exists():
        generate_benchmark(data, n_classes=cfg.classes, per_class=per_class + cfg.calibration_per_class,
                           seed=cfg.seed)
    calib = Split(classes=split.classes)
    for label, name in enumerate(split.classes):
        if (data / name / "0000.png").read_bytes() != Path(split.train[0].path).parent.parent.joinpath(
                name, "0000.png").read_bytes():
            raise GcplError(f"{data} does not render the benchmark's own classes; remove it or choose another --out")
        calib.val += [Sample(str(data / name / f"{i:04d}.png"), label, name)
                      for i in range(per_class, per_class + cfg.calibration_per_class)]
    calib.to_json(path, relative_to=path.parent)
    return path


def check_config(cfg: DemoConfig) -> None:
    """One-line errors for settings that make no experiment."""
    for name, value, lo in (("--classes", cfg.classes, 2), ("--shots", cfg.shots, 1),
                            ("--test-per-class", cfg.test_per_class, 1), ("--workers", cfg.workers, 1)):
        if value < lo:
            raise GcplError(f"{name} must be at least {lo}, got {value}")


@locked("demo")
def run_demo(cfg: DemoConfig, progress: bool = True, log=print) -> dict:
    """The demo into cfg.out (see the module docstring); returns the summary (results.json). The
    folder is locked while it runs (gcpl.lock); its nested runs lock their own folders."""
    check_config(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    split_file, split = make_benchmark(cfg)
    calib_file = make_calibration_set(cfg, split)
    timings["benchmark"] = time.perf_counter() - t0
    log(f"benchmark: {len(split.classes)} fractal categories, {cfg.shots} shots and {cfg.test_per_class} test "
        f"images each -> {out / 'data'}")
    bb = load_backbone(cfg.model, cfg.device)
    write_json(out / "config.json", {"command": "demo", "settings": asdict(cfg), "model": bb.describe(),
                                     "versions": versions()})
    results: dict[str, dict] = {}

    def finished(method: str, m: dict, seconds: float) -> None:
        timings[method] = seconds
        results[method] = _row(m)
        log(f"[{time.perf_counter() - t0:4.0f} s] {METHODS[method].label}: top-1 {100 * m['top1']:.1f}% "
            f"({seconds:.0f} s)")

    # Longest first. With workers > 1 each method runs in its own single-threaded process: on a
    # small CPU two 1-thread processes do twice the work of one 2-thread process on tiny models.
    methods = sorted(cfg.methods, key=lambda m: -METHODS[m].demo_seconds)
    log(f"[{time.perf_counter() - t0:4.0f} s] training and evaluating {len(methods)} methods"
        + (f" in {min(cfg.workers, len(methods))} processes" if cfg.workers > 1 and len(methods) > 1 else "")
        + " (each line below is one finished method)")
    if cfg.workers > 1 and len(methods) > 1:
        from concurrent.futures import as_completed

        from .workers import worker_pool

        with worker_pool(cfg.workers) as pool:
            futures = [pool.submit(_run_method, cfg, m, str(split_file), None, False, calib_file) for m in methods]
            for f in as_completed(futures):
                finished(*f.result())
    else:
        for m in methods:
            finished(*_run_method(cfg, m, str(split_file), bb, progress, calib_file))
    results = {m: results[m] for m in cfg.methods}

    t = time.perf_counter()
    results.update(simple_baselines(bb, split))
    timings["baselines"] = time.perf_counter() - t
    log(f"[{time.perf_counter() - t0:4.0f} s] simple baselines (pixel 1-NN, VAE-latent class means)")
    if cfg.samples and "gcpl" in cfg.methods:
        t = time.perf_counter()
        samples_png(bb, out / "gcpl" / "train", split, out / "samples.png", seed=cfg.seed)
        timings["samples"] = time.perf_counter() - t
        log(f"[{time.perf_counter() - t0:4.0f} s] samples.png: images generated from the learned GCPL tokens")
    timings["total"] = time.perf_counter() - t0

    summary = {"chance": 1 / len(split.classes), "methods": results, "seconds": timings,
               "classes": split.classes, "settings": asdict(cfg)}
    write_json(out / "results.json", summary)
    confusion = _confusions(out, cfg.methods, split.classes)
    reliability = _reliability(out, results)
    atomic_write_text(out / "report.md", report_markdown(summary, confusion, reliability))
    log(table(summary))
    log(f"wrote {out / 'report.md'}, results.json" + (", confusion.png" if confusion else "")
        + (", samples.png" if "samples" in timings else ""))
    return summary


def _run_method(cfg: DemoConfig, method: str, split_file: str, bb=None, progress: bool = False,
                calibration: Path | None = None):
    """Train (if the method learns) and evaluate one method; returns (method, metrics, seconds)."""
    t = time.perf_counter()
    if bb is None:  # a worker process: one thread, its own copy of the model
        torch.set_num_threads(1)
        if METHODS[method].family == "diffusion":
            bb = load_backbone(cfg.model, cfg.device)
    settings = RunSettings(model=cfg.model, clip_model=cfg.clip_model, device=cfg.device,
                           calibrate=0 if method == "zeroshot" else cfg.calibrate,
                           calibration_data=str(calibration) if calibration else None)
    run = MethodRun(method=method, folder=Path(cfg.out) / method, data=split_file, shots=cfg.shots, seed=cfg.seed,
                    template=TEMPLATE, init_word=INIT_WORD, settings=settings,
                    train=getattr(cfg, method) if method in ("gcpl", "comple") else TrainConfig(),
                    classify=cfg.classify, dataset="fractals")
    m = run_method(run, progress=progress, backbone=bb)
    return method, m, time.perf_counter() - t


def _row(m: dict) -> dict:
    row = {k: m[k] for k in ("top1", "top5", "mean_per_class_accuracy", "macro_f1", "unet_calls_per_image")}
    if m.get("calibration"):
        row["calibration"] = m["calibration"]
    return row


def simple_baselines(bb, split: Split) -> dict:
    size = bb.resolution
    tr = load_batch([s.path for s in split.train], size)
    te = load_batch([s.path for s in split.test], size)
    ytr = torch.tensor([split.train[i].label for i in tr.kept])
    yte = [split.test[i].label for i in te.kept]
    C = len(split.classes)
    out = {}
    pred = pixel_nn_with_flips(tr.pixels, ytr, te.pixels)
    out["pixel_nn"] = _row_from_preds(yte, pred, C)
    ltr = encode(bb.vae, tr.pixels, flip=True)
    lte = encode(bb.vae, te.pixels)
    feats = torch.cat([ltr.mean[:, 0], ltr.mean[:, 1]])
    pred = nearest_class_mean(feats, torch.cat([ytr, ytr]), lte.mean[:, 0], C)
    out["latent_ncm"] = _row_from_preds(yte, pred, C)
    return out


def _row_from_preds(labels, pred, C) -> dict:
    pred = pred.tolist()
    m = compute_metrics(labels, pred, [[p] for p in pred], C)
    return {"top1": m["top1"], "top5": None, "mean_per_class_accuracy": m["mean_per_class_accuracy"],
            "macro_f1": m["macro_f1"], "unet_calls_per_image": 0}


NAMES = {
    **{k: m.label for k, m in METHODS.items()},
    "pixel_nn": "pixel 1-NN (+ flipped shots)",
    "latent_ncm": "nearest class mean of VAE latents",
}


def table(summary: dict) -> str:
    rows = ["| method | top-1 | mean per-class | macro-F1 | UNet calls / image | mean confidence | ECE |",
            "|---|---|---|---|---|---|---|"]
    for k, m in summary["methods"].items():
        c = m.get("calibration")
        conf = f"{100 * c['mean_confidence']:.1f}% | {c['ece']:.3f}" if c else " | "
        rows.append(f"| {NAMES.get(k, k)} | {100 * m['top1']:.1f}% | {100 * m['mean_per_class_accuracy']:.1f}% | "
                    f"{100 * m['macro_f1']:.1f}% | {m['unet_calls_per_image']:.0f} | {conf} |")
    rows.append(f"| chance | {100 * summary['chance']:.1f}% | | | | | |")
    return "\n".join(rows)


_CONTROLLED = (
    "The diffusion methods use the bundled tiny Stable Diffusion, the CLIP methods the bundled tiny CLIP. "
    "Both were pretrained by gcpl's tools on the same procedural images with the same caption distribution "
    "(shapes and 200 IFS fractal categories with their own words), so the table compares generative and "
    "contrastive pretraining on identical data, a controlled comparison that published tables cannot offer. "
    "Neither model saw these categories or their names.\n\n")


def report_markdown(summary: dict, confusion: bool = True, reliability: bool = False) -> str:
    """report.md; it shows confusion.png when it was drawn (`confusion`), reliability.png when the
    diffusion methods' confidences were calibrated and drawn, and samples.png when it was made
    (summary["seconds"] has "samples": not with --no-samples or without GCPL)."""
    s = summary["settings"]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())
    return (
        "# gcpl demo\n\n"
        f"{len(summary['classes'])} fine-grained fractal categories the bundled model never saw "
        f"({', '.join(summary['classes'])}), {s['shots']} training shots and {s['test_per_class']} test images "
        f"each, seed {s['seed']}. Template: `{TEMPLATE}`.\n\n" + table(summary) + "\n\n"
        + (_CONTROLLED if any(METHODS[m].family == "clip" for m in s["methods"]) else "")
        + (_CALIBRATED.format(k=s.get("calibration_per_class")) if any(
            "calibration" in m for m in summary["methods"].values()) else "")
        + f"Wall time: {secs}.\n"
        + ("\n![confusion matrices](confusion.png)\n" if confusion else "")
        + ("\n![reliability of the confidences](reliability.png)\n" if reliability else "")
        + ("\n![generated from the learned tokens](samples.png)\n" if "samples" in summary["seconds"] else "")
    )


_CALIBRATED = (
    "Confidence: the probability that the prediction is right, a logistic function of the relative "
    "margin between the two best classes' denoising errors, fitted on {k} further rendered images per "
    "class (never a train or test image); ECE: expected calibration error on the test images (10 equal-width bins; 0 "
    "is perfect).\n\n")


def _reliability(out: Path, results: dict) -> bool:
    """reliability.png of the calibrated methods; False when there is none or no matplotlib."""
    bins = {NAMES.get(k, k): m["calibration"]["bins"] for k, m in results.items() if m.get("calibration")}
    if not bins:
        return False
    try:
        from .reports.plots import reliability_png

        reliability_png(bins, out / "reliability.png", "Reliability on the test images")
    except ImportError:  # matplotlib is the optional [plots] extra
        return False
    return True


def _confusions(out: Path, methods, classes) -> bool:
    """confusion.png of every method that has one; False when it is not drawn (no matplotlib)."""
    from .reports.plots import confusion_grid

    mats = {}
    for m in methods:
        f = out / m / "eval" / "results.json"
        if f.exists():
            mats[NAMES[m]] = read_json(f)["confusion_matrix"]
    if not mats:
        return False
    try:
        confusion_grid(mats, classes, out / "confusion.png")
    except ImportError:  # matplotlib is the optional [plots] extra
        return False
    return True
