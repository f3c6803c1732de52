"""Two-stage pretraining of the bundled tiny text-to-image latent diffusion model.

Stage 1 ("vae") trains the AutoencoderKL on pool images: reconstruction MSE (images in [-1, 1])
plus a small KL term. Its latent scaling factor is then measured (1 / std of posterior samples,
Stable Diffusion's convention) and written into the VAE config, and every pool image is encoded
once (posterior mean and std kept in memory; stage 2 draws a fresh latent sample every step).

Stage 2 ("unet") trains the CLIP text encoder and the UNet jointly on the noise-prediction MSE
(or v-prediction) with the DDPM scaled-linear schedule read from the scheduler, captions re-phrased
every step, 10% of captions dropped to "" (classifier-free guidance), AdamW, linear warmup then
cosine (or constant) learning rate, gradient clipping and an optional EMA of the weights.

All per-step randomness (batch indices, caption phrasing and dropout, latent samples, noise,
timesteps) is derived from (seed, stage, step), so a run resumed from a checkpoint continues
exactly as an uninterrupted one (bit for bit on CPU). Checkpoints are safetensors + JSON under
`ckpt_dir`; losses go to `<out>/train_log.jsonl`. fp32 on CPU, bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gcpl import checkpoint
from gcpl.io import append_jsonl, read_jsonl
from gcpl.losses import add_noise
from gcpl.losses import target as noise_target
from gcpl.tiny_model import TinySDConfig, build_components
from pretraining.corpus import CaptionedPool, Corpus, CorpusConfig

STAGE_VAE, STAGE_UNET, STAGE_DONE = "vae", "unet", "done"
_STAGE_ID = {STAGE_VAE: 1, STAGE_UNET: 2}


@dataclass
class PretrainConfig:
    model: TinySDConfig = field(default_factory=TinySDConfig)
    seed: int = 0
    # corpus
    pool_size: int = 40000
    fractal_fraction: float = 0.5
    n_fractal_classes: int = 200
    # stage 1: VAE
    vae_steps: int = 500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6  # on the per-image KL sum; SD's autoencoder uses 1e-6 too
    scale_samples: int = 4096  # pool images used to measure the latent scaling factor
    # stage 2: text encoder + UNet
    steps: int = 2600
    batch: int = 32
    lr: float = 5e-4
    lr_schedule: str = "cosine"  # "cosine" (to min_lr_ratio * lr) or "constant", both after warmup
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    caption_dropout: float = 0.1
    ema_decay: float = 0.999  # 0 disables; the saved model uses the EMA weights when enabled
    probe_per_class: int = 4  # word probe at the end (unseen images per class; 0 = skip)
    # continued pretraining: identity of the finished run whose weights start stage 2 (set by
    # `init_source`); stage 1 is then skipped and the source's VAE and scaling factor are kept
    init: dict | None = None
    # bookkeeping (not part of the run's identity: may change on resume)
    ckpt_every: int = 500
    log_every: int = 25
    device: str = "cpu"
    threads: int | None = None
    workers: int = 1  # processes rendering the pool (identical result for any value)

    def identity(self) -> dict:
        """Everything that determines the trained weights; must match on --resume."""
        d = asdict(self)
        for k in ("ckpt_every", "log_every", "device", "threads", "workers", "probe_per_class"):
            d.pop(k)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["model"].items()}
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

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        d = dict(d)
        d.setdefault("init", None)
        m = dict(d.pop("model"))
        for k in ("unet_channels", "vae_channels"):
            m[k] = tuple(m[k])
        names = {f.name for f in fields(cls)}
        return cls(model=TinySDConfig(**m), **{k: v for k, v in d.items() if k in names})


@dataclass
class PretrainResult:
    components: dict  # tokenizer, text_encoder, vae, unet, scheduler (fp32, CPU, final weights)
    stats: dict
    corpus: Corpus
    pool: CaptionedPool


# ----------------------------------------------------------------------------------------------
# Small helpers


def _gen(seed: int, stage: int, step: int, device: str = "cpu") -> tuple[np.random.Generator, torch.Generator]:
    ss = np.random.SeedSequence([seed, stage, step])
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


def init_source(ckpt_dir: str | Path) -> dict:
    """Identity of the finished run in `ckpt_dir` (its settings and step), for `PretrainConfig.init`."""
    state = checkpoint_state(ckpt_dir)  # the weights are read by pretrain()
    if state is None:
        raise ValueError(f"--init-from: no checkpoint in {ckpt_dir} (expected latest.json there)")
    if state["stage"] != STAGE_UNET or state["step"] != state["config"]["steps"]:
        raise ValueError(f"--init-from: {ckpt_dir} holds an unfinished run (stage {state['stage']} step "
                         f"{state['step']}); finish it with --resume first")
    return {"config": state["config"], "step": state["step"], "vae": state["vae"], "seconds": state["seconds"]}


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _to_images(pool_u8: torch.Tensor, idx: torch.Tensor, device: str) -> torch.Tensor:
    x = pool_u8[idx].to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class _Tokens:
    """CLIP tokenisation exactly as StableDiffusionPipeline does it (pad to 77), cached per string."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            ids = self.tok(
                missing, padding="max_length", max_length=self.tok.model_max_length, truncation=True
            ).input_ids
            self.cache.update(zip(missing, ids))
        return torch.tensor([self.cache[c] for c in captions], dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# Checkpoints: gcpl.checkpoint snapshots (one safetensors file, JSON state in its header), rotated


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


# ----------------------------------------------------------------------------------------------
# Main loop


def pretrain(
    cfg: PretrainConfig,
    out: str | Path,
    ckpt_dir: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    init_dir: str | Path | None = None,
) -> PretrainResult | None:
    """Run (or resume) both stages. Returns None when stopped early by `stop_after` (a number of
    optimiser steps, both stages counted, after which a checkpoint is written and the run stops).

    With `cfg.init` set (see `init_source`), stage 2 starts from the final weights (the EMA when
    the source kept one) of the finished run checkpointed in `init_dir`, with a fresh optimiser,
    warmup and schedule and its own random stream; stage 1 is skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else out / "checkpoints"
    log_path = out / "train_log.jsonl"
    device = cfg.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    comps = build_components(cfg.model, seed=cfg.seed)
    vae, te, unet, sched = comps["vae"], comps["text_encoder"], comps["unet"], comps["scheduler"]

    state = {"stage": STAGE_VAE, "step": 0, "seconds": {}, "config": cfg.identity()}
    ckpt = load_checkpoint(ckpt_dir) if resume else None
    if resume and ckpt is None:
        log(f"resume: no checkpoint in {ckpt_dir}, starting from scratch")
    if ckpt is not None:
        state, model_t, optim_t = ckpt
        if state["config"] != cfg.identity():
            diff = {k for k in cfg.identity() if cfg.identity()[k] != state["config"].get(k)}
            raise ValueError(f"--resume: checkpoint in {ckpt_dir} was made with different settings: {sorted(diff)}")
        log(f"resume: stage {state['stage']} step {state['step']}")
        checkpoint.load_module(vae, "vae", model_t)
        if state["stage"] in (STAGE_UNET, STAGE_DONE):
            checkpoint.load_module(te, "text_encoder", model_t)
            checkpoint.load_module(unet, "unet", model_t)
        # drop log lines written after this checkpoint (they will be written again)
        order = [STAGE_VAE, STAGE_UNET, STAGE_DONE]
        keep = [r for r in read_jsonl(log_path)
                if (order.index(r["stage"]), r["step"]) <= (order.index(state["stage"]), state["step"])]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    elif log_path.exists():
        log_path.unlink()
    if ckpt is None and cfg.init is not None:
        if init_dir is None:
            raise ValueError("cfg.init is set: pass init_dir, the source run's checkpoint folder")
        src = load_checkpoint(Path(init_dir))
        if src is None or {k: src[0][k] for k in ("config", "step")} != {k: cfg.init[k] for k in ("config", "step")}:
            raise ValueError(f"--init-from: {init_dir} no longer holds the run this continuation was started from")
        if src[0]["config"]["model"] != cfg.identity()["model"]:
            raise ValueError("--init-from: the source run has a different model size; use the same model flags")
        _, model_t, _ = src
        checkpoint.load_module(vae, "vae", model_t)
        checkpoint.load_module(te, "text_encoder", model_t)
        checkpoint.load_module(unet, "unet", model_t)
        if "ema.0" in model_t:
            with torch.no_grad():
                for i, p_ in enumerate(list(te.parameters()) + list(unet.parameters())):
                    p_.copy_(model_t[f"ema.{i}"])
        state = {"stage": STAGE_UNET, "step": 0, "seconds": {}, "config": cfg.identity(), "vae": dict(cfg.init["vae"])}
        log(f"init: stage 2 starts from {init_dir} (step {cfg.init['step']}"
            f"{', EMA weights' if 'ema.0' in model_t else ''}); stage 1 skipped")

    # corpus and in-memory pool
    corpus = Corpus(CorpusConfig(seed=cfg.seed, image_size=cfg.model.image_size,
                                 fractal_fraction=cfg.fractal_fraction, n_fractal_classes=cfg.n_fractal_classes))
    pool = CaptionedPool(corpus, cfg.pool_size, workers=cfg.workers, log=log)
    log(f"pool: {pool.summary()}")
    pool_u8 = torch.from_numpy(pool.images)
    if device.startswith("cuda"):
        pool_u8 = pool_u8.to(device)
    vae.to(device)
    budget = [stop_after]  # steps left in this call

    def tick() -> bool:
        if budget[0] is None:
            return False
        budget[0] -= 1
        return budget[0] <= 0

    # ------------------------------------------------------------------ stage 1: VAE
    if state["stage"] == STAGE_VAE:
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        if ckpt is not None and ckpt[2] is not None:
            checkpoint.load_optimizer(opt, ckpt[2], state["optim_param_groups"])
        vae.train()
        t0, acc, n_acc = time.perf_counter(), torch.zeros(2, device=device), 0
        base_seconds = state["seconds"].get("vae", 0.0)
        while state["step"] < cfg.vae_steps:
            step = state["step"]
            rng, g = _gen(cfg.seed, 1, step)
            idx = torch.from_numpy(rng.integers(0, len(pool), cfg.vae_batch))
            x = _to_images(pool_u8, idx.to(pool_u8.device), device)
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step, cfg.vae_lr, cfg.vae_steps, min(cfg.warmup, cfg.vae_steps // 10),
                                  "cosine", cfg.min_lr_ratio)
            with _autocast(device):
                post = vae.encode(x).latent_dist
                eps = torch.randn(post.mean.shape, generator=g).to(device)
                z = post.mean + post.std * eps
                rec = vae.decode(z).sample
            mse = F.mse_loss(rec.float(), x)
            kl = post.kl().float().mean()
            loss = mse + cfg.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
            opt.step()
            state["step"] = step + 1
            acc += torch.stack([mse.detach(), kl.detach()])
            n_acc += 1
            elapsed = base_seconds + time.perf_counter() - t0
            if state["step"] % cfg.log_every == 0 or state["step"] == cfg.vae_steps:
                a_ = (acc / n_acc).tolist()
                rec_ = {"stage": STAGE_VAE, "step": state["step"], "recon_mse": a_[0], "kl": a_[1],
                        "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 2)}
                append_jsonl(log_path, rec_)
                log(f"vae step {state['step']}/{cfg.vae_steps} recon_mse {rec_['recon_mse']:.4f} "
                    f"kl {rec_['kl']:.1f} ({elapsed:.0f} s)")
                acc, n_acc = torch.zeros(2, device=device), 0
            stop = tick()
            if state["step"] % cfg.ckpt_every == 0 or stop:
                state["seconds"]["vae"] = elapsed
                save_checkpoint(ckpt_dir, state, {"vae": vae}, opt, None)
            if stop:
                return None
        state["seconds"]["vae"] = base_seconds + time.perf_counter() - t0
        vae.eval()
        # measure the latent scale on pool images and a held-out reconstruction error
        t1 = time.perf_counter()
        with torch.no_grad():
            n = min(cfg.scale_samples, len(pool))
            _, g = _gen(cfg.seed, 3, 0)
            zs = []
            for s in range(0, n, 256):
                x = _to_images(pool_u8, torch.arange(s, min(n, s + 256), device=pool_u8.device), device)
                post = vae.encode(x).latent_dist
                zs.append((post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)).float().cpu())
            std = torch.cat(zs).std().item()
            # held-out: corpus samples beyond the pool, never trained on
            hx = np.stack([corpus.sample(cfg.pool_size + i)[0] for i in range(min(512, max(8, cfg.pool_size // 4)))])
            hx = torch.from_numpy(hx).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
            hrec = torch.cat([vae.decode(vae.encode(hx[s:s + 256]).latent_dist.mode()).sample.float()
                              for s in range(0, len(hx), 256)])
            val_mse = F.mse_loss(hrec, hx.float()).item()
        sf = 1.0 / std
        vae.register_to_config(scaling_factor=sf)
        state["vae"] = {"scaling_factor": sf, "latent_std": std, "val_recon_mse": val_mse,
                        "train_recon_mse_last": _last(log_path, STAGE_VAE, "recon_mse")}
        state["stage"], state["step"] = STAGE_UNET, 0
        state["seconds"]["measure"] = time.perf_counter() - t1
        log(f"vae: held-out recon MSE {val_mse:.4f}, latent std {std:.4f} -> scaling_factor {sf:.5f}")
        save_checkpoint(ckpt_dir, state, {"vae": vae, "text_encoder": te, "unet": unet}, None, None)
        ckpt = None
    else:
        vae.register_to_config(scaling_factor=state["vae"]["scaling_factor"])
    vae.eval().requires_grad_(False)
    sf = float(vae.config.scaling_factor)

    # ------------------------------------------------------------------ stage 2: text encoder + UNet
    te.to(device).train()
    unet.to(device).train()
    params = list(te.parameters()) + list(unet.parameters())
    # no weight decay on embeddings, norms and biases
    decay = [p for n_, p in list(te.named_parameters()) + list(unet.named_parameters())
             if p.ndim >= 2 and "embedding" not in n_]
    no_decay_ids = {id(p) for p in params} - {id(p) for p in decay}
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": [p for p in params if id(p) in no_decay_ids], "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.999),
    )
    ema = [p.detach().clone().float() for p in params] if cfg.ema_decay > 0 else None
    if ckpt is not None:
        state_c, model_t, optim_t = ckpt
        if optim_t is not None:
            checkpoint.load_optimizer(opt, optim_t, state["optim_param_groups"])
        if ema is not None and "ema.0" in model_t:
            ema = [model_t[f"ema.{i}"].to(device) for i in range(len(params))]
    del ckpt

    t1 = time.perf_counter()
    lat_mean, lat_std = _encode_pool(vae, pool_u8, device)
    state["seconds"]["encode_pool"] = time.perf_counter() - t1
    log(f"encoded {len(pool)} pool images to latents in {state['seconds']['encode_pool']:.0f} s")
    tokens = _Tokens(comps["tokenizer"])
    n_train_t = sched.config.num_train_timesteps
    pred_type = sched.config.prediction_type
    abar = sched.alphas_cumprod.to(device)

    # the loss is summed on the device and read at log steps only: no per-step sync on CUDA, so
    # the CPU prepares the next batch (captions, tokens) while the GPU still computes
    t0, acc, n_acc = time.perf_counter(), torch.zeros((), device=device), 0
    base_seconds = state["seconds"].get("unet", 0.0)
    while state["step"] < cfg.steps:
        step = state["step"]
        rng, g = _gen(cfg.seed, 2 + 10 * cfg.depth(), step)  # a continuation draws new batches and noise
        idx = torch.from_numpy(rng.integers(0, len(pool), cfg.batch))
        caps = pool.captions(idx.tolist(), rng)
        drop = rng.random(cfg.batch) < cfg.caption_dropout
        caps = ["" if d else c for c, d in zip(caps, drop)]
        ids = tokens(caps).to(device)
        shape = (cfg.batch,) + tuple(lat_mean.shape[1:])
        eps_z = torch.randn(shape, generator=g)
        noise = torch.randn(shape, generator=g)
        t = torch.randint(0, n_train_t, (cfg.batch,), generator=g)
        dev_idx = idx.to(lat_mean.device)
        z0 = (lat_mean[dev_idx] + lat_std[dev_idx].float() * eps_z.to(device)) * sf
        noise, t = noise.to(device), t.to(device)
        noisy = add_noise(z0, noise, t, abar)  # gcpl.losses: the arithmetic gcpl trains and scores with
        target = noise_target(z0, noise, t, abar, pred_type)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, cfg.lr, cfg.steps, cfg.warmup, cfg.lr_schedule, cfg.min_lr_ratio)
        with _autocast(device):
            enc = te(ids)[0]
            pred = unet(noisy, t, encoder_hidden_states=enc).sample
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)
        state["step"] = step + 1
        acc += loss.detach()
        n_acc += 1
        elapsed = base_seconds + time.perf_counter() - t0
        if state["step"] % cfg.log_every == 0 or state["step"] == cfg.steps:
            rec_ = {"stage": STAGE_UNET, "step": state["step"], "loss": acc.item() / n_acc,
                    "grad_norm": float(gnorm), "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 2)}
            append_jsonl(log_path, rec_)
            log(f"unet step {state['step']}/{cfg.steps} loss {rec_['loss']:.4f} lr {rec_['lr']:.2e} "
                f"({elapsed:.0f} s, {elapsed / state['step']:.2f} s/step)")
            acc, n_acc = torch.zeros((), device=device), 0
        stop = tick()
        if state["step"] % cfg.ckpt_every == 0 or stop or state["step"] == cfg.steps:
            state["seconds"]["unet"] = elapsed
            save_checkpoint(ckpt_dir, state, {"vae": vae, "text_encoder": te, "unet": unet}, opt, ema)
        if stop and state["step"] < cfg.steps:
            return None
    state["seconds"]["unet"] = base_seconds + time.perf_counter() - t0

    # final weights: EMA if enabled; quick held-out diagnostics
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e.to(p.dtype))
    te.eval().requires_grad_(False)
    unet.eval().requires_grad_(False)
    t1 = time.perf_counter()
    diag = _diagnostics(cfg, pool, tokens, te, unet, sched, lat_mean, lat_std, sf, device)
    log(f"diffusion eval loss: captioned {diag['eval_loss_captioned']:.4f}, "
        f"empty caption {diag['eval_loss_empty_caption']:.4f}")
    if cfg.probe_per_class > 0:
        diag.update(word_probe(cfg, corpus, tokens, vae, te, unet, sched, device))
        log("word probe (zero-shot diffusion classifier, unseen images): " + ", ".join(
            f"{g} words {diag[f'probe_{g}_acc']:.3f} (chance {diag[f'probe_{g}_chance']:.2f})"
            for g in ("fractal", "shape") if f"probe_{g}_acc" in diag))
    state["seconds"]["diagnostics"] = time.perf_counter() - t1
    stats = {
        "vae": state["vae"],
        "unet": {"final_train_loss": _last(log_path, STAGE_UNET, "loss"),
                 "first_train_loss": _first(log_path, STAGE_UNET, "loss"), **diag},
        "seconds": state["seconds"],
        "pool": pool.summary(),
        "params": {"text_encoder": count_params(te), "unet": count_params(unet), "vae": count_params(vae)},
        "config": cfg.identity(),
        "device": device,
        "threads": torch.get_num_threads(),
    }
    for m in (te, unet, vae):
        m.to("cpu").float()
    return PretrainResult(components=comps, stats=stats, corpus=corpus, pool=pool)


@torch.no_grad()
def _encode_pool(vae, pool_u8: torch.Tensor, device: str, bs: int = 512):
    means, stds = [], []
    for s in range(0, len(pool_u8), bs):
        x = _to_images(pool_u8, torch.arange(s, min(len(pool_u8), s + bs), device=pool_u8.device), device)
        post = vae.encode(x).latent_dist  # fp32 also on CUDA: these latents are the training targets
        means.append(post.mean.float())
        stds.append(post.std.half())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def _diagnostics(cfg, pool, tokens, te, unet, sched, lat_mean, lat_std, sf, device, n: int = 256) -> dict:
    """Diffusion loss on fixed (image, t, noise) triples, with the caption and with "" instead:
    the gap shows how much the words inform the prediction."""
    rng, g = _gen(cfg.seed, 4, 0)
    n = min(n, len(pool))
    idx = torch.from_numpy(rng.choice(len(pool), n, replace=False))
    caps = pool.captions(idx.tolist(), rng)
    z0 = (lat_mean[idx.to(lat_mean.device)]).float() * sf
    noise = torch.randn(z0.shape, generator=g).to(device)
    t = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=g).to(device)
    abar = sched.alphas_cumprod.to(device)
    noisy = add_noise(z0, noise, t, abar)
    target = noise_target(z0, noise, t, abar, sched.config.prediction_type)
    out = {}
    for name, cs in (("captioned", caps), ("empty_caption", [""] * n)):
        tot = 0.0
        for s in range(0, n, 64):
            with _autocast(device):
                enc = te(tokens(cs[s:s + 64]).to(device))[0]
                pred = unet(noisy[s:s + 64], t[s:s + 64], encoder_hidden_states=enc).sample
            tot += F.mse_loss(pred.float(), target[s:s + 64].float(), reduction="sum").item()
        out[f"eval_loss_{name}"] = tot / noisy.numel()
    return out


@torch.no_grad()
def word_probe(cfg, corpus: Corpus, tokens, vae, te, unet, sched, device, n_way: int = 10,
               n_t: int = 10) -> dict:
    """Do the words steer the model? gcpl's zero-shot diffusion classifier (gcpl.classify) over
    unseen images: for `probe_per_class` fresh instances of each of `n_way` pretraining fractal
    categories (and of the 10 shapes, single objects), the caption ("<word> fractal." / "a <shape>.")
    with the lowest denoising error over `n_t` evenly spaced (timestep, noise) pairs shared by every
    caption and image. Returns accuracies (chance 1 / n_way)."""
    from gcpl.backbone import Backbone
    from gcpl.classify import ClassifyConfig, DiffusionClassifier
    from pretraining.corpus import SHAPES

    k = cfg.probe_per_class
    out = {}
    groups = {}
    if corpus._fractals:
        classes = corpus._fractals[:n_way]
        imgs, labels = [], []
        for c, cls in enumerate(classes):
            for j in range(k):
                rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x9B0BE, c, j]))
                imgs.append(np.asarray(cls.render(rng, size=cfg.model.image_size).convert("RGB"), np.uint8))
                labels.append(c)
        groups["fractal"] = (imgs, labels, [f"{cls.name} fractal." for cls in classes])
    shapes = list(SHAPES[:n_way])
    imgs, labels, counts, i = [], [], {s_: 0 for s_ in shapes}, 0
    while min(counts.values()) < k and i < 200 * k * n_way:
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x9B0BE, 10**6 + i]))
        i += 1
        img, attrs = corpus._render_shapes(rng)
        if len(attrs["objects"]) == 1 and counts.get(attrs["objects"][0]["shape"], k) < k:
            counts[attrs["objects"][0]["shape"]] += 1
            imgs.append(img)
            labels.append(shapes.index(attrs["objects"][0]["shape"]))
    groups["shape"] = (imgs, labels, [f"a {s_}." for s_ in shapes])
    bb = Backbone("pretraining", None, te, vae, unet, sched.alphas_cumprod.to(device), sched.config.prediction_type,
                  torch.device(device), next(unet.parameters()).dtype, dict(sched.config))
    for name, (imgs, labels, prompts) in groups.items():
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        z0 = vae.encode(x).latent_dist.mean.float() * float(vae.config.scaling_factor)
        with _autocast(device):
            enc = te(tokens(prompts).to(device))[0]
        clf = DiffusionClassifier(bb, enc.float(), ClassifyConfig(n_samples=(n_t,), keep=(1,), seed=cfg.seed),
                                  tuple(z0.shape[1:]))
        pred_label = torch.tensor([s.pred for s in clf.score(z0)])
        out[f"probe_{name}_acc"] = float((pred_label == torch.tensor(labels)).float().mean())
        out[f"probe_{name}_chance"] = 1.0 / len(prompts)
    return out


def _last(log_path: Path, stage: str, key: str):
    rs = [r[key] for r in read_jsonl(log_path) if r["stage"] == stage and key in r]
    return rs[-1] if rs else None


def _first(log_path: Path, stage: str, key: str):
    rs = [r[key] for r in read_jsonl(log_path) if r["stage"] == stage and key in r]
    return rs[0] if rs else None
