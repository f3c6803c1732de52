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

import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch
from pretraining.cli import ASSETS, ClipRunOptions, Script, reproduce_argv
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

TINY_SD = ASSETS / "tiny-sd"
MAX_FOLDER_MB = 20.0


SCRIPT = Script("python tools/pretrain_tiny_clip.py", __doc__, ClipRunOptions, {
    "training (--resume: the same values, bookkeeping aside; data defaults: the tiny SD's corpus)": ClipPretrainConfig,
    "architecture": TinyClipConfig,
}, run_dirs="/tmp/tiny-clip-run")


def parse_args(argv: list[str]) -> tuple[ClipRunOptions, ClipPretrainConfig]:
    """The run options and the pretraining config (`--init-from` read)."""
    run, train, model = SCRIPT.parse(argv)
    return run, dataclasses.replace(train, model=model, init=init_source(run.init_from) if run.init_from else None)


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
    chain = SCRIPT.source_commands(cfg, str(build.get("init_from"))) if cfg.init else []
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
        SCRIPT.reproduce(build["argv"], out),
        f"{SCRIPT.path} --card-only {reproduce_argv([], out)[1]}   # rebuilds README.md and loss_curve.png only",
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


def save(argv: list[str], run: ClipRunOptions, cfg: ClipPretrainConfig, res, t0: float) -> None:
    """The model folder, its gcpl_build.json and card."""
    import transformers

    out = run.out
    build = {"pretrain_config": cfg.identity(), "stats": res.stats, "fractal_words": res.corpus.fractal_words,
             "argv": argv, "init_from": str(run.init_from) if run.init_from else None, "tiny_sd": _tiny_sd_reference(),
             "torch": torch.__version__, "transformers": transformers.__version__,
             "finished": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
             "wall_seconds": time.perf_counter() - t0}
    save_clip_folder(res.model, res.tokenizer, out, build=build)
    write_card(out, build)
    total_mb = folder_bytes(out) / 1e6
    print(f"folder: {total_mb:.2f} MB (model.safetensors {(out / 'model.safetensors').stat().st_size / 1e6:.2f} MB)")
    if total_mb > MAX_FOLDER_MB:
        print(f"WARNING: the folder exceeds {MAX_FOLDER_MB} MB", file=sys.stderr)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({"seconds": res.stats["seconds"], "train": res.stats["train"], "probe": res.stats["probe"]}, indent=1))


def main(argv=None) -> int:
    return SCRIPT.main(argv, parse_args, pretrain_clip, save, write_card)


if __name__ == "__main__":
    sys.exit(main())
