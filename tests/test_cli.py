"""End to end through `gcpl.cli.main`: train then eval on the tiny model, files, resume, and the
one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_class_folder

from gcpl.cli import main
from gcpl.io import read_jsonl


def _train(model, data, out, *extra):
    return main(["train", str(data), "--out", str(out), "--model", str(model), "--shots", "3", "--steps", "4",
                 "--template", "a photo of {}.", "--init-word", "object", "--checkpoint-every", "2", *extra])


def _eval(model, data, out, *extra):
    return main(["eval", str(data), "--out", str(out), "--model", str(model), "--n-samples", "2,4",
                 "--keep", "2,1", "--images-per-batch", "2", *extra])


@pytest.fixture
def trained(tiny_model_dir, class_folder, tmp_path):
    run = tmp_path / "run"
    assert _train(tiny_model_dir, class_folder, run) == 0
    return run


def test_train_then_eval_writes_every_file(tiny_model_dir, class_folder, trained, tmp_path):
    for f in ("config.json", "split.json", "tokens.json", "train_log.jsonl", "checkpoint/state.safetensors"):
        assert (trained / f).exists(), f
    tokens = json.loads((trained / "tokens.json").read_text())
    assert [r["class_name"] for r in tokens["classes"]] == ["blue", "green", "red"]
    for r in tokens["classes"]:
        assert (trained / r["file"]).exists()
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["settings"]["train"]["template"] == "a photo of {}." and cfg["versions"]["torch"]
    split = json.loads((trained / "split.json").read_text())
    assert len(split["train"]) == 9  # 3 shots x 3 classes

    ev = tmp_path / "eval"
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(trained)) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["n_images"] == 12 and 0 <= res["top1"] <= 1 and len(res["confusion_matrix"]) == 3
    assert res["unet_calls_per_image"] == 3 * 2 + 2 * 2  # stage 1: 3 classes x 2 t; stage 2: 2 more t for 2
    assert (ev / "results.md").exists() and (ev / "confusion.png").exists()
    preds = read_jsonl(ev / "predictions.jsonl")
    assert len(preds) == 12 and all(len(p["top5"]) == 3 for p in preds)


def test_eval_resumes_where_it_stopped(tiny_model_dir, class_folder, trained, tmp_path):
    ev = tmp_path / "eval"
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(trained)) == 0
    full = read_jsonl(ev / "predictions.jsonl")
    # simulate a crash: keep 5 lines and a torn sixth
    lines = (ev / "predictions.jsonl").read_text().splitlines()
    (ev / "predictions.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(trained)) == 0
    again = read_jsonl(ev / "predictions.jsonl")
    assert sorted(r["index"] for r in again) == list(range(12))
    by = {r["index"]: r for r in full}
    for r in again:
        assert r["pred"] == by[r["index"]]["pred"]
        assert r["errors"] == pytest.approx(by[r["index"]]["errors"], rel=1e-5)


def test_zero_shot_eval(tiny_model_dir, class_folder, tmp_path):
    assert _eval(tiny_model_dir, class_folder, tmp_path / "zs", "--zero-shot", "--template", "a {} square.") == 0
    cfg = json.loads((tmp_path / "zs" / "config.json").read_text())
    assert cfg["template"] == "a {} square." and cfg["classes"] == ["blue", "green", "red"]


def test_train_resume_finishes_same_as_straight(tiny_model_dir, class_folder, tmp_path):
    straight = tmp_path / "a"
    assert _train(tiny_model_dir, class_folder, straight) == 0
    # A run interrupted after its first checkpoint, then resumed, gives the same embeddings.
    part = tmp_path / "b"
    assert _train(tiny_model_dir, class_folder, part, "--steps", "2") == 0
    assert _train(tiny_model_dir, class_folder, part, "--resume") == 0
    from safetensors.torch import load_file

    for f in (straight / "embeddings").iterdir():
        a, b = load_file(f), load_file(part / "embeddings" / f.name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_moving_the_folders(tiny_model_dir, class_folder, tmp_path, capsys):
    """Where data and runs live is not a setting: resume works after both folders moved; other
    classes at the new path are refused."""
    import shutil

    straight = tmp_path / "a"
    assert _train(tiny_model_dir, class_folder, straight) == 0
    part = tmp_path / "b"
    assert _train(tiny_model_dir, class_folder, part, "--steps", "2") == 0
    ev = tmp_path / "ev"
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(straight), "--limit", "5") == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in (class_folder, part, straight, ev):
        shutil.move(str(f), str(moved / f.name))
    data, part, straight, ev = (moved / f.name for f in (class_folder, part, straight, ev))
    assert _train(tiny_model_dir, data, part, "--resume") == 0
    from safetensors.torch import load_file

    for f in (straight / "embeddings").iterdir():
        a, b = load_file(f), load_file(part / "embeddings" / f.name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert _eval(tiny_model_dir, data, ev, "--run-dir", str(straight), "--limit", "5") == 0

    other = make_class_folder(tmp_path / "other", classes=("red", "green", "yellow"))
    capsys.readouterr()
    assert _train(tiny_model_dir, other, part, "--resume") == 2
    assert "other classes" in capsys.readouterr().err


def test_embedding_files_load_in_diffusers(tiny_model_dir, trained, backbone):
    from diffusers import StableDiffusionPipeline

    from gcpl.api import TrainedRun

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None)
    tokens = json.loads((trained / "tokens.json").read_text())
    run = TrainedRun.open(trained)
    ours, template = run.prompt_embeds(backbone), run.template
    for c, row in enumerate(tokens["classes"]):
        pipe.load_textual_inversion(str(trained / row["file"]))
        with torch.no_grad():
            theirs, _ = pipe.encode_prompt(template.format(row["token"]), "cpu", 1, False)
        torch.testing.assert_close(theirs[0], ours[c], rtol=1e-5, atol=1e-5)
    image = pipe(template.format(tokens["classes"][0]["token"]), num_inference_steps=2, height=16, width=16,
                 output_type="np").images
    assert image.shape == (1, 16, 16, 3)


# --- bad input: one line on stderr, exit code 2, no traceback -----------------------------------


def _err(capsys, code):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("gcpl ") and ": error: " in last
    return last


def test_missing_data_folder(tiny_model_dir, tmp_path, capsys):
    err = _err(capsys, _train(tiny_model_dir, tmp_path / "nope", tmp_path / "r"))
    assert "does not exist" in err and "nope" in err


def test_empty_data_folder(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _err(capsys, _train(tiny_model_dir, tmp_path / "empty", tmp_path / "r"))
    assert "no class subfolders" in err


def test_too_few_images_for_shots(tiny_model_dir, tmp_path, capsys):
    data = make_class_folder(tmp_path / "d", per_class=2)
    err = _err(capsys, _train(tiny_model_dir, data, tmp_path / "r"))
    assert "has 2 images but --shots is 3" in err and "--allow-fewer" in err
    assert _train(tiny_model_dir, data, tmp_path / "r2", "--allow-fewer") == 0


def test_template_without_slot(tiny_model_dir, class_folder, tmp_path, capsys):
    err = _err(capsys, _train(tiny_model_dir, class_folder, tmp_path / "r", "--template", "a photo."))
    assert "exactly one {}" in err


def test_multi_token_init_word(tiny_model_dir, class_folder, tmp_path, capsys):
    err = _err(capsys, _train(tiny_model_dir, class_folder, tmp_path / "r", "--init-word", "xylophonist"))
    assert "single token" in err and "xylophonist" in err


def test_corrupt_images_are_skipped_and_counted(tiny_model_dir, tmp_path, capsys):
    data = make_class_folder(tmp_path / "d", per_class=5)
    good = (data / "red" / "000.png").read_bytes()
    (data / "red" / "000.png").write_bytes(good[: len(good) // 2])  # truncated
    (data / "green" / "zzz.jpg").write_text("not an image")
    assert _train(tiny_model_dir, data, tmp_path / "r", "--shots", "5", "--allow-fewer") == 0
    assert len(json.loads((tmp_path / "r" / "config.json").read_text())["skipped_images"]) >= 1
    # each warning one clean line (no Python file/line, no echoed source), then a count
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line.lower()]
    assert err[:2] == [f"warning: skipping unreadable image {data / 'green' / 'zzz.jpg'}: not an image file "
                       "(format not recognised)",
                       f"warning: skipping unreadable image {data / 'red' / '000.png'}: file is truncated "
                       "(image file is truncated)"]
    assert err[-1] == "gcpl train: 2 warning(s), see above" and len(err) == 3
    err = _err(capsys, _train(tiny_model_dir, data, tmp_path / "r2", "--shots", "5", "--strict"))
    assert "cannot read image" in err


def test_eval_counts_skipped_images(tiny_model_dir, class_folder, trained, tmp_path):
    good = (class_folder / "red" / "001.png").read_bytes()
    (class_folder / "red" / "001.png").write_bytes(good[:40])
    assert _eval(tiny_model_dir, class_folder, tmp_path / "e", "--run-dir", str(trained)) == 0
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["skipped_images"] == 1 and res["n_images"] == 11


def test_non_rgb_modes_train(tiny_model_dir, tmp_path):
    from PIL import Image

    data = make_class_folder(tmp_path / "d", classes=("red", "blue"), per_class=3)
    Image.open(data / "red" / "000.png").convert("L").save(data / "red" / "000.png")
    Image.open(data / "red" / "001.png").convert("P").save(data / "red" / "001.png")
    Image.open(data / "blue" / "000.png").convert("RGBA").save(data / "blue" / "000.png")
    Image.open(data / "blue" / "001.png").convert("CMYK").save(data / "blue" / "001.jpg")
    (data / "blue" / "001.png").unlink()
    assert _train(tiny_model_dir, data, tmp_path / "r") == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["skipped_images"] == []


def test_embedding_width_mismatch(tiny_model_dir, trained, class_folder, tmp_path, capsys):
    from safetensors.torch import save_file

    row = json.loads((trained / "tokens.json").read_text())["classes"][0]
    save_file({row["token"]: torch.zeros(1, 768)}, str(trained / row["file"]))
    err = _err(capsys, _eval(tiny_model_dir, class_folder, tmp_path / "e", "--run-dir", str(trained)))
    assert "[1, 32]" in err and "another model" in err


def test_test_class_not_learned(tiny_model_dir, trained, tmp_path, capsys):
    data = make_class_folder(tmp_path / "d", classes=("red", "yellow"), per_class=2)
    err = _err(capsys, _eval(tiny_model_dir, data, tmp_path / "e", "--run-dir", str(trained)))
    assert "'yellow' was not learned" in err


def test_rerunning_a_finished_run_leaves_it_as_it_is(tiny_model_dir, class_folder, trained, capsys):
    before = {f: f.stat().st_mtime_ns for f in trained.rglob("*") if f.is_file()}
    assert _train(tiny_model_dir, class_folder, trained) == 0  # the same command: resumed, nothing to do
    assert {f: f.stat().st_mtime_ns for f in trained.rglob("*") if f.is_file()} == before
    err = _err(capsys, _train(tiny_model_dir, class_folder, trained, "--lr", "0.5"))
    assert "other settings" in err and "train.lr" in err


def test_missing_model(class_folder, tmp_path, capsys):
    err = _err(capsys, _train(tmp_path / "no-model", class_folder, tmp_path / "r"))
    assert "--model" in err


def test_prepare_prints_counts_and_writes_split(tmp_path, capsys):
    data = make_class_folder(tmp_path / "d", per_class=5)
    assert main(["prepare", "folder", "--root", str(data), "--out", str(tmp_path / "split.json")]) == 0
    out = capsys.readouterr().out
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(split["train"]) + len(split["test"]) == 15 and "total" in out and "blue" in out


def test_prepare_missing_dataset(tmp_path, capsys):
    err = _err(capsys, main(["prepare", "flowers102", "--root", str(tmp_path / "nope")]))
    assert "Flowers102" in err and "expected" in err


def test_v_prediction_model_trains_and_classifies(tiny_v_model_dir, class_folder, tmp_path):
    """SD-2.x-style v-prediction: the model's config says so, and training/scoring use v targets."""
    from gcpl.backbone import load_backbone

    assert load_backbone(str(tiny_v_model_dir), device="cpu").prediction_type == "v_prediction"
    assert _train(tiny_v_model_dir, class_folder, tmp_path / "r", "--method", "comple", "--batch", "3") == 0
    assert _eval(tiny_v_model_dir, class_folder, tmp_path / "e", "--run-dir", str(tmp_path / "r")) == 0
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["model"]["prediction_type"] == "v_prediction"


def test_resume_never_mixes_tokens_of_another_length_of_training(tiny_model_dir, class_folder, trained,
                                                                  tmp_path, capsys):
    """A run trained further makes new tokens: an evaluation folder scored with the old ones is
    refused, and a run cannot be 'resumed' to fewer steps than it has already trained."""
    ev = tmp_path / "ev"
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(trained), "--limit", "2") == 0
    assert _train(tiny_model_dir, class_folder, trained, "--resume") == 0  # finished: tokens unchanged
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(trained), "--limit", "2") == 0
    assert _train(tiny_model_dir, class_folder, trained, "--resume", "--steps", "6") == 0
    capsys.readouterr()
    assert _eval(tiny_model_dir, class_folder, ev, "--run-dir", str(trained), "--limit", "2") == 2
    assert "other class tokens" in capsys.readouterr().err
    assert _train(tiny_model_dir, class_folder, trained, "--resume", "--steps", "4") == 2
    assert "already trained 6 steps" in capsys.readouterr().err
