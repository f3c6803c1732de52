"""Shared pieces of the benchmarks: thread/timer helpers, the random tiny model, tables, JSON output,
and a faithful re-implementation of the reference training loop (diffusers'
examples/textual_inversion/textual_inversion.py run once per class) for speed comparisons.

Benchmarks print RATIOS measured in one process: the machine's background load then affects the
numerator and the denominator alike.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The size of the bundled model (src/gcpl/assets/tiny-sd), built here with random weights when
#: the benchmark is not given a --model: speed does not depend on the weights' values.
BUNDLED_SIZE = dict(text_hidden=64, text_layers=3, unet_channels=(32, 64), vae_channels=(32, 64), image_size=32)


def quiet() -> None:
    """No weight-loading/saving progress bars or info chatter in benchmark output."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()


def setup_threads(n: int | None) -> int:
    """torch.set_num_threads(n) (1 unless told otherwise: other workers share the cores)."""
    quiet()
    n = 1 if n is None else n
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def random_model_folder(size: dict | None = None, seed: int = 0) -> str:
    """A random-weight tiny SD folder of the given TinySDConfig fields (default: the bundled size),
    in a temporary folder removed at exit."""
    from gcpl.tiny_model import TinySDConfig, build_tiny_sd

    tmp = tempfile.mkdtemp(prefix="gcpl-bench-model-")
    atexit.register(shutil.rmtree, tmp, True)
    return str(build_tiny_sd(Path(tmp) / "model", TinySDConfig(**(size or BUNDLED_SIZE)), seed=seed))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def now(device) -> float:
    sync(device)
    return time.perf_counter()


def say(*args) -> None:
    print(*args, flush=True)


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """cols: (key, header, format spec); a missing/None cell prints '-'."""
    def cell(r, k, f):
        v = r.get(k)
        if v is None:
            return "-"
        return format(v, f) if f else str(v)

    body = [[h for _, h, _ in cols]] + [[cell(r, k, f) for k, _, f in cols] for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths))) for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit_json(result: dict, out: str | None = None) -> None:
    """The result as one JSON line on stdout (the last line), and to `out` when given."""
    if out:
        from gcpl.io import write_json

        write_json(out, result)
    print(json.dumps(result), flush=True)


def ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def env_info(device) -> dict:
    d = torch.device(device)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(d),
            "python": sys.version.split()[0]}
    if d.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(d)
    return info


# --- the reference: diffusers textual_inversion.py, one class per run -----------------------------


class ReferenceTextualInversion:
    """One class trained the way diffusers' examples/textual_inversion/textual_inversion.py trains
    it (the paper's code path), with --train_batch_size 1 --gradient_accumulation_steps 4 and
    mixed_precision "no" (fp32):

    - a placeholder token is added to (a copy of) the tokenizer and the embedding table is resized;
      its row starts as the initializer word's row;
    - the WHOLE token-embedding table is trainable; AdamW (weight decay 1e-2, eps 1e-8) over it;
    - every micro-step: the prompt is tokenized, the VAE encodes the (randomly flipped) image and
      samples its latent (latent_dist.sample() * scaling_factor), the text encoder runs on the
      prompt, the UNet predicts, MSE loss / accumulation steps is backpropagated; the optimizer
      steps (and zeroes grads) every `accum` micro-steps (accelerate's accumulate); after every
      micro-step all rows but the placeholder's are restored from the original table, as the
      script does.

    Not included (each would only slow the reference down further): reading and resizing the image
    files (pixels are given as tensors), model loading per class, checkpoint/validation logic.
    """

    def __init__(self, tokenizer, text_encoder, vae, unet, noise_scheduler, pixels: torch.Tensor, *,
                 template: str = "a photo of a {}", init_word: str = "object", lr: float = 5e-4,
                 accum: int = 4, seed: int = 0, placeholder: str = "<ref-class>"):
        self.device = next(unet.parameters()).device
        self.tokenizer = copy.deepcopy(tokenizer)
        if self.tokenizer.add_tokens([placeholder]) != 1:
            raise ValueError(f"tokenizer already holds {placeholder}")
        init_ids = self.tokenizer.encode(init_word, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ValueError("the initializer token must be a single token")
        self.placeholder_ids = self.tokenizer.convert_tokens_to_ids([placeholder])
        te = copy.deepcopy(text_encoder)
        te.resize_token_embeddings(len(self.tokenizer))
        emb = te.get_input_embeddings()
        with torch.no_grad():
            for tid in self.placeholder_ids:
                emb.weight.data[tid] = emb.weight.data[init_ids[0]].clone()
        te.requires_grad_(False)  # the script freezes encoder, final LN and position embeddings;
        emb.requires_grad_(True)  # the token-embedding table stays trainable, all of it
        self.text_encoder, self.vae, self.unet, self.sched = te, vae, unet, noise_scheduler
        self.optimizer = torch.optim.AdamW(emb.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.orig = emb.weight.data.clone()
        self.prompt = template.format(placeholder)
        self.pixels = pixels
        self.accum = accum
        self.micro = 0
        self.g = torch.Generator().manual_seed(seed)
        te.train()

    def micro_step(self) -> float:
        import torch.nn.functional as F

        tok, dev = self.tokenizer, self.device
        # dataset item: tokenized prompt, image with a random flip (as TextualInversionDataset)
        input_ids = tok(self.prompt, padding="max_length", truncation=True, max_length=tok.model_max_length,
                        return_tensors="pt").input_ids.to(dev)
        i = int(torch.randint(len(self.pixels), (1,), generator=self.g))
        px = self.pixels[i : i + 1]
        if torch.rand((), generator=self.g) < 0.5:
            px = px.flip(-1)
        px = px.to(dev, torch.float32)
        latents = self.vae.encode(px).latent_dist.sample().detach()
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.sched.config.num_train_timesteps, (latents.shape[0],), device=dev).long()
        noisy = self.sched.add_noise(latents, noise, timesteps)
        ehs = self.text_encoder(input_ids)[0].to(dtype=torch.float32)
        pred = self.unet(noisy, timesteps, ehs).sample
        if self.sched.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.sched.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        (loss / self.accum).backward()  # accelerator.backward under accumulate
        self.micro += 1
        if self.micro % self.accum == 0:  # accelerate skips step/zero_grad between sync steps
            self.optimizer.step()
            self.optimizer.zero_grad()
        index_no_updates = torch.ones((len(tok),), dtype=torch.bool)
        index_no_updates[min(self.placeholder_ids) : max(self.placeholder_ids) + 1] = False
        with torch.no_grad():
            emb = self.text_encoder.get_input_embeddings().weight
            emb[index_no_updates] = self.orig[index_no_updates]
        return loss.detach()


def ddpm_scheduler(config: dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config)
