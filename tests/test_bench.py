"""Smoke tests of the benchmarks in bench/: each runs end to end at toy size and returns sane numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"gcpl_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_speed_toy(tiny_model_dir, capsys):
    ts = _load("train_speed")
    r = ts.main(["--model", str(tiny_model_dir), "--classes", "2", "--shots", "2", "--steps", "2", "--batch", "2",
                 "--accum", "2"])
    assert _last_json(capsys)["ratio"] == pytest.approx(r["ratio"])
    # the same image-steps per class for both: steps x batch x classes
    assert r["ours"]["image_steps"] == r["reference"]["image_steps"] == 8
    assert r["ratio"] > 0 and r["ours"]["image_steps_per_s"] > 0


def test_train_speed_medians_of_two_repeats_print(tiny_model_dir, capsys):
    """--repeats 2: medians of timings (a float between the two runs), counts stay integers."""
    ts = _load("train_speed")
    r = ts.main(["--model", str(tiny_model_dir), "--classes", "2", "--shots", "2", "--steps", "1", "--batch", "2",
                 "--accum", "2", "--repeats", "2"])
    runs = [x["image_steps_per_s"] for x in r["ours_runs"]]
    assert len(runs) == 2 and r["ours"]["image_steps_per_s"] == pytest.approx(sum(runs) / 2)
    assert r["ours"]["image_steps"] == 4 and isinstance(r["ours"]["image_steps"], int)
    assert "ratio ours / reference" in capsys.readouterr().out


def test_reference_only_trains_the_placeholder_row(backbone):
    """The reference loop keeps every other embedding row bit-identical, as diffusers' script does."""
    import torch

    common = _load("_common")
    pixels = torch.rand(2, 3, backbone.resolution, backbone.resolution) * 2 - 1
    ref = common.ReferenceTextualInversion(backbone.tokenizer, backbone.text_encoder, backbone.vae, backbone.unet,
                                           common.ddpm_scheduler(backbone.scheduler_config), pixels, accum=2, lr=1e-2)
    before = ref.text_encoder.get_input_embeddings().weight.detach().clone()
    for _ in range(4):
        ref.micro_step()
    after = ref.text_encoder.get_input_embeddings().weight.detach()
    changed = (after != before).any(1).nonzero().flatten().tolist()
    assert changed == ref.placeholder_ids
    assert len(backbone.tokenizer) + 1 == len(ref.tokenizer)  # the shared tokenizer is untouched


def test_classifier_bench_toy(backbone, tiny_model_dir, class_folder, tmp_path, capsys):
    from gcpl.api import TrainJob, train
    from gcpl.trainer import TrainConfig

    run = train(TrainJob(data=str(class_folder), out=str(tmp_path / "run"), shots=2, model=str(tiny_model_dir),
                         device="cpu", train=TrainConfig(steps=2, batch=2, checkpoint_every=0)),
                progress=False, backbone=backbone)
    cb = _load("classifier")
    out = tmp_path / "cls.json"
    r = cb.main(["--run", str(run), "--data", str(class_folder), "--limit", "4", "--device", "cpu",
                 "--baseline", "4,8:2,1", "--schedule", "2,4:1,1", "--schedule", "4,8:2,1",
                 "--full-subset", "2", "--full-n", "8", "--baseline-reseed", "--out", str(out)])
    assert json.loads(out.read_text())["n_images"] == 4 == r["n_images"]
    names = [s["name"] for s in r["schedules"]]
    assert names[0].startswith("baseline") and "custom 2" in names[0]  # identical schedules merged
    assert len(names) == 4  # baseline (= custom 2), baseline with other noise, default_schedule, custom 1
    base, again = r["schedules"][0], r["schedules"][1]
    assert again["name"] == "baseline, noise seed 1" and again["seed"] == 1 and base["seed"] == 0
    assert again["unet_calls_per_image"] == base["unet_calls_per_image"] and 0 <= again["agree_baseline"] <= 1
    assert base["agree_baseline"] == 1.0
    # 3 classes: stage 1 all 3 on 4 pairs, stage 2 the best 2 on 4 more
    assert base["unet_calls_per_image"] == 3 * 4 + 2 * 4
    assert r["schedules"][3]["unet_calls_per_image"] == 3 * 2 + 1 * 2
    full = r["full"]
    assert full["subset"] == 2 and full["unet_calls_per_image"] == 3 * 8 and full["agree_full_subset"] == 1.0
    for s in r["schedules"]:
        assert 0 <= s["top1"] <= 1 and 0 <= s["agree_full_subset"] <= 1 and s["images_per_s"] > 0
    assert _last_json(capsys)["bench"] == "classifier"


def test_gpu_true_size_small_on_cpu(tmp_path, capsys):
    g = _load("gpu_true_size")
    out = tmp_path / "gpu.json"
    r = g.main(["--size", "small", "--device", "cpu", "--batch", "4", "--classes", "3", "--steps", "1",
                "--warmup", "0", "--ref-micro-steps", "2", "--out", str(out)])
    phases = json.loads(out.read_text())["phases"]
    assert set(phases) >= {"build", "flops", "classify", "train_ours", "train_ref"}
    assert r["phases"]["flops"]["unet_flops_per_call_counted"] > 0
    assert r["phases"]["classify"]["unet_calls_per_s"] > 0
    assert r["phases"]["train_ref"]["ratio_ours_over_ref"] > 0
    assert _last_json(capsys)["bench"] == "gpu_true_size"


def test_oom_retry_halves_the_batch(tmp_path):
    g = _load("gpu_true_size")
    bench = g.Bench(g.parse_args(["--size", "small", "--out", str(tmp_path / "x.json")]))
    tried = []

    def fn(b):
        tried.append(b)
        if b > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"ok": True}

    import torch

    assert g.with_oom_retry(bench, "classify", 64, fn, torch.device("cpu")) == {"ok": True, "batch": 8}
    assert tried == [64, 32, 16, 8]
    with pytest.raises(ValueError):
        g.with_oom_retry(bench, "classify", 4, lambda b: (_ for _ in ()).throw(ValueError("other")), torch.device("cpu"))


def test_replay_fill_grid_and_racing_rows_on_a_tiny_run(tiny_run, tmp_path, capsys):
    """bench/replay.py fills the dense tensor (images x classes x the 40 strata centres) and replays
    ranked schedules from it; bench/racing.py scores the ranked and nested defaults from the same
    cache, the ranked row computing nothing the fill already holds."""
    racing, replay = _load("racing"), _load("replay")
    data, cache = str(tiny_run.parent / "data"), str(tmp_path / "cache")
    replay.main(["fill", "--run", str(tiny_run), "--data", data, "--part", "test", "--limit", "2",
                 "--cache", cache])
    r = racing.main(["--run", str(tiny_run), "--data", data, "--part", "test", "--limit", "2", "--seeds", "0",
                     "--ranked", "--gcpl-default", "--stages", "ranked/3,12:2,1", "--cache", cache])
    rows = {row["name"].split(" (")[0]: row for row in r["table"]}
    assert rows["stages ranked/3,12:2,1"]["calls_per_image"] == 3 * 3 + 2 * 9
    assert set(rows) >= {"ranked default", "nested default"}
    capsys.readouterr()
    replay.main(["grid", "--run", str(tiny_run), "--data", data, "--part", "test", "--limit", "2",
                 "--cache", cache, "--budget", "60", "--top", "3"])
    out = capsys.readouterr().out
    assert "2 images, 3 classes, 40 strata; budget 60" in out and "recall of the true class" in out


def test_calibration_models_on_a_synthetic_demo(tmp_path, capsys):
    """Cross-validation of the confidence models on cached calibration predictions, and the test
    ECE next to its noise floor, on a fake demo whose classifier is right exactly when its margin
    is large: the margin models must beat one temperature there."""
    import random

    cm = _load("calibration_models")
    rng = random.Random(0)
    classes = ["a", "b", "c"]
    demo = tmp_path / "demo_s0"

    def rows(n):
        out = []
        for i in range(n):
            label = i % 3
            margin = rng.uniform(0.0, 0.2)
            right = rng.random() < (0.3 if margin < 0.1 else 0.95)
            best, second = (label, (label + 1) % 3) if right else ((label + 1) % 3, label)
            errors = {classes[best]: 1.0, classes[second]: 1.0 + margin}
            errors[classes[3 - best - second]] = 1.5 + rng.random()
            ranking = sorted(range(3), key=lambda c: errors[classes[c]])
            out.append({"label": label, "pred": ranking[0], "ranking": ranking, "errors": errors,
                        "confidence": 0.9 if margin >= 0.1 else 0.35})
        return out

    for folder, n in ((demo / "gcpl" / "eval", 120), (tmp_path / "cache" / "demo_s0_gcpl", 200)):
        folder.mkdir(parents=True)
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n)))
    (demo / "gcpl" / "eval" / "config.json").write_text(json.dumps({"classes": classes}))
    (tmp_path / "cache" / "demo_s0_gcpl" / "results.json").write_text("{}")  # cached: no gcpl eval is run
    r = cm.main([str(demo), "--methods", "gcpl", "--cache", str(tmp_path / "cache")])
    assert _last_json(capsys) == json.loads(json.dumps(r))
    assert r["images"] == 200 and r["models"]["margin"]["log_loss"] < r["models"]["temperature"]["log_loss"]
    floor = cm.main([str(demo), "--methods", "gcpl", "--test-floor"])["demo_s0/gcpl"]
    assert 0 <= floor["ece"] <= 1 and 0 < floor["floor_mean"] <= floor["floor_p90"] < 0.2


def test_shortlist_recall_on_a_tiny_run(tiny_run, capsys):
    sl = _load("shortlist")
    r = sl.main(["--run", str(tiny_run), "--data", str(tiny_run.parent / "data"), "--limit", "4", "--timesteps", "50"])
    r = json.loads(json.dumps(r))  # recall keys as printed: strings
    assert _last_json(capsys) == r
    assert r["images"] == 4 and r["classes"] == 3 and set(r["recall"]) == {"vae", "unet-t50"}
    for rec in r["recall"].values():  # 3 classes: every true class is among the best 5
        assert rec["5"] == 1.0 and 0 <= rec["1"] <= 1


def test_cluster_look_recall_and_the_staged_replay(tiny_run, capsys):
    import torch

    cl = _load("cluster_look")
    r = cl.main(["--run", str(tiny_run), "--data", str(tiny_run.parent / "data"), "--limit", "4", "--clusters", "2",
                 "--pairs", "2"])
    assert r["images"] == 4 and r["classes"] == 3 and sum(r["clusters"][2]["sizes"]) == 3
    assert r["clusters"][2]["by_pairs"][2][2]["recall"] == 1.0  # 2 clusters of 2: the true one is among them
    # known answer: the true class has the lowest error on every pair; calls = C n1 + k1 (n2 - n1)
    M, C, P = 6, 5, 4
    y = torch.arange(M) % C
    Eo = torch.ones(M, C, P, dtype=torch.float64)
    Eo[torch.arange(M), y] = 0.5
    acc, calls = cl.staged(Eo, y, torch.ones(M, C, dtype=torch.bool), ((1, 2), (3, 1)))
    assert acc == 1.0 and calls.tolist() == [C * 1 + 2 * 2] * M
    cand = torch.zeros(M, C, dtype=torch.bool)
    cand[:, :2] = True  # the true class is a candidate for the images of classes 0 and 1 only
    acc, calls = cl.staged(Eo, y, cand, ((1, 1),))
    assert acc == pytest.approx(float((y < 2).double().mean())) and calls.tolist() == [2.0] * M
