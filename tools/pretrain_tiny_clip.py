"""Pretrain gcpl's bundled tiny CLIP contrastively and write it as a `CLIPModel` folder (fp16
weights that load as fp32), with tokenizer, preprocessor config, model card and loss curve.

    python tools/pretrain_tiny_clip.py --out src/gcpl/assets/tiny-clip --ckpt-dir /tmp/tiny-clip-ckpt --threads 1

The data are the bundled tiny SD's: the same procedural corpus (tools/pretraining/corpus.py) with
the same settings (seed 0, 80,000 pool images, 70% fractals of 200 categories, 32 px) and the same
caption distribution; the loop is tools/pretraining/clip.py. `--resume` continues from
<ckpt-dir>/latest.json exactly (same settings required). Checkpoints default to <out>/checkpoints;
pass --ckpt-dir to keep them out of a folder that gets shipped, or --clean to delete them after a
finished run. `--init-from CKPT_DIR` continues a finished run (its --ckpt-dir) with a fresh
schedule; the model card lists the whole chain of commands. `--card-only FOLDER` rebuilds a saved
folder's README and loss curve from its gcpl_build.json and train_log.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from pretraining.clip import (
    IMAGE_MEAN,
    IMAGE_STD,
    ClipPretrainConfig,
    TinyClipConfig,
    init_source,
    pretrain_clip,
    save_clip_folder,
)
from pretraining.corpus import SHAPES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "gcpl" / "assets" / "tiny-clip"
TINY_SD = REPO / "src" / "gcpl" / "assets" / "tiny-sd"
MAX_FOLDER_MB = 20.0
SCRIPT = "python tools/pretrain_tiny_clip.py"


def parse_args(argv=None) -> argparse.Namespace:
    d, m = ClipPretrainConfig(), TinyClipConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write (default: %(default)s)")
    p.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoints (default: <out>/checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--clean", action="store_true", help="delete the checkpoints after a finished run")
    p.add_argument("--init-from", type=Path, default=None, metavar="CKPT_DIR",
                   help="continued pretraining: start from the final weights of the finished run checkpointed in "
                        "CKPT_DIR (its --ckpt-dir), with a fresh schedule; the same model flags are required")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ... (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering the image pool")
    p.add_argument("--pool-cache", type=Path, default=None, metavar="DIR",
                   help="keep the rendered pool in DIR and reuse it in later runs and resumes")
    g = p.add_argument_group("data (defaults: the tiny SD's corpus settings)")
    g.add_argument("--pool-size", type=int, default=d.pool_size, help="images rendered into memory")
    g.add_argument("--fractal-fraction", type=float, default=d.fractal_fraction)
    g.add_argument("--fractal-classes", type=int, default=d.n_fractal_classes)
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch", type=int, default=d.batch)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--lr-schedule", choices=("cosine", "constant"), default=d.lr_schedule)
    g.add_argument("--warmup", type=int, default=d.warmup)
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--ema", type=float, default=d.ema_decay, help="EMA decay, 0 = off (default: %(default)s)")
    g = p.add_argument_group("architecture")
    g.add_argument("--image-size", type=int, default=m.image_size)
    g.add_argument("--patch", type=int, default=m.patch_size)
    g.add_argument("--vision-hidden", type=int, default=m.vision_hidden)
    g.add_argument("--vision-layers", type=int, default=m.vision_layers)
    g.add_argument("--vision-heads", type=int, default=m.vision_heads)
    g.add_argument("--text-hidden", type=int, default=m.text_hidden)
    g.add_argument("--text-layers", type=int, default=m.text_layers)
    g.add_argument("--text-heads", type=int, default=m.text_heads)
    g.add_argument("--projection-dim", type=int, default=m.projection_dim)
    g = p.add_argument_group("bookkeeping (do not change the weights)")
    g.add_argument("--probe", type=int, default=d.probe_per_class,
                   help="zero-shot probe at the end: unseen images per class (0 = skip; default: %(default)s)")
    g.add_argument("--probe-every", type=int, default=d.probe_every,
                   help="also probe every N steps, 4 images per class (0 = never; default: %(default)s)")
    g.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> ClipPretrainConfig:
    model = TinyClipConfig(
        image_size=a.image_size, patch_size=a.patch, vision_hidden=a.vision_hidden, vision_layers=a.vision_layers,
        vision_heads=a.vision_heads, text_hidden=a.text_hidden, text_layers=a.text_layers, text_heads=a.text_heads,
        projection_dim=a.projection_dim,
    )
    return ClipPretrainConfig(
        model=model, seed=a.seed, pool_size=a.pool_size, fractal_fraction=a.fractal_fraction,
        n_fractal_classes=a.fractal_classes, steps=a.steps, batch=a.batch, lr=a.lr, lr_schedule=a.lr_schedule,
        warmup=a.warmup, min_lr_ratio=a.min_lr_ratio, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
        ema_decay=a.ema, probe_per_class=a.probe, probe_every=a.probe_every, ckpt_every=a.ckpt_every,
        log_every=a.log_every, device=a.device, threads=a.threads, workers=a.workers,
        pool_cache=str(a.pool_cache) if a.pool_cache else None, init=init_source(a.init_from) if a.init_from else None,
    )


# ---------------------------------------------------------------------------------------------- commands


def command_for(identity: dict, ckpt_dir: str, init_dir: str | None = None) -> str:
    """The command line that makes a run with this identity (for the model card)."""
    d, m = identity, identity["model"]
    flags = [
        ("--out", f"{ckpt_dir}-model"), ("--ckpt-dir", ckpt_dir), *([("--init-from", init_dir)] if init_dir else []),
        ("--seed", d["seed"]), ("--pool-size", d["pool_size"]), ("--fractal-fraction", d["fractal_fraction"]),
        ("--fractal-classes", d["n_fractal_classes"]), ("--steps", d["steps"]), ("--batch", d["batch"]),
        ("--lr", d["lr"]), ("--lr-schedule", d["lr_schedule"]), ("--warmup", d["warmup"]),
        ("--min-lr-ratio", d["min_lr_ratio"]), ("--weight-decay", d["weight_decay"]), ("--grad-clip", d["grad_clip"]),
        ("--ema", d["ema_decay"]), ("--image-size", m["image_size"]), ("--patch", m["patch_size"]),
        ("--vision-hidden", m["vision_hidden"]), ("--vision-layers", m["vision_layers"]),
        ("--vision-heads", m["vision_heads"]), ("--text-hidden", m["text_hidden"]),
        ("--text-layers", m["text_layers"]), ("--text-heads", m["text_heads"]),
        ("--projection-dim", m["projection_dim"]),
    ]
    return SCRIPT + " " + " ".join(f"{k} {v}" for k, v in flags)


def source_commands(cfg: ClipPretrainConfig, last_ckpt_dir: str) -> list[str]:
    """Commands for the chain of runs a continuation starts from, oldest first; the last one
    writes its checkpoints to `last_ckpt_dir` (this run's --init-from)."""
    chain = [src["config"] for src in cfg.sources()]
    dirs = [f"/tmp/tiny-clip-run{i + 1}" for i in range(len(chain) - 1)] + [last_ckpt_dir]
    return [command_for(c, dirs[i], dirs[i - 1] if i else None) for i, c in enumerate(chain)]


def reproduce_argv(argv: list[str], out: Path) -> list[str]:
    """A run's command line as the model card shows it: `--out` names the folder the card is in,
    and the run-control flags that do not change the weights (`--resume`, `--stop-after N`) are
    left out: resuming is bit-exact."""
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


# ---------------------------------------------------------------------------------------------- card


def loss_curve(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    tr = [r for r in recs if r["stage"] == "clip"]
    pr = [r for r in recs if r["stage"] == "probe"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if tr:
        steps = [r["step"] for r in tr]
        axes[0].plot(steps, [r["loss"] for r in tr], lw=1)
        axes[1].plot(steps, [r["acc_i2t"] for r in tr], lw=1, label="in-batch image->caption")
        axes[1].plot(steps, [r["acc_t2i"] for r in tr], lw=1, label="in-batch caption->image")
        axes[2].plot(steps, [r["logit_scale"] for r in tr], lw=1)
    if pr:
        for key, lab in (("probe_fractal_acc", "zero-shot: 10 fractal words (4/class)"),
                         ("probe_shape_acc", "zero-shot: 10 shape words (4/class)")):
            axes[1].plot([r["step"] for r in pr if key in r], [r[key] for r in pr if key in r], "o-", ms=3, lw=1,
                         label=lab)
    axes[0].set_yscale("log")
    axes[0].set_title("symmetric InfoNCE loss")
    axes[1].set_title("accuracy")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    axes[2].set_title("logit scale exp(t)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _tiny_sd_reference() -> dict:
    """Corpus settings and word-probe numbers of the bundled tiny SD (for the comparison)."""
    f = TINY_SD / "gcpl_build.json"
    if not f.exists():
        return {}
    b = json.loads(f.read_text())
    c = b["pretrain_config"]
    return {"corpus": {k: c[k] for k in ("seed", "pool_size", "fractal_fraction", "n_fractal_classes")}
            | {"image_size": c["model"]["image_size"]},
            "probe": {k: v for k, v in b["stats"]["unet"].items() if k.startswith("probe_")},
            "text_encoder": {k: c["model"][k] for k in ("text_hidden", "text_layers", "text_heads")},
            "probe_per_class": 4}


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def model_card(out: Path, build: dict, files: dict) -> str:
    """README text; `build["notes"]` (optional list of paragraphs, e.g. pilot runs) goes under Training."""
    stats, cfg = build["stats"], ClipPretrainConfig.from_dict(build["pretrain_config"])
    m, p, pr, pool, tr = cfg.model, stats["params"], stats["probe"], stats["pool"], stats["train"]
    sd = build.get("tiny_sd", {})
    words = build["fractal_words"]
    hw = (f"CUDA ({stats['device']})" if stats["device"].startswith("cuda") else
          f"CPU ({platform.machine()}), {stats['threads']} torch thread(s)")
    weights = files.get("model.safetensors", 0)
    tok_bytes = sum(v for k, v in files.items() if k in ("tokenizer.json", "vocab.json", "merges.txt",
                                                         "tokenizer_config.json", "special_tokens_map.json"))
    runs = cfg.sources() + [{"config": cfg.identity(), "step": cfg.steps, "seconds": stats["seconds"]}]
    run_rows = []
    chain = source_commands(cfg, str(build.get("init_from"))) if cfg.init else []
    for j, r in enumerate(runs):
        c = r["config"]
        ema = "EMA " if j and runs[j - 1]["config"]["ema_decay"] else ""
        what = "from scratch" if j == 0 else f"from run {j}'s final {ema}weights, new batches"
        result = (f"loss {tr['first_loss']:.3f} -> {tr['final_loss']:.3f}, in-batch top-1 {tr['final_acc_i2t']:.1%}"
                  if j == len(runs) - 1 else "")
        sched = f"{c['lr']:g}, warmup {c['warmup']} + {c['lr_schedule']}"
        if c["lr_schedule"] == "cosine":
            sched += f" to {c['min_lr_ratio']:g}x"
        sec = r["seconds"].get("train", 0)
        run_rows.append(f"| {j + 1}: {what} | {r['step']} | {c['batch']} | {sched} | {sec:.0f} s "
                        f"({sec / max(1, r['step']):.2f} s/step) | {result} |")
    total_s = (sum(r["seconds"].get("train", 0) for r in runs) + stats["seconds"].get("render_pool", 0)
               + pr.get("probe_seconds", 0))
    probe_rows = []
    shape_words, fractal_words = ", ".join(SHAPES), ", ".join(words[:10])
    for g, label in (("fractal", f"10 pretraining fractal words ({fractal_words}); prompt \"&lt;word&gt; fractal.\""),
                     ("shape", f"10 shape words ({shape_words}); prompt \"a &lt;shape&gt;.\""),
                     ("fractal_all", f"all {pool['n_fractal_classes']} pretraining fractal words (extra)")):
        if f"probe_{g}_acc" in pr:
            acc, ch = pr[f"probe_{g}_acc"], pr[f"probe_{g}_chance"]
            ok = "yes" if acc >= 3 * ch else "**no**"
            probe_rows.append(f"| {label} | {pr[f'probe_{g}_n']} | **{acc:.1%}** | {ch:.1%} | {acc / ch:.1f}x ({ok}) |")
    cmp_rows = []
    if sd.get("probe") and "probe_fractal_acc_first4" in pr:
        for g in ("fractal", "shape"):
            if f"probe_{g}_acc" in sd["probe"]:
                cmp_rows.append(f"| {g} words | {sd['probe'][f'probe_{g}_acc']:.1%} | {pr[f'probe_{g}_acc_first4']:.1%} |")
    same = sd.get("corpus") and all(sd["corpus"][k] == v for k, v in {
        "seed": cfg.seed, "pool_size": cfg.pool_size, "fractal_fraction": cfg.fractal_fraction,
        "n_fractal_classes": cfg.n_fractal_classes, "image_size": m.image_size}.items())
    sd_m = sd.get("text_encoder", {})
    sd_text = (" (the shape of the tiny SD's text encoder)" if sd_m and (m.text_hidden, m.text_layers, m.text_heads)
               == (sd_m.get("text_hidden"), sd_m.get("text_layers"), sd_m.get("text_heads")) else "")
    per_class = pr.get("probe_per_class", cfg.probe_per_class)
    lines = [
        "# gcpl tiny-clip",
        "",
        "A small CLIP (transformers `CLIPModel`: ViT image tower + CLIP text transformer, the CLIP tokenizer of "
        "the bundled tiny SD) pretrained contrastively from scratch by `tools/pretrain_tiny_clip.py` on exactly "
        "the data the bundled `tiny-sd` was pretrained on: same procedural corpus, same settings, same caption "
        "distribution. The generative (tiny-sd) and the contrastive (tiny-clip) model of the demo thus saw "
        "identical images and captions, a controlled comparison of the two kinds of pretraining. "
        "It is a toy: 32x32 images of a procedural world.",
        "",
        "```python",
        "from transformers import CLIPModel, CLIPProcessor",
        "model = CLIPModel.from_pretrained(\"src/gcpl/assets/tiny-clip\")  # fp32 (dtype=torch.bfloat16 etc. also work)",
        "processor = CLIPProcessor.from_pretrained(\"src/gcpl/assets/tiny-clip\")  # tokenizer + 32 px image processor",
        "inputs = processor(text=[\"mask fractal.\", \"a red circle.\"], images=image, return_tensors=\"pt\", padding=True)",
        "probs = model(**inputs).logits_per_image.softmax(-1)",
        "```",
        "",
        "## Training data (procedural, `tools/pretraining/corpus.py`)",
        "",
        f"{pool['n_images']:,} images of {m.image_size}x{m.image_size} px rendered once in memory (seed {cfg.seed}, "
        f"{cfg.fractal_fraction:.0%} fractals, {pool['render_seconds']:.0f} s), captions re-phrased by "
        "`Corpus.caption` at every step:",
        "",
        f"* **shapes** ({pool['n_shapes']:,} images): one or two of circle, square, triangle, star, ring, cross, "
        "diamond, hexagon, heart, crescent; 11 colours; plain / striped / dotted / checkered; small / large; "
        "left / right / top / bottom / center; a black, white, gray or coloured background; captions mention a "
        "random subset of the rendered attributes, e.g. \"a large red striped circle on the left, blue background.\"",
        f"* **fractals** ({pool['n_fractal']:,} images): {pool['n_fractal_classes']} FractalDB-style IFS categories, "
        "each captioned with its own word: \"<word> fractal.\" (65%), \"a <word> fractal.\" (20%), "
        f"\"a photo of / an image of a <word> fractal.\" (10%), \"<word>.\" (5%). Words: {', '.join(words[:30])}, ...",
        "",
        ("Identical to the tiny SD's last run (`src/gcpl/assets/tiny-sd/gcpl_build.json`: seed "
         f"{sd['corpus']['seed']}, pool {sd['corpus']['pool_size']:,}, fractal fraction {sd['corpus']['fractal_fraction']}, "
         f"{sd['corpus']['n_fractal_classes']} fractal classes, {sd['corpus']['image_size']} px): the same images, "
         "index for index, and the same caption distribution. " if same else
         "**Note: these corpus settings differ from the bundled tiny SD's.** ")
        + "Differences in use: the tiny SD dropped 10% of captions to \"\" (classifier-free guidance), the CLIP "
        "sees every caption; neither augments the images.",
        "",
        "## Architecture",
        "",
        "| part | configuration | parameters |",
        "|---|---|---|",
        f"| image tower (CLIPVisionModel, ViT) | {m.image_size} px, patch {m.patch_size} "
        f"({(m.image_size // m.patch_size) ** 2} patches + class token), hidden {m.vision_hidden}, "
        f"{m.vision_layers} layers, {m.vision_heads} heads, MLP {m.vision_hidden * m.mlp_ratio}, {m.hidden_act} "
        f"| {p['vision']:,} |",
        f"| text tower (CLIPTextModel) | hidden {m.text_hidden}, {m.text_layers} layers, {m.text_heads} heads, "
        f"MLP {m.text_hidden * m.mlp_ratio}, causal, 49,408-token CLIP vocabulary, 77 positions"
        f"{sd_text} | {p['text']:,} |",
        f"| projections + logit scale | both towers to {m.projection_dim} dims, learnable temperature "
        f"(init 1/0.07, clamped at {cfg.max_logit_scale:g}; final {tr['final_logit_scale']:.1f}) | {p['projections']:,} |",
        f"| **total** | | **{p['total']:,}** |",
        "",
        f"Stored as fp16 (`model.safetensors`, {_mb(weights)}); `config.json` says `\"dtype\": \"float32\"`, so a "
        "plain `CLIPModel.from_pretrained(folder)` loads fp32 (the fp16 values, exactly), and `dtype=` loads any "
        f"other. Folder on disk: **{_mb(sum(files.values()))}** (weights {_mb(weights)}, tokenizer files "
        f"{_mb(tok_bytes)}; limit {MAX_FOLDER_MB:g} MB).",
        "",
        f"Preprocessing (`preprocessor_config.json`, CLIPImageProcessor): RGB, resize (shortest edge) and centre-crop "
        f"to {m.image_size} px (a {m.image_size} px image passes unchanged), rescale to [0, 1], normalise with "
        f"**OpenAI CLIP's mean {tuple(round(x, 4) for x in IMAGE_MEAN)} / std {tuple(round(x, 4) for x in IMAGE_STD)}** "
        "(training used the same: `pretraining.clip.pixel_values`). Text: the CLIP tokenizer "
        "(`vocab.json` / `merges.txt` identical to `tiny-sd/tokenizer/`), pooled at the first <|endoftext|>.",
        "",
        "## Training",
        "",
        f"Objective: CLIP's symmetric InfoNCE over the batch (image i <-> its caption i, every other caption of the "
        "batch a negative, also when it names the same word), learnable logit scale. AdamW (betas "
        f"{tuple(cfg.betas)}, eps {cfg.eps:g}, weight decay {cfg.weight_decay} on matrices, none on embeddings, norms, "
        f"biases, logit scale), gradient clipping {cfg.grad_clip}, EMA {cfg.ema_decay or 'off'} (the saved weights "
        "are the EMA). Per-step randomness derives from (seed, step): resuming is bit-exact. "
        f"Hardware: {hw}; torch {build.get('torch', '?')}, transformers {build.get('transformers', '?')}. "
        f"Finished {build.get('finished', '?')}.",
        "",
        "| run | steps | batch | lr | wall time | result |",
        "|---|---|---|---|---|---|",
        *run_rows,
        f"| pool rendering{' (once, then loaded from --pool-cache)' if stats.get('pool_from_cache') else ''} | | | | "
        f"{stats['seconds'].get('render_pool', 0):.0f} s | {pool['n_images']:,} images |",
        f"| zero-shot probe | | | | {pr.get('probe_seconds', 0):.0f} s | below |",
        f"| **total** | | | | **{total_s / 60:.0f} min** | |",
        "",
        *[x for n in build.get("notes", []) for x in (n, "")],
        "![loss curve](loss_curve.png)",
        "",
        "## Zero-shot probe",
        "",
        f"Unseen rendered instances ({per_class} per class, the seeds of the tiny SD's `word_probe`), "
        "classified by the cosine similarity between the image embedding and the embeddings of the prompts, which "
        "are captions of the training distribution (`tools/pretraining/clip.py`, `zero_shot_probe`). Final (EMA) weights.",
        "",
        "| words | images | accuracy | chance | vs chance (>= 3x?) |",
        "|---|---|---|---|---|",
        *probe_rows,
        "",
        *(["The same 4 images per class and prompts as the tiny SD's probe (a zero-shot diffusion classifier: the "
           "prompt with the lowest denoising error over 10 timesteps), same pretraining data:", "",
           "| 10-way probe, first 4 images per class | tiny-sd (diffusion classifier) | tiny-clip (cosine) |",
           "|---|---|---|", *cmp_rows, ""] if cmp_rows else []),
        "## Reproduce",
        "",
        *(["The source run(s), then the continuation (each `--init-from` the checkpoints of the one before):", ""]
          if cfg.init else []),
        "```",
        *chain,
        SCRIPT + " " + " ".join(reproduce_argv(build["argv"], out)),
        f"{SCRIPT} --card-only {reproduce_argv([], out)[1]}   # rebuilds README.md and loss_curve.png only",
        "```",
        "",
        "Wall time: " + ", ".join(
            f"run {j + 1} {r['seconds'].get('train', 0) / 60:.1f} min of training" for j, r in enumerate(runs))
        + (f"; the last command {build['wall_seconds'] / 60:.1f} min in all (pool "
           f"{'loaded from --pool-cache' if stats.get('pool_from_cache') else 'rendering'}, training, probe, saving)"
           if build.get("wall_seconds") else "") + "; `--card-only` a few seconds.",
        "",
        "`gcpl_build.json` holds the full configuration and statistics; `train_log.jsonl` the loss log "
        "(`stage: clip` every few steps, `stage: probe` the periodic probe on 4 images per class).",
        "",
    ]
    return "\n".join(lines)


def write_card(out: Path, build: dict) -> None:
    """README and loss curve of a saved folder, from its gcpl_build.json and train_log.jsonl."""
    if (out / "train_log.jsonl").exists():
        loss_curve(out / "train_log.jsonl", out / "loss_curve.png")
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file() and p.name != "README.md"}
    text = model_card(out, build, files)
    files["README.md"] = len(text.encode())
    text = model_card(out, build, files)  # the README's own size counted in the folder total
    (out / "README.md").write_text(text)


def folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.iterdir() if p.is_file())


def main(argv=None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["--card-only"]:  # rebuild README/plot of a finished folder: --card-only FOLDER
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
    res = pretrain_clip(cfg, a.out, ckpt_dir=a.ckpt_dir, resume=a.resume, stop_after=a.stop_after,
                        init_dir=a.init_from)
    if res is None:
        print(f"stopped after {a.stop_after} steps; continue with --resume")
        return 0
    import transformers

    out: Path = a.out
    build = {"pretrain_config": cfg.identity(), "stats": res.stats, "fractal_words": res.corpus.fractal_words,
             "argv": raw, "init_from": str(a.init_from) if a.init_from else None, "tiny_sd": _tiny_sd_reference(),
             "torch": torch.__version__, "transformers": transformers.__version__,
             "finished": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
             "wall_seconds": time.perf_counter() - t0}
    save_clip_folder(res.model, res.tokenizer, out, build=build)
    write_card(out, build)
    total_mb = folder_bytes(out) / 1e6
    print(f"folder: {total_mb:.2f} MB (model.safetensors {(out / 'model.safetensors').stat().st_size / 1e6:.2f} MB)")
    if total_mb > MAX_FOLDER_MB:
        print(f"WARNING: the folder exceeds {MAX_FOLDER_MB} MB", file=sys.stderr)
    if a.clean:
        shutil.rmtree(a.ckpt_dir or out / "checkpoints", ignore_errors=True)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({"seconds": res.stats["seconds"], "train": res.stats["train"], "probe": res.stats["probe"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
