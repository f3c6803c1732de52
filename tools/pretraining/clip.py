"""Contrastive pretraining of the bundled tiny CLIP (ViT image tower + CLIP text transformer).

The data are those of the bundled tiny Stable Diffusion: the same procedural `Corpus` with the same
settings (seed, pool size, fractal fraction, fractal classes, 32 px images), rendered into the same
in-memory `CaptionedPool`, captions re-phrased at every step by the same `Corpus.caption`. Only the
objective differs: CLIP's symmetric InfoNCE over the batch (image i <-> caption i) with a learnable
logit scale (initialised to 1/0.07, clamped at 100), instead of denoising. There is no caption
dropout (that belongs to classifier-free guidance) and no image augmentation (the diffusion model
saw the pool images unaugmented too).

AdamW (CLIP's betas 0.9/0.98, eps 1e-6; no weight decay on embeddings, norms, biases and the logit
scale), linear warmup then cosine (or constant) learning rate, gradient clipping, optional EMA of
the weights (the saved model is the EMA when enabled).

All per-step randomness (batch indices, caption phrasing) is derived from (seed, step) as in
`pretraining.sd`, and the model has no dropout, so a run resumed from a checkpoint continues
exactly as an uninterrupted one (bit for bit on CPU). Checkpoints are safetensors + JSON (the
machinery shared with the tiny SD is `pretraining.common`'s); losses go to `<out>/train_log.jsonl`.

`zero_shot_probe` is the image-text counterpart of `pretraining.sd.word_probe`: the same unseen
rendered instances (`pretraining.corpus.probe_sets`) of the first 10 pretraining fractal categories
and of the 10 shapes, classified by the cosine similarity between the image and the prompts
"<word> fractal." / "a <shape>." (the SD probe's prompts), chance 10%.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gcpl import checkpoint
from gcpl.io import append_jsonl, read_jsonl, write_json
from gcpl.settings import setting
from pretraining import common
from pretraining.common import PretrainSettings, Tokens, count_params, with_default
from pretraining.corpus import CaptionedPool, Corpus, probe_sets

STAGE = "clip"
_STAGE_ID = 5  # random-stream namespace (pretraining.sd uses 1-4)

# OpenAI CLIP's normalisation (transformers.image_utils.OPENAI_CLIP_MEAN / _STD), so the folder's
# preprocessor_config.json is CLIPImageProcessor's defaults apart from the 32 px size.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TinyClipConfig:
    """Architecture. The text tower defaults to the bundled tiny SD's text encoder (hidden 64,
    3 layers, 4 heads, CLIP's 49,408-token vocabulary, 77 positions)."""

    image_size: int = setting(32, "image size in pixels")
    patch_size: int = setting(8, "ViT patch size in pixels", flag="--patch")
    vision_hidden: int = setting(128, "image tower width")
    vision_layers: int = setting(6, "image tower layers")
    vision_heads: int = setting(4, "image tower attention heads")
    text_hidden: int = setting(64, "text tower width")
    text_layers: int = setting(3, "text tower layers")
    text_heads: int = setting(4, "text tower attention heads")
    projection_dim: int = setting(64, "dimension of the shared image-text embedding")
    mlp_ratio: int = setting(4, "MLP width / hidden width", cli=False)
    hidden_act: str = setting("quick_gelu", "activation", cli=False)
    logit_scale_init: float = setting(2.6592, "initial logit scale: ln(1 / 0.07), CLIP's", cli=False)


@dataclass
class ClipPretrainConfig(PretrainSettings):
    """The tiny CLIP's run: the shared settings, with the bundled tiny SD's corpus settings
    (src/gcpl/assets/tiny-sd/gcpl_build.json) and CLIP's optimiser, logit scale and probes."""

    pool_size: int = with_default(PretrainSettings, "pool_size", 80000)
    fractal_fraction: float = with_default(PretrainSettings, "fractal_fraction", 0.7)
    steps: int = with_default(PretrainSettings, "steps", 3000)
    batch: int = with_default(PretrainSettings, "batch", 128)
    lr: float = with_default(PretrainSettings, "lr", 1e-3)
    warmup: int = with_default(PretrainSettings, "warmup", 150)
    min_lr_ratio: float = with_default(PretrainSettings, "min_lr_ratio", 0.05)
    weight_decay: float = with_default(PretrainSettings, "weight_decay", 0.1)
    probe_per_class: int = with_default(PretrainSettings, "probe_per_class", 20,
                                        "zero-shot probe at the end: unseen images per class (0 = skip)")
    ckpt_every: int = with_default(PretrainSettings, "ckpt_every", 250)
    model: TinyClipConfig = setting(default_factory=TinyClipConfig, help="architecture", cli=False)
    betas: tuple[float, float] = setting((0.9, 0.98), "AdamW betas (CLIP's)", cli=False)
    eps: float = setting(1e-6, "AdamW eps (CLIP's)", cli=False)
    max_logit_scale: float = setting(100.0, "the logit scale exp(t) is clamped at this", cli=False)
    probe_every: int = setting(0, "also probe every N steps, 4 images per class, EMA weights (0 = never)",
                               identity=False)
    pool_cache: str | None = setting(None, "keep the rendered pool in DIR and reuse it in later runs and resumes",
                                     metavar="DIR", identity=False)


@dataclass
class ClipPretrainResult:
    model: "torch.nn.Module"  # transformers CLIPModel, fp32, CPU, final (EMA) weights
    tokenizer: object
    stats: dict
    corpus: Corpus
    pool: CaptionedPool


# ----------------------------------------------------------------------------------------------
# Model, tokens, images


def build_clip(cfg: TinyClipConfig, seed: int = 0):
    """Random-weight `CLIPModel` (fp32) and the CLIP tokenizer shared with the tiny SD."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from gcpl.tiny_model import TOKENIZER_DIR

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * cfg.mlp_ratio,
            num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, max_position_embeddings=77,
            hidden_act=cfg.hidden_act, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=cfg.projection_dim,
        ),
        vision_config=dict(
            image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=3, hidden_size=cfg.vision_hidden,
            intermediate_size=cfg.vision_hidden * cfg.mlp_ratio, num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads, hidden_act=cfg.hidden_act, projection_dim=cfg.projection_dim,
        ),
        projection_dim=cfg.projection_dim,
        logit_scale_init_value=cfg.logit_scale_init,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).float()
    return model, tokenizer


def pixel_values(images_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float, rescaled to [0, 1] and normalised with OpenAI
    CLIP's mean/std: what CLIPImageProcessor with this folder's preprocessor_config.json gives."""
    x = torch.as_tensor(images_u8).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _features(model, ids: torch.Tensor, px: torch.Tensor):
    img = model.get_image_features(pixel_values=px).pooler_output
    txt = model.get_text_features(input_ids=ids).pooler_output
    return F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor):
    """CLIP's symmetric InfoNCE on normalised features; also the in-batch top-1 accuracies."""
    logits = logit_scale.exp() * img @ txt.t()  # (images, captions)
    target = torch.arange(len(img), device=img.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    with torch.no_grad():
        acc_i2t = (logits.argmax(1) == target).float().mean()
        acc_t2i = (logits.argmax(0) == target).float().mean()
    return loss, acc_i2t, acc_t2i


def cached_pool(corpus: Corpus, n: int, workers: int = 1, log=None, cache_dir: str | Path | None = None) -> CaptionedPool:
    """`CaptionedPool(corpus, n)`, kept in `cache_dir` (images .npy, attrs .json, keyed by the corpus
    settings and n) so that a later run or a resume loads it instead of rendering it again. The
    pool is a pure function of (corpus settings, n): a cached one is the rendered one."""
    if cache_dir is None:
        return CaptionedPool(corpus, n, workers=workers, log=log)
    import hashlib

    key = json.dumps({"corpus": asdict(corpus.cfg), "n": n}, sort_keys=True)
    stem = Path(cache_dir) / f"pool-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m["key"] == key:
            pool = CaptionedPool.__new__(CaptionedPool)
            pool.corpus, pool.images, pool.attrs, pool.seconds = corpus, np.load(npy), m["attrs"], m["render_seconds"]
            pool.from_cache = str(npy)
            if log is not None:
                log(f"pool: loaded {n} images from {npy} (rendered in {pool.seconds:.0f} s when cached)")
            return pool
    pool = CaptionedPool(corpus, n, workers=workers, log=log)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tmp = stem.with_name(stem.name + ".tmp.npy")
    np.save(tmp, pool.images)
    tmp.replace(npy)
    write_json(meta, {"key": key, "render_seconds": pool.seconds, "attrs": pool.attrs})
    return pool


# ----------------------------------------------------------------------------------------------
# Zero-shot probe


@torch.no_grad()
def zero_shot_probe(model, tokens: Tokens, groups: dict, device: str = "cpu", sd_subset: int = 4) -> dict:
    """Zero-shot classification by cosine similarity between images and prompts. Returns
    `probe_<group>_acc`, `_chance`, `_n` and, for comparison with the tiny SD's probe,
    `probe_<group>_acc_first<sd_subset>` on the first `sd_subset` instances of each class."""
    was_training = model.training
    model.eval()
    out = {}
    for name, (imgs, labels, prompts) in groups.items():
        with common.autocast(device):
            txt = model.get_text_features(input_ids=tokens(prompts).to(device)).pooler_output
            img = torch.cat([model.get_image_features(pixel_values=pixel_values(imgs[s:s + 256]).to(device)).pooler_output
                             for s in range(0, len(imgs), 256)])
        sim = F.normalize(img.float(), dim=-1) @ F.normalize(txt.float(), dim=-1).t()
        pred = sim.argmax(1).cpu()
        y = torch.tensor(labels)
        hit = (pred == y).float()
        out[f"probe_{name}_acc"] = float(hit.mean())
        out[f"probe_{name}_chance"] = 1.0 / len(prompts)
        out[f"probe_{name}_n"] = len(labels)
        # instance j of class c: the first `sd_subset` of each class are pretraining.sd.word_probe's
        rank = torch.zeros(len(y), dtype=torch.long)
        seen: dict[int, int] = {}
        for k, c in enumerate(labels):
            rank[k] = seen.get(c, 0)
            seen[c] = rank[k].item() + 1
        sub = rank < sd_subset
        if sub.sum() < len(y):
            out[f"probe_{name}_acc_first{sd_subset}"] = float(hit[sub].mean())
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------
# Continued pretraining


def init_source(ckpt_dir: str | Path) -> dict:
    """Identity of the finished run in `ckpt_dir` (its settings and step), for `ClipPretrainConfig.init`."""
    return common.finished_run(ckpt_dir, STAGE)


# ----------------------------------------------------------------------------------------------
# Main loop


def pretrain_clip(
    cfg: ClipPretrainConfig,
    out: str | Path,
    ckpt_dir: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    init_dir: str | Path | None = None,
) -> ClipPretrainResult | None:
    """Run (or resume) the contrastive pretraining. Returns None when stopped early by
    `stop_after` (optimiser steps in this call, after which a checkpoint is written).

    With `cfg.init` set (see `init_source`), training starts from the final weights (the EMA when
    the source kept one) of the finished run checkpointed in `init_dir`."""
    out, ckpt_dir, log_path = common.start(cfg, out, ckpt_dir)
    device = cfg.device
    model, tokenizer = build_clip(cfg.model, seed=cfg.seed)
    params = list(model.parameters())
    state = {"stage": STAGE, "step": 0, "seconds": {}, "config": cfg.identity()}
    ckpt = common.resume_checkpoint(cfg, ckpt_dir, resume, log)
    if ckpt is not None:
        state = ckpt[0]
        log(f"resume: step {state['step']}")
        checkpoint.load_module(model, STAGE, ckpt[1])
    common.restart_log(log_path, state if ckpt is not None else None, lambda r: (r["step"],))
    if ckpt is None and cfg.init is not None:
        weights = common.source_weights(cfg, init_dir)
        checkpoint.load_module(model, STAGE, weights)
        ema_used = common.load_ema(params, weights)
        log(f"init: starting from {init_dir} (step {cfg.init['step']}{', EMA weights' if ema_used else ''})")

    corpus = Corpus(cfg.corpus_config())
    pool = cached_pool(corpus, cfg.pool_size, cfg.workers, log, cfg.pool_cache)
    log(f"pool: {pool.summary()}")
    pool_u8 = torch.from_numpy(pool.images)
    tokens = Tokens(tokenizer)
    model.to(device).train()
    opt = torch.optim.AdamW(common.decay_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                            betas=tuple(cfg.betas), eps=cfg.eps)
    ema = [p.detach().clone().float() for p in params] if cfg.ema_decay > 0 else None
    if ckpt is not None:
        if ckpt[2] is not None:
            checkpoint.load_optimizer(opt, ckpt[2], state["optim_param_groups"])
        if ema is not None:
            ema = [ckpt[1][f"ema.{i}"].to(device) for i in range(len(params))]
    del ckpt
    probe_groups = (probe_sets(corpus, cfg.seed, 4) if cfg.probe_every > 0 else None)
    max_log_scale = float(np.log(cfg.max_logit_scale))

    def probe_now(step: int) -> None:
        backup = [p.detach().clone() for p in params]
        if ema is not None:
            common.copy_into(params, ema)
        res = zero_shot_probe(model, tokens, probe_groups, device)
        common.copy_into(params, backup)
        rec = {"stage": "probe", "step": step, **{k: v for k, v in res.items() if k.endswith("_acc")}}
        append_jsonl(log_path, rec)
        log(f"probe step {step}: fractal {res.get('probe_fractal_acc', float('nan')):.3f} "
            f"shape {res['probe_shape_acc']:.3f} (4 per class, {'EMA' if ema is not None else 'raw'} weights)")

    budget = common.StepBudget(stop_after)

    t0, n_acc = time.perf_counter(), 0
    acc = torch.zeros(3, device=device)
    base_seconds = state["seconds"].get("train", 0.0)
    while state["step"] < cfg.steps:
        step = state["step"]
        rng, _ = common.generators(cfg.seed, _STAGE_ID + 10 * cfg.depth(), step)  # a continuation draws new batches
        idx = rng.integers(0, len(pool), cfg.batch)
        caps = pool.captions(idx.tolist(), rng)
        ids = tokens(caps).to(device)
        px = pixel_values(pool_u8[torch.from_numpy(idx)]).to(device)
        common.set_lr(opt, common.lr_at(step, cfg.lr, cfg.steps, cfg.warmup, cfg.lr_schedule, cfg.min_lr_ratio))
        with common.autocast(device):
            img, txt = _features(model, ids, px)
        loss, a_i2t, a_t2i = clip_loss(img, txt, model.logit_scale.float())
        gnorm = common.optimiser_step(opt, loss, params, cfg.grad_clip)
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_log_scale)
        if ema is not None:
            common.ema_update(ema, params, cfg.ema_decay, step)
        state["step"] = step + 1
        acc += torch.stack([loss.detach(), a_i2t, a_t2i])
        n_acc += 1
        elapsed = base_seconds + time.perf_counter() - t0
        if state["step"] % cfg.log_every == 0 or state["step"] == cfg.steps:
            a = (acc / n_acc).tolist()
            rec = {"stage": STAGE, "step": state["step"], "loss": a[0], "acc_i2t": a[1], "acc_t2i": a[2],
                   "logit_scale": float(model.logit_scale.detach().exp()), "grad_norm": float(gnorm),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 2)}
            append_jsonl(log_path, rec)
            log(f"clip step {state['step']}/{cfg.steps} loss {rec['loss']:.4f} acc i2t {rec['acc_i2t']:.3f} "
                f"t2i {rec['acc_t2i']:.3f} scale {rec['logit_scale']:.1f} lr {rec['lr']:.2e} "
                f"({elapsed:.0f} s, {elapsed / state['step']:.2f} s/step)")
            acc, n_acc = torch.zeros(3, device=device), 0
        if cfg.probe_every > 0 and state["step"] % cfg.probe_every == 0:
            probe_now(state["step"])
        save, stop = budget.step_done(state["step"], cfg.steps, cfg.ckpt_every)
        if save:
            state["seconds"]["train"] = elapsed
            common.save_checkpoint(ckpt_dir, state, {STAGE: model}, opt, ema)
        if stop:
            return None
    state["seconds"]["train"] = base_seconds + time.perf_counter() - t0

    if ema is not None:
        common.copy_into(params, ema)
    model.eval().requires_grad_(False)
    diag = {}
    if cfg.probe_per_class > 0:
        t1 = time.perf_counter()
        groups = probe_sets(corpus, cfg.seed, cfg.probe_per_class, all_fractals=min(5, cfg.probe_per_class))
        diag = zero_shot_probe(model, tokens, groups, device)
        diag["probe_per_class"] = cfg.probe_per_class
        diag["probe_seconds"] = time.perf_counter() - t1
        log("zero-shot probe (unseen images): " + ", ".join(
            f"{g} {diag[f'probe_{g}_acc']:.3f} (chance {diag[f'probe_{g}_chance']:.3f}, n {diag[f'probe_{g}_n']})"
            for g in ("fractal", "shape", "fractal_all") if f"probe_{g}_acc" in diag))
    recs = [r for r in read_jsonl(log_path) if r["stage"] == STAGE]
    stats = {
        "train": {"first_loss": recs[0]["loss"] if recs else None, "final_loss": recs[-1]["loss"] if recs else None,
                  "final_acc_i2t": recs[-1]["acc_i2t"] if recs else None,
                  "final_logit_scale": float(model.logit_scale.exp())},
        "probe": diag,
        "seconds": {**state["seconds"], "render_pool": pool.seconds},
        "pool": pool.summary(),
        "pool_from_cache": getattr(pool, "from_cache", None),
        "params": {"vision": count_params(model.vision_model), "text": count_params(model.text_model),
                   "projections": count_params(model.visual_projection) + count_params(model.text_projection) + 1,
                   "total": count_params(model)},
        **common.run_facts(cfg),
    }
    model.to("cpu").float()
    return ClipPretrainResult(model=model, tokenizer=tokenizer, stats=stats, corpus=corpus, pool=pool)


# ----------------------------------------------------------------------------------------------
# The saved folder


def preprocessor_config(image_size: int) -> dict:
    """CLIPImageProcessor settings matching `pixel_values` (a 32 px image passes resize and crop
    unchanged; larger ones are resized, shortest edge, bicubic, then centre-cropped)."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "do_convert_rgb": True,
    }


def save_clip_folder(model, tokenizer, out: str | Path, build: dict | None = None,
                     dtype: torch.dtype = torch.float16) -> dict:
    """Write a `CLIPModel.from_pretrained`-loadable folder: config.json + model.safetensors (weights
    stored in `dtype`; the config says float32, so a plain `from_pretrained` loads fp32 and
    `dtype=` any other), the CLIP tokenizer files (the tiny SD's vocab.json / merges.txt),
    preprocessor_config.json and, with `build`, gcpl_build.json. Returns {file: bytes}."""
    from gcpl.tiny_model import TOKENIZER_DIR

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "pytorch_model.bin"):
        (out / f).unlink(missing_ok=True)
    stored = _copy_model(model).to(dtype)
    stored.save_pretrained(out, safe_serialization=True)
    cfg_path = out / "config.json"
    data = json.loads(cfg_path.read_text())
    for d in (data, data.get("text_config", {}), data.get("vision_config", {})):
        if "dtype" in d or d is data:
            d["dtype"] = "float32"
        d.pop("torch_dtype", None)
    data.pop("_use_default_values", None)
    write_json(cfg_path, data)
    tokenizer.save_pretrained(out)
    # transformers 5 writes tokenizer.json only; keep CLIP's own files beside it as the tiny SD does
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / f, out / f)
    write_json(out / "preprocessor_config.json", preprocessor_config(model.config.vision_config.image_size))
    if build is not None:
        write_json(out / "gcpl_build.json", build)
    files = [p for p in sorted(out.iterdir()) if p.is_file()]
    for p in files:  # write_json's temporary files are 0600
        p.chmod(0o644)
    return {p.name: p.stat().st_size for p in files}


def _copy_model(model):
    import copy

    return copy.deepcopy(model).cpu()
