"""`gcpl` command line: a thin argparse front end over the library. `main(argv)` is testable."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import GcplError


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="hub id, local diffusers folder, or 'tiny' (bundled); "
                   "default CompVis/stable-diffusion-v1-4 (bundled tiny when HF_HUB_OFFLINE=1)")
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    g.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="precision of the frozen model "
                   "(default: bf16 on CUDA, fp32 on CPU)")
    g.add_argument("--resolution", type=int, help="image size in pixels (default: the model's native size)")
    g.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPU; warm-up once, then faster)")


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    d = TrainConfig()
    parser = argparse.ArgumentParser(prog="gcpl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="learn one token per class (GCPL or CoMPLe)")
    t.add_argument("data", help="folder with one subfolder per class, or a split JSON (uses its train list)")
    t.add_argument("--out", required=True, help="run folder to write")
    t.add_argument("--method", choices=["gcpl", "comple"], default=d.method)
    t.add_argument("--shots", type=int, default=16, help="training images per class (default 16)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--template", default=d.template, help="prompt with one {} for the class, "
                   "e.g. 'A photo of {}, a type of car.'")
    t.add_argument("--init-word", default=d.init_word, help="single-token word that initialises the tokens")
    t.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    t.add_argument("--lr", type=float, help="learning rate (default: paper's 5e-4 gcpl, 1e-3 comple)")
    t.add_argument("--batch", type=int, default=d.batch, help="gcpl: samples per class per step; "
                   "comple: samples per step")
    t.add_argument("--lam", type=float, default=d.lam, help="CoMPLe negative weight lambda")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    t.add_argument("--groups", type=int, default=d.groups, help="comple: groups of --batch samples per step, "
                   "each with its own negatives (processes of a multi-GPU run split them)")
    t.add_argument("--max-batch", type=int, default=d.max_batch, help="samples per UNet forward/backward")
    t.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--allow-fewer", action="store_true", help="classes with fewer than --shots images use all")
    t.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    _add_model_args(t)

    e = sub.add_parser("eval", help="classify test images with the diffusion classifier")
    e.add_argument("data", help="folder with one subfolder per class, or a split JSON (uses its test list)")
    e.add_argument("--out", required=True, help="folder for predictions and results")
    src = e.add_mutually_exclusive_group(required=True)
    # not "--run": launchers (torchrun, accelerate) prefix-match it to their own --run-path
    src.add_argument("--run-dir", dest="run", help="trained run folder (from gcpl train)")
    src.add_argument("--zero-shot", action="store_true", help="plain class names in the template")
    e.add_argument("--template", help="zero-shot template with one {} (default 'A photo of {}.')")
    e.add_argument("--n-samples", type=_ints, help="cumulative (t, noise) pairs per stage, e.g. 20,50,100,500")
    e.add_argument("--keep", type=_ints, help="classes kept after each stage, e.g. 20,10,5,1")
    e.add_argument("--spacing", choices=["nested", "li"], default="nested",
                   help="nested: each stage adds new timesteps to the last's; li: Li et al.'s re-spaced stages")
    e.add_argument("--norm", choices=["l2", "l1"], default="l2")
    e.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="remove each learned token's generic error level, measured on N support images per class")
    e.add_argument("--batch", type=int, default=64, help="UNet samples per call")
    e.add_argument("--images-per-batch", type=int, default=8, help="images scored together")
    e.add_argument("--seed", type=int, default=0, help="seeds the shared noise (and --limit's subset)")
    e.add_argument("--limit", type=int, help="evaluate a seeded random subset of N images")
    e.add_argument("--part", default="test", choices=["train", "val", "test"], help="list of a split JSON")
    e.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    _add_model_args(e)

    dm = sub.add_parser("demo", help="offline demo on the bundled model: zero-shot vs GCPL vs CoMPLe vs baselines")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--classes", type=int, default=10)
    dm.add_argument("--shots", type=int, default=16)
    dm.add_argument("--test-per-class", type=int, default=12)
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--steps", type=int, help="training steps of GCPL and CoMPLe (default 300)")
    dm.add_argument("--n-samples", type=_ints, help="classifier schedule (default 8,32,96 keep 4,2,1)")
    dm.add_argument("--keep", type=_ints)
    dm.add_argument("--methods", default="zeroshot,gcpl,comple")
    dm.add_argument("--no-samples", action="store_true", help="skip generating samples.png")
    dm.add_argument("--calibrate", type=int, help="support images per class for score calibration")
    dm.add_argument("--workers", type=int, default=2, help="processes running the methods side by side")
    dm.add_argument("--model", default="tiny", help="the bundled model (default) or any SD folder / hub id")
    dm.add_argument("--device")

    f = sub.add_parser("fractals", help="write the fine-grained IFS fractal benchmark as a class-per-folder dataset")
    f.add_argument("--out", required=True)
    f.add_argument("--classes", type=int, default=10)
    f.add_argument("--per-class", type=int, default=100)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--size", type=int, default=32, help="image side in pixels")

    pr = sub.add_parser("prepare", help="read a dataset as distributed and write its canonical split JSON")
    pr.add_argument("dataset", help="cars, flowers102, cornseeds, crc5k, isic2018, lc25000, fractals or folder")
    pr.add_argument("--root", required=True, help="the dataset's folder as downloaded")
    pr.add_argument("--out", help="split JSON to write (default: ROOT/gcpl_split_<dataset>_seed<seed>.json)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the stratified split (datasets without one)")
    pr.add_argument("--test-fraction", type=float, help="held-out fraction (default: the preset's)")

    from .experiment import add_cli

    COMMANDS.update(add_cli(sub))  # experiment, report
    return parser


def cmd_train(a) -> None:
    from .api import TrainJob, train
    from .train import TrainConfig

    cfg = TrainConfig(
        method=a.method, template=a.template, init_word=a.init_word, steps=a.steps, batch=a.batch, lr=a.lr,
        weight_decay=a.weight_decay, lam=a.lam, flip=not a.no_flip, seed=a.seed, max_batch=a.max_batch, groups=a.groups,
        checkpoint_every=a.checkpoint_every,
    )
    job = TrainJob(
        data=a.data, out=a.out, shots=a.shots, model=a.model, device=a.device, dtype=a.dtype,
        resolution=a.resolution, allow_fewer=a.allow_fewer, strict=a.strict, resume=a.resume, compile=a.compile,
        train=cfg,
    )
    if a.shots < 1:
        raise GcplError("--shots must be at least 1")
    out = train(job)
    print(f"trained {cfg.method} tokens -> {out}/tokens.json, embeddings in {out}/embeddings/")


def cmd_eval(a) -> None:
    from .api import EvalJob, evaluate
    from .classify import ClassifyConfig

    job = EvalJob(
        data=a.data, out=a.out, run=a.run, zero_shot=a.zero_shot, template=a.template, model=a.model,
        device=a.device, dtype=a.dtype, resolution=a.resolution, part=a.part, limit=a.limit,
        images_per_batch=a.images_per_batch, strict=a.strict, compile=a.compile, calibrate=a.calibrate,
        classify=ClassifyConfig(n_samples=a.n_samples, keep=a.keep, norm=a.norm, batch=a.batch, seed=a.seed,
                                spacing=a.spacing),
    )
    m = evaluate(job)
    if m.get("n_images"):
        print(f"top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  "
              f"mean per-class {100 * m['mean_per_class_accuracy']:.2f}%  macro-F1 {100 * m['macro_f1']:.2f}%  "
              f"({m['n_images']} images, {m['unet_calls_per_image']:.0f} UNet calls each) -> {a.out}/results.md")


def cmd_demo(a) -> None:
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(out=a.out, classes=a.classes, shots=a.shots, test_per_class=a.test_per_class, seed=a.seed,
                     model=a.model, device=a.device, methods=tuple(m for m in a.methods.split(",") if m),
                     samples=not a.no_samples, workers=a.workers)
    if a.steps is not None:
        cfg.gcpl.steps = cfg.comple.steps = a.steps
    if a.calibrate is not None:
        cfg.calibrate = a.calibrate
    if a.n_samples or a.keep:
        from .classify import ClassifyConfig

        cfg.classify = ClassifyConfig(n_samples=a.n_samples, keep=a.keep)
    run_demo(cfg)


def cmd_prepare(a) -> None:
    from .presets import class_counts, get_preset, prepare_dataset

    preset = get_preset(a.dataset)
    path, split = prepare_dataset(preset.name, a.root, out=a.out, seed=a.seed, test_fraction=a.test_fraction)
    counts = class_counts(split)
    parts = [p for p in ("train", "val", "test") if any(p in c for c in counts.values())]
    width = max(len(c) for c in counts)
    print(f"{'class':<{width}}  " + "  ".join(f"{p:>6}" for p in parts))
    for name, c in counts.items():
        print(f"{name:<{width}}  " + "  ".join(f"{c.get(p, 0):>6}" for p in parts))
    totals = "  ".join(f"{sum(c.get(p, 0) for c in counts.values()):>6}" for p in parts)
    print(f"{'total':<{width}}  {totals}")
    print(f"{len(split.classes)} classes; split written to {path}")
    print(f'template "{preset.template}", init word "{preset.init_word}"')


def cmd_fractals(a) -> None:
    from .data.fractals import generate_benchmark

    out = generate_benchmark(a.out, n_classes=a.classes, per_class=a.per_class, seed=a.seed, size=a.size)
    print(f"wrote {a.classes} classes x {a.per_class} images to {out}")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "demo": cmd_demo, "fractals": cmd_fractals,
            "prepare": cmd_prepare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        COMMANDS[args.command](args)
    except GcplError as e:
        print(f"gcpl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gcpl {args.command}: interrupted; rerun with the same --out (and --resume for train) to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
