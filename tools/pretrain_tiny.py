"""Pretrain gcpl's bundled tiny text-to-image latent diffusion model and write it as a
StableDiffusionPipeline folder (fp16 weights), with a model card, loss curve and sample grid.

    python tools/pretrain_tiny.py --out src/gcpl/assets/tiny-sd --threads 1

Stage 1 trains the VAE, measures its latent scaling factor; stage 2 trains the CLIP text encoder
and the UNet on a procedural captioned corpus (shapes + FractalDB categories), see
tools/pretraining/corpus.py and tools/pretraining/sd.py. `--resume` continues from <ckpt-dir>/latest.json
exactly (same settings required). Checkpoints default to <out>/checkpoints; pass --ckpt-dir to
keep them out of a folder that gets shipped, or --clean to delete them after a finished run.
`--init-from CKPT_DIR` continues a finished run (its --ckpt-dir) with a fresh schedule: stage 1 is
skipped; the model card lists the whole chain of commands. `--card-only FOLDER` rebuilds a saved
folder's README, loss curve and samples from its gcpl_build.json.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pretraining.cli import SampleOptions, Script, SDModelOptions, SDRunOptions
from pretraining.sd import PretrainConfig, init_source, pretrain

from gcpl.tiny_model import save_pipeline_folder

MAX_WEIGHT_MB = 20.0
SHAPE_PROMPTS = [
    "a red circle.",
    "a blue square.",
    "a large green star, black background.",
    "a yellow triangle on the left.",
    "a large white striped ring, blue background.",
    "a small orange heart at the top.",
]


SCRIPT = Script("python tools/pretrain_tiny.py", __doc__, SDRunOptions, {
    "training (--resume: the same values, bookkeeping aside)": PretrainConfig,
    "model size": SDModelOptions,
    "samples": SampleOptions,
}, run_dirs="/tmp/tiny-sd-run", skip=("min_lr_ratio", "grad_clip"))  # those two keep their defaults here


def parse_args(argv: list[str]) -> tuple[SDRunOptions, PretrainConfig]:
    """The run options and the pretraining config (`--init-from` read)."""
    run, train, size, _ = SCRIPT.parse(argv)
    return run, dataclasses.replace(train, model=size.config(), init=init_source(run.init_from) if run.init_from else None)


def save_fp16(components: dict, out: Path, card: dict) -> dict:
    """Save the pipeline with fp16 weights; return {component: bytes of its weight files}."""
    half = dict(components)
    for k in ("text_encoder", "vae", "unet"):
        half[k] = copy.deepcopy(components[k]).to(torch.float16)
    for sub in ("text_encoder", "vae", "unet", "tokenizer", "scheduler"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    save_pipeline_folder(half, out, card=card)
    return {k: sum(f.stat().st_size for f in (out / k).glob("*.safetensors")) for k in ("text_encoder", "vae", "unet")}


def loss_curve(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    vae = [(r["step"], r["recon_mse"]) for r in recs if r["stage"] == "vae"]
    unet = [(r["step"], r["loss"]) for r in recs if r["stage"] == "unet"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, data, title, ylab in ((axes[0], vae, "stage 1: VAE", "reconstruction MSE"),
                                  (axes[1], unet, "stage 2: text encoder + UNet", "diffusion loss (MSE)")):
        if data:
            x, y = zip(*data)
            ax.plot(x, y, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def sample_grid(folder: Path, prompts: list[str], png: Path, device: str, steps: int, guidance: float,
                n_per_prompt: int = 6, seed: int = 0) -> float:
    """Generate with StableDiffusionPipeline.from_pretrained(folder) (the public loading path)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from PIL import Image, ImageDraw

    t0 = time.perf_counter()
    with warnings.catch_warnings():  # diffusers >= 0.36 prefers dtype=, older ones only know torch_dtype
        warnings.simplefilter("ignore", FutureWarning)
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for i, prompt in enumerate(prompts):
        g = torch.Generator("cpu").manual_seed(seed + i)
        imgs = pipe([prompt] * n_per_prompt, num_inference_steps=steps, guidance_scale=guidance,
                    generator=g, output_type="np").images
        rows.append(np.concatenate(list(imgs), axis=1))
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)
    scale = 3
    h = grid.shape[0] // len(prompts)
    big = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    label_w = 300
    canvas = Image.new("RGB", (big.width + label_w, big.height), "white")
    canvas.paste(big, (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    for i, prompt in enumerate(prompts):
        draw.text((6, i * h * scale + h * scale // 2 - 6), prompt, fill="black")
    canvas.save(png)
    return time.perf_counter() - t0


def model_card(out: Path, stats: dict, cfg: PretrainConfig, sizes: dict, prompts: list[str], words: list[str],
               wall: dict, run: SDRunOptions, samples: SampleOptions, argv: list[str], finished: str) -> str:
    m = cfg.model
    p = stats["params"]
    total = sum(p.values())
    s = stats["seconds"]
    hw = (torch.cuda.get_device_name(0) if cfg.device.startswith("cuda") else
          f"CPU ({platform.processor() or platform.machine()}), {stats['threads']} torch thread(s)")
    v, u, pool = stats["vae"], stats["unet"], stats["pool"]
    init = cfg.init
    runs = cfg.sources() + [{"config": cfg.identity(), "step": cfg.steps, "seconds": s}]
    root = runs[0]
    stage2 = []
    for j, r in enumerate(runs):
        c, sec = r["config"], r["seconds"]
        what = ("from scratch" if j == 0 else f"continued from run {j}'s final EMA weights, new random stream")
        result = (f"loss {u['first_train_loss']:.4f} -> {u['final_train_loss']:.4f}" if j == len(runs) - 1 else "")
        stage2.append(
            f"| 2, run {j + 1}: text encoder + UNet, {what} (pool {c['pool_size']:,} images, noise MSE, AdamW wd "
            f"{c['weight_decay']}, warmup {c['warmup']} + {c['lr_schedule']}, clip {c['grad_clip']}, EMA "
            f"{c['ema_decay'] or 'off'}; pool encoding {sec.get('encode_pool', 0):.0f} s) | {r['step']} | "
            f"{c['batch']} | {c['lr']:g} | {sec.get('unet', 0):.0f} s | {result} |")
    total_s = sum(v_ for r in runs for k, v_ in r["seconds"].items() if k != "diagnostics")
    lines = [
        "# gcpl tiny-sd",
        "",
        "A small text-to-image latent diffusion model in Stable Diffusion v1's layout (CLIP tokenizer, "
        "`CLIPTextModel`, `AutoencoderKL`, `UNet2DConditionModel`, DDPM scaled-linear schedule), pretrained "
        "from scratch by `tools/pretrain_tiny.py` so that gcpl's textual inversion and diffusion classifier "
        "can be demonstrated offline. It loads with `StableDiffusionPipeline.from_pretrained(<this folder>)`, "
        "like `CompVis/stable-diffusion-v1-4`. It is a toy: 32x32 images of a procedural world.",
        "",
        "## Training data (procedural, `tools/pretraining/corpus.py`)",
        "",
        f"{pool['n_images']:,} images of {m.image_size}x{m.image_size} px rendered once in memory "
        f"(seed {cfg.seed}, {pool['render_seconds']:.0f} s), captions re-phrased at every step:",
        "",
        f"* **shapes** ({pool['n_shapes']:,} images): one or two of circle, square, triangle, star, ring, cross, "
        "diamond, hexagon, heart, crescent; 11 colours (red, green, blue, yellow, orange, purple, pink, white, "
        "cyan, brown, gray); plain / striped / dotted / checkered; small / large; left / right / top / bottom / "
        "center; a black, white, gray or coloured background. Captions mention a random subset of the rendered "
        "attributes, e.g. \"a large red striped circle on the left, blue background.\"",
        f"* **fractals** ({pool['n_fractal']:,} images): {pool['n_fractal_classes']} FractalDB-style IFS categories "
        "(`gcpl.data.fractals.pretrain_classes`, names clashing with the shapes vocabulary skipped), random pose, "
        "colours, background, blur and noise; each captioned with its own word: \"<word> fractal.\" (65%), "
        "\"a <word> fractal.\" (20%), \"a photo of / an image of a <word> fractal.\" (10%), \"<word>.\" (5%). "
        f"Words: {', '.join(words[:30])}, ...",
        f"* {cfg.caption_dropout:.0%} of captions are dropped to \"\" during stage 2 (classifier-free guidance).",
        "",
        "## Architecture",
        "",
        "| component | configuration | parameters | fp16 weights |",
        "|---|---|---|---|",
        f"| text encoder (CLIPTextModel) | hidden {m.text_hidden}, {m.text_layers} layers, {m.text_heads} heads, "
        f"49,408-token CLIP vocabulary, 77 positions | {p['text_encoder']:,} | {sizes['text_encoder'] / 1e6:.2f} MB |",
        f"| VAE (AutoencoderKL) | channels {tuple(m.vae_channels)}, {m.latent_channels} latent channels, "
        f"x{2 ** (len(m.vae_channels) - 1)} downsampling, scaling_factor {v['scaling_factor']:.5f} (measured) "
        f"| {p['vae']:,} | {sizes['vae'] / 1e6:.2f} MB |",
        f"| UNet (UNet2DConditionModel) | channels {tuple(m.unet_channels)}, {m.unet_layers_per_block} layer(s) "
        f"per block, cross-attention below the top level, {m.unet_head_dim} heads, {m.prediction_type} "
        f"| {p['unet']:,} | {sizes['unet'] / 1e6:.2f} MB |",
        f"| **total** | | **{total:,}** | **{sum(sizes.values()) / 1e6:.2f} MB** |",
        "",
        "## Training",
        "",
        f"Hardware: {hw}; torch {torch.__version__}. Finished {finished}."
        + (f" Made by {len(runs)} runs, each continuing the one before (`--init-from`)." if init else ""),
        "",
        "| stage | steps | batch | lr | wall time | result |",
        "|---|---|---|---|---|---|",
        f"| 1, run 1: VAE (recon MSE + {root['config']['kl_weight']:g} KL, AdamW, cosine; pool "
        f"{root['config']['pool_size']:,} images) | {root['config']['vae_steps']} | {root['config']['vae_batch']} | "
        f"{root['config']['vae_lr']:g} | {root['seconds'].get('vae', 0):.0f} s | train recon MSE "
        f"{v['train_recon_mse_last']:.4f}, held-out {v['val_recon_mse']:.4f} (images in [-1, 1]) |",
        f"| scaling factor | | | | {root['seconds'].get('measure', 0):.0f} s | latent std {v['latent_std']:.4f} |",
        *stage2,
        f"| pool rendering (run {len(runs)}) | | | | {pool['render_seconds']:.0f} s | {pool['n_images']:,} images |",
        f"| samples | | | | {wall['samples']:.0f} s | |",
        f"| **total** (pool rendering of earlier runs not recorded) | | | | "
        f"**{(total_s + pool['render_seconds']) / 60:.0f} min** | |",
        "",
        f"Held-out diagnostic (256 fixed pool samples, timesteps and noise; final weights): diffusion loss "
        f"{u['eval_loss_captioned']:.4f} with the caption vs {u['eval_loss_empty_caption']:.4f} with \"\" "
        "(the gap is what the words tell the UNet).",
        "",
        *([f"Word probe (`tools/pretraining/sd.py`, `word_probe`): a zero-shot diffusion classifier over unseen images, "
           f"{cfg.probe_per_class} per class, choosing the caption with the lowest denoising error over 10 "
           f"timesteps: 10 pretraining fractal words {u['probe_fractal_acc']:.1%} "
           f"(chance {u['probe_fractal_chance']:.0%}), 10 shape words {u['probe_shape_acc']:.1%} "
           f"(chance {u['probe_shape_chance']:.0%}).", ""] if "probe_fractal_acc" in u else []),
        "![loss curve](loss_curve.png)",
        "",
        "## Samples",
        "",
        f"`StableDiffusionPipeline.from_pretrained` on this folder, DDIM {samples.sample_steps} steps, guidance "
        f"{samples.guidance}, seed 0 (one row per prompt): " + "; ".join(f"\"{q}\"" for q in prompts) + ".",
        "",
        "![samples](samples.png)",
        "",
        "## Reproduce",
        "",
        *(["The source run(s), then this continuation (each `--init-from` the checkpoints of the one before):", ""]
          if init else []),
        "```",
        *(SCRIPT.source_commands(cfg, str(run.init_from)) if init else []),
        SCRIPT.reproduce(argv, out),
        "```",
        "",
        "`gcpl_build.json` holds the full configuration and statistics; `train_log.jsonl` the loss log.",
        "",
    ]
    return "\n".join(lines)


def write_card(out: Path, build: dict, device: str = "cpu") -> None:
    """Samples grid, loss curve and README of a saved model folder, from its gcpl_build.json (the
    run's own command line gives the sampling settings and the Reproduce section)."""
    run, _, _, samples = SCRIPT.parse(build["argv"])
    cfg = PretrainConfig.from_dict(build["pretrain_config"])
    words = build["fractal_words"]
    sizes = {k: sum(f.stat().st_size for f in (out / k).glob("*.safetensors")) for k in ("text_encoder", "vae", "unet")}
    loss_curve(out / "train_log.jsonl", out / "loss_curve.png")
    prompts = SHAPE_PROMPTS + [f"{w} fractal." for w in words[:6]]
    wall = {"samples": sample_grid(out, prompts, out / "samples.png", device, samples.sample_steps, samples.guidance)}
    (out / "README.md").write_text(model_card(out, build["stats"], cfg, sizes, prompts, words, wall, run, samples,
                                              build["argv"], build.get("finished", "?")))


def save(argv: list[str], run: SDRunOptions, cfg: PretrainConfig, res, t0: float) -> None:
    """The fp16 pipeline folder, its gcpl_build.json and card; checks the saved scaling factor."""
    out, stats = run.out, res.stats
    card = {"pretrain_config": cfg.identity(), "stats": stats, "fractal_words": res.corpus.fractal_words, "argv": argv,
            "torch": torch.__version__, "finished": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"}
    sizes = save_fp16(res.components, out, card)
    total_mb = sum(sizes.values()) / 1e6
    print("fp16 weights: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()) + f"; total {total_mb:.2f} MB")
    if total_mb > MAX_WEIGHT_MB:
        print(f"WARNING: weights exceed {MAX_WEIGHT_MB} MB", file=sys.stderr)
    write_card(out, json.loads((out / "gcpl_build.json").read_text()), cfg.device)
    # check the public loading path sees the measured scaling factor
    from diffusers import AutoencoderKL

    sf = AutoencoderKL.from_pretrained(out / "vae").config.scaling_factor
    assert abs(sf - stats["vae"]["scaling_factor"]) < 1e-9, (sf, stats["vae"]["scaling_factor"])
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s (scaling_factor {sf:.5f})")
    print(json.dumps({"seconds": stats["seconds"], "vae": stats["vae"], "unet": stats["unet"]}, indent=1))


def main(argv=None) -> int:
    return SCRIPT.main(argv, parse_args, pretrain, save, write_card)


if __name__ == "__main__":
    sys.exit(main())
