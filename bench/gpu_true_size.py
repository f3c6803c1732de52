"""True-size speed: SD-1.4-shaped components with random weights (no download) on one GPU.

Builds from config a UNet2DConditionModel with SD-1.4's config (859.5M parameters, asserted), a
CLIPTextModel of SD-1.4's shape (hidden 768, 12 layers, 12 heads, vocab 49408, 77 positions)
and SD's AutoencoderKL, then measures, printing each number as soon as it exists and rewriting
`--out` after each phase (a timeout still leaves numbers):

  flops        FLOPs of one UNet call (torch.utils.flop_counter), next to the nominal 0.803 TFLOP
  classify     gcpl's DiffusionClassifier UNet calls/s at batch B (bf16, SDPA, channels_last):
               achieved TFLOP/s, fraction of --peak-tflops, peak memory; also the bare UNet forward
  train_ours   image-steps/s of gcpl's GCPL step (gcpl.trainer.Trainer: forward+backward through UNet
               and text encoder into the class vectors only), B samples per step (B/4 classes x 4)
  train_ref    image-steps/s of the reference step (diffusers textual_inversion.py: batch 1, grad
               accumulation 4, fp32, VAE encoding every step, whole embedding table in AdamW)
  classify_compiled  (with --compile) the classify numbers again under torch.compile, with the
               compile time; run last, and skipped when --budget-s would be exceeded

A CUDA out-of-memory error at batch B retries that phase at B/2.

    python bench/gpu_true_size.py --size sd14 --compile --out gpu.json   # on an H200
    python bench/gpu_true_size.py --size small                           # CPU smoke run, < 60 s
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

SD14_UNET_PARAMS = 859_520_964
NOMINAL_UNET_TFLOP = 0.803  # per UNet call at 64x64 latents (SD-1.x, 77 text tokens)

SIZES = {
    "sd14": dict(
        unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=(320, 640, 1280, 1280),
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, flip_sin_to_cos=True,
                  freq_shift=0, downsample_padding=1, act_fn="silu", norm_eps=1e-5),
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, projection_dim=768),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
        image_size=512,
    ),
    # the same structure, scaled down to run on a CPU in seconds (smoke test)
    "small": dict(
        unet=dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64, 64, 64),
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32, flip_sin_to_cos=True,
                  freq_shift=0, downsample_padding=1, act_fn="silu", norm_eps=1e-5),
        text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=77, projection_dim=64),
        vae=dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=64),
        image_size=64,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="sd14")
    p.add_argument("--batch", type=int, default=64, help="classifier UNet batch B (halved on OOM)")
    p.add_argument("--train-batch", type=int, default=None, help="our training samples per step (default --batch); "
                   "B/4 classes x 4 samples")
    p.add_argument("--classes", type=int, default=100, help="class prompts of the classifier")
    p.add_argument("--steps", type=int, default=10, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--ref-micro-steps", type=int, default=None, help="timed reference micro-steps (default 4 x --steps)")
    p.add_argument("--compile", action="store_true", help="also measure the classifier under torch.compile (last)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default; "
                   "max-autotune takes far longer to compile)")
    p.add_argument("--no-channels-last", action="store_true", help="leave our UNet in contiguous (NCHW) format")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="the device's bf16 matmul peak (H200 measured: 790)")
    p.add_argument("--budget-s", type=float, default=290.0, help="skip phases that would not fit in this many seconds")
    p.add_argument("--device", default=None, help="default: cuda when available (sd14 needs it), else cpu")
    p.add_argument("--dtype", default=None, help="ours (default bf16 on CUDA, fp32 on CPU); the reference is fp32")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--allow-cpu", action="store_true", help="let --size sd14 run on a CPU (slow)")
    p.add_argument("--out", help="JSON file, rewritten after every phase")
    return p.parse_args(argv)


class Bench:
    def __init__(self, a):
        self.a, self.t0 = a, time.perf_counter()
        self.results: dict = {"bench": "gpu_true_size", "config": vars(a).copy(), "phases": {}, "skipped": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def record(self, phase: str, data: dict) -> None:
        data["at_s"] = round(self.elapsed(), 1)
        self.results["phases"][phase] = data
        C.say(f"[{data['at_s']:7.1f}s] {phase}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in data.items() if k != "at_s"))
        self.save()

    def skip(self, phase: str, why: str) -> None:
        self.results["skipped"][phase] = why
        C.say(f"[{self.elapsed():7.1f}s] {phase}: skipped ({why})")
        self.save()

    def save(self) -> None:
        if self.a.out:
            from gcpl.io import write_json

            write_json(self.a.out, self.results)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def with_oom_retry(bench: Bench, phase: str, batch: int, fn, device):
    """fn(batch) -> dict; on OOM retry at batch // 2 down to 1."""
    while batch >= 1:
        oom = False
        try:
            out = fn(batch)
            out["batch"] = batch
            return out
        except Exception as e:  # noqa: BLE001 - OOM shows up as several exception types
            if not is_oom(e):
                raise
            oom = True
        if oom:  # outside the except block: the traceback's frames (and their tensors) are gone
            C.say(f"[{bench.elapsed():7.1f}s] {phase}: out of memory at batch {batch}; retrying at {batch // 2}")
            bench.results.setdefault("oom", []).append({"phase": phase, "batch": batch})
            free(device)
            batch //= 2
    raise RuntimeError(f"{phase}: out of memory even at batch 1")


# --- models ----------------------------------------------------------------------------------------


def build(size: str, device: torch.device):
    """fp32 tokenizer, text encoder, VAE, UNet (random weights, created on `device`) and scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from gcpl.tiny_model import TOKENIZER_DIR

    s = SIZES[size]
    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    with torch.device(device):
        unet = UNet2DConditionModel(**s["unet"])
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_act="quick_gelu", bos_token_id=tok.bos_token_id,
                                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **s["text"]))
        n_vae = len(s["vae"]["block_out_channels"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n_vae,
                            up_block_types=("UpDecoderBlock2D",) * n_vae, latent_channels=4, norm_num_groups=32,
                            scaling_factor=0.18215, **s["vae"])
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, prediction_type="epsilon", steps_offset=1)
    for m in (unet, text, vae):
        m.requires_grad_(False).eval()
    return tok, text, vae, unet, sched


def make_backbone(tok, text, vae, unet, sched, device, dtype):
    from gcpl.backbone import Backbone

    return Backbone("random-" + str(unet.config.sample_size), tok, text, vae, unet,
                    sched.alphas_cumprod.to(device=device, dtype=torch.float32), sched.config.prediction_type,
                    device, dtype, dict(sched.config))


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# --- phases ----------------------------------------------------------------------------------------


def count_unet_flops(bb) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    s = bb.unet.config.sample_size
    x = torch.randn(1, 4, s, s, device=bb.device, dtype=bb.dtype)
    t = torch.tensor([500], device=bb.device)
    ehs = torch.randn(1, 77, bb.hidden_size, device=bb.device, dtype=bb.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        bb.unet(x, t, encoder_hidden_states=ehs)
    return float(fc.get_total_flops())


def class_embeds(bb, n: int) -> torch.Tensor:
    """(n, 77, D) prompt embeddings of n class vectors (the initializer row plus noise)."""
    from gcpl.tokens import PromptSlot, encode_slot_prompts, init_vectors, single_token_id

    slot = PromptSlot.from_template(bb.tokenizer, "A photo of {}.", "object")
    v = init_vectors(bb.text_encoder, single_token_id(bb.tokenizer, "object"), n).to(bb.device)
    v = v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0)).to(bb.device)
    with torch.no_grad():
        return torch.cat([encode_slot_prompts(bb.text_encoder, slot, v[i : i + 64]) for i in range(0, n, 64)])


def classify_phase(bench: Bench, bb, embeds, batch: int, flops_per_call: float, compiled: bool) -> dict:
    """UNet calls/s of DiffusionClassifier._errors at batch `batch`, plus the bare UNet forward."""
    from gcpl.classify import ClassifyConfig, DiffusionClassifier

    a, dev = bench.a, bb.device
    s = bb.unet.config.sample_size
    n_images = 4
    x0 = torch.randn(n_images, 4, s, s, generator=torch.Generator().manual_seed(1))
    clf = DiffusionClassifier(bb, embeds, ClassifyConfig(n_samples=(500,), keep=(1,), batch=batch), (4, s, s))
    g = torch.Generator().manual_seed(2)

    def triples(n_batches):
        n = n_batches * batch
        m = torch.randint(n_images, (n,), generator=g)
        c = torch.randint(embeds.shape[0], (n,), generator=g)
        k = torch.randint(len(clf.ts), (n,), generator=g)
        return list(zip(m.tolist(), c.tolist(), k.tolist()))

    reset_peak(dev)
    t0 = C.now(dev)
    clf._errors(x0, triples(max(1, a.warmup)))  # warm-up (and, compiled, the compilation)
    warm_s = C.now(dev) - t0
    t0 = C.now(dev)
    clf._errors(x0, triples(a.steps))
    dt = C.now(dev) - t0
    calls_s = a.steps * batch / dt
    out = {"compiled": compiled, "warmup_s": warm_s, "unet_calls_per_s": calls_s, "ms_per_batch": 1000 * dt / a.steps}
    # the bare UNet forward on device-resident inputs (no gcpl overhead)
    x = torch.randn(batch, 4, s, s, device=dev, dtype=bb.dtype)
    t = torch.randint(1000, (batch,), device=dev)
    ehs = embeds[torch.randint(embeds.shape[0], (batch,))].to(dev)
    with torch.no_grad():
        bb.unet(x, t, encoder_hidden_states=ehs)
        t0 = C.now(dev)
        for _ in range(a.steps):
            bb.unet(x, t, encoder_hidden_states=ehs)
        raw_dt = C.now(dev) - t0
    raw_calls = a.steps * batch / raw_dt
    out.update({
        "bare_unet_calls_per_s": raw_calls,
        "tflops": calls_s * flops_per_call / 1e12, "bare_tflops": raw_calls * flops_per_call / 1e12,
        "frac_of_peak": calls_s * flops_per_call / 1e12 / a.peak_tflops,
        "bare_frac_of_peak": raw_calls * flops_per_call / 1e12 / a.peak_tflops,
        "peak_mem_gib": peak_gib(dev),
    })
    return out


def train_ours_phase(bench: Bench, bb, batch: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from gcpl.latents import LatentStats
    from gcpl.trainer import TrainConfig, Trainer

    a, dev = bench.a, bb.device
    per_class = 4
    n_cls = max(1, batch // per_class)
    batch = n_cls * per_class
    shots = 4
    s = bb.unet.config.sample_size
    g = torch.Generator().manual_seed(3)
    stats = LatentStats(torch.randn(n_cls * shots, 2, 4, s, s, generator=g), 0.05 * torch.ones(n_cls * shots, 2, 4, s, s))
    labels = torch.arange(n_cls).repeat_interleave(shots)
    cfg = TrainConfig(steps=a.steps + a.warmup + 1, batch=per_class, max_batch=batch, checkpoint_every=0)
    trainer = Trainer(bb, [f"c{i}" for i in range(n_cls)], stats, labels, cfg)
    st = trainer.new_state()
    reset_peak(dev)
    with FlopCounterMode(display=False) as fc:  # one step, counted (and a warm-up step)
        trainer.step(st)
    for _ in range(a.warmup):
        trainer.step(st)
    t0 = C.now(dev)
    for _ in range(a.steps):
        trainer.step(st)
    dt = C.now(dev) - t0
    ips = a.steps * batch / dt
    flops_img = fc.get_total_flops() / batch
    return {"classes": n_cls, "image_steps_per_s": ips, "ms_per_step": 1000 * dt / a.steps,
            "flops_per_image_step": flops_img, "tflops": ips * flops_img / 1e12,
            "frac_of_peak": ips * flops_img / 1e12 / a.peak_tflops, "peak_mem_gib": peak_gib(dev),
            "dtype": str(bb.dtype).replace("torch.", "")}


def train_ref_phase(bench: Bench, tok, text, vae, unet, sched, image_size: int, device) -> dict:
    a = bench.a
    micro = a.ref_micro_steps or 4 * a.steps
    pixels = torch.rand((4, 3, image_size, image_size), generator=torch.Generator().manual_seed(4)) * 2 - 1
    reset_peak(device)
    ref = C.ReferenceTextualInversion(tok, text, vae, unet, sched, pixels, template="A photo of {}.", accum=4)
    for _ in range(4):  # one optimiser step of warm-up
        ref.micro_step()
    t0 = C.now(device)
    for _ in range(micro):
        ref.micro_step()
    dt = C.now(device) - t0
    return {"micro_steps": micro, "image_steps_per_s": micro / dt, "ms_per_micro_step": 1000 * dt / micro,
            "peak_mem_gib": peak_gib(device), "dtype": "float32",
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}


# --- main ------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    a = parse_args(argv)
    C.setup_threads(a.threads)
    from gcpl.backbone import resolve_dtype

    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if a.size == "sd14" and dev.type != "cuda" and not a.allow_cpu:
        raise SystemExit("--size sd14 is meant for a GPU (pass --allow-cpu to run it on a CPU anyway, slowly)")
    dtype = resolve_dtype(a.dtype, dev)
    bench = Bench(a)
    bench.results["env"] = C.env_info(dev)

    tok, text32, vae32, unet32, sched = build(a.size, dev)
    counts = {"unet": n_params(unet32), "text_encoder": n_params(text32), "vae": n_params(vae32)}
    C.say(f"parameters: UNet {counts['unet']:,}  text encoder {counts['text_encoder']:,}  VAE {counts['vae']:,}")
    if a.size == "sd14":
        assert round(counts["unet"] / 1e6, 1) == 859.5, f"UNet has {counts['unet']:,} parameters, SD-1.4's has 859.5M"
    # ours: frozen modules in gcpl's dtype (bf16 on CUDA); the reference keeps the fp32 originals
    unet = copy.deepcopy(unet32).to(dtype)
    text = copy.deepcopy(text32).to(dtype)
    vae = vae32 if dtype == torch.float32 else copy.deepcopy(vae32).to(dtype)
    if not a.no_channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    bb = make_backbone(tok, text, vae, unet, sched, dev, dtype)
    attn = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    bench.record("build", {"params": counts, "dtype": str(dtype).replace("torch.", ""), "attention": ",".join(attn),
                           "channels_last": not a.no_channels_last})

    # TFLOP/s use the nominal 0.803 TFLOP for sd14 (the counter misses attention where SDPA runs a
    # kernel without a registered FLOP formula, e.g. on CPU: 0.677 counted), the count otherwise.
    flops = count_unet_flops(bb)
    nominal = NOMINAL_UNET_TFLOP * 1e12 if a.size == "sd14" else None
    per_call = nominal or flops
    bench.record("flops", {"unet_flops_per_call_counted": flops, "unet_flops_per_call_nominal": nominal,
                           "counted_over_nominal": flops / nominal if nominal else None,
                           "used_for_tflops": per_call})

    embeds = class_embeds(bb, a.classes)
    r = with_oom_retry(bench, "classify", a.batch, lambda b: classify_phase(bench, bb, embeds, b, per_call, False), dev)
    bench.record("classify", r)
    cls_batch = r["batch"]
    free(dev)

    r = with_oom_retry(bench, "train_ours", a.train_batch or a.batch, lambda b: train_ours_phase(bench, bb, b), dev)
    bench.record("train_ours", r)
    free(dev)

    if bench.elapsed() > a.budget_s - 30:
        bench.skip("train_ref", f"{bench.elapsed():.0f} s of --budget-s {a.budget_s:.0f} used")
    else:
        r = train_ref_phase(bench, tok, text32, vae32, unet32, sched, SIZES[a.size]["image_size"], dev)
        r["ratio_ours_over_ref"] = bench.results["phases"]["train_ours"]["image_steps_per_s"] / r["image_steps_per_s"]
        bench.record("train_ref", r)
    del text32, unet32
    free(dev)

    if a.compile:
        need = 150 if a.size == "sd14" else 30
        if bench.elapsed() > a.budget_s - need:
            bench.skip("classify_compiled", f"needs ~{need} s, {a.budget_s - bench.elapsed():.0f} s of --budget-s left")
        else:
            eager_unet = bb.unet
            bb.unet = torch.compile(eager_unet, mode=a.compile_mode)
            try:
                r = classify_phase(bench, bb, embeds, cls_batch, per_call, True)
                r["batch"] = cls_batch
                r["speedup_over_eager"] = r["unet_calls_per_s"] / bench.results["phases"]["classify"]["unet_calls_per_s"]
                bench.record("classify_compiled", r)
            except Exception as e:  # noqa: BLE001 - report, keep the eager numbers
                bench.skip("classify_compiled", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            finally:
                bb.unet = eager_unet

    bench.results["total_s"] = round(bench.elapsed(), 1)
    summary(bench)
    C.emit_json(bench.results, a.out)
    return bench.results


def summary(bench: Bench) -> None:
    p = bench.results["phases"]
    rows = []
    for k in ("classify", "classify_compiled"):
        if k in p:
            rows.append({"what": k, "batch": p[k].get("batch"), "rate": p[k]["unet_calls_per_s"], "unit": "UNet calls/s",
                         "tflops": p[k]["tflops"], "frac": 100 * p[k]["frac_of_peak"], "mem": p[k]["peak_mem_gib"]})
    if "train_ours" in p:
        q = p["train_ours"]
        rows.append({"what": "train_ours (GCPL)", "batch": q["batch"], "rate": q["image_steps_per_s"],
                     "unit": "image-steps/s", "tflops": q["tflops"], "frac": 100 * q["frac_of_peak"],
                     "mem": q["peak_mem_gib"]})
    if "train_ref" in p:
        q = p["train_ref"]
        rows.append({"what": "train_ref (TI, fp32)", "batch": 1, "rate": q["image_steps_per_s"], "unit": "image-steps/s",
                     "mem": q["peak_mem_gib"]})
    print()
    print(C.table(rows, [("what", "measurement", ""), ("batch", "batch", "d"), ("rate", "rate", ".2f"), ("unit", "unit", ""),
                         ("tflops", "TFLOP/s", ".1f"), ("frac", "% of peak", ".1f"), ("mem", "peak GiB", ".1f")]))
    if "train_ref" in p:
        print(f"\ntraining ratio ours / reference: {p['train_ref']['ratio_ours_over_ref']:.2f}x")
    print()


if __name__ == "__main__":
    main()
