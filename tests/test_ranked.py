"""Ranked stages (gcpl's default classifier): strata visited in the order the support set ranks
them, pairs weighted by its evidence; known answers on synthetic error streams."""

from __future__ import annotations

import torch
from test_classify import _clf

from gcpl.classify import (
    POOL,
    STRATA,
    ClassifyConfig,
    default_schedule,
    ranked_schedule,
    stage_calls,
    stage_subset,
    strata_order,
    timestep_pool,
)
from gcpl.evidence import Evidence


def test_strata_order_visits_each_stratum_once_per_round_in_the_ranking():
    ranking = [7, 3, 12]
    order = strata_order(POOL, STRATA, ranking)
    s = POOL // STRATA
    assert order[:3] == [7 * s + s // 2, 3 * s + s // 2, 12 * s + s // 2]  # the centres, best first
    assert [k // s for k in order] == ranking * s  # round by round, only ranked strata
    assert len(set(order)) == len(order) == 3 * s
    # the first round of all strata is stage_subset's evenly spaced members (the replay's members)
    assert sorted(strata_order(POOL, STRATA, list(range(STRATA)))[:STRATA]) == stage_subset(POOL, STRATA)


def test_evidence_ranks_strata_by_snr_and_weights_by_the_matched_filter():
    ev = Evidence(timesteps=[100, 500, 900], margin_mean=[1.0, 2.0, -1.0], margin_std=[1.0, 1.0, 1.0])
    ts = timestep_pool(POOL, 1000)
    ranking = ev.strata_ranking(ts, STRATA)
    centres = ts[torch.tensor(stage_subset(POOL, STRATA))]
    snr = [float(ev._interp([1.0, 2.0, -1.0], centres[j : j + 1])) for j in range(STRATA)]
    assert ranking[0] == max(range(STRATA), key=lambda j: snr[j])  # the stratum at t = 500 first
    assert all(snr[j] > 0 for j in ranking) and len(ranking) == sum(v > 0 for v in snr)  # no useless stratum
    assert all(snr[a] >= snr[b] for a, b in zip(ranking, ranking[1:]))
    w = ev.pool_weights(ts)
    assert w.max() == 1 and float(w[ts.tolist().index(499)]) == 1.0 and float(w[-1]) == 0.0


def test_ranked_stages_known_answer_calls_and_order():
    """OffsetUNet: class c's error is about 1 + c^2 at every pair: the class nearest 0 wins, the calls
    are the stages' count, and the first look uses the best-ranked strata (equal weights)."""
    offsets = [0.1 * i - 3.0 for i in range(60)]  # class 30 has offset 0
    bb, clf = _clf(offsets, spacing="ranked")
    n, k = clf.n_samples, clf.keep
    assert (n, k) == ranked_schedule(60)
    (res,) = clf.score(torch.randn(1, 4, 8, 8))
    assert res.pred == 30 and res.unet_calls == bb.unet.calls == stage_calls(n, k, 60)
    ev = Evidence(timesteps=[100, 500, 900], margin_mean=[1.0, 2.0, 0.5], margin_std=[1.0, 1.0, 1.0])
    clf.use_evidence(ev)
    assert torch.equal(clf.weights, torch.ones(POOL, dtype=torch.float64))
    x = torch.randn(1, 4, 8, 8)
    (res,) = clf.score(x)
    errs = clf.unet_errors(x, [(0, 30, kk) for kk in clf._order[: n[-1]]]).double()
    assert res.pred == 30 and abs(res.mean_error[30] - float(errs.mean())) < 1e-9
    first = [kk // (POOL // STRATA) for kk in clf._order[: n[0]]]
    assert first == ev.strata_ranking(clf.ts, STRATA)[: n[0]]


def test_ranked_schedule_never_costs_more_than_the_nested_default():
    for C in (2, 3, 5, 10, 20, 30, 60, 100, 102, 196, 400):
        n, k = ranked_schedule(C)
        assert k[-1] == 1 and list(n) == sorted(set(n))
        assert stage_calls(n, k, C) <= stage_calls(*default_schedule(C), C), C


def test_the_plan_is_fixed_before_any_test_image_is_scored():
    """Nothing a test image does changes the classifier's order, weights or stages: the plan comes
    from the class count and the support evidence only."""
    bb, clf = _clf([0.1 * i for i in range(20)], spacing="ranked")
    clf.use_evidence(Evidence(timesteps=[100, 500, 900], margin_mean=[1.0, 2.0, 0.5], margin_std=[1.0, 1.0, 1.0]))
    plan = (list(clf._order), clf.weights.clone(), clf.n_samples, clf.keep)
    clf.score(torch.randn(3, 4, 8, 8))
    clf.score(10 * torch.randn(2, 4, 8, 8))
    assert plan[0] == clf._order and torch.equal(plan[1], clf.weights) and plan[2:] == (clf.n_samples, clf.keep)


def test_without_evidence_ranked_strata_are_evenly_spread():
    """Zero-shot (no support set): the strata in van der Corput order, the first look spread over t."""
    from gcpl.classify import nested_order

    _, clf = _clf([0.0, 0.5], spacing="ranked")
    clf.use_evidence(None)
    s = POOL // STRATA
    assert [k // s for k in clf._order[:STRATA]] == nested_order(STRATA)
    assert ClassifyConfig(spacing="ranked").describe(10)["strata"] == STRATA


def test_auto_is_ranked_for_learned_tokens_and_nested_otherwise():
    auto = ClassifyConfig()
    assert auto.spacing == "auto"
    assert auto.resolved(trained=True).spacing == "ranked"
    assert auto.resolved(trained=False).spacing == "nested"  # zero-shot: no support set to rank with
    staged = ClassifyConfig(n_samples=(4, 8), keep=(3, 1))
    assert staged.resolved(trained=True).spacing == "nested"  # explicit stages keep their meaning
    assert ClassifyConfig(spacing="li").resolved(trained=True).spacing == "li"


def test_eval_of_a_trained_run_uses_ranked_stages_by_default(tiny_run, tiny_model_dir, tmp_path):
    import json

    from gcpl.cli import main

    out = tmp_path / "e"
    assert main(["eval", str(tiny_run.parent / "data"), "--run-dir", str(tiny_run), "--out", str(out),
                 "--model", str(tiny_model_dir), "--evidence-shots", "1"]) == 0
    schedule = json.loads((out / "config.json").read_text())["schedule"]
    assert schedule["spacing"] == "ranked" and (schedule["n_samples"], schedule["keep"]) == (
        list(ranked_schedule(3)[0]), list(ranked_schedule(3)[1]))
    assert "learned on the support set" in schedule["evidence"] and (tiny_run / "classifier_evidence.json").exists()
