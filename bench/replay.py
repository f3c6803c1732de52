"""Replay classifier rules on a dense error tensor: compute once, try any rule in seconds.

`fill` computes the denoising error of every (image, class, member) for a fixed set of members of
the classifier's 500-pair pool (Li et al.'s timesteps, one noise each, drawn from `--seed`) and
stores it in an ErrorCache (bench/error_cache.py: atomic, resumable, one file per seed). Images
are either a split's `--part` list in a seeded order (`--skip/--limit`, as bench/racing.py picks
them) or, with `--support K`, the first K shots of each class of the run's own support set (what
the evidence of a rule may learn from).

    python bench/replay.py fill --run runs/bench100/run --data runs/bench100/dev.json --limit 200 \\
        --members 40 --cache runs/bench100/cache_dev
    python bench/replay.py fill --run runs/bench100/run --support 1 --members 40 --cache runs/bench100/cache_support

`members` are `gcpl.classify.stage_subset(500, N)`: N evenly spaced pool indices (timesteps);
with N = 40 they are the centres of the classifier's strata (gcpl.classify.STRATA), so a replay
of ranked stages that uses at most one pair per stratum is exact.

`grid` replays every ranked-stage schedule (n1, n2, n3 : k1, k2, 1) within a budget of UNet calls
per image on the dense tensor of `fill` (strata ranked, pairs weighted, by the run's support
evidence, `classifier_evidence.json`), weighted and unweighted, and prints the best rows, the
mean accuracy per first-look size and keep, and the recall of the true class after the first look:

    python bench/replay.py grid --run runs/bench100/run --data runs/bench100/dev.json --limit 200 \
        --cache runs/bench100/cache_dev --budget 555
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402
from racing import add_order_args  # noqa: E402


def add_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="trained run folder (gcpl train --out)")
    add_order_args(p, data_required=False)
    p.add_argument("--support", type=int, default=0, help="instead of --data: the first K shots of each class")
    p.add_argument("--seed", type=int, default=0, help="classifier noise seed (the pool's noise)")
    p.add_argument("--members", type=int, default=40, help="evenly spaced members of the 500-pair pool")
    p.add_argument("--cache", required=True, help="folder of the error cache")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)


def open_bench(a):
    """(backbone, classes, run classes, prompt embeddings of `classes`, columns in the run, keys, x0, labels)."""
    from racing import load_images

    from gcpl.api import TrainedRun
    from gcpl.backbone import load_backbone
    from gcpl.data.splits import read_samples
    from gcpl.latents import encode_files

    run = TrainedRun.open(a.run)
    bb = load_backbone(run.model_for(None), None)
    run_classes, run_embeds = run.classes, run.prompt_embeds(bb)
    if a.support:
        classes = run_classes
        picked = run.support(a.support)
        stats, kept, _ = encode_files(bb.vae, [s.path for s in picked], bb.resolution)
        if len(kept) != len(picked):
            raise SystemExit("some support images could not be read")
        keys = ["support:" + str(Path(s.path).resolve()) for s in picked]
        x0 = stats.mean[:, 0] * bb.scaling_factor
        labels = [classes.index(s.class_name) for s in picked]
    else:
        classes = list(read_samples(a.data, a.part)[0])
        keys, x0, labels = load_images(a, bb, classes)
    columns = [run_classes.index(c) for c in classes]
    return bb, classes, run_classes, run_embeds[columns], columns, keys, x0, labels


def cache_meta(a, bb, shape) -> dict:
    from gcpl.api import TrainedRun
    from gcpl.classify import POOL

    return {"run_tokens": TrainedRun.open(a.run).digest, "pool": POOL, "norm": "l2", "resolution": bb.resolution,
            "model": bb.model_id, "shape": list(shape), "seed": a.seed}


def fill(a) -> None:
    C.setup_threads(a.threads)
    from error_cache import ErrorCache, Replay

    from gcpl.classify import POOL, ClassifyConfig, DiffusionClassifier, stage_subset

    bb, classes, run_classes, embeds, columns, keys, x0, labels = open_bench(a)
    shape = tuple(x0.shape[1:])
    cache = ErrorCache(Path(a.cache) / f"errors-seed{a.seed}.pt", keys, len(run_classes), POOL,
                       dict(cache_meta(a, bb, shape), pool=POOL))
    clf = Replay(DiffusionClassifier(bb, embeds, ClassifyConfig(batch=a.batch, seed=a.seed, spacing="race"), shape),
                 cache, columns=columns)
    members = stage_subset(POOL, a.members)
    rows = cache.rows(keys)
    todo = len(keys) * len(classes) * len(members)
    C.say(f"fill: {len(keys)} images x {len(classes)} classes x {len(members)} members = {todo} errors "
          f"({cache.filled()} in the cache) -> {cache.path}")
    t0 = time.perf_counter()
    step = max(1, 4096 // (len(classes) * len(members)))
    for i in range(0, len(keys), step):
        sl = slice(i, i + step)
        clf.ids = torch.as_tensor(rows[sl])
        triples = [(m, c, k) for m in range(len(rows[sl])) for c in range(len(classes)) for k in members]
        clf.errors(x0[sl], triples)
        cache.save(every_s=120)
        if (i // step) % 10 == 0:
            dt = time.perf_counter() - t0
            C.say(f"  {min(i + step, len(keys))}/{len(keys)} images, {cache.computed} computed, "
                  f"{cache.computed / max(dt, 1e-9):.0f} calls/s")
    cache.save()
    C.say(f"fill done: {cache.computed} UNet calls in {time.perf_counter() - t0:.0f} s")


def dense(a):
    """(E (images, classes, strata), labels, the run's evidence) from a filled cache: the errors of
    the strata centres, in stratum order."""
    from racing import ordered_samples

    from gcpl.classify import POOL, STRATA, stage_subset
    from gcpl.evidence import Evidence
    from gcpl.io import read_json

    stored = torch.load(Path(a.cache) / f"errors-seed{a.seed}.pt", weights_only=False)
    run_classes = [r["class_name"] for r in read_json(Path(a.run) / "tokens.json")["classes"]]
    samples, keys = ordered_samples(a)
    index = {k: i for i, k in enumerate(stored["keys"])}
    rows = [index[k] for k in keys]
    members = stage_subset(POOL, STRATA)
    E = stored["errors"][rows][:, :, members].double()
    if E.isnan().any():
        raise SystemExit(f"{int(E.isnan().any(2).any(1).sum())} images are not filled yet")
    labels = torch.tensor([run_classes.index(s.class_name) for s in samples])
    ev = Evidence.from_json(read_json(Path(a.run) / "classifier_evidence.json")["evidence"])
    return E, labels, ev


def replay_stages(E, y, order, w, stages):
    """Top-1 and mean UNet calls of fixed stages [(n, k), ...] over strata `order` (first pair of
    each) with weights w (per stratum), replayed on E (images, classes, strata)."""
    M, C, _ = E.shape
    alive = torch.ones(M, C, dtype=torch.bool)
    sums, wsum, calls, prev = torch.zeros(M, C, dtype=torch.float64), 0.0, torch.zeros(M), 0
    for n, k in stages:
        new = order[prev:n]
        sums += (E[:, :, new] * w[new]).sum(-1)
        wsum += float(w[new].sum())
        calls += alive.sum(1) * len(new)
        score = torch.where(alive, sums / max(wsum, 1e-300), torch.inf)
        alive = torch.zeros(M, C, dtype=torch.bool).scatter_(1, score.topk(min(k, C), largest=False).indices, True)
        prev = n
    pred = torch.where(alive, sums, torch.inf).argmin(1)
    return float((pred == y).double().mean()), float(calls.mean())


def grid(a) -> None:
    from gcpl.classify import POOL, STRATA, timestep_pool

    E, y, ev = dense(a)
    M, nc, S = E.shape
    ts = timestep_pool(POOL, 1000)
    order = ev.strata_ranking(ts, STRATA)
    w = ev.pool_weights(ts)[[j * (POOL // STRATA) + POOL // STRATA // 2 for j in range(S)]]
    weights = {"weighted": w, "equal": torch.ones(S, dtype=torch.float64)}
    rows = []
    for n1 in (2, 3, 4, 5):
        for k1 in (5, 8, 10, 12, 15, 20):
            for n2 in (8, 12, 16, 20):
                for k2 in (2, 3, 4, 5):
                    if n2 <= n1 or k2 >= k1 or nc * n1 + k1 * (n2 - n1) >= a.budget:
                        continue
                    n3 = min(len(order), n2 + (a.budget - nc * n1 - k1 * (n2 - n1)) // k2)
                    if n3 <= n2:
                        continue
                    st = ((n1, k1), (n2, k2), (n3, 1))
                    for name, ww in weights.items():
                        acc, calls = replay_stages(E, y, order, ww, st)
                        rows.append({"weights": name, "stages": st, "top1": 100 * acc, "calls": calls})
    rows.sort(key=lambda r: -r["top1"])
    show = [dict(r, stages=" ".join(f"{n}:{k}" for n, k in r["stages"])) for r in rows[: a.top]]
    print(f"{M} images, {nc} classes, {S} strata; budget {a.budget} UNet calls per image")
    print(C.table(show, [("stages", "stages n:keep", ""), ("weights", "weights", ""),
                              ("calls", "calls", ".0f"), ("top1", "top-1 %", ".1f")]))
    for key, idx in (("first look n1", 0), ("keep k1", 1)):
        for v in sorted({r["stages"][0][idx] for r in rows}):
            for name in weights:
                accs = [r["top1"] for r in rows if r["stages"][0][idx] == v and r["weights"] == name]
                print(f"  {key} = {v:2d}, {name}: mean top-1 {sum(accs) / len(accs):.1f}% over {len(accs)} schedules")
    for n1 in (1, 2, 3, 4, 6, 8):
        s = (E[:, :, order[:n1]] * w[order[:n1]]).sum(-1)
        ks = [k for k in (5, 10, 15, 20) if k < nc] or [1]
        rec = [float((s.topk(k, largest=False).indices == y[:, None]).any(1).double().mean()) for k in ks]
        print(f"  recall of the true class after {n1} pairs: top-{'/'.join(map(str, ks))} "
              + " / ".join(f"{100 * r:.0f}%" for r in rec))
    full = {name: 100 * replay_stages(E, y, order, ww, ((len(order), 1),))[0] for name, ww in weights.items()}
    print(f"  every class on every ranked stratum ({len(order) * nc} calls): weighted {full['weighted']:.1f}%, "
          f"equal {full['equal']:.1f}%")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    add_image_args(sub.add_parser("fill", help="compute the dense error tensor"))
    g = sub.add_parser("grid", help="replay ranked-stage schedules on the dense tensor")
    add_image_args(g)
    g.add_argument("--budget", type=int, default=555, help="most UNet calls per image")
    g.add_argument("--top", type=int, default=25, help="rows shown")
    a = p.parse_args(argv)
    if a.cmd == "fill":
        fill(a)
    elif a.cmd == "grid":
        C.setup_threads(a.threads)
        grid(a)


if __name__ == "__main__":
    main()
