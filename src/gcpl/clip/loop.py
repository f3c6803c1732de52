"""The epoch loop every trained CLIP method shares, with resumable checkpoints.

Sampling follows Dassl's data loader (CoOp's toolbox): each epoch a fresh random order of the
support set, batches of `batch`, the last partial batch dropped when the set holds at least one
full batch (`drop_last = len(data) >= batch_size`); Tip-Adapter's loader keeps it
(`drop_last=False`). Every random draw of epoch e (order, crops, flips) comes from a generator
seeded by (seed, method, e), so an epoch is the same whether the run went straight through or
resumed from a checkpoint.

Learning rates:
- `dassl_lr(epoch)`: Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max=epochs),
  stepped once per epoch: epochs 0..w-1 run at `warmup_lr`; epoch e >= w at
  lr * (1 + cos(pi * (e - w) / epochs)) / 2 (the successor scheduler restarts its count after the
  warm-up, which is what the official runs did).
- `cosine_iter_lr(t, T)`: CosineAnnealingLR(T_max = epochs * iterations) stepped every
  iteration (Tip-Adapter-F).

Checkpoints (every `checkpoint_every` epochs and at the end) go through gcpl.checkpoint's rotating
snapshots: folder/epoch-NNNN.safetensors holds the learnable tensors, the optimizer state and any
extra state (PromptSRC's running prompt aggregate), with the epoch, the loss log and what the loop
trains in its header; folder/latest.json names it (written after it, atomically) and older
snapshots are deleted. A crash leaves the previous snapshot whole; no pickle is involved. (The
state.json of older gcpl versions is not read: such an interrupted training starts over, to the
same result.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import checkpoint
from ..data.splits import class_seed
from ..errors import GcplError


def dassl_lr(epoch: int, lr: float, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """The learning rate of (0-based) epoch `epoch` under Dassl's constant warm-up + cosine."""
    if epoch < warmup_epochs:
        return warmup_lr
    return lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / epochs)) / 2


def cosine_iter_lr(t: int, total: int, lr: float) -> float:
    return lr * (1 + math.cos(math.pi * t / total)) / 2


def epoch_batches(n: int, batch: int, g: torch.Generator, drop_last: bool = True) -> list[list[int]]:
    """A random order of range(n) cut into batches (Dassl: drop the last partial batch when
    n >= batch; with drop_last False it is kept)."""
    order = torch.randperm(n, generator=g).tolist()
    out = [order[i : i + batch] for i in range(0, n, batch)]
    if drop_last and n >= batch and len(out[-1]) < batch:
        out.pop()
    return out


def epoch_generator(seed: int, tag: str, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(class_seed(seed, f"clip/{tag}/epoch/{epoch}"))


def init_generator(seed: int, tag: str) -> torch.Generator:
    return torch.Generator().manual_seed(class_seed(seed, f"clip/{tag}/init"))


@dataclass
class EpochLoop:
    """Runs `epochs` epochs of `step(indices, generator, epoch) -> loss` over n support items,
    resuming from `folder` when it holds a checkpoint of this loop."""

    learner: torch.nn.Module
    optimizer: torch.optim.Optimizer
    folder: Path
    seed: int
    tag: str  # the method: part of every epoch's seed
    epochs: int
    n: int
    batch: int
    lr_at: Callable[[int, int, int], float]  # (epoch, iteration in epoch, iterations per epoch) -> lr
    drop_last: bool = True
    checkpoint_every: int = 1
    on_epoch_end: Callable[[int], None] | None = None
    extra_state: Callable[[], dict[str, torch.Tensor]] | None = None
    load_extra: Callable[[dict[str, torch.Tensor]], None] | None = None
    log: list[dict] = field(default_factory=list)

    def _save(self, epoch: int) -> None:
        tensors, groups = checkpoint.optimizer_tensors(self.optimizer)
        tensors.update(checkpoint.module_tensors("learner", self.learner))
        if self.extra_state:
            tensors.update({f"extra.{k}": v for k, v in self.extra_state().items()})
        meta = {"epoch": epoch, "tag": self.tag, "epochs": self.epochs, "optimizer": groups, "log": self.log}
        checkpoint.save_rotating(self.folder, f"epoch-{epoch:04d}", tensors, meta, keep=lambda names: names)
        _checkpoint_written(self.folder, epoch)

    def _resume(self) -> int:
        path = checkpoint.latest(self.folder)
        if path is None:
            return 0
        tensors, meta = checkpoint.load(path)
        if meta.get("tag") != self.tag or meta.get("epochs") != self.epochs:
            raise GcplError(f"{self.folder} holds a checkpoint of another training ({meta.get('tag')}, "
                            f"{meta.get('epochs')} epochs); remove it or use another --out")
        checkpoint.load_module(self.learner, "learner", tensors)
        checkpoint.load_optimizer(self.optimizer, tensors, meta["optimizer"])
        if self.load_extra:
            self.load_extra({k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")})
        self.log = list(meta.get("log", []))
        return int(meta["epoch"])

    def run(self, step: Callable[[list[int], torch.Generator, int], torch.Tensor], progress: bool = True) -> list[dict]:
        self.folder.mkdir(parents=True, exist_ok=True)
        start = self._resume()
        bar = tqdm(total=self.epochs, initial=start, desc=f"train {self.tag}", unit="epoch", disable=not progress)
        for epoch in range(start, self.epochs):
            g = epoch_generator(self.seed, self.tag, epoch)
            batches = epoch_batches(self.n, self.batch, g, self.drop_last)
            losses = []
            for it, idx in enumerate(batches):
                lr = self.lr_at(epoch, it, len(batches))
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = step(idx, g, epoch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss.detach()))
            self.log.append({"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)),
                             "lr": self.lr_at(epoch, 0, max(1, len(batches))), "steps": len(batches)})
            if self.on_epoch_end:
                self.on_epoch_end(epoch)
            if (epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == self.epochs:
                self._save(epoch + 1)
            bar.update(1)
        bar.close()
        return self.log


def _checkpoint_written(folder: Path, epoch: int) -> None:
    """Called after each checkpoint (a hook for tests that interrupt a run)."""
