"""How sure the diffusion classifier is: probabilities from mean denoising errors.

The classifier gives each class c its mean denoising error e_c (lower is better;
gcpl.classify.ImageScore.mean_error) and a ranking. With racing, a class dropped early has its
mean over fewer, other (t, noise) pairs than the winner, so raw means of different classes are not
always comparable: the errors are first made non-decreasing along the classifier's ranking
(running maximum, `ranked_errors`), so a class ranked lower never gets a higher probability. Then
p_c = softmax(-e_c / T) over every class the classifier evaluated (`probabilities`); the
temperature T is fitted by minimising the negative log-likelihood of labelled images
(`fit_temperature`).
"""

from __future__ import annotations

import math

import torch

from .errors import GcplError

__all__ = ["error_row", "fit_temperature", "probabilities", "ranked_errors", "support_nll"]


def ranked_errors(mean_error: dict[int, float], ranking: list[int]) -> list[tuple[int, float]]:
    """(class, error) along the ranking (best first), errors made non-decreasing (running max):
    a class ranked below another never looks better than it. Classes without an error are left out."""
    out, top = [], -math.inf
    for c in ranking:
        if c in mean_error:
            top = max(top, float(mean_error[c]))
            out.append((c, top))
    return out


def error_row(mean_error: dict[int, float], ranking: list[int], n_classes: int) -> torch.Tensor:
    row = torch.full((n_classes,), math.inf, dtype=torch.float64)
    for c, e in ranked_errors(mean_error, ranking):
        row[c] = e
    return row


def probabilities(errors: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Softmax of -errors / T over the last axis (inf errors: probability 0). T None: each row's
    standard deviation over its finite errors (1 when they are all equal)."""
    errors = torch.as_tensor(errors, dtype=torch.float64)
    finite = errors.isfinite()
    if temperature is None:
        x = torch.where(finite, errors, 0.0)
        n = finite.sum(-1, keepdim=True).clamp(min=1)
        mean = x.sum(-1, keepdim=True) / n
        var = (torch.where(finite, errors - mean, 0.0) ** 2).sum(-1, keepdim=True) / n
        temperature = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
    logits = torch.where(finite, -errors / temperature, -math.inf)
    return torch.softmax(logits, -1)


def support_nll(errors: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under `probabilities(errors, temperature)`."""
    logits = torch.where(errors.isfinite(), -errors / temperature, -math.inf)
    return float(-(torch.log_softmax(logits, -1).gather(1, labels[:, None])).mean())


def fit_temperature(errors, labels, lo: float = 1e-6, hi: float = 1e4) -> tuple[float, dict]:
    """The temperature T minimising `support_nll` of (M, C) errors (inf: class not scored) with
    true classes `labels` (M,). The NLL is convex in b = 1/T (its derivative, the mean of e_true -
    E_p[e], increases with b), so b is found by bisection on the derivative, in log space over
    [lo, hi] / s, s = the mean gap of the errors to each row's best. A perfectly separated support
    set has no minimum: the bound hi / s is used (and said). Returns (T, how)."""
    E = torch.as_tensor(errors, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    ok = E.gather(1, y[:, None])[:, 0].isfinite()
    E, y = E[ok], y[ok]
    finite = E.isfinite()
    if len(E) == 0:
        raise GcplError("no support image has an error for its own class; cannot fit a temperature")
    gaps = torch.where(finite, E - E.where(finite, math.inf).min(1, keepdim=True).values, 0.0)
    s = float(gaps.sum() / finite.sum())
    if s <= 0:
        return 1.0, {"how": "support errors are all equal: T = 1", "images": len(E)}
    Ez = torch.where(finite, E, 0.0)

    def slope(b: float) -> float:
        p = probabilities(E, 1 / b)
        return float((Ez.gather(1, y[:, None])[:, 0] - (p * Ez).sum(1)).mean())

    a, b = math.log(lo / s), math.log(hi / s)
    if slope(math.exp(b)) <= 0:
        beta, how = math.exp(b), f"the support set is separated perfectly: bound 1/T = {hi:g} / mean error gap"
    elif slope(math.exp(a)) >= 0:
        beta, how = math.exp(a), f"the support errors carry no signal: bound 1/T = {lo:g} / mean error gap"
    else:
        for _ in range(60):
            mid = (a + b) / 2
            a, b = (mid, b) if slope(math.exp(mid)) < 0 else (a, mid)
        beta, how = math.exp((a + b) / 2), "minimum of the support NLL (bisection on its derivative in 1/T)"
    T = 1 / beta
    return T, {"how": how, "images": len(E), "nll": support_nll(E, y, T), "nll_at_1": support_nll(E, y, 1.0)}
