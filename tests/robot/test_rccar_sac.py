"""The rccar learner's SAC options: layer-normalised / dropout critics (`sac.critic_layer_norm`,
`sac.critic_dropout`, DroQ-style): what SAC builds with them, and that saving, loading and the practice
checkpoint keep them; and the learning rate annealed over practice time (`sac.lr_end_frac`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pybullet")

from robot.rccar.critic import NormCriticPolicy  # noqa: E402
from robot.rccar.practice import PracticeLR, PracticeState, load_practice, make_sac, save_practice  # noqa: E402
from robot.rccar.track import CONFIGS_DIR, RCCarConfig  # noqa: E402
from shared.config import ConfigError, load_config  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*observation space m.* value is -?infinity")]

SMALL = ["env.track=generated:1", "sac.net_arch=[32,32]", "sac.batch_size=16", "sac.learning_starts=20"]


def _model(*extra: str):
    cfg = load_config(RCCarConfig, "fastrlap_droq", [*SMALL, *extra], CONFIGS_DIR)
    env = cfg.env.make()
    return cfg, env, make_sac(env, cfg.sac, seed=0)


def _q(model, obs: np.ndarray, act: np.ndarray) -> list[torch.Tensor]:
    model.policy.set_training_mode(False)  # dropout off: the same weights give the same values
    with torch.no_grad():
        o, _ = model.policy.obs_to_tensor(obs)
        return list(model.critic(o, torch.as_tensor(act[None], dtype=torch.float32)))


def test_droq_config_builds_normalised_critics_and_plain_ones_stay_plain():
    cfg, env, model = _model()
    try:
        assert cfg.sac.critic_layer_norm and cfg.sac.critic_dropout == 0.01 and cfg.sac.utd == 4
        assert isinstance(model.policy, NormCriticPolicy)
        for net in [*model.critic.q_networks, *model.critic_target.q_networks]:
            kinds = [type(m) for m in net]
            assert kinds == [nn.Linear, nn.Dropout, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]
            assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.01, 0.01]
        # the optimiser updates the new heads (not SB3's replaced ones) and the target starts equal
        optimised = {id(p) for g in model.critic.optimizer.param_groups for p in g["params"]}
        assert all(id(p) in optimised for net in model.critic.q_networks for p in net.parameters())
        for a, b in zip(model.critic.state_dict().values(), model.critic_target.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        # the actor is SB3's own
        plain = make_sac(env, load_config(RCCarConfig, "fastrlap_utd4", SMALL, CONFIGS_DIR).sac, seed=0)
        assert not any(isinstance(m, (nn.LayerNorm, nn.Dropout)) for m in plain.critic.modules())
        assert str(model.actor) == str(plain.actor)
        only_norm = make_sac(env, load_config(RCCarConfig, "fastrlap_droq", [*SMALL, "sac.critic_dropout=0"],
                                              CONFIGS_DIR).sac, seed=0)
        assert [type(m) for m in only_norm.critic.qf0] == [nn.Linear, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]
    finally:
        env.close()


def test_normalised_critics_learn_save_load_and_resume(tmp_path):
    _, env, model = _model()
    try:
        model.learn(60)  # 40 updates at update-to-data 4 after 20 random steps
        assert model._n_updates > 0
        obs, _ = env.reset(seed=3)
        act = np.array([0.2, 0.5], dtype=np.float32)
        before = _q(model, obs, act)

        model.save(tmp_path / "policy.zip")  # `final/policy.zip`, read by `rlab eval` and the exporter
        from stable_baselines3 import SAC

        loaded = SAC.load(tmp_path / "policy.zip", device="cpu")
        assert isinstance(loaded.policy, NormCriticPolicy)
        assert [torch.equal(a, b) for a, b in zip(before, _q(loaded, obs, act), strict=True)] == [True, True]
        np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0],
                                      loaded.predict(obs, deterministic=True)[0])

        path = save_practice(tmp_path / "ckpt", model, PracticeState(sim_time_s=12.0))
        _, env2, fresh = _model()
        try:
            assert not torch.equal(_q(fresh, obs, act)[0], before[0])
            state = load_practice(path, fresh)
            assert state.sim_time_s == 12.0 and fresh._n_updates == model._n_updates
            assert [torch.equal(a, b) for a, b in zip(before, _q(fresh, obs, act), strict=True)] == [True, True]
        finally:
            env2.close()
    finally:
        env.close()


@pytest.mark.parametrize("override,key", [("sac.critic_dropout=1.0", "sac.critic_dropout"),
                                          ("sac.critic_dropout=-0.1", "sac.critic_dropout"),
                                          ("sac.lr_end_frac=0", "sac.lr_end_frac"),
                                          ("sac.lr_end_frac=1.5", "sac.lr_end_frac")])
def test_out_of_range_sac_options_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(RCCarConfig, "fastrlap_droq", [override], CONFIGS_DIR)
    assert err.value.key == key


def test_practice_lr_is_linear_in_practice_time_and_clamped():
    lr = PracticeLR(3e-4, 0.1)
    got = []
    for p in (-0.5, 0.0, 0.5, 1.0, 2.0):
        lr.progress = p
        got.append(lr(0.123))  # SB3's own progress argument is ignored
    assert got == pytest.approx([3e-4, 3e-4, 1.65e-4, 3e-5, 3e-5])


def test_annealed_lr_reaches_every_optimiser_and_constant_stays_sb3s():
    _, env, model = _model("sac.lr_end_frac=0.1")
    try:
        assert isinstance(model.lr_schedule, PracticeLR)
        model.lr_schedule.progress = 0.5
        model.learn(40)  # updates after 20 random steps; SB3 sets the rate before each
        rates = [g["lr"] for opt in (model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer)
                 for g in opt.param_groups]
        assert rates == pytest.approx([1.65e-4] * 3)
        _, env2, constant = _model()
        try:
            assert not isinstance(constant.lr_schedule, PracticeLR) and constant.lr_schedule(0.3) == 3e-4
        finally:
            env2.close()
    finally:
        env.close()
