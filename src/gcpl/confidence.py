"""How sure the diffusion classifier is: probabilities from mean denoising errors.

The classifier gives each class c its mean denoising error e_c (lower is better;
gcpl.classify.ImageScore.mean_error) and a ranking. Classes dropped at an early stage have their
mean over fewer, other (t, noise) pairs than the finalists, so raw means of different classes are
not always comparable: the errors are first made non-decreasing along the classifier's ranking
(running maximum, `ranked_errors`), so a class ranked lower never gets a higher probability.

Two ways to turn them into probabilities:

- relative scores (`probabilities`): p_c = softmax(-e_c / T) over every class the classifier
  evaluated, T a given temperature or, without one, each image's spread of errors over the
  classes (uncalibrated: a ranking with a scale, not a probability of being right);
- calibrated (`calibrated_probabilities`): the predicted class's probability is a logistic
  function of the relative margin between the two best classes, m = (e_2 - e_1) / e_1 (with
  fixed stages both ran the last stage's pairs, so m compares like with like; with racing the
  runner-up's mean is over the pairs it ran before it was dropped):
  p_pred = sigmoid(slope * m + intercept), fitted on labelled held-out images by penalised
  logistic regression (`fit_margin`); the other classes share 1 - p_pred in proportion to their
  relative scores. One temperature over the raw errors could not do this on the demo: the errors
  of classes dropped at different stages set its scale, and every image came out near the same
  confidence (docs/PERFORMANCE.md, "Calibration of the confidences").
"""

from __future__ import annotations

import math

import torch

__all__ = ["calibrated_probabilities", "error_row", "fit_logistic", "fit_margin", "margin_confidence",
           "margin_feature", "probabilities", "ranked_errors", "relative_margin"]



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


def relative_margin(mean_error: dict[int, float], ranking: list[int]) -> float:
    """(e_2 - e_1) / |e_1| of the two best classes along the ranking (errors as `ranked_errors`
    makes them, so >= 0); inf when only one class has an error."""
    ranked = ranked_errors(mean_error, ranking)
    if len(ranked) < 2:
        return math.inf
    (_, e1), (_, e2) = ranked[:2]
    return (e2 - e1) / max(abs(e1), 1e-12)


def margin_feature(margins) -> torch.Tensor:
    """The regressor of the confidence: the relative margin itself (a tie, m = 0, gives
    sigmoid(intercept), a finite confidence, not 0 as a fit on log m would)."""
    return torch.as_tensor(margins, dtype=torch.float64).clamp(min=0)


def margin_confidence(margin: float, slope: float, intercept: float) -> float:
    """The calibrated probability that the predicted class is right, sigmoid(slope * m + intercept)."""
    if math.isinf(margin):
        return 1.0
    return float(torch.sigmoid(slope * margin_feature(margin) + intercept))


def fit_logistic(x, hits, penalty: float = 1e-3, iters: int = 100) -> tuple[float, float, dict]:
    """(slope, intercept, how) of the logistic regression of `hits` (M,) on one feature x (M,): the
    mean negative log-likelihood plus penalty / 2 * (slope'^2 + intercept'^2) in the standardised
    feature (x - mean) / std, so the penalty does not depend on the feature's units; minimised by
    damped Newton steps (strictly convex for penalty > 0: one finite minimum even when every
    prediction was right or every one wrong). Non-finite x are left out."""
    x = torch.as_tensor(x, dtype=torch.float64)
    h = torch.as_tensor(hits, dtype=torch.float64)
    finite = x.isfinite()
    x, h = x[finite], h[finite]
    if len(x) == 0:
        raise ValueError("no held-out image with two scored classes to fit the confidence on")
    mu, sd = float(x.mean()), float(x.std(correction=0))
    sd = sd if sd > 0 else 1.0
    X = torch.stack([(x - mu) / sd, torch.ones_like(x)], 1)
    w = torch.tensor([0.0, math.log((h.sum() + 0.5) / (len(h) - h.sum() + 0.5))], dtype=torch.float64)

    def loss(w):
        return float(torch.nn.functional.binary_cross_entropy_with_logits(X @ w, h) + penalty / 2 * (w @ w))

    for _ in range(iters):
        p = torch.sigmoid(X @ w)
        g = X.T @ (p - h) / len(h) + penalty * w
        if float(g.abs().max()) < 1e-12:
            break
        H = (X.T * (p * (1 - p))) @ X / len(h) + (penalty + 1e-12) * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(H, g)
        t, f0 = 1.0, loss(w)
        while loss(w - t * step) > f0 and t > 1e-8:
            t /= 2
        w = w - t * step
    slope = float(w[0]) / sd
    return slope, float(w[1]) - slope * mu, {"images": len(h), "nll": loss(w), "accuracy": float(h.mean())}


def fit_margin(margins, hits, penalty: float = 1e-2) -> tuple[float, float, dict]:
    """(slope, intercept, how) of `margin_confidence` fitted on held-out images: their relative
    margins (M,) and whether each prediction was right (M,)."""
    slope, intercept, how = fit_logistic(margin_feature(margins), hits, penalty)
    return slope, intercept, {"how": "logistic regression of right/wrong on the relative margin of the two "
                                     f"best classes (penalty {penalty:g} on the standardised margin)", **how}


def calibrated_probabilities(errors: torch.Tensor, pred: int, margin: float, slope: float,
                             intercept: float) -> torch.Tensor:
    """(C,) probabilities: the prediction gets `margin_confidence`, the other classes share the rest
    in proportion to their relative scores (`probabilities` with each image's spread)."""
    p = probabilities(errors, None).clone()
    conf = margin_confidence(margin, slope, intercept)
    p[pred] = 0.0
    rest = float(p.sum())
    p = p * ((1 - conf) / rest) if rest > 0 else p
    p[pred] = conf if rest > 0 else 1.0
    return p
