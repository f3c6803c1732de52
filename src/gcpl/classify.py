"""The few-shot diffusion classifier (paper Eq. 4-5; Li et al. 2023, "Your Diffusion Model is
Secretly a Zero-Shot Classifier").

For each image: one latent (the VAE distribution mean), a pool of evenly spaced timesteps with
one fixed noise each, shared by every class and every image; a class's score is its (weighted)
mean denoising error over the (t, noise) pairs evaluated; the lowest wins. UNet calls are batched
over (image, class, pool index) triples of several images at once. Ways to spend the calls:

- fixed stages: stage k evaluates n_samples[k] pairs (cumulative) for the classes still in the
  race, then keeps the best keep[k]. `spacing="ranked"` (the default for a trained run's tokens,
  `auto`) draws the pairs from Li et al.'s 500-pair pool cut into strata of timesteps, visited in
  the order the run's support set ranks them (gcpl.evidence; `ranked_schedule` without
  `n_samples`/`keep`); `spacing="nested"` (zero-shot, and explicit stages under `auto`) spreads
  each stage's new timesteps evenly (`default_schedule`); `spacing="li"` re-spaces every stage
  over the pool exactly as Li et al. do (their Flowers schedule 20,50,100,500 keep 20,10,5,1 is
  `spacing="li"` alone).
- racing (`spacing="race"`, gcpl.racing): every class still in the race is evaluated on the same
  next pairs, and a class is dropped once a paired test says it is worse than the best (Clark &
  Jaini 2023); the pairs come in the order, and with the weights, learned from the support set
  (gcpl.evidence). Knobs: a budget of UNet calls per image and the test's confidence. Measured
  below the fixed stages at 10 and 30 classes (docs/PERFORMANCE.md, "Racing"), hence not the
  default. Its pool is Li et al.'s (500 timesteps, one noise each, drawn from the same seed), so
  racing and Li et al.'s schedule with the same seed evaluate the same (t, noise) pairs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .errors import GcplError
from .losses import denoising_error
from .racing import Race, RaceParams
from .settings import setting

#: racing and ranked stages draw their (t, noise) pairs from Li et al.'s pool: 500 timesteps, one noise each
POOL = 500
#: ranked stages: the pool cut into this many strata of consecutive timesteps (25 timesteps of the
#: model's 1,000 each); a stratum's first pair is its centre, its later pairs spread within it
STRATA = 40
SPACINGS = ("auto", "ranked", "nested", "li", "race")
#: Li et al.'s Flowers schedule (their adaptive schedule for about 100 classes)
LI_SCHEDULE = ((20, 50, 100, 500), (20, 10, 5, 1))


@dataclass
class ClassifyConfig:
    n_samples: tuple[int, ...] | None = setting(
        None, "classifier stages: cumulative (t, noise) pairs per stage, e.g. 20,50,100,500, with keep "
        "(default: the schedule of the spacing for the class count)")
    keep: tuple[int, ...] | None = setting(None, "classifier stages: classes kept after each stage, e.g. 20,10,5,1, "
                                           "with n-samples")
    norm: str = setting("l2", "error norm: l2 (paper) or l1", choices=("l2", "l1"))
    batch: int = setting(64, "UNet samples per call", identity=False)
    seed: int = setting(0, "seeds the classifier's shared noise (and --limit's subset)")
    spacing: str = setting(
        "auto", "auto: ranked for a trained run's tokens, nested for zero-shot and with explicit stages; ranked: "
        "fixed stages over timestep strata in the order the run's support set ranks them (alone: gcpl's ranked "
        "schedule for the class count; at 100 fractal classes 51.5% top-1 at 546 UNet calls per image where "
        "Li et al.'s schedule reaches 55.8% at 5,550, docs/PERFORMANCE.md); nested: fixed stages, each adding "
        "evenly spread timesteps (alone: gcpl's earlier default, 43.8% there); li: Li et al.'s re-spaced "
        "stages, the paper's classifier (alone: their Flowers schedule 20,50,100,500 keep 20,10,5,1); race: "
        "drop classes on paired evidence within --budget (experimental, measured less accurate)",
        choices=SPACINGS)
    budget: int | None = setting(
        None, "racing: most UNet calls per image (default: 3 per class + 200)")
    confidence: float = setting(0.99, "racing: confidence of the paired test that drops a class")
    evidence_shots: int = setting(
        2, "ranked and racing: support images per class that learn which timesteps separate the classes "
        "(0: none: strata evenly spread, equal weights)")

    def resolved(self, trained: bool) -> "ClassifyConfig":
        """The spacing `auto` stands for: ranked stages for a trained run's tokens (the support set
        ranks the timesteps) unless the stages are given, nested stages otherwise (zero-shot)."""
        if self.spacing != "auto":
            return self
        ranked = trained and self.n_samples is None and self.keep is None
        return dataclasses.replace(self, spacing="ranked" if ranked else "nested")

    @property
    def racing(self) -> bool:
        return self.spacing == "race" and self.n_samples is None and self.keep is None

    @property
    def uses_evidence(self) -> bool:
        """Racing and ranked stages take their order (and weights) from the support set."""
        return self.racing or self.spacing == "ranked"

    def schedule(self, n_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(n_samples, keep) of the fixed stages; ((), ()) when racing."""
        if self.spacing not in SPACINGS:
            raise GcplError(f"--spacing {self.spacing!r} is unknown; use {', '.join(SPACINGS)}")
        if self.racing:
            return (), ()
        if self.n_samples is None and self.keep is None:
            if self.spacing == "li":
                return check_schedule(*LI_SCHEDULE, n_classes)
            if self.spacing == "ranked":
                return ranked_schedule(n_classes)
            return default_schedule(n_classes)
        if self.n_samples is None or self.keep is None:
            raise GcplError("give both --n-samples and --keep (one value per stage), or neither")
        return check_schedule(tuple(self.n_samples), tuple(self.keep), n_classes)

    def budget_for(self, n_classes: int) -> int:
        """Racing's budget of UNet calls per image for the class count."""
        budget = default_budget(n_classes) if self.budget is None else self.budget
        if budget < n_classes:
            raise GcplError(f"--budget {budget} is less than one UNet call per class ({n_classes} classes)")
        return budget

    def describe(self, n_classes: int) -> dict:
        """What produced the predictions, for config.json and summaries."""
        if self.racing:
            return {"method": "race", "budget": self.budget_for(n_classes), "confidence": self.confidence,
                    "evidence_shots": self.evidence_shots, "pool": POOL}
        n, k = self.schedule(n_classes)
        out = {"method": "stages", "spacing": "nested" if self.spacing in ("race", "auto") else self.spacing,
               "n_samples": list(n), "keep": list(k)}
        if self.spacing == "ranked":
            out.update(pool=POOL, strata=STRATA)
        return out


def default_budget(n_classes: int) -> int:
    """Racing's default budget: 3 UNet calls per class and 200 more for the close calls (500 at
    100 classes, where Li et al.'s schedule spends 5,550)."""
    return 3 * n_classes + 200


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
    al.'s Flowers schedule spends 56 (at 30 classes 396 calls: 57.9% top-1 where Li et al.'s
    4,150 give 62.1% and racing's 277 give 48.8%; docs/PERFORMANCE.md)."""
    C = n_classes
    if C <= 5:
        return (32,), (1,)  # 32 C calls
    if C <= 20:
        return (4, 16, 64), (5, 2, 1)  # 10 classes: 40 + 60 + 96 = 196 calls
    return (2, 8, 32, 128), (max(8, C // 10), 4, 2, 1)  # 100 classes: 200 + 60 + 96 + 192 = 548


def ranked_schedule(n_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """gcpl's ranked stages for the class count: every class on the 3 best-ranked pairs, the best
    tenth (at least 5) on 12, the best 3 on as many as the budget allows (fewer first-look pairs
    when the budget is short); the budget is the calls of gcpl's nested default
    (`default_schedule`: at 100 classes 548, a tenth of Li et al.'s), so ranked stages never cost
    more. Chosen on development images by replay (docs/PERFORMANCE.md, "Ranked stages")."""
    C = n_classes
    budget = stage_calls(*default_schedule(C), C)
    k1 = min(C, max(5, -(-C // 10)))
    k2, n2 = min(k1, 3), 12
    for n1 in (3, 2, 1):
        n3 = n2 + (budget - C * n1 - k1 * (n2 - n1)) // k2
        if n3 > n2:
            return check_schedule((n1, n2, n3), (k1, k2, 1), C)
    return (max(1, budget // C),), (1,)


def stage_calls(n_samples, keep, n_classes: int) -> int:
    """UNet calls per image of nested fixed stages (each stage adds only new pairs)."""
    calls, alive, prev = 0, n_classes, 0
    for n, k in zip(n_samples, keep):
        calls += alive * (n - prev)
        alive, prev = min(k, n_classes), n
    return calls


def strata_order(pool_size: int, n_strata: int, ranking: list[int]) -> list[int]:
    """Pool indices: the first pair of each stratum in `ranking`'s order (the strata worth
    visiting, best first), then the second pair of each, and so on. Stratum j holds the indices
    [j s, (j + 1) s) with s = pool_size // n_strata; its first pair is its centre (the members of
    `stage_subset(pool_size, n_strata)`), the others follow in van der Corput order within it."""
    s = pool_size // n_strata
    within = [s // 2] + [i for i in nested_order(s) if i != s // 2]
    return [j * s + i for i in within for j in ranking]


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
    mean_error: dict[int, float]  # class -> (weighted) mean error over its evaluated pairs (/ its calibration scale)
    unet_calls: int
    stage_reached: dict[int, int] = field(default_factory=dict)  # fixed stages: class -> last stage it was in
    pairs: dict[int, int] = field(default_factory=dict)  # racing: class -> (t, noise) pairs evaluated
    stop: str = ""  # racing: why it stopped ("one left", "budget" or "pool")


class DiffusionClassifier:
    def __init__(self, backbone, class_embeds: torch.Tensor, cfg: ClassifyConfig, latent_shape: tuple[int, ...]):
        """class_embeds: (C, L, D) prompt embeddings, each class prompt encoded once per run."""
        self.bb, self.cfg = backbone, cfg
        self.embeds = class_embeds.to(backbone.device, backbone.dtype)
        self.latent_shape = tuple(latent_shape)
        C = class_embeds.shape[0]
        self.n_samples, self.keep = cfg.schedule(C)
        self.budget = cfg.budget_for(C) if cfg.racing else None
        shared = cfg.racing or cfg.spacing == "ranked"  # Li et al.'s pool, strata over it
        pool = min(POOL, backbone.num_train_timesteps) if shared else self.n_samples[-1]
        g = torch.Generator().manual_seed(cfg.seed)  # drawn on the CPU: the same noise on every device
        self.noise = torch.randn((pool, *latent_shape), generator=g).to(backbone.device)
        self.ts = timestep_pool(pool, backbone.num_train_timesteps).to(backbone.device)
        self.scale = torch.ones(C, dtype=torch.float64)  # per-class error scale (see calibrate)
        self._order = nested_order(len(self.ts)) if cfg.spacing != "li" else None
        if cfg.spacing == "ranked":  # until use_evidence: strata evenly spread
            self._order = strata_order(len(self.ts), STRATA, nested_order(STRATA))
        self.weights = torch.ones(pool, dtype=torch.float64)  # of each pool pair in a class's mean error
        self.evidence = None
        self.race_order, self.race_weights = list(self._order or []), torch.ones(pool, dtype=torch.float64)
        self.race_params = RaceParams()
        self.errors_fn = self.unet_errors  # (x0, triples) -> errors; benchmarks replay stored errors here

    def use_evidence(self, evidence) -> None:
        """Take the pool's order and weights from `evidence` (gcpl.evidence.Evidence, learned on the
        support set): ranked stages visit strata by decreasing support SNR, racing visits pairs in
        that order; None: evenly spread, equal weights."""
        self.evidence = evidence
        n = len(self.ts)
        if self.cfg.spacing == "ranked":
            ranking = (evidence.strata_ranking(self.ts.cpu(), STRATA) if evidence is not None
                       else [j for j in nested_order(STRATA)])
            self._order = strata_order(n, STRATA, ranking)
        elif evidence is None:
            self.race_order, self.race_weights = list(self._order), torch.ones(n, dtype=torch.float64)
        else:
            self.race_order, self.race_weights = evidence.pool_plan(self.ts.cpu(), self._order)

    def stage_indices(self, n: int) -> list[int]:
        """Pool indices of a stage with n (t, noise) pairs, per the configured spacing."""
        return self._order[:n] if self._order is not None else stage_subset(len(self.ts), n)

    def calibrate(self, x0: torch.Tensor, labels: torch.Tensor) -> int:
        """Remove each class prompt's generic error level, measured on labelled support images.

        Some learned tokens denoise *every* image a little better than others, and predictions
        pile onto them. With E[m, c] the mean error of class c on support image m over the first
        stage's timesteps (racing: the first 8 pairs of its order), class c's level is b_c = mean
        of E[m, c] over images m of OTHER classes (its own images would reward fitting them);
        scores are then errors / (b_c / mean(b)). Returns the UNet calls spent."""
        C = self.n_classes
        ks = self.race_order[:8] if self.cfg.racing else self.stage_indices(self.n_samples[0])
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
    def errors_at(self, x0: torch.Tensor, classes: torch.Tensor, noise: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """(B,) errors of latents x0 (B, ...) for classes (B,) at noise (B, ...) and timesteps (B,), batched."""
        bb, out = self.bb, []
        for i in range(0, len(classes), self.cfg.batch):
            sl = slice(i, i + self.cfg.batch)
            err = denoising_error(bb.unet, x0[sl].to(bb.device), noise[sl].to(bb.device), ts[sl].to(bb.device),
                                  self.embeds[classes[sl].to(bb.device)], bb.alphas_cumprod, bb.prediction_type,
                                  self.cfg.norm)
            out.append(err.cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def _errors(self, x0: torch.Tensor, triples: list[tuple[int, int, int]]) -> torch.Tensor:
        return self.errors_fn(x0, triples)

    @torch.no_grad()
    def unet_errors(self, x0: torch.Tensor, triples: list[tuple[int, int, int]]) -> torch.Tensor:
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
        return self._race(x0) if self.cfg.racing else self._stages(x0)

    def _race(self, x0: torch.Tensor) -> list[ImageScore]:
        """Racing (gcpl.racing): all images' rounds share the UNet batches."""
        races = [Race(self.n_classes, self.race_order, self.race_weights, self.budget, self.cfg.confidence,
                      self.race_params) for _ in range(x0.shape[0])]
        while True:
            triples, sizes = [], []
            for m, race in enumerate(races):
                req = race.request()
                triples += [(m, c, k) for c, k in req]
                sizes.append(len(req))
            if not triples:
                break
            cls = torch.tensor([c for _, c, _ in triples])
            err = self._errors(x0, triples).double() / self.scale[cls]
            for race, part in zip(races, err.split(sizes)):
                if len(part):
                    race.feed(part)
        out = []
        for race in races:
            r = race.result()
            out.append(ImageScore(pred=r.pred, ranking=r.ranking, mean_error=r.mean_error, unet_calls=r.calls,
                                  pairs=r.pairs, stop=r.stop))
        return out

    def _stages(self, x0: torch.Tensor) -> list[ImageScore]:
        """Fixed stages (nested or Li et al.'s spacing)."""
        M, C = x0.shape[0], self.n_classes
        sums = torch.zeros(M, C, dtype=torch.float64)  # weighted error sums
        counts = torch.zeros(M, C, dtype=torch.float64)  # their weights' sums
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
                w = self.weights[trip[:, 2]]
                sums.index_put_((trip[:, 0], trip[:, 1]), err * w, accumulate=True)
                counts.index_put_((trip[:, 0], trip[:, 1]), w, accumulate=True)
            for m in range(M):
                for c in alive[m]:
                    reached[m, c] = s + 1
                mean = sums[m] / counts[m].clamp(min=1e-300) / self.scale
                alive[m] = sorted(alive[m], key=lambda c: mean[c].item())[:keep]
        results = []
        for m in range(M):
            mean = sums[m] / counts[m].clamp(min=1e-300) / self.scale
            evaluated = [c for c in range(C) if counts[m, c] > 0]
            ranking = sorted(evaluated, key=lambda c: (-reached[m, c].item(), mean[c].item()))
            results.append(ImageScore(
                pred=ranking[0], ranking=ranking,
                mean_error={c: mean[c].item() for c in evaluated}, unet_calls=calls[m],
                stage_reached={c: int(reached[m, c]) for c in evaluated},
            ))
        return results
