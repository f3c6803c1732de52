"""One labelled image of a split or a class folder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    path: str  # absolute path once loaded
    label: int  # index into the class list
    class_name: str
