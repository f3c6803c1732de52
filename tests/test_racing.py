"""Racing and support-learned evidence: known answers on synthetic error streams."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from test_classify import FakeBackbone, OffsetUNet, _embeds

from gcpl.classify import POOL, ClassifyConfig, DiffusionClassifier
from gcpl.errors import GcplError
from gcpl.evidence import Evidence, learn_evidence, load_or_learn_evidence
from gcpl.racing import Race, t_quantile


def run_race(race: Race, stream) -> Race:
    """Feed a race from stream(class, pool index) -> error until it stops."""
    while True:
        req = race.request()
        if not req:
            return race
        race.feed(torch.tensor([stream(c, k) for c, k in req], dtype=torch.float64))


def noisy_stream(offsets, sd, seed, common_sd=10.0):
    """error(c, k) = a_k + offsets[c] + N(0, sd): a large per-pair term a_k shared by every class
    (what pairing cancels) plus independent class noise."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(POOL, generator=g, dtype=torch.float64) * common_sd
    eps = torch.randn(len(offsets), POOL, generator=g, dtype=torch.float64) * sd
    return lambda c, k: float(a[k] + offsets[c] + eps[c, k])


def test_t_quantile_matches_tables():
    for p, df, ref in [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.99, 5, 3.365), (0.95, 30, 1.697), (0.999, 3, 10.215)]:
        assert t_quantile(p, df) == pytest.approx(ref, abs=1e-3)
    with pytest.raises(GcplError, match="between 0.5 and 1"):
        t_quantile(1.0, 3)


def test_clearly_worse_class_dropped_after_expected_pairs():
    """Two classes, the second worse by one standard deviation of the paired difference: with
    the error rate 1% spent over the looks (look k at 0.61% / k^2, so q ~ 4.1 at the fifth look,
    n = 18 pairs), the drop needs about q^2 (sd/delta)^2 ~ 17 pairs. The common term (sd 10, 7x
    the difference's) does not slow it down: the test is paired."""
    drops, wrong = [], 0
    for seed in range(200):
        race = run_race(Race(2, range(POOL), torch.ones(POOL), 10_000, 0.99),
                        noisy_stream([0.0, 1.0], 1 / 2**0.5, seed))
        r = race.result()
        assert r.stop == "one left"
        wrong += r.pred != 0
        drops.append(r.pairs[1 - r.pred])
    assert wrong <= 4  # 99% confidence, with repeated looks: a few % at most
    assert 12 <= statistics.median(drops) <= 24
    assert max(drops) < 60


def test_deterministic_gap_drops_every_worse_class_after_the_first_round():
    offsets = [0.0] + [1.0 + 0.1 * i for i in range(49)]
    race = run_race(Race(50, range(POOL), torch.ones(POOL), 10_000, 0.999), lambda c, k: offsets[c] + (k % 7))
    r = race.result()
    assert (r.pred, r.calls, r.stop) == (0, 50 * 2, "one left")
    assert r.ranking[0] == 0 and sorted(r.ranking) == list(range(50))
    assert r.ranking[1:] == list(range(1, 50))  # dropped together: by mean error


def test_equal_classes_are_never_dropped_before_the_budget():
    """Classes 0 and 1 have identical errors, class 2 is clearly worse: 2 is dropped, 0 and 1
    race until the budget is spent, never beyond it."""
    for budget in (7, 60, 61, 333):
        g = torch.Generator().manual_seed(budget)
        base = torch.randn(POOL, generator=g, dtype=torch.float64)
        race = run_race(Race(3, range(POOL), torch.ones(POOL), budget, 0.9),
                        lambda c, k, base=base: float(base[k] + (5.0 if c == 2 else 0.0)))
        r = race.result()
        assert r.stop == "budget" and r.calls <= budget
        assert r.pred == 0 and r.ranking[:2] == [0, 1]
        assert budget - r.calls < 2  # it stops only when not even one more pair fits


def test_equal_distribution_classes_survive_a_long_race():
    """Statistically equal classes (same offset, independent noise) are rarely dropped."""
    survived = 0
    for seed in range(50):
        race = run_race(Race(4, range(POOL), torch.ones(POOL), 400, 0.99), noisy_stream([0.0] * 4, 1.0, seed))
        survived += len(race.alive)
    assert survived >= 0.9 * 4 * 50


def test_budget_is_never_exceeded_and_calls_are_counted():
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        C = int(torch.randint(2, 40, (1,), generator=g))
        budget = C + int(torch.randint(0, 400, (1,), generator=g))
        spread = float(torch.rand((), generator=g)) * 2
        asked = []
        stream = noisy_stream((torch.rand(C, generator=g) * spread).tolist(), 1.0, trial)
        race = Race(C, range(POOL), torch.ones(POOL), budget, 0.95)
        while (req := race.request()):
            asked += req
            race.feed(torch.tensor([stream(c, k) for c, k in req], dtype=torch.float64))
        r = race.result()
        assert r.calls == len(asked) <= budget
        assert len(set(asked)) == len(asked)  # no pair evaluated twice for a class
        assert sorted(r.ranking) == list(range(C))
    with pytest.raises(GcplError, match="less than one per class"):
        Race(10, range(POOL), torch.ones(POOL), 9, 0.99)


def test_pool_exhausted_and_order_and_weights_are_honoured():
    order = [5, 3, 1]
    w = torch.zeros(8)
    w[[5, 3, 1]] = torch.tensor([1.0, 0.5, 0.25])
    race = Race(2, order, w, 1000, 0.99)
    seen = []
    while (req := race.request()):
        seen += [k for c, k in req if c == 0]
        race.feed(torch.zeros(len(req), dtype=torch.float64))
    r = race.result()
    assert seen == order and r.stop == "pool" and r.calls == 6
    # the weighted mean: errors (1, 2, 4) on pairs 5, 3, 1 with weights (1, .5, .25)
    race = Race(2, order, w, 1000, 0.99)
    vals = {5: 1.0, 3: 2.0, 1: 4.0}
    run_race(race, lambda c, k: vals[k] + c)
    assert race.result().mean_error[0] == pytest.approx((1 + 1 + 1) / 1.75)


# --- the classifier ----------------------------------------------------------------------------


def _clf(offsets, **kw):
    bb = FakeBackbone(OffsetUNet(), torch.linspace(0.999, 0.01, 1000))
    return bb, DiffusionClassifier(bb, _embeds(offsets), ClassifyConfig(**kw), (4, 8, 8))


def test_racing_is_opt_in_and_races_with_li_et_al_pool():
    assert not ClassifyConfig().racing and ClassifyConfig().schedule(100) == ((2, 8, 32, 128), (10, 4, 2, 1))
    cfg = ClassifyConfig(spacing="race")
    assert cfg.racing and cfg.describe(100)["method"] == "race"
    assert not ClassifyConfig(spacing="li").racing and ClassifyConfig(spacing="li").schedule(102) == (
        (20, 50, 100, 500), (20, 10, 5, 1))
    assert ClassifyConfig(n_samples=(4, 8), keep=(2, 1)).describe(5)["spacing"] == "nested"
    # the same seed: racing's pool is Li et al.'s pool, pair for pair
    _, race = _clf([0.0, 1.0], spacing="race")
    _, li = _clf([0.0, 1.0], spacing="li")
    assert torch.equal(race.noise, li.noise) and torch.equal(race.ts, li.ts) and len(race.ts) == POOL


def test_racing_classifier_known_answer_budget_and_batching():
    offsets = [0.9, -0.5, 0.05, 1.5, -0.2, 0.7, 0.3, -0.35]
    bb, clf = _clf(offsets, budget=100, batch=16, spacing="race")
    x = torch.randn(3, 4, 8, 8)
    together = clf.score(x)
    assert bb.unet.calls == sum(r.unet_calls for r in together)
    for r in together:
        assert r.pred == 2 and r.unet_calls <= 100 and r.stop in ("one left", "budget")
        assert sorted(r.ranking) == list(range(8)) and r.ranking[0] == 2
    alone = [clf.score(x[i : i + 1])[0] for i in range(3)]
    for a, b in zip(together, alone):
        assert (a.ranking, a.unet_calls, a.pairs) == (b.ranking, b.unet_calls, b.pairs)
    with pytest.raises(GcplError, match="less than one UNet call per class"):
        _clf(offsets, budget=5, spacing="race")


# --- evidence from the support set -------------------------------------------------------------


class BandClassifier:
    """A stand-in classifier whose errors separate the true class (encoded in the latent's value)
    from the others only at timesteps 300..500: error = |noise|^2 mean + 1 per wrong class there."""

    def __init__(self, n_classes):
        self.n_classes = n_classes
        self.bb = FakeBackbone(OffsetUNet(), torch.linspace(0.999, 0.01, 1000))
        self.seen = []

    def errors_at(self, x0, classes, noise, ts):
        self.seen.append(x0[:, 0, 0, 0].clone())
        label = x0[:, 0, 0, 0].round().long()
        band = ((ts >= 300) & (ts <= 500)).double()
        return noise.double().pow(2).flatten(1).mean(1) * 0.1 + band * (classes != label).double()


def test_learned_evidence_puts_the_separating_timesteps_first():
    clf = BandClassifier(5)
    x0 = torch.arange(5).double().repeat_interleave(2)[:, None, None, None].expand(10, 4, 8, 8).float()
    ev, calls = learn_evidence(clf, x0, torch.arange(5).repeat_interleave(2), grid=20, rivals=3)
    assert calls == 10 * 4 * 20
    mu = dict(zip(ev.timesteps, ev.margin_mean))
    assert all(abs(m - 1) < 0.2 for t, m in mu.items() if 300 <= t <= 500)
    assert all(abs(m) < 0.2 for t, m in mu.items() if t < 250 or t > 550)
    ts = torch.arange(25, 1000, 50)
    order, w = ev.pool_plan(ts, list(range(len(ts))))
    assert {int(ts[k]) for k in order[:4]} <= set(range(300, 501))
    assert w.max() == 1 and all(w[k] == 0 for k in range(len(ts)) if k not in order)


def _run_folder(tmp_path, n_classes=3, shots=3, tests=2):
    """A run folder: tokens + split.json whose train list holds real images and whose test list
    holds files that are NOT images (reading one would fail)."""
    from PIL import Image

    run = tmp_path / "run"
    (run / "embeddings").mkdir(parents=True)
    classes = [f"c{i}" for i in range(n_classes)]
    (run / "tokens.json").write_text(json.dumps({"template": "{}", "init_word": "x", "classes": [
        {"class_name": c, "token": f"<{c}>", "file": f"embeddings/{c}.safetensors"} for c in classes]}))
    train, test = [], []
    for label, c in enumerate(classes):
        for j in range(shots):
            p = tmp_path / "img" / f"{c}_{j}.png"
            p.parent.mkdir(exist_ok=True)
            Image.new("RGB", (16, 16), (40 * label, 10 * j, 0)).save(p)
            train.append({"path": str(p), "label": label, "class_name": c})
        for j in range(tests):
            p = tmp_path / "img" / f"{c}_test{j}.png"
            p.write_bytes(b"not an image")
            test.append({"path": str(p), "label": label, "class_name": c})
    (run / "split.json").write_text(json.dumps({"classes": classes, "train": train, "test": test}))
    return run, classes, train, test


def test_evidence_reads_support_images_only_and_is_reused(tmp_path, monkeypatch):
    import gcpl.evidence
    from gcpl.runs import TrainedRun

    folder, classes, train, test = _run_folder(tmp_path)
    run = TrainedRun.open(folder)
    read = []
    real = gcpl.evidence.encode_files

    def spy(vae, paths, size, **kw):
        read.extend(paths)
        return real(vae, paths, size, **kw)

    monkeypatch.setattr(gcpl.evidence, "encode_files", spy)

    class TinyVAE(torch.nn.Module):
        def encode(self, x):
            from types import SimpleNamespace

            lat = torch.nn.functional.avg_pool2d(x, 2)[:, :1].repeat(1, 4, 1, 1)
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=lat, std=torch.ones_like(lat)))

    bb, clf = _clf([0.0, 0.4, 0.8], evidence_shots=2, spacing="race")
    tiny = TinyVAE()
    tiny.register_parameter("p", torch.nn.Parameter(torch.zeros(())))
    bb.vae, bb.model_id, bb.scaling_factor, bb.resolution = tiny, "fake", 1.0, 16
    ev = load_or_learn_evidence(run, clf, classes, size=16)
    train_paths = {r["path"] for r in train}
    assert read and set(read) <= train_paths and not set(read) & {r["path"] for r in test}
    assert len(read) == 3 * 2  # the first 2 shots of each class
    stored = json.loads((folder / "classifier_evidence.json").read_text())
    assert len(stored["evidence"]["info"]["support_images"]) == 6 and stored["key"]["shots"] == 2
    read.clear()
    again = load_or_learn_evidence(run, clf, classes, size=16)  # reused: nothing read or computed
    assert not read and again.margin_mean == ev.margin_mean
    clf.use_evidence(again)
    assert len(clf.race_order) <= POOL and clf.race_weights.max() == 1
    clf.cfg.evidence_shots = 3  # other settings: learned anew
    load_or_learn_evidence(run, clf, classes, size=16)
    assert len(read) == 9 and set(read) <= train_paths
    clf.cfg.evidence_shots = 0
    assert load_or_learn_evidence(run, clf, classes) is None


def test_uninformative_evidence_falls_back_to_the_even_order():
    ev = Evidence([100, 500, 900], [-1.0, 0.0, -0.5], [1.0, 1.0, 1.0])
    order, w = ev.pool_plan(torch.tensor([100, 300, 500, 700]), [2, 0, 3, 1])
    assert order == [2, 0, 3, 1] and torch.equal(w, torch.ones(4, dtype=torch.float64))


def test_experiment_passes_the_classifier_and_its_summary_names_it():
    from pathlib import Path

    from gcpl.classify import ClassifyConfig, default_budget
    from gcpl.experiment import ExperimentConfig, Run, method_run
    from gcpl.methods import RunSettings
    from gcpl.reports.experiment import classifier_note

    for spacing in ("race", "li", "nested"):
        cfg = ExperimentConfig(out="x", data="s.json", classify=ClassifyConfig(spacing=spacing),
                               run=RunSettings(model="tiny"))
        clf = method_run(cfg, Run("gcpl", 4, 1), Path("s.json")).classify
        assert clf.spacing == spacing and clf.racing == (spacing == "race") and clf.seed == 1
    # the paper-reproduction command uses the paper's classifier unless told otherwise
    assert ExperimentConfig(out="x", data="s.json").classify.spacing == "li"
    assert classifier_note({}).startswith("gcpl's default: nested stages")
    note = classifier_note({"spacing": "race"})
    per_class = default_budget(1) - default_budget(0)
    assert note.startswith("racing (experimental)")
    assert f"at most {per_class} UNet calls per class + {default_budget(0)}" in note
    assert "confidence 0.99" in note and "2 support images" in note
    assert classifier_note({"spacing": "li"}).startswith("Li et al.'s adaptive schedule")
    stages = classifier_note({"n_samples": [8, 32], "keep": [4, 1]})
    assert stages == "fixed stages (nested spacing): n_samples [8, 32], keep [4, 1]"
