"""The few-shot diffusion classifier (paper Eq. 4-5; Li et al. 2023, "Your Diffusion Model is
Secretly a Zero-Shot Classifier").

For each image: one latent (the VAE distribution mean), a pool of evenly spaced timesteps with
one fixed noise each, shared by every class and every image; a class's score is its mean
denoising error over the (t, noise) pairs evaluated; the lowest wins. Adaptive schedule: stage k
evaluates n_samples[k] pairs (nested, evenly spaced subsets of the pool, cumulative) for the
classes still in the race, then keeps the best keep[k]. UNet calls are batched over (image,
class, timestep) triples of several images at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import GcplError
from .losses import denoising_error
from .settings import setting


@dataclass
class ClassifyConfig:
    n_samples: tuple[int, ...] | None = setting(
        None, "classifier: cumulative (t, noise) pairs per stage, e.g. 20,50,100,500 (default: gcpl's schedule "
        "for the class count)")
    keep: tuple[int, ...] | None = setting(None, "classifier: classes kept after each stage, e.g. 20,10,5,1")
    norm: str = setting("l2", "error norm: l2 (paper) or l1", choices=("l2", "l1"))
    batch: int = setting(64, "UNet samples per call", identity=False)
    seed: int = setting(0, "seeds the classifier's shared noise (and --limit's subset)")
    spacing: str = setting(
        "nested", "nested: each stage adds new timesteps to the last's; li: Li et al.'s re-spaced stages",
        choices=("nested", "li"))

    def schedule(self, n_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self.spacing not in ("nested", "li"):
            raise GcplError(f"--spacing {self.spacing!r} is unknown; use nested or li")
        if self.n_samples is None and self.keep is None:
            return default_schedule(n_classes)
        if self.n_samples is None or self.keep is None:
            raise GcplError("give both --n-samples and --keep (one value per stage), or neither")
        return check_schedule(tuple(self.n_samples), tuple(self.keep), n_classes)


def check_schedule(n_samples, keep, n_classes):
    if len(n_samples) != len(keep) or not n_samples:
        raise GcplError(f"--n-samples {list(n_samples)} and --keep {list(keep)} need the same number of stages")
    if any(b <= a for a, b in zip(n_samples, n_samples[1:])) or n_samples[0] < 1:
        raise GcplError(f"--n-samples {list(n_samples)} must be positive and increasing (cumulative per stage)")
    if any(b > a for a, b in zip(keep, keep[1:])) or keep[-1] < 1:
        raise GcplError(f"--keep {list(keep)} must be non-increasing and at least 1")
    keep = tuple(min(k, n_classes) for k in keep)
    return n_samples, keep


def default_schedule(n_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """gcpl's default (nested stages): a cheap first look at every class, more (t, noise) pairs
    only for the survivors; about 5 UNet calls per class and image at 100 classes, where Li et
    al.'s Flowers schedule (20,50,100,500 keep 20,10,5,1) spends 56. Measured trade-offs are in
    docs/PERFORMANCE.md; pass --n-samples/--keep (and --spacing li) for Li et al.'s schedules."""
    C = n_classes
    if C <= 5:
        return (32,), (1,)  # 32 C calls
    if C <= 20:
        return (4, 16, 64), (5, 2, 1)  # 10 classes: 40 + 60 + 96 = 196 calls
    return (2, 8, 32, 128), (max(8, C // 10), 4, 2, 1)  # 100 classes: 200 + 60 + 96 + 192 = 548


def timestep_pool(n: int, T: int) -> torch.Tensor:
    """n evenly spaced timesteps in [0, T), centred in their bins (Li et al.)."""
    step = T // n
    if step < 1:
        raise GcplError(f"--n-samples up to {n} exceeds the model's {T} timesteps")
    return torch.arange(step // 2, T, step)[:n]


def stage_subset(pool_size: int, n: int) -> list[int]:
    """Li et al.: indices of n evenly spaced members of the pool (re-spaced for every stage)."""
    step = pool_size // n
    return list(range(step // 2, pool_size, step))[:n]


def nested_order(pool_size: int) -> list[int]:
    """Pool indices in van der Corput (bit-reversal) order: every prefix is spread evenly over
    the pool, so growing stages are nested and each adds only new timesteps."""
    bits = max(1, (pool_size - 1).bit_length())
    keyed = sorted(range(pool_size), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))
    return keyed


@dataclass
class ImageScore:
    pred: int
    ranking: list[int]  # classes best first (later survivors before earlier drop-outs)
    mean_error: dict[int, float]  # class -> mean error over its evaluated pairs (/ its calibration scale)
    unet_calls: int
    stage_reached: dict[int, int] = field(default_factory=dict)


class DiffusionClassifier:
    def __init__(self, backbone, class_embeds: torch.Tensor, cfg: ClassifyConfig, latent_shape: tuple[int, ...]):
        """class_embeds: (C, L, D) prompt embeddings, each class prompt encoded once per run."""
        self.bb, self.cfg = backbone, cfg
        self.embeds = class_embeds.to(backbone.device, backbone.dtype)
        C = class_embeds.shape[0]
        self.n_samples, self.keep = cfg.schedule(C)
        g = torch.Generator().manual_seed(cfg.seed)  # drawn on the CPU: the same noise on every device
        self.noise = torch.randn((self.n_samples[-1], *latent_shape), generator=g).to(backbone.device)
        self.ts = timestep_pool(self.n_samples[-1], backbone.num_train_timesteps).to(backbone.device)
        self.scale = torch.ones(C, dtype=torch.float64)  # per-class error scale (see calibrate)
        self._order = nested_order(len(self.ts)) if cfg.spacing == "nested" else None

    def stage_indices(self, n: int) -> list[int]:
        """Pool indices of a stage with n (t, noise) pairs, per the configured spacing."""
        return self._order[:n] if self._order is not None else stage_subset(len(self.ts), n)

    def calibrate(self, x0: torch.Tensor, labels: torch.Tensor) -> int:
        """Remove each class prompt's generic error level, measured on labelled support images.

        Some learned tokens denoise *every* image a little better than others, and predictions
        pile onto them. With E[m, c] the mean error of class c on support image m over the first
        stage's timesteps, class c's level is b_c = mean of E[m, c] over images m of OTHER classes
        (its own images would reward fitting them); scores are then errors / (b_c / mean(b)).
        Returns the UNet calls spent."""
        C = self.n_classes
        ks = self.stage_indices(self.n_samples[0])
        triples = [(m, c, k) for m in range(len(x0)) for c in range(C) for k in ks]
        E = self._errors(x0, triples).double().view(len(x0), C, len(ks)).mean(2)
        other = labels[:, None] != torch.arange(C)[None, :]  # (M, C)
        b = (E * other).sum(0) / other.sum(0).clamp(min=1)
        self.scale = b / b.mean()
        return len(triples)

    @property
    def n_classes(self) -> int:
        return self.embeds.shape[0]

    @torch.no_grad()
    def _errors(self, x0: torch.Tensor, triples: list[tuple[int, int, int]]) -> torch.Tensor:
        """Errors for (image, class, pool index) triples, batched."""
        bb, out = self.bb, []
        trip = torch.tensor(triples, dtype=torch.long, device=bb.device)
        x0 = x0.to(bb.device)
        for i in range(0, len(triples), self.cfg.batch):
            m, c, k = trip[i : i + self.cfg.batch].unbind(1)
            err = denoising_error(bb.unet, x0[m], self.noise[k], self.ts[k], self.embeds[c], bb.alphas_cumprod,
                                  bb.prediction_type, self.cfg.norm)
            out.append(err)
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def score(self, x0: torch.Tensor) -> list[ImageScore]:
        """x0: (M, C, h, w) scaled latents of M images -> one ImageScore each."""
        M, C = x0.shape[0], self.n_classes
        sums = torch.zeros(M, C, dtype=torch.float64)
        counts = torch.zeros(M, C, dtype=torch.long)
        alive = [list(range(C)) for _ in range(M)]
        reached = torch.zeros(M, C, dtype=torch.long)
        done: list[set[int]] = [set() for _ in range(M)]  # pool indices evaluated (same for all alive)
        calls = [0] * M
        for s, (n, keep) in enumerate(zip(self.n_samples, self.keep)):
            triples = []
            stage = self.stage_indices(n)
            for m in range(M):
                new = [k for k in stage if k not in done[m]]
                done[m].update(new)
                triples += [(m, c, k) for c in alive[m] for k in new]
                calls[m] += len(alive[m]) * len(new)
            if triples:
                err = self._errors(x0, triples).double()
                trip = torch.tensor(triples)
                sums.index_put_((trip[:, 0], trip[:, 1]), err, accumulate=True)
                counts.index_put_((trip[:, 0], trip[:, 1]), torch.ones(len(trip), dtype=torch.long), accumulate=True)
            for m in range(M):
                for c in alive[m]:
                    reached[m, c] = s + 1
                mean = sums[m] / counts[m].clamp(min=1) / self.scale
                alive[m] = sorted(alive[m], key=lambda c: mean[c].item())[:keep]
        results = []
        for m in range(M):
            mean = sums[m] / counts[m].clamp(min=1) / self.scale
            evaluated = [c for c in range(C) if counts[m, c] > 0]
            ranking = sorted(evaluated, key=lambda c: (-reached[m, c].item(), mean[c].item()))
            results.append(ImageScore(
                pred=ranking[0], ranking=ranking,
                mean_error={c: mean[c].item() for c in evaluated}, unet_calls=calls[m],
                stage_reached={c: int(reached[m, c]) for c in evaluated},
            ))
        return results
