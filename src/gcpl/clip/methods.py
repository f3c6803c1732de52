"""The CLIP methods by name: each registers itself (`@register_method(..., family="clip")`, gcpl.
method_registry) where it is defined; importing this module imports every one of them."""

from __future__ import annotations

from ..method_registry import METHODS

# Each module registers its methods; the order of these imports is the order of tables.
# isort: off
from . import classic  # noqa: F401
from . import tip  # noqa: F401
from . import coop  # noqa: F401
from . import deep  # noqa: F401
# isort: on
from .base import ClipMethod
from .config import ClipJob
from .model import Clip


def clip_methods() -> tuple[str, ...]:
    """The registered CLIP methods, in registration order."""
    return tuple(n for n, m in METHODS.items() if m.family == "clip")


def make_method(job: ClipJob, clip: Clip, classes: list[str]) -> ClipMethod:
    return METHODS[job.method].impl(job, clip, classes)
