"""DAPO's sampling-side tricks (Yu et al. 2025): dynamic sampling and soft overlong punishment."""

from __future__ import annotations

import torch
from torch import Tensor


def dynamic_sampling_keep(rewards: Tensor, group_size: int, tol: float = 1e-6) -> Tensor:
    """DAPO dynamic sampling: drop groups whose rewards are all equal (they give zero advantage).

    A group is kept when ``max(r) - min(r) > tol`` (default 1e-6: equal up to float noise counts
    as equal; pass ``tol=0`` for exact equality). Kept or dropped as a whole.

    Args:
        rewards: ``[N]`` rewards, group after group (N = num_groups * group_size).
        group_size: samples per prompt.

    Returns:
        bool ``[N]``, one flag per sample.
    """
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards must be [N] with N a multiple of group_size; got shape {tuple(rewards.shape)}, "
            f"group_size {group_size}"
        )
    groups = rewards.reshape(-1, group_size)  # [num_groups, G]
    spread = groups.max(dim=1).values - groups.min(dim=1).values
    keep = spread > tol  # [num_groups]
    return keep.repeat_interleave(group_size)


def overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment, added to the reward.

    With ``L_exp = max_len - buffer_len``: 0 if ``L <= L_exp``; ``(L_exp - L) / buffer_len * factor``
    (a linear ramp from 0 to ``-factor``) if ``L_exp < L <= max_len``; ``-factor`` if ``L > max_len``.

    Args:
        lengths: ``[N]`` response lengths in tokens (int or float).
        max_len: the generation budget.
        buffer_len: length of the ramp, ``0 < buffer_len <= max_len`` (DAPO: 4096 of 20480).
        factor: penalty at and beyond ``max_len``.

    Returns:
        ``[N]`` float penalties (<= 0).
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"need 0 < buffer_len <= max_len, got buffer_len={buffer_len}, max_len={max_len}")
    lengths = torch.as_tensor(lengths)
    length = lengths.to(torch.promote_types(lengths.dtype, torch.get_default_dtype()))
    expected = max_len - buffer_len
    ramp = (expected - length) / buffer_len * factor
    penalty = torch.where(length <= max_len, ramp, torch.full_like(length, -factor))
    return torch.where(length <= expected, torch.zeros_like(length), penalty)
