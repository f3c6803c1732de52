"""Zero-shot CLIP and the linear probe.

Zero-shot CLIP (Radford et al., ICML 2021): logits = exp(logit_scale) * cos(image, text of
`template.format(class)`), one hand-crafted prompt per class: CoOp's prompt of the dataset
(KaiyangZhou/CoOp trainers/zsclip.py CUSTOM_TEMPLATES; gcpl.clip.official), else the dataset's own.

Linear probe (CLIP paper, appendix A.3; CoOp's lpclip/linear_probe.py, the protocol of CoOp's and
Tip-Adapter's few-shot tables): multinomial L2-regularised logistic regression fitted with
L-BFGS on the frozen image features (the projected embeddings, not normalised, of the eval view,
as lpclip's feat_extractor.py writes them). The objective is scikit-learn's LogisticRegression
(lbfgs, penalty l2, C): mean cross-entropy + ||W||^2 / (2 C n), bias not penalised, solved here in
float64 with torch.optim.LBFGS (strong Wolfe line search, gradient tolerance 1e-6, tighter than
scikit-learn's default 1e-4 so that the fit is the objective's optimum within 1e-3 (a test), at most
`lp_max_iter` iterations). C is chosen as lpclip does: accuracy on validation data for
C in (1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6), then `lp_search_steps` interval-halving steps in log
space around the best (each step fits the two ends and keeps the better half). Validation data:
- val-source split (default, lpclip's protocol): min(shots, val_shots) images per class of the
  split's val list, or of the val part of the training pool (gcpl.clip.sets), at every shot count;
- val-source shots (or no image outside the support set): k-fold cross-validation on the support
  set (the j-th shot of each class in fold j mod k, k = min(cv_folds, shots)); accuracy = all
  held-out images together. At 1 shot nothing can validate C there: `lp_c` is used (0.316, the
  value of the CLIP README's linear-probe example).
The final classifier is the one fitted with the chosen C on the support set (lpclip's clf_final).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..method_registry import register_method
from .base import ClipMethod, Support, cosine_logits
from .features import text_classifier


@register_method("clip-zs", short="CLIP-ZS", label="zero-shot CLIP (hand-crafted prompt)",
                 family="clip", uses_shots=False, groups=("text",), demo_seconds=2)
class ZeroShotClip(ClipMethod):
    name = "clip-zs"
    needs_support = False

    def fit(self, support, folder: Path, progress: bool = True):
        w = text_classifier(self.clip, self.template, self.classes)
        return {"text": w}, {"template": self.template}

    def load(self, tensors, meta):
        self.text = tensors["text"].to(self.clip.device).float()

    def logits(self, pixels):
        return cosine_logits(self.clip, pixels, self.text)


# ----------------------------------------------------------------------------- logistic regression


def fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, max_iter: int = 1000,
               tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, scikit-learn's lbfgs objective: mean CE + ||W||^2/(2 C n).
    Returns (W (K, D), b (K,)) in float32."""
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu")
    n, d = x.shape
    w = torch.zeros(n_classes, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=10, line_search_fn="strong_wolfe")
    reg = 1.0 / (2.0 * c * n)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.t() + b, y) + reg * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


def predict(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x.to("cpu", torch.float32) @ w.t() + b).argmax(-1)


def search_c(score, grid=(1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6), steps: int = 8) -> tuple[float, list]:
    """lpclip's search: the best C of `grid` (first best in grid order), then `steps` rounds that
    score both ends of [C/10, 10 C] and keep the half (in log10 space) on the better end's side,
    ties going to the left (smaller C, stronger regularisation). `score(C)` -> accuracy."""
    trace = []
    accs = []
    for c in grid:
        accs.append(score(c))
        trace.append({"C": c, "acc": accs[-1]})
    peak = grid[max(range(len(grid)), key=lambda i: (accs[i], -i))]
    left, right = 0.1 * peak, 10.0 * peak
    final = peak
    for _ in range(steps):
        acc_l, acc_r = score(left), score(right)
        trace += [{"C": left, "acc": acc_l}, {"C": right, "acc": acc_r}]
        mid = 0.5 * (math.log10(left) + math.log10(right))
        if acc_l < acc_r:
            final, left = right, 10 ** mid
        else:
            final, right = left, 10 ** mid
    return final, trace


@register_method("linear-probe", short="LP-CLIP", label="linear probe CLIP",
                 family="clip", groups=("validation", "linear_probe"), demo_seconds=7)
class LinearProbe(ClipMethod):
    name = "linear-probe"

    def fit(self, support: Support, folder: Path, progress: bool = True):
        cfg, val = self.settings.linear_probe, self.settings.validation
        x, y, k = support.features().cpu(), support.labels, len(self.classes)

        def fit(xs, ys, c):
            return fit_logreg(xs, ys, k, c, cfg.max_iter)

        if support.val:
            vx, vy = support.val_features()
            vx = vx.cpu()

            def score(c):
                w, b = fit(x, y, c)
                return float((predict(vx, w, b) == vy).float().mean())

            how = f"validation images ({len(vy)})"
        else:
            nf = min(val.cv_folds, support.min_shots())
            folds = support.folds(nf) if nf >= 2 else []

            def score(c):
                correct = 0
                for held in folds:
                    keep = torch.ones(len(y), dtype=torch.bool)
                    keep[held] = False
                    w, b = fit(x[keep], y[keep], c)
                    correct += int((predict(x[held], w, b) == y[held]).sum())
                return correct / len(y)

            how = f"{nf}-fold cross-validation on the shots" if folds else "none (1 shot): lp_c"
        if support.val or nf >= 2:
            c, trace = search_c(score, tuple(cfg.c_grid), cfg.search_steps)
        else:
            c, trace = cfg.c, []
        w, b = fit(x, y, c)
        return {"weight": w, "bias": b}, {"C": c, "validation": how, "search": trace}

    def load(self, tensors, meta):
        self.w = tensors["weight"].to(self.clip.device).float()
        self.b = tensors["bias"].to(self.clip.device).float()
        self.c = meta.get("C")

    def logits(self, pixels):
        with torch.no_grad():
            return self.clip.encode_images(pixels) @ self.w.t() + self.b
