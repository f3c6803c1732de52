"""A first look over clusters of class prompts instead of every class (issue 19; Shanbhag et al.
2024, "Just Leaf It", prune clusters first): how often does the true class's cluster survive?

The run's class prompt embeddings (C, L, D) are clustered by k-means (k-means++-free: seeded
random centres, 50 Lloyd steps); each cluster's prompt is the mean of its members' prompt
embeddings. Every cluster prompt is scored on the first --pairs (t, noise) pairs of gcpl's ranked
order (strata in the run's support-SNR order: the pairs the ranked first look would use), and the
clusters are ranked by mean error. Prints, per number of pairs, the recall of the true class's
cluster among the best m clusters and how many classes those m clusters hold; the cost is K
calls per pair instead of C. Development images only (bench/racing.py's order and --limit).

With `--replay CACHE` (a dense tensor from `bench/replay.py fill`, 40 strata centres) it then
replays every schedule "clusters first, then ranked stages over the classes of the best m
clusters" within --budget calls (K x n0 for the clusters, then n1, n2, n3 <= 40 ranked pairs
keeping k1, k2, 1 classes), next to plain ranked stages on the same tensor.

    python bench/cluster_look.py --run runs/bench100/run --data runs/bench100/dev.json --limit 200 --clusters 10,20
    python bench/cluster_look.py --run runs/bench100/run --data runs/bench100/dev.json --limit 200 --clusters 10,20 \
        --pairs 16 --replay runs/bench100/cache_dev
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import racing  # noqa: E402
import torch  # noqa: E402

MS = (1, 2, 3, 4, 5, 6)


def kmeans(X: torch.Tensor, k: int, seed: int = 0, steps: int = 50) -> torch.Tensor:
    """Cluster index of each row of X (N, F)."""
    g = torch.Generator().manual_seed(seed)
    cent = X[torch.randperm(len(X), generator=g)[:k]].clone()
    for _ in range(steps):
        assign = torch.cdist(X, cent).argmin(1)
        for j in range(k):
            if (assign == j).any():
                cent[j] = X[assign == j].mean(0)
    return torch.cdist(X, cent).argmin(1)


def cluster_recall(err: torch.Tensor, true_cluster: torch.Tensor, sizes: torch.Tensor, pairs: int) -> dict:
    """err (M, K, P): recall of the true cluster among the best m by the mean of the first `pairs`
    errors, and the mean number of classes in those m clusters."""
    mean = err[:, :, :pairs].mean(2)
    rank = (mean < mean.gather(1, true_cluster[:, None])).sum(1)
    best = mean.argsort(1)
    return {m: {"recall": float((rank < m).float().mean()), "classes": float(sizes[best[:, :m]].sum(1).double().mean())}
            for m in MS if m <= err.shape[1]}


def staged(Eo: torch.Tensor, y: torch.Tensor, cand: torch.Tensor, stages) -> tuple[float, torch.Tensor]:
    """Ranked stages [(n, k), ...] over the classes `cand` (M, C) bool, Eo (M, C, P) errors with
    pairs in ranked order -> (top-1, UNet calls per image)."""
    M, nc, _ = Eo.shape
    alive, prev = cand.clone(), 0
    calls, sums = torch.zeros(M), torch.zeros(M, nc, dtype=torch.float64)
    for n, k in stages:
        sums += Eo[:, :, prev:n].sum(-1)
        calls += alive.sum(1) * (n - prev)
        idx = torch.where(alive, sums, torch.inf).argsort(1)
        keep = torch.minimum(alive.sum(1), torch.tensor(k))
        alive = torch.arange(nc)[None, :] < keep[:, None]  # the first `keep` of each row's order
        alive = torch.zeros(M, nc, dtype=torch.bool).scatter_(1, idx, alive)
        prev = n
    pred = torch.where(alive, sums, torch.inf).argmin(1)
    return float((pred == y).double().mean()), calls


def replay_grid(Eo: torch.Tensor, y: torch.Tensor, clusters: dict, budget: int) -> dict:
    """Top-1 of plain ranked stages and of every clusters-first schedule within `budget`."""
    M, nc, P = Eo.shape
    everyone = torch.ones(M, nc, dtype=torch.bool)
    plain = {}
    for st in [((3, 10), (12, 3), (P, 1)), ((3, 15), (16, 4), (31, 1)), ((P, 1),)]:
        acc, calls = staged(Eo, y, everyone, st)
        plain[" ".join(f"{n}:{k}" for n, k in st)] = {"top1": 100 * acc, "calls": float(calls.mean())}
    rows = []
    for K, (assign, err) in clusters.items():
        for n0 in (2, 4, 8):
            best = err[:, :, :n0].mean(2).argsort(1)
            for m in range(2, min(K, 8)):
                cand = (assign[None, None, :] == best[:, :m, None]).any(1)
                recall = float(cand[torch.arange(M), y].double().mean())
                for n1, k1, n2, k2, n3 in itertools.product((2, 3, 4, 6), (5, 8, 10, 12, 15), (8, 12, 16, 20), (2, 3, 4),
                                                            (24, 32, 40)):
                    if n2 <= n1 or n3 > P:
                        continue
                    acc, calls = staged(Eo, y, cand, ((n1, k1), (n2, k2), (n3, 1)))
                    total = K * n0 + float(calls.mean())
                    if total <= budget:
                        rows.append({"top1": 100 * acc, "calls": total, "K": K, "n0": n0, "m": m, "recall": recall,
                                     "stages": f"{n1}:{k1} {n2}:{k2} {n3}:1"})
    rows.sort(key=lambda r: -r["top1"])
    means = {K: sum(r["top1"] for r in rows if r["K"] == K) / max(1, sum(r["K"] == K for r in rows)) for K in clusters}
    return {"plain_ranked": plain, "best": rows[:15], "schedules": len(rows), "mean_top1_by_K": means}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="trained run folder (gcpl train --out)")
    racing.add_order_args(p)
    p.add_argument("--clusters", type=C.ints, default=(10, 20), help="numbers of clusters K")
    p.add_argument("--pairs", type=int, default=8, help="pairs scored per cluster prompt")
    p.add_argument("--replay", metavar="CACHE", help="a bench/replay.py fill cache: replay clusters-first schedules")
    p.add_argument("--seed", type=int, default=0, help="with --replay: the cache's noise seed")
    p.add_argument("--budget", type=int, default=555, help="with --replay: most UNet calls per image")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="also write the JSON result here")
    a = p.parse_args(argv)
    C.setup_threads(a.threads)
    from gcpl.backbone import load_backbone
    from gcpl.classify import ClassifyConfig, DiffusionClassifier
    from gcpl.evidence import load_or_learn_evidence
    from gcpl.runs import TrainedRun

    run = TrainedRun.open(a.run)
    bb = load_backbone(run.model_for(None), "cpu")
    embeds = run.prompt_embeds(bb)
    _, x0, labels = racing.load_images(a, bb, run.classes)
    labels = torch.tensor(labels)
    cfg = ClassifyConfig(spacing="ranked")
    clf = DiffusionClassifier(bb, embeds, cfg, tuple(x0.shape[1:]))
    evidence = load_or_learn_evidence(run, clf, run.classes, run.resolution_for(None, bb))
    clf.use_evidence(evidence)
    order = clf.stage_indices(a.pairs)
    result = {"images": len(labels), "classes": len(run.classes), "pairs": a.pairs, "clusters": {}}
    clusters = {}
    for k in a.clusters:
        assign = kmeans(embeds.flatten(1).double(), k)
        sizes = torch.bincount(assign, minlength=k)
        prompts = torch.stack([embeds[assign == j].mean(0) if sizes[j] else embeds[0] for j in range(k)])
        cclf = DiffusionClassifier(bb, prompts, cfg, tuple(x0.shape[1:]))
        triples = [(m, j, i) for m in range(len(labels)) for j in range(k) for i in order]
        err = torch.cat([cclf.unet_errors(x0, triples[i : i + 4096]) for i in range(0, len(triples), 4096)])
        err = err.view(len(labels), k, len(order)).double()
        clusters[k] = (assign, err)
        rows = {n: cluster_recall(err, assign[labels], sizes, n) for n in sorted({1, 2, 4, 8}) if n <= a.pairs}
        result["clusters"][k] = {"sizes": sorted(sizes.tolist()), "by_pairs": rows}
        print(f"K = {k} clusters of the {len(run.classes)} class prompts (sizes {sorted(sizes.tolist())})")
        for n, row in rows.items():
            print(f"  {n} pairs ({k * n} calls): true cluster among the best m: "
                  + ", ".join(f"m={m} {100 * r['recall']:.0f}% ({r['classes']:.0f} classes)" for m, r in row.items()))
    if a.replay:
        import replay

        from gcpl.classify import POOL, STRATA, timestep_pool

        E, y, ev = replay.dense(argparse.Namespace(**{**vars(a), "cache": a.replay}))
        if not torch.equal(y, labels):
            raise SystemExit("the cache's images are not these images")
        order = ev.strata_ranking(timestep_pool(POOL, 1000), STRATA)
        result["replay"] = r = replay_grid(E[:, :, order], y, clusters, a.budget)
        print(f"replay on {a.replay} ({E.shape[2]} strata centres), budget {a.budget}:")
        for name, v in r["plain_ranked"].items():
            print(f"  plain ranked {name}: {v['top1']:.1f}% at {v['calls']:.0f} calls")
        for K, v in r["mean_top1_by_K"].items():
            print(f"  clusters first, K = {K}: mean top-1 {v:.1f}% over its schedules")
        for row in r["best"][:10]:
            print(f"  {row['top1']:.1f}% at {row['calls']:.0f} calls: K={row['K']} n0={row['n0']} m={row['m']} "
                  f"(recall {100 * row['recall']:.0f}%), stages {row['stages']}")
    C.emit_json(result, a.out)
    return result


if __name__ == "__main__":
    main()
