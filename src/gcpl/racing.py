"""Racing: drop a class as soon as paired evidence shows it is worse than the best.

Every class still in the race is scored on the same (timestep, noise) pairs, so two classes'
errors on one pair are paired: their difference cancels what the pair does to every class (how
hard that noise is to predict at that timestep), which is most of an error's variance. After each
round, each class is compared with the current best (lowest weighted mean error) by the weighted
differences of its per-pair errors, and dropped when a one-sided t-test says it is worse at the
given confidence (Clark & Jaini 2023, "Text-to-Image Diffusion Models are Zero-Shot
Classifiers", prune candidate classes with a paired test in the same way). The race stops when
one class is left, when the per-image budget of UNet calls is spent, or when the pool of pairs is
exhausted; the lowest weighted mean error among the classes left wins.

Early on a class has a handful of pairs, too few to estimate its own variance; its variance is
then shrunk towards the pooled variance of all classes in the race (a moderated t-statistic,
Smyth 2004), which is what lets a 100-class race drop most classes after two pairs.

Which pairs come first and how much each counts is the `Evidence` learned from the support set
(gcpl.evidence); without it the pool's timesteps come in an evenly spread order with equal weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .errors import GcplError

#: weight of the pooled variance, in pairs' worth of degrees of freedom (moderated t)
PRIOR_DF = 8
#: a round adds at least this many UNet calls per image (pairs x classes left), so that late
#: rounds with two classes left still fill the UNet's batches ...
ROUND_CALLS = 8
#: ... and at least this fraction of the pairs evaluated so far (fewer, geometrically spaced looks)
GROWTH = 0.25
#: the error rate 1 - confidence is spent over the looks at a class: look k tests at
#: (1 - confidence) 6 / (pi k)^2, so the chance of ever dropping a class that is as good as the
#: best stays below 1 - confidence however long the race (a Bonferroni bound over the looks)
SPEND = True


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3 / 26.7.4)."""
    th = math.atan(t / math.sqrt(df))
    c2, s = math.cos(th) ** 2, math.sin(th)
    if df % 2:  # odd
        acc, term = 0.0, math.cos(th)
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= (2 * k - 2) / (2 * k - 1) * c2
            acc += term
        return 2 / math.pi * (th + (s * acc if df > 1 else 0.0))
    acc, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        acc += term
    return s * acc


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with integer df >= 1, by bisection."""
    if not 0.5 < p < 1:
        raise GcplError(f"confidence {p} must lie strictly between 0.5 and 1")
    target = 2 * p - 1
    lo, hi = 0.0, 1.0
    while _t_abs_cdf(hi, df) < target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_abs_cdf(mid, df) < target else (lo, mid)
    return hi


@dataclass(frozen=True)
class RaceParams:
    """The race's internals (benchmarks vary them; users set only the budget and the confidence)."""

    first: int = 2  # pairs every class gets before the first test (>= 2)
    prior_df: int = PRIOR_DF
    round_calls: int = ROUND_CALLS
    growth: float = GROWTH
    spend: bool = SPEND


@dataclass
class RaceResult:
    pred: int
    ranking: list[int]  # best first: classes left by weighted mean error, then the dropped, last dropped first
    mean_error: dict[int, float]  # class -> weighted mean error over its evaluated pairs
    calls: int  # UNet calls spent
    pairs: dict[int, int] = field(default_factory=dict)  # class -> pairs evaluated
    stop: str = ""  # "one left", "budget" or "pool"


class Race:
    """One image's race over `n_classes` classes.

    order: pool indices in the order they are evaluated; weights: (pool,) weight of each pool
    index; budget: most UNet calls; confidence: of the test that drops a class; params: the
    race's internals (RaceParams). Drive it with `request()` -> list of (class, pool index) to
    evaluate, and `feed(errors)` with their errors in that order."""

    def __init__(self, n_classes: int, order: Sequence[int], weights: torch.Tensor, budget: int,
                 confidence: float, params: RaceParams = RaceParams()):
        if budget < n_classes:
            raise GcplError(f"a budget of {budget} UNet calls per image is less than one per class ({n_classes})")
        t_quantile(confidence, 1)  # validates the confidence
        self.C, self.order, self.budget, self.confidence = n_classes, list(order), budget, confidence
        self.w = torch.as_tensor(weights, dtype=torch.float64)[self.order]  # weight of the j-th pair
        self.first = max(2, params.first)
        self.prior_df, self.round_calls, self.growth, self.spend = (params.prior_df, params.round_calls,
                                                                    params.growth, params.spend)
        self.looks = 0
        self.err = torch.zeros(n_classes, len(self.order), dtype=torch.float64)
        self.alive = list(range(n_classes))
        self.n = 0  # pairs evaluated by every class still in the race
        self.calls = 0
        self.dropped: list[tuple[int, int, float]] = []  # (class, pairs, weighted mean) in drop order
        self.stop = "" if n_classes > 1 else "one left"
        self._step = 0

    @property
    def done(self) -> bool:
        return bool(self.stop)

    def request(self) -> list[tuple[int, int]]:
        if self.stop:
            return []
        A = len(self.alive)
        step = self.first if self.n == 0 else max(1, math.ceil(self.round_calls / A), math.ceil(self.growth * self.n))
        step = min(step, len(self.order) - self.n, (self.budget - self.calls) // A)
        if step <= 0:
            self.stop = "pool" if self.n == len(self.order) else "budget"
            return []
        self._step = step
        ks = self.order[self.n : self.n + step]
        return [(c, k) for c in self.alive for k in ks]

    def feed(self, errors: torch.Tensor) -> None:
        A, step = len(self.alive), self._step
        self.err[self.alive, self.n : self.n + step] = torch.as_tensor(errors, dtype=torch.float64).view(A, step)
        self.n += step
        self.calls += A * step
        self._prune()
        if len(self.alive) == 1:
            self.stop = "one left"

    def means(self, classes: list[int], n: int) -> torch.Tensor:
        w = self.w[:n]
        return (self.err[classes, :n] * w).sum(1) / w.sum().clamp(min=1e-300)

    def _prune(self) -> None:
        n, alive = self.n, self.alive
        if n < 2 or len(alive) < 2:
            return
        S = self.means(alive, n)
        b = int(S.argmin())
        D = (self.err[alive, :n] - self.err[alive[b], :n]) * self.w[:n]  # (A, n) weighted paired differences
        m, v = D.mean(1), D.var(1)
        others = [i for i in range(len(alive)) if i != b]
        pooled = v[others].mean()
        d0 = min(self.prior_df, (len(others) - 1) * (n - 1))  # the pool of one class is that class itself
        s2 = (d0 * pooled + (n - 1) * v) / (d0 + n - 1)
        self.looks += 1
        alpha = 1 - self.confidence
        if self.spend:
            alpha *= 6 / (math.pi * self.looks) ** 2
        q = t_quantile(1 - alpha, d0 + n - 1)
        with torch.no_grad():
            tstat = m / (s2 / n).sqrt()  # 0/0 (identical errors) is NaN: never dropped
        drop = [i for i in others if bool(tstat[i] > q)]
        for i in sorted(drop, key=lambda i: float(S[i])):  # best first within a round
            self.dropped.append((alive[i], n, float(S[i])))
        self.alive = [c for i, c in enumerate(alive) if i not in set(drop)]

    def result(self) -> RaceResult:
        S = self.means(self.alive, self.n)
        left = [c for _, c in sorted(zip(S.tolist(), self.alive))]
        gone = [c for c, _, _ in sorted(self.dropped, key=lambda d: (-d[1], d[2]))]
        mean = {c: float(s) for c, s in zip(self.alive, S.tolist())}
        mean.update({c: s for c, _, s in self.dropped})
        pairs = {c: self.n for c in self.alive}
        pairs.update({c: n for c, n, _ in self.dropped})
        return RaceResult(pred=left[0], ranking=left + gone, mean_error=mean, calls=self.calls, pairs=pairs,
                          stop=self.stop or "one left")
