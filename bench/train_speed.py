"""Training speed: gcpl's batched multi-class GCPL against the reference approach.

Ours: `gcpl.trainer.Trainer` (every step holds `--batch` samples of every class in one UNet
forward/backward, latents encoded once up front, the text encoder run once per class prompt,
only the (C, D) class matrix trainable), in the dtype gcpl picks (bf16 on CUDA, fp32 on CPU)
unless --dtype says otherwise.

Reference: the paper's code path, diffusers' textual_inversion.py run once per class: batch 1,
gradient accumulation 4, VAE encoding every step, the text encoder run every micro-step, the
whole token-embedding table trainable (AdamW over it, other rows restored after every step),
fp32 (see bench/_common.py: ReferenceTextualInversion).

Both train the same model on the same images with the same number of image-steps per class
(`--steps` x `--batch`), in the same process; the printed ratio is ours / reference image-steps
per second. Model loading is not timed for either; ours' one-time latent encoding is reported
separately and in `ratio_incl_setup`.

    python bench/train_speed.py                       # random model of the bundled size, CPU
    python bench/train_speed.py --model tiny --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="diffusers folder / hub id / 'tiny' (default: a random model of the bundled size)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shots", type=int, default=16, help="training images per class")
    p.add_argument("--steps", type=int, default=10, help="our optimiser steps; the reference does "
                   "steps x batch micro-steps per class (the same image-steps per class)")
    p.add_argument("--batch", type=int, default=4, help="our samples per class per step")
    p.add_argument("--accum", type=int, default=4, help="reference gradient accumulation (batch 1)")
    p.add_argument("--max-batch", type=int, default=64, help="our samples per UNet forward/backward")
    p.add_argument("--ref-classes", type=int, default=None,
                   help="time the reference on only this many classes and scale (its cost per class is constant)")
    p.add_argument("--repeats", type=int, default=1, help="alternate ours/reference this many times; medians")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="ours' dtype (default: gcpl's policy: bf16 on CUDA, fp32 on CPU); "
                   "the reference is always fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON result here")
    return p.parse_args(argv)


def run_ours(bb, pixels, labels, names, a) -> dict:
    from gcpl.latents import encode
    from gcpl.trainer import TrainConfig, Trainer

    cfg = TrainConfig(steps=a.steps, batch=a.batch, max_batch=a.max_batch, seed=a.seed, checkpoint_every=0)
    t0 = C.now(bb.device)
    stats = encode(bb.vae, pixels, flip=cfg.flip)
    trainer = Trainer(bb, names, stats, labels, cfg)
    st = trainer.new_state()
    t1 = C.now(bb.device)
    for _ in range(a.steps):
        trainer.step(st)
    t2 = C.now(bb.device)
    image_steps = a.steps * a.batch * len(names)
    return {"image_steps": image_steps, "setup_s": t1 - t0, "loop_s": t2 - t1,
            "image_steps_per_s": image_steps / (t2 - t1), "image_steps_per_s_incl_setup": image_steps / (t2 - t0)}


def run_reference(rb, sched, pixels, labels, n_classes, a) -> dict:
    micro = a.steps * a.batch
    loop = setup = 0.0
    for c in range(n_classes):
        t0 = C.now(rb.device)
        ref = C.ReferenceTextualInversion(rb.tokenizer, rb.text_encoder, rb.vae, rb.unet, sched,
                                          pixels[labels == c], template="A photo of {}.", init_word="object",
                                          accum=a.accum, seed=a.seed + c)
        t1 = C.now(rb.device)
        for _ in range(micro):
            ref.micro_step()
        t2 = C.now(rb.device)
        setup += t1 - t0
        loop += t2 - t1
        del ref
    image_steps = micro * n_classes
    return {"image_steps": image_steps, "setup_s": setup, "loop_s": loop, "image_steps_per_s": image_steps / loop,
            "classes_timed": n_classes}


def warmup(bb, rb, sched, pixels, labels, names, a) -> None:
    """One step of each (first-call allocations, lazy inits) before anything is timed."""
    import argparse as _ap

    w = _ap.Namespace(**{**vars(a), "steps": 1})
    run_ours(bb, pixels[labels < 2], labels[labels < 2], names[:2], w)
    ref = C.ReferenceTextualInversion(rb.tokenizer, rb.text_encoder, rb.vae, rb.unet, sched, pixels[:2],
                                      template="A photo of {}.", accum=a.accum)
    for _ in range(a.accum):
        ref.micro_step()


def main(argv=None) -> dict:
    a = parse_args(argv)
    C.setup_threads(a.threads)
    from gcpl.backbone import load_backbone

    model = a.model or C.random_model_folder()
    bb = load_backbone(model, a.device, a.dtype)
    rb = bb if bb.dtype == torch.float32 else load_backbone(model, a.device, "fp32")
    sched = C.ddpm_scheduler(rb.scheduler_config)
    g = torch.Generator().manual_seed(a.seed)
    n = a.classes * a.shots
    pixels = torch.rand((n, 3, bb.resolution, bb.resolution), generator=g) * 2 - 1
    labels = torch.arange(a.classes).repeat_interleave(a.shots)
    names = [f"class{c:03d}" for c in range(a.classes)]
    ref_classes = min(a.ref_classes or a.classes, a.classes)

    C.say(f"train_speed: model={a.model or 'random (bundled size)'} resolution={bb.resolution} "
          f"classes={a.classes} shots={a.shots} steps={a.steps} batch={a.batch} accum={a.accum} "
          f"device={bb.device} threads={torch.get_num_threads()}")
    warmup(bb, rb, sched, pixels, labels, names, a)
    ours_runs, ref_runs = [], []
    for r in range(a.repeats):
        ours_runs.append(run_ours(bb, pixels, labels, names, a))
        C.say(f"  ours      run {r + 1}: {ours_runs[-1]['image_steps_per_s']:.1f} image-steps/s")
        ref_runs.append(run_reference(rb, sched, pixels, labels, ref_classes, a))
        C.say(f"  reference run {r + 1}: {ref_runs[-1]['image_steps_per_s']:.1f} image-steps/s")

    def med(runs, k):
        """Median of a timing over the repeats; counts (ints) are the same in every repeat."""
        values = [x[k] for x in runs]
        if isinstance(values[0], int):
            assert len(set(values)) == 1, (k, values)
            return values[0]
        return statistics.median(values)

    ours = {k: med(ours_runs, k) for k in ours_runs[0]}
    ref = {k: med(ref_runs, k) for k in ref_runs[0]}
    ref_total_s = ref["loop_s"] * a.classes / ref_classes  # scaled to all classes
    rows = [
        {"method": "ours (batched GCPL)", "dtype": str(bb.dtype).replace("torch.", ""), "image_steps": ours["image_steps"],
         "setup_s": ours["setup_s"], "loop_s": ours["loop_s"], "ips": ours["image_steps_per_s"]},
        {"method": "reference (TI x class)", "dtype": "float32",
         "image_steps": ref["image_steps"] * a.classes // ref_classes,
         "setup_s": None, "loop_s": ref_total_s, "ips": ref["image_steps_per_s"]},
    ]
    ratio = ours["image_steps_per_s"] / ref["image_steps_per_s"]
    ratio_setup = ours["image_steps_per_s_incl_setup"] / ref["image_steps_per_s"]
    print()
    print(C.table(rows, [("method", "method", ""), ("dtype", "dtype", ""), ("image_steps", "image-steps", "d"),
                         ("setup_s", "setup s", ".2f"), ("loop_s", "train s", ".2f"),
                         ("ips", "image-steps/s", ".1f")]))
    print(f"\nratio ours / reference: {ratio:.2f}x  (including ours' latent encoding: {ratio_setup:.2f}x)\n")
    result = {
        "bench": "train_speed",
        "config": {k: v for k, v in vars(a).items() if k != "out"} | {"model": a.model or "random-bundled-size",
                                                                       "resolution": bb.resolution},
        "env": C.env_info(bb.device),
        "ours": ours, "reference": ref, "ours_runs": ours_runs, "reference_runs": ref_runs,
        "ratio": ratio, "ratio_incl_setup": ratio_setup,
    }
    C.emit_json(result, a.out)
    return result


if __name__ == "__main__":
    main()
