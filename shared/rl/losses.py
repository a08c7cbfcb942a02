"""Per-token policy-gradient losses, picked by name from :data:`POLICY_LOSSES`.

Shapes: ``B`` sequences (responses) of ``T`` tokens, right-padded; ``mask [B, T]`` is 1/True on
response tokens that count. ``logp`` / ``old_logp`` are the log-probabilities of the sampled tokens
under the current policy and under the policy that sampled them.

Every loss returns per-token losses ``[B, T]`` (0 on masked tokens); reduce them with
:func:`shared.rl.aggregate.aggregate`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shared.rl.registry import Registry

PolicyLossFn = Callable[..., Tensor]

POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")
"""name -> ``fn(logp, old_logp, advantages, mask, **params) -> [B, T]`` (see :func:`register_policy_loss`)."""

LOG_RATIO_CLAMP = 20.0
"""``log(pi / pi_old)`` is clamped to ``[-20, 20]`` before ``exp`` (as verl) so a ratio never overflows."""


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator adding a policy loss to :data:`POLICY_LOSSES`.

    The function is called by :func:`policy_loss` as ``fn(logp, old_logp, advantages, mask, **params)``
    with cleaned inputs: all ``[B, T]``; ``mask`` bool; ``old_logp`` and ``advantages`` detached;
    ``logp``, ``old_logp`` and ``advantages`` set to 0 on masked tokens (so garbage padding can
    neither leak into a value nor make a NaN gradient). It returns per-token losses ``[B, T]``;
    :func:`policy_loss` zeroes the masked ones afterwards.
    """
    return POLICY_LOSSES.register(name)


def get_policy_loss(name: str) -> PolicyLossFn:
    """The loss called ``name``; raises ``UnknownNameError`` (a KeyError) listing valid names."""
    return POLICY_LOSSES.get(name)


def _clean_inputs(
    logp: Tensor, old_logp: Tensor | None, advantages: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check shapes, broadcast ``[B]`` advantages to ``[B, T]``, zero everything under padding."""
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    if old_logp is None:
        old_logp = logp
    if old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape [B, T]"
        )
    if advantages.shape == logp.shape[:1]:
        advantages = advantages[:, None].expand_as(logp)  # one advantage per sequence
    elif advantages.shape != logp.shape:
        raise ValueError(
            f"advantages must be [B] or [B, T] for logp {tuple(logp.shape)}, got {tuple(advantages.shape)}"
        )
    valid = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logp = torch.where(valid, logp, zero)
    old_logp = torch.where(valid, old_logp.detach().to(logp.dtype), zero)
    advantages = torch.where(valid, advantages.detach().to(logp.dtype), zero)
    return logp, old_logp, advantages, valid


def policy_loss(
    kind: str,
    logp: Tensor,
    old_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    **params: float | None,
) -> Tensor:
    """Per-token policy loss of the registered ``kind``.

    Args:
        kind: a name in :data:`POLICY_LOSSES`: ``"ppo_clip"``, ``"gspo"``, ``"cispo"``, ``"reinforce"``.
        logp: ``[B, T]`` log pi_theta(token) under the current policy (carries the gradient).
        old_logp: ``[B, T]`` log-probs under the sampling policy (treated as a constant); ``None``
            means on-policy (``old_logp = logp.detach()``), e.g. for ``reinforce``.
        advantages: ``[B]`` (one per sequence, broadcast over tokens) or ``[B, T]`` (per token);
            treated as a constant.
        mask: ``[B, T]`` bool or 0/1; nonzero = a token that counts.
        **params: the kind's own keywords (``clip_low``, ``clip_high``, ``dual_clip``); an unknown
            keyword is a ``TypeError``.

    Returns:
        ``[B, T]`` float per-token losses, exactly 0 (and with 0 gradient) where ``mask == 0``.
    """
    fn = get_policy_loss(kind)
    logp, old_logp, advantages, valid = _clean_inputs(logp, old_logp, advantages, mask)
    loss = fn(logp, old_logp, advantages, valid, **params)
    return torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))


def _clip_range(clip_low: float, clip_high: float | None) -> tuple[float, float]:
    """``(1 - clip_low, 1 + clip_high)``; ``clip_high`` defaults to ``clip_low`` (symmetric PPO)."""
    clip_high = clip_low if clip_high is None else clip_high
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    return 1.0 - clip_low, 1.0 + clip_high


def _ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """``pi / pi_old = exp(logp - old_logp)``, log-ratio clamped to +-LOG_RATIO_CLAMP."""
    return torch.exp(torch.clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def _clipped_surrogate(ratio: Tensor, advantages: Tensor, low: float, high: float) -> Tensor:
    """PPO's pessimistic surrogate as a loss: ``-min(r*A, clip(r, low, high)*A)``."""
    return torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, low, high))


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
) -> Tensor:
    """PPO clipped surrogate (Schulman et al. 2017), per token: ``-min(r*A, clip(r, 1-lo, 1+hi)*A)``.

    ``clip_high > clip_low`` is DAPO's clip-higher (Yu et al. 2025: 0.2 / 0.28). ``dual_clip = c > 1``
    is dual-clip PPO (Ye et al. 2020; verl ``clip_ratio_c``, typically 3): where ``A < 0`` the loss is
    capped at ``-c * A``, so a huge ratio on a bad token cannot blow the update up.

    All tensors ``[B, T]``; returns ``[B, T]``.
    """
    low, high = _clip_range(clip_low, clip_high)
    loss = _clipped_surrogate(_ratio(logp, old_logp), advantages, low, high)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    return loss


@register_policy_loss("gspo")
def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> Tensor:
    """GSPO, token form (Zheng et al. 2025, "Group Sequence Policy Optimization").

    Sequence ratio ``s_i = exp(mean over valid tokens of (logp - old_logp))`` (length-normalised),
    spread over tokens as ``s_it = sg[s_i] * exp(logp_t - sg[logp_t])``: the value of every token is
    ``s_i`` and the gradient flows through each ``logp_t``. Loss ``-min(s_it*A, clip(s_it)*A)``. With
    ``[B]`` advantages and ``seq_mean_token_mean`` aggregation this is exactly the sequence-level GSPO
    objective; ``[B, T]`` advantages give GSPO-token.

    The paper's clip range is tiny (``clip_low=3e-4, clip_high=4e-4``) because ``s_i`` is a
    geometric mean; the defaults here stay PPO's 0.2 -- set them explicitly for GSPO runs.

    All tensors ``[B, T]``; returns ``[B, T]``.
    """
    low, high = _clip_range(clip_low, clip_high)
    n_valid = mask.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1]
    seq_log_ratio = ((logp - old_logp) * mask).sum(dim=1, keepdim=True) / n_valid  # [B, 1]
    log_s = seq_log_ratio.detach() + logp - logp.detach()  # value log s_i, gradient d logp_t
    s = torch.exp(torch.clamp(log_s, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    return _clipped_surrogate(s, advantages, low, high)


@register_policy_loss("cispo")
def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float | None = None,
    clip_high: float | None = None,
) -> Tensor:
    """CISPO (MiniMax-M1, 2025): ``-sg[clip(r, 1 - clip_low, 1 + clip_high)] * A * logp``.

    The importance weight ``r = pi / pi_old`` is clipped and detached; the gradient flows through
    ``logp`` only, so no token is dropped from the update (unlike PPO's clip). Variant: as in the
    paper's runs, no lower bound unless ``clip_low`` is given; ``clip_high`` defaults to
    ``clip_low`` if that is given, else 0.2. (MiniMax tunes only the upper bound; ScaleRL-style runs
    use much larger values, e.g. ``clip_high=4``.) The loss value itself is not meaningful
    (``logp`` scaled), only its gradient ``-sg[w] * A * grad logp``.

    All tensors ``[B, T]``; returns ``[B, T]``.
    """
    if clip_high is None:
        clip_high = 0.2 if clip_low is None else clip_low
    lower = None if clip_low is None else 1.0 - clip_low
    weight = torch.clamp(_ratio(logp, old_logp), min=lower, max=1.0 + clip_high).detach()
    return -weight * advantages * logp


@register_policy_loss("reinforce")
def reinforce_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """REINFORCE (Williams 1992): ``-A * logp``; ``old_logp`` is ignored (no importance ratio).

    All tensors ``[B, T]``; returns ``[B, T]``.
    """
    return -advantages * logp


def ppo_clip_fraction(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> Tensor:
    """Fraction of valid tokens whose PPO gradient is clipped away (verl's ``pg_clipfrac``).

    A token is clipped when ``A > 0 and r > 1 + clip_high`` or ``A < 0 and r < 1 - clip_low``.

    Args:
        logp, old_logp, mask: ``[B, T]``; advantages ``[B]`` or ``[B, T]``.

    Returns:
        0-dim float tensor in [0, 1], detached; 0 when no token is valid.
    """
    with torch.no_grad():
        logp, old_logp, advantages, valid = _clean_inputs(logp, old_logp, advantages, mask)
        low, high = _clip_range(clip_low, clip_high)
        ratio = _ratio(logp, old_logp)
        clipped = ((advantages > 0) & (ratio > high)) | ((advantages < 0) & (ratio < low))
        return (clipped & valid).sum().to(logp.dtype) / valid.sum().clamp(min=1)
