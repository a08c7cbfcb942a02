"""shared.rl policy losses (ppo_clip, gspo, cispo, reinforce), clip fraction and aggregation."""

import functools
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rl import AGGREGATIONS, POLICY_LOSSES, aggregate, get_policy_loss, policy_loss, ppo_clip_fraction

FAST = settings(max_examples=50, deadline=None)
KINDS = ["ppo_clip", "gspo", "cispo", "reinforce"]
MODES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]
F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


def loss_and_grad(kind, logp, old_logp, adv, mask, reduce=lambda x: x.sum(), **params):
    """(per-token loss, d reduce(loss) / d logp)."""
    logp = logp.clone().requires_grad_(True)
    token_loss = policy_loss(kind, logp, old_logp, adv, mask, **params)
    (grad,) = torch.autograd.grad(reduce(token_loss), logp)
    return token_loss.detach(), grad


# ---- plain-loop references: per-token loss and d(sum of losses)/d logp_t ---------------------------


def ref_policy_loss(kind, logp, old_logp, adv, mask, clip_low=0.2, clip_high=None, dual_clip=None):
    """Lists of lists in, (loss, grad) lists of lists out; adv is per sequence or per token."""
    clip_high = clip_low if clip_high is None else clip_high
    B, T = len(logp), len(logp[0])
    loss = [[0.0] * T for _ in range(B)]
    grad = [[0.0] * T for _ in range(B)]
    for b in range(B):
        valid = [i for i in range(T) if mask[b][i]]
        seq_ratio = math.exp(sum(logp[b][i] - old_logp[b][i] for i in valid) / max(len(valid), 1))
        for i in valid:
            a = adv[b][i] if isinstance(adv[b], list) else adv[b]
            r = math.exp(logp[b][i] - old_logp[b][i])
            if kind == "reinforce":
                loss[b][i], grad[b][i] = -a * logp[b][i], -a
            elif kind == "cispo":
                w = min(r, 1 + clip_high)
                loss[b][i], grad[b][i] = -w * a * logp[b][i], -w * a
            else:
                rr = seq_ratio if kind == "gspo" else r
                loss[b][i], grad[b][i] = ref_ppo_token(rr, a, clip_low, clip_high, dual_clip)
    return loss, grad


def ref_ppo_token(r, a, clip_low, clip_high, dual_clip):
    """One token of PPO-clip: (loss, d loss / d log r)."""
    clipped_r = min(max(r, 1 - clip_low), 1 + clip_high)
    unclipped, clipped = -a * r, -a * clipped_r
    if unclipped >= clipped:
        loss, grad = unclipped, -a * r
    else:
        loss, grad = clipped, 0.0  # the clipped branch is a constant
    if dual_clip is not None and a < 0 and loss > -dual_clip * a:
        loss, grad = -dual_clip * a, 0.0
    return loss, grad


def ref_aggregate(loss, mask, mode, max_len=None):
    B = len(loss)
    sums = [sum(v for v, m in zip(row, mrow, strict=True) if m) for row, mrow in zip(loss, mask, strict=True)]
    counts = [sum(1 for m in mrow if m) for mrow in mask]
    if mode == "token_mean":
        return sum(sums) / max(sum(counts), 1)
    if mode == "seq_mean_token_mean":
        means = [s / c for s, c in zip(sums, counts, strict=True) if c > 0]
        return sum(means) / len(means) if means else 0.0
    if mode == "seq_mean_token_sum":
        return sum(sums) / max(B, 1)
    return sum(sums) / (max(B, 1) * max_len)


# ---- strategies ------------------------------------------------------------------------------------


@st.composite
def pg_batches(draw, max_b=4, max_t=6):
    """(logp, old_logp, advantages, mask) as float64 tensors; advantages per sequence or per token."""
    b, T = draw(st.integers(1, max_b)), draw(st.integers(1, max_t))
    logps = st.floats(-6, 0)
    logp = draw(hnp.arrays(np.float64, (b, T), elements=logps))
    old_logp = draw(hnp.arrays(np.float64, (b, T), elements=logps))
    mask = draw(hnp.arrays(np.bool_, (b, T)))
    adv_shape = (b, T) if draw(st.booleans()) else (b,)
    adv = draw(hnp.arrays(np.float64, adv_shape, elements=st.floats(-2, 2)))
    return tuple(torch.from_numpy(x) for x in (logp, old_logp, adv, mask))


garbage = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 50.0, -50.0, 0.0])
clips = st.floats(0.01, 0.5)


# ---- hand-worked examples --------------------------------------------------------------------------


def test_ppo_clip_by_hand():
    # ratios r = [1.5, 0.5, 1.1, 1.5] (old_logp = 0), per-token A = [1, -1, 1, -1], clip 0.2
    logp, old = torch.log(t([[1.5, 0.5, 1.1, 1.5]])), torch.zeros(1, 4, dtype=F64)
    adv, mask = t([[1.0, -1.0, 1.0, -1.0]]), torch.ones(1, 4, dtype=torch.bool)
    loss, grad = loss_and_grad("ppo_clip", logp, old, adv, mask)
    # t0: -min(1.5 * 1, 1.2 * 1) = -1.2 (clipped, grad 0);  t1: -min(-0.5, -0.8) = 0.8 (clipped, grad 0)
    # t2: -min(1.1, 1.1) = -1.1, grad -A r = -1.1;        t3: -min(-1.5, -1.2) = 1.5, grad -A r = 1.5
    torch.testing.assert_close(loss, t([[-1.2, 0.8, -1.1, 1.5]]))
    torch.testing.assert_close(grad, t([[0.0, 0.0, -1.1, 1.5]]))
    # clip-higher 0.28: t0 becomes -1.28; dual clip c = 1.4 caps t3 at -c A = 1.4 (grad 0)
    loss, grad = loss_and_grad("ppo_clip", logp, old, adv, mask, clip_high=0.28, dual_clip=1.4)
    torch.testing.assert_close(loss, t([[-1.28, 0.8, -1.1, 1.4]]))
    torch.testing.assert_close(grad, t([[0.0, 0.0, -1.1, 0.0]]))


def test_ppo_clip_fraction_by_hand():
    # same four tokens: t0 (A > 0, r > 1.2) and t1 (A < 0, r < 0.8) are clipped, t2 and t3 are not;
    # a fifth, masked token (clipped if it counted) is ignored -> 2 / 4
    logp, old = torch.log(t([[1.5, 0.5, 1.1, 1.5, 3.0]])), torch.zeros(1, 5, dtype=F64)
    adv, mask = t([[1.0, -1.0, 1.0, -1.0, 1.0]]), torch.tensor([[1, 1, 1, 1, 0]])
    assert float(ppo_clip_fraction(logp, old, adv, mask)) == pytest.approx(0.5)
    assert float(ppo_clip_fraction(logp, old, adv, mask, clip_high=0.6)) == pytest.approx(0.25)
    assert float(ppo_clip_fraction(logp, old, adv, torch.zeros(1, 5))) == 0.0


def test_gspo_by_hand():
    # seq 0: log-ratios [log 2, 0, (pad)] -> s = exp(log 2 / 2) = 1.41421 > 1.2, A = 1 -> loss -1.2, clipped
    # seq 1: log-ratios [0.1, -0.1, 0] -> s = 1, A = -2 -> loss -(-2 * 1) = 2, grad per token -A s = 2
    logp = t([[math.log(2), 0.0, 9.0], [0.1, -0.1, 0.0]])
    old, adv, mask = torch.zeros(2, 3, dtype=F64), t([1.0, -2.0]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, grad = loss_and_grad("gspo", logp, old, adv, mask)
    torch.testing.assert_close(loss, t([[-1.2, -1.2, 0.0], [2.0, 2.0, 2.0]]))
    torch.testing.assert_close(grad, t([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]))
    # seq_mean_token_mean: (-1.2 + 2) / 2 = 0.4; grad on seq 1 tokens = 2 * (1/3) * (1/2) = 1/3
    loss, grad = loss_and_grad(
        "gspo", logp, old, adv, mask, lambda x: aggregate(x, mask, "seq_mean_token_mean")
    )
    torch.testing.assert_close(grad[1], t([1 / 3, 1 / 3, 1 / 3]))


def test_cispo_by_hand():
    # logp = [-1, -2], r = [2, 0.5], A = 1
    logp = t([[-1.0, -2.0]])
    old = logp - torch.log(t([[2.0, 0.5]]))
    adv, mask = t([1.0]), torch.ones(1, 2)
    # default: upper bound 1 + 0.2, no lower bound -> w = [1.2, 0.5]; loss -w A logp = [1.2, 1.0]; grad -w A
    loss, grad = loss_and_grad("cispo", logp, old, adv, mask)
    torch.testing.assert_close(loss, t([[1.2, 1.0]]))
    torch.testing.assert_close(grad, t([[-1.2, -0.5]]))
    # clip_low = 0.2 adds the lower bound 0.8 -> w = [1.2, 0.8]
    loss, grad = loss_and_grad("cispo", logp, old, adv, mask, clip_low=0.2)
    torch.testing.assert_close(loss, t([[1.2, 1.6]]))
    torch.testing.assert_close(grad, t([[-1.2, -0.8]]))
    # clip_high = 4: nothing clipped -> w = r = [2, 0.5]
    _, grad = loss_and_grad("cispo", logp, old, adv, mask, clip_high=4.0)
    torch.testing.assert_close(grad, t([[-2.0, -0.5]]))


def test_reinforce_by_hand():
    # -A logp with A per sequence [2, -1]; old_logp may be None; the masked token gives 0
    logp, adv, mask = t([[-0.5, -1.0], [-2.0, -3.0]]), t([2.0, -1.0]), torch.tensor([[1, 1], [1, 0]])
    loss, grad = loss_and_grad("reinforce", logp, None, adv, mask)
    torch.testing.assert_close(loss, t([[1.0, 2.0], [-2.0, 0.0]]))
    torch.testing.assert_close(grad, t([[-2.0, -2.0], [1.0, 0.0]]))


def test_aggregate_by_hand():
    loss = t([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # row 2 has no valid token
    # token_mean: (1 + 2 + 3 + 4) / 4 = 2.5
    assert float(aggregate(loss, mask, "token_mean")) == pytest.approx(2.5)
    # seq_mean_token_mean: rows 0 and 1 only: (6/3 + 4/1) / 2 = 3
    assert float(aggregate(loss, mask, "seq_mean_token_mean")) == pytest.approx(3.0)
    # seq_mean_token_sum: (6 + 4 + 0) / 3 = 3.3333
    assert float(aggregate(loss, mask, "seq_mean_token_sum")) == pytest.approx(10 / 3)
    # Dr. GRPO: 10 / (3 * 5) with max_len = 5
    assert float(aggregate(loss, mask, "seq_mean_token_sum_norm", max_len=5)) == pytest.approx(10 / 15)


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_empty_is_zero_not_nan(mode):
    loss = torch.full((2, 3), math.nan, requires_grad=True)
    out = aggregate(loss, torch.zeros(2, 3), mode, max_len=3)
    assert float(out.detach()) == 0.0
    (grad,) = torch.autograd.grad(out, loss)
    assert torch.equal(grad, torch.zeros(2, 3))
    assert float(aggregate(torch.zeros(0, 3), torch.zeros(0, 3), mode, max_len=3)) == 0.0


def test_errors_name_the_problem():
    x, m = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="needs max_len"):
        aggregate(x, m, "seq_mean_token_sum_norm")
    with pytest.raises(KeyError, match="unknown loss aggregation 'mean'.*token_mean"):
        aggregate(x, m, "mean")
    with pytest.raises(KeyError, match="unknown policy loss 'ppo'.*cispo, gspo, ppo_clip, reinforce"):
        policy_loss("ppo", x, x, torch.zeros(2), m)
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss("ppo_clip", x, x, torch.zeros(3), m)
    with pytest.raises(ValueError, match="same shape"):
        policy_loss("ppo_clip", x, torch.zeros(2, 4), torch.zeros(2), m)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        policy_loss("ppo_clip", x, x, torch.zeros(2), m, dual_clip=0.5)
    with pytest.raises(TypeError, match="clip_low"):
        policy_loss("reinforce", x, x, torch.zeros(2), m, clip_low=0.2)
    assert set(KINDS) <= set(POLICY_LOSSES) and set(MODES) <= set(AGGREGATIONS)
    assert get_policy_loss("ppo_clip") is POLICY_LOSSES["ppo_clip"]


# ---- loop references on random inputs ----------------------------------------------------------------


@FAST
@given(pg_batches(), st.sampled_from(KINDS), clips, clips, st.none() | st.floats(1.5, 4))
def test_policy_losses_match_loop(batch, kind, clip_low, clip_high, dual_clip):
    logp, old, adv, mask = batch
    params = {"ppo_clip": dict(clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip),
              "gspo": dict(clip_low=clip_low, clip_high=clip_high),
              "cispo": dict(clip_high=clip_high), "reinforce": {}}[kind]  # fmt: skip
    loss, grad = loss_and_grad(kind, logp, old, adv, mask, **params)
    ref_loss, ref_grad = ref_policy_loss(
        kind, logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), **params
    )
    torch.testing.assert_close(loss, t(ref_loss))
    torch.testing.assert_close(grad, t(ref_grad))


@FAST
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(0, 4), st.integers(1, 5)), elements=st.floats(-5, 5)),
    st.data(),
)
def test_aggregate_matches_loop(loss, data):
    mask = data.draw(hnp.arrays(np.bool_, loss.shape))
    for mode in MODES:
        got = aggregate(torch.from_numpy(loss), torch.from_numpy(mask), mode, max_len=7)
        assert float(got) == pytest.approx(ref_aggregate(loss.tolist(), mask.tolist(), mode, 7), abs=1e-12)


@FAST
@given(pg_batches(), clips, clips)
def test_clip_fraction_matches_loop(batch, clip_low, clip_high):
    logp, old, adv, mask = batch
    adv_bt = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv
    clipped = valid = 0
    for lp, op, a, m in zip(
        logp.flatten().tolist(),
        old.flatten().tolist(),
        adv_bt.flatten().tolist(),
        mask.flatten().tolist(),
        strict=True,
    ):
        if m:
            valid += 1
            r = math.exp(lp - op)
            clipped += (a > 0 and r > 1 + clip_high) or (a < 0 and r < 1 - clip_low)
    got = float(ppo_clip_fraction(logp, old, adv, mask, clip_low, clip_high))
    assert got == pytest.approx(clipped / max(valid, 1))


# ---- properties --------------------------------------------------------------------------------------


@FAST
@given(pg_batches(), st.sampled_from(KINDS))
def test_zero_advantage_gives_zero_gradient(batch, kind):
    logp, old, adv, mask = batch
    for mode in MODES:
        reduce = functools.partial(aggregate, mask=mask, mode=mode, max_len=6)
        _, grad = loss_and_grad(kind, logp, old, torch.zeros_like(adv), mask, reduce)
        assert torch.equal(grad, torch.zeros_like(grad)), mode


@FAST
@given(pg_batches(), st.sampled_from(KINDS), st.integers(1, 3), st.data())
def test_padding_changes_neither_value_nor_gradient(batch, kind, n_pad, data):
    logp, old, adv, mask = batch
    B, T = logp.shape

    def with_garbage(x):
        """x [B, T] with masked entries replaced by garbage and n_pad garbage columns appended."""
        trash = data.draw(hnp.arrays(np.float64, (B, T + n_pad), elements=garbage))
        out = torch.from_numpy(trash)
        out[:, :T] = torch.where(mask, x, out[:, :T])
        return out

    padded_mask = torch.cat([mask, torch.zeros(B, n_pad, dtype=torch.bool)], dim=1)
    padded_adv = with_garbage(adv) if adv.dim() == 2 else adv
    for mode in MODES:
        value, grad = _value_and_grad(kind, logp, old, adv, mask, mode)
        p_value, p_grad = _value_and_grad(
            kind, with_garbage(logp), with_garbage(old), padded_adv, padded_mask, mode
        )
        torch.testing.assert_close(p_value, value)
        torch.testing.assert_close(p_grad[:, :T], grad)
        assert torch.equal(p_grad[~padded_mask], torch.zeros((~padded_mask).sum().item(), dtype=F64)), mode


def _value_and_grad(kind, logp, old, adv, mask, mode):
    logp = logp.clone().requires_grad_(True)
    value = aggregate(policy_loss(kind, logp, old, adv, mask), mask, mode, max_len=6)
    (grad,) = torch.autograd.grad(value, logp)
    return value.detach(), grad


@FAST
@given(pg_batches(), clips, clips, st.floats(1.5, 4))
def test_ppo_clip_bounds_and_dead_gradients(batch, clip_low, clip_high, c):
    logp, old, adv, mask = batch
    adv = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old)
    for dual_clip in (None, c):
        loss, grad = loss_and_grad(
            "ppo_clip", logp, old, adv, mask, clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip
        )
        pos, neg = mask & (adv > 0), mask & (adv < 0)
        # the objective A*r cannot be pushed past the clip range: loss >= -(1 + hi) A for A > 0,
        # loss >= (1 - lo) |A| for A < 0; and with dual clip, loss <= c |A| for A < 0
        assert (loss[pos] >= -(1 + clip_high) * adv[pos] - 1e-12).all()
        assert (loss[neg] >= (1 - clip_low) * -adv[neg] - 1e-12).all()
        # beyond the range, in the direction that improves the objective, the gradient is exactly 0
        assert (grad[pos & (ratio > (1 + clip_high) * (1 + 1e-9))] == 0).all()
        assert (grad[neg & (ratio < (1 - clip_low) * (1 - 1e-9))] == 0).all()
        # inside the range the gradient is the plain -A r
        inside = mask & (ratio > (1 - clip_low) * (1 + 1e-9)) & (ratio < (1 + clip_high) * (1 - 1e-9))
        torch.testing.assert_close(grad[inside], (-adv * ratio)[inside])
        if dual_clip is not None:
            assert (loss[neg] <= dual_clip * -adv[neg] + 1e-12).all()
            assert (grad[neg & (ratio > dual_clip * (1 + 1e-9))] == 0).all()


@FAST
@given(pg_batches(), clips, clips)
def test_gspo_token_form_has_the_sequence_level_gradient(batch, clip_low, clip_high):
    """With [B] advantages and seq_mean_token_mean, GSPO's token form equals the paper's sequence form."""
    logp, old, adv, mask = batch
    adv = adv if adv.dim() == 1 else adv[:, 0]
    _, grad = loss_and_grad(
        "gspo", logp, old, adv, mask, lambda x: aggregate(x, mask, "seq_mean_token_mean"),
        clip_low=clip_low, clip_high=clip_high,
    )  # fmt: skip
    lp = logp.clone().requires_grad_(True)
    n_valid = mask.sum(1)
    s = torch.exp(((lp - old) * mask).sum(1) / n_valid.clamp(min=1))  # [B], differentiable
    seq_loss = torch.maximum(-adv * s, -adv * torch.clamp(s, 1 - clip_low, 1 + clip_high))
    (ref_grad,) = torch.autograd.grad(seq_loss[n_valid > 0].sum() / max(int((n_valid > 0).sum()), 1), lp)
    torch.testing.assert_close(grad, ref_grad)


@FAST
@given(pg_batches(), clips)
def test_cispo_never_drops_a_token(batch, clip_high):
    logp, old, adv, mask = batch
    adv = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv
    _, grad = loss_and_grad("cispo", logp, old, adv, mask, clip_high=clip_high)
    weight = torch.exp(logp - old).clamp(max=1 + clip_high)
    torch.testing.assert_close(grad, torch.where(mask, -weight * adv, torch.zeros((), dtype=F64)))


@FAST
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 5)), elements=st.floats(-5, 5)),
    st.integers(1, 3),
    st.data(),
)
def test_aggregate_ignores_garbage_under_the_mask(loss, n_pad, data):
    mask = torch.from_numpy(data.draw(hnp.arrays(np.bool_, loss.shape)))
    B, T = loss.shape
    trash = torch.from_numpy(data.draw(hnp.arrays(np.float64, (B, T + n_pad), elements=garbage)))
    padded = torch.cat([torch.where(mask, torch.from_numpy(loss), trash[:, :T]), trash[:, T:]], 1)
    padded_mask = torch.cat([mask, torch.zeros(B, n_pad, dtype=torch.bool)], 1)
    for mode in MODES:
        x, px = torch.from_numpy(loss).requires_grad_(True), padded.clone().requires_grad_(True)
        value, p_value = aggregate(x, mask, mode, max_len=9), aggregate(px, padded_mask, mode, max_len=9)
        torch.testing.assert_close(p_value, value)
        (grad,), (p_grad,) = torch.autograd.grad(value, x), torch.autograd.grad(p_value, px)
        torch.testing.assert_close(p_grad[:, :T], grad)
        assert torch.equal(p_grad[~padded_mask], torch.zeros(int((~padded_mask).sum()), dtype=F64))
