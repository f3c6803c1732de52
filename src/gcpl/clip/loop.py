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

Checkpoints (every `checkpoint_every` epochs and at the end): folder/epoch-NNNN.safetensors holds
the learnable tensors, the optimizer state and any extra state (PromptSRC's running prompt
aggregate); folder/state.json (written after it, atomically) names it with the epoch and the
loss log. A crash leaves the previous pair whole; no pickle is involved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.splits import class_seed
from ..errors import GcplError
from ..io import atomic_write_bytes, read_json, write_json


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


# ----------------------------------------------------------------------------- checkpoints


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    from safetensors.torch import save

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data, metadata={"gcpl": json.dumps(meta or {})}))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("gcpl", "{}"))
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def optimizer_state(opt: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """(tensors "optim.<param name>.<key>", JSON scalars) of an optimizer's per-parameter state."""
    tensors, scalars = {}, {}
    for p, st in opt.state.items():
        name = names[id(p)]
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{name}.{k}"] = v
            elif v is not None:
                scalars[f"{name}.{k}"] = v
    return tensors, scalars


def restore_optimizer(opt: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter], tensors: dict,
                      scalars: dict) -> None:
    for key, t in tensors.items():
        if not key.startswith("optim."):
            continue
        name, k = key[len("optim."):].rsplit(".", 1)
        p = params[name]
        opt.state[p][k] = t.to(p.device) if k != "step" else t
    for key, v in scalars.items():
        name, k = key.rsplit(".", 1)
        opt.state[params[name]][k] = v


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

    def _params(self) -> dict[str, torch.nn.Parameter]:
        return {k: p for k, p in self.learner.named_parameters() if p.requires_grad}

    def _save(self, epoch: int) -> None:
        params = self._params()
        names = {id(p): k for k, p in params.items()}
        opt_t, opt_s = optimizer_state(self.optimizer, names)
        tensors = {f"learner.{k}": v for k, v in self.learner.state_dict().items()}
        tensors.update(opt_t)
        if self.extra_state:
            tensors.update({f"extra.{k}": v for k, v in self.extra_state().items()})
        name = f"epoch-{epoch:04d}.safetensors"
        save_tensors(self.folder / name, tensors, {"epoch": epoch})
        write_json(self.folder / "state.json", {"file": name, "epoch": epoch, "tag": self.tag, "epochs": self.epochs,
                                                "optimizer_scalars": opt_s, "log": self.log})
        _checkpoint_written(self.folder, epoch)
        for old in self.folder.glob("epoch-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _resume(self) -> int:
        state_file = self.folder / "state.json"
        if not state_file.exists():
            return 0
        state = read_json(state_file)
        if state.get("tag") != self.tag or state.get("epochs") != self.epochs:
            raise GcplError(f"{self.folder} holds a checkpoint of another training ({state.get('tag')}, "
                            f"{state.get('epochs')} epochs); remove it or use another --out")
        tensors, _ = load_tensors(self.folder / state["file"])
        sd = {k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")}
        self.learner.load_state_dict(sd, strict=True)
        restore_optimizer(self.optimizer, self._params(), tensors, state.get("optimizer_scalars", {}))
        if self.load_extra:
            self.load_extra({k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")})
        self.log = list(state.get("log", []))
        return int(state["epoch"])

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
