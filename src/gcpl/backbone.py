"""Load a frozen Stable Diffusion 1.x/2.x (hub id, local diffusers folder, or the bundled tiny
model) and the one dtype/device policy of gcpl.

Every model fact (latent scaling factor, latent channels, text width, prediction type, noise
schedule, native resolution) is read from the loaded configs, never hard-coded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import GcplError
from .settings import setting

log = logging.getLogger(__name__)

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
BUNDLED_MODEL_DIR = Path(__file__).parent / "assets" / "tiny-sd"
BUNDLED_NAMES = ("tiny", "bundled")
PREDICTION_TYPES = ("epsilon", "v_prediction")

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


# The model options every command shares, defined once (gcpl.settings fields).
def model_setting(default: str | None = None):
    return setting(default, "hub id, local diffusers folder, or 'tiny' (the bundled model); default "
                   f"{DEFAULT_MODEL} (the bundled model when HF_HUB_OFFLINE=1)" if default is None else
                   "hub id, local diffusers folder, or 'tiny' (the bundled model)")


def device_setting():
    return setting(None, "cpu, cuda or cuda:N (default: cuda when available)", identity=False)


def dtype_setting():
    return setting(None, "precision of the frozen model (default: bf16 on CUDA, fp32 on CPU)",
                   choices=("fp32", "bf16", "fp16"))


def resolution_setting(what: str = "the model's native size"):
    return setting(None, f"image size in pixels (default: {what})")


def compile_setting():
    return setting(False, "torch.compile the UNet (GPU: a warm-up once, then faster calls)", identity=False)


def resolve_device(name: str | None = None) -> torch.device:
    """`None`/"auto": CUDA when available, else CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GcplError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GcplError(f"--device {name} asked for CUDA but no CUDA GPU is visible; use --device cpu")
    return dev


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The precision of the frozen modules: bf16 on CUDA, fp32 elsewhere, unless overridden.

    Trainable parameters and losses always stay in fp32 (see tokens.py / losses.py).
    """
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise GcplError(f"--dtype {name!r} is unknown; use one of fp32, bf16, fp16")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


@dataclass
class Backbone:
    """A frozen text-to-image latent diffusion model and the facts gcpl needs about it."""

    model_id: str
    tokenizer: object  # transformers CLIPTokenizer
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    vae: torch.nn.Module  # diffusers AutoencoderKL
    unet: torch.nn.Module  # diffusers UNet2DConditionModel
    alphas_cumprod: torch.Tensor  # (T,) fp32 on device: the training noise schedule
    prediction_type: str  # "epsilon" or "v_prediction"
    device: torch.device
    dtype: torch.dtype
    scheduler_config: dict  # the model's own scheduler config (for samplers: DDIMScheduler.from_config)
    recommended: dict = field(default_factory=dict)  # training settings the model folder recommends, per method

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def hidden_size(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell along one side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The native image size in pixels (512 for SD-1.x, 768 for SD-2.x 768-v)."""
        return int(self.unet.config.sample_size) * self.vae_scale

    def describe(self) -> dict:
        return {
            "model": self.model_id,
            "prediction_type": self.prediction_type,
            "scaling_factor": self.scaling_factor,
            "latent_channels": self.latent_channels,
            "hidden_size": self.hidden_size,
            "resolution": self.resolution,
            "num_train_timesteps": self.num_train_timesteps,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
        }


def resolve_model_path(model: str | None) -> str:
    """Map `tiny`/`bundled` (and None when offline) to the bundled folder; pass others through."""
    if model is None:
        model = "tiny" if offline() else DEFAULT_MODEL
    if model in BUNDLED_NAMES:
        if not (BUNDLED_MODEL_DIR / "model_index.json").exists():
            raise GcplError(
                f"the bundled model is missing from {BUNDLED_MODEL_DIR}; reinstall gcpl or build it "
                "with `python tools/pretrain_tiny.py`"
            )
        return str(BUNDLED_MODEL_DIR)
    return model


RECOMMENDED_FILE = "gcpl_defaults.json"


def recommended_training(path: str) -> dict:
    """A model folder's recommended training settings per method ({"gcpl": {"lr": ..., "steps": ...},
    ...}) from its gcpl_defaults.json ("train" key); {} when it has none (hub ids, plain SD folders).
    Explicit settings always win over these; these win over the paper's defaults."""
    f = Path(path) / RECOMMENDED_FILE
    if not f.is_file():
        return {}
    try:
        return dict(json.loads(f.read_text()).get("train", {}))
    except (OSError, ValueError) as e:
        raise GcplError(f"{f} is not valid JSON ({e}); fix or remove it") from None


def offline() -> bool:
    """HF_HUB_OFFLINE is set: default models are the bundled ones."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (HF_ENDPOINT) answers a TCP connection within `timeout` s.
    Checked before downloading, so a machine without network fails in seconds instead of minutes
    of retries; a model already in the local cache still loads."""
    import os
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def unreachable_message(model: str) -> str:
    return (f"{model} is not in the local cache and the Hugging Face hub cannot be reached; use --model tiny "
            "(the bundled model, no network) or a local folder, or set HF_HUB_OFFLINE=1 to use downloaded models "
            "only")


def load_backbone(model: str | None = None, device: str | None = None, dtype: str | None = None,
                  compile: bool = False) -> Backbone:
    """Load tokenizer, text encoder, VAE, UNet and the DDPM training schedule, all frozen.

    On CUDA the UNet uses channels_last (faster convolutions with cuDNN); `compile` wraps it in
    torch.compile (pays a warm-up once, then faster calls; worth it for long evaluations)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tlog.disable_progress_bar()  # weight-loading bars are noise in a CLI run
    dlog.disable_progress_bar()
    path = resolve_model_path(model)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    local = Path(path).exists()
    if local and not (Path(path) / "unet").is_dir():
        raise GcplError(
            f"{path} is not a diffusers Stable Diffusion folder (expected tokenizer/, text_encoder/, "
            "vae/, unet/ and scheduler/ inside)"
        )
    cached_only = not local and not offline() and not hub_reachable()
    kw = {"local_files_only": True} if cached_only else {}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dt, **kw)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dt, **kw)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dt, **kw)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **kw)
    except (OSError, ValueError) as e:
        if cached_only:
            raise GcplError(unreachable_message(path)) from None
        where = "folder" if local else "Hugging Face hub id"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GcplError(
            f"could not load model {model or path!r} as a {where} ({first[:200]}); pass --model with a "
            "local diffusers folder, a reachable hub id (run `huggingface-cli login` for gated models), "
            "or --model tiny for the bundled offline model"
        ) from None

    prediction_type = scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise GcplError(f"model {path} uses prediction_type {prediction_type!r}; gcpl supports {PREDICTION_TYPES}")
    for m in (text_encoder, vae, unet):
        m.requires_grad_(False)
        m.eval()
        m.to(dev)
    if dev.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    if compile:
        unet = torch.compile(unet)
    alphas_cumprod = scheduler.alphas_cumprod.to(device=dev, dtype=torch.float32)
    bb = Backbone(str(model or path), tokenizer, text_encoder, vae, unet, alphas_cumprod, prediction_type, dev, dt,
                  dict(scheduler.config), recommended_training(path) if local else {})
    log.info("loaded %s", bb.describe())
    return bb
