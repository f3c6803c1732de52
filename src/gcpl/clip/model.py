"""A frozen CLIP (transformers' `CLIPModel`) and the two tower passes every method of gcpl.clip uses.

`load_clip(model, device, dtype)` accepts a hub id (default `openai/clip-vit-base-patch16`, the
backbone of CoOp's few-shot protocol), a local folder written by `CLIPModel.save_pretrained`, or
`tiny` (the small CLIP bundled in src/gcpl/assets/tiny-clip/). Every parameter of the model is
frozen (`requires_grad=False`, eval mode); learnable things (context vectors, deep prompts,
meta-networks, cache keys, linear heads) live in separate modules, so the loaded model stays
bit-identical whatever a method trains.

Precision follows the official code (CLIP's weights in fp16 on the GPU: OpenAI's clip.load, which
CoOp's TRAINER.*.PREC "fp16" and Tip-Adapter keep; fp32 on CPU) unless `dtype` says otherwise
(`clip_dtype`); the towers run in that precision, learnable tensors and every loss stay fp32.

Image facts are read from the model, never assumed: the crop size is the vision config's
`image_size`; the resize target (shorter side) and the normalisation mean/std come from the
folder's `preprocessor_config.json` when it has one, else OpenAI CLIP's (resize = crop,
mean (0.4815, 0.4578, 0.4082), std (0.2686, 0.2613, 0.2758)).

The tower passes (`encode_text_embeds`, `encode_images`) re-implement `CLIPTextModel.forward` /
`CLIPVisionModel.forward` layer by layer on the model's own modules so that prompts can enter:
- text: token embeddings with learned context vectors substituted (CoOp), plus optional deep
  prompts that replace the context positions 1..n before layers 1..k (MaPLe, PromptSRC);
- vision: optional prompt tokens appended after the patch + position embeddings (before
  `pre_layrnorm`, as in VPT / MaPLe / IVLP), and optional deep prompts replacing them before
  layers 1..k.
Without prompts both passes equal `CLIPModel.get_text_features` / `get_image_features` (a test
checks this).
"""

from __future__ import annotations

import json
import logging
import operator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import hub_reachable, offline, resolve_device, resolve_dtype, unreachable_message
from ..errors import GcplError

log = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_CLIP_DIR = ASSETS / "tiny-clip"
TOKENIZER_ASSET = ASSETS / "clip-tokenizer"  # OpenAI CLIP's BPE (the same for every CLIP model)
TINY_NAMES = ("tiny", "bundled")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSpec:
    """How a CLIP wants its pixels: shorter side -> `resize` (bicubic), centre crop `size`, then
    (x / 255 - mean) / std per channel."""

    size: int
    resize: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD


def _model_fact(path: str, count: bool = False) -> property:
    """A read-only int fact of the wrapped CLIPModel: model.<path>, or how many items it holds."""
    get = operator.attrgetter(path)

    def fact(self: Clip) -> int:
        value = get(self.model)
        return len(value) if count else int(value)

    return property(fact)


@dataclass
class Clip:
    """A frozen CLIPModel, its tokenizer and the facts the methods need."""

    model_id: str
    model: torch.nn.Module  # transformers CLIPModel, frozen, eval mode
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    spec: ImageSpec
    scale: float | None = None  # exp(logit_scale) read in fp32 before any cast (None: from the model)

    # --- facts ---------------------------------------------------------------------------------
    text_width = _model_fact("config.text_config.hidden_size")
    vision_width = _model_fact("config.vision_config.hidden_size")
    embed_dim = _model_fact("config.projection_dim")
    text_layers = _model_fact("text_model.encoder.layers", count=True)
    vision_layers = _model_fact("vision_model.encoder.layers", count=True)
    context_length = _model_fact("config.text_config.max_position_embeddings")

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the checkpoint (100 for OpenAI's; Tip-Adapter's code writes 100), read
        in fp32 (bf16 would round OpenAI's 4.6052 to 4.594, a temperature of 98.9)."""
        if self.scale is not None:
            return self.scale
        return float(self.model.logit_scale.detach().float().exp().item())

    def describe(self) -> dict:
        return {
            "model": self.model_id, "device": str(self.device), "dtype": _dtype_name(self.dtype),
            "image_size": self.spec.size, "resize": self.spec.resize, "mean": list(self.spec.mean),
            "std": list(self.spec.std), "embed_dim": self.embed_dim, "text_width": self.text_width,
            "vision_width": self.vision_width, "text_layers": self.text_layers,
            "vision_layers": self.vision_layers, "logit_scale": self.logit_scale,
        }

    # --- text ----------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(N, context_length) token ids: SOS, BPE, EOS, padded with the pad token."""
        enc = self.tokenizer(list(texts), padding="max_length", max_length=self.context_length, truncation=True,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device)

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L, D) fp32 token embeddings (no positions) of token ids."""
        with torch.no_grad():
            return self.model.text_model.embeddings.token_embedding(ids.to(self.device)).float()

    def eos_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Where CLIPTextModel pools: the first EOS token (the highest id for legacy configs)."""
        eos = self.model.text_model.eos_token_id
        if eos == 2:  # configs written before transformers PR #24773: EOS is the largest id
            return ids.argmax(dim=-1)
        return (ids == eos).int().argmax(dim=-1)

    def encode_text_embeds(self, embeds: torch.Tensor, ids: torch.Tensor,
                           deep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Projected text features (N, E), fp32, not normalised, of token embeddings `embeds`
        (N, L, D) whose pooling positions come from `ids` (N, L). `deep[i-1]` ((n, D) or (N, n, D))
        replaces positions 1..n of the hidden states before layer i, for i = 1..len(deep)."""
        tm = self.model.text_model
        n, length = embeds.shape[0], embeds.shape[1]
        pos = tm.embeddings.position_embedding(tm.embeddings.position_ids[:, :length])
        x = embeds.to(self.dtype) + pos
        mask = torch.full((length, length), torch.finfo(self.dtype).min, device=self.device, dtype=self.dtype)
        mask = mask.triu(1)[None, None]
        deep = list(deep or [])
        if len(deep) >= len(tm.encoder.layers):
            raise GcplError(f"{len(deep)} deep text prompts for a text tower of {len(tm.encoder.layers)} layers")
        for i, layer in enumerate(tm.encoder.layers):
            if 1 <= i <= len(deep):
                p = deep[i - 1].to(self.dtype)
                k = p.shape[-2]
                p = p.expand(n, -1, -1) if p.dim() == 2 else p
                x = torch.cat([x[:, :1], p, x[:, 1 + k:]], dim=1)
            x = layer(x, mask)
        x = tm.final_layer_norm(x)
        pooled = x[torch.arange(n, device=x.device), self.eos_positions(ids).to(x.device)]
        return self.model.text_projection(pooled).float()

    def encode_texts(self, texts: list[str], batch: int = 256) -> torch.Tensor:
        """Projected features (N, E), fp32, not normalised, of plain texts."""
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch):
                ids = self.tokenize(texts[i : i + batch])
                out.append(self.encode_text_embeds(self.token_embeddings(ids), ids))
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    # --- images --------------------------------------------------------------------------------
    def encode_images(self, pixels: torch.Tensor, prompts: torch.Tensor | None = None,
                      deep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Projected image features (B, E), fp32, not normalised, of normalised pixels (B, 3, S, S).
        `prompts` (n, W) or (B, n, W) are appended after the embeddings (before pre_layrnorm);
        `deep[i-1]` replaces those n tokens before layer i, i = 1..len(deep)."""
        vm = self.model.vision_model
        x = vm.embeddings(pixels.to(self.device, self.dtype))
        b = x.shape[0]
        k = 0
        if prompts is not None:
            p = prompts.to(self.dtype)
            k = p.shape[-2]
            x = torch.cat([x, p.expand(b, -1, -1) if p.dim() == 2 else p], dim=1)
        deep = list(deep or [])
        if deep and prompts is None:
            raise GcplError("deep vision prompts need input-level vision prompts")
        if len(deep) >= len(vm.encoder.layers):
            raise GcplError(f"{len(deep)} deep vision prompts for a vision tower of {len(vm.encoder.layers)} layers")
        x = vm.pre_layrnorm(x)
        for i, layer in enumerate(vm.encoder.layers):
            if 1 <= i <= len(deep):
                p = deep[i - 1].to(self.dtype)
                p = p.expand(b, -1, -1) if p.dim() == 2 else p
                x = torch.cat([x[:, : x.shape[1] - k], p], dim=1)
            x = layer(x, None)
        pooled = vm.post_layernorm(x[:, 0])
        return self.model.visual_projection(pooled).float()


# ----------------------------------------------------------------------------- loading


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def resolve_clip_path(model: str | None) -> str:
    """`tiny`/`bundled` (and None when offline, as for the diffusion model) -> the bundled folder (a
    one-line error when it is missing); None -> DEFAULT_CLIP_MODEL; others pass."""
    model = model or ("tiny" if offline() else DEFAULT_CLIP_MODEL)
    if model in TINY_NAMES:
        if not (TINY_CLIP_DIR / "config.json").is_file():
            raise GcplError(f"the bundled tiny CLIP is missing from {TINY_CLIP_DIR}; give --model a CLIPModel folder "
                            f"or a hub id (e.g. {DEFAULT_CLIP_MODEL})")
        return str(TINY_CLIP_DIR)
    return model


def image_spec(path: str, config) -> ImageSpec:
    """The model's crop size, resize target and mean/std (preprocessor_config.json when present)."""
    size = int(config.vision_config.image_size)
    resize, mean, std = size, OPENAI_MEAN, OPENAI_STD
    pre = _preprocessor_config(path)
    if pre:
        s = pre.get("size")
        if isinstance(s, dict) and "shortest_edge" in s:
            resize = int(s["shortest_edge"])
        elif isinstance(s, int):
            resize = int(s)
        if pre.get("image_mean") and len(pre["image_mean"]) == 3:
            mean = tuple(float(v) for v in pre["image_mean"])
        if pre.get("image_std") and len(pre["image_std"]) == 3:
            std = tuple(float(v) for v in pre["image_std"])
    return ImageSpec(size=size, resize=max(resize, size), mean=mean, std=std)


def _preprocessor_config(path: str) -> dict | None:
    local = Path(path) / "preprocessor_config.json"
    if local.is_file():
        try:
            return json.loads(local.read_text())
        except (OSError, ValueError):
            return None
    if Path(path).exists():
        return None
    try:  # a hub id: the file from the local cache (or the hub when online)
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "preprocessor_config.json")).read_text())
    except Exception:  # noqa: BLE001 - optional file: fall back to OpenAI CLIP's numbers
        return None


def _load_tokenizer(path: str, **load_kw):
    from transformers import CLIPTokenizer

    for where, kw in ((path, {}), (path, {"subfolder": "tokenizer"})):
        try:
            return CLIPTokenizer.from_pretrained(where, **kw, **load_kw)
        except Exception as e:  # noqa: BLE001 - try the next place
            log.debug("no CLIP tokenizer at %s %s (%s)", where, kw, e)
    log.info("no tokenizer files with %s; using OpenAI CLIP's BPE bundled with gcpl", path)
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_ASSET))


def clip_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The towers' precision: `name`, else fp16 on CUDA (the official code's: KaiyangZhou/CoOp
    train.py:94, gaopengcuhk/Tip-Adapter clip/model.py:430) and fp32 elsewhere (clip/clip.py:135)."""
    return resolve_dtype(name or ("fp16" if device.type == "cuda" else "fp32"), device)


def load_clip(model: str | None = None, device: str | None = None, dtype: str | None = None) -> Clip:
    """Load a frozen CLIPModel (hub id, local folder or `tiny`) with its tokenizer and image facts."""
    from transformers import CLIPModel

    path = resolve_clip_path(model)
    dev = resolve_device(device)
    dt = clip_dtype(dtype, dev)
    kw = {"local_files_only": True} if not Path(path).exists() and not offline() and not hub_reachable() else {}
    try:
        net = CLIPModel.from_pretrained(path, dtype=torch.float32, **kw)
    except (OSError, ValueError) as e:
        if kw:
            raise GcplError(unreachable_message(path)) from None
        hint = " (HF_HUB_OFFLINE is set and it is not in the local cache)" if offline() and not Path(path).exists() else ""
        msg = " ".join(str(e).split())[:300]
        raise GcplError(f"cannot load a CLIPModel from {path}{hint}: {msg}; give a hub id, a CLIPModel folder "
                        "or 'tiny'") from None
    scale = float(net.logit_scale.detach().exp().item())
    net = net.to(device=dev, dtype=dt).eval()
    net.requires_grad_(False)
    vocab = int(net.config.text_config.vocab_size)
    tok = _load_tokenizer(path, **kw)
    if len(tok) > vocab:
        raise GcplError(f"the tokenizer of {path} has {len(tok)} tokens but the text tower only {vocab}")
    return Clip(model_id=str(model or path), model=net, tokenizer=tok, device=dev, dtype=dt,
                spec=image_spec(path, net.config), scale=scale)


def frozen_state(clip: Clip) -> dict[str, torch.Tensor]:
    """A copy of every tensor of the frozen model (tests: bit-identical before and after training)."""
    return {k: v.detach().clone() for k, v in clip.model.state_dict().items()}
