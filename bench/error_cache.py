"""A persistent cache of the classifier's denoising errors, so that many schedules can be replayed
on the same images for the price of the union of what they evaluate.

Every schedule of `gcpl.classify.DiffusionClassifier` with the same noise seed draws its
(timestep, noise) pairs from the same pool (`POOL` = 500 pairs: Li et al.'s timesteps, one noise
each, drawn from the seed), so the error of (image, class, pool index) is one number whatever
schedule asks for it. `Replay` serves a classifier's errors from a dense (images, classes, pool)
tensor (NaN = not computed yet), computes what is missing with the UNet and stores it; replaying a
schedule gives the predictions and call counts of running it (up to the float rounding of other
batch compositions). The tensor is saved atomically (`save`), so a killed job loses at most what
it computed since the last save and a rerun resumes.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import torch


class ErrorCache:
    def __init__(self, path: str | Path, keys: list[str], n_classes: int, pool: int, meta: dict):
        """keys: one string per image (its path), `rows(keys)` maps them to rows; meta: what the
        errors depend on (run tokens, model, resolution, seed, norm); a stored cache with other
        meta is refused. Rows of a stored cache are kept, whatever keys this process asks for."""
        self.path, self.meta = Path(path), dict(meta)
        stored = torch.load(self.path, weights_only=False) if self.path.exists() else None
        if stored is not None and stored["meta"] != self.meta:
            raise SystemExit(f"{self.path} holds errors of other settings: {stored['meta']} != {self.meta}")
        old = list(stored["keys"]) if stored is not None else []
        self.keys = old + [k for k in dict.fromkeys(keys) if k not in set(old)]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.errors = torch.full((len(self.keys), n_classes, pool), float("nan"))
        if stored is not None:
            self.errors[: len(old)] = stored["errors"]
        self.computed = 0  # UNet calls made by this process
        self._saved_at = time.monotonic()

    def rows(self, keys: list[str]) -> list[int]:
        return [self.index[k] for k in keys]

    def save(self, every_s: float = 0.0) -> None:
        """Write the cache (atomically) if `every_s` seconds passed since the last write."""
        if time.monotonic() - self._saved_at < every_s:
            return
        from gcpl.io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"meta": self.meta, "keys": self.keys, "errors": self.errors}, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self._saved_at = time.monotonic()

    def filled(self) -> int:
        return int((~self.errors.isnan()).sum())


class Replay:
    """A classifier (gcpl.classify.DiffusionClassifier) whose errors come from an ErrorCache where
    present: its `errors_fn` is replaced, missing errors are computed with its UNet (unless
    `compute` is False) and stored. Call `score(x0, ids)` with the cache rows of the images in x0.
    `columns`: the cache column of each of the classifier's classes (a classifier over a subset of
    the run's classes)."""

    def __init__(self, clf, cache: ErrorCache, compute: bool = True, columns=None):
        self.clf, self.cache, self.compute, self.ids = clf, cache, compute, None
        self.columns = torch.as_tensor(columns if columns is not None else range(clf.n_classes), dtype=torch.long)
        if clf.noise.shape[0] != cache.errors.shape[2]:
            raise SystemExit(f"classifier pool {clf.noise.shape[0]} != cache pool {cache.errors.shape[2]}")
        clf.errors_fn = self.errors

    def score(self, x0, ids=None):
        self.ids = torch.as_tensor(ids if ids is not None else range(len(x0)))
        return self.clf.score(x0)

    def errors(self, x0, triples):
        if not triples:
            return torch.zeros(0)
        trip = torch.tensor(triples, dtype=torch.long)
        rows, cols = self.ids[trip[:, 0]], self.columns[trip[:, 1]]
        vals = self.cache.errors[rows, cols, trip[:, 2]].clone()
        miss = vals.isnan().nonzero().flatten()
        if len(miss):
            if not self.compute:
                raise LookupError(f"{len(miss)} errors are not in the cache")
            new = self.clf.unet_errors(x0, [triples[i] for i in miss.tolist()]).float()
            self.cache.errors[rows[miss], cols[miss], trip[miss, 2]] = new
            self.cache.computed += len(miss)
            vals[miss] = new
        return vals.double()
