"""Settings defined once: a dataclass field carries its help text and whether it belongs to a
run's identity; the command line (gcpl.cli.options), the stored config.json and the resume
check are all derived from the fields.

    @dataclass
    class TrainConfig:
        lr: float | None = setting(None, "learning rate (default: the model's, else the paper's)")
        checkpoint_every: int = setting(100, "steps between checkpoints", identity=False)

Metadata keys (all optional but `help`):
    help      one line for `--help`
    identity  part of what a run *is*: resuming or reusing a folder with another value is refused
              (default True); bookkeeping such as batch sizes for speed or paths is not
    cli       exposed as a command-line option (default True)
    flag      the option string when it is not `--field-name` (e.g. "--no-flip" for a bool that
              defaults to True, "--run-dir" for `run`); "" makes it positional
    choices   allowed values
    parse     callable str -> value for types the annotation does not describe (e.g. "0/2")
    metavar   shown in --help
    prefix    on a field whose type is itself a settings dataclass: its fields become options
              `--PREFIX-NAME` (ExperimentConfig.gcpl: TrainConfig with prefix "gcpl" gives
              --gcpl-steps, --gcpl-lr, ...), so one dataclass can be embedded twice
    hide      on such a field: names of its fields that are not options there (the embedding
              command sets them itself, e.g. an experiment sets each run's seed)
    defaults  on such a field: {name: value} defaults of its fields in this embedding (the
              command line shows and applies them; the dataclass's own defaults elsewhere)
A field whose type is itself a settings dataclass (TrainJob.train: TrainConfig) is flattened:
its fields become options of the same command, named as they are unless the field has a prefix.
Each leaf is known by its *dest*: its name behind the prefixes of the groups it is nested in
(`gcpl_steps`); `leaves`, `flat` and `replace` speak dests.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import MISSING, Field, field


def setting(default=MISSING, help: str = "", *, default_factory=MISSING, identity: bool = True, cli: bool = True,
            flag: str | None = None, choices=None, parse=None, metavar: str | None = None,
            prefix: str | None = None, hide: tuple[str, ...] = (), defaults: dict | None = None) -> Field:
    """A dataclass field with its command-line help and its role in a run's identity."""
    meta = {"help": help, "identity": identity, "cli": cli, "flag": flag, "choices": choices, "parse": parse,
            "metavar": metavar, "prefix": prefix, "hide": tuple(hide), "defaults": dict(defaults or {})}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def meta(f: Field, key: str, fallback=None):
    return f.metadata.get(key, fallback) if f.metadata else fallback


def is_settings(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def field_types(cls) -> dict[str, object]:
    """Resolved annotations of a dataclass (they are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def plain(value):
    """JSON-ready copy: tuples -> lists, dataclasses -> dicts (as config.json stores them)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value))


def identity(obj) -> dict:
    """The fields of a settings dataclass that define what a run is (nested dataclasses as dicts)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = identity(value)
        elif meta(f, "identity", True):
            out[f.name] = plain(value)
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(stored: dict, current: dict) -> list[str]:
    """'key: old -> new' for every identity setting that differs (nested keys dotted)."""
    a, b = _flatten(plain(stored)), _flatten(plain(current))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def group_prefix(f: Field, prefix: str = "") -> str:
    """The dest prefix of the fields nested under field f (itself under `prefix`)."""
    own = meta(f, "prefix")
    return f"{prefix}{own}_" if own else prefix


class Leaf(typing.NamedTuple):
    dest: str  # the field's name behind the prefixes of its groups
    field: Field
    type: object  # resolved annotation
    default: object  # the field's default where it is embedded (MISSING: required)


def field_default(f: Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def leaves(cls, prefix: str = "", cli_only: bool = False, hidden: tuple[str, ...] = (),
           defaults: dict | None = None) -> list[Leaf]:
    """Every non-nested field of a settings dataclass, nested settings walked (cli_only: fields
    with cli=False, everything under them, and the fields a group hides, left out)."""
    types = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        if cli_only and (not meta(f, "cli", True) or f.name in hidden):
            continue
        tp = types[f.name]
        if is_settings(tp):
            out += leaves(tp, group_prefix(f, prefix), cli_only, meta(f, "hide", ()), meta(f, "defaults", {}))
        else:
            default = (defaults or {}).get(f.name, field_default(f))
            out.append(Leaf(prefix + f.name, f, tp, default))
    return out


def embedded(obj_or_cls, name: str):
    """A nested settings field's default object where it is embedded: the group's dataclass with
    the embedding's `defaults` applied (dataclasses.field defaults elsewhere)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    base = field_default(f)
    over = meta(f, "defaults", {})
    return dataclasses.replace(base, **over) if over else base


def flat(obj, prefix: str = "") -> dict:
    """dest -> value of every non-nested field of a settings object."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flat(value, group_prefix(f, prefix)))
        else:
            out[prefix + f.name] = value
    return out


def replace(obj, values: dict, prefix: str = ""):
    """A copy of a (nested) settings dataclass with `values` (dest -> value) applied; unknown
    dests are ignored."""
    changes = {}
    for f in dataclasses.fields(obj):
        cur = getattr(obj, f.name)
        if dataclasses.is_dataclass(cur) and not isinstance(cur, type):
            changes[f.name] = replace(cur, values, group_prefix(f, prefix))
        elif prefix + f.name in values:
            changes[f.name] = values[prefix + f.name]
    return dataclasses.replace(obj, **changes)


def from_dict(cls, d: dict):
    """Rebuild a (nested) settings dataclass from its asdict()/config.json form; lists become
    tuples where the field is a tuple; unknown keys are ignored (older or newer files)."""
    types = field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        tp, value = types[f.name], d[f.name]
        if is_settings(tp) and isinstance(value, dict):
            value = from_dict(tp, value)
        elif isinstance(value, list) and _is_tuple(tp):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _is_tuple(tp) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in args)
