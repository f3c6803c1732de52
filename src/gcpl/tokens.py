"""Class tokens: one learnable embedding row per class inside a fixed prompt template.

Design: the CLIP token table is never modified during training. The template is tokenized once
with a stand-in word in the class slot; at encode time a forward hook on the token-embedding
layer swaps the slot's row for each class's learnable vector. Gradients therefore reach only the
(C, D) class matrix, and every frozen weight stays bit-identical by construction. For use in
diffusers the vectors are written out in the textual-inversion format (one file per class,
`{token: tensor[1, D]}`) that `StableDiffusionPipeline.load_textual_inversion` reads, or installed
as real tokens with `install_tokens`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import GcplError


def check_template(template: str) -> str:
    """A prompt template with exactly one {} where the class goes and no other braces (they would
    break str.format), else a one-line GcplError."""
    rest = template.replace("{}", "") if isinstance(template, str) else "{"
    if not isinstance(template, str) or template.count("{}") != 1 or "{" in rest or "}" in rest:
        raise GcplError(
            f"template {template!r} must contain exactly one {{}} where the class goes (and no other braces), "
            "e.g. 'A photo of {}, a type of car.'"
        )
    return template


def single_token_id(tokenizer, word: str) -> int:
    """The id of `word` if the tokenizer maps it to exactly one token, else a GcplError."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise GcplError(
            f"initializer word {word!r} is {len(ids)} tokens ({' '.join(pieces)}), it must be a single "
            "token; pick a simpler word such as 'car', 'flower' or 'object'"
        )
    return ids[0]


def token_names(class_names: list[str], tokenizer) -> list[str]:
    """`<gcpl-acura-rl-2012>`-style token strings: sanitised, unique, never in the vocabulary."""
    vocab = set(tokenizer.get_vocab())
    out, seen = [], set()
    for name in class_names:
        stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "class"
        base = f"<gcpl-{stem[:48]}>"
        tok, k = base, 2
        while tok in seen or tok in vocab:
            tok = f"{base[:-1]}-{k}>"
            k += 1
        seen.add(tok)
        out.append(tok)
    return out


@dataclass
class PromptSlot:
    """The tokenized template with the position of the class slot."""

    input_ids: torch.Tensor  # (L,) int64, padded to the tokenizer's max length
    position: int  # index of the class slot in input_ids

    @classmethod
    def from_template(cls, tokenizer, template: str, init_word: str) -> "PromptSlot":
        check_template(template)
        init_id = single_token_id(tokenizer, init_word)

        def ids(word: str) -> torch.Tensor:
            return tokenizer(
                template.format(word), padding="max_length", truncation=True,
                max_length=tokenizer.model_max_length, return_tensors="pt",
            ).input_ids[0]

        # Two different single-token words in the slot differ at exactly the slot position.
        other = "dog" if init_word != "dog" else "cat"
        a, b = ids(init_word), ids(other)
        diff = (a != b).nonzero().flatten().tolist()
        if len(diff) != 1 or a[diff[0]] != init_id:
            raise GcplError(
                f"could not locate the class slot of template {template!r} after tokenization "
                "(is it longer than the text encoder's 77 tokens?)"
            )
        return cls(a, diff[0])


@contextmanager
def slot_override(text_encoder, position: int, vectors: torch.Tensor):
    """Inside the block, the token embedding at `position` of row i is `vectors[i]` (B, D)."""
    emb = text_encoder.get_input_embeddings()

    def hook(module, args, output):  # output: (B, L, D)
        v = vectors.to(output.dtype)[:, None, :]
        return torch.cat([output[:, :position], v, output[:, position + 1 :]], dim=1)

    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_slot_prompts(text_encoder, slot: PromptSlot, vectors: torch.Tensor) -> torch.Tensor:
    """(C, D) class vectors -> (C, L, D) prompt embeddings (the text encoder's last hidden state)."""
    ids = slot.input_ids.to(vectors.device).expand(vectors.shape[0], -1)
    with slot_override(text_encoder, slot.position, vectors):
        return text_encoder(ids)[0]


def encode_prompts(tokenizer, text_encoder, prompts: list[str], batch: int = 64) -> torch.Tensor:
    """Plain prompts -> (N, L, D) (zero-shot class prompts)."""
    device = next(text_encoder.parameters()).device
    out = []
    for i in range(0, len(prompts), batch):
        ids = tokenizer(
            prompts[i : i + batch], padding="max_length", truncation=True,
            max_length=tokenizer.model_max_length, return_tensors="pt",
        ).input_ids.to(device)
        out.append(text_encoder(ids)[0])
    return torch.cat(out)


def init_vectors(text_encoder, init_id: int, n: int) -> torch.Tensor:
    """(n, D) fp32 copies of the initializer word's embedding row."""
    row = text_encoder.get_input_embeddings().weight[init_id].detach().float()
    return row.expand(n, -1).clone()


# --- diffusers textual-inversion files ---------------------------------------------------------


def save_embedding_file(path: str | Path, token: str, vector: torch.Tensor) -> None:
    """Write `{token: tensor[1, D]}` (fp32) atomically."""
    from safetensors.torch import save

    from .io import atomic_write_bytes

    atomic_write_bytes(path, save({token: vector.detach().float().cpu().reshape(1, -1).contiguous()}))


def load_embedding_file(path: str | Path, hidden_size: int) -> tuple[str, torch.Tensor]:
    """Read a one-token textual-inversion file; the width must match the text encoder."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise GcplError(f"embedding file {path} does not exist")
    try:
        data = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad header
        raise GcplError(f"embedding file {path} is not a readable safetensors file ({e})") from None
    if len(data) != 1:
        raise GcplError(f"embedding file {path} must hold exactly one token, found {len(data)}")
    (token, t), = data.items()
    vec = t.reshape(-1, t.shape[-1])
    if vec.shape != (1, hidden_size):
        raise GcplError(
            f"embedding file {path} holds a vector of shape {tuple(t.shape)} but this text encoder needs "
            f"[1, {hidden_size}]: it was learned on another model; use the model it was trained with"
        )
    return token, vec[0].float()


def install_tokens(tokenizer, text_encoder, tokens: list[str], vectors: torch.Tensor) -> list[int]:
    """Add tokens to the tokenizer and their rows to the embedding table (for generation)."""
    added = tokenizer.add_tokens(tokens)
    if added != len(tokens):
        raise GcplError("some class tokens already exist in this tokenizer; load a fresh tokenizer")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the new rows are set below
    ids = tokenizer.convert_tokens_to_ids(tokens)
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[ids] = vectors.to(text_encoder.dtype)
    return ids
