"""Reducing per-token losses ``[B, T]`` to a scalar, picked by name from :data:`AGGREGATIONS`.

The choice changes how long and short responses are weighted (DAPO, Dr. GRPO); masked tokens never
count, whatever their value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shared.rl.registry import Registry

AggregationFn = Callable[[Tensor, Tensor, int | None], Tensor]

AGGREGATIONS: Registry[AggregationFn] = Registry("loss aggregation")
"""name -> ``fn(token_loss [B, T], mask [B, T] bool, max_len) -> scalar``."""


def register_aggregation(name: str) -> Callable[[AggregationFn], AggregationFn]:
    """Decorator adding ``fn(token_loss, mask, max_len) -> scalar`` to :data:`AGGREGATIONS`.

    ``fn`` receives ``token_loss`` already zeroed where the bool ``mask`` is False.
    """
    return AGGREGATIONS.register(name)


def get_aggregation(name: str) -> AggregationFn:
    """The aggregation called ``name``; raises ``UnknownNameError`` (a KeyError) listing valid names."""
    return AGGREGATIONS.get(name)


def aggregate(token_loss: Tensor, mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """Reduce per-token losses to a scalar.

    Args:
        token_loss: ``[B, T]`` per-token losses (e.g. from :func:`policy_loss`).
        mask: ``[B, T]`` bool or 0/1; only nonzero positions count (their loss values, even NaN, are
            ignored elsewhere and get zero gradient).
        mode: a name in :data:`AGGREGATIONS`:

            - ``"token_mean"`` (DAPO, Yu et al. 2025): sum over valid tokens / number of valid tokens
              in the batch;
            - ``"seq_mean_token_mean"`` (GRPO, Shao et al. 2024): mean over sequences of each
              sequence's token mean; sequences without valid tokens are left out;
            - ``"seq_mean_token_sum"``: mean over all B sequences of each sequence's token sum;
            - ``"seq_mean_token_sum_norm"`` (Dr. GRPO, Liu et al. 2025): sum over valid tokens
              / (B * max_len), with ``max_len`` a constant (the generation budget).
        max_len: required by ``seq_mean_token_sum_norm``; ignored otherwise.

    Returns:
        0-dim tensor; 0 (never NaN) when nothing is valid.
    """
    fn = get_aggregation(mode)
    if token_loss.dim() != 2 or mask.shape != token_loss.shape:
        raise ValueError(
            f"token_loss must be [B, T] and mask the same shape, got {tuple(token_loss.shape)} "
            f"and {tuple(mask.shape)}"
        )
    valid = mask.bool()
    masked = torch.where(valid, token_loss, torch.zeros((), dtype=token_loss.dtype, device=token_loss.device))
    return fn(masked, valid, max_len)


@register_aggregation("token_mean")
def _token_mean(loss: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    return loss.sum() / mask.sum().clamp(min=1)


@register_aggregation("seq_mean_token_mean")
def _seq_mean_token_mean(loss: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    n_tokens = mask.sum(dim=1)  # [B]
    per_seq = loss.sum(dim=1) / n_tokens.clamp(min=1)  # [B]; 0 for empty sequences
    return per_seq.sum() / (n_tokens > 0).sum().clamp(min=1)


@register_aggregation("seq_mean_token_sum")
def _seq_mean_token_sum(loss: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    return loss.sum() / max(loss.shape[0], 1)


@register_aggregation("seq_mean_token_sum_norm")
def _seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    if max_len is None or max_len <= 0:
        raise ValueError(
            "seq_mean_token_sum_norm (Dr. GRPO) needs max_len, a positive constant such as the "
            f"generation budget; got {max_len!r}"
        )
    return loss.sum() / (max(loss.shape[0], 1) * max_len)
