"""Can a cheap discriminative score shortlist the classes before the diffusion classifier? (issue 19)

Recall of the true class among the k best classes of a nearest-class-mean score on frozen
features, support images only for the class means (the run's RUN/split.json train list), scored
on the same development images as bench/racing.py (its seeded order, --skip/--limit):

- `vae`: the VAE latent mean, flattened (0 UNet calls);
- `unet-tT`: the UNet's mid-block output at timestep T for the noised latent (one fixed noise),
  empty prompt, averaged over space and concatenated with the down blocks' spatial means
  (1 UNet call per image and T). (The learned class prompts would cost C calls per image: no
  shortlist.)

Cosine similarity to each class's mean feature; prints recall@k for k = 1, 5, 10, 15, 20, 30.

    python bench/shortlist.py --run runs/bench100/run --data runs/bench100/dev.json --limit 200 --timesteps 100,300,500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import racing  # noqa: E402
import torch  # noqa: E402

KS = (1, 5, 10, 15, 20, 30)


def _features(bb, x0: torch.Tensor, cond: torch.Tensor, t: int | None, batch: int = 64) -> torch.Tensor:
    """(M, F) features of scaled latents x0: the latents themselves (t None) or pooled UNet activations."""
    if t is None:
        return x0.flatten(1)
    from gcpl.losses import add_noise

    feats: list[torch.Tensor] = []
    grabbed: list[torch.Tensor] = []
    hooks = [blk.register_forward_hook(lambda m, i, o: grabbed.append(o[0] if isinstance(o, tuple) else o))
             for blk in [*bb.unet.down_blocks, bb.unet.mid_block]]
    g = torch.Generator().manual_seed(0)
    try:
        for i in range(0, len(x0), batch):
            x = x0[i : i + batch]
            noise = torch.randn(x.shape, generator=g).to(x.device)
            tt = torch.full((len(x),), t, dtype=torch.long, device=x.device)
            grabbed.clear()
            with torch.no_grad():
                bb.unet(add_noise(x, noise, tt, bb.alphas_cumprod), tt, encoder_hidden_states=cond.expand(len(x), -1, -1))
            feats.append(torch.cat([o.float().mean((2, 3)) for o in grabbed], 1))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(feats)


def recall(scores: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    """Fraction of images whose true class is among the k best scores (higher is better)."""
    rank = (scores > scores.gather(1, labels[:, None])).sum(1)
    return {k: float((rank < k).float().mean()) for k in KS}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="trained run folder (gcpl train --out)")
    racing.add_order_args(p)
    p.add_argument("--timesteps", type=C.ints, default=(100, 300, 500), help="UNet feature timesteps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="also write the JSON result here")
    a = p.parse_args(argv)
    C.setup_threads(a.threads)
    from gcpl.backbone import load_backbone
    from gcpl.data.splits import Split
    from gcpl.latents import encode_files
    from gcpl.runs import TrainedRun
    from gcpl.tokens import encode_prompts

    run = TrainedRun.open(a.run)
    bb = load_backbone(run.model_for(None), "cpu")
    size = bb.resolution  # the size racing.load_images reads the scored images at
    index = {c: i for i, c in enumerate(run.classes)}
    support = Split.from_json(Path(a.run) / "split.json").train
    s_stats, s_kept, _ = encode_files(bb.vae, [s.path for s in support], size)
    s_x = s_stats.mean[:, 0] * bb.scaling_factor
    s_y = torch.tensor([index[support[i].class_name] for i in s_kept])
    _, d_x, d_y = racing.load_images(a, bb, run.classes)
    d_y = torch.tensor(d_y)
    cond = encode_prompts(bb.tokenizer, bb.text_encoder, [""])
    n_classes = len(run.classes)
    result = {"images": len(d_y), "classes": n_classes, "support_images": len(s_y), "recall": {}}
    print(f"{len(d_y)} images, {n_classes} classes, class means from {len(s_y)} support images; recall@k of the true class")
    print(f"{'features':<12} " + " ".join(f"{'@' + str(k):>6}" for k in KS))
    for name, t in [("vae", None), *[(f"unet-t{t}", t) for t in a.timesteps]]:
        fs, fd = _features(bb, s_x, cond, t), _features(bb, d_x, cond, t)
        mu, sd = fs.mean(0), fs.std(0) + 1e-6  # standardise each feature on the support set
        fs, fd = torch.nn.functional.normalize((fs - mu) / sd, dim=1), torch.nn.functional.normalize((fd - mu) / sd, dim=1)
        means = torch.nn.functional.normalize(torch.stack([fs[s_y == c].mean(0) for c in range(n_classes)]), dim=1)
        r = recall(fd @ means.T, d_y)
        result["recall"][name] = r
        print(f"{name:<12} " + " ".join(f"{100 * r[k]:>5.1f}%" for k in KS))
    C.emit_json(result, a.out)
    return result


if __name__ == "__main__":
    main()
