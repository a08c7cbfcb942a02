"""The CAD2RL value network: a CNN from the camera image to a K x K map of collision-free values.

Each output is the probability (sigmoid) that flying towards that cell of the image, and on with the
current policy, stays collision-free over the Monte Carlo horizon. The policy is `choose_action` on the
map: the best value, ties (within `tie_tol`) broken towards the centre cell, i.e. straight ahead, because
Monte Carlo labels tie often and a needless turn costs distance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ValueNet(nn.Module):
    """image (B, H, W, 3) uint8 -> values (B, K*K) in [0, 1] (logits from `forward`, probabilities from
    `values`). Four stride-2 convolutions, then two linear layers (the map needs where things are in the
    image, so the features are flattened, not pooled)."""

    def __init__(self, k: int = 3, image_size: int = 64, width: int = 32) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"ValueNet needs an image size divisible by 16, got {image_size}")
        self.k, self.image_size = k, image_size
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
        )
        side = image_size // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, 256), nn.ReLU(), nn.Linear(256, k * k))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.head(self.features(x))

    @torch.no_grad()
    def values(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(B, K*K) float values of a batch of uint8 images (numpy in, numpy out)."""
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images))
        if batch.ndim == 3:
            batch = batch[None]
        was_training = self.training
        self.eval()
        out = torch.sigmoid(self(batch)).numpy()
        self.train(was_training)
        return out


def centre_order(k: int) -> np.ndarray:
    """Action indices sorted by distance of their cell from the centre (straight first), then by index."""
    rows, cols = np.divmod(np.arange(k * k), k)
    c = (k - 1) / 2
    dist = (rows - c) ** 2 + (cols - c) ** 2
    return np.lexsort((np.arange(k * k), dist))


def choose_action(values: np.ndarray, k: int, tie_tol: float = 0.02) -> int:
    """The best cell of one value map, preferring the cell nearest the centre among those within
    `tie_tol` of the best."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    best = values.max()
    for a in centre_order(k):
        if values[a] >= best - tie_tol:
            return int(a)
    return int(values.argmax())  # unreachable: the best itself is within tolerance


def mirror_actions(k: int) -> np.ndarray:
    """Index map of the left-right mirror of the action grid (for flipped images)."""
    rows, cols = np.divmod(np.arange(k * k), k)
    return rows * k + (k - 1 - cols)


def net_config(net: ValueNet) -> dict[str, Any]:
    return {"k": net.k, "image_size": net.image_size, "width": net.features[0].out_channels}
