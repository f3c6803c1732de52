"""Training class tokens: GCPL (per-class textual inversion, all classes in one run) and CoMPLe.

GCPL (paper Eq. 1-2): every optimiser step holds `batch` samples of every class; the loss is the
sum over classes of each class's mean per-sample error, so row c of the (C, D) class matrix gets
exactly the gradient that training class c alone would give, and AdamW (element-wise) makes the
same update. Each class draws its samples, views, latent noise, timesteps and diffusion noise from
its own generator seeded by (seed, class name): a class trains identically alone or with others.

CoMPLe (paper Eq. 3): all tokens jointly; each step draws `batch` samples from the whole support
set; loss = pos - lambda * neg (see losses.comple_loss).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data.splits import class_seed
from .distributed import World
from .errors import GcplError
from .io import append_jsonl, atomic_write_bytes, atomic_write_text, read_json, read_jsonl, write_json
from .latents import LatentStats
from .losses import comple_loss, per_sample_error, predict, target
from .tokens import PromptSlot, encode_slot_prompts, init_vectors, single_token_id

log = logging.getLogger(__name__)

METHODS = ("gcpl", "comple")
PAPER_LR = {"gcpl": 5e-4, "comple": 1e-3}


@dataclass
class TrainConfig:
    method: str = "gcpl"  # "gcpl" (per-class, Eq. 1-2) or "comple" (joint contrastive, Eq. 3)
    template: str = "A photo of {}."  # prompt with exactly one {} for the class token
    init_word: str = "object"  # single-token word whose embedding initialises every class token
    steps: int = 500  # optimiser steps (gcpl: each step trains every class on `batch` samples)
    batch: int = 4  # gcpl: samples per class per step; comple: samples per step (paper: 4)
    lr: float | None = None  # None: the paper's 5e-4 (gcpl) or 1e-3 (comple)
    weight_decay: float = 0.01  # AdamW, paper
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW, paper
    lam: float = 1e-3  # CoMPLe negative weight lambda (paper: 1e-3)
    flip: bool = True  # random horizontal flips (cached as a second latent view)
    seed: int = 0  # governs every random draw of training
    max_batch: int = 64  # largest number of samples per UNet forward/backward (micro-batching)
    groups: int = 1  # comple: groups of `batch` samples per step, each with its own negatives
    # (gradient accumulation; several processes split the groups, so results match one process)
    checkpoint_every: int = 100  # steps between checkpoints (0: only at the end)
    log_every: int = 10  # steps between lines in train_log.jsonl

    def __post_init__(self):
        if self.method not in METHODS:
            raise GcplError(f"--method {self.method!r} is unknown; use gcpl or comple")
        if self.steps < 1 or self.batch < 1:
            raise GcplError("--steps and --batch must be at least 1")
        if self.method == "comple" and self.batch < 2:
            raise GcplError("CoMPLe needs --batch of at least 2 (negatives come from the other samples)")
        self.betas = tuple(self.betas)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else PAPER_LR[self.method]


@dataclass
class TrainState:
    step: int
    vectors: torch.Tensor  # (C, D) fp32 learnable class embeddings
    optimizer: torch.optim.Optimizer
    generators: list[torch.Generator]  # gcpl: one per class; comple: one
    losses: list[float] = field(default_factory=list)


def _make_generators(cfg: TrainConfig, classes: list[str], groups: list[int]) -> list[torch.Generator]:
    names = classes if cfg.method == "gcpl" else [f"__comple_group_{g}__" for g in groups]
    return [torch.Generator().manual_seed(class_seed(cfg.seed, n)) for n in names]


def _draw(g: torch.Generator, n_images: int, k: int, stats: LatentStats, flip: bool, T: int):
    """k random (image index, view, latent noise z, timestep, diffusion noise) from generator g."""
    shape = stats.mean.shape[2:]
    idx = torch.randint(n_images, (k,), generator=g)
    view = torch.randint(2, (k,), generator=g) if flip else torch.zeros(k, dtype=torch.long)
    z = torch.randn((k, *shape), generator=g)
    t = torch.randint(T, (k,), generator=g)
    noise = torch.randn((k, *shape), generator=g)
    return idx, view, z, t, noise


class Trainer:
    """Trains one (C, D) matrix of class vectors on cached latents; frozen backbone."""

    def __init__(self, backbone, classes: list[str], stats: LatentStats, labels: torch.Tensor, cfg: TrainConfig,
                 world: World | None = None):
        """world: for CoMPLe under several processes, which gradient groups this process owns.
        (GCPL is split by classes instead: each process trains its own Trainer on its classes.)"""
        if cfg.flip and stats.mean.shape[1] < 2:
            raise ValueError("flip=True needs latents encoded with flip views")
        self.bb, self.classes, self.stats, self.labels, self.cfg = backbone, classes, stats, labels, cfg
        self.world = world or World()
        self.my_groups = [g for g in range(cfg.groups) if self.world.owns(g)] if cfg.method == "comple" else []
        self.slot = PromptSlot.from_template(backbone.tokenizer, cfg.template, cfg.init_word)
        self.init_id = single_token_id(backbone.tokenizer, cfg.init_word)
        self.members = [torch.nonzero(labels == c).flatten() for c in range(len(classes))]
        for c, m in enumerate(self.members):
            if len(m) == 0:
                raise GcplError(f"class {classes[c]!r} has no training images")

    # --- state -------------------------------------------------------------------------------

    def new_state(self) -> TrainState:
        vectors = init_vectors(self.bb.text_encoder, self.init_id, len(self.classes)).to(self.bb.device)
        vectors.requires_grad_(True)
        opt = torch.optim.AdamW(
            [vectors], lr=self.cfg.learning_rate, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay
        )
        return TrainState(0, vectors, opt, _make_generators(self.cfg, self.classes, self.my_groups))

    # --- one optimiser step --------------------------------------------------------------------

    def step(self, st: TrainState) -> float:
        st.optimizer.zero_grad(set_to_none=True)
        loss = self._gcpl_step(st) if self.cfg.method == "gcpl" else self._comple_step(st)
        st.optimizer.step()
        st.step += 1
        st.losses.append(loss)
        return loss

    def _x0(self, idx, view, z):
        return self.stats.sample(idx, view, z, self.bb.scaling_factor).to(self.bb.device)

    def _gcpl_step(self, st: TrainState) -> float:
        bb, cfg = self.bb, self.cfg
        T = bb.num_train_timesteps
        per_chunk = max(1, cfg.max_batch // cfg.batch)  # whole classes per micro-batch
        total = 0.0
        for c0 in range(0, len(self.classes), per_chunk):
            cls = list(range(c0, min(c0 + per_chunk, len(self.classes))))
            draws = [_draw(st.generators[c], len(self.members[c]), cfg.batch, self.stats, cfg.flip, T) for c in cls]
            idx = torch.cat([self.members[c][d[0]] for c, d in zip(cls, draws)])
            view, z, t, noise = (torch.cat([d[k] for d in draws]) for k in (1, 2, 3, 4))
            x0 = self._x0(idx, view, z)
            t, noise = t.to(bb.device), noise.to(bb.device)
            # The text encoder runs once per class prompt, then each prompt is repeated per sample.
            prompts = encode_slot_prompts(bb.text_encoder, self.slot, st.vectors[cls])
            cond = prompts.repeat_interleave(cfg.batch, dim=0)
            pred = predict(bb.unet, x0, noise, t, cond, bb.alphas_cumprod)
            err = per_sample_error(pred, target(x0, noise, t, bb.alphas_cumprod, bb.prediction_type))
            # sum over classes of each class's mean error: row c's gradient = class c alone.
            loss = err.view(len(cls), cfg.batch).mean(1).sum()
            loss.backward()
            total += loss.item()
        return total / len(self.classes)

    def _comple_step(self, st: TrainState) -> float:
        bb, cfg = self.bb, self.cfg
        total = torch.zeros((), dtype=torch.float64)
        for g in st.generators:  # this process's gradient groups
            idx, view, z, t, noise = _draw(g, len(self.labels), cfg.batch, self.stats, cfg.flip, bb.num_train_timesteps)
            labels = self.labels[idx]
            x0 = self._x0(idx, view, z)
            t, noise = t.to(bb.device), noise.to(bb.device)
            uniq, inv = torch.unique(labels, return_inverse=True)  # encode each distinct prompt once
            prompts = encode_slot_prompts(bb.text_encoder, self.slot, st.vectors[uniq.to(bb.device)])
            cond = prompts[inv.to(bb.device)]
            pred = predict(bb.unet, x0, noise, t, cond, bb.alphas_cumprod)
            loss, _ = comple_loss(pred, x0, noise, t, labels.to(bb.device), bb.alphas_cumprod, bb.prediction_type,
                                  cfg.lam)
            (loss / cfg.groups).backward()
            total += loss.item()
        if self.world.active:  # sum the groups' gradients over processes: every process steps alike
            if st.vectors.grad is None:
                st.vectors.grad = torch.zeros_like(st.vectors)
            self.world.all_reduce_sum_(st.vectors.grad)
            total = self.world.all_reduce_sum_(total)
        return total.item() / cfg.groups


# --- checkpoints (safetensors + JSON, never pickle) ----------------------------------------------


def save_checkpoint(path: Path, st: TrainState) -> None:
    from safetensors.torch import save

    tensors = {"vectors": st.vectors.detach().cpu()}
    opt_state = st.optimizer.state_dict()
    for k, v in opt_state["state"].get(0, {}).items():
        tensors[f"adam.{k}"] = v.detach().cpu().reshape(-1) if v.dim() == 0 else v.detach().cpu()
    for i, g in enumerate(st.generators):
        tensors[f"rng.{i}"] = g.get_state()
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / "state.safetensors", save({k: v.contiguous() for k, v in tensors.items()}))
    write_json(path / "state.json", {"step": st.step, "losses": st.losses})


def load_checkpoint(path: Path, st: TrainState) -> None:
    from safetensors.torch import load_file

    t = load_file(str(path / "state.safetensors"))
    meta = read_json(path / "state.json")
    with torch.no_grad():
        st.vectors.copy_(t["vectors"].to(st.vectors.device))
    adam = {k[5:]: v for k, v in t.items() if k.startswith("adam.")}
    if adam:
        sd = st.optimizer.state_dict()
        if "step" in adam:
            adam["step"] = adam["step"].reshape(())
        sd["state"] = {0: {k: v.to(st.vectors.device) if k != "step" else v for k, v in adam.items()}}
        st.optimizer.load_state_dict(sd)
    for i, g in enumerate(st.generators):
        g.set_state(t[f"rng.{i}"])
    st.step, st.losses = int(meta["step"]), list(meta["losses"])


def run_training(trainer: Trainer, out: Path | None = None, resume: bool = False, progress: bool = True,
                 tag: str = "") -> TrainState:
    """Train to cfg.steps, checkpointing into out/checkpoint{tag} and logging to out/train_log{tag}.jsonl
    (tag tells apart the processes of a multi-process run)."""
    cfg = trainer.cfg
    st = trainer.new_state()
    ckpt = out / f"checkpoint{tag}" if out is not None else None
    log_file = out / f"train_log{tag}.jsonl" if out is not None else None
    if resume and ckpt is not None and (ckpt / "state.json").exists():
        load_checkpoint(ckpt, st)
        log.info("resumed from %s at step %d", ckpt, st.step)
        if st.step > cfg.steps:  # its tokens are not what `steps` steps give
            raise GcplError(f"{out} has already trained {st.step} steps, more than --steps {cfg.steps}; "
                            f"resume with --steps {st.step} or more, or choose another --out")
    if out is not None:  # drop log lines written after the checkpoint we restart from
        kept = [r for r in read_jsonl(log_file) if r["step"] <= st.step]
        atomic_write_text(log_file, "".join(json.dumps(r) + "\n" for r in kept))
    bar = tqdm(total=cfg.steps, initial=st.step, desc=f"train {cfg.method}", disable=not progress, unit="step")
    while st.step < cfg.steps:
        loss = trainer.step(st)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if not math.isfinite(loss):
            raise GcplError(f"training diverged at step {st.step} (loss {loss}); lower --lr")
        if out is not None and (st.step % cfg.log_every == 0 or st.step == cfg.steps):
            recent = st.losses[-cfg.log_every :]
            append_jsonl(log_file, {"step": st.step, "loss": sum(recent) / len(recent)})
        if ckpt is not None and cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.step < cfg.steps:
            save_checkpoint(ckpt, st)
    bar.close()
    if ckpt is not None:
        save_checkpoint(ckpt, st)
    return st
