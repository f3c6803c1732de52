"""Settings defined once: every field of every command's settings dataclass is a command-line
option (and nothing else is); changing an identity field on resume is refused, changing any
other field is not."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from gcpl.cli import COMMANDS, build_parser
from gcpl.cli.options import option_fields
from gcpl.errors import GcplError
from gcpl.settings import field_types, group_prefix, identity, is_settings, meta, plain, setting


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


# fields deliberately not options: the demo's own presets (its --steps / --n-samples / --keep set them)
NOT_OPTIONS = {"demo": {"gcpl", "comple", "classify"}}


def _leaf_fields(cls, skip=frozenset(), prefix=""):
    """(dest, field) of every non-nested field, nested settings walked (the fields a group hides
    left out), top-level fields named in `skip` left out."""
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if is_settings(types[f.name]):
            yield from _leaf_fields(types[f.name], frozenset(meta(f, "hide", ())), group_prefix(f, prefix))
        else:
            yield prefix + f.name, f, types[f.name], None


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_setting_is_an_option_and_every_option_a_setting(command):
    actions = [a for a in _subparser(command.name)._actions if a.dest not in ("help", "verbose")]
    hidden = NOT_OPTIONS.get(command.name, set())
    fields = list(_leaf_fields(command.settings, frozenset(hidden)))
    assert sorted(a.dest for a in actions) == sorted(leaf[0] for leaf in fields)
    assert {f.name for f in dataclasses.fields(command.settings) if not meta(f, "cli", True)} == hidden
    for dest, f, *_ in fields:
        assert meta(f, "help"), f"{command.name}: {dest} has no help text"
    for a in actions:  # defaults are the dataclass's: argparse holds none of its own
        assert a.default is argparse.SUPPRESS or a.required or a.nargs == "?" or a.option_strings == [], a.dest


def test_option_names_are_unique_per_command():
    for c in COMMANDS:
        names = [leaf.dest for leaf in option_fields(c.settings)]
        assert len(names) == len(set(names)), c.name


def _other_value(f, tp, value):
    """A valid value different from `value` for a field of type tp."""
    choices = meta(f, "choices")
    if choices:
        return next(c for c in choices if c != value)
    base = [a for a in getattr(tp, "__args__", (tp,)) if a is not type(None)][0] if value is None else type(value)
    if base is bool:
        return not value
    if base in (int, float):
        return (value or 0) + 1 if base is int else (value or 0.5) * 2
    if base is str:
        return "x " + value if value and "{}" in value else (value or "") + "x"
    if isinstance(value, tuple):
        return tuple(v * 2 if not isinstance(v, str) else v + "x" for v in value)
    return 3  # int | None etc.


def _variants(job):
    """(dotted name, is identity, changed job) for every non-nested field of a settings object."""
    for f in dataclasses.fields(job):
        value = getattr(job, f.name)
        if dataclasses.is_dataclass(value):
            for name, ident, sub in _variants(value):
                yield f"{f.name}.{name}", ident, dataclasses.replace(job, **{f.name: sub})
            continue
        tp = field_types(type(job))[f.name]
        try:
            changed = dataclasses.replace(job, **{f.name: _other_value(f, tp, value)})
        except GcplError:
            continue  # no other valid value without changing a second field
        yield f.name, meta(f, "identity", True), changed


@pytest.mark.parametrize("command", ["train", "eval"])
def test_resume_refuses_identity_changes_only(tmp_path, command):
    from gcpl.api import EvalJob, TrainJob
    from gcpl.runs import check_same_job
    from gcpl.trainer import TrainConfig

    base = (TrainJob(data="d", out=str(tmp_path), train=TrainConfig(lr=1e-3, steps=10, batch=4, groups=1))
            if command == "train" else EvalJob(data="d", out=str(tmp_path), run="r"))
    (tmp_path / "config.json").write_text(json.dumps({"settings": plain(base), "classes": ["a", "b"]}))
    check_same_job(tmp_path, base, ["a", "b"], "a run")  # the same job resumes
    seen = 0
    for name, ident, job in _variants(base):
        if identity(job) == identity(base) and ident:
            continue  # e.g. a value normalised back by __post_init__
        seen += 1
        if ident:
            with pytest.raises(GcplError, match=rf"other settings \(.*{name.split('.')[-1]}: .* -> "):
                check_same_job(tmp_path, job, ["a", "b"], "a run")
        else:
            check_same_job(tmp_path, job, ["a", "b"], "a run")
    assert seen >= 15


@dataclasses.dataclass
class Inner:
    x: int = setting(1, "an int")
    flip: bool = setting(True, "a flag", flag="--no-flip")
    secret: int = setting(5, "set by the embedding")


@dataclasses.dataclass
class Outer:
    a: Inner = setting(default_factory=Inner, prefix="a", hide=("secret",), help="first")
    b: Inner = setting(default_factory=Inner, prefix="b", defaults={"x": 7}, help="second")
    plain: Inner = setting(default_factory=Inner, hide=("x", "flip", "secret"), help="unprefixed")


def test_prefixed_groups_hidden_fields_and_embedding_defaults():
    """A dataclass embedded twice under prefixes: options --a-x / --b-x with their own dests, a
    negative flag gets the prefix after --no-, hidden fields are no options, an embedding's
    defaults are shown and applied; unprefixed groups keep their names."""
    from gcpl.cli.options import add_options, build
    from gcpl.settings import flat, replace

    p = argparse.ArgumentParser()
    add_options(p, Outer)
    flags = {s for a in p._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == {"--a-x", "--no-a-flip", "--b-x", "--no-b-flip", "--b-secret"}
    assert "(default: 7)" in next(a.help for a in p._actions if "--b-x" in a.option_strings)
    obj, given = build(Outer, p.parse_args(["--a-x", "3", "--no-b-flip"]))
    assert (obj.a.x, obj.a.flip, obj.a.secret, obj.b.x, obj.b.flip) == (3, True, 5, 7, False)
    assert given == {"a_x", "b_flip"}
    assert flat(obj)["a_x"] == 3 and flat(obj)["b_x"] == 7 and flat(obj)["x"] == 1
    changed = replace(obj, {"b_x": 9, "x": 4})
    assert (changed.a.x, changed.b.x, changed.plain.x) == (3, 9, 4)
