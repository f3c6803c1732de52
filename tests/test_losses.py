"""Known-answer tests for the shared denoising primitive and the CoMPLe objective."""

import torch
from diffusers import DDPMScheduler

from gcpl.losses import add_noise, comple_loss, target


def _sched(pred="epsilon"):
    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=pred)


def test_noise_and_velocity_match_diffusers():
    s = _sched()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    ac = s.alphas_cumprod
    torch.testing.assert_close(add_noise(x0, eps, t, ac), s.add_noise(x0, eps, t))
    torch.testing.assert_close(target(x0, eps, t, ac, "v_prediction"), s.get_velocity(x0, eps, t))
    assert torch.equal(target(x0, eps, t, ac, "epsilon"), eps)


def _hand_comple(pred, x0, eps, t, labels, ac, kind, lam):
    B = pred.shape[0]
    def tgt(i, j):
        return eps[j] if kind == "epsilon" else ac[t[i]].sqrt() * eps[j] - (1 - ac[t[i]]).sqrt() * x0[i]

    pos = sum(((tgt(i, i) - pred[i]) ** 2).mean() for i in range(B)) / B
    pairs = [(i, j) for i in range(B) for j in range(B) if i != j and labels[i] != labels[j]]
    neg = sum(((tgt(i, j) - pred[i]) ** 2).mean() for i, j in pairs) / len(pairs)
    return pos - lam * neg


def test_comple_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    ac = _sched().alphas_cumprod
    pred, x0, eps = (torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64).float() for _ in range(3))
    t = torch.tensor([10, 200, 600, 900])
    for kind in ("epsilon", "v_prediction"):
        # all classes distinct: exactly the paper's B(B-1) normalisation
        labels = torch.tensor([0, 1, 2, 3])
        loss, _ = comple_loss(pred, x0, eps, t, labels, ac, kind, lam=0.3)
        torch.testing.assert_close(loss, _hand_comple(pred, x0, eps, t, labels, ac, kind, 0.3), rtol=1e-5, atol=1e-6)
        # same-class pairs are not negatives
        labels = torch.tensor([0, 0, 1, 2])
        loss, _ = comple_loss(pred, x0, eps, t, labels, ac, kind, lam=0.3)
        torch.testing.assert_close(loss, _hand_comple(pred, x0, eps, t, labels, ac, kind, 0.3), rtol=1e-5, atol=1e-6)


def test_comple_with_lambda_zero_is_plain_mse():
    g = torch.Generator().manual_seed(2)
    ac = _sched().alphas_cumprod
    pred, x0, eps = (torch.randn(3, 2, 2, 2, generator=g) for _ in range(3))
    loss, parts = comple_loss(pred, x0, eps, torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]), ac, "epsilon", 0.0)
    torch.testing.assert_close(loss, ((pred - eps) ** 2).mean())
