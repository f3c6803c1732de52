"""Registries filled by decorators next to the definitions they name (timm's `@register_model`).

    DATASETS = Registry("dataset")

    def register_dataset(info):
        return DATASETS.register(info.name, lambda f: dataclasses.replace(info, loader=f))

    @register_dataset(DatasetInfo("cars", ...))
    def load_cars(root, seed=0, test_fraction=None): ...

One registry per concept; an entry is registered where it is defined, so adding a method or a
dataset is one decorated definition. Order of registration is the order of `names()` (tables,
help texts). A name registered twice is a programming error (ValueError at import time); an
unknown name asked for by a user is a one-line GcplError listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import GcplError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, loader: Callable[[], None] | None = None):
        """what: the concept, for error messages ("dataset", "method"); loader: imports the
        modules whose definitions register themselves (called once, on first lookup)."""
        self.what = what
        self._items: dict[str, T] = {}
        self._loader = loader

    def _load(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader()

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str, build: Callable[[object], T]):
        """Decorator: registers `build(obj)` under `name` (e.g. `lambda f: dataclasses.replace(info,
        loader=f)`) and returns the decorated object unchanged. Concept modules wrap it in their own
        decorator (`register_dataset(info)`, `register_method(...)`)."""

        def deco(obj):
            self.add(name, build(obj))
            return obj

        return deco

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise GcplError(f"unknown {self.what} {name!r}; choose one of {', '.join(self._items)}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._items)

    def items(self):
        self._load()
        return list(self._items.items())

    def values(self):
        self._load()
        return list(self._items.values())
