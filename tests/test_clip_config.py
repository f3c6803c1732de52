"""ClipJob's settings groups (prefixed groups, the official values of each prompt method, the
names older run folders stored) and the resumable training of the CLIP methods through
gcpl.checkpoint."""
# ruff: noqa: F811  (pytest fixtures imported from test_clip_fixtures)

from __future__ import annotations

import argparse
import json

import pytest
import torch
from test_clip_fixtures import split_file, tiny_clip, tiny_clip_dir  # noqa: F401
from test_clip_methods import job_for

from gcpl.checkpoint import latest, load, read_meta
from gcpl.cli.options import add_options, build
from gcpl.clip import run_clip
from gcpl.clip.config import (
    ClipJob,
    CocoopConfig,
    CoopConfig,
    KgCoopConfig,
    MapleConfig,
    PromptMethodConfig,
    PromptSrcConfig,
    TipFConfig,
    upgrade_settings,
)
from gcpl.errors import GcplError
from gcpl.io import read_json


@pytest.fixture(autouse=True)
def no_confusion_plot(monkeypatch):
    import gcpl.reports.plots

    monkeypatch.setattr(gcpl.reports.plots, "confusion_png", lambda *a, **k: None, raising=False)


# ----------------------------------------------------------------------------- options

# every option of ClipJob's groups as the groups had them with hand-written prefixes in their
# field names; only --cv-folds became --val-cv-folds (the validation group's prefix)
GROUP_OPTIONS = """
--val-source --val-shots --val-cv-folds --lp-c-grid --lp-search-steps --lp-max-iter --lp-c
--tip-alpha --tip-beta --tip-augment-epochs --tip-crop-scale --no-tip-search --tip-search-scale --tip-search-steps
--tipf-lr --tipf-eps --tipf-weight-decay --tipf-epochs --tipf-batch
--prompt-momentum --prompt-weight-decay --prompt-warmup-epochs --prompt-warmup-lr --prompt-crop-scale
--no-prompt-flip --coop-n-ctx --coop-ctx-init --coop-csc --coop-lr --coop-batch --coop-epochs
--kg-ctx-init --kg-lambda --kg-lr --kg-batch --kg-epochs --cocoop-ctx-init --cocoop-lr --cocoop-batch --cocoop-epochs
--maple-n-ctx --maple-ctx-init --maple-depth --maple-lr --maple-batch --maple-epochs
--src-n-ctx-text --src-n-ctx-vision --src-ctx-init --src-depth-text --src-depth-vision --src-lr --src-batch
--src-epochs --src-text-weight --src-image-weight --src-gpa-mean --src-gpa-std
""".split()


def clip_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_options(parser, ClipJob)
    return parser


JOB_OPTIONS = """-h --help --method --out --shots --seed --template --model --device --dtype --limit --eval-seed
--allow-fewer --strict --test-data --eval-batch --checkpoint-every""".split()


def test_group_options_keep_their_strings():
    strings = {s for a in clip_parser()._actions for s in a.option_strings}
    assert strings - set(JOB_OPTIONS) == set(GROUP_OPTIONS)


def test_group_options_reach_their_fields(tmp_path):
    ns = clip_parser().parse_args(["data", "--method", "kgcoop", "--out", str(tmp_path), "--kg-lambda", "4",
                                   "--no-tip-search", "--tip-alpha", "2", "--val-cv-folds", "3",
                                   "--coop-epochs", "7", "--src-gpa-mean", "45", "--no-prompt-flip"])
    job, given = build(ClipJob, ns)
    assert job.kgcoop.lambda_ == 4.0 and job.tip.search is False and job.tip.alpha == 2.0
    assert job.validation.cv_folds == 3 and job.coop.epochs == 7 and job.promptsrc.gpa_mean == 45.0
    assert job.prompt.flip is False and job.maple.lr == MapleConfig().lr
    assert {"kg_lambda_", "tip_search", "tip_alpha", "val_cv_folds", "coop_epochs"} <= given


def test_prompt_method_groups_default_to_their_official_values():
    assert (CoopConfig().ctx_init, CoopConfig().lr, CoopConfig().batch, CoopConfig().epochs) == ("", 0.002, 32, None)
    assert (KgCoopConfig().lr, KgCoopConfig().batch, KgCoopConfig().epochs) == (0.002, 128, 100)
    assert (CocoopConfig().ctx_init, CocoopConfig().batch, CocoopConfig().epochs) == ("a photo of a", 1, 10)
    assert (MapleConfig().lr, MapleConfig().batch, MapleConfig().epochs, MapleConfig().n_ctx) == (0.0035, 4, 5, 2)
    assert (PromptSrcConfig().lr, PromptSrcConfig().batch, PromptSrcConfig().epochs) == (0.0025, 4, 50)
    assert PromptMethodConfig().batch == 32  # a subclass's values are its own
    with pytest.raises(TypeError, match="momentum"):
        class Wrong(PromptMethodConfig, momentum=0.5):
            pass


# ----------------------------------------------------------------------------- older run folders

# config.json "settings" groups as gcpl wrote them before the groups had prefixes
OLD_GROUPS = {
    "validation": {"val_source": "shots", "val_shots": 4, "cv_folds": 4},
    "prompt": {"prompt_momentum": 0.9, "prompt_weight_decay": 0.0005, "prompt_warmup_epochs": 1,
               "prompt_warmup_lr": 1e-05, "prompt_crop_scale": [0.08, 1.0], "prompt_flip": True},
    "kgcoop": {"kg_ctx_init": "a photo of a", "kg_lambda": 8.0, "kg_lr": 0.002, "kg_batch": 128, "kg_epochs": 2},
    "tip": {"tip_alpha": 1.17, "tip_beta": 1.0, "tip_augment_epochs": 10, "tip_crop_scale": [0.5, 1.0],
            "tip_search": True, "tip_search_scale": [7.0, 3.0], "tip_search_steps": [200, 20]},
}


def test_upgrade_settings_renames_the_old_group_fields():
    new = upgrade_settings({"method": "kgcoop", "shots": 2, **OLD_GROUPS})
    assert new["shots"] == 2 and new["validation"] == {"source": "shots", "shots": 4, "cv_folds": 4}
    assert new["kgcoop"] == {"ctx_init": "a photo of a", "lambda_": 8.0, "lr": 0.002, "batch": 128, "epochs": 2}
    assert new["tip"]["alpha"] == 1.17 and new["tip"]["search"] is True and new["prompt"]["flip"] is True
    assert upgrade_settings(new) == new  # today's names pass unchanged


def test_a_run_folder_with_old_field_names_resumes(tiny_clip, split_file, tmp_path):
    out = tmp_path / "kg"
    first = run_clip(job_for("kgcoop", split_file, out), progress=False, clip=tiny_clip)
    cfg = read_json(out / "config.json")
    cfg["settings"].update(json.loads(json.dumps(OLD_GROUPS)))
    cfg["identity"]["kgcoop"] = OLD_GROUPS["kgcoop"]
    cfg["finished"] = False
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "predictions.jsonl").unlink()
    assert run_clip(job_for("kgcoop", split_file, out), progress=False, clip=tiny_clip) == first
    assert read_json(out / "config.json")["settings"]["kgcoop"]["lambda_"] == 8.0  # rewritten with today's names
    cfg["settings"]["kgcoop"]["kg_epochs"] = 3
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GcplError, match=r"kgcoop.kg_epochs: 3 -> 2"):
        run_clip(job_for("kgcoop", split_file, out), progress=False, clip=tiny_clip)


def test_a_folder_of_another_command_is_refused(tiny_clip, split_file, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"command": "eval", "settings": {"run": "x"}}))
    with pytest.raises(GcplError, match="another kind of run"):
        run_clip(job_for("coop", split_file, out), progress=False, clip=tiny_clip)


# ----------------------------------------------------------------------------- checkpoints


class Stop(Exception):
    """Raised by a test right after a checkpoint is written, as a crash would stop the run."""


def stop_after(monkeypatch, epoch: int) -> None:
    from gcpl.clip import loop

    def hook(folder, written):
        if written == epoch:
            raise Stop

    monkeypatch.setattr(loop, "_checkpoint_written", hook)


@pytest.mark.parametrize("method, group", [("tip-adapter-f", {"tip_f": TipFConfig(epochs=3)}),
                                           ("promptsrc", {"promptsrc": PromptSrcConfig(epochs=3)})])
def test_interrupted_training_resumes_exactly(tiny_clip, split_file, tmp_path, monkeypatch, method, group):
    """Adam's state (Tip-Adapter-F) and PromptSRC's running aggregate come back from the snapshot."""
    straight = tmp_path / "straight"
    run_clip(job_for(method, split_file, straight, **group), progress=False, clip=tiny_clip)
    out = tmp_path / "resumed"
    stop_after(monkeypatch, 2)
    with pytest.raises(Stop):
        run_clip(job_for(method, split_file, out, **group), progress=False, clip=tiny_clip)
    snapshot = latest(out / "checkpoint")
    assert snapshot.name == "epoch-0002.safetensors" and read_meta(snapshot)["epoch"] == 2
    assert [p.name for p in (out / "checkpoint").glob("*.safetensors")] == [snapshot.name]  # older ones rotated out
    monkeypatch.undo()
    run_clip(job_for(method, split_file, out, **group), progress=False, clip=tiny_clip)
    a, meta_a = load(straight / "learned.safetensors")
    b, meta_b = load(out / "learned.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert meta_a["train_log"] == meta_b["train_log"]


def test_a_checkpoint_of_another_training_is_refused(tiny_clip, split_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    stop_after(monkeypatch, 1)
    with pytest.raises(Stop):
        run_clip(job_for("coop", split_file, out), progress=False, clip=tiny_clip)
    monkeypatch.undo()
    (out / "config.json").unlink()  # as if another job had left its checkpoint there
    with pytest.raises(GcplError, match="checkpoint of another training"):
        run_clip(job_for("kgcoop", split_file, out), progress=False, clip=tiny_clip)
