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

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint
from .data.splits import class_seed
from .distributed import World
from .errors import GcplError, Interrupted
from .interrupt import deferred_interrupt
from .io import append_jsonl, read_jsonl, write_jsonl
from .latents import LatentStats
from .losses import comple_loss, per_sample_error, predict, target
from .settings import setting
from .tokens import PromptSlot, encode_slot_prompts, init_vectors, single_token_id

log = logging.getLogger(__name__)

METHODS = ("gcpl", "comple")
# The paper's text (Sec. 4.2): AdamW lr 5e-4 for GCPL, 1e-3 for CoMPLe (batch 4, lambda 1e-3); 500
# optimiser steps of 4 images per class for GCPL (the authors' released code), 4,000 for CoMPLe.
# A model folder may recommend others (gcpl_defaults.json, see backbone.recommended_training).
PAPER_TEXT = {"gcpl": {"lr": 5e-4, "steps": 500, "batch": 4, "groups": 1, "train_resize": "crop"},
              "comple": {"lr": 1e-3, "steps": 4000, "batch": 4, "groups": 1, "train_resize": "crop"}}
# Presets (--preset): "default" = the paper's text, or what the model folder recommends; "paper" =
# what the authors' released code effectively does (soumitri2001/GCPL, src/train_textinv_fewshot.py
# -> src/gcpl.py, a fork of diffusers' textual-inversion example): --scale_lr is declared
# type=bool, default=True, so always on: lr 5e-4 x gradient accumulation 4 x batch 1 = 2e-3; 500
# optimiser steps of 4 single-image micro-batches, constant lr without warm-up, AdamW eps 1e-8 and
# weight decay 1e-2; images resized to a square without cropping (squash), flipped with p = 0.5.
# CoMPLe's code is not released: the paper's text (lr 1e-3, batch 4, lambda 1e-3), with the same
# squashed training images as GCPL's code.
PRESETS = {
    "default": {},
    "paper": {"gcpl": {"lr": 2e-3, "steps": 500, "batch": 4, "groups": 1, "train_resize": "squash"},
              "comple": {"lr": 1e-3, "steps": 4000, "batch": 4, "groups": 1, "train_resize": "squash"}},
}
RESOLVED = ("lr", "steps", "batch", "groups", "train_resize")  # None: the preset's, model's or paper's


@dataclass
class TrainConfig:
    method: str = setting("gcpl", "gcpl: one token per class, trained as if alone (Eq. 1-2); comple: all tokens "
                          "jointly with the contrastive loss (Eq. 3)", choices=METHODS)
    preset: str = setting("default", "default: the paper's text, or the model's recommended settings; paper: the "
                          "recipe of the authors' released code (gcpl: lr 2e-3 = 5e-4 x 4 accumulated images, 500 "
                          "steps, squashed images); explicit options win", choices=tuple(PRESETS))
    template: str = setting("A photo of {}.", "prompt with exactly one {} for the class token, e.g. "
                            "'A photo of {}, a type of car.'")
    init_word: str = setting("object", "single-token word whose embedding initialises every class token")
    steps: int | None = setting(None, "optimiser steps (default: the model's recommendation, else 500 for gcpl, "
                                "4000 for comple); a resumed run may train longer", identity=False)
    batch: int | None = setting(None, "gcpl: samples per class per step; comple: samples per step "
                                "(default: the model's recommendation, else the paper's 4)")
    lr: float | None = setting(None, "learning rate (default: the model's recommendation, else the paper's "
                               "5e-4 for gcpl, 1e-3 for comple)")
    weight_decay: float = setting(0.01, "AdamW weight decay (paper)")
    betas: tuple[float, ...] = setting((0.9, 0.999), "AdamW betas (paper)")
    lam: float = setting(1e-3, "CoMPLe: weight lambda of the negative term (paper)")
    flip: bool = setting(True, "random horizontal flips (cached as a second latent view)")
    train_resize: str | None = setting(None, "training images to squares: crop (shorter side resized, centre crop, "
                                       "as the classifier does) or squash (whole image resized, the released code); "
                                       "default: the preset's (crop, or squash with --preset paper)",
                                       choices=("crop", "squash"))
    seed: int = setting(0, "governs every random draw of training and the few-shot support set")
    max_batch: int = setting(64, "largest number of samples per UNet forward/backward (micro-batching; "
                             "results do not depend on it)", identity=False)
    groups: int | None = setting(None, "comple: groups of --batch samples per step, each with its own negatives "
                                 "(gradient accumulation; the processes of a multi-GPU run split them; default: "
                                 "the model's recommendation, else 1)")
    checkpoint_every: int = setting(100, "steps between checkpoints (0: only at the end)", identity=False)
    log_every: int = setting(10, "steps between lines of train_log.jsonl", identity=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise GcplError(f"--method {self.method!r} is unknown; use gcpl or comple")
        if self.preset not in PRESETS:
            raise GcplError(f"--preset {self.preset!r} is unknown; use {' or '.join(PRESETS)}")
        if self.train_resize not in (None, "crop", "squash"):
            raise GcplError(f"--train-resize {self.train_resize!r} is unknown; use crop or squash")
        for name in ("steps", "batch", "groups", "max_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise GcplError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.method == "comple" and self.batch is not None and self.batch < 2:
            raise GcplError("CoMPLe needs --batch of at least 2 (negatives come from the other samples)")
        if self.lr is not None and not self.lr > 0:
            raise GcplError(f"--lr must be positive, got {self.lr}")
        self.betas = tuple(self.betas)
        if len(self.betas) != 2:
            raise GcplError(f"--betas takes two numbers such as 0.9,0.999, got {list(self.betas)}")

    def resolved(self, recommended: dict | None = None) -> "TrainConfig":
        """A copy with every None of RESOLVED filled in: the given value, else the preset's ("paper"),
        else the model folder's recommendation for this method, else the paper's text."""
        sources = [PRESETS[self.preset].get(self.method, {}), (recommended or {}).get(self.method, {}),
                   PAPER_TEXT[self.method]]
        fill = {k: next(s[k] for s in sources if k in s) for k in RESOLVED if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)


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
        cfg = cfg.resolved(backbone.recommended)
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
            [vectors], lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay
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


# --- checkpoints (gcpl.checkpoint: one safetensors file with a JSON header, never pickle) -------------

CHECKPOINT_FILE = "state.safetensors"


def save_checkpoint(folder: Path, st: TrainState) -> None:
    opt, groups = checkpoint.optimizer_tensors(st.optimizer)
    tensors = {"vectors": st.vectors, **opt, **checkpoint.generator_tensors(st.generators)}
    checkpoint.save(folder / CHECKPOINT_FILE, tensors, {"step": st.step, "losses": st.losses, "param_groups": groups})


def checkpoint_step(folder: Path) -> int | None:
    """Steps trained by the checkpoint in folder (None: no checkpoint)."""
    meta = checkpoint.read_meta(folder / CHECKPOINT_FILE)
    return None if meta is None else int(meta["step"])


def load_checkpoint(folder: Path, st: TrainState) -> None:
    tensors, meta = checkpoint.load(folder / CHECKPOINT_FILE)
    with torch.no_grad():
        st.vectors.copy_(tensors["vectors"].to(st.vectors.device))
    checkpoint.load_optimizer(st.optimizer, tensors, meta["param_groups"])
    checkpoint.load_generators(st.generators, tensors)
    st.step, st.losses = int(meta["step"]), list(meta["losses"])


def check_resumable(folder: Path, steps: int) -> None:
    """A checkpoint past `steps` cannot be resumed to `steps`: its tokens are not what `steps` give."""
    done = checkpoint_step(folder)
    if done is not None and done > steps:
        raise GcplError(f"{folder.parent} has already trained {done} steps, more than --steps {steps}; "
                        f"resume with --steps {done} or more, or choose another --out")


def run_training(trainer: Trainer, out: Path | None = None, resume: bool = False, progress: bool = True,
                 tag: str = "", after_step=None) -> TrainState:
    """Train to cfg.steps, checkpointing into out/checkpoint{tag} and logging to out/train_log{tag}.jsonl
    (tag tells apart the processes of a multi-process run). Ctrl-C finishes the step in hand, writes
    a checkpoint and raises `Interrupted`. `after_step(state)`, if given, runs after every step (it
    must not touch the state: validation images)."""
    cfg = trainer.cfg
    st = trainer.new_state()
    ckpt = out / f"checkpoint{tag}" if out is not None else None
    log_file = out / f"train_log{tag}.jsonl" if out is not None else None
    if resume and ckpt is not None and checkpoint_step(ckpt) is not None:
        check_resumable(ckpt, cfg.steps)
        load_checkpoint(ckpt, st)
        log.info("resumed from %s at step %d", ckpt, st.step)
    if out is not None:  # drop log lines written after the checkpoint we restart from
        kept = [r for r in read_jsonl(log_file) if r["step"] <= st.step]
        write_jsonl(log_file, kept)
    bar = tqdm(total=cfg.steps, initial=st.step, desc=f"train {cfg.method}", disable=not progress, unit="step")
    with deferred_interrupt("training step") as stop:
        while st.step < cfg.steps:
            loss = trainer.step(st)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if not math.isfinite(loss):
                raise GcplError(f"training diverged at step {st.step} (loss {loss}); lower --lr")
            if after_step is not None:
                after_step(st)
            if out is not None and (st.step % cfg.log_every == 0 or st.step == cfg.steps):
                recent = st.losses[-cfg.log_every :]
                append_jsonl(log_file, {"step": st.step, "loss": sum(recent) / len(recent)})
            if ckpt is not None and cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.step < cfg.steps:
                save_checkpoint(ckpt, st)
            if stop.requested and st.step < cfg.steps:  # Ctrl-C: the finished step is kept
                bar.close()
                if ckpt is None:
                    raise Interrupted(f"stopped at step {st.step} of {cfg.steps}")
                save_checkpoint(ckpt, st)
                raise Interrupted(f"checkpoint saved at step {st.step} of {cfg.steps}")
    bar.close()
    if ckpt is not None:
        save_checkpoint(ckpt, st)
    return st
