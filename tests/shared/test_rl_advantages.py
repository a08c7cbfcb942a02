"""shared.rl advantages: GRPO / Dr. GRPO / RLOO, PSR-NSR weighting, GAE, and the estimator registry."""

import math
import statistics

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rl import (
    ADVANTAGE_ESTIMATORS,
    gae,
    get_advantage_estimator,
    group_advantages,
    rloo_advantages,
    weighted_reinforce_advantages,
)

FAST = settings(max_examples=50, deadline=None)


# ---- plain-loop references -------------------------------------------------------------------------


def ref_group_advantages(rewards, group_size, scale, eps=1e-4):
    rewards = [float(r) for r in rewards]
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    batch_std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    out = []
    for group in groups:
        mean = sum(group) / len(group)
        group_std = statistics.stdev(group) if len(group) > 1 else 0.0
        for r in group:
            if scale == "none":
                out.append(r - mean)
            else:
                std = group_std if scale == "group" else batch_std
                out.append((r - mean) / (std + eps))
    return out


def ref_rloo(rewards, group_size):
    out = []
    for start in range(0, len(rewards), group_size):
        group = [float(r) for r in rewards[start : start + group_size]]
        for i, r in enumerate(group):
            others = [x for j, x in enumerate(group) if j != i]
            out.append(r - sum(others) / len(others))
    return out


def ref_gae(rewards, values, dones, gamma, lam, last_value):
    """One environment, lists of floats: walk backwards step by step."""
    T = len(rewards)
    adv = [0.0] * T
    next_adv, next_value = 0.0, last_value
    for t in range(T - 1, -1, -1):
        if dones[t]:
            next_value, next_adv = 0.0, 0.0  # the episode ended after step t
        delta = rewards[t] + gamma * next_value - values[t]
        adv[t] = delta + gamma * lam * next_adv
        next_adv, next_value = adv[t], values[t]
    return adv, [a + v for a, v in zip(adv, values, strict=True)]


grouped_rewards = st.integers(1, 5).flatmap(
    lambda g: st.tuples(
        st.just(g),
        st.integers(1, 4).flatmap(
            lambda n: hnp.arrays(
                np.float64, n * g, elements=st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-3, 3)
            )
        ),
    )
)


# ---- group_advantages ------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])  # two groups of 2: [1, 0] and [1, 1]
    # group 0: mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = 0.70711 -> +-0.5 / 0.70721 = +-0.70700
    # group 1: all equal -> 0 / (0 + eps) = 0
    torch.testing.assert_close(
        group_advantages(rewards, 2, scale="group"),
        torch.tensor([0.70700, -0.70700, 0.0, 0.0]),
        atol=1e-5,
        rtol=0,
    )
    # batch: mean 0.75, unbiased var (3 * 0.0625 + 0.5625) / 3 = 0.25 -> std 0.5; group means as above
    # -> [0.5, -0.5, 0, 0] / 0.5001
    torch.testing.assert_close(
        group_advantages(rewards, 2, scale="batch"), torch.tensor([0.5, -0.5, 0.0, 0.0]) / 0.5001
    )
    # Dr. GRPO: no division
    torch.testing.assert_close(
        group_advantages(rewards, 2, scale="none"), torch.tensor([0.5, -0.5, 0.0, 0.0])
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_size_one_gives_zeros_not_nan(scale):
    for rewards in (torch.tensor([3.0, -1.0, 2.0]), torch.tensor([5.0])):
        adv = group_advantages(rewards, 1, scale=scale)
        assert torch.equal(adv, torch.zeros_like(rewards))


def test_group_advantages_checks():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="unknown scale 'std'"):
        group_advantages(torch.zeros(4), 2, scale="std")
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), 2)
    # integer rewards are fine
    torch.testing.assert_close(
        group_advantages(torch.tensor([1, 0]), 2, scale="none"), torch.tensor([0.5, -0.5])
    )


@FAST
@given(grouped_rewards, st.sampled_from(["group", "batch", "none"]))
def test_group_advantages_match_loop(data, scale):
    group_size, rewards = data
    got = group_advantages(torch.from_numpy(rewards), group_size, scale=scale)
    expected = torch.tensor(ref_group_advantages(rewards.tolist(), group_size, scale), dtype=torch.float64)
    torch.testing.assert_close(got, expected)


@FAST
@given(grouped_rewards, st.floats(-10, 10))
def test_group_advantages_centre_each_group_and_ignore_its_offset(data, offset):
    group_size, rewards = data
    rewards = torch.from_numpy(rewards)
    for scale in ("group", "none"):
        adv = group_advantages(rewards, group_size, scale=scale)
        torch.testing.assert_close(
            adv.view(-1, group_size).sum(1), torch.zeros(len(rewards) // group_size, dtype=torch.float64)
        )
        torch.testing.assert_close(
            group_advantages(rewards + offset, group_size, scale=scale), adv, atol=1e-6, rtol=1e-6
        )


# ---- rloo ------------------------------------------------------------------------------------------


def test_rloo_by_hand():
    # group [1, 0, 0, 1]: A_0 = 1 - (0 + 0 + 1) / 3 = 2/3, A_1 = 0 - (1 + 0 + 1) / 3 = -2/3
    torch.testing.assert_close(
        rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4), torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    )
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(torch.tensor([1.0, 0.0]), 1)


@FAST
@given(grouped_rewards.filter(lambda d: d[0] >= 2))
def test_rloo_matches_loop_and_scaled_centring(data):
    group_size, rewards = data
    got = rloo_advantages(torch.from_numpy(rewards), group_size)
    torch.testing.assert_close(got, torch.tensor(ref_rloo(rewards.tolist(), group_size), dtype=torch.float64))
    centred = group_advantages(torch.from_numpy(rewards), group_size, scale="none")
    torch.testing.assert_close(got, centred * group_size / (group_size - 1))


# ---- weighted_reinforce_advantages -----------------------------------------------------------------


def test_weighted_reinforce_by_hand():
    correct = torch.tensor([True, False, True])
    # PSR: +1 for correct, 0 for incorrect; NSR: 0 / -1; W-REINFORCE: lam * (+1) / -1 with lam = 0.1
    assert weighted_reinforce_advantages(correct, "psr").tolist() == [1.0, 0.0, 1.0]
    assert weighted_reinforce_advantages(correct, "nsr").tolist() == [0.0, -1.0, 0.0]
    torch.testing.assert_close(weighted_reinforce_advantages(correct), torch.tensor([0.1, -1.0, 0.1]))
    torch.testing.assert_close(
        weighted_reinforce_advantages(torch.tensor([1, 0]), "w", lam=0.5), torch.tensor([0.5, -1.0])
    )
    with pytest.raises(ValueError, match="unknown mode"):
        weighted_reinforce_advantages(correct, "both")


@FAST
@given(hnp.arrays(np.bool_, st.integers(0, 20)), st.sampled_from(["w", "psr", "nsr"]), st.floats(0, 1))
def test_weighted_reinforce_matches_loop(correct, mode, lam):
    weights = {"psr": (1.0, 0.0), "nsr": (0.0, -1.0), "w": (lam, -1.0)}[mode]
    expected = [weights[0] if c else weights[1] for c in correct.tolist()]
    got = weighted_reinforce_advantages(torch.from_numpy(correct), mode, lam)
    assert got.is_floating_point() and got.shape == (len(correct),)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype))


# ---- gae -------------------------------------------------------------------------------------------


def test_gae_by_hand():
    # gamma = lam = 1, V = 0, episode ends after step 1, bootstrap V(s_3) = 5:
    # A_2 = 1 + 5 = 6; A_1 = 1 (done: no bootstrap, nothing flows back); A_0 = 1 + A_1 = 2
    adv, ret = gae(torch.ones(3), torch.zeros(3), torch.tensor([0, 1, 0]), 1.0, 1.0, torch.tensor(5.0))
    assert adv.tolist() == [2.0, 1.0, 6.0] and ret.tolist() == [2.0, 1.0, 6.0]
    # gamma = 0.5, lam = 0.5, V = [1, 2], r = [0, 1], no done, last_value 4:
    # delta_1 = 1 + 0.5 * 4 - 2 = 1;  delta_0 = 0 + 0.5 * 2 - 1 = 0
    # A_1 = 1;  A_0 = 0 + 0.25 * 1 = 0.25;  returns = A + V = [1.25, 3]
    adv, ret = gae(
        torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), torch.zeros(2), 0.5, 0.5, torch.tensor(4.0)
    )
    torch.testing.assert_close(adv, torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(ret, torch.tensor([1.25, 3.0]))


def test_gae_default_last_value_and_checks():
    adv, _ = gae(torch.ones(2), torch.zeros(2), torch.zeros(2), 1.0, 1.0)
    assert adv.tolist() == [2.0, 1.0]  # last_value defaults to 0
    with pytest.raises(ValueError, match="share a shape"):
        gae(torch.ones(2), torch.zeros(3), torch.zeros(2), 1.0, 1.0)


gae_inputs = st.tuples(st.integers(1, 8), st.integers(1, 3)).flatmap(
    lambda tn: st.tuples(
        hnp.arrays(np.float64, tn, elements=st.floats(-2, 2)),
        hnp.arrays(np.float64, tn, elements=st.floats(-2, 2)),
        hnp.arrays(np.bool_, tn),
        hnp.arrays(np.float64, tn[1], elements=st.floats(-2, 2)),
    )
)


@FAST
@given(gae_inputs, st.floats(0, 1), st.floats(0, 1))
def test_gae_matches_loop_per_env(data, gamma, lam):
    rewards, values, dones, last = data  # [T, N], [T, N], [T, N], [N]
    adv, ret = gae(
        *(torch.from_numpy(x) for x in (rewards, values, dones)), gamma, lam, torch.from_numpy(last)
    )
    for env in range(rewards.shape[1]):
        ref_adv, ref_ret = ref_gae(
            rewards[:, env].tolist(),
            values[:, env].tolist(),
            dones[:, env].tolist(),
            gamma,
            lam,
            float(last[env]),
        )
        torch.testing.assert_close(adv[:, env], torch.tensor(ref_adv, dtype=torch.float64))
        torch.testing.assert_close(ret[:, env], torch.tensor(ref_ret, dtype=torch.float64))
    # the 1-D form is the same computation
    adv0, _ = gae(
        *(torch.from_numpy(x[:, 0]) for x in (rewards, values, dones)), gamma, lam, torch.tensor(last[0])
    )
    torch.testing.assert_close(adv0, adv[:, 0])


@FAST
@given(gae_inputs, st.floats(0, 1))
def test_gae_lambda_one_is_monte_carlo_and_zero_is_td(data, gamma):
    rewards, values, dones, last = (torch.from_numpy(x) for x in data)
    _, ret = gae(rewards, values, dones, gamma, 1.0, last)
    mc, next_return = torch.empty_like(rewards), last
    for t in reversed(range(rewards.shape[0])):
        next_return = rewards[t] + gamma * next_return * (~dones[t])
        mc[t] = next_return
    torch.testing.assert_close(ret, mc)
    adv, _ = gae(rewards, values, dones, gamma, 0.0, last)
    next_values = torch.cat([values[1:], last[None]])
    torch.testing.assert_close(adv, rewards + gamma * next_values * (~dones) - values)


# ---- registry --------------------------------------------------------------------------------------


def test_advantage_registry():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert {"grpo", "grpo_batch", "dr_grpo", "rloo", "w_reinforce", "psr", "nsr"} <= set(ADVANTAGE_ESTIMATORS)
    for name in ADVANTAGE_ESTIMATORS:
        adv = get_advantage_estimator(name)(rewards, 2)
        assert adv.shape == (4,) and torch.isfinite(adv).all(), name
    torch.testing.assert_close(
        ADVANTAGE_ESTIMATORS["dr_grpo"](rewards, 2), torch.tensor([0.5, -0.5, 0.0, 0.0])
    )
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["rloo"](rewards, 2), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    # reward > 0 counts as correct
    torch.testing.assert_close(
        ADVANTAGE_ESTIMATORS["w_reinforce"](rewards, 2), torch.tensor([0.1, -1.0, -1.0, -1.0])
    )
    with pytest.raises(KeyError, match="unknown advantage estimator 'ppo'.*dr_grpo, grpo"):
        get_advantage_estimator("ppo")
    assert math.isfinite(float(ADVANTAGE_ESTIMATORS["grpo"](rewards, 2, eps=1e-6)[0]))
