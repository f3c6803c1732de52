"""Images generated from prompt embeddings with the backbone's frozen modules (a diffusers
StableDiffusionPipeline), and labelled grids of them: `gcpl sample`, the validation images of
`gcpl train` and the demo's samples.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .runs import TrainedRun

__all__ = ["SCHEDULERS", "generate", "label_grid", "samples_png"]

#: --scheduler name -> diffusers scheduler class (built from the model's own scheduler config)
SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "pndm": "PNDMScheduler",
              "euler": "EulerDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}
LABEL_HEIGHT = 16  # pixels of the label strip above each grid row


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
             guidance: float = 7.5, scheduler: str = "ddim", batch: int = 8, progress: bool = False) -> np.ndarray:
    """(C, L, D) prompt embeddings -> (C, n, size, size, 3) uint8 images; image k of each prompt
    starts from the noise of a generator seeded with seed + k (negative prompt: ""). `progress`:
    a progress bar on stderr, advanced after each batch of images."""
    pipe = _pipeline(bb, scheduler)
    jobs = [(c, k) for c in range(len(prompt_embeds)) for k in range(n)]
    out = np.zeros((len(prompt_embeds), n, size, size, 3), np.uint8)
    with tqdm(total=len(jobs), desc="sample", unit="img", disable=not progress) as bar:
        for i in range(0, len(jobs), batch):
            part = jobs[i : i + batch]
            rows = torch.tensor([c for c, _ in part], device=prompt_embeds.device)
            embeds = prompt_embeds[rows].to(bb.device, bb.dtype)
            gens = [torch.Generator().manual_seed(seed + k) for _, k in part]
            images = pipe(prompt_embeds=embeds, height=size, width=size, num_inference_steps=steps,
                          guidance_scale=guidance, generator=gens, output_type="np").images  # (B, H, W, 3) in [0, 1]
            for (c, k), img in zip(part, images):
                out[c, k] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            bar.update(len(part))
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


@torch.no_grad()
def samples_png(bb, run: Path, split, path: Path, per_class: int = 3, real: int = 3, seed: int = 0,
                steps: int = 25, guidance: float = 3.0) -> None:
    """The demo's samples.png: per class a labelled row of `real` training images (from `split`,
    a gcpl.data.splits.Split), a gap, then `per_class` images generated from its learned token."""
    from PIL import Image

    trained = TrainedRun.open(run)
    classes, embeds = trained.classes, trained.prompt_embeds(bb)
    size = bb.resolution
    gen = generate(bb, embeds, per_class, size, seed, steps, guidance)
    rows = []
    for c, name in enumerate(classes):
        reals = [np.asarray(Image.open(s.path).convert("RGB").resize((size, size))) for s in split.train
                 if s.class_name == name][:real]
        rows.append((name, [*reals, None, *gen[c]]))
    label_grid(rows).save(path)
