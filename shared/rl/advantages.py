"""Advantage estimators: group-relative (GRPO, Dr. GRPO, RLOO), PSR/NSR weighting, and GAE.

Outcome-reward estimators take rewards ``[N]`` laid out group after group: the ``group_size``
samples of prompt 0, then those of prompt 1, ... (``N = num_groups * group_size``). They are
registered in :data:`ADVANTAGE_ESTIMATORS` under a name and all callable as
``fn(rewards, group_size, **kw) -> [N]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shared.rl.registry import Registry

AdvantageFn = Callable[..., Tensor]

ADVANTAGE_ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator")
"""name -> ``fn(rewards [N], group_size, **kw) -> advantages [N]``."""


def register_advantage_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator adding ``fn(rewards, group_size, **kw) -> [N]`` to :data:`ADVANTAGE_ESTIMATORS`."""
    return ADVANTAGE_ESTIMATORS.register(name)


def get_advantage_estimator(name: str) -> AdvantageFn:
    """The estimator called ``name``; raises ``UnknownNameError`` (a KeyError) listing valid names."""
    return ADVANTAGE_ESTIMATORS.get(name)


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """rewards [N] -> float view [num_groups, group_size], with the checks every estimator needs."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size} "
            f"(N must be num_groups * group_size)"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.view(-1, group_size)


def _unbiased_std(x: Tensor, dim: int | None) -> Tensor:
    """``torch.std`` (Bessel-corrected) except that the std of a single element is 0, not NaN."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return torch.zeros_like(x.sum() if dim is None else x.sum(dim, keepdim=True))
    return x.std() if dim is None else x.std(dim, keepdim=True)


_GROUP_SCALES: dict[str, Callable[[Tensor], Tensor | None]] = {
    "group": lambda g: _unbiased_std(g, dim=1),  # GRPO (Shao et al. 2024)
    "batch": lambda g: _unbiased_std(g, dim=None),  # group mean, batch std (Lite PPO; TRL "batch")
    "none": lambda g: None,  # Dr. GRPO (Liu et al. 2025): no std division
}


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO advantages ``A_i = (r_i - mean(group of i)) / (std + eps)`` (Shao et al. 2024, DeepSeekMath).

    Args:
        rewards: ``[N]`` outcome rewards, group after group (N = num_groups * group_size).
        group_size: samples per prompt (G).
        scale: ``"group"`` divides by the unbiased std of each group (GRPO, as TRL and verl);
            ``"batch"`` by the unbiased std of the whole batch (Lite PPO, Liu et al. 2025 "Tricks or
            Traps?"; TRL ``scale_rewards="batch"``); ``"none"`` does not divide
            (Dr. GRPO, Liu et al. 2025: just ``r - mean_group``).
        eps: added to the std.

    Returns:
        ``[N]`` float advantages. A group of one sample (or a one-sample batch) has std 0, so its
        advantage is ``0 / eps = 0``, never NaN.
    """
    if scale not in _GROUP_SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(_GROUP_SCALES)}")
    groups = _grouped(rewards, group_size)  # [num_groups, G]
    centred = groups - groups.mean(dim=1, keepdim=True)
    std = _GROUP_SCALES[scale](groups)
    if std is not None:
        centred = centred / (std + eps)
    return centred.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics").

    ``A_i = r_i - mean of the other G-1 rewards of i's group = G/(G-1) * (r_i - mean_group)``.

    Args:
        rewards: ``[N]`` outcome rewards, group after group.
        group_size: samples per prompt, G >= 2 (a leave-one-out baseline needs another sample).

    Returns:
        ``[N]`` float advantages.
    """
    if group_size < 2:
        raise ValueError(f"rloo needs group_size >= 2, got {group_size}")
    groups = _grouped(rewards, group_size)  # [num_groups, G]
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


_PSR_NSR_WEIGHTS: dict[str, Callable[[float], tuple[float, float]]] = {
    # mode -> lam -> (advantage of a correct sample, advantage of an incorrect one)
    "psr": lambda lam: (1.0, 0.0),
    "nsr": lambda lam: (0.0, -1.0),
    "w": lambda lam: (lam, -1.0),
}


def weighted_reinforce_advantages(correct: Tensor, mode: str = "w", lam: float = 0.1) -> Tensor:
    """PSR / NSR / W-REINFORCE advantages ("The Surprising Effectiveness of Negative Reinforcement
    in LLM Reasoning", Zhu et al. 2025).

    With the paper's +1/-1 verifiable reward, REINFORCE splits into positive sample reinforcement
    (PSR: only correct samples, +1) and negative sample reinforcement (NSR: only incorrect ones,
    -1). W-REINFORCE optimises ``lam * L_PSR + L_NSR``, i.e. up-weights the negative signal; the
    paper recommends ``lam = 0.1``.

    Args:
        correct: ``[N]`` bool, or 0/1 numbers (nonzero = correct).
        mode: ``"psr"`` -> (+1, 0), ``"nsr"`` -> (0, -1), ``"w"`` -> (+lam, -1) for (correct, incorrect).
        lam: weight of the positive samples in ``"w"`` mode.

    Returns:
        ``[N]`` float advantages (use with the ``reinforce`` policy loss, no baseline).
    """
    if mode not in _PSR_NSR_WEIGHTS:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(_PSR_NSR_WEIGHTS)}")
    pos, neg = _PSR_NSR_WEIGHTS[mode](lam)
    is_correct = correct.bool()
    dtype = correct.dtype if correct.is_floating_point() else torch.get_default_dtype()
    return torch.where(
        is_correct,
        torch.full_like(is_correct, pos, dtype=dtype),
        torch.full_like(is_correct, neg, dtype=dtype),
    )


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    gamma: float,
    lam: float,
    last_value: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), for the robot learners.

    Convention (as cleanrl / brax with termination flags):

    - ``rewards[t]``, ``values[t] = V(s_t)`` and ``dones[t]`` describe step t of a rollout of T steps;
    - ``dones[t] = 1`` means the episode ENDED after step t (``s_{t+1}`` belongs to a new episode),
      so step t does not bootstrap from ``values[t+1]`` and no advantage flows back across it;
    - ``last_value = V(s_T)`` is the bootstrap for the step after ``T-1`` (default 0); it is used
      unless ``dones[T-1]`` is set.

    ``delta_t = r_t + gamma * (1 - d_t) * V_{t+1} - V_t``,
    ``A_t = delta_t + gamma * lam * (1 - d_t) * A_{t+1}``, ``returns_t = A_t + V_t``.

    A done is treated as a true termination (value 0 after it). For a time-limit truncation,
    add ``gamma * V(final obs)`` to that step's reward before calling.

    Args:
        rewards: ``[T]`` or ``[T, N_envs]``.
        values: same shape as rewards.
        dones: same shape, bool or 0/1.
        gamma: discount.
        lam: GAE lambda (1 = Monte Carlo returns minus V, 0 = one-step TD error).
        last_value: ``[]`` or ``[N_envs]``; default zeros.

    Returns:
        ``(advantages, returns)``, both shaped like ``rewards``, detached (they are targets).
    """
    if not (rewards.shape == values.shape == dones.shape) or rewards.dim() not in (1, 2):
        raise ValueError(
            "rewards, values and dones must share a shape [T] or [T, N_envs], got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(dones.shape)}"
        )
    values = values.detach()
    rewards = rewards.detach().to(values.dtype)
    not_done = 1.0 - dones.detach().to(values.dtype)
    next_value = torch.zeros_like(values[0]) if last_value is None else last_value.detach().to(values)
    advantages = torch.empty_like(values)
    running = torch.zeros_like(values[0])  # A_{t+1}
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * not_done[t] * next_value - values[t]
        running = delta + gamma * lam * not_done[t] * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


# ---- the registry: every entry is fn(rewards [N], group_size, **kw) -> [N] -------------------------


@register_advantage_estimator("grpo")
def _grpo(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    return group_advantages(rewards, group_size, scale="group", eps=eps)


@register_advantage_estimator("grpo_batch")
def _grpo_batch(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    return group_advantages(rewards, group_size, scale="batch", eps=eps)


@register_advantage_estimator("dr_grpo")
def _dr_grpo(rewards: Tensor, group_size: int) -> Tensor:
    return group_advantages(rewards, group_size, scale="none")


@register_advantage_estimator("rloo")
def _rloo(rewards: Tensor, group_size: int) -> Tensor:
    return rloo_advantages(rewards, group_size)


def _register_psr_nsr(name: str, mode: str) -> None:
    # group_size only checks the layout; a sample is "correct" when its reward is > 0
    # (works for 0/1 and for -1/+1 verifiable rewards).
    @register_advantage_estimator(name)
    def _estimator(rewards: Tensor, group_size: int, lam: float = 0.1) -> Tensor:
        _grouped(rewards, group_size)
        return weighted_reinforce_advantages(rewards > 0, mode=mode, lam=lam).to(
            rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
        )


_register_psr_nsr("w_reinforce", "w")
_register_psr_nsr("psr", "psr")
_register_psr_nsr("nsr", "nsr")
