"""Racing vs gcpl's default and Li et al.'s schedule on a trained run: accuracy, UNet calls, agreement, over noise seeds.

For each noise seed, every row scores the same images with `gcpl.classify.DiffusionClassifier`:
Li et al.'s Flowers schedule (`--spacing li`: 20,50,100,500 keep 20,10,5,1; `--li`), gcpl's
racing classifier (`--race NAME:key=value,...`, any number; keys: confidence, budget, evidence
(0/1: with the timestep evidence learned on the run's support set), weighted (0/1: 0 keeps the
evidence's order with equal weights), and the gcpl.racing.Race
internals prior_df, round_calls, growth, spend, first) and fixed stages (`--stages
n1,n2:k1,k2`, nested; `li/...` for Li et al.'s spacing). Reported per row: UNet calls per image,
top-1 per seed and averaged, agreement with Li et al.'s predictions under the same seed, and Li
et al.'s agreement with itself across seeds (the noise floor of any agreement).

All rows of one seed draw from the same 500-pair pool (stages other than Li et al.'s from a pool of
their last stage's size), so the errors are cached per (image, class, pool index) in `--cache
DIR/errors-seed{S}.pt` (bench/error_cache.py): each error is computed
once, every row is replayed from the cache, a killed job resumes where it stopped, and the seeds
can be filled by separate processes (`--seeds 0` and `--seeds 1`, then one run over both). The
images are the `--part` list of the split in a fixed seeded order (`--order-seed`); `--skip K
--limit N` takes N of them after the first K (e.g. a development set and a disjoint test set
from one list).

    python bench/racing.py --run runs/bench100/run --data runs/bench100/split.json --limit 300 \\
        --seeds 0,1 --li --race default --cache runs/bench100/cache --out racing.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

RACE_KEYS = {"confidence": float, "budget": int, "evidence": int, "weighted": int, "prior_df": int, "round_calls": int,
             "growth": float, "spend": int, "first": int}


def parse_race(s: str) -> tuple[str, dict]:
    """'NAME' or 'NAME:key=value,key=value' (keys: RACE_KEYS)."""
    name, _, rest = s.partition(":")
    opts = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        if k not in RACE_KEYS:
            raise argparse.ArgumentTypeError(f"--race {s!r}: unknown key {k!r}; use {', '.join(RACE_KEYS)}")
        opts[k] = RACE_KEYS[k](v)
    return name, opts


def parse_stages(s: str) -> tuple[str, tuple, tuple, str]:
    """'n1,n2:k1,k2' (nested), 'li/...' (Li et al.'s spacing), 'ranked/...' (support-ranked strata) or
    'spread/...' (the same strata without the evidence: evenly spread, van der Corput order)."""
    spacing, _, rest = s.rpartition("/")
    spacing = spacing or "nested"
    if spacing not in ("nested", "li", "ranked", "spread"):
        raise argparse.ArgumentTypeError(f"--stages {s!r}: unknown spacing {spacing!r}")
    n, k = rest.split(":")
    return s, C.ints(n), C.ints(k), spacing


def add_order_args(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """The options `ordered_samples` reads: which images, in which order (shared by the benches)."""
    p.add_argument("--data", required=data_required, help="split JSON (its --part list) or class-per-folder data")
    p.add_argument("--part", default="test")
    p.add_argument("--order-seed", type=int, default=0, help="seeds the order of the images")
    p.add_argument("--skip", type=int, default=0, help="leave out the first K images of that order")
    p.add_argument("--limit", type=int, help="then take N images (default: all)")
    p.add_argument("--first", help="a split JSON: images of its classes come first in the order")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="trained run folder (gcpl train --out)")
    add_order_args(p)
    p.add_argument("--seeds", type=C.ints, default=(0,), help="classifier noise seeds, e.g. 0,1")
    p.add_argument("--li", action="store_true", help="Li et al.'s Flowers schedule (the baseline)")
    p.add_argument("--gcpl-default", action="store_true",
                   help="gcpl's nested stages for the class count (the default before ranked stages)")
    p.add_argument("--ranked", action="store_true", help="gcpl's ranked stages for the class count")
    p.add_argument("--race", action="append", type=parse_race, default=[], help="a racing row NAME[:key=value,...]")
    p.add_argument("--stages", action="append", type=parse_stages, default=[], help="fixed stages n1,n2:k1,k2")
    p.add_argument("--evidence-shots", type=int, default=None, help="support images per class (default: gcpl's)")
    p.add_argument("--cache", help="folder of the error caches (default: no cache, every row computes its own)")
    p.add_argument("--no-compute", action="store_true", help="replay only: fail if an error is not cached")
    p.add_argument("--model", help="override the run's model")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=64, help="UNet samples per call")
    p.add_argument("--images-per-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="also write the JSON result here")
    return p.parse_args(argv)


def ordered_samples(a):
    """(samples, their keys): the --part list in the seeded order (the images of --first's classes
    before the others), then --skip/--limit; a key is the path relative to the data's folder."""
    from gcpl.data.splits import read_samples

    _, samples = read_samples(a.data, a.part)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(a.order_seed)).tolist()
    if a.first:
        first = set(read_samples(a.first, a.part)[0])
        order = ([i for i in order if samples[i].class_name in first]
                 + [i for i in order if samples[i].class_name not in first])
    samples = [samples[i] for i in order]
    end = len(samples) if a.limit is None else a.skip + a.limit
    samples = samples[a.skip : end]
    root = Path(a.data).resolve().parent if Path(a.data).suffix == ".json" else Path(a.data).resolve()
    return samples, [_rel(s.path, root) for s in samples]


def load_images(a, bb, classes):
    """(keys of the chosen images (ordered_samples), their latents, labels in `classes`)."""
    from gcpl.latents import encode_files

    samples, keys = ordered_samples(a)
    stats, kept, _ = encode_files(bb.vae, [s.path for s in samples], bb.resolution)
    if len(kept) != len(samples):
        raise SystemExit("some images could not be read")
    index = {c: i for i, c in enumerate(classes)}
    return keys, stats.mean[:, 0] * bb.scaling_factor, [index[s.class_name] for s in samples]


def _rel(p: str, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root))
    except ValueError:
        return str(p)


def main(argv=None) -> dict:
    a = parse_args(argv)
    C.setup_threads(a.threads)
    from error_cache import ErrorCache, Replay

    from gcpl.api import TrainedRun
    from gcpl.backbone import load_backbone
    from gcpl.classify import LI_SCHEDULE, POOL, ClassifyConfig, DiffusionClassifier
    from gcpl.data.splits import read_samples
    from gcpl.evidence import load_or_learn_evidence
    from gcpl.racing import RaceParams

    run = TrainedRun.open(a.run)
    bb = load_backbone(run.model_for(a.model), a.device)
    run_classes, run_embeds = run.classes, run.prompt_embeds(bb)
    # the data's classes (a subset of the run's: a benchmark of fewer classes with the same tokens)
    classes = list(read_samples(a.data, a.part)[0])
    missing = sorted(set(classes) - set(run_classes))
    if missing:
        raise SystemExit(f"class {missing[0]!r} was not learned by run {a.run}")
    columns = [run_classes.index(c) for c in classes]
    embeds = run_embeds[columns]
    keys, x0, labels = load_images(a, bb, classes)
    shape = tuple(x0.shape[1:])
    n_cls = len(classes)

    base = ClassifyConfig(batch=a.batch, spacing="race")
    if a.evidence_shots is not None:
        base.evidence_shots = a.evidence_shots
    t0 = time.perf_counter()
    ev_clf = DiffusionClassifier(bb, embeds, base, shape)
    ev_file = None if n_cls == len(run_classes) else Path(a.run) / f"classifier_evidence-{n_cls}classes.json"
    evidence = load_or_learn_evidence(run, ev_clf, classes, bb.resolution, log=C.say, file=ev_file)
    evidence_calls = evidence.info.get("unet_calls", 0) if evidence else 0
    C.say(f"racing bench: {len(keys)} images (from {a.skip} in the order), {n_cls} classes, "
          f"seeds {list(a.seeds)}; evidence: {evidence_calls} UNet calls on the support set "
          f"({time.perf_counter() - t0:.0f} s, or read from the run folder)")

    # rows: (name, ClassifyConfig kwargs, Race overrides, use evidence)
    specs = []
    if a.li:
        specs.append(("Li et al. (li/20,50,100,500:20,10,5,1)",
                      dict(n_samples=LI_SCHEDULE[0], keep=LI_SCHEDULE[1], spacing="li"), {}, (False, True)))
    for name, opts in a.race:
        o = dict(opts)
        cfg_kw = {k: o.pop(k) for k in ("confidence", "budget") if k in o}
        use_ev = bool(o.pop("evidence", 1)), bool(o.pop("weighted", 1))
        o = {k: (bool(v) if k == "spend" else v) for k, v in o.items()}
        specs.append((f"race {name}", dict(cfg_kw, spacing="race"), o, use_ev))
    for label, n, k, spacing in a.stages:
        specs.append((f"stages {label}", dict(n_samples=n, keep=k, spacing="ranked" if spacing == "spread" else spacing),
                      {}, (spacing != "spread", True)))
    if a.gcpl_default:
        n, k = ClassifyConfig(spacing="nested").schedule(n_cls)
        specs.append((f"nested default ({','.join(map(str, n))}:{','.join(map(str, k))})", dict(spacing="nested"), {},
                      (False, True)))
    if a.ranked:
        n, k = ClassifyConfig(spacing="ranked").schedule(n_cls)
        specs.append((f"ranked default ({','.join(map(str, n))}:{','.join(map(str, k))})", dict(spacing="ranked"), {},
                      (True, True)))

    meta = {"run_tokens": run.digest, "pool": POOL, "norm": base.norm, "resolution": bb.resolution,
            "model": bb.model_id, "shape": list(shape)}
    caches, clfs = {}, {}
    for seed in a.seeds:
        for name, cfg_kw, race_opts, use_ev in specs:
            cfg = ClassifyConfig(batch=a.batch, seed=seed, **cfg_kw)
            if a.cache:  # one cache per (seed, pool size): racing and Li et al. share the 500-pair pool
                pool = POOL if cfg.racing or cfg.spacing == "ranked" else cfg.schedule(n_cls)[0][-1]
                if (seed, pool) not in caches:
                    f = Path(a.cache) / (f"errors-seed{seed}.pt" if pool == POOL else f"errors-seed{seed}-pool{pool}.pt")
                    caches[seed, pool] = ErrorCache(f, keys, len(run_classes), pool, dict(meta, seed=seed, pool=pool))
                clf = DiffusionClassifier(bb, embeds, cfg, shape)
                clf = Replay(clf, caches[seed, pool], compute=not a.no_compute, columns=columns)
            else:
                clf = DiffusionClassifier(bb, embeds, cfg, shape)
            inner = clf.clf if a.cache else clf
            if cfg.uses_evidence:
                inner.use_evidence(evidence if use_ev[0] else None)
                if not use_ev[1]:  # the evidence's order, equal weights
                    inner.race_weights = torch.ones_like(inner.race_weights)
                inner.race_params = RaceParams(**race_opts)
            clfs[name, seed] = clf

    res = {key: {"preds": [], "calls": [], "stops": []} for key in clfs}
    t_start = time.perf_counter()
    for i in range(0, len(keys), a.images_per_batch):
        sl = slice(i, i + a.images_per_batch)
        for (name, seed), clf in clfs.items():
            out = clf.score(x0[sl], clf.cache.rows(keys[sl])) if a.cache else clf.score(x0[sl])
            r = res[name, seed]
            r["preds"] += [s.pred for s in out]
            r["calls"] += [s.unet_calls for s in out]
            r["stops"] += [s.stop for s in out]
        for c in caches.values():
            c.save(every_s=120)
        done = min(i + a.images_per_batch, len(keys))
        computed = sum(c.computed for c in caches.values())
        C.say(f"  {done}/{len(keys)} images, {computed} UNet calls computed, "
              f"{computed / (time.perf_counter() - t_start):.0f} calls/s")
    for c in caches.values():
        c.save()

    def top1(p):
        return sum(int(x == y) for x, y in zip(p, labels)) / len(labels)

    def agree(p, q):
        return sum(int(x == y) for x, y in zip(p, q)) / len(p)

    li_name = specs[0][0] if a.li else None
    table = []
    for name, *_ in specs:
        per = [res[name, s] for s in a.seeds]
        row = {"name": name, "calls_per_image": sum(sum(r["calls"]) for r in per) / (len(per) * len(labels)),
               "max_calls": max(max(r["calls"]) for r in per),
               "top1": {s: top1(res[name, s]["preds"]) for s in a.seeds}}
        row["top1_mean"] = sum(row["top1"].values()) / len(a.seeds)
        if li_name:
            row["agree_li"] = {s: agree(res[name, s]["preds"], res[li_name, s]["preds"]) for s in a.seeds}
            row["agree_li_mean"] = sum(row["agree_li"].values()) / len(a.seeds)
        stops = [x for r in per for x in r["stops"] if x]
        row["stops"] = {k: stops.count(k) / len(stops) for k in sorted(set(stops))} if stops else {}
        table.append(row)
    floor = None
    if li_name and len(a.seeds) > 1:
        s0, s1 = a.seeds[0], a.seeds[1]
        floor = agree(res[li_name, s0]["preds"], res[li_name, s1]["preds"])

    show = [dict(r, **{f"top1_s{s}": 100 * r["top1"][s] for s in a.seeds}, top1_pct=100 * r["top1_mean"],
                 agree_pct=100 * r["agree_li_mean"] if li_name else None) for r in table]
    cols = [("name", "row", ""), ("calls_per_image", "UNet calls/img", ".1f"), ("max_calls", "max", "d")]
    cols += [(f"top1_s{s}", f"top-1 % seed {s}", ".1f") for s in a.seeds]
    cols += [("top1_pct", "top-1 % mean", ".1f"), ("agree_pct", "agrees with Li % (same seed)", ".1f")]
    print()
    print(C.table(show, cols))
    if floor is not None:
        print(f"\nLi et al. seed {a.seeds[0]} vs seed {a.seeds[1]}: {100 * floor:.1f}% of predictions agree (noise floor)")
    print()
    result = {"bench": "racing", "config": {k: v for k, v in vars(a).items() if k != "out"},
              "env": C.env_info(bb.device), "n_images": len(keys), "images": keys, "n_classes": n_cls,
              "labels": labels, "evidence": evidence.to_json() if evidence else None, "evidence_calls": evidence_calls,
              "table": table, "li_self_agreement": floor,
              "raw": {f"{name} | seed {seed}": r for (name, seed), r in res.items()}}
    C.emit_json(result, a.out)
    return result


if __name__ == "__main__":
    main()
