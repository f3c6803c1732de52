"""The diffusion classifier: known answers with a fake UNet, Li et al.'s call count, batching."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from gcpl.classify import ClassifyConfig, DiffusionClassifier, default_schedule, timestep_pool
from gcpl.errors import GcplError


class OffsetUNet(torch.nn.Module):
    """Predicts a constant per class: the first entry of the class embedding. The error against
    unit-variance noise is about 1 + c^2, so the class whose constant is nearest 0 must win."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, x, t, encoder_hidden_states):
        self.calls += x.shape[0]
        return SimpleNamespace(sample=torch.zeros_like(x) + encoder_hidden_states[:, 0, 0, None, None, None])


@dataclass
class FakeBackbone:
    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor
    prediction_type: str = "epsilon"
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def num_train_timesteps(self):
        return len(self.alphas_cumprod)


def _embeds(offsets):
    e = torch.zeros(len(offsets), 3, 2)
    e[:, 0, 0] = torch.tensor(offsets)
    return e


def _clf(offsets, **kw):
    bb = FakeBackbone(OffsetUNet(), torch.linspace(0.999, 0.01, 1000))
    return bb, DiffusionClassifier(bb, _embeds(offsets), ClassifyConfig(**kw), (4, 8, 8))


def test_known_answer_and_ranking():
    offsets = [0.9, -0.5, 0.05, 1.5, -0.2, 0.7]
    _, clf = _clf(offsets, n_samples=(4, 8), keep=(3, 1))
    (res,) = clf.score(torch.randn(1, 4, 8, 8))
    assert res.pred == 2
    # survivors of stage 1 first (by error), then the dropped classes by error
    assert res.ranking == [2, 4, 1, 5, 0, 3]


def test_li_et_al_flowers_schedule_costs_5590_calls():
    """DESIGN.md: 20,50,100,500 keep 20,10,5,1 at 102 classes = 5,590 UNet calls per image."""
    bb, clf = _clf([0.01 * i for i in range(102)], n_samples=(20, 50, 100, 500), keep=(20, 10, 5, 1), batch=512,
                   spacing="li")
    (res,) = clf.score(torch.randn(1, 4, 8, 8))
    assert res.unet_calls == bb.unet.calls == 5590
    assert res.pred == 0


def test_batched_images_equal_one_by_one():
    bb, clf = _clf([0.3, -0.1, 0.2, 0.0, 0.5], n_samples=(3, 9), keep=(2, 1), batch=7)
    x = torch.randn(3, 4, 8, 8)
    together = clf.score(x)
    alone = [clf.score(x[i : i + 1])[0] for i in range(3)]
    for a, b in zip(together, alone):
        assert a.ranking == b.ranking and a.unet_calls == b.unet_calls
        for c in a.mean_error:
            assert a.mean_error[c] == pytest.approx(b.mean_error[c], rel=1e-6)


def test_full_evaluation_agrees_with_single_stage_mean():
    """One stage over all timesteps: a class's score is the plain mean error over all pairs."""
    bb, clf = _clf([0.4, 0.1], n_samples=(10,), keep=(1,))
    x = torch.randn(1, 4, 8, 8)
    (res,) = clf.score(x)
    for c, off in enumerate([0.4, 0.1]):
        errs = [((clf.noise[k] - off) ** 2).mean() for k in range(10)]
        assert res.mean_error[c] == pytest.approx(torch.stack(errs).mean().item(), rel=1e-5)


def test_timestep_pool_is_evenly_spaced():
    assert timestep_pool(4, 1000).tolist() == [125, 375, 625, 875]
    assert len(timestep_pool(500, 1000)) == 500


def test_schedule_validation():
    with pytest.raises(GcplError, match="same number of stages"):
        ClassifyConfig(n_samples=(10, 20), keep=(1,)).schedule(5)
    with pytest.raises(GcplError, match="increasing"):
        ClassifyConfig(n_samples=(20, 10), keep=(2, 1)).schedule(5)
    with pytest.raises(GcplError, match="both"):
        ClassifyConfig(n_samples=(20,)).schedule(5)
    for n in (2, 10, 37, 102, 196):
        ns, keep = default_schedule(n)
        assert keep[-1] == 1 and keep[0] <= n


def test_nested_stages_only_add_new_timesteps():
    from gcpl.classify import nested_order

    order = nested_order(500)
    assert sorted(order) == list(range(500))
    first = sorted(order[:20])
    gaps = [b - a for a, b in zip(first, first[1:])]
    assert max(gaps) <= 2 * 500 // 20  # a prefix is spread over the whole pool
    bb, clf = _clf([0.01 * i for i in range(100)], n_samples=(2, 10, 50), keep=(10, 3, 1), batch=256)
    (res,) = clf.score(torch.randn(1, 4, 8, 8))
    assert res.unet_calls == bb.unet.calls == 100 * 2 + 10 * 8 + 3 * 40
    assert res.pred == 0


def test_calibration_removes_a_class_wide_error_level():
    """With a UNet whose error depends on the class only, every class has the same generic level
    after calibration: calibrated scores tie, and the scale is each class's level over the mean."""
    offsets = [0.0, 0.5, 1.0]
    bb, clf = _clf(offsets, n_samples=(4,), keep=(1,))
    calls = clf.calibrate(torch.randn(6, 4, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert calls == 6 * 3 * 4
    level = torch.tensor([((clf.noise - o) ** 2).mean().item() for o in offsets], dtype=torch.float64)
    torch.testing.assert_close(clf.scale, level / level.mean(), rtol=1e-5, atol=1e-7)
    (res,) = clf.score(torch.randn(1, 4, 8, 8))
    errs = list(res.mean_error.values())
    assert max(errs) - min(errs) < 1e-6
