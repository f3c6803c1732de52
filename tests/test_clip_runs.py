"""End-to-end `run_clip` on a tiny random CLIPModel folder: every method, the run-folder files,
reruns, resumes, refused settings, the shots and the test subset GCPL uses."""
# ruff: noqa: F811  (pytest fixtures imported from test_clip_fixtures)

from __future__ import annotations

import json

import pytest
import torch
from test_clip_fixtures import make_images, split_file, tiny_clip, tiny_clip_dir  # noqa: F401
from test_clip_methods import job_for

from gcpl.checkpoint import latest, load, read_meta
from gcpl.clip import clip_methods, run_clip
from gcpl.clip.config import CoopConfig, ValidationConfig
from gcpl.errors import GcplError
from gcpl.io import read_json, read_jsonl


@pytest.fixture(autouse=True)
def no_confusion_plot(monkeypatch):
    """summarize's confusion.png (matplotlib, about 0.5 s a run) is not under test here."""
    import gcpl.reports.plots

    monkeypatch.setattr(gcpl.reports.plots, "confusion_png", lambda *a, **k: None, raising=False)


@pytest.mark.parametrize("method", clip_methods())
def test_every_method_runs_on_a_tiny_clip_folder(tiny_clip_dir, split_file, tmp_path, method):
    out = tmp_path / "run"
    job = job_for(method, split_file, out, model=str(tiny_clip_dir), device="cpu")
    m = run_clip(job, progress=False)  # loads the folder itself
    assert m["n_images"] == 9 and 0.0 <= m["top1"] <= 1.0 and m["classes"] == ["blue", "green", "red"]
    assert read_json(out / "results.json")["top1"] == m["top1"] and (out / "results.md").exists()
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["index"] for r in rows] == list(range(9))
    for r in rows:
        assert sorted(r["ranking"]) == [0, 1, 2] and r["pred"] == r["ranking"][0] == r["top5"][0]
        assert r["pred_name"] == m["classes"][r["pred"]] and set(r["logits"]) == set(m["classes"])
        assert max(r["logits"], key=r["logits"].get) == r["pred_name"]
    cfg = read_json(out / "config.json")
    assert cfg["settings"]["method"] == method and cfg["finished"] and cfg["versions"]["torch"]
    assert cfg["identity"]["method"] == method and cfg["model"]["image_size"] == 32
    assert (out / "learned.safetensors").exists()
    if method != "clip-zs":
        support = read_json(out / "split.json")["train"]
        assert len(support) == 6 and cfg["n_support"] == 6
    if method == "linear-probe":
        assert m["top1"] >= 0.6  # random CLIP features still separate three flat colours


def test_same_shots_and_test_subset_as_gcpl(tiny_clip, split_file, tmp_path):
    from gcpl.clip.runner import read_samples, seeded_subset
    from gcpl.data.splits import few_shot

    job = job_for("tip-adapter", split_file, tmp_path / "tip", limit=4, eval_seed=7)
    run_clip(job, progress=False, clip=tiny_clip)
    _, pool = read_samples(split_file, "train")
    expected = [s.path for s in few_shot(pool, 2, 1)]
    assert [s["path"] for s in read_json(tmp_path / "tip" / "split.json")["train"]] == expected
    _, test = read_samples(split_file, "test")
    g = torch.Generator().manual_seed(7)  # gcpl eval's --limit subset
    picked = [test[i].path for i in torch.randperm(len(test), generator=g)[:4].tolist()]
    assert [r["path"] for r in read_jsonl(tmp_path / "tip" / "predictions.jsonl")] == picked
    assert [s.path for s in seeded_subset(test, 4, 7)] == picked


def test_rerun_recomputes_nothing_and_other_settings_are_refused(tiny_clip, split_file, tmp_path, monkeypatch):
    from gcpl.clip import runner

    out = tmp_path / "coop"
    first = run_clip(job_for("coop", split_file, out), progress=False, clip=tiny_clip)
    before = (out / "predictions.jsonl").read_text()

    def boom(*a, **k):
        raise AssertionError("a finished run must not load a model or train")

    monkeypatch.setattr(runner, "load_clip", boom)
    monkeypatch.setattr(runner, "make_method", boom)
    assert run_clip(job_for("coop", split_file, out), progress=False) == first
    assert (out / "predictions.jsonl").read_text() == before
    # bookkeeping settings may change (device, batch sizes, checkpoint cadence)
    assert run_clip(job_for("coop", split_file, out, eval_batch=2, checkpoint_every=5), progress=False) == first
    with pytest.raises(GcplError) as e:
        run_clip(job_for("coop", split_file, out, coop=CoopConfig(epochs=3)), progress=False)
    assert "coop.coop_epochs: 2 -> 3" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(GcplError, match="method: 'coop' -> 'kgcoop'"):
        run_clip(job_for("kgcoop", split_file, out), progress=False)
    with pytest.raises(GcplError, match="seed"):
        run_clip(job_for("coop", split_file, out, seed=2), progress=False)


def test_interrupted_training_resumes_to_the_same_prompts(tiny_clip, split_file, tmp_path, monkeypatch):
    from gcpl.clip import loop

    cfg = CoopConfig(epochs=3)
    straight = tmp_path / "straight"
    run_clip(job_for("coop", split_file, straight, coop=cfg), progress=False, clip=tiny_clip)

    class Stop(Exception):
        pass

    def stop_after_first(folder, epoch):
        if epoch == 1:
            raise Stop

    out = tmp_path / "resumed"
    monkeypatch.setattr(loop, "_checkpoint_written", stop_after_first)
    with pytest.raises(Stop):
        run_clip(job_for("coop", split_file, out, coop=cfg), progress=False, clip=tiny_clip)
    state = read_meta(latest(out / "checkpoint"))
    assert state["epoch"] == 1 and not (out / "learned.safetensors").exists()
    monkeypatch.undo()
    m = run_clip(job_for("coop", split_file, out, coop=cfg), progress=False, clip=tiny_clip)
    a, meta_a = load(straight / "learned.safetensors")
    b, meta_b = load(out / "learned.safetensors")
    assert torch.equal(a["ctx"], b["ctx"])
    assert [r["loss"] for r in meta_a["train_log"]] == [r["loss"] for r in meta_b["train_log"]]
    assert m == read_json(straight / "results.json")


def test_interrupted_evaluation_resumes(tiny_clip, split_file, tmp_path):
    out = tmp_path / "zs"
    full = run_clip(job_for("clip-zs", split_file, out), progress=False, clip=tiny_clip)
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[:4]) + lines[4][:10])  # a torn line from a crash
    cfg = read_json(out / "config.json")
    cfg["finished"] = False
    (out / "config.json").write_text(json.dumps(cfg))
    again = run_clip(job_for("clip-zs", split_file, out), progress=False, clip=tiny_clip)
    assert again == full and [r["index"] for r in read_jsonl(out / "predictions.jsonl")] == list(range(9))


def test_validation_on_the_split_val_list(tiny_clip, split_file, tmp_path):
    val = ValidationConfig(source="split")
    run_clip(job_for("linear-probe", split_file, tmp_path / "lp", validation=val), progress=False, clip=tiny_clip)
    _, meta = load(tmp_path / "lp" / "learned.safetensors")
    assert meta["validation"].startswith("split val list (6 images)") and len(meta["search"]) == 7 + 4
    run_clip(job_for("tip-adapter", split_file, tmp_path / "tip", validation=val), progress=False, clip=tiny_clip)
    _, meta = load(tmp_path / "tip" / "learned.safetensors")
    assert meta["search"].startswith("split val list")


def test_class_folder_data_and_errors(tiny_clip, tmp_path):
    data = make_images(tmp_path / "folder", per_class=3)
    m = run_clip(job_for("tip-adapter", data, tmp_path / "run"), progress=False, clip=tiny_clip)
    assert m["n_images"] == 9  # a class folder's test list is all its images
    with pytest.raises(GcplError, match="val list"):
        run_clip(job_for("linear-probe", data, tmp_path / "lp", validation=ValidationConfig(source="split")),
                 progress=False, clip=tiny_clip)
    with pytest.raises(GcplError, match="--shots"):
        run_clip(job_for("coop", data, tmp_path / "coop", shots=5), progress=False, clip=tiny_clip)
    with pytest.raises(GcplError, match="not a CLIP method"):
        job_for("gcpl", data, tmp_path / "x")
