"""The per-sample denoising error: the one primitive that training and classification share,
and the GCPL and CoMPLe objectives built on it.

Shapes: x0, noise, pred: (B, C, H, W) latents (already multiplied by the VAE scaling factor);
t: (B,) int64 timesteps; alphas_cumprod: (T,) fp32. Errors and losses are computed in fp32.
"""

from __future__ import annotations

import torch


def _coefs(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = alphas_cumprod[t].float()
    return a.sqrt()[:, None, None, None], (1 - a).sqrt()[:, None, None, None]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (paper Sec. 3.1)."""
    s, r = _coefs(alphas_cumprod, t)
    return s * x0.float() + r * noise.float()


def target(x0, noise, t, alphas_cumprod, prediction_type: str) -> torch.Tensor:
    """What the UNet is trained to output: eps, or v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    if prediction_type == "epsilon":
        return noise.float()
    if prediction_type == "v_prediction":
        s, r = _coefs(alphas_cumprod, t)
        return s * noise.float() - r * x0.float()
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def predict(unet, x0, noise, t, cond, alphas_cumprod) -> torch.Tensor:
    """UNet output for x_t built from (x0, noise, t), conditioned on cond (B, L, D); fp32 result."""
    dtype = next(unet.parameters()).dtype
    x_t = add_noise(x0, noise, t, alphas_cumprod).to(dtype)
    return unet(x_t, t, encoder_hidden_states=cond.to(dtype)).sample.float()


def per_sample_error(pred: torch.Tensor, tgt: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """(B,) mean squared (l2) or absolute (l1) error over C, H, W."""
    d = pred.float() - tgt.float()
    if norm == "l2":
        return d.pow(2).flatten(1).mean(1)
    if norm == "l1":
        return d.abs().flatten(1).mean(1)
    raise ValueError(f"unknown norm {norm!r}")


def denoising_error(unet, x0, noise, t, cond, alphas_cumprod, prediction_type, norm="l2") -> torch.Tensor:
    """(B,) || target - unet(x_t, t, cond) || per sample: Eq. 1 (training) and Eq. 4-5 (scoring)."""
    pred = predict(unet, x0, noise, t, cond, alphas_cumprod)
    return per_sample_error(pred, target(x0, noise, t, alphas_cumprod, prediction_type), norm)


def comple_loss(pred, x0, noise, t, labels, alphas_cumprod, prediction_type, lam: float) -> tuple[torch.Tensor, dict]:
    """CoMPLe (paper Eq. 3): pull each prediction to its own target, push it from the others'.

    pos = mean_i ||target_i - pred_i||^2;  neg = mean over pairs (i, j), i != j and of different
    classes, of ||target_ij - pred_i||^2, where target_ij is what sample i's target would be had
    its noise been eps_j (for epsilon models simply eps_j, as in the paper; for v-prediction
    sqrt(abar_i) eps_j - sqrt(1 - abar_i) x0_i). Loss = pos - lam * neg. Pairs of the same class
    are not negatives; with no valid pair the negative term is 0. Means are over C*H*W too.
    """
    B = pred.shape[0]
    pred = pred.float()
    pos = per_sample_error(pred, target(x0, noise, t, alphas_cumprod, prediction_type))
    if prediction_type == "epsilon":
        u, s = pred, torch.ones(B, device=pred.device)
    else:  # ||pred_i - s_i eps_j + r_i x0_i||^2 = ||u_i - s_i eps_j||^2
        sc, rc = _coefs(alphas_cumprod, t)
        u, s = pred + rc * x0.float(), sc.flatten()
    u, e = u.flatten(1), noise.float().flatten(1)
    n = u.shape[1]
    # ||u_i - s_i e_j||^2 = |u_i|^2 + s_i^2 |e_j|^2 - 2 s_i <u_i, e_j>   -> (B, B)
    sq = u.pow(2).sum(1)[:, None] + (s[:, None] ** 2) * e.pow(2).sum(1)[None, :] - 2 * s[:, None] * (u @ e.T)
    neg_all = sq / n
    mask = labels[:, None] != labels[None, :]
    neg = neg_all[mask].mean() if mask.any() else pred.new_zeros(())
    loss = pos.mean() - lam * neg
    return loss, {"pos": pos.mean().item(), "neg": float(neg.detach())}
