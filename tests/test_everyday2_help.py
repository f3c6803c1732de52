"""Everyday use, second pass: `--help` groups the options by what they set, a mistyped option or
command gets "did you mean ...?" under the command's own usage, and the help texts say what the
options do: their choices, their real defaults, no words left from behaviour that changed."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from gcpl.cli import COMMANDS, build_parser, main
from gcpl.cli.options import build, option_fields
from gcpl.settings import MISSING, field_types, flat, is_settings


def _subparser(name: str) -> argparse.ArgumentParser:
    return build_parser().commands[name]


def _groups(name: str) -> dict[str, set[str]]:
    """title -> dests of the options in that --help group."""
    return {g.title: {a.dest for a in g._group_actions} for g in _subparser(name)._action_groups}


def _nested_dests(cls, field_name: str) -> set[str]:
    """The option dests of the fields of cls's nested settings field `field_name`."""
    f = next(f for f in dataclasses.fields(cls) if f.name == field_name)
    inner = {g.name for g in dataclasses.fields(field_types(cls)[f.name])}
    return {leaf.dest for leaf in option_fields(cls) if leaf.field.name in inner and leaf.dest not in
            {x.name for x in dataclasses.fields(cls)}}


# --- groups -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command, field, title", [("train", "train", "training"), ("eval", "classify", "classifier"),
                                                   ("predict", "classify", "classifier")])
def test_options_are_grouped_by_the_settings_they_belong_to(command, field, title):
    cls = next(c.settings for c in COMMANDS if c.name == command)
    groups = _groups(command)
    assert groups[title] == _nested_dests(cls, field)
    assert {"model", "device", "dtype", "resolution"} <= groups["model"]
    assert "out" in groups["options"] and "steps" not in groups["options"]


def test_help_shows_the_groups_in_order_and_prefixed_groups_say_their_prefix(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    heads = [line[:-1] for line in text.splitlines() if re.fullmatch(r"[a-z][\w ()*-]*:", line)]
    assert heads == ["example", "positional arguments", "options", "model", "training"]
    assert text.index("\ntraining:") < text.index("\n  --steps STEPS")
    assert text.index("\n  --out OUT") < text.index("\nmodel:") < text.index("\n  --model MODEL")
    assert main(["experiment", "--help"]) == 0
    text = capsys.readouterr().out
    assert "training (--gcpl-*):" in text and "training (--comple-*):" in text and "classifier (--classify-*):" in text


def test_every_option_is_in_exactly_one_group():
    for c in COMMANDS:
        groups = _groups(c.name)
        seen = [d for dests in groups.values() for d in dests if d not in ("help", "verbose")]
        assert sorted(seen) == sorted(leaf.dest for leaf in option_fields(c.settings)), c.name


# --- did you mean --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, typo, meant", [
    (["train", "d", "--out", "o", "--stpes", "5"], "--stpes", "--steps"),
    (["eval", "d", "--out", "o", "--zero-shot", "--n-smaples=4"], "--n-smaples=4", "--n-samples"),
    (["predict", "p", "--out", "o", "--tmeperature", "2"], "--tmeperature", "--temperature"),
])
def test_a_mistyped_option_gets_did_you_mean_under_its_commands_usage(argv, typo, meant, capsys, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"usage: gcpl {argv[0]} ")
    assert err[-1].startswith(f"gcpl {argv[0]}: error: unrecognized arguments: {typo}")
    assert err[-1].endswith(f"did you mean {meant}?")
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_mistyped_command_or_choice_gets_did_you_mean(capsys):
    assert main(["trian", "d"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("did you mean train?")
    assert main(["eval", "d", "--out", "o", "--part", "tset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: gcpl eval ") and err[-1].endswith("did you mean test?")


def test_nothing_close_gets_no_guess(capsys):
    assert main(["train", "d", "--out", "o", "--zzzzzz"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "gcpl train: error: unrecognized arguments: --zzzzzz"


# --- help texts match behaviour ------------------------------------------------------------------------------


def _actions():
    for c in COMMANDS:
        for a in _subparser(c.name)._actions:
            if a.dest not in ("help", "verbose"):
                yield c, a


def test_every_option_with_choices_names_them_in_its_help():
    for c, a in _actions():
        if a.choices:
            missing = [x for x in a.choices if str(x) not in a.help]
            assert not missing, f"gcpl {c.name} {a.option_strings}: help does not name {missing}"


def test_no_help_describes_behaviour_that_is_gone():
    """Fixed stages are the classifier's default and racing an experimental --spacing: no help may
    still call stages the alternative to racing."""
    stale = {(c.name, a.dest) for c, a in _actions() if "instead of racing" in (a.help or "")}
    assert not stale


def _required(cls) -> dict:
    """A value for every required top-level field (enough to build the settings object)."""
    types = field_types(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and not is_settings(types[f.name]):
            out[f.name] = ("x",) if "tuple" in str(types[f.name]) else "x"
    return out


EXTRA = {"experiment": {"data": "x"}, "prepare": {"dataset": "folder"}}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_a_default_shown_in_help_is_the_default_the_command_gets(command):
    obj, given = build(command.settings, argparse.Namespace(),
                       **{**_required(command.settings), **EXTRA.get(command.name, {})})
    values = flat(obj)
    actions = {a.dest: a for a in _subparser(command.name)._actions}
    checked = 0
    for leaf in option_fields(command.settings):
        m = re.search(r"default: ([^;()]*)\)$", actions[leaf.dest].help or "")
        if not m or leaf.default in (None, MISSING):
            continue  # no default value shown (a description such as "the model's" is not a value)
        value = values[leaf.dest]
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        assert m.group(1) == shown, f"gcpl {command.name} --{leaf.dest}: help says {m.group(1)!r}, gets {shown!r}"
        checked += 1
    assert checked or command.name in ("report", "prepare")


def test_train_help_still_shows_plain_defaults(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: 16)" in text and "(one of: fp32, bf16, fp16)" in text and "(default: gcpl)" in text
