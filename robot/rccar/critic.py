"""SAC critics with layer normalisation and dropout (DroQ, Hiraoka et al. 2022; RLPD, Ball et al. 2023).

SB3's SAC builds each critic as plain ``Linear -> ReLU`` layers and has no switch for normalisation. A
high update-to-data ratio is what FastRLAP's sample efficiency rests on, and at a high ratio plain
critics overestimate; layer norm bounds the features a Q head sees, and a little dropout acts as a
cheap ensemble. These policy classes are SB3's own (``MlpPolicy``, ``MultiInputPolicy``) with only the
critics rebuilt as ``Linear -> Dropout -> LayerNorm -> ReLU`` per hidden layer, so everything else
(actor, target network, saving, ``SAC.load``, export of the actor) is unchanged.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.sac.policies import MultiInputPolicy, SACPolicy
from torch import nn


def q_network(in_dim: int, net_arch: list[int], activation_fn: type[nn.Module], layer_norm: bool,
              dropout: float) -> nn.Sequential:
    """One Q head: ``in_dim`` (features + action) -> hidden layers -> a scalar."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in net_arch:
        layers.append(nn.Linear(last, width))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(activation_fn())
        last = width
    layers.append(nn.Linear(last, 1))
    return nn.Sequential(*layers)


class _NormCritic:
    """Mixin for SB3's SAC policies: `critic_layer_norm` and `critic_dropout` reshape every critic."""

    def __init__(self, *args: Any, critic_layer_norm: bool = True, critic_dropout: float = 0.0,
                 **kwargs: Any) -> None:
        if not 0.0 <= critic_dropout < 1.0:
            raise ValueError(f"critic_dropout must be in [0, 1), got {critic_dropout}")
        # set before SACPolicy.__init__, which builds the critics (plain attributes, not nn state)
        object.__setattr__(self, "_critic_shape", (bool(critic_layer_norm), float(critic_dropout)))
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        layer_norm, dropout = self._critic_shape
        return {**super()._get_constructor_parameters(),  # type: ignore[misc]
                "critic_layer_norm": layer_norm, "critic_dropout": dropout}

    def make_critic(self, features_extractor: Any = None) -> Any:
        critic = super().make_critic(features_extractor)  # type: ignore[misc]
        layer_norm, dropout = self._critic_shape
        kwargs = self.critic_kwargs  # type: ignore[attr-defined]
        in_dim = critic.q_networks[0][0].in_features
        critic.q_networks = []
        for idx in range(critic.n_critics):
            net = q_network(in_dim, list(kwargs["net_arch"]), kwargs["activation_fn"], layer_norm, dropout)
            critic.add_module(f"qf{idx}", net)  # replaces SB3's plain head of the same name
            critic.q_networks.append(net)
        return critic.to(self.device)  # type: ignore[attr-defined]


class NormCriticPolicy(_NormCritic, SACPolicy):
    """SB3's ``MlpPolicy`` for SAC with layer-normalised (and optionally dropout) critics."""


class NormCriticMultiInputPolicy(_NormCritic, MultiInputPolicy):
    """SB3's ``MultiInputPolicy`` (dict observations: state + image) with the same critics."""
