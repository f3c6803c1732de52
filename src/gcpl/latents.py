"""Encode images once to VAE latent distributions, so no VAE runs inside training or scoring."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LatentStats:
    """Per-image latent distribution, unscaled, fp32 on CPU.

    mean, std: (N, V, C, h, w) with V = 2 views (original, horizontal flip) or 1.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __len__(self) -> int:
        return self.mean.shape[0]

    def subset(self, idx) -> "LatentStats":
        return LatentStats(self.mean[idx], self.std[idx])

    def sample(self, idx: torch.Tensor, view: torch.Tensor, z: torch.Tensor, scaling_factor: float) -> torch.Tensor:
        """Scaled latents mean + std * z (SD samples the latent distribution each step)."""
        return (self.mean[idx, view] + self.std[idx, view] * z) * scaling_factor


@torch.no_grad()
def encode(vae, pixels: torch.Tensor, batch: int = 16, flip: bool = False) -> LatentStats:
    """pixels (N, 3, H, W) in [-1, 1] -> LatentStats; with flip, also the mirrored images."""
    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    means, stds = [], []
    for i in range(0, pixels.shape[0], batch):
        x = pixels[i : i + batch]
        views = [x, x.flip(-1)] if flip else [x]
        m, s = [], []
        for v in views:
            dist = vae.encode(v.to(device, dtype)).latent_dist
            m.append(dist.mean.float().cpu())
            s.append(dist.std.float().cpu())
        means.append(torch.stack(m, 1))
        stds.append(torch.stack(s, 1))
    return LatentStats(torch.cat(means), torch.cat(stds))



def encode_files(vae, paths: list[str], size: int, flip: bool = False, strict: bool = False, chunk: int = 64,
                 resize: str = "crop"):
    """Read, preprocess and encode image files in chunks, so memory stays bounded for large
    support sets (3,136 Cars shots at 512 px would be 10 GB of pixels at once).

    Returns (LatentStats of the readable images, kept indices into paths, skipped (path, reason))."""
    from .data.images import load_batch

    stats, kept, skipped = [], [], []
    for i in range(0, len(paths), chunk):
        loaded = load_batch(paths[i : i + chunk], size, strict=strict, allow_empty=True, resize=resize)
        skipped += loaded.skipped
        if loaded.kept:
            kept += [i + k for k in loaded.kept]
            stats.append(encode(vae, loaded.pixels, flip=flip))
    if not stats:
        from .errors import GcplError

        raise GcplError(f"none of the {len(paths)} images could be read")
    return LatentStats(torch.cat([s.mean for s in stats]), torch.cat([s.std for s in stats])), kept, skipped
