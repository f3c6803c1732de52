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
    PromptMethodConfig,
    PromptSrcConfig,
    TipFConfig,
    upgrade_settings,
)
from gcpl.clip.official import resolved
from gcpl.errors import GcplError
from gcpl.io import read_json


@pytest.fixture(autouse=True)
def no_confusion_plot(monkeypatch):
    import gcpl.reports.plots

    monkeypatch.setattr(gcpl.reports.plots, "confusion_png", lambda *a, **k: None, raising=False)


# ----------------------------------------------------------------------------- options

# every option of ClipJob's groups as the groups had them with hand-written prefixes in their
# field names (only --cv-folds became --val-cv-folds, the validation group's prefix), and the
# options added since: --clip-template, --clip-class-names, --val-fraction, --src-teacher
GROUP_OPTIONS = """
--clip-template --clip-class-names --val-fraction --src-teacher
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


JOB_OPTIONS = """-h --help --method --out --shots --seed --dataset --template --model --device --dtype --limit
--eval-seed --allow-fewer --strict --test-data --eval-batch --checkpoint-every""".split()


def test_group_options_keep_their_strings():
    strings = {s for a in clip_parser()._actions for s in a.option_strings}
    assert strings - set(JOB_OPTIONS) == set(GROUP_OPTIONS)


def test_group_options_reach_their_fields(tmp_path):
    ns = clip_parser().parse_args(["data", "--method", "kgcoop", "--out", str(tmp_path), "--kg-lambda", "4",
                                   "--no-tip-search", "--tip-alpha", "2", "--val-cv-folds", "3",
                                   "--coop-epochs", "7", "--src-gpa-mean", "45", "--no-prompt-flip"])
    job, given = build(ClipJob, ns)
    c = job.clip
    assert c.kgcoop.lambda_ == 4.0 and c.tip.search is False and c.tip.alpha == 2.0
    assert c.validation.cv_folds == 3 and c.coop.epochs == 7 and c.promptsrc.gpa_mean == 45.0
    assert c.prompt.flip is False and c.maple.lr is None and c.tip.beta is None  # None: the official value
    assert {"kg_lambda_", "tip_search", "tip_alpha", "val_cv_folds", "coop_epochs"} <= given


def test_every_official_setting_defaults_to_none():
    from gcpl.clip.config import ClipSettings
    from gcpl.clip.official import TABLE
    from gcpl.settings import flat

    defaults = flat(ClipSettings())
    assert set(TABLE) <= set(defaults) and all(defaults[dest] is None for dest in TABLE)
    assert {d for d, v in defaults.items() if v is None} == set(TABLE)  # and nothing else is left open


def test_prompt_method_groups_resolve_to_their_official_values():
    def group(method, name, **kw):
        return getattr(resolved(ClipJob(method=method, data="s.json", out="o", **kw)).clip, name)

    coop = group("coop", "coop", shots=1)
    assert (coop.ctx_init, coop.lr, coop.batch, coop.epochs, coop.n_ctx) == ("", 0.002, 32, 50, 16)
    kg = group("kgcoop", "kgcoop")
    assert (kg.ctx_init, kg.lr, kg.batch, kg.epochs, kg.lambda_) == ("a photo of a", 0.002, 128, 100, 8.0)
    cocoop = group("cocoop", "cocoop")
    assert (cocoop.ctx_init, cocoop.lr, cocoop.batch, cocoop.epochs) == ("a photo of a", 0.002, 1, 10)
    maple = group("maple", "maple")
    assert (maple.lr, maple.batch, maple.epochs, maple.n_ctx, maple.depth) == (0.0035, 4, 5, 2, 9)
    src = group("promptsrc", "promptsrc")
    assert (src.lr, src.batch, src.epochs, src.gpa_mean, src.gpa_std, src.teacher) == (0.0025, 4, 50, 30.0, 30.0,
                                                                                         "ensemble")
    assert PromptMethodConfig().batch is None and group("maple", "maple", clip=_with(maple_lr=0.01)).lr == 0.01


def _with(**values):
    from gcpl.clip.config import ClipSettings
    from gcpl.settings import replace

    return replace(ClipSettings(), values)


# ----------------------------------------------------------------------------- older run folders

# config.json "settings" groups as gcpl wrote them before the groups had prefixes (directly in
# ClipJob, as they stayed until ClipSettings gathered them)
OLD_GROUPS = {
    "validation": {"val_source": "shots", "val_shots": 4, "cv_folds": 4},
    "prompt": {"prompt_momentum": 0.9, "prompt_weight_decay": 0.0005, "prompt_warmup_epochs": 1,
               "prompt_warmup_lr": 1e-05, "prompt_crop_scale": [0.08, 1.0], "prompt_flip": True},
    "kgcoop": {"kg_ctx_init": "a photo of a", "kg_lambda": 8.0, "kg_lr": 0.002, "kg_batch": 128, "kg_epochs": 2},
    "tip": {"tip_alpha": 1.17, "tip_beta": 1.0, "tip_augment_epochs": 10, "tip_crop_scale": [0.5, 1.0],
            "tip_search": True, "tip_search_scale": [7.0, 3.0], "tip_search_steps": [200, 20]},
}


def test_upgrade_settings_renames_the_old_group_fields():
    new = upgrade_settings({"method": "kgcoop", "shots": 2, "template": "a {}.", **OLD_GROUPS}, ["red", "dark_red"])
    clip = new["clip"]
    assert new["shots"] == 2 and clip["validation"] == {"source": "shots", "shots": 4, "cv_folds": 4}
    assert clip["kgcoop"] == {"ctx_init": "a photo of a", "lambda_": 8.0, "lr": 0.002, "batch": 128, "epochs": 2}
    assert clip["tip"]["alpha"] == 1.17 and clip["tip"]["search"] is True and clip["prompt"]["flip"] is True
    assert clip["text"] == {"template": "a {}.", "class_names": "as-given"}  # what the old runs prompted with
    assert not set(OLD_GROUPS) & set(new)
    assert upgrade_settings(new) == new  # today's names pass unchanged
    assert upgrade_settings({"template": "a {}.", **OLD_GROUPS}, ["red"])["clip"]["text"]["class_names"] == "spaces"


def test_a_run_folder_with_old_field_names_resumes(tiny_clip, split_file, tmp_path):
    out = tmp_path / "kg"
    first = run_clip(job_for("kgcoop", split_file, out), progress=False, clip=tiny_clip)
    cfg = read_json(out / "config.json")
    old = {k: v for k, v in cfg["settings"].items() if k != "clip"}  # no ClipSettings, no text group yet
    old.update(json.loads(json.dumps(OLD_GROUPS)), template=cfg["settings"]["clip"]["text"]["template"])
    cfg["settings"] = old
    cfg["identity"]["kgcoop"] = OLD_GROUPS["kgcoop"]
    cfg["finished"] = False
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "predictions.jsonl").unlink()
    assert run_clip(job_for("kgcoop", split_file, out), progress=False, clip=tiny_clip) == first
    assert read_json(out / "config.json")["settings"]["clip"]["kgcoop"]["lambda_"] == 8.0  # rewritten as today's
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
