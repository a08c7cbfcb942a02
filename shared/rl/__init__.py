"""Policy-gradient math on tensors: advantages, per-token losses, aggregation, KL, entropy, DAPO
sampling tricks and pass@k. Pure functions with shapes in their docstrings; variants are picked by
name from registries (:class:`Registry`).

Typical LM step::

    adv = ADVANTAGE_ESTIMATORS.get("grpo")(rewards, group_size)             # [N]
    tok = policy_loss("ppo_clip", logp, old_logp, adv, mask, clip_high=0.28)  # [N, T]
    loss = aggregate(tok, mask, "token_mean")                                 # scalar
"""

from shared.rl.advantages import (
    ADVANTAGE_ESTIMATORS,
    gae,
    get_advantage_estimator,
    group_advantages,
    register_advantage_estimator,
    rloo_advantages,
    weighted_reinforce_advantages,
)
from shared.rl.aggregate import AGGREGATIONS, aggregate, get_aggregation, register_aggregation
from shared.rl.entropy import forking_token_mask, token_entropy
from shared.rl.kl import KL_ESTIMATORS, get_kl_estimator, kl, register_kl_estimator
from shared.rl.losses import (
    POLICY_LOSSES,
    get_policy_loss,
    policy_loss,
    ppo_clip_fraction,
    register_policy_loss,
)
from shared.rl.metrics import mean_at_k, pass_at_k, pass_at_k_from_scores
from shared.rl.registry import Registry, UnknownNameError
from shared.rl.sampling import dynamic_sampling_keep, overlong_penalty

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "Registry",
    "UnknownNameError",
    "aggregate",
    "dynamic_sampling_keep",
    "forking_token_mask",
    "gae",
    "get_advantage_estimator",
    "get_aggregation",
    "get_kl_estimator",
    "get_policy_loss",
    "group_advantages",
    "kl",
    "mean_at_k",
    "overlong_penalty",
    "pass_at_k",
    "pass_at_k_from_scores",
    "policy_loss",
    "ppo_clip_fraction",
    "register_advantage_estimator",
    "register_aggregation",
    "register_kl_estimator",
    "register_policy_loss",
    "rloo_advantages",
    "token_entropy",
    "weighted_reinforce_advantages",
]
