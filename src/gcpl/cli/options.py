"""Command-line options derived from settings dataclasses (see gcpl.settings): one option per
field with `cli` metadata, its help and default from the field, nested settings flattened.

Options are added with `default=SUPPRESS`, so the parsed namespace holds only what the user
typed; `build(cls, ns)` fills in the dataclass defaults and reports which fields were given
(resume uses that: a flag given and different from the stored run is refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from ..errors import GcplError
from ..settings import field_types, is_settings, meta


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


def option_fields(cls) -> list[tuple[dataclasses.Field, object]]:
    """(field, resolved type) of every command-line field of cls, nested settings flattened."""
    types = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        if not meta(f, "cli", True):
            continue
        out += option_fields(tp) if is_settings(tp) else [(f, tp)]
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One option per command-line field of cls (help shows the default when it is a value)."""
    for f, tp in option_fields(cls):
        if f.name in skip:
            continue
        default = _default(f)
        help_ = meta(f, "help", "")
        flag = meta(f, "flag")
        kw = {"help": help_, "dest": f.name, "default": argparse.SUPPRESS}
        if meta(f, "metavar"):
            kw["metavar"] = meta(f, "metavar")
        base, _ = _scalar(tp)
        if base is bool:
            if default is True:
                kw["action"], flag = "store_false", flag or "--no-" + f.name.replace("_", "-")
                kw["help"] = f"turn off: {help_}"
            else:
                kw["action"] = "store_true"
        else:
            kw["type"] = _checked(meta(f, "parse") or _converter(tp))
            if meta(f, "choices"):
                kw["choices"] = meta(f, "choices")
            if default not in (None, dataclasses.MISSING, ()):
                kw["help"] = f"{help_} (default: {_fmt(default)})" if help_ else f"default: {_fmt(default)}"
        if flag == "":  # positional
            kw.pop("dest")
            if typing.get_origin(_scalar(tp)[0]) is tuple:  # one or more values
                kw["nargs"], kw["type"] = "+", _checked(typing.get_args(_scalar(tp)[0])[0])
            if default is dataclasses.MISSING:
                kw.pop("default")
            else:
                kw["nargs"] = "*" if kw.get("nargs") == "+" else "?"
            parser.add_argument(f.name, **kw)
            continue
        if default is dataclasses.MISSING:
            kw["required"] = True
            kw.pop("default")
        flags = flag if isinstance(flag, tuple) else (flag or "--" + f.name.replace("_", "-"),)
        parser.add_argument(*flags, **kw)


def build(cls, ns: argparse.Namespace, **overrides):
    """cls from parsed options (dataclass defaults for what was not given) -> (obj, given names)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}  # nargs lists
    given = {f.name for f, _ in option_fields(cls) if f.name in values}
    return _build(cls, values, overrides), given


def _build(cls, values: dict, overrides: dict):
    types = field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        elif not meta(f, "cli", True):
            continue
        elif is_settings(tp):
            kwargs[f.name] = _build(tp, values, overrides)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)
