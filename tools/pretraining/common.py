"""What the tiny SD's and the tiny CLIP's pretraining share: the settings common to both runs
(`PretrainSettings`, a gcpl.settings dataclass: the identity of a run is read from the fields'
metadata), and the loop's machinery: per-step random streams, the learning-rate schedule,
caption tokens, the optimiser step, checkpoints (save, find, resume, continue from a finished
run), the loss log, the EMA of the weights and the step budget of an interrupted call.

A run's per-step randomness is derived from (seed, stream, step), its checkpoints are
gcpl.checkpoint snapshots holding every tensor and the JSON state, so a resumed run continues bit
for bit as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gcpl import checkpoint, settings
from gcpl.io import read_jsonl
from gcpl.settings import setting
from pretraining.corpus import CorpusConfig

# ---------------------------------------------------------------------------------------------- settings


@dataclass
class PretrainSettings:
    """Settings of both pretraining runs (defaults: the tiny SD's; a subclass changes a default
    with `with_default` and adds its `model`, which has an `image_size`). `identity=False` marks
    bookkeeping that may change on --resume."""

    seed: int = setting(0, "seed of the corpus, the initial weights and every step's random stream")
    # corpus
    pool_size: int = setting(40000, "images rendered into memory")
    fractal_fraction: float = setting(0.5, "fraction of fractal images in the corpus")
    n_fractal_classes: int = setting(200, "fractal categories (words) in the corpus", flag="--fractal-classes")
    # optimisation
    steps: int = setting(2600, "optimiser steps")
    batch: int = setting(32, "images (with captions) per step")
    lr: float = setting(5e-4, "peak learning rate (AdamW)")
    lr_schedule: str = setting("cosine", "after warmup: cosine (down to min_lr_ratio x lr) or constant",
                               choices=("cosine", "constant"))
    warmup: int = setting(100, "steps of linear warmup")
    min_lr_ratio: float = setting(0.1, "end of the cosine schedule, as a fraction of lr")
    weight_decay: float = setting(0.01, "AdamW weight decay (matrices only)")
    grad_clip: float = setting(1.0, "gradient norm clipping")
    ema_decay: float = setting(0.999, "EMA decay, 0 = off (the saved model is the EMA when on)", flag="--ema")
    # continued pretraining: identity of the finished run whose final weights start this one (set
    # from `--init-from` by the model's `init_source`), with a fresh optimiser, warmup and schedule
    # and its own random stream
    init: dict | None = setting(None, "the finished run this one continues", cli=False)
    # bookkeeping (not part of the run's identity: may change on resume)
    probe_per_class: int = setting(4, "probe at the end: unseen images per class (0 = skip)", flag="--probe",
                                   identity=False)
    ckpt_every: int = setting(500, "steps between checkpoints", identity=False)
    log_every: int = setting(25, "steps between lines of the loss log", identity=False)
    device: str = setting("cpu", "cpu, cuda, cuda:0 ...", identity=False)
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice)", identity=False)
    workers: int = setting(1, "processes rendering the image pool (identical pool for any number)", identity=False)

    def identity(self) -> dict:
        """Everything that determines the trained weights (JSON form); must match on --resume."""
        d = settings.identity(self)
        if d["init"] is None:
            d.pop("init")  # runs from scratch keep the identity they had before `init` existed
        return d

    def sources(self) -> list[dict]:
        """The finished runs this one continues, oldest first (each an `init_source` dict)."""
        out, init = [], self.init
        while init is not None:
            out.append(init)
            init = init["config"].get("init")
        return out[::-1]

    def depth(self) -> int:
        """0 for a run from scratch, 1 for a continuation of one, ..."""
        return len(self.sources())

    def corpus_config(self) -> CorpusConfig:
        return CorpusConfig(seed=self.seed, image_size=self.model.image_size, fractal_fraction=self.fractal_fraction,
                            n_fractal_classes=self.n_fractal_classes)

    @classmethod
    def from_dict(cls, d: dict):
        """The settings of a stored identity (a checkpoint's or gcpl_build.json's `config`)."""
        return settings.from_dict(cls, d)


def with_default(base: type, name: str, default, help: str | None = None) -> dataclasses.Field:
    """Field `name` of settings dataclass `base` (help, identity, flag...) with another default
    (and help), for a subclass: `pool_size: int = with_default(PretrainSettings, "pool_size", 80000)`."""
    f = base.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata={**f.metadata, **({"help": help} if help else {})})


# ---------------------------------------------------------------------------------------------- steps


def generators(seed: int, stream: int, step: int, device: str = "cpu") -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch generators of one step of one random stream."""
    ss = np.random.SeedSequence([seed, stream, step])
    rng = np.random.default_rng(ss)
    g = torch.Generator(device=device)
    g.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] & ((1 << 63) - 1)))
    return rng, g


def lr_at(step: int, base: float, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning rate for optimiser step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}")
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def autocast(device: str):
    """bf16 autocast on CUDA, nothing on CPU (fp32)."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def decay_groups(named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices only, not on embeddings, norms, biases
    (or CLIP's logit scale); each group in the order of `named`."""
    decay, no_decay = [], []
    for n, p in named:
        (decay if p.ndim >= 2 and "embedding" not in n else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Iterable[torch.Tensor],
                   grad_clip: float) -> torch.Tensor:
    """Backward, clip the gradient norm, step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return gnorm


def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float, step: int) -> None:
    """One EMA step (warmed up: the decay is at most (1 + step) / (10 + step))."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)


def copy_into(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """params[i] <- values[i] (in the params' dtype), e.g. the EMA into the model."""
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v.to(p.dtype))


class Tokens:
    """CLIP token ids (<|startoftext|> ... <|endoftext|>, truncated to 77), cached per string and
    padded with the pad token: to 77 as StableDiffusionPipeline does (`fixed`), else to the longest
    caption of the batch (a causal text tower pooled at the first <|endoftext|> gives the same
    features either way)."""

    def __init__(self, tokenizer, fixed: bool = False):
        self.tok = tokenizer
        self.fixed = fixed
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            ids = self.tok(missing, truncation=True, max_length=self.tok.model_max_length).input_ids
            self.cache.update(zip(missing, ids))
        rows = [self.cache[c] for c in captions]
        n = self.tok.model_max_length if self.fixed else max(len(r) for r in rows)
        return torch.tensor([r + [self.tok.pad_token_id] * (n - len(r)) for r in rows], dtype=torch.long)


class StepBudget:
    """The optimiser steps left in this call (`stop_after`; None: no limit)."""

    def __init__(self, stop_after: int | None):
        self.left = stop_after

    def tick(self) -> bool:
        """Count one step; True when the budget is spent (checkpoint and stop)."""
        if self.left is None:
            return False
        self.left -= 1
        return self.left <= 0

    def step_done(self, step: int, total: int, ckpt_every: int) -> tuple[bool, bool]:
        """Count step number `step` (1-based) of `total`: (write a checkpoint now, stop now). A
        checkpoint every `ckpt_every` steps, at the last step and when the budget is spent; a
        budget spent at the last step finishes the run."""
        spent = self.tick()
        return step % ckpt_every == 0 or spent or step == total, spent and step < total


def run_facts(cfg: PretrainSettings) -> dict:
    """What a finished run's statistics record about the run itself."""
    return {"config": cfg.identity(), "device": cfg.device, "threads": torch.get_num_threads()}


def start(cfg: PretrainSettings, out: str | Path, ckpt_dir: str | Path | None) -> tuple[Path, Path, Path]:
    """Create `out`, apply the thread and TF32 settings; (out, checkpoint folder, loss log path)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return out, Path(ckpt_dir) if ckpt_dir is not None else out / "checkpoints", out / "train_log.jsonl"


# ---------------------------------------------------------------------------------------------- the loss log


def restart_log(log_path: Path, state: dict | None, position: Callable[[dict], tuple]) -> None:
    """Resuming from `state`: drop the log lines written after it (they will be written again);
    starting afresh (state None): delete the log."""
    if state is None:
        log_path.unlink(missing_ok=True)
        return
    keep = [r for r in read_jsonl(log_path) if position(r) <= position(state)]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def logged(log_path: Path, stage: str, key: str) -> list:
    """The values of `key` logged for `stage`, in order."""
    return [r[key] for r in read_jsonl(log_path) if r["stage"] == stage and key in r]


# ---------------------------------------------------------------------------------------------- checkpoints
# gcpl.checkpoint snapshots: one safetensors file, the JSON state in its header, rotated


def save_checkpoint(ckpt_dir: Path, state: dict, models: dict, optim: torch.optim.Optimizer | None,
                    ema: list[torch.Tensor] | None, keep: int = 2) -> Path:
    """Write ckpt_dir/<stage>-<step>.safetensors (models as "<name>.<key>", the EMA as "ema.<i>",
    the optimizer as "optim.*") and point ckpt_dir/latest.json at it; keep the newest `keep`
    snapshots of the current stage and the last one of every earlier stage."""
    tensors = {}
    for prefix, m in models.items():
        tensors.update(checkpoint.module_tensors(prefix, m))
    if ema is not None:
        tensors.update({f"ema.{i}": t.detach().cpu().clone() for i, t in enumerate(ema)})
    meta = dict(state)
    if optim is not None:
        ot, meta["optim_param_groups"] = checkpoint.optimizer_tensors(optim)
        tensors.update(ot)

    def old(names: list[str]) -> list[str]:
        by_stage: dict[str, list[str]] = {}
        for n in names:
            by_stage.setdefault(n.split("-")[0], []).append(n)
        return [n for st, ns in by_stage.items() for n in ns[: -keep if st == state["stage"] else -1]]

    return checkpoint.save_rotating(ckpt_dir, f"{state['stage']}-{state['step']:07d}", tensors, meta, keep=old)


def checkpoint_state(ckpt_dir: str | Path) -> dict | None:
    """The JSON state of the latest snapshot in ckpt_dir (no tensors read); None when there is none."""
    path = checkpoint.latest(ckpt_dir)
    return None if path is None else checkpoint.read_meta(path)


def load_checkpoint(ckpt_dir: Path) -> tuple[dict, dict, dict | None] | None:
    """(state, tensors, tensors again when they hold an optimizer state else None) of the latest
    snapshot; None when there is none. Load modules with gcpl.checkpoint.load_module(m, prefix,
    tensors) and the optimizer with gcpl.checkpoint.load_optimizer(opt, tensors, groups)."""
    path = checkpoint.latest(ckpt_dir)
    if path is None:
        return None
    tensors, state = checkpoint.load(path)
    return state, tensors, (tensors if any(k.startswith("optim.") for k in tensors) else None)


def resume_checkpoint(cfg: PretrainSettings, ckpt_dir: Path, resume: bool,
                      log: Callable[[str], None]) -> tuple[dict, dict, dict | None] | None:
    """The checkpoint a `--resume` continues (see `load_checkpoint`), None when not resuming or
    there is none; refused when it was made with other settings."""
    if not resume:
        return None
    ckpt = load_checkpoint(ckpt_dir)
    if ckpt is None:
        log(f"resume: no checkpoint in {ckpt_dir}, starting from scratch")
        return None
    stored, ident = ckpt[0]["config"], cfg.identity()
    if stored != ident:
        diff = {k for k in set(ident) | set(stored) if ident.get(k) != stored.get(k)}
        raise ValueError(f"--resume: checkpoint in {ckpt_dir} was made with different settings: {sorted(diff)}")
    return ckpt


def finished_run(ckpt_dir: str | Path, stage: str, keep: tuple[str, ...] = ()) -> dict:
    """The identity of the finished run checkpointed in `ckpt_dir` (its settings, step, seconds and
    the state entries named in `keep`), for `cfg.init`; refused for an unfinished run."""
    state = checkpoint_state(ckpt_dir)  # the weights are read by `source_weights`
    if state is None:
        raise ValueError(f"--init-from: no checkpoint in {ckpt_dir} (expected latest.json there)")
    if state.get("stage") != stage or state["step"] != state["config"]["steps"]:
        raise ValueError(f"--init-from: {ckpt_dir} holds an unfinished run (stage {state.get('stage')} step "
                         f"{state['step']} of {state['config']['steps']}); finish it with --resume first")
    return {"config": state["config"], "step": state["step"], **{k: state[k] for k in keep},
            "seconds": state["seconds"]}


def source_weights(cfg: PretrainSettings, init_dir: str | Path | None) -> dict[str, torch.Tensor]:
    """The tensors of the finished run that `cfg.init` names, read from its checkpoint folder
    `init_dir`; refused when the folder holds another run or the model sizes differ."""
    if init_dir is None:
        raise ValueError("cfg.init is set: pass init_dir, the source run's checkpoint folder")
    src = load_checkpoint(Path(init_dir))
    if src is None or {k: src[0][k] for k in ("config", "step")} != {k: cfg.init[k] for k in ("config", "step")}:
        raise ValueError(f"--init-from: {init_dir} no longer holds the run this continuation was started from")
    if src[0]["config"]["model"] != cfg.identity()["model"]:
        raise ValueError("--init-from: the source run has a different model size; use the same model flags")
    return src[1]


def load_ema(params: list[torch.Tensor], tensors: dict[str, torch.Tensor]) -> bool:
    """Copy a checkpoint's EMA ("ema.<i>") into params; False when it kept none."""
    if "ema.0" not in tensors:
        return False
    copy_into(params, [tensors[f"ema.{i}"] for i in range(len(params))])
    return True
