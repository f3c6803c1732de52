"""Classifier schedules: cost and agreement of adaptive evaluation schedules on a trained run.

For each schedule (Li et al.'s 20,50,100,500 / 20,10,5,1 as the baseline; gcpl's
`default_schedule` for the run's class count; any `--schedule n1,n2,..:k1,k2,..`) it scores the
same test images with `gcpl.classify.DiffusionClassifier` (seeded: the same noise for every
schedule) and reports UNet calls per image, images per second, top-1, and the % of images whose
prediction equals the baseline schedule's. With `--full-subset N`, the first N of those images are
also scored by the plain evaluation of every class at `--full-n` timesteps (one stage, keep 1:
no early elimination), and every schedule's agreement with it on that subset is reported.
With `--baseline-reseed`, the baseline also runs with other (t, noise) draws (seed + 1): its
agreement with itself is the noise floor of any agreement target (a schedule cannot be expected
to agree with one noisy run of the baseline more often than the baseline agrees with itself).

The test images are read and VAE-encoded once; only scoring is timed.

    python bench/classifier.py --run runs/x --data data/test --limit 200 --full-subset 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

LI = ((20, 50, 100, 500), (20, 10, 5, 1), "li")


def parse_schedule(s: str) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """'n1,n2:k1,k2' (nested stages, gcpl's default spacing) or 'li/n1,n2:k1,k2' (Li et al.'s)."""
    spacing = "nested"
    if s.startswith("li/"):
        spacing, s = "li", s[3:]
    try:
        n, k = s.split(":")
        return C.ints(n), C.ints(k), spacing
    except ValueError:
        raise argparse.ArgumentTypeError(f"schedule {s!r} must look like 20,50,100,500:20,10,5,1 "
                                         "(prefix li/ for Li et al.'s re-spaced stages)") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="trained run folder (gcpl train --out)")
    p.add_argument("--data", required=True, help="class-per-folder test data or a split JSON")
    p.add_argument("--part", default="test", help="list of a split JSON (default test)")
    p.add_argument("--limit", type=int, default=50, help="score a seeded random subset of N images (as gcpl eval --limit)")
    p.add_argument("--schedule", action="append", type=parse_schedule, default=[],
                   help="extra schedule 'n1,n2,..:k1,k2,..' (cumulative pairs per stage : classes kept); repeatable")
    p.add_argument("--baseline", type=parse_schedule, default=LI, help="the baseline schedule (default Li et al.'s)")
    p.add_argument("--no-default", action="store_true", help="skip gcpl's default_schedule for the class count")
    p.add_argument("--baseline-reseed", action="store_true",
                   help="also run the baseline with noise seed + 1 and report its self-agreement (noise floor)")
    p.add_argument("--only", choices=("all", "baseline", "reseed", "others"), default="all",
                   help="run part of the rows (to spread one bench over processes; merge the JSONs yourself)")
    p.add_argument("--full-subset", type=int, default=0,
                   help="also score the first N images with every class at every pool timestep")
    p.add_argument("--full-n", type=int, default=500, help="timesteps of the full evaluation (default 500)")
    p.add_argument("--model", help="override the run's model")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--resolution", type=int, help="default: the run's")
    p.add_argument("--batch", type=int, default=64, help="UNet samples per call")
    p.add_argument("--images-per-batch", type=int, default=8, help="images scored together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--out", help="also write the JSON result here")
    return p.parse_args(argv)


def load_test(a, bb, classes, run):
    from gcpl.data.images import load_batch
    from gcpl.data.splits import read_samples
    from gcpl.errors import GcplError
    from gcpl.latents import encode

    _, samples = read_samples(a.data, a.part)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.class_name for s in samples} - set(index))
    if unknown:
        raise GcplError(f"test class {unknown[0]!r} was not learned by run {a.run}")
    if a.limit is not None:  # the same subset as `gcpl eval --limit` with the same --seed
        g = torch.Generator().manual_seed(a.seed)
        samples = [samples[i] for i in torch.randperm(len(samples), generator=g)[: a.limit].tolist()]
    size = run.resolution_for(a.resolution, bb)
    loaded = load_batch([s.path for s in samples], size)
    labels = torch.tensor([index[samples[i].class_name] for i in loaded.kept])
    t0 = C.now(bb.device)
    x0 = encode(bb.vae, loaded.pixels).mean[:, 0] * bb.scaling_factor
    return x0, labels, size, C.now(bb.device) - t0


def score(bb, embeds, x0, n_samples, keep, a, spacing="nested", seed=None) -> dict:
    from gcpl.classify import ClassifyConfig, DiffusionClassifier

    cfg = ClassifyConfig(n_samples=tuple(n_samples), keep=tuple(keep), batch=a.batch,
                         seed=a.seed if seed is None else seed, spacing=spacing)
    clf = DiffusionClassifier(bb, embeds, cfg, tuple(x0.shape[1:]))
    preds, calls = [], []
    t0 = C.now(bb.device)
    for i in range(0, len(x0), a.images_per_batch):
        for s in clf.score(x0[i : i + a.images_per_batch]):
            preds.append(s.pred)
            calls.append(s.unet_calls)
    dt = C.now(bb.device) - t0
    return {"n_samples": list(clf.n_samples), "keep": list(clf.keep), "preds": preds, "seconds": dt,
            "unet_calls_per_image": sum(calls) / len(calls), "images_per_s": len(preds) / dt,
            "unet_calls_per_s": sum(calls) / dt}


def _label(n, k, spacing="nested") -> str:
    return ("li/" if spacing == "li" else "") + ",".join(map(str, n)) + ":" + ",".join(map(str, k))


def main(argv=None) -> dict:
    a = parse_args(argv)
    C.setup_threads(a.threads)
    from gcpl.api import TrainedRun
    from gcpl.backbone import load_backbone
    from gcpl.classify import check_schedule, default_schedule

    run = TrainedRun.open(a.run)
    bb = load_backbone(run.model_for(a.model), a.device, a.dtype)
    classes, embeds = run.classes, run.prompt_embeds(bb)
    x0, labels, size, enc_s = load_test(a, bb, classes, run)
    n_cls = len(classes)

    # schedules, deduplicated after clipping keep to the class count
    named = [("baseline (Li et al.)", *a.baseline)]
    if not a.no_default:
        named.append(("default_schedule", *default_schedule(n_cls), "nested"))
    named += [(f"custom {i + 1}", n, k, sp) for i, (n, k, sp) in enumerate(a.schedule)]
    schedules: dict[tuple, str] = {}
    for name, n, k, sp in named:
        key = (*check_schedule(tuple(n), tuple(k), n_cls), sp)
        schedules[key] = f"{schedules[key]} = {name}" if key in schedules else name

    C.say(f"classifier bench: {len(x0)} images ({n_cls} classes, {size}px, encoded once in {enc_s:.2f} s), "
          f"device={bb.device} dtype={str(bb.dtype).replace('torch.', '')} threads={torch.get_num_threads()}")
    # warm-up: one UNet batch before anything is timed
    score(bb, embeds, x0[:1], (1,), (1,), a)

    jobs = [(key, name, a.seed) for key, name in schedules.items()]
    if a.baseline_reseed:
        jobs.insert(1, (jobs[0][0], f"baseline, noise seed {a.seed + 1}", a.seed + 1))
    if a.only != "all":  # rows[0] stays the baseline's when it runs
        jobs = {"baseline": jobs[:1], "reseed": jobs[1:2] if a.baseline_reseed else [],
                "others": jobs[2 if a.baseline_reseed else 1:]}[a.only]
    rows = []
    for (n, k, sp), name, seed in jobs:
        r = score(bb, embeds, x0, n, k, a, sp, seed)
        r.update(name=name, schedule=_label(n, k, sp), seed=seed)
        rows.append(r)
        C.say(f"  {name:<28} {r['schedule']:<24} {r['unet_calls_per_image']:8.1f} calls/img "
              f"{r['images_per_s']:8.2f} img/s")
    base = rows[0]["preds"]
    for r in rows:
        r["top1"] = sum(int(p == y) for p, y in zip(r["preds"], labels.tolist())) / len(labels)
        r["agree_baseline"] = sum(int(p == q) for p, q in zip(r["preds"], base)) / len(base)

    full = None
    if a.full_subset:
        m = min(a.full_subset, len(x0))
        full = score(bb, embeds, x0[:m], (a.full_n,), (1,), a)
        full.update(name=f"full ({a.full_n} t, all classes)", schedule=_label((a.full_n,), (1,)), subset=m)
        full["top1"] = sum(int(p == y) for p, y in zip(full["preds"], labels[:m].tolist())) / m
        C.say(f"  {full['name']:<28} {full['schedule']:<24} {full['unet_calls_per_image']:8.1f} calls/img "
              f"{full['images_per_s']:8.2f} img/s  (first {m} images)")
        for r in rows + [full]:
            r["agree_full_subset"] = sum(int(p == q) for p, q in zip(r["preds"][:m], full["preds"])) / m
            r["top1_subset"] = sum(int(p == y) for p, y in zip(r["preds"][:m], labels[:m].tolist())) / m
        full["agree_baseline_subset"] = sum(int(p == q) for p, q in zip(full["preds"], base[:m])) / m

    show = rows + ([full] if full else [])
    pct = [dict(r, **{k: 100 * r[k] for k in ("top1", "agree_baseline", "agree_full_subset", "top1_subset")
                      if r.get(k) is not None}) for r in show]
    if full:  # the full evaluation ran on the subset only: its whole-set columns hold subset numbers
        pct[-1]["agree_baseline"] = 100 * full["agree_baseline_subset"]
        pct[-1]["top1"] = None
        pct[-1]["name"] = f"{full['name']} [first {full['subset']}]"
    print()
    cols = [("name", "schedule", ""), ("schedule", "n_samples:keep", ""), ("unet_calls_per_image", "UNet calls/img", ".1f"),
            ("images_per_s", "img/s", ".2f"), ("top1", "top-1 %", ".1f"), ("agree_baseline", "agree baseline %", ".1f")]
    if full:
        cols += [("top1_subset", f"top-1 % (first {full['subset']})", ".1f"),
                 ("agree_full_subset", f"agree full % (first {full['subset']})", ".1f")]
    print(C.table(pct, cols))
    print()
    result = {
        "bench": "classifier",
        "config": {k: v for k, v in vars(a).items() if k != "out"},
        "env": C.env_info(bb.device),
        "n_images": len(x0), "n_classes": n_cls, "resolution": size, "encode_s": enc_s,
        "labels": labels.tolist(), "schedules": rows, "full": full,
    }
    C.emit_json(result, a.out)
    return result


if __name__ == "__main__":
    main()
