"""The experiment runner (methods x shots x seeds) and its summary, on the tiny random model:
the grid completes, the tables agree with the runs' results.json, a killed run resumes without
redoing finished ones, shards split the grid exactly, and `gcpl report` rebuilds the summary."""

from __future__ import annotations

import csv
import json
import statistics

import numpy as np
import pytest
from conftest import make_class_folder
from test_clip_fixtures import tiny_clip_dir  # noqa: F401  (a fixture)

from gcpl.classify import ClassifyConfig
from gcpl.errors import GcplError
from gcpl.experiment import ExperimentConfig, Run, plan_runs, run_experiment, shard_runs
from gcpl.io import read_jsonl, write_json
from gcpl.methods import RunSettings
from gcpl.reports.experiment import summarize_experiment
from gcpl.trainer import TrainConfig

SHOTS, SEEDS = (1, 2), (1, 2)
ALL_RUNS = {f"zeroshot/shots0/seed{s}" for s in SEEDS} | {
    f"{m}/shots{k}/seed{s}" for m in ("gcpl", "comple") for k in SHOTS for s in SEEDS}


def _cli_main():
    from gcpl.cli import main

    return main


def _cfg(model, root, out, **kw) -> ExperimentConfig:
    base = dict(out=str(out), dataset="folder", root=str(root), test_fraction=0.4, shots=SHOTS, seeds=SEEDS,
                run=RunSettings(model=str(model), device="cpu", limit=4),
                gcpl=TrainConfig(steps=2, batch=2, checkpoint_every=1),
                comple=TrainConfig(method="comple", steps=2, batch=2, checkpoint_every=1),
                classify=ClassifyConfig(n_samples=(2,), keep=(1,), spacing="nested"))
    return ExperimentConfig(**{**base, **kw})


def _cli_args(model, root, out, *extra):
    return ["experiment", "--dataset", "folder", "--root", str(root), "--test-fraction", "0.4", "--out", str(out),
            "--shots", "1,2", "--seeds", "1,2", "--model", str(model), "--device", "cpu", "--gcpl-steps", "2",
            "--comple-steps", "2", "--gcpl-batch", "2", "--comple-batch", "2", "--classify-n-samples", "2",
            "--classify-keep", "1", "--gcpl-checkpoint-every", "1", "--comple-checkpoint-every", "1", "--limit", "4",
            "-q", *extra]


def _run_names(out):
    return {str(p.parent.relative_to(out)) for p in out.glob("*/shots*/seed*/eval")}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are far too small for 2 threads to pay: on 2 busy shared cores, intra-op
    threads spin against other processes (measured: the grid takes 4 s on 1 thread, 26 s on 2)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def grid(one_thread, tiny_model_dir, tmp_path_factory):
    """The full 3 methods x 2 shots x 2 seeds grid, run once for the module (backbone loaded once)."""
    from gcpl.backbone import load_backbone

    base = tmp_path_factory.mktemp("exp")
    root = make_class_folder(base / "data", per_class=5, size=16)
    bb = load_backbone(str(tiny_model_dir), device="cpu")
    cfg = _cfg(tiny_model_dir, root, base / "out")
    out = run_experiment(cfg, progress=False, backbone=bb)
    return {"cfg": cfg, "out": out, "root": root, "bb": bb, "model": tiny_model_dir,
            "md": (out / "summary.md").read_text(), "csv": (out / "summary.csv").read_text()}


def _results(out):
    return {name: json.loads((out / name / "eval" / "results.json").read_text()) for name in ALL_RUNS}


# --- the grid ------------------------------------------------------------------------------------


def test_grid_writes_every_run_and_the_summary(grid):
    out = grid["out"]
    assert _run_names(out) == ALL_RUNS
    for name in ALL_RUNS:
        ev = out / name / "eval"
        for f in ("config.json", "results.json", "predictions.jsonl", "per_class.md", "confusion.png"):
            assert (ev / f).exists(), f"{name}/eval/{f}"
        cfg = json.loads((ev / "config.json").read_text())
        method, shots, seed = name.split("/")
        assert cfg["settings"]["classify"]["seed"] == int(seed[4:])  # eval noise follows the run's seed
        if method == "zeroshot":
            assert not (out / name / "train").exists() and cfg["template"] == "A photo of {}."
        else:
            tr = json.loads((out / name / "train" / "config.json").read_text())
            assert tr["settings"]["shots"] == int(shots[5:]) and tr["settings"]["train"]["method"] == method
            assert tr["settings"]["train"]["seed"] == int(seed[4:])
            # the paper preset: the released code's recipe, resolved and recorded in the run
            want = {"gcpl": (2e-3, "squash"), "comple": (1e-3, "squash")}[method]
            assert (tr["settings"]["train"]["lr"], tr["settings"]["train"]["train_resize"]) == want
            assert len(json.loads((out / name / "train" / "split.json").read_text())["train"]) == 3 * int(shots[5:])
            assert (out / name / "train" / "tokens.json").exists()
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["grid"] == {"methods": ["zeroshot", "gcpl", "comple"], "shots": [1, 2], "seeds": [1, 2]}
    assert exp["settings"]["gcpl"]["steps"] == 2 and exp["settings"]["template"] == "A photo of {}."
    assert exp["versions"]["torch"] and (out / "gcpl_split_folder_seed0_test0.4.json").exists()
    png = out / "accuracy_vs_shots.png"
    assert png.exists() and png.stat().st_size > 5000
    assert "Finished runs: 10 of 10 planned." in grid["md"]
    assert "- training recipe: paper (the authors' released code" in grid["md"]


def test_table_is_mean_and_std_of_the_runs(grid):
    out, res = grid["out"], _results(grid["out"])
    rows = list(csv.DictReader(grid["csv"].splitlines()))
    assert [(r["method"], r["shots"]) for r in rows] == [
        ("zeroshot", "0"), ("gcpl", "1"), ("gcpl", "2"), ("comple", "1"), ("comple", "2")]
    md = grid["md"]
    for r in rows:
        k = r["shots"]
        runs = [res[f"{r['method']}/shots{k}/seed{s}"] for s in SEEDS]
        assert r["n_seeds"] == "2" and r["seeds"] == "1;2" and r["test_images"] == "4"
        for key, stem in (("top1", "top1"), ("mean_per_class_accuracy", "mean_per_class_acc")):
            v = np.array([100 * x[key] for x in runs])
            assert float(r[f"{stem}_mean"]) == pytest.approx(v.mean(), abs=1e-5)
            assert float(r[f"{stem}_std"]) == pytest.approx(v.std(ddof=1), abs=1e-5)
        t = np.array([100 * x["top1"] for x in runs])
        cell = f"{t.mean():.2f} ± {t.std(ddof=1):.2f}"
        label = {"zeroshot": "Zero-shot", "gcpl": "GCPL", "comple": "CoMPLe"}[r["method"]]
        assert f"| {label} | {k} | 2 | {cell} |" in md  # long table: method, shots, seeds, top-1, ...
    # Table 2 layout: one row per method, one column per shots value; zero-shot repeated
    assert "| method | 1-shot | 2-shot |" in md
    zs = np.array([100 * res[f"zeroshot/shots0/seed{s}"]["top1"] for s in SEEDS])
    z = f"{zs.mean():.2f} ± {zs.std(ddof=1):.2f}"
    assert f"| Zero-shot † | {z} | {z} |" in md
    g = [np.array([100 * res[f"gcpl/shots{k}/seed{s}"]["top1"] for s in SEEDS]) for k in SHOTS]
    assert "| GCPL | " + " | ".join(f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" for a in g) + " |" in md
    # per-class table of one run agrees with its confusion matrix
    m = res["gcpl/shots1/seed1"]
    pc = (out / "gcpl/shots1/seed1/eval/per_class.md").read_text()
    for i, c in enumerate(m["classes"]):
        assert f"| {c} | {sum(m['confusion_matrix'][i])} | {m['confusion_matrix'][i][i]} |" in pc


def test_resume_after_a_kill_redoes_only_the_unfinished(grid, monkeypatch):
    from gcpl.jobs import evaluate as eval_job
    from gcpl.jobs import train as train_job

    out = grid["out"]
    killed, untrained = out / "gcpl/shots2/seed1", out / "comple/shots1/seed2"
    before = read_jsonl(killed / "eval/predictions.jsonl")
    # a kill midway through an eval: no results.json, two lines and a torn third
    lines = (killed / "eval/predictions.jsonl").read_text().splitlines()
    (killed / "eval/predictions.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    (killed / "eval/results.json").unlink()
    # a kill after training's last checkpoint but before its tokens were written
    (untrained / "train/tokens.json").unlink()
    for f in (untrained / "eval").iterdir():
        f.unlink()
    others = {p: p.stat().st_mtime_ns for p in out.glob("*/shots*/seed*/*/*.json")
              if killed not in p.parents and untrained not in p.parents}
    killed_train = {p: p.stat().st_mtime_ns for p in (killed / "train").rglob("*") if p.is_file()}
    calls = {"train": [], "evaluate": []}
    real_train, real_eval = train_job.train, eval_job.evaluate
    monkeypatch.setattr(train_job, "train", lambda job, **kw: calls["train"].append(job.out) or real_train(job, **kw))
    monkeypatch.setattr(eval_job, "evaluate",
                        lambda job, **kw: calls["evaluate"].append(job.out) or real_eval(job, **kw))

    run_experiment(grid["cfg"], progress=False, backbone=grid["bb"])
    # the killed run's training was finished: checked, not redone (its files untouched)
    assert calls["train"] == [str(killed / "train"), str(untrained / "train")]
    assert {p: p.stat().st_mtime_ns for p in (killed / "train").rglob("*") if p.is_file()} == killed_train
    assert sorted(calls["evaluate"]) == sorted([str(killed / "eval"), str(untrained / "eval")])
    assert all(p.stat().st_mtime_ns == t for p, t in others.items())  # finished runs untouched
    after = read_jsonl(killed / "eval/predictions.jsonl")
    assert sorted(r["index"] for r in after) == list(range(4))
    assert {r["index"]: r["pred"] for r in after} == {r["index"]: r["pred"] for r in before}
    assert (out / "summary.md").read_text() == grid["md"]
    assert (out / "summary.csv").read_text() == grid["csv"]

    # nothing left to do: a rerun neither trains nor evaluates
    calls["train"].clear(), calls["evaluate"].clear()
    run_experiment(grid["cfg"], progress=False, backbone=grid["bb"])
    assert calls == {"train": [], "evaluate": []}


def test_rerun_with_other_settings_is_refused(grid):
    exp = (grid["out"] / "experiment.json").read_text()
    cfg = _cfg(grid["model"], grid["root"], grid["out"], gcpl=TrainConfig(steps=3, batch=2, checkpoint_every=1))
    with pytest.raises(GcplError, match=r"other settings \(gcpl.steps: 2 -> 3\)") as e:
        run_experiment(cfg, progress=False, backbone=grid["bb"])
    assert "\n" not in str(e.value)
    assert (grid["out"] / "experiment.json").read_text() == exp


def test_an_experiment_folder_of_the_previous_release_resumes(grid, capsys):
    """experiment.json written with the flat settings of the previous release (steps_gcpl, n_samples,
    ...), rerun with the old option names (a note each): nothing differs, nothing is redone."""
    from gcpl.experiment import _current_keys  # noqa: F401  (the migration under test)

    path = grid["out"] / "experiment.json"
    exp = json.loads(path.read_text())
    new = exp["settings"]
    old = {k: v for k, v in new.items() if not isinstance(v, dict)}
    old.update(steps_gcpl=2, steps_comple=2, lr_gcpl=None, lr_comple=None, batch_gcpl=2, batch_comple=2, lam=1e-3,
               n_samples=[2], keep=[1], spacing="nested", model=new["run"]["model"], clip_model=None, resolution=None,
               allow_fewer=False, limit=4, dtype=None)
    path.write_text(json.dumps({**exp, "settings": old}))
    try:
        args = ["experiment", "--dataset", "folder", "--root", str(grid["root"]), "--test-fraction", "0.4",
                "--out", str(grid["out"]), "--shots", "1,2", "--seeds", "1,2", "--model", str(grid["model"]),
                "--device", "cpu", "--steps-gcpl", "2", "--steps-comple", "2", "--batch-gcpl", "2",
                "--batch-comple", "2", "--n-samples", "2", "--keep", "1", "--spacing", "nested",
                "--checkpoint-every", "1", "--limit", "4", "-q"]
        assert _cli_main()(args) == 0
        err = capsys.readouterr().err
        assert "--steps-gcpl is deprecated and will be removed; use --gcpl-steps" in err
        assert "--checkpoint-every is deprecated and will be removed; use --gcpl-checkpoint-every and " \
               "--comple-checkpoint-every" in err
        assert json.loads(path.read_text())["settings"] == new  # rewritten in today's form
    finally:
        path.write_text(json.dumps(exp))


def test_report_rebuilds_the_summary(grid, capsys):
    out = grid["out"]
    for f in ("summary.md", "summary.csv", "accuracy_vs_shots.png", "gcpl/shots1/seed2/eval/per_class.md"):
        (out / f).unlink()
    assert _cli_main()(["report", str(out)]) == 0
    assert (out / "summary.md").read_text() == grid["md"]
    assert (out / "summary.csv").read_text() == grid["csv"]
    assert (out / "accuracy_vs_shots.png").exists() and (out / "gcpl/shots1/seed2/eval/per_class.md").exists()
    assert "10 finished runs" in capsys.readouterr().out


# --- sharding --------------------------------------------------------------------------------------


def test_shards_partition_the_grid():
    cfg = ExperimentConfig(out="x", data="s.json", shots=(1, 4, 8, 16), seeds=(1, 2, 3))
    plan = plan_runs(cfg)
    assert len(plan) == 3 + 2 * 4 * 3 and plan[0] == Run("zeroshot", 0, 1) and plan[-1] == Run("comple", 16, 3)
    for n in (1, 2, 3, 5, 40):
        parts = [shard_runs(plan, (i, n)) for i in range(n)]
        assert sorted(sum(parts, []), key=plan.index) == plan
        assert sum(len(p) for p in parts) == len(plan)  # no overlap
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_two_shards_through_the_cli_give_the_unsharded_grid(grid, tmp_path, monkeypatch):
    import gcpl.experiment

    loads = []
    real = gcpl.experiment.load_backbone
    monkeypatch.setattr(gcpl.experiment, "load_backbone", lambda *a, **k: loads.append(a) or real(*a, **k))
    main, out = _cli_main(), tmp_path / "sharded"
    args = _cli_args(grid["model"], grid["root"], out)
    assert main([*args, "--shard", "0/2"]) == 0
    first = _run_names(out)
    plan = plan_runs(grid["cfg"])
    assert first == {r.name for r in shard_runs(plan, (0, 2))} and len(first) == 5
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/shots*/seed*/eval/results.json")}
    assert main([*args, "--shard", "1/2"]) == 0
    second = _run_names(out) - first
    assert second == {r.name for r in shard_runs(plan, (1, 2))} and not first & second
    assert first | second == {r.name for r in plan} == ALL_RUNS == _run_names(grid["out"])
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # shard 1 left shard 0's runs alone
    assert len(loads) == 2  # the backbone is loaded once per invocation
    assert (out / "summary.csv").read_text() == grid["csv"]  # the same numbers as the unsharded run


# --- bad input: one line, exit code 2 -----------------------------------------------------------


@pytest.mark.parametrize("extra, msg", [
    (["--shard", "2/2"], "0 <= i < n"),
    (["--methods", "gcpl,clap"], "use some of zeroshot, gcpl, comple"),
    (["--shots", "0,4"], "each >= 1"),
    (["--template", "a photo"], "exactly one {}"),
])
def test_bad_experiment_arguments(tmp_path, capsys, extra, msg):
    root = make_class_folder(tmp_path / "d", per_class=5, size=16)
    assert _cli_main()(_cli_args("tiny", root, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gcpl experiment: error: ") and msg in err[-1]


def test_data_must_be_a_split_file(tmp_path, capsys):
    root = make_class_folder(tmp_path / "d", per_class=2, size=16)
    main = _cli_main()
    assert main(["experiment", "--data", str(root), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "--dataset folder" in err
    assert main(["experiment", "--root", str(root), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "--root needs --dataset" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "d")]) == 2
    assert "holds no experiment" in capsys.readouterr().err


# --- the summary alone, on made-up results ------------------------------------------------------------


def _fake_run(out, method, shots, seed, top1, mpca, n=10):
    cm = [[int(round(n * top1)), n - int(round(n * top1))], [0, 0]]
    write_json(out / method / f"shots{shots}" / f"seed{seed}" / "eval" / "results.json", {
        "n_images": n, "top1": top1, "top5": 1.0, "mean_per_class_accuracy": mpca, "macro_f1": 0.5,
        "per_class_accuracy": [top1, 0.0], "confusion_matrix": cm, "classes": ["a b", "c"], "skipped_images": 0})


def test_summary_of_made_up_runs(tmp_path):
    out = tmp_path / "exp"
    write_json(out / "experiment.json", {"settings": {"dataset": "cars", "steps_gcpl": 500, "steps_comple": 4000},
                                         "grid": {"methods": ["zeroshot", "gcpl"], "shots": [1, 4], "seeds": [1, 2, 3]}})
    for s, v in zip((1, 2, 3), (0.3, 0.4, 0.5)):
        _fake_run(out, "zeroshot", 0, s, v, v - 0.1)
        _fake_run(out, "gcpl", 4, s, v + 0.2, v + 0.1)
    _fake_run(out, "gcpl", 1, 1, 0.5, 0.5)  # one seed only; seeds 2 and 3 of 1-shot unfinished
    (out / "gcpl/shots1/seed2/eval").mkdir(parents=True)
    s = summarize_experiment(out)
    assert s["missing"] == ["gcpl/shots1/seed2", "gcpl/shots1/seed3"]
    rows = {(r["method"], r["shots"]): r for r in s["rows"]}
    assert rows[("gcpl", 4)]["top1_mean"] == pytest.approx(60.0)
    assert rows[("gcpl", 4)]["top1_std"] == pytest.approx(statistics.stdev([50.0, 60.0, 70.0]))
    assert rows[("gcpl", 1)]["top1_std"] is None and rows[("gcpl", 1)]["n_seeds"] == 1
    md = (out / "summary.md").read_text()
    assert "| Zero-shot † | 40.00 ± 10.00 | 40.00 ± 10.00 |" in md
    assert "| GCPL | 50.00 | 60.00 ± 10.00 |" in md
    assert "Finished runs: 7 of 9 planned." in md and "gcpl/shots1/seed2, gcpl/shots1/seed3" in md
    rows_csv = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    one = next(r for r in rows_csv if r["shots"] == "1")
    assert one["top1_mean"] == "50.000000" and one["top1_std"] == ""
    assert (out / "accuracy_vs_shots.png").stat().st_size > 5000
    pc = (out / "gcpl/shots4/seed1/eval/per_class.md").read_text()
    assert "| a b | 10 | 5 | 50.0% | c (5) |" in pc


def test_bundled_model_fractal_grid_resumes_to_the_same_summary(tmp_path):
    """Issue acceptance: the grid (2 shots x 2 seeds x 3 methods) on the bundled model and the
    fractal generator, through the CLI; a run lost midway is redone and the summary is identical."""
    from gcpl.data.fractals import generate_benchmark

    data = generate_benchmark(tmp_path / "fractals", n_classes=3, per_class=6, seed=0)
    out = tmp_path / "exp"
    main = _cli_main()
    args = ["experiment", "--dataset", "fractals", "--root", str(data), "--out", str(out), "--shots", "1,2",
            "--seeds", "1,2", "--model", "tiny", "--device", "cpu", "--gcpl-steps", "2", "--comple-steps", "2",
            "--comple-batch", "2", "--classify-n-samples", "2", "--classify-keep", "1", "--limit", "4", "-q"]
    assert main(args) == 0
    assert _run_names(out) == ALL_RUNS
    files = {f: (out / f).read_bytes() for f in ("summary.md", "summary.csv")}
    assert (out / "accuracy_vs_shots.png").exists()
    # a run killed midway: its results and part of its predictions gone
    lost = out / "gcpl" / "shots2" / "seed1" / "eval"
    (lost / "results.json").unlink()
    lines = (lost / "predictions.jsonl").read_text().splitlines()
    (lost / "predictions.jsonl").write_text(lines[0] + "\n")
    assert main(args) == 0
    assert {f: (out / f).read_bytes() for f in files} == files


# --- CLIP methods in the same grid ------------------------------------------------------------------


def test_grid_with_two_clip_methods_resumes_and_shards_to_the_same_summary(tmp_path, tiny_clip_dir):  # noqa: F811
    """Issue 12: CLIP competitors run in the experiment grid like GCPL (same split, shots, seeds,
    results files); a run lost midway is redone to the same summary, and two shards give one run's."""
    root = make_class_folder(tmp_path / "data", per_class=5, size=16)
    main = _cli_main()

    def args(out, *extra):
        return ["experiment", "--dataset", "folder", "--root", str(root), "--test-fraction", "0.4", "--out", str(out),
                "--methods", "linear-probe,tip-adapter", "--shots", "1,2", "--seeds", "1,2", "--clip-model",
                str(tiny_clip_dir), "--device", "cpu", "--limit", "4", "-q", *extra]

    out = tmp_path / "one"
    assert main(args(out)) == 0
    runs = {f"{m}/shots{k}/seed{s}" for m in ("linear-probe", "tip-adapter") for k in (1, 2) for s in (1, 2)}
    assert _run_names(out) == runs
    summary = (out / "summary.csv").read_text()
    assert "linear-probe,1," in summary and "tip-adapter,2," in summary
    lost = out / "tip-adapter" / "shots2" / "seed1" / "eval"
    (lost / "results.json").unlink()
    lines = (lost / "predictions.jsonl").read_text().splitlines()
    (lost / "predictions.jsonl").write_text(lines[0] + "\n" + lines[1][:10])
    assert main(args(out)) == 0
    assert (out / "summary.csv").read_text() == summary
    sharded = tmp_path / "sharded"
    assert main(args(sharded, "--shard", "0/2")) == 0 and main(args(sharded, "--shard", "1/2")) == 0
    assert _run_names(sharded) == runs
    assert (sharded / "summary.csv").read_text() == summary
