"""`gcpl sample`: images generated from a trained run's learned class tokens, and labelled grids.

`sample(job)` writes into `--out`: `<class>-<k>.png` (n images per class, k = 000, 001, ...),
`grid.png` (one row per class, the class name in a strip above it) and config.json (settings,
the run's token digest, classes, files, versions). Image k of every class starts from the noise
of seed + k (one generator per image), so a seed gives the same images whatever n, the classes
drawn or the batch size, and the classes of one column share their starting noise.

`generate` (the images) and `label_grid` (the grid) are shared with the demo's samples.png
(`samples_png`: training images next to generated ones, per class).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .backbone import device_setting, dtype_setting, load_backbone, resolution_setting
from .errors import GcplError
from .io import read_json, write_json
from .predict import run_classes, run_model
from .runs import load_run, run_fingerprint, versions
from .settings import plain, setting
from .tokens import PromptSlot, check_template, encode_slot_prompts

__all__ = ["SCHEDULERS", "SampleJob", "generate", "label_grid", "sample", "samples_png"]

#: --scheduler name -> diffusers scheduler class (built from the model's own scheduler config)
SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "pndm": "PNDMScheduler",
              "euler": "EulerDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}
LABEL_HEIGHT = 16  # pixels of the label strip above each grid row


@dataclass
class SampleJob:
    run: str = setting(help="trained run folder (from gcpl train)", flag="--run-dir", identity=False)
    out: str = setting(help="folder for the images, grid.png and config.json", identity=False)
    class_names: tuple[str, ...] | None = setting(None, "class name(s) to draw, comma-separated (default: every "
                                                  "class of the run)", flag="--class", metavar="NAME")
    n: int = setting(8, "images per class", flag=("-n", "--n-images"))
    template: str | None = setting(None, "prompt template with one {} for the class token (default: the run's)")
    scheduler: str = setting("ddim", "sampler", choices=tuple(SCHEDULERS))
    steps: int = setting(25, "denoising steps")
    guidance: float = setting(7.5, "classifier-free guidance scale (1: none)")
    seed: int = setting(0, "image k of every class starts from the noise of seed + k")
    model: str | None = setting(None, "hub id, local diffusers folder or 'tiny' (default: the run's model)")
    device: str | None = device_setting()
    dtype: str | None = dtype_setting()
    resolution: int | None = resolution_setting("the run's, else the model's native size")
    batch: int = setting(8, "images generated together", identity=False)

    def __post_init__(self):
        if isinstance(self.class_names, str):
            self.class_names = (self.class_names,)
        if self.n < 1 or self.steps < 1 or self.batch < 1:
            raise GcplError("-n, --steps and --batch must be at least 1")
        if self.scheduler not in SCHEDULERS:
            raise GcplError(f"--scheduler {self.scheduler!r} is unknown; use one of {', '.join(SCHEDULERS)}")


def _pipeline(bb, scheduler: str = "ddim"):
    """A diffusers StableDiffusionPipeline over the backbone's frozen modules (no safety checker)."""
    import diffusers
    import transformers.utils.logging as tlog

    level = tlog.get_verbosity()
    tlog.set_verbosity_error()  # the pipeline module imports image processors that warn about torchvision
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        tlog.set_verbosity(level)
    pipe = StableDiffusionPipeline(
        vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
        scheduler=getattr(diffusers, SCHEDULERS[scheduler]).from_config(bb.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(bb, prompt_embeds: torch.Tensor, n: int, size: int, seed: int = 0, steps: int = 25,
             guidance: float = 7.5, scheduler: str = "ddim", batch: int = 8) -> np.ndarray:
    """(C, L, D) prompt embeddings -> (C, n, size, size, 3) uint8 images; image k of each prompt
    starts from the noise of a generator seeded with seed + k (negative prompt: "")."""
    pipe = _pipeline(bb, scheduler)
    jobs = [(c, k) for c in range(len(prompt_embeds)) for k in range(n)]
    out = np.zeros((len(prompt_embeds), n, size, size, 3), np.uint8)
    for i in range(0, len(jobs), batch):
        part = jobs[i : i + batch]
        embeds = prompt_embeds[torch.tensor([c for c, _ in part], device=prompt_embeds.device)].to(bb.device, bb.dtype)
        gens = [torch.Generator().manual_seed(seed + k) for _, k in part]
        images = pipe(prompt_embeds=embeds, height=size, width=size, num_inference_steps=steps,
                      guidance_scale=guidance, generator=gens, output_type="np").images  # (B, H, W, 3) in [0, 1]
        for (c, k), img in zip(part, images):
            out[c, k] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return out


def label_grid(rows: Sequence[tuple[str, Sequence[np.ndarray | None]]], scale: int | None = None):
    """A PIL image: per row, a white strip with its label (PIL's default font), then its cells
    side by side, each (H, W, 3) uint8 (None: a white gap of a quarter of the first cell's width).
    Cells are enlarged `scale` times (nearest neighbour; default: to about 256 pixels high)."""
    from PIL import Image, ImageDraw

    first = next(c for _, cells in rows for c in cells if c is not None)
    h, w = first.shape[:2]
    scale = scale or max(1, 256 // h)
    strips = []
    for label, cells in rows:
        row = np.concatenate([c if c is not None else np.full((h, w // 4, 3), 255, np.uint8) for c in cells], 1)
        strips.append((label, Image.fromarray(row).resize((row.shape[1] * scale, h * scale), Image.Resampling.NEAREST)))
    canvas = Image.new("RGB", (max(s.width for _, s in strips), sum(LABEL_HEIGHT + s.height for _, s in strips)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for label, strip in strips:
        draw.text((4, y + 2), label, fill="black")
        canvas.paste(strip, (0, y + LABEL_HEIGHT))
        y += LABEL_HEIGHT + strip.height
    return canvas


def _class_embeds(bb, run: str | Path, template: str | None = None) -> tuple[list[str], torch.Tensor, str]:
    """(classes, (C, L, D) prompt embeddings of the learned tokens, template)."""
    classes, vectors, run_template, init_word = load_run(run, bb)
    template = check_template(template or run_template)
    slot = PromptSlot.from_template(bb.tokenizer, template, init_word)
    return classes, encode_slot_prompts(bb.text_encoder, slot, vectors.to(bb.device)), template


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "class"


@torch.no_grad()
def sample(job: SampleJob, backbone=None) -> dict:
    """Write job.n images per class of the run, grid.png and config.json into job.out (see the
    module docstring); the run and the class names are checked before a model is loaded.
    Returns {"images": [paths], "grid": path}."""
    from PIL import Image

    classes = run_classes(job.run)
    wanted = list(job.class_names or classes)
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise GcplError(f"class {unknown[0]!r} is not one the run learned ({len(classes)} classes: "
                        f"{', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
    if job.template is not None:
        check_template(job.template)
    run_cfg_file = Path(job.run) / "config.json"
    run_cfg = read_json(run_cfg_file) if run_cfg_file.exists() else {}
    bb = backbone or load_backbone(run_model(job.run, job.model), job.device, job.dtype)
    classes, embeds, template = _class_embeds(bb, job.run, job.template)
    size = job.resolution or run_cfg.get("resolution") or bb.resolution
    picked = [classes.index(c) for c in wanted]
    images = generate(bb, embeds[picked], job.n, size, job.seed, job.steps, job.guidance, job.scheduler, job.batch)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, row in zip(wanted, images):
        for k, img in enumerate(row):
            files.append(out / f"{_slug(name)}-{k:03d}.png")
            Image.fromarray(img).save(files[-1])
    label_grid([(name, list(row)) for name, row in zip(wanted, images)]).save(out / "grid.png")
    write_json(out / "config.json", {
        "command": "sample", "settings": plain(job), "run_tokens": run_fingerprint(job.run), "classes": wanted,
        "template": template, "resolution": size, "files": [f.name for f in files], "model": bb.describe(),
        "versions": versions(),
    })
    return {"images": [str(f) for f in files], "grid": str(out / "grid.png")}


@torch.no_grad()
def samples_png(bb, run: Path, split, path: Path, per_class: int = 3, real: int = 3, seed: int = 0,
                steps: int = 25, guidance: float = 3.0) -> None:
    """The demo's samples.png: per class a labelled row of `real` training images (from `split`,
    a gcpl.data.splits.Split), a gap, then `per_class` images generated from its learned token."""
    from PIL import Image

    classes, embeds, _ = _class_embeds(bb, run)
    size = bb.resolution
    gen = generate(bb, embeds, per_class, size, seed, steps, guidance)
    rows = []
    for c, name in enumerate(classes):
        reals = [np.asarray(Image.open(s.path).convert("RGB").resize((size, size))) for s in split.train
                 if s.class_name == name][:real]
        rows.append((name, [*reals, None, *gen[c]]))
    label_grid(rows).save(path)
