"""Tip-Adapter and Tip-Adapter-F (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for
Few-shot Classification", ECCV 2022; gaopengcuhk/Tip-Adapter main.py, utils.py, configs/).

Cache model: keys K (N, E) = the L2-normalised mean of `tip.augment_epochs` (augment_epoch: 10)
augmented views' features of each support image (RandomResizedCrop scale (0.5, 1) + flip,
main.py's train_tranform), values V (N, C) = one-hot labels. For a normalised test feature f:

    logits = s * f W_text^T + alpha * exp(-beta * (1 - f K^T)) V

with s = exp(logit_scale) (the code writes 100, OpenAI CLIP's value) and W_text the normalised
features of the hand-crafted prompt for each class (the code's single-template classifier of every
dataset but ImageNet). alpha, beta start at the dataset's config (init_alpha, init_beta: StanfordCars
3, 1; Flowers102 10, 1; ImageNet's 1.17, 1 elsewhere; gcpl.clip.official) and are searched on
validation images on the code's grid (utils.py search_hp): beta in 0.1 + i (scale_b - 0.1) /
steps_b, alpha in 0.1 + j (scale_a - 0.1) / steps_a (search_scale: StanfordCars [20, 10],
Flowers102 [50, 50], ImageNet [7, 3]; search_step [200, 20]), best accuracy, first best in (beta,
alpha) order.
- validation images (gcpl.clip.sets): the split's val list, or the val part of the training pool,
  all of it (main.py:170 searches on the dataset's whole val split), at every shot count;
- without them (val-source shots, or no image outside the support set): k-fold cross-validation
  on the support set: the cache of the other folds scores each held-out fold (eval-view
  features); at 1 shot the init values are kept.

Tip-Adapter-F (main.py run_tip_adapter_F): the keys become a learnable Linear initialised with K,
trained with the loss CE(logits) at the init alpha, beta: AdamW(lr from the config (0.001), eps
1e-4), CosineAnnealingLR over all iterations, train_epoch epochs (20), batches of 256 augmented
views (scale (0.5, 1), flip). Then alpha, beta are searched again on the validation images with
the fine-tuned keys (main.py:129-132). The official code keeps the epoch with the best *test*
accuracy (main.py:114-126) and prints the better of that and the searched model's test accuracy
(main.py:141); gcpl never looks at test labels and keeps the last epoch, which scores lower for
that reason. Without validation images the fine-tuned keys have seen every shot, so no search is
made and the init alpha, beta (those the keys were trained with) are kept.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..method_registry import register_method
from .base import ClipMethod, Support, normed
from .features import text_classifier
from .loop import EpochLoop, cosine_iter_lr, epoch_generator


def tip_logits(f: torch.Tensor, text: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, alpha: float,
               beta: float, scale: float) -> torch.Tensor:
    """Tip-Adapter's logits for normalised features f (B, E): zero-shot + alpha * cache."""
    affinity = f @ keys.t()
    cache = torch.exp(-beta * (1 - affinity)) @ values
    return scale * f @ text.t() + alpha * cache


def search_grid(scale: tuple[float, float], steps: tuple[int, int]) -> tuple[list[float], list[float]]:
    betas = [i * (scale[0] - 0.1) / steps[0] + 0.1 for i in range(steps[0])]
    alphas = [i * (scale[1] - 0.1) / steps[1] + 0.1 for i in range(steps[1])]
    return betas, alphas


def grid_correct(f: torch.Tensor, y: torch.Tensor, text, keys, values, betas, alphas, scale) -> torch.Tensor:
    """(len(betas), len(alphas)) correct counts of every (beta, alpha) on features f, labels y."""
    zs = scale * f @ text.t()
    affinity = f @ keys.t()
    out = torch.zeros(len(betas), len(alphas), dtype=torch.long)
    a = torch.tensor(alphas, dtype=zs.dtype, device=zs.device)
    for i, beta in enumerate(betas):
        cache = torch.exp(-beta * (1 - affinity)) @ values  # (B, C)
        logits = zs.unsqueeze(0) + a.view(-1, 1, 1) * cache.unsqueeze(0)  # (A, B, C)
        out[i] = (logits.argmax(-1) == y.to(zs.device).unsqueeze(0)).sum(-1).cpu()
    return out


def best_of(correct: torch.Tensor, betas, alphas) -> tuple[float, float, int]:
    """First best (beta, alpha) in the code's loop order (beta outer, alpha inner)."""
    flat = correct.flatten()
    i = int(torch.nonzero(flat == flat.max())[0])
    return betas[i // len(alphas)], alphas[i % len(alphas)], int(flat.max())


@register_method("tip-adapter", short="Tip", label="Tip-Adapter (training-free cache)",
                 family="clip", groups=("text", "validation", "tip"), demo_seconds=6)
class TipAdapter(ClipMethod):
    name = "tip-adapter"

    def cache(self, support: Support) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys (N, E) normalised mean of augmented views, values (N, C) one-hot)."""
        cfg = self.settings.tip
        bank = support.bank
        total = torch.zeros(len(bank), self.clip.embed_dim, device=self.clip.device)
        with torch.no_grad():
            for e in range(cfg.augment_epochs):
                g = epoch_generator(self.job.seed, "tip-adapter/cache", e)
                for i in range(0, len(bank), self.job.eval_batch):
                    idx = list(range(i, min(len(bank), i + self.job.eval_batch)))
                    views = bank.train_views(idx, g, tuple(cfg.crop_scale), flip=True)
                    total[idx] += self.clip.encode_images(views)
        keys = normed(total / cfg.augment_epochs)
        values = F.one_hot(support.labels, len(self.classes)).float().to(self.clip.device)
        return keys, values

    def search(self, support: Support, text, keys, values, adapter_keys=None) -> tuple[float, float, str]:
        """(alpha, beta, how) chosen on validation data (or the init values)."""
        cfg, val = self.settings.tip, self.settings.validation
        alpha, beta = cfg.alpha, cfg.beta
        if not cfg.search:
            return alpha, beta, "init values (search off)"
        betas, alphas = search_grid(tuple(cfg.search_scale), tuple(cfg.search_steps))
        scale = self.clip.logit_scale
        if support.val:
            vx, vy = support.val_features()
            k = keys if adapter_keys is None else adapter_keys
            correct = grid_correct(normed(vx.to(self.clip.device)), vy, text, k, values, betas, alphas, scale)
            b, a, n = best_of(correct, betas, alphas)
            return a, b, f"validation images: {n}/{len(vy)} at the best"
        if adapter_keys is not None:
            return alpha, beta, "init values (no validation images: the fine-tuned keys saw every shot)"
        nf = min(val.cv_folds, support.min_shots())
        if nf < 2:
            return alpha, beta, "init values (1 shot: nothing to validate on)"
        f = normed(support.features().to(self.clip.device))
        y = support.labels
        correct = torch.zeros(len(betas), len(alphas), dtype=torch.long)
        for held in support.folds(nf):
            keep = torch.ones(len(y), dtype=torch.bool)
            keep[held] = False
            kk = keep.to(keys.device)
            correct += grid_correct(f[held], y[held], text, keys[kk], values[kk], betas, alphas, scale)
        b, a, n = best_of(correct, betas, alphas)
        return a, b, f"{nf}-fold cross-validation on the shots: {n}/{len(y)} at the best"

    def fit(self, support: Support, folder: Path, progress: bool = True):
        text = text_classifier(self.clip, self.template, self.classes)
        keys, values = self.cache(support)
        alpha, beta, how = self.search(support, text, keys, values)
        return ({"text": text, "keys": keys, "values": values},
                {"alpha": alpha, "beta": beta, "search": how, "template": self.template})

    def load(self, tensors, meta):
        dev = self.clip.device
        self.text, self.keys, self.values = (tensors[k].to(dev).float() for k in ("text", "keys", "values"))
        self.alpha, self.beta = float(meta["alpha"]), float(meta["beta"])

    def logits(self, pixels):
        with torch.no_grad():
            f = normed(self.clip.encode_images(pixels))
            return tip_logits(f, self.text, self.keys, self.values, self.alpha, self.beta, self.clip.logit_scale)


@register_method("tip-adapter-f", short="Tip-F", label="Tip-Adapter-F (fine-tuned cache)",
                 family="clip", trains=True, groups=("text", "validation", "tip", "tip_f"), demo_seconds=13)
class TipAdapterF(TipAdapter):
    name = "tip-adapter-f"

    def fit(self, support: Support, folder: Path, progress: bool = True):
        cfg, fcfg, job = self.settings.tip, self.settings.tip_f, self.job
        text = text_classifier(self.clip, self.template, self.classes)
        keys, values = self.cache(support)
        first = self.search(support, text, keys, values)  # Tip-Adapter's own search (run_tip_adapter)
        adapter = torch.nn.Linear(keys.shape[1], keys.shape[0], bias=False).to(self.clip.device)
        with torch.no_grad():
            adapter.weight.copy_(keys)
        opt = torch.optim.AdamW(adapter.parameters(), lr=fcfg.lr, eps=fcfg.eps, weight_decay=fcfg.weight_decay)
        n, bsz = len(support.bank), fcfg.batch
        iters = -(-n // bsz)  # Tip-Adapter's loader keeps the last partial batch
        total = fcfg.epochs * iters
        labels = support.labels.to(self.clip.device)
        scale = self.clip.logit_scale

        def step(idx, g, epoch):
            with torch.no_grad():
                views = support.bank.train_views(idx, g, tuple(cfg.crop_scale), flip=True)
                f = normed(self.clip.encode_images(views))
            affinity = adapter(f)
            cache = torch.exp(-cfg.beta * (1 - affinity)) @ values
            logits = scale * f @ text.t() + cfg.alpha * cache
            return F.cross_entropy(logits, labels[idx])

        loop = EpochLoop(adapter, opt, folder / "checkpoint", job.seed, self.name, fcfg.epochs, n, bsz,
                         lr_at=lambda e, it, per: cosine_iter_lr(e * iters + it, total, fcfg.lr),
                         drop_last=False, checkpoint_every=job.checkpoint_every)
        log = loop.run(step, progress)
        tuned = adapter.weight.detach().clone()
        alpha, beta, how = self.search(support, text, keys, values, adapter_keys=tuned)
        return ({"text": text, "keys": tuned, "values": values, "initial_keys": keys},
                {"alpha": alpha, "beta": beta, "search": how, "template": self.template, "train_log": log,
                 "trained_with": {"alpha": cfg.alpha, "beta": cfg.beta},
                 "before_fine_tuning": {"alpha": first[0], "beta": first[1], "search": first[2]}})
