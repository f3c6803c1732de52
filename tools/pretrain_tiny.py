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

import argparse
import copy
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
from pretraining.sd import PretrainConfig, init_source, pretrain

from gcpl.tiny_model import TinySDConfig, save_pipeline_folder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "gcpl" / "assets" / "tiny-sd"
MAX_WEIGHT_MB = 20.0
SHAPE_PROMPTS = [
    "a red circle.",
    "a blue square.",
    "a large green star, black background.",
    "a yellow triangle on the left.",
    "a large white striped ring, blue background.",
    "a small orange heart at the top.",
]


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(","))


def parse_args(argv=None) -> argparse.Namespace:
    d = PretrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="pipeline folder to write (default: %(default)s)")
    p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoints (default: <out>/checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--clean", action="store_true", help="delete the checkpoints after a finished run")
    p.add_argument("--init-from", type=Path, default=None, metavar="CKPT_DIR",
                   help="continued pretraining: start stage 2 from the finished run checkpointed in CKPT_DIR "
                        "(its --ckpt-dir), with a fresh schedule; stage 1 is skipped, the same model flags are required")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ... (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering the image pool")
    g = p.add_argument_group("data")
    g.add_argument("--pool-size", type=int, default=d.pool_size, help="images rendered into memory")
    g.add_argument("--fractal-fraction", type=float, default=d.fractal_fraction)
    g.add_argument("--fractal-classes", type=int, default=d.n_fractal_classes)
    g = p.add_argument_group("stage 1 (VAE)")
    g.add_argument("--vae-steps", type=int, default=d.vae_steps)
    g.add_argument("--vae-batch", type=int, default=d.vae_batch)
    g.add_argument("--vae-lr", type=float, default=d.vae_lr)
    g.add_argument("--kl-weight", type=float, default=d.kl_weight)
    g = p.add_argument_group("stage 2 (text encoder + UNet)")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch", type=int, default=d.batch)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--lr-schedule", choices=("cosine", "constant"), default=d.lr_schedule)
    g.add_argument("--warmup", type=int, default=d.warmup)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--caption-dropout", type=float, default=d.caption_dropout)
    g.add_argument("--ema", type=float, default=d.ema_decay, help="EMA decay, 0 = off (default: %(default)s)")
    g.add_argument("--probe", type=int, default=d.probe_per_class,
                   help="word probe at the end: unseen images per class (0 = skip; default: %(default)s)")
    g = p.add_argument_group("model size")
    g.add_argument("--text-hidden", type=int, default=64)
    g.add_argument("--text-layers", type=int, default=3)
    g.add_argument("--text-heads", type=int, default=4)
    g.add_argument("--unet-channels", type=_ints, default=(32, 64), help="comma list, e.g. 32,64")
    g.add_argument("--unet-layers", type=int, default=1, help="resnet layers per UNet block")
    g.add_argument("--unet-heads", type=int, default=8, help="attention heads (diffusers' attention_head_dim)")
    g.add_argument("--vae-channels", type=_ints, default=(32, 64), help="comma list, e.g. 32,64")
    g.add_argument("--image-size", type=int, default=32)
    g.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon")
    g = p.add_argument_group("bookkeeping")
    g.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    g.add_argument("--sample-steps", type=int, default=50, help="DDIM steps for samples.png")
    g.add_argument("--guidance", type=float, default=4.0, help="guidance scale for samples.png")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> PretrainConfig:
    model = TinySDConfig(
        text_hidden=a.text_hidden, text_layers=a.text_layers, text_heads=a.text_heads,
        unet_channels=a.unet_channels, unet_layers_per_block=a.unet_layers, unet_head_dim=a.unet_heads,
        vae_channels=a.vae_channels, image_size=a.image_size, prediction_type=a.prediction_type,
    )
    return PretrainConfig(
        model=model, seed=a.seed, pool_size=a.pool_size, fractal_fraction=a.fractal_fraction,
        n_fractal_classes=a.fractal_classes, vae_steps=a.vae_steps, vae_batch=a.vae_batch, vae_lr=a.vae_lr,
        kl_weight=a.kl_weight, steps=a.steps, batch=a.batch, lr=a.lr, lr_schedule=a.lr_schedule,
        warmup=a.warmup, weight_decay=a.weight_decay, caption_dropout=a.caption_dropout, ema_decay=a.ema,
        probe_per_class=a.probe,
        ckpt_every=a.ckpt_every, log_every=a.log_every, device=a.device, threads=a.threads, workers=a.workers,
        init=init_source(a.init_from) if a.init_from else None,
    )


def command_for(identity: dict, ckpt_dir: str, init_dir: str | None = None) -> str:
    """The pretrain_tiny.py command line that makes a run with this identity (for the model card)."""
    d, m = identity, identity["model"]
    flags = [
        ("--out", f"{ckpt_dir}-model"), ("--ckpt-dir", ckpt_dir), *([("--init-from", init_dir)] if init_dir else []),
        ("--seed", d["seed"]),
        ("--pool-size", d["pool_size"]), ("--fractal-fraction", d["fractal_fraction"]),
        ("--fractal-classes", d["n_fractal_classes"]), ("--vae-steps", d["vae_steps"]),
        ("--vae-batch", d["vae_batch"]), ("--vae-lr", d["vae_lr"]), ("--kl-weight", d["kl_weight"]),
        ("--steps", d["steps"]), ("--batch", d["batch"]), ("--lr", d["lr"]), ("--lr-schedule", d["lr_schedule"]),
        ("--warmup", d["warmup"]), ("--weight-decay", d["weight_decay"]), ("--caption-dropout", d["caption_dropout"]),
        ("--ema", d["ema_decay"]), ("--text-hidden", m["text_hidden"]), ("--text-layers", m["text_layers"]),
        ("--text-heads", m["text_heads"]), ("--unet-channels", ",".join(map(str, m["unet_channels"]))),
        ("--unet-layers", m["unet_layers_per_block"]), ("--unet-heads", m["unet_head_dim"]),
        ("--vae-channels", ",".join(map(str, m["vae_channels"]))), ("--image-size", m["image_size"]),
        ("--prediction-type", m["prediction_type"]),
    ]
    return "python tools/pretrain_tiny.py " + " ".join(f"{k} {v}" for k, v in flags)


def source_commands(cfg: PretrainConfig, last_ckpt_dir: str) -> list[str]:
    """Commands for the chain of runs a continuation starts from, oldest first; the last one
    writes its checkpoints to `last_ckpt_dir` (this run's --init-from)."""
    chain = [src["config"] for src in cfg.sources()]
    dirs = [f"/tmp/tiny-sd-run{i + 1}" for i in range(len(chain) - 1)] + [last_ckpt_dir]
    return [command_for(c, dirs[i], dirs[i - 1] if i else None) for i, c in enumerate(chain)]


def reproduce_argv(argv: list[str], out: Path) -> list[str]:
    """A run's command line as the model card shows it: `--out` names the folder the card is in
    (the weights do not depend on where they were first written) and the run-control flags that
    do not change the weights (`--resume`, `--stop-after N`) are left out: resuming is bit-exact."""
    try:
        where = str(Path(out).resolve().relative_to(REPO))
    except ValueError:
        where = str(out)
    shown, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--resume":
            i += 1
        elif a in ("--stop-after", "--out"):
            i += 2
        elif a.startswith(("--stop-after=", "--out=")):
            i += 1
        else:
            shown.append(a)
            i += 1
    return ["--out", where, *shown]


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
               wall: dict, args: argparse.Namespace, argv: list[str], finished: str) -> str:
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
        f"`StableDiffusionPipeline.from_pretrained` on this folder, DDIM {args.sample_steps} steps, guidance "
        f"{args.guidance}, seed 0 (one row per prompt): " + "; ".join(f"\"{q}\"" for q in prompts) + ".",
        "",
        "![samples](samples.png)",
        "",
        "## Reproduce",
        "",
        *(["The source run(s), then this continuation (each `--init-from` the checkpoints of the one before):", ""]
          if init else []),
        "```",
        *(source_commands(cfg, str(args.init_from)) if init else []),
        "python tools/pretrain_tiny.py " + " ".join(reproduce_argv(argv, out)),
        "```",
        "",
        "`gcpl_build.json` holds the full configuration and statistics; `train_log.jsonl` the loss log.",
        "",
    ]
    return "\n".join(lines)


def write_card(out: Path, build: dict, device: str = "cpu") -> None:
    """Samples grid, loss curve and README of a saved model folder, from its gcpl_build.json (the
    run's own command line gives the sampling settings and the Reproduce section)."""
    a = parse_args(build["argv"])
    cfg = PretrainConfig.from_dict(build["pretrain_config"])
    words = build["fractal_words"]
    sizes = {k: sum(f.stat().st_size for f in (out / k).glob("*.safetensors")) for k in ("text_encoder", "vae", "unet")}
    loss_curve(out / "train_log.jsonl", out / "loss_curve.png")
    prompts = SHAPE_PROMPTS + [f"{w} fractal." for w in words[:6]]
    wall = {"samples": sample_grid(out, prompts, out / "samples.png", device, a.sample_steps, a.guidance)}
    (out / "README.md").write_text(model_card(out, build["stats"], cfg, sizes, prompts, words, wall, a,
                                              build["argv"], build.get("finished", "?")))


def main(argv=None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["--card-only"]:  # rebuild README/plots of a finished folder: --card-only FOLDER
        out = Path(raw[1]) if len(raw) > 1 else DEFAULT_OUT
        write_card(out, json.loads((out / "gcpl_build.json").read_text()))
        print(f"wrote {out / 'README.md'}")
        return 0
    a = parse_args(raw)
    cfg = config_from_args(a)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res = pretrain(cfg, a.out, ckpt_dir=a.ckpt_dir, resume=a.resume, stop_after=a.stop_after, init_dir=a.init_from)
    if res is None:
        print(f"stopped after {a.stop_after} steps; continue with --resume")
        return 0
    out: Path = a.out
    stats = res.stats
    words = res.corpus.fractal_words
    card = {"pretrain_config": cfg.identity(), "stats": stats, "fractal_words": words, "argv": raw,
            "torch": torch.__version__, "finished": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"}
    sizes = save_fp16(res.components, out, card)
    total_mb = sum(sizes.values()) / 1e6
    print("fp16 weights: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()) + f"; total {total_mb:.2f} MB")
    if total_mb > MAX_WEIGHT_MB:
        print(f"WARNING: weights exceed {MAX_WEIGHT_MB} MB", file=sys.stderr)
    write_card(out, json.loads((out / "gcpl_build.json").read_text()), a.device)
    # check the public loading path sees the measured scaling factor
    from diffusers import AutoencoderKL

    sf = AutoencoderKL.from_pretrained(out / "vae").config.scaling_factor
    assert abs(sf - stats["vae"]["scaling_factor"]) < 1e-9, (sf, stats["vae"]["scaling_factor"])
    if a.clean:
        shutil.rmtree(a.ckpt_dir or out / "checkpoints", ignore_errors=True)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s (scaling_factor {sf:.5f})")
    print(json.dumps({"seconds": stats["seconds"], "vae": stats["vae"], "unet": stats["unet"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
