"""Token entropy of a policy's next-token distribution, and high-entropy "forking" tokens."""

from __future__ import annotations

import torch
from torch import Tensor


def token_entropy(logits: Tensor, chunk_size: int = 1024) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last dim: ``H = logsumexp(z) - sum(softmax(z) * z)``.

    Rows (the flattened leading dims) are processed ``chunk_size`` at a time, so the temporary
    softmax is ``[chunk_size, V]`` rather than ``[B*T, V]`` -- with a 150k vocabulary the full one
    costs gigabytes. (Under autograd each chunk's softmax is still kept for backward; the saving
    is for the usual no-grad use in metrics and forking masks.) ``-inf`` logits (banned tokens)
    are fine: they have probability 0 and add nothing.

    Args:
        logits: ``[..., V]``.
        chunk_size: rows per chunk, >= 1.

    Returns:
        ``[...]`` entropies in nats, in ``logits.dtype`` promoted to at least float32.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    lead_shape, vocab = logits.shape[:-1], logits.shape[-1]
    rows = logits.reshape(-1, vocab)  # [R, V]
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        z = rows[start : start + chunk_size].to(out_dtype)  # [c, V]
        lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [c, 1]
        p = torch.exp(z - lse)  # [c, V]
        z_finite = torch.where(torch.isneginf(z), torch.zeros((), dtype=z.dtype, device=z.device), z)
        pieces.append(lse.squeeze(-1) - (p * z_finite).sum(dim=-1))
    if not pieces:
        return torch.zeros(lead_shape, dtype=out_dtype, device=logits.device)
    return torch.cat(pieces).reshape(lead_shape)


def _quantile(sorted_values: Tensor, q: float) -> Tensor:
    """``torch.quantile(x, q)`` (linear interpolation) from ascending ``sorted_values`` [n], n >= 1.

    Done by hand because ``torch.quantile`` refuses inputs above 16M elements; the rank is computed
    in the values' dtype, as torch does, so ties at the threshold fall the same way.
    """
    q_t = torch.tensor(q, dtype=sorted_values.dtype, device=sorted_values.device)
    rank = q_t * (sorted_values.numel() - 1)
    below = rank.long()
    above = rank.ceil().long()
    return torch.lerp(sorted_values[below], sorted_values[above], rank - below)


def forking_token_mask(entropy: Tensor, mask: Tensor, top_quantile: float = 0.2) -> Tensor:
    """High-entropy "forking" tokens ("Beyond the 80/20 Rule", Wang et al. 2025).

    Keeps the valid tokens whose entropy is at or above the ``(1 - top_quantile)`` quantile of the
    VALID tokens' entropies (``torch.quantile`` semantics: linear interpolation), i.e. about the
    top 20% by default; the paper trains on these tokens only. Padding never changes the result.

    Args:
        entropy: ``[B, T]`` (any shape) per-token entropies, e.g. from :func:`token_entropy`.
        mask: same shape, bool or 0/1.
        top_quantile: fraction q in (0, 1] to keep.

    Returns:
        bool tensor like ``entropy``; all False when ``mask`` has no valid token.
    """
    if not 0.0 < top_quantile <= 1.0:
        raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
    if entropy.shape != mask.shape:
        raise ValueError(f"entropy {tuple(entropy.shape)} and mask {tuple(mask.shape)} must match")
    valid = mask.bool()
    valid_entropy = entropy.detach()[valid]
    if valid_entropy.numel() == 0:
        return torch.zeros_like(valid)
    threshold = _quantile(torch.sort(valid_entropy).values, 1.0 - top_quantile)
    return valid & (entropy.detach() >= threshold)
