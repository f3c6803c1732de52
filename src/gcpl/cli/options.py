"""Command-line options derived from settings dataclasses (see gcpl.settings): one option per
field with `cli` metadata, its help and default from the field, nested settings flattened (a
group with a `prefix` gives `--PREFIX-NAME` options; the option's dest is the field's dest,
gcpl.settings.leaves).

Options are added with `default=SUPPRESS`, so the parsed namespace holds only what the user
typed; `build(cls, ns)` fills in the dataclass defaults and reports which fields were given
(resume uses that: a flag given and different from the stored run is refused).

`--help` groups the options by where their field lives (`option_groups`): the command's own
fields ("options", with the model's under "model"), then one group per nested settings dataclass
(TrainConfig: "training", ClassifyConfig: "classifier", ...), described by the nested field's
help. An option's help ends with its choices (unless the text names them all) and its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from ..errors import GcplError
from ..settings import Leaf, field_types, group_prefix, is_settings, leaves, meta


def ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def words(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _scalar(tp):
    """(type, is_optional) of an annotation: int | None -> (int, True)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _converter(tp):
    base, _ = _scalar(tp)
    if typing.get_origin(base) is tuple:
        inner = typing.get_args(base)[0]
        return {int: ints, float: floats, str: words}[inner]
    if base in (int, float, str):
        return base
    raise TypeError(f"no command-line converter for {tp}")


def _checked(fn):
    """A converter whose GcplError argparse reports like its own (usage, then one error line)."""

    def convert(text):
        try:
            return fn(text)
        except GcplError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(fn, "__name__", "value")
    return convert


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


#: the command's own fields shown under "model" in --help (the frozen model and where it runs)
MODEL_FIELDS = ("model", "clip_model", "device", "dtype", "resolution", "compile")
#: the title of a nested settings group in --help, by its dataclass's name (else the field's name)
GROUP_TITLES = {"TrainConfig": "training", "ClassifyConfig": "classifier", "RunSettings": "every run"}


class OptionGroup(typing.NamedTuple):
    title: str | None  # None: the parser's own options
    description: str | None
    leaves: list[Leaf]


def option_groups(cls) -> list[OptionGroup]:
    """The command-line fields of cls in --help groups (see the module docstring); together they are
    option_fields(cls), in the same order within each group."""
    types = field_types(cls)
    fields = option_fields(cls)
    top = {f.name for f in dataclasses.fields(cls) if not is_settings(types[f.name])}
    own = [leaf for leaf in fields if leaf.dest in top and leaf.dest not in MODEL_FIELDS]
    model = [leaf for leaf in fields if leaf.dest in top and leaf.dest in MODEL_FIELDS]
    groups, placed = [], {leaf.dest for leaf in own + model}
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        if not (is_settings(tp) and meta(f, "cli", True)):
            continue
        inner = {leaf.dest for leaf in leaves(tp, group_prefix(f), True, meta(f, "hide", ()), meta(f, "defaults", {}))}
        members = [leaf for leaf in fields if leaf.dest in inner and leaf.dest not in placed]
        if not members:
            continue
        placed |= {leaf.dest for leaf in members}
        title = GROUP_TITLES.get(tp.__name__, f.name.replace("_", " "))
        if meta(f, "prefix"):
            title = f"{title} (--{meta(f, 'prefix')}-*)"
        help_ = meta(f, "help", "")
        groups.append(OptionGroup(title, None if help_ in ("", f"{title} settings") else help_, members))
    own += [leaf for leaf in fields if leaf.dest not in placed]  # none: every leaf is in a group above
    return [OptionGroup(None, None, own), *([OptionGroup("model", None, model)] if model else []), *groups]


def _choices_text(help_: str, choices) -> str:
    """`choices` to add to a help text: '' when the text already names every one."""
    names = [str(c) for c in choices]
    if all(n in help_ for n in names):
        return ""
    return "one of: " + ", ".join(names)


def option_fields(cls) -> list[Leaf]:
    """(dest, field, resolved type, default) of every command-line field of cls, nested settings
    flattened."""
    return leaves(cls, cli_only=True)


def _flags(dest: str, f: dataclasses.Field, negative: bool) -> tuple[str, ...]:
    """The option strings of a field: its own `flag` (a prefixed group puts its prefix after the
    dashes, and after `--no-` for a negative flag), else --DEST (--no-DEST for a bool that defaults
    to True)."""
    flag = meta(f, "flag")
    prefix = dest[: len(dest) - len(f.name)].replace("_", "-")
    if isinstance(flag, tuple):
        return flag
    if not flag:
        return (("--no-" if negative else "--") + dest.replace("_", "-"),)
    if not prefix:
        return (flag,)
    if flag.startswith("--no-"):
        return ("--no-" + prefix + flag[5:],)
    return ("--" + prefix + flag.lstrip("-"),)


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One option per command-line field of cls (help shows the choices and the default when it is
    a value); on a parser (not an argument group) the options are grouped as option_groups says."""
    if not isinstance(parser, argparse.ArgumentParser):
        _add(parser, option_fields(cls), skip)
        return
    for group in option_groups(cls):
        target = parser if group.title is None else parser.add_argument_group(group.title, group.description)
        _add(target, group.leaves, skip)


def _add(parser, fields: list[Leaf], skip: tuple[str, ...]) -> None:
    for dest, f, tp, default in fields:
        if dest in skip:
            continue
        help_ = meta(f, "help", "")
        flag = meta(f, "flag")
        kw = {"help": help_, "dest": dest, "default": argparse.SUPPRESS}
        if meta(f, "metavar"):
            kw["metavar"] = meta(f, "metavar")
        base, _ = _scalar(tp)
        negative = base is bool and default is True
        if base is bool:
            if negative:
                kw["action"] = "store_false"
                kw["help"] = f"turn off: {help_}"
            else:
                kw["action"] = "store_true"
        else:
            kw["type"] = _checked(meta(f, "parse") or _converter(tp))
            notes = []
            if meta(f, "choices"):
                kw["choices"] = meta(f, "choices")
                notes.append(_choices_text(help_, kw["choices"]))
            if default not in (None, dataclasses.MISSING, ()):
                notes.append(f"default: {_fmt(default)}")
            notes = "; ".join(n for n in notes if n)
            if notes:
                kw["help"] = f"{help_} ({notes})" if help_ else notes
        kw["help"] = kw["help"].replace("%", "%%")  # argparse formats help with %
        if flag == "":  # positional
            kw.pop("dest")
            if typing.get_origin(_scalar(tp)[0]) is tuple:  # one or more values
                kw["nargs"], kw["type"] = "+", _checked(typing.get_args(_scalar(tp)[0])[0])
            if default is dataclasses.MISSING:
                kw.pop("default")
            else:
                kw["nargs"] = "*" if kw.get("nargs") == "+" else "?"
            parser.add_argument(dest, **kw)
            continue
        if default is dataclasses.MISSING:
            kw["required"] = True
            kw.pop("default")
        parser.add_argument(*_flags(dest, f, negative), **kw)


def build(cls, ns: argparse.Namespace, **overrides):
    """cls from parsed options (dataclass defaults for what was not given) -> (obj, given names)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}  # nargs lists
    given = {leaf.dest for leaf in option_fields(cls) if leaf.dest in values}
    return _build(cls, values, overrides), given


def _build(cls, values: dict, overrides: dict, prefix: str = "", defaults: dict | None = None):
    """overrides: top-level field name -> value (not parsed from the command line); defaults: the
    embedding's defaults of a nested group's fields."""
    types = field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        if not prefix and f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        elif not meta(f, "cli", True):
            continue
        elif is_settings(tp):
            kwargs[f.name] = _build(tp, values, overrides, group_prefix(f, prefix), meta(f, "defaults", {}))
        elif prefix + f.name in values:
            kwargs[f.name] = values[prefix + f.name]
        elif defaults and f.name in defaults:
            kwargs[f.name] = defaults[f.name]
    return cls(**kwargs)
