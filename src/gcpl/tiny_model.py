"""Build small Stable-Diffusion-shaped models from config (random weights) and save them as a
diffusers pipeline folder.

The same builder serves the tests (a few hundred thousand parameters, random weights) and the
pretraining script of the bundled model (`tools/pretrain_tiny.py`). The folder it writes has
exactly the layout of `CompVis/stable-diffusion-v1-4`, so every model goes through one loader.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip-tokenizer"


@dataclass
class TinySDConfig:
    text_hidden: int = 32  # CLIP text width (= UNet cross-attention width)
    text_layers: int = 2
    text_heads: int = 2
    unet_channels: tuple[int, ...] = (32, 64)  # one UNet level per entry; cross-attention on all but the first
    unet_layers_per_block: int = 1
    unet_head_dim: int = 8
    vae_channels: tuple[int, ...] = (16, 32)  # len(vae_channels) - 1 downsamplings of x2
    latent_channels: int = 4
    image_size: int = 16  # pixels; latents are image_size / 2**(len(vae_channels)-1)
    scaling_factor: float = 0.18215  # VAE latent scale, stored in the VAE config
    prediction_type: str = "epsilon"  # or "v_prediction"
    norm_groups: int = 8


def build_components(cfg: TinySDConfig, seed: int = 0) -> dict:
    """Random-weight tokenizer, text encoder, VAE, UNet and DDPM scheduler in SD's shapes."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_DIR)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_hidden,
            intermediate_size=cfg.text_hidden * 4,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_act="quick_gelu",
        )
    )
    n_vae = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_vae,
        up_block_types=("UpDecoderBlock2D",) * n_vae,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_groups,
        sample_size=cfg.image_size,
        scaling_factor=cfg.scaling_factor,
    )
    n_unet = len(cfg.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n_unet - 1)
    up = ("CrossAttnUpBlock2D",) * (n_unet - 1) + ("UpBlock2D",)
    unet = UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (n_vae - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_head_dim,
        norm_num_groups=cfg.norm_groups,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type=cfg.prediction_type,
        steps_offset=1,
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet, scheduler=scheduler)


def save_pipeline_folder(components: dict, path: str | Path, card: dict | None = None) -> Path:
    """Write components as a StableDiffusionPipeline folder (model_index.json + subfolders)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer", "text_encoder", "vae", "unet", "scheduler"):
        components[name].save_pretrained(path / name)
    # transformers 5 saves only tokenizer.json; keep CLIP's own vocab.json / merges.txt beside it,
    # as SD folders have them, so older transformers (slow CLIPTokenizer) load the folder too.
    import shutil

    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / f, path / "tokenizer" / f)
    # A config saved with `_use_default_values` makes diffusers' from_config reset such keys
    # (seen: the VAE scaling_factor silently back to 0.18215); strip it so the file is the truth.
    for sub in ("vae", "unet", "scheduler"):
        cfg_file = path / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")
        data = json.loads(cfg_file.read_text())
        data.pop("_use_default_values", None)
        cfg_file.write_text(json.dumps(data, indent=2, sort_keys=True))
    # transformers loads a text encoder in the dtype its config names, diffusers a UNet in fp32:
    # weights stored in fp16 must not make the text encoder fp16 while the UNet is fp32 (a plain
    # StableDiffusionPipeline.from_pretrained would fail with "mat1 and mat2 ... Half and Float")
    te_file = path / "text_encoder" / "config.json"
    data = json.loads(te_file.read_text())
    data["dtype"] = "float32"
    te_file.write_text(json.dumps(data, indent=2, sort_keys=True))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": _version("diffusers"),
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    if card is not None:
        (path / "gcpl_build.json").write_text(json.dumps(card, indent=2))
    return path


def build_tiny_sd(path: str | Path, cfg: TinySDConfig | None = None, seed: int = 0) -> Path:
    """Random-weight tiny SD folder at `path` (the test models)."""
    cfg = cfg or TinySDConfig()
    return save_pipeline_folder(build_components(cfg, seed), path, card={"tiny_config": asdict(cfg), "seed": seed})


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)
