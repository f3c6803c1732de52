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
helpers of `pretraining.sd`); losses go to `<out>/train_log.jsonl`.

`zero_shot_probe` is the image-text counterpart of `pretraining.sd.word_probe`: the same unseen
rendered instances (same seeds) of the first 10 pretraining fractal categories and of the 10 shapes,
classified by the cosine similarity between the image and the prompts "<word> fractal." /
"a <shape>." (the SD probe's prompts), chance 10%.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gcpl import checkpoint
from gcpl.io import append_jsonl, read_jsonl, write_json
from pretraining.corpus import SHAPES, CaptionedPool, Corpus, CorpusConfig
from pretraining.sd import (
    _autocast,
    _gen,
    checkpoint_state,
    count_params,
    load_checkpoint,
    lr_at,
    save_checkpoint,
)

STAGE = "clip"
_STAGE_ID = 5  # random-stream namespace (pretraining.sd uses 1-4)
_PROBE_SEED = 0x9B0BE  # the seed namespace of pretraining.sd.word_probe: the same probe images

# OpenAI CLIP's normalisation (transformers.image_utils.OPENAI_CLIP_MEAN / _STD), so the folder's
# preprocessor_config.json is CLIPImageProcessor's defaults apart from the 32 px size.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TinyClipConfig:
    """Architecture. The text tower defaults to the bundled tiny SD's text encoder (hidden 64,
    3 layers, 4 heads, CLIP's 49,408-token vocabulary, 77 positions)."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 6
    vision_heads: int = 4
    text_hidden: int = 64
    text_layers: int = 3
    text_heads: int = 4
    projection_dim: int = 64
    mlp_ratio: int = 4
    hidden_act: str = "quick_gelu"
    logit_scale_init: float = 2.6592  # ln(1 / 0.07), CLIP's


@dataclass
class ClipPretrainConfig:
    model: TinyClipConfig = field(default_factory=TinyClipConfig)
    seed: int = 0
    # corpus: the bundled tiny SD's settings (src/gcpl/assets/tiny-sd/gcpl_build.json)
    pool_size: int = 80000
    fractal_fraction: float = 0.7
    n_fractal_classes: int = 200
    # optimisation
    steps: int = 3000
    batch: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine" (to min_lr_ratio * lr) or "constant", both after warmup
    warmup: int = 150
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    max_logit_scale: float = 100.0
    ema_decay: float = 0.999  # 0 disables; the saved model uses the EMA weights when enabled
    # continued pretraining: identity of the finished run whose final weights start this one
    # (set by `init_source`), with a fresh optimiser, warmup and schedule and its own random stream
    init: dict | None = None
    # bookkeeping (not part of the run's identity: may change on resume)
    probe_per_class: int = 20  # zero-shot probe at the end (unseen images per class; 0 = skip)
    probe_every: int = 0  # also probe (EMA weights, 4 per class) every this many steps (0 = never)
    ckpt_every: int = 250
    log_every: int = 25
    device: str = "cpu"
    threads: int | None = None
    workers: int = 1  # processes rendering the pool (identical result for any value)
    pool_cache: str | None = None  # folder keeping rendered pools (.npy + .json) for later runs and resumes

    def identity(self) -> dict:
        """Everything that determines the trained weights; must match on --resume."""
        d = asdict(self)
        for k in ("probe_per_class", "probe_every", "ckpt_every", "log_every", "device", "threads", "workers",
                  "pool_cache"):
            d.pop(k)
        if d["init"] is None:
            d.pop("init")
        return json.loads(json.dumps(d))  # tuples -> lists, as a checkpoint's JSON has them

    def sources(self) -> list[dict]:
        """The finished runs this one continues, oldest first (each an `init_source` dict)."""
        out, init = [], self.init
        while init is not None:
            out.append(init)
            init = init["config"].get("init")
        return out[::-1]

    def depth(self) -> int:
        return len(self.sources())

    def corpus_config(self) -> CorpusConfig:
        return CorpusConfig(seed=self.seed, image_size=self.model.image_size,
                            fractal_fraction=self.fractal_fraction, n_fractal_classes=self.n_fractal_classes)

    @classmethod
    def from_dict(cls, d: dict) -> "ClipPretrainConfig":
        d = dict(d)
        d.setdefault("init", None)
        model = TinyClipConfig(**d.pop("model"))
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        names = {f.name for f in fields(cls)}
        return cls(model=model, **{k: v for k, v in d.items() if k in names})


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


class Tokens:
    """CLIP token ids (<|startoftext|> ... <|endoftext|>, truncated to 77), cached per string and
    padded with <|endoftext|> to the longest caption of the batch. The text tower is causal and
    pools at the first <|endoftext|>, so the features equal those of the usual padding to 77."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.pad = tokenizer.pad_token_id
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            ids = self.tok(missing, truncation=True, max_length=self.tok.model_max_length).input_ids
            self.cache.update(zip(missing, ids))
        rows = [self.cache[c] for c in captions]
        n = max(len(r) for r in rows)
        return torch.tensor([r + [self.pad] * (n - len(r)) for r in rows], dtype=torch.long)


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


def probe_sets(corpus: Corpus, seed: int, per_class: int, n_way: int = 10,
               all_fractals: int = 0) -> dict[str, tuple[np.ndarray, list[int], list[str]]]:
    """Unseen rendered instances, exactly those of `pretraining.sd.word_probe` (same seeds; with
    more per class, the first 4 of each class are the SD probe's): `per_class` of each of the first
    `n_way` pretraining fractal categories ("fractal") and of the 10 shapes, single objects
    ("shape"); with `all_fractals` > 0, also that many of each of all the corpus's categories
    ("fractal_all").
    Returns {name: (images uint8 (N, H, W, 3), labels, prompts)}."""
    size = corpus.cfg.image_size
    groups = {}

    def fractal_group(classes, k):
        imgs, labels = [], []
        for c, cls in enumerate(classes):
            for j in range(k):
                rng = np.random.default_rng(np.random.SeedSequence([seed, _PROBE_SEED, c, j]))
                imgs.append(np.asarray(cls.render(rng, size=size).convert("RGB"), np.uint8))
                labels.append(c)
        return np.stack(imgs), labels, [f"{cls.name} fractal." for cls in classes]

    if corpus._fractals:
        groups["fractal"] = fractal_group(corpus._fractals[:n_way], per_class)
    shapes = list(SHAPES[:n_way])
    imgs, labels, counts, i = [], [], {s: 0 for s in shapes}, 0
    while min(counts.values()) < per_class and i < 200 * per_class * n_way:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _PROBE_SEED, 10**6 + i]))
        i += 1
        img, attrs = corpus._render_shapes(rng)
        if len(attrs["objects"]) == 1 and counts.get(attrs["objects"][0]["shape"], per_class) < per_class:
            counts[attrs["objects"][0]["shape"]] += 1
            imgs.append(img)
            labels.append(shapes.index(attrs["objects"][0]["shape"]))
    groups["shape"] = (np.stack(imgs), labels, [f"a {s}." for s in shapes])
    if all_fractals and corpus._fractals and len(corpus._fractals) > n_way:
        groups["fractal_all"] = fractal_group(corpus._fractals, all_fractals)
    return groups


@torch.no_grad()
def zero_shot_probe(model, tokens: Tokens, groups: dict, device: str = "cpu", sd_subset: int = 4) -> dict:
    """Zero-shot classification by cosine similarity between images and prompts. Returns
    `probe_<group>_acc`, `_chance`, `_n` and, for comparison with the tiny SD's probe,
    `probe_<group>_acc_first<sd_subset>` on the first `sd_subset` instances of each class."""
    was_training = model.training
    model.eval()
    out = {}
    for name, (imgs, labels, prompts) in groups.items():
        with _autocast(device):
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
    state = checkpoint_state(ckpt_dir)
    if state is None:
        raise ValueError(f"--init-from: no checkpoint in {ckpt_dir} (expected latest.json there)")
    if state.get("stage") != STAGE or state["step"] != state["config"]["steps"]:
        raise ValueError(f"--init-from: {ckpt_dir} holds an unfinished run (step {state['step']} of "
                         f"{state['config']['steps']}); finish it with --resume first")
    return {"config": state["config"], "step": state["step"], "seconds": state["seconds"]}


# ----------------------------------------------------------------------------------------------
# Main loop


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on embeddings (token, position, class, patch), norms,
    biases or the logit scale."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embedding" not in n else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else out / "checkpoints"
    log_path = out / "train_log.jsonl"
    device = cfg.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True

    model, tokenizer = build_clip(cfg.model, seed=cfg.seed)
    params = list(model.parameters())
    state = {"stage": STAGE, "step": 0, "seconds": {}, "config": cfg.identity()}
    ckpt = load_checkpoint(ckpt_dir) if resume else None
    if resume and ckpt is None:
        log(f"resume: no checkpoint in {ckpt_dir}, starting from scratch")
    if ckpt is not None:
        state = ckpt[0]
        if state["config"] != cfg.identity():
            ident = cfg.identity()
            diff = {k for k in set(ident) | set(state["config"]) if ident.get(k) != state["config"].get(k)}
            raise ValueError(f"--resume: checkpoint in {ckpt_dir} was made with different settings: {sorted(diff)}")
        log(f"resume: step {state['step']}")
        checkpoint.load_module(model, STAGE, ckpt[1])
        keep = [r for r in read_jsonl(log_path) if r["step"] <= state["step"]]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    else:
        if log_path.exists():
            log_path.unlink()
        if cfg.init is not None:
            if init_dir is None:
                raise ValueError("cfg.init is set: pass init_dir, the source run's checkpoint folder")
            src = load_checkpoint(Path(init_dir))
            if src is None or {k: src[0][k] for k in ("config", "step")} != {k: cfg.init[k] for k in ("config", "step")}:
                raise ValueError(f"--init-from: {init_dir} no longer holds the run this continuation was started from")
            if src[0]["config"]["model"] != cfg.identity()["model"]:
                raise ValueError("--init-from: the source run has a different model size; use the same model flags")
            checkpoint.load_module(model, STAGE, src[1])
            if "ema.0" in src[1]:
                with torch.no_grad():
                    for i, p in enumerate(params):
                        p.copy_(src[1][f"ema.{i}"])
            log(f"init: starting from {init_dir} (step {cfg.init['step']}"
                f"{', EMA weights' if 'ema.0' in src[1] else ''})")

    corpus = Corpus(cfg.corpus_config())
    pool = cached_pool(corpus, cfg.pool_size, cfg.workers, log, cfg.pool_cache)
    log(f"pool: {pool.summary()}")
    pool_u8 = torch.from_numpy(pool.images)
    tokens = Tokens(tokenizer)
    model.to(device).train()
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
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
        with torch.no_grad():
            if ema is not None:
                for p, e in zip(params, ema):
                    p.copy_(e.to(p.dtype))
            res = zero_shot_probe(model, tokens, probe_groups, device)
            for p, b in zip(params, backup):
                p.copy_(b)
        rec = {"stage": "probe", "step": step, **{k: v for k, v in res.items() if k.endswith("_acc")}}
        append_jsonl(log_path, rec)
        log(f"probe step {step}: fractal {res.get('probe_fractal_acc', float('nan')):.3f} "
            f"shape {res['probe_shape_acc']:.3f} (4 per class, {'EMA' if ema is not None else 'raw'} weights)")

    budget = [stop_after]

    def tick() -> bool:
        if budget[0] is None:
            return False
        budget[0] -= 1
        return budget[0] <= 0

    t0, n_acc = time.perf_counter(), 0
    acc = torch.zeros(3, device=device)
    base_seconds = state["seconds"].get("train", 0.0)
    while state["step"] < cfg.steps:
        step = state["step"]
        rng, _ = _gen(cfg.seed, _STAGE_ID + 10 * cfg.depth(), step)  # a continuation draws new batches
        idx = rng.integers(0, len(pool), cfg.batch)
        caps = pool.captions(idx.tolist(), rng)
        ids = tokens(caps).to(device)
        px = pixel_values(pool_u8[torch.from_numpy(idx)]).to(device)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, cfg.lr, cfg.steps, cfg.warmup, cfg.lr_schedule, cfg.min_lr_ratio)
        with _autocast(device):
            img, txt = _features(model, ids, px)
        loss, a_i2t, a_t2i = clip_loss(img, txt, model.logit_scale.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_log_scale)
        if ema is not None:
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)
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
        stop = tick()
        if state["step"] % cfg.ckpt_every == 0 or stop or state["step"] == cfg.steps:
            state["seconds"]["train"] = elapsed
            save_checkpoint(ckpt_dir, state, {STAGE: model}, opt, ema)
        if stop and state["step"] < cfg.steps:
            return None
    state["seconds"]["train"] = base_seconds + time.perf_counter() - t0

    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e.to(p.dtype))
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
        "config": cfg.identity(),
        "device": device,
        "threads": torch.get_num_threads(),
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
