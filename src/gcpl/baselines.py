"""Simple few-shot baselines computed on the same shots: what a diffusion method must beat.

- pixel 1-nearest-neighbour (L2 on raw pixels) with the horizontally flipped shots added;
- nearest class mean of the VAE latent means (the diffusion model's own image encoding).
"""

from __future__ import annotations

import torch


def nearest_neighbour(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """1-NN in L2 over flattened features: (N, ...) and (M, ...) -> (M,) predicted labels."""
    d = torch.cdist(test.flatten(1).double(), train.flatten(1).double())
    return train_labels[d.argmin(1)]


def nearest_class_mean(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                       n_classes: int) -> torch.Tensor:
    feats = train.flatten(1).double()
    means = torch.stack([feats[train_labels == c].mean(0) for c in range(n_classes)])
    return torch.cdist(test.flatten(1).double(), means).argmin(1)


def pixel_nn_with_flips(train_pixels, train_labels, test_pixels) -> torch.Tensor:
    """(N, 3, H, W) shots (+ their mirror images) -> labels of the nearest shot for each test image."""
    shots = torch.cat([train_pixels, train_pixels.flip(-1)])
    return nearest_neighbour(shots, torch.cat([train_labels, train_labels]), test_pixels)
