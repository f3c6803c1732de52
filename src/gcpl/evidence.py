"""Which timesteps separate the classes, learned from the support set only.

Not every timestep tells classes apart equally well: at high noise every prompt predicts about
the same, at very low noise the noise is hard to predict whatever the prompt (Li et al. 2023,
Fig. 4; Clark & Jaini 2023 learn a weighting of timesteps for the same reason). On support images
m (the labelled shots the class tokens were trained on), at a grid of timesteps t with one noise
per (image, t), the margin of a rival class r is d = error(r) - error(true class): positive when
the true class denoises better. Per timestep, mean mu(t) and standard deviation sd(t) of d over
images and rivals give

- the order in which racing evaluates the pool's pairs: highest mu/sd first (the evidence per
  UNet call), timesteps whose mean margin is not positive never;
- each pair's weight in the paired comparisons: mu/sd^2 (the matched filter: the weighting that
  maximises the signal-to-noise ratio of a sum of independent margins), interpolated in t.

`load_or_learn_evidence(run_dir, classifier)` reads the run's support set (run_dir/split.json,
its `train` list) and nothing else, and stores what it learned, with how (images, timesteps,
seed, versions), in run_dir/classifier_evidence.json; a later evaluation of the same run with the
same settings reuses it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__
from .classify import timestep_pool
from .errors import GcplError
from .io import read_json, write_json
from .latents import encode_files
from .runs import TrainedRun

FILE = "classifier_evidence.json"
VERSION = 1
GRID = 20  # timesteps of the grid (evenly spaced over the model's)
RIVALS = 8  # rival classes per support image (all of them when there are fewer)
SEED = 0  # noise and rivals of the evidence (independent of the classifier's seed)


@dataclass
class Evidence:
    timesteps: list[int]  # the grid
    margin_mean: list[float]  # mu(t): mean of error(rival) - error(true class)
    margin_std: list[float]  # sd(t)
    info: dict = field(default_factory=dict)  # how it was obtained

    def _interp(self, values: list[float], ts: torch.Tensor) -> torch.Tensor:
        x = torch.tensor(self.timesteps, dtype=torch.float64)
        y = torch.tensor(values, dtype=torch.float64)
        t = ts.double().clamp(x[0], x[-1])
        i = torch.searchsorted(x, t).clamp(1, len(x) - 1)
        f = (t - x[i - 1]) / (x[i] - x[i - 1])
        return y[i - 1] + f * (y[i] - y[i - 1])

    def pool_plan(self, ts: torch.Tensor, tie_order: list[int]) -> tuple[list[int], torch.Tensor]:
        """(order, weights) for a pool of timesteps ts: pool indices by decreasing mu/sd (ties in
        `tie_order`'s order), those with a positive mean margin only; weights mu/sd^2 scaled to a
        maximum of 1. Evidence that no timestep separates (no positive margin): tie_order, equal weights."""
        mu = self._interp(self.margin_mean, ts)
        sd = self._interp(self.margin_std, ts).clamp(min=1e-12)
        if not bool((mu > 0).any()):
            return list(tie_order), torch.ones(len(ts), dtype=torch.float64)
        snr = mu / sd
        rank = {k: i for i, k in enumerate(tie_order)}
        order = sorted((k for k in range(len(ts)) if mu[k] > 0), key=lambda k: (-float(snr[k]), rank[k]))
        w = mu.clamp(min=0) / sd**2
        return order, w / w.max()

    def strata_ranking(self, ts: torch.Tensor, n_strata: int) -> list[int]:
        """Strata of a pool of timesteps ts (gcpl.classify.strata_order) worth visiting, best first:
        by decreasing mu/sd at each stratum's centre, those with a positive mean margin only (all of
        them, in their own order, when none has one)."""
        s = len(ts) // n_strata
        centres = ts[torch.arange(n_strata) * s + s // 2]
        mu = self._interp(self.margin_mean, centres)
        sd = self._interp(self.margin_std, centres).clamp(min=1e-12)
        if not bool((mu > 0).any()):
            return list(range(n_strata))
        return sorted((j for j in range(n_strata) if mu[j] > 0), key=lambda j: (-float(mu[j] / sd[j]), j))

    def pool_weights(self, ts: torch.Tensor) -> torch.Tensor:
        """(pool,) weight of each pair in a class's mean error: mu/sd^2 at its timestep (the matched
        filter), scaled to a maximum of 1; equal weights when no timestep has a positive margin."""
        mu = self._interp(self.margin_mean, ts)
        sd = self._interp(self.margin_std, ts).clamp(min=1e-12)
        if not bool((mu > 0).any()):
            return torch.ones(len(ts), dtype=torch.float64)
        w = mu.clamp(min=0) / sd**2
        return w / w.max()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Evidence":
        return cls(list(d["timesteps"]), list(d["margin_mean"]), list(d["margin_std"]), dict(d.get("info", {})))


def learn_evidence(clf, x0: torch.Tensor, labels: torch.Tensor, grid: int = GRID, rivals: int = RIVALS,
                   seed: int = SEED) -> tuple[Evidence, int]:
    """Margins of rival classes on labelled SUPPORT latents x0 (M, ...) with labels (M,), at `grid`
    evenly spaced timesteps, one noise per (image, timestep). Returns (Evidence, UNet calls)."""
    C, M = clf.n_classes, len(x0)
    if C < 2:
        raise GcplError("learning which timesteps separate classes needs at least 2 classes")
    ts = timestep_pool(grid, clf.bb.num_train_timesteps)
    g = torch.Generator().manual_seed(seed)
    R = min(rivals, C - 1)
    margins, calls = [], 0
    for m in range(M):  # one image at a time: memory stays bounded at any size
        y = int(labels[m])
        others = torch.tensor([c for c in range(C) if c != y])
        cls = torch.cat([torch.tensor([y]), others[torch.randperm(C - 1, generator=g)[:R]]])  # (1 + R,)
        noise = torch.randn((grid, *x0.shape[1:]), generator=g)
        cc, kk = cls.repeat_interleave(grid), torch.arange(grid).repeat(1 + R)
        err = clf.errors_at(x0[m : m + 1].expand(len(cc), *x0.shape[1:]), cc, noise[kk], ts[kk]).double()
        err = err.view(1 + R, grid)
        margins.append(err[1:] - err[:1])  # (R, grid)
        calls += len(cc)
    d = torch.cat(margins)  # (M R, grid)
    ev = Evidence(ts.tolist(), d.mean(0).tolist(), d.std(0).tolist(),
                  {"grid": grid, "rivals": R, "seed": seed, "images": M, "margins": len(d), "unet_calls": calls})
    return ev, calls


def load_or_learn_evidence(run: TrainedRun, clf, classes: list[str], size: int | None = None,
                           log=None, file: str | Path | None = None) -> Evidence | None:
    """The evidence of a trained run for classifier `clf` (its backbone, class tokens and
    `cfg.evidence_shots`, `cfg.norm`), learned on the run's support set and stored in
    RUN/classifier_evidence.json (or `file`); reused when that file matches (same tokens,
    classes, model, size, norm and settings). `classes`: the class names in the classifier's
    order; `size`: the image size the test images are scored at (default: the model's). None
    when evidence_shots is 0."""
    shots = clf.cfg.evidence_shots
    if shots <= 0:
        return None
    bb = clf.bb
    size = size or bb.resolution
    key = {"version": VERSION, "run_tokens": run.digest,
           "classes": hashlib.sha256("\n".join(classes).encode()).hexdigest()[:16], "model": bb.model_id, "resolution": size,
           "prediction_type": bb.prediction_type, "norm": clf.cfg.norm, "shots": shots, "grid": GRID,
           "rivals": RIVALS, "seed": SEED}
    path = Path(file) if file else run.folder / FILE
    if path.exists():
        stored = read_json(path)
        if stored.get("key") == key:
            return Evidence.from_json(stored["evidence"])
    t0 = time.perf_counter()
    picked = run.support(shots, classes)
    stats, kept, skipped = encode_files(bb.vae, [s.path for s in picked], size)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[picked[i].class_name] for i in kept])
    ev, calls = learn_evidence(clf, stats.mean[:, 0] * bb.scaling_factor, labels)
    base = run.folder.resolve()
    ev.info.update({
        "source": "support set: the first shots of each class in split.json's train list (never test images)",
        "support_images": [_rel(picked[i].path, base) for i in kept], "skipped": [p for p, _ in skipped],
        "device": str(bb.device), "dtype": str(bb.dtype).replace("torch.", ""), "seconds": time.perf_counter() - t0,
        "versions": {"gcpl": __version__, "torch": torch.__version__},
    })
    write_json(path, {"key": key, "evidence": ev.to_json()})
    if log:
        log(f"learned which timesteps separate the classes on {len(kept)} support images ({calls} UNet calls) "
            f"-> {path}")
    return ev


def _rel(p: str, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base))
    except ValueError:
        return p
