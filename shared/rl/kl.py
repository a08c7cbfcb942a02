"""Per-token estimators of KL(pi || pi_ref) from sampled tokens (Schulman, "Approximating KL
Divergence", 2020), picked by name from :data:`KL_ESTIMATORS`.

With ``log_ratio = logp - ref_logp`` for a token sampled from pi:

- ``k1 = log_ratio``: unbiased, high variance, can be negative;
- ``k2 = 0.5 * log_ratio**2``: biased, low variance, >= 0;
- ``k3 = exp(-log_ratio) + log_ratio - 1``: unbiased, low variance, >= 0 (GRPO's KL penalty,
  verl's ``low_var_kl``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shared.rl.registry import Registry

KLFn = Callable[[Tensor, Tensor], Tensor]

KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")
"""name -> ``fn(logp, ref_logp) -> per-token estimate`` (same shape)."""

K3_LOG_RATIO_CLAMP = 20.0
"""k3 clamps ``ref_logp - logp`` to ``[-20, 20]`` so ``exp`` cannot overflow; beyond it the gradient is 0."""


def register_kl_estimator(name: str) -> Callable[[KLFn], KLFn]:
    """Decorator adding ``fn(logp, ref_logp) -> per-token KL estimate`` to :data:`KL_ESTIMATORS`."""
    return KL_ESTIMATORS.register(name)


def get_kl_estimator(name: str) -> KLFn:
    """The estimator called ``name``; raises ``UnknownNameError`` (a KeyError) listing valid names."""
    return KL_ESTIMATORS.get(name)


def kl(logp: Tensor, ref_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL(pi || pi_ref) estimate.

    Args:
        logp: ``[...]`` log pi(token) of sampled tokens (carries the gradient).
        ref_logp: ``[...]`` log pi_ref(token), same shape (treat as a constant: pass it detached).
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).

    Returns:
        ``[...]`` per-token estimates; mask and aggregate them like a per-token loss.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must match")
    return get_kl_estimator(estimator)(logp, ref_logp)


@register_kl_estimator("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``logp - ref_logp``."""
    return logp - ref_logp


@register_kl_estimator("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``0.5 * (logp - ref_logp)**2``."""
    return 0.5 * (logp - ref_logp) ** 2


@register_kl_estimator("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``exp(x) - x - 1`` with ``x = clamp(ref_logp - logp, -20, 20)``; always >= 0.

    Computed as ``expm1(x) - x`` (accurate near x = 0) and floored at 0 against rounding.
    """
    x = torch.clamp(ref_logp - logp, -K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return (torch.expm1(x) - x).clamp(min=0)
