"""Checkpoints: one safetensors file per snapshot, tensors plus a JSON `meta` dict in its header,
written atomically (a crash leaves the previous snapshot whole; never a pickle).

    save(path, {"vectors": v, **optimizer_tensors(opt)[0]}, {"step": 100})
    tensors, meta = load(path)

Used by class-token training (gcpl.trainer) and by the pretraining tools (tools/pretraining).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .io import atomic_write_bytes, write_json

_META_KEY = "gcpl"


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save as to_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, to_bytes(tensors, metadata={_META_KEY: json.dumps(meta)}))


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def read_meta(path: str | Path) -> dict | None:
    """The meta dict of a snapshot (header only, no tensors read); None when there is none."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
    except (OSError, ValueError):
        return None


# --- what goes into a snapshot --------------------------------------------------------------------


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_module(module: torch.nn.Module, prefix: str, tensors: dict) -> None:
    sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    module.load_state_dict(sd, strict=True)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "optim") -> tuple[dict, list]:
    """(tensors "<prefix>.<param id>.<name>", param_groups as JSON) of an optimizer's state."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{prefix}.{pid}.{k}"] = t.detach().cpu()
    return tensors, json.loads(json.dumps(sd["param_groups"]))


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list, prefix: str = "optim") -> None:
    state: dict = {}
    device = opt.param_groups[0]["params"][0].device
    for key, t in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        pid, k = key[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(pid), {})[k] = t if k == "step" else t.to(device)
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def generator_tensors(generators: list[torch.Generator], prefix: str = "rng") -> dict[str, torch.Tensor]:
    return {f"{prefix}.{i}": g.get_state() for i, g in enumerate(generators)}


def load_generators(generators: list[torch.Generator], tensors: dict, prefix: str = "rng") -> None:
    for i, g in enumerate(generators):
        g.set_state(tensors[f"{prefix}.{i}"])


# --- a folder of rotating snapshots (long runs) ---------------------------------------------------


def save_rotating(folder: str | Path, name: str, tensors: dict, meta: dict, keep=None) -> Path:
    """folder/<name>.safetensors, then folder/latest.json points at it (atomically). `keep(names)`
    returns the older snapshot names to delete (None: keep all)."""
    folder = Path(folder)
    path = folder / f"{name}.safetensors"
    save(path, tensors, meta)
    write_json(folder / "latest.json", {"checkpoint": name})
    if keep is not None:
        names = sorted(p.stem for p in folder.glob("*.safetensors") if not p.name.startswith("."))
        for old in keep(names):
            if old != name:
                (folder / f"{old}.safetensors").unlink(missing_ok=True)
    return path


def latest(folder: str | Path) -> Path | None:
    pointer = Path(folder) / "latest.json"
    if not pointer.exists():
        return None
    return Path(folder) / f"{json.loads(pointer.read_text())['checkpoint']}.safetensors"
