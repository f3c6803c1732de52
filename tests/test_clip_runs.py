"""End-to-end `run_clip` on a tiny random CLIPModel folder: every method, the run-folder files,
reruns, resumes, refused settings, the shots and the test subset GCPL uses."""
# ruff: noqa: F811  (pytest fixtures imported from test_clip_fixtures)

from __future__ import annotations

import json

import pytest
import torch
from test_clip_fixtures import make_images, make_split, split_file, tiny_clip, tiny_clip_dir  # noqa: F401
from test_clip_methods import job_for

from gcpl.checkpoint import latest, load, read_meta
from gcpl.clip import clip_methods, run_clip
from gcpl.clip.config import CoopConfig, ValidationConfig
from gcpl.data.splits import Split
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
    from gcpl.data.splits import few_shot, read_samples, seeded_subset

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
    """The linear probe validates on min(shots, 4) images per class of the split's val list
    (lpclip), Tip-Adapter on all of it (main.py); neither on a test or support image."""
    run_clip(job_for("linear-probe", split_file, tmp_path / "lp"), progress=False, clip=tiny_clip)
    _, meta = load(tmp_path / "lp" / "learned.safetensors")
    assert meta["validation"] == "validation images (6)" and len(meta["search"]) == 7 + 4
    cfg = read_json(tmp_path / "lp" / "config.json")
    assert cfg["validation"] == {"on": "the split's val list, 2 per class", "images": 6}
    val = {s["path"] for s in read_json(tmp_path / "lp" / "val.json")["val"]}
    assert val == {s.path for s in Split.from_json(split_file).val}  # 2 per class: all of this small val list
    run_clip(job_for("tip-adapter", split_file, tmp_path / "tip", shots=1), progress=False, clip=tiny_clip)
    _, meta = load(tmp_path / "tip" / "learned.safetensors")
    assert meta["search"].startswith("validation images")  # at 1 shot too
    assert read_json(tmp_path / "tip" / "config.json")["validation"] == {"on": "the split's val list", "images": 6}
    shots = ValidationConfig(source="shots")
    run_clip(job_for("linear-probe", split_file, tmp_path / "cv", validation=shots), progress=False, clip=tiny_clip)
    assert load(tmp_path / "cv" / "learned.safetensors")[1]["validation"] == "2-fold cross-validation on the shots"
    assert not (tmp_path / "cv" / "val.json").exists()
    coop = run_clip(job_for("coop", split_file, tmp_path / "coop"), progress=False, clip=tiny_clip)
    assert coop["n_images"] == 9 and read_json(tmp_path / "coop" / "config.json")["validation"]["on"].startswith(
        "none: the last epoch")


def test_a_split_without_val_list_holds_out_part_of_the_training_pool(tiny_clip, tmp_path):
    from gcpl.clip.sets import drawn_val
    from gcpl.data.splits import few_shot

    data = make_split(tmp_path / "data", train=6, val=0, test=2)
    out = tmp_path / "lp"
    run_clip(job_for("linear-probe", data, out, shots=2), progress=False, clip=tiny_clip)
    cfg = read_json(out / "config.json")
    assert cfg["validation"]["on"].startswith("a val part of the training pool (0.2 of each class")
    val = [s["path"] for s in read_json(out / "val.json")["val"]]
    support = {s["path"] for s in read_json(out / "split.json")["train"]}
    split = Split.from_json(data)
    assert len(val) == 3 and not set(val) & support  # round(0.2 * 6) = 1 per class, none of the shots
    assert not set(val) & {s.path for s in split.test} and set(val) <= {s.path for s in split.train}
    # one val part for every seed: shots that miss it leave it as it is, a shot in it is replaced
    part = drawn_val(split.train, [], 0.2)
    apart = few_shot([s for s in split.train if s not in part], 2, 5)
    assert drawn_val(split.train, apart, 0.2) == part
    inside = drawn_val(split.train, part[:1], 0.2)
    assert inside[1:] == part[1:] and inside[0] != part[0] and inside[0].label == part[0].label


def test_class_folder_data_is_split_and_never_scores_a_support_image(tiny_clip, tmp_path):
    data = make_images(tmp_path / "folder", per_class=4)
    m = run_clip(job_for("tip-adapter", data, tmp_path / "run"), progress=False, clip=tiny_clip)
    drawn = read_json(tmp_path / "run" / "data_split.json")
    assert m["n_images"] == len(drawn["test"]) == 3  # round(0.3 * 4) = 1 per class held out, seeded
    support = {s["path"] for s in read_json(tmp_path / "run" / "split.json")["train"]}
    scored = {r["path"] for r in read_jsonl(tmp_path / "run" / "predictions.jsonl")}
    assert support <= {s["path"] for s in drawn["train"]} and not support & scored
    with pytest.raises(GcplError, match="support image.* are also test images") as e:
        run_clip(job_for("tip-adapter", data, tmp_path / "same", test_data=str(data)), progress=False, clip=tiny_clip)
    assert "\n" not in str(e.value)
    with pytest.raises(GcplError, match="--shots"):
        run_clip(job_for("coop", data, tmp_path / "coop", shots=5), progress=False, clip=tiny_clip)
    with pytest.raises(GcplError, match="not a CLIP method"):
        job_for("gcpl", data, tmp_path / "x")
