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
`ckpt_dir`; losses go to `<out>/train_log.jsonl` (the machinery shared with the tiny CLIP is
`pretraining.common`'s). fp32 on CPU, bf16 autocast on CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gcpl import checkpoint
from gcpl.io import append_jsonl
from gcpl.losses import add_noise
from gcpl.losses import target as noise_target
from gcpl.settings import setting
from gcpl.tiny_model import TinySDConfig, build_components
from pretraining import common
from pretraining.common import PretrainSettings, count_params, lr_at, with_default
from pretraining.corpus import CaptionedPool, Corpus, probe_sets

STAGE_VAE, STAGE_UNET, STAGE_DONE = "vae", "unet", "done"
_ORDER = (STAGE_VAE, STAGE_UNET, STAGE_DONE)
# random streams: 1 stage 1, 2 (+ 10 per continuation) stage 2, 3 the latent scale, 4 diagnostics


@dataclass
class PretrainConfig(PretrainSettings):
    """The tiny SD's run: the shared settings (defaults: the tiny SD's), stage 1's and the caption
    dropout of stage 2."""

    steps: int = with_default(PretrainSettings, "steps", 2600, "stage 2: optimiser steps")
    probe_per_class: int = with_default(PretrainSettings, "probe_per_class", 4,
                                        "word probe at the end: unseen images per class (0 = skip)")
    model: TinySDConfig = setting(default_factory=TinySDConfig, help="architecture", cli=False)
    # stage 1: VAE
    vae_steps: int = setting(500, "stage 1: VAE optimiser steps")
    vae_batch: int = setting(32, "stage 1: images per step")
    vae_lr: float = setting(1e-3, "stage 1: peak learning rate")
    kl_weight: float = setting(1e-6, "stage 1: weight of the per-image KL sum (SD's autoencoder uses 1e-6 too)")
    scale_samples: int = setting(4096, "pool images measuring the latent scaling factor", cli=False)
    # stage 2: text encoder + UNet (the shared optimisation settings)
    caption_dropout: float = setting(0.1, "stage 2: fraction of captions dropped to \"\" (classifier-free guidance)")


@dataclass
class PretrainResult:
    components: dict  # tokenizer, text_encoder, vae, unet, scheduler (fp32, CPU, final weights)
    stats: dict
    corpus: Corpus
    pool: CaptionedPool


def init_source(ckpt_dir: str | Path) -> dict:
    """Identity of the finished run in `ckpt_dir` (its settings, step, VAE statistics), for `PretrainConfig.init`."""
    return common.finished_run(ckpt_dir, STAGE_UNET, keep=("vae",))


def _to_images(pool_u8: torch.Tensor, idx: torch.Tensor, device: str) -> torch.Tensor:
    x = pool_u8[idx].to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


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
    out, ckpt_dir, log_path = common.start(cfg, out, ckpt_dir)
    device = cfg.device
    comps = build_components(cfg.model, seed=cfg.seed)
    vae, te, unet, sched = comps["vae"], comps["text_encoder"], comps["unet"], comps["scheduler"]
    params = list(te.parameters()) + list(unet.parameters())  # stage 2 trains these

    state = {"stage": STAGE_VAE, "step": 0, "seconds": {}, "config": cfg.identity()}
    ckpt = common.resume_checkpoint(cfg, ckpt_dir, resume, log)
    if ckpt is not None:
        state, model_t, _ = ckpt
        log(f"resume: stage {state['stage']} step {state['step']}")
        checkpoint.load_module(vae, "vae", model_t)
        if state["stage"] in (STAGE_UNET, STAGE_DONE):
            checkpoint.load_module(te, "text_encoder", model_t)
            checkpoint.load_module(unet, "unet", model_t)
    common.restart_log(log_path, state if ckpt is not None else None, lambda r: (_ORDER.index(r["stage"]), r["step"]))
    if ckpt is None and cfg.init is not None:
        model_t = common.source_weights(cfg, init_dir)
        checkpoint.load_module(vae, "vae", model_t)
        checkpoint.load_module(te, "text_encoder", model_t)
        checkpoint.load_module(unet, "unet", model_t)
        ema_used = common.load_ema(params, model_t)
        state = {"stage": STAGE_UNET, "step": 0, "seconds": {}, "config": cfg.identity(), "vae": dict(cfg.init["vae"])}
        log(f"init: stage 2 starts from {init_dir} (step {cfg.init['step']}"
            f"{', EMA weights' if ema_used else ''}); stage 1 skipped")

    # corpus and in-memory pool
    corpus = Corpus(cfg.corpus_config())
    pool = CaptionedPool(corpus, cfg.pool_size, workers=cfg.workers, log=log)
    log(f"pool: {pool.summary()}")
    pool_u8 = torch.from_numpy(pool.images)
    if device.startswith("cuda"):
        pool_u8 = pool_u8.to(device)
    vae.to(device)
    budget = common.StepBudget(stop_after)  # both stages counted

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
            rng, g = common.generators(cfg.seed, 1, step)
            idx = torch.from_numpy(rng.integers(0, len(pool), cfg.vae_batch))
            x = _to_images(pool_u8, idx.to(pool_u8.device), device)
            common.set_lr(opt, lr_at(step, cfg.vae_lr, cfg.vae_steps, min(cfg.warmup, cfg.vae_steps // 10), "cosine",
                              cfg.min_lr_ratio))
            with common.autocast(device):
                post = vae.encode(x).latent_dist
                eps = torch.randn(post.mean.shape, generator=g).to(device)
                z = post.mean + post.std * eps
                rec = vae.decode(z).sample
            mse = F.mse_loss(rec.float(), x)
            kl = post.kl().float().mean()
            loss = mse + cfg.kl_weight * kl
            common.optimiser_step(opt, loss, vae.parameters(), cfg.grad_clip)
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
            stop = budget.tick()
            if state["step"] % cfg.ckpt_every == 0 or stop:
                state["seconds"]["vae"] = elapsed
                common.save_checkpoint(ckpt_dir, state, {"vae": vae}, opt, None)
            if stop:
                return None
        state["seconds"]["vae"] = base_seconds + time.perf_counter() - t0
        vae.eval()
        # measure the latent scale on pool images and a held-out reconstruction error
        t1 = time.perf_counter()
        with torch.no_grad():
            n = min(cfg.scale_samples, len(pool))
            _, g = common.generators(cfg.seed, 3, 0)
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
                        "train_recon_mse_last": (common.logged(log_path, STAGE_VAE, "recon_mse") or [None])[-1]}
        state["stage"], state["step"] = STAGE_UNET, 0
        state["seconds"]["measure"] = time.perf_counter() - t1
        log(f"vae: held-out recon MSE {val_mse:.4f}, latent std {std:.4f} -> scaling_factor {sf:.5f}")
        common.save_checkpoint(ckpt_dir, state, {"vae": vae, "text_encoder": te, "unet": unet}, None, None)
        ckpt = None
    else:
        vae.register_to_config(scaling_factor=state["vae"]["scaling_factor"])
    vae.eval().requires_grad_(False)
    sf = float(vae.config.scaling_factor)

    # ------------------------------------------------------------------ stage 2: text encoder + UNet
    te.to(device).train()
    unet.to(device).train()
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(common.decay_groups([*te.named_parameters(), *unet.named_parameters()], cfg.weight_decay),
                            lr=cfg.lr, betas=(0.9, 0.999))
    ema = [p.detach().clone().float() for p in params] if cfg.ema_decay > 0 else None
    if ckpt is not None:
        _, model_t, optim_t = ckpt
        if optim_t is not None:
            checkpoint.load_optimizer(opt, optim_t, state["optim_param_groups"])
        if ema is not None and "ema.0" in model_t:
            ema = [model_t[f"ema.{i}"].to(device) for i in range(len(params))]
    del ckpt

    t1 = time.perf_counter()
    lat_mean, lat_std = _encode_pool(vae, pool_u8, device)
    state["seconds"]["encode_pool"] = time.perf_counter() - t1
    log(f"encoded {len(pool)} pool images to latents in {state['seconds']['encode_pool']:.0f} s")
    tokens = common.Tokens(comps["tokenizer"], fixed=True)
    n_train_t = sched.config.num_train_timesteps
    pred_type = sched.config.prediction_type
    abar = sched.alphas_cumprod.to(device)

    # the loss is summed on the device and read at log steps only: no per-step sync on CUDA, so
    # the CPU prepares the next batch (captions, tokens) while the GPU still computes
    t0, acc, n_acc = time.perf_counter(), torch.zeros((), device=device), 0
    base_seconds = state["seconds"].get("unet", 0.0)
    while state["step"] < cfg.steps:
        step = state["step"]
        rng, g = common.generators(cfg.seed, 2 + 10 * cfg.depth(), step)  # a continuation draws new batches and noise
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
        common.set_lr(opt, lr_at(step, cfg.lr, cfg.steps, cfg.warmup, cfg.lr_schedule, cfg.min_lr_ratio))
        with common.autocast(device):
            enc = te(ids)[0]
            pred = unet(noisy, t, encoder_hidden_states=enc).sample
        loss = F.mse_loss(pred.float(), target.float())
        gnorm = common.optimiser_step(opt, loss, params, cfg.grad_clip)
        if ema is not None:
            common.ema_update(ema, params, cfg.ema_decay, step)
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
        save, stop = budget.step_done(state["step"], cfg.steps, cfg.ckpt_every)
        if save:
            state["seconds"]["unet"] = elapsed
            common.save_checkpoint(ckpt_dir, state, {"vae": vae, "text_encoder": te, "unet": unet}, opt, ema)
        if stop:
            return None
    state["seconds"]["unet"] = base_seconds + time.perf_counter() - t0

    # final weights: EMA if enabled; quick held-out diagnostics
    if ema is not None:
        common.copy_into(params, ema)
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
    losses = common.logged(log_path, STAGE_UNET, "loss")
    stats = {
        "vae": state["vae"],
        "unet": {"final_train_loss": losses[-1] if losses else None, "first_train_loss": losses[0] if losses else None,
                 **diag},
        "seconds": state["seconds"],
        "pool": pool.summary(),
        "params": {"text_encoder": count_params(te), "unet": count_params(unet), "vae": count_params(vae)},
        **common.run_facts(cfg),
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
    rng, g = common.generators(cfg.seed, 4, 0)
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
            with common.autocast(device):
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
    categories (and of the 10 shapes, single objects; `pretraining.corpus.probe_sets`), the caption
    ("<word> fractal." / "a <shape>.")
    with the lowest denoising error over `n_t` evenly spaced (timestep, noise) pairs shared by every
    caption and image. Returns accuracies (chance 1 / n_way)."""
    from gcpl.backbone import Backbone
    from gcpl.classify import ClassifyConfig, DiffusionClassifier

    out = {}
    groups = probe_sets(corpus, cfg.seed, cfg.probe_per_class, n_way)
    bb = Backbone("pretraining", None, te, vae, unet, sched.alphas_cumprod.to(device), sched.config.prediction_type,
                  torch.device(device), next(unet.parameters()).dtype, dict(sched.config))
    for name, (imgs, labels, prompts) in groups.items():
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        z0 = vae.encode(x).latent_dist.mean.float() * float(vae.config.scaling_factor)
        with common.autocast(device):
            enc = te(tokens(prompts).to(device))[0]
        clf = DiffusionClassifier(bb, enc.float(), ClassifyConfig(n_samples=(n_t,), keep=(1,), seed=cfg.seed),
                                  tuple(z0.shape[1:]))
        pred_label = torch.tensor([s.pred for s in clf.score(z0)])
        out[f"probe_{name}_acc"] = float((pred_label == torch.tensor(labels)).float().mean())
        out[f"probe_{name}_chance"] = 1.0 / len(prompts)
    return out

