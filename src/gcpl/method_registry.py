"""The table of every method gcpl can run (`METHODS`), filled by `@register_method` on each
method's definition: the diffusion methods in gcpl.methods, the CLIP competitors in
gcpl.clip.methods. Import `gcpl.methods` to see the whole table (it imports both).

    @register_method("coop", short="CoOp", label="CoOp (learned context)", family="clip",
                     trains=True, groups=("prompt", "coop"), demo_seconds=127)
    class CoOp(ClipMethod): ...

A leaf module (it imports nothing of gcpl's but the registry), so that method modules of any
family can register themselves without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry

FAMILIES = ("diffusion", "clip")


@dataclass(frozen=True)
class MethodInfo:
    name: str  # as given to --methods
    short: str  # in wide tables (experiment summaries)
    label: str  # in the demo's table
    family: str  # "diffusion" (needs the SD backbone) or "clip"
    uses_shots: bool = True  # False: sees no training image, runs once per seed (zero-shot)
    trains: bool = False  # learns by gradient steps (checkpoints, resume)
    groups: tuple[str, ...] = ()  # settings groups of the method's family that belong to its identity
    demo_seconds: float = 0.0  # single-thread CPU seconds on the demo benchmark (orders the demo's work only)
    impl: object = None  # the decorated class


METHODS: Registry[MethodInfo] = Registry("method")


def register_method(name: str, *, short: str, label: str, family: str, uses_shots: bool = True,
                    trains: bool = False, groups: tuple[str, ...] = (), demo_seconds: float = 0.0):
    """Class decorator: registers the class as method `name` with its table entries."""
    if family not in FAMILIES:
        raise ValueError(f"method family {family!r} is not one of {FAMILIES}")
    return METHODS.register(name, lambda cls: MethodInfo(name, short, label, family, uses_shots, trains,
                                                         tuple(groups), demo_seconds, cls))
