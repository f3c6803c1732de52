"""Learnable prompts around a frozen CLIP: every tensor here is trainable, the CLIP never is.

- `TextPrompts`: CoOp's prompt learner. Each class's prompt is the text "<prefix> <class name>."
  tokenized once; positions 1..n (after SOS) hold the learnable context vectors, the rest (class
  name, ".", EOS, padding) stay the frozen token embeddings. `<prefix>` is `ctx_init` when the
  context is initialised from words (its first n tokens become the initial vectors, the words
  after them stay fixed text, as in MaPLe and PromptSRC's code), else n placeholder "X" tokens
  with vectors drawn from N(0, 0.02^2) (CoOp). `csc`: one context per class (CoOp's CSC).
  `deep`: extra (n, D) context tensors, one per text layer 1..k, that replace positions 1..n of
  the hidden states before that layer (MaPLe's compound text prompts, PromptSRC/IVLP's deep
  language prompts), drawn from N(0, 0.02^2).
- `VisionPrompts`: PromptSRC's (IVLP) independent vision prompts: n tokens appended to the
  patch sequence before pre_layrnorm, and one (n, W) tensor per vision layer 1..k replacing them.
- `MapleCoupling`: MaPLe's coupling function: linear maps from the text width to the vision
  width that turn the language context (layer 0) and each deep language prompt (layers 1..k)
  into the vision prompts of the same layer; the deep maps start as copies of one initial map
  (as `_get_clones` does in MaPLe's code), the layer-0 map has its own initialisation.
- `MetaNet`: CoCoOp's meta-network Linear(E, E/16) -> ReLU -> Linear(E/16, D) on the image
  feature; its output shifts every context vector of that image's prompts.

Every initial value is drawn from a torch.Generator passed in, so a seed fixes the run.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import GcplError
from .model import Clip

INIT_STD = 0.02  # CoOp, MaPLe, PromptSRC: nn.init.normal_(std=0.02) for random prompt vectors


def normal(shape, g: torch.Generator, std: float = INIT_STD) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * std


def linear(fan_in: int, fan_out: int, g: torch.Generator) -> nn.Linear:
    """nn.Linear with PyTorch's default initialisation (U(+-1/sqrt(fan_in)) for weight and bias),
    drawn from `g`."""
    layer = nn.Linear(fan_in, fan_out)
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(fan_out, generator=g) * 2 - 1) * bound)
    return layer


def prompt_texts(prefix: str, classes: list[str]) -> list[str]:
    """The tokenized text of each class's learnable prompt (CoOp: prompt_prefix + " " + name + ".")."""
    return [f"{prefix} {name}." for name in classes]


class TextPrompts(nn.Module):
    """Context vectors (and optional deep prompts) of the text tower for a fixed list of classes."""

    def __init__(self, clip: Clip, classes: list[str], n_ctx: int | None, ctx_init: str = "", csc: bool = False,
                 deep: int = 0, generator: torch.Generator | None = None):
        super().__init__()
        g = generator or torch.Generator().manual_seed(0)
        init_ids: list[int] = []
        if ctx_init:
            init_ids = clip.tokenizer(ctx_init, add_special_tokens=False)["input_ids"]
        if n_ctx is None:
            if not init_ids:
                raise GcplError("give the number of context vectors or the words that initialise them")
            n_ctx = len(init_ids)
        if n_ctx < 1:
            raise GcplError(f"the number of context vectors must be at least 1, got {n_ctx}")
        use_init = bool(init_ids) and n_ctx <= len(init_ids)
        self.prefix_text = ctx_init if use_init else " ".join(["X"] * n_ctx)
        self.n_ctx, self.n_cls, self.csc = n_ctx, len(classes), csc
        ids = clip.tokenize(prompt_texts(self.prefix_text, classes))
        emb = clip.token_embeddings(ids)  # (C, L, D) fp32, frozen
        width = emb.shape[-1]
        self.register_buffer("ids", ids, persistent=False)
        self.register_buffer("prefix", emb[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer("suffix", emb[:, 1 + n_ctx:].clone(), persistent=False)  # rest of the prompt
        if use_init:
            ctx = emb[0, 1 : 1 + n_ctx].clone()  # the init words as they sit in the prompt
            if csc:
                ctx = ctx.unsqueeze(0).repeat(self.n_cls, 1, 1)
        else:
            ctx = normal((self.n_cls, n_ctx, width) if csc else (n_ctx, width), g)
        self.initialised_from = ctx_init if use_init else None
        self.ctx = nn.Parameter(ctx.to(clip.device))
        self.deep = nn.ParameterList([nn.Parameter(normal((n_ctx, width), g).to(clip.device)) for _ in range(deep)])

    def facts(self) -> dict:
        """What a run records of these prompts: context vectors, the words they started from, the prompt."""
        return {"n_ctx": self.n_ctx, "ctx_init": self.initialised_from, "prompt": self.prefix_text + " {}."}

    def embeds(self) -> torch.Tensor:
        """(C, L, D) prompt token embeddings with the learned context."""
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.prefix, ctx, self.suffix], dim=1)

    def embeds_per_image(self, ctx: torch.Tensor) -> torch.Tensor:
        """(B, C, L, D) prompt token embeddings of per-image contexts `ctx` (B, n, D) (CoCoOp)."""
        b = ctx.shape[0]
        pre = self.prefix.unsqueeze(0).expand(b, -1, -1, -1)
        suf = self.suffix.unsqueeze(0).expand(b, -1, -1, -1)
        return torch.cat([pre, ctx.unsqueeze(1).expand(-1, self.n_cls, -1, -1), suf], dim=2)

    def features(self, clip: Clip, deep: bool = True) -> torch.Tensor:
        """(C, E) projected text features (not normalised) of the learned prompts."""
        return clip.encode_text_embeds(self.embeds(), self.ids, list(self.deep) if deep and len(self.deep) else None)

    def features_per_image(self, clip: Clip, ctx: torch.Tensor) -> torch.Tensor:
        """(B, C, E) text features (not normalised) of per-image contexts `ctx` (B, n, D) (CoCoOp)."""
        b = ctx.shape[0]
        e = self.embeds_per_image(ctx).reshape(b * self.n_cls, self.ids.shape[1], -1)
        return clip.encode_text_embeds(e, self.ids.repeat(b, 1)).view(b, self.n_cls, -1)


class VisionPrompts(nn.Module):
    """n learnable tokens at the vision tower's input and one (n, W) set per deep layer 1..k."""

    def __init__(self, width: int, n_ctx: int, deep: int, generator: torch.Generator, device=None):
        super().__init__()
        if n_ctx < 1:
            raise GcplError(f"the number of vision prompt tokens must be at least 1, got {n_ctx}")
        self.shallow = nn.Parameter(normal((n_ctx, width), generator).to(device))
        self.deep = nn.ParameterList([nn.Parameter(normal((n_ctx, width), generator).to(device)) for _ in range(deep)])


class MapleCoupling(nn.Module):
    """MaPLe's coupling: vision prompt of layer j = F_j(language prompt of layer j), F_j linear
    (text width -> vision width), for j = 0 (the context vectors) and every deep layer 1..k."""

    def __init__(self, text_width: int, vision_width: int, deep: int, generator: torch.Generator, device=None):
        super().__init__()
        self.proj = linear(text_width, vision_width, generator)
        template = linear(text_width, vision_width, generator)
        self.deep_proj = nn.ModuleList()
        for _ in range(deep):
            layer = nn.Linear(text_width, vision_width)
            layer.load_state_dict(template.state_dict())
            self.deep_proj.append(layer)
        self.to(device)

    def forward(self, ctx: torch.Tensor, deep_text: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if len(deep_text) != len(self.deep_proj):
            raise GcplError(f"{len(deep_text)} deep language prompts for {len(self.deep_proj)} coupling maps")
        return self.proj(ctx), [f(p) for f, p in zip(self.deep_proj, deep_text)]


class MetaNet(nn.Module):
    """CoCoOp's meta-network: Linear(E, E // 16) -> ReLU -> Linear(E // 16, D)."""

    def __init__(self, embed_dim: int, ctx_width: int, generator: torch.Generator, device=None):
        super().__init__()
        hidden = max(1, embed_dim // 16)
        self.linear1 = linear(embed_dim, hidden, generator)
        self.linear2 = linear(hidden, ctx_width, generator)
        self.to(device)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(image_features)))
