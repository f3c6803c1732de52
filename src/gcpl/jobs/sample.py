"""`gcpl sample`: images generated from a trained run's learned class tokens, and labelled grids.

`sample(job)` writes into `--out`: `<class>-<k>.png` (n images per class, k = 000, 001, ...),
`grid.png` (one row per class, the class name in a strip above it) and config.json (settings,
the run's token digest, classes, files, versions). Image k of every class starts from the noise
of seed + k (one generator per image), so a seed gives the same images whatever n, the classes
drawn or the batch size, and the classes of one column share their starting noise. A progress
bar counts the images as they are generated; the folder is locked while the job runs (gcpl.lock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import device_setting, dtype_setting, load_backbone, resolution_setting
from ..errors import GcplError
from ..generation import SCHEDULERS, generate, label_grid
from ..io import write_json
from ..lock import locked
from ..runs import TrainedRun, versions
from ..settings import plain, setting
from ..tokens import check_template

__all__ = ["SampleJob", "sample"]


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


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "class"


@locked("sample")
@torch.no_grad()
def sample(job: SampleJob, backbone=None, progress: bool = True) -> dict:
    """Write job.n images per class of the run, grid.png and config.json into job.out (see the
    module docstring); the run and the class names are checked before a model is loaded.
    Returns {"images": [paths], "grid": path}.

        from gcpl import SampleJob, sample

        r = sample(SampleJob(run="runs/mine", out="runs/mine/samples", n=4))
        print(r["grid"])
    """
    from PIL import Image

    run = TrainedRun.open(job.run)
    classes = run.classes
    wanted = list(job.class_names or classes)
    run.check_classes(wanted, "class")
    template = check_template(job.template or run.template)
    bb = backbone or load_backbone(run.model_for(job.model), job.device, job.dtype)
    embeds = run.prompt_embeds(bb, template)
    size = run.resolution_for(job.resolution, bb)
    picked = [classes.index(c) for c in wanted]
    images = generate(bb, embeds[picked], job.n, size, job.seed, job.steps, job.guidance, job.scheduler, job.batch,
                      progress=progress)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, row in zip(wanted, images):
        for k, img in enumerate(row):
            files.append(out / f"{_slug(name)}-{k:03d}.png")
            Image.fromarray(img).save(files[-1])
    label_grid([(name, list(row)) for name, row in zip(wanted, images)]).save(out / "grid.png")
    write_json(out / "config.json", {
        "command": "sample", "settings": plain(job), "run_tokens": run.digest, "classes": wanted,
        "template": template, "resolution": size, "files": [f.name for f in files], "model": bb.describe(),
        "versions": versions(),
    })
    return {"images": [str(f) for f in files], "grid": str(out / "grid.png")}
