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
    """image (B, H, W, 3 * frames) uint8 -> values (B, K*K) in [0, 1] (logits from `forward`, probabilities from
    `values`). With `frames=2` the input is the previous camera image and the current one stacked on the
    channel axis (`stack_frames`). Four stride-2 convolutions, then two linear layers (the map needs where
    things are in the image, so the features are flattened, not pooled).

    `aux_depth` adds a second head on the hidden layer that predicts the coarse log-depth map of the image
    (`DEPTH_SIDE` x `DEPTH_SIDE`, see `coarse_depth`): an auxiliary training target from the simulator's
    depth buffer that shapes the features towards geometry. The policy never reads it."""

    def __init__(self, k: int = 3, image_size: int = 64, width: int = 32, aux_depth: bool = False,
                 frames: int = 1) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"ValueNet needs an image size divisible by 16, got {image_size}")
        if frames not in (1, 2):
            raise ValueError(f"ValueNet reads 1 or 2 camera frames, got {frames}")
        self.k, self.image_size, self.frames = k, image_size, frames
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3 * frames, w, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
        )
        side = image_size // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, 256), nn.ReLU(), nn.Linear(256, k * k))
        self.depth_head = nn.Linear(256, DEPTH_SIDE * DEPTH_SIDE) if aux_depth else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_all(images)[0]

    def forward_all(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(value logits (B, K*K), predicted coarse log-depth (B, DEPTH_SIDE, DEPTH_SIDE) or None)."""
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        flat, linear, relu, out = self.head  # indexed, not sliced: a slice builds a new module every call
        hidden = relu(linear(flat(self.features(x))))
        logits = out(hidden)
        if self.depth_head is None:
            return logits, None
        return logits, self.depth_head(hidden).view(-1, DEPTH_SIDE, DEPTH_SIDE)

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


DEPTH_SIDE = 8
"""Side of the coarse depth map of the auxiliary target."""


def coarse_depth(depth: np.ndarray, side: int = DEPTH_SIDE, near_m: float = 0.1, far_m: float = 10.0) -> np.ndarray:
    """(side, side) float32 log of the nearest metric depth in each patch of a depth buffer (clipped to
    [near_m, far_m]): what the auxiliary head learns to predict. The buffer's size must be a multiple of `side`."""
    h, w = depth.shape
    if h % side or w % side:
        raise ValueError(f"a {h}x{w} depth buffer does not split into {side}x{side} patches")
    patches = depth.reshape(side, h // side, side, w // side).min(axis=(1, 3))
    return np.log(np.clip(patches, near_m, far_m)).astype(np.float32)


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


def choice_targets(labels: np.ndarray, k: int, tie_tol: float = 0.02) -> np.ndarray:
    """(N, K*K) target distributions over the move `choose_action` would make on each label map: among the
    cells within `tie_tol` of the best, those nearest the centre, shared equally (so a map where left and
    right tie at the best teaches both halves, and mirrored maps teach the mirrored move)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(len(labels), k * k)
    rows, cols = np.divmod(np.arange(k * k), k)
    c = (k - 1) / 2
    dist = (rows - c) ** 2 + (cols - c) ** 2
    tied = labels >= labels.max(axis=1, keepdims=True) - tie_tol
    near = np.where(tied, dist[None, :], np.inf)
    chosen = near <= near.min(axis=1, keepdims=True)
    return (chosen / chosen.sum(axis=1, keepdims=True)).astype(np.float32)


def mirror_actions(k: int) -> np.ndarray:
    """Index map of the left-right mirror of the action grid (for flipped images)."""
    rows, cols = np.divmod(np.arange(k * k), k)
    return rows * k + (k - 1 - cols)


class ValueEnsemble(nn.Module):
    """Several `ValueNet`s of one shape, each fitted on the same labels from its own initialisation and batch
    order; the map is the mean of their values: where the members' errors are independent, the mean misjudges
    less often (measured with cautious teacher labels, three members flew no farther than one network: members
    that share every label share most of their errors; docs/results.md). It offers what
    callers of a `ValueNet`'s policy read (`k`, `image_size`, `frames`, `values`); `members` are what `mc.fit`
    trains, one at a time."""

    def __init__(self, members: int, **net: Any) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"a ValueEnsemble needs at least 2 members, got {members} (use a ValueNet)")
        self.members = nn.ModuleList(ValueNet(**net) for _ in range(members))
        first = self.members[0]
        self.k, self.image_size, self.frames = first.k, first.image_size, first.frames

    @staticmethod
    def of(nets: list[AnyValueNet]) -> ValueEnsemble:
        """An ensemble of networks trained elsewhere (e.g. the final networks of several runs; an ensemble among
        them gives all its members), which must share their configuration (`net_config`)."""
        nets = [m for n in nets for m in members_of(n)]
        configs = [net_config(n) for n in nets]
        if any(c != configs[0] for c in configs):
            raise ValueError(f"an ensemble's networks must share their configuration, got {configs}")
        ensemble = ValueEnsemble(len(nets), **configs[0])
        for member, net in zip(ensemble.members, nets, strict=True):
            member.load_state_dict(net.state_dict())
        return ensemble.eval()

    @torch.no_grad()
    def values(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(B, K*K) mean over the members of their values (`ValueNet.values`)."""
        return np.mean([m.values(images) for m in self.members], axis=0)


AnyValueNet = ValueNet | ValueEnsemble
"""What a flight policy reads: one value network or an ensemble of them."""


def members_of(net: AnyValueNet) -> list[ValueNet]:
    """The networks to fit: an ensemble's members, or the one network."""
    return list(net.members) if isinstance(net, ValueEnsemble) else [net]


def build_value_net(members: int = 1, **net: Any) -> AnyValueNet:
    """A `ValueNet`, or with `members` > 1 a `ValueEnsemble` of that many (what `net_config` describes)."""
    return ValueEnsemble(members, **net) if members > 1 else ValueNet(**net)


def net_config(net: AnyValueNet) -> dict[str, Any]:
    """The keyword arguments of `build_value_net` that rebuild `net` (saved with a policy)."""
    one = members_of(net)
    first = one[0]
    config = {"k": first.k, "image_size": first.image_size, "width": first.features[0].out_channels,
              "aux_depth": first.depth_head is not None, "frames": first.frames}
    return {**config, "members": len(one)} if len(one) > 1 else config


def stack_frames(previous: np.ndarray | None, current: np.ndarray, frames: int) -> np.ndarray:
    """What a `frames`-frame network reads: the current (H, W, 3) image, or with 2 frames the previous one and
    the current one stacked to (H, W, 6). The first image of a flight has no predecessor and is paired with
    itself (no motion seen yet)."""
    if frames == 1:
        return current
    return np.concatenate([current if previous is None else previous, current], axis=-1)
