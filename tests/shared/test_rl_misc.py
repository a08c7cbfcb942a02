"""shared.rl KL estimators, token entropy, forking tokens, DAPO sampling, pass@k / mean@k, Registry."""

import math
from fractions import Fraction

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rl import (
    KL_ESTIMATORS,
    Registry,
    UnknownNameError,
    dynamic_sampling_keep,
    forking_token_mask,
    get_kl_estimator,
    kl,
    mean_at_k,
    overlong_penalty,
    pass_at_k,
    pass_at_k_from_scores,
    token_entropy,
)

FAST = settings(max_examples=50, deadline=None)
F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


# ---- kl --------------------------------------------------------------------------------------------


def test_kl_by_hand():
    logp, ref = t([0.0, -1.0]), t([-1.0, 0.0])  # log_ratio = [1, -1]
    # k1 = [1, -1]; k2 = 0.5 * [1, 1]; k3 = exp(-lr) + lr - 1 = [e^-1 + 0, e^1 - 2] = [0.36788, 0.71828]
    torch.testing.assert_close(kl(logp, ref, "k1"), t([1.0, -1.0]))
    torch.testing.assert_close(kl(logp, ref, "k2"), t([0.5, 0.5]))
    torch.testing.assert_close(kl(logp, ref, "k3"), t([math.exp(-1), math.e - 2]))
    # k3 clamps ref_logp - logp to 20: exp(20) - 20 - 1, finite
    assert float(kl(t([-1000.0]), t([0.0]), "k3")) == pytest.approx(math.exp(20) - 21)
    with pytest.raises(KeyError, match="unknown KL estimator 'k4'.*k1, k2, k3"):
        kl(logp, ref, "k4")
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"} and get_kl_estimator("k2") is KL_ESTIMATORS["k2"]


logps = hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(-15, 0))


@FAST
@given(logps, st.data())
def test_kl_matches_loop_and_is_nonnegative(logp, data):
    ref = data.draw(hnp.arrays(np.float64, logp.shape, elements=st.floats(-15, 0)))
    refs = {
        "k1": [a - b for a, b in zip(logp, ref, strict=True)],
        "k2": [0.5 * (a - b) ** 2 for a, b in zip(logp, ref, strict=True)],
        "k3": [math.exp(b - a) - (b - a) - 1 for a, b in zip(logp, ref, strict=True)],
    }
    for name, expected in refs.items():
        got = kl(torch.from_numpy(logp), torch.from_numpy(ref), name)
        torch.testing.assert_close(got, t(expected), rtol=1e-9, atol=1e-9)
    for lp, rf in ((logp, ref), (logp.astype(np.float32), ref.astype(np.float32))):
        assert (kl(torch.from_numpy(lp), torch.from_numpy(rf), "k3") >= 0).all()
        assert (kl(torch.from_numpy(lp), torch.from_numpy(rf), "k2") >= 0).all()
        for name in KL_ESTIMATORS:  # zero when the policies agree
            assert torch.equal(
                kl(torch.from_numpy(lp), torch.from_numpy(lp), name),
                torch.zeros(lp.shape, dtype=torch.from_numpy(lp).dtype),
            )


# ---- token_entropy ---------------------------------------------------------------------------------


def naive_entropy(logits):
    p = torch.softmax(logits.double(), dim=-1)
    return -(p * torch.log_softmax(logits.double(), dim=-1)).sum(-1)


def test_token_entropy_by_hand():
    # uniform over 4 -> log 4 = 1.38629; one (nearly) certain token -> ~0;
    # [0, 0, -inf]: uniform over the two allowed tokens -> log 2 = 0.69315
    logits = t([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(token_entropy(logits), t([math.log(4), 0.0]), atol=1e-12, rtol=0)
    torch.testing.assert_close(token_entropy(t([0.0, 0.0, -math.inf])), t(math.log(2)))
    # p = [0.5, 0.25, 0.25] -> H = 0.5 log 2 + 2 * 0.25 log 4 = 1.5 log 2
    torch.testing.assert_close(token_entropy(torch.log(t([0.5, 0.25, 0.25]))), t(1.5 * math.log(2)))
    assert token_entropy(torch.zeros(0, 5)).shape == (0,)
    assert token_entropy(torch.zeros(2, 3, dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(logits, chunk_size=0)


@FAST
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9)),
        elements=st.floats(-30, 30),
    ),
    st.integers(1, 7),
)
def test_token_entropy_matches_naive_and_loop_in_any_chunking(logits, chunk_size):
    got = token_entropy(torch.from_numpy(logits), chunk_size=chunk_size)
    assert got.shape == logits.shape[:-1]
    torch.testing.assert_close(got, naive_entropy(torch.from_numpy(logits)))
    b, s = np.ndindex(logits.shape[:-1]).__next__()  # the first row, by a plain loop
    z = logits[b, s].tolist()
    total = sum(math.exp(v - max(z)) for v in z)
    probs = [math.exp(v - max(z)) / total for v in z]
    assert float(got[b, s]) == pytest.approx(-sum(p * math.log(p) for p in probs if p > 0), abs=1e-9)
    assert (got >= -1e-9).all() and (got <= math.log(logits.shape[-1]) + 1e-9).all()


@FAST
@given(hnp.arrays(np.float64, (2, 3, 6), elements=st.floats(-5, 5)), st.integers(1, 3), st.integers(1, 4))
def test_token_entropy_of_a_row_ignores_padding_rows(logits, n_pad, chunk_size):
    logits = torch.from_numpy(logits)
    padded = torch.cat([logits, torch.full((2, n_pad, 6), 1e4, dtype=F64)], dim=1)
    torch.testing.assert_close(token_entropy(padded, chunk_size)[:, :3], token_entropy(logits, chunk_size))


def test_token_entropy_large_vocab_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 5000) * 4
    torch.testing.assert_close(
        token_entropy(logits, chunk_size=4), naive_entropy(logits).float(), atol=1e-4, rtol=1e-5
    )


# ---- forking_token_mask ----------------------------------------------------------------------------


def ref_quantile(values, q):
    """torch.quantile's linear interpolation, by hand."""
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def test_forking_token_mask_by_hand():
    entropy = t([[0.1, 0.9, 0.5, 7.0], [0.3, 0.7, 0.2, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])  # the 7.0 is padding and must not count
    # valid sorted: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9], n = 7; q = 0.2 -> quantile 0.8 at position
    # 0.8 * 6 = 4.8 -> 0.5 + 0.8 * (0.7 - 0.5) = 0.66 -> keep 0.9 and 0.7
    expected = torch.tensor([[False, True, False, False], [False, True, False, False]])
    assert torch.equal(forking_token_mask(entropy, mask, 0.2), expected)
    # q = 0.5 -> quantile 0.5 at position 3 -> 0.3 -> keep 0.3, 0.5, 0.7, 0.9
    expected = torch.tensor([[False, True, True, False], [True, True, False, False]])
    assert torch.equal(forking_token_mask(entropy, mask, 0.5), expected)
    # q = 1 keeps every valid token; an empty mask keeps none
    assert torch.equal(forking_token_mask(entropy, mask, 1.0), mask.bool())
    assert not forking_token_mask(entropy, torch.zeros_like(mask)).any()
    with pytest.raises(ValueError, match="top_quantile"):
        forking_token_mask(entropy, mask, 0.0)


entropies = st.tuples(st.integers(1, 4), st.integers(1, 8)).flatmap(
    lambda shape: st.tuples(
        hnp.arrays(np.float64, shape, elements=st.floats(0, 5) | st.sampled_from([0.0, 1.0])),
        hnp.arrays(np.bool_, shape),
    )
)


@FAST
@given(entropies, st.floats(0.01, 1.0))
def test_forking_token_mask_matches_loop_and_torch_quantile(data, q):
    entropy, mask = data
    got = forking_token_mask(torch.from_numpy(entropy), torch.from_numpy(mask), q)
    valid = entropy[mask].tolist()
    if not valid:
        assert not got.any()
        return
    threshold = ref_quantile(valid, 1 - q)
    torch_threshold = torch.quantile(torch.from_numpy(entropy)[torch.from_numpy(mask)], 1 - q)
    assert float(torch_threshold) == pytest.approx(threshold, abs=1e-12)
    assert torch.equal(got, torch.from_numpy(mask) & (torch.from_numpy(entropy) >= torch_threshold))
    # at least one token (the max) is kept, never a padded one
    assert got.any() and not (got & ~torch.from_numpy(mask)).any()


@FAST
@given(
    entropies, st.floats(0.01, 1.0), st.integers(1, 3), st.sampled_from([math.nan, math.inf, 1e9, -1.0, 0.0])
)
def test_forking_token_mask_ignores_padding(data, q, n_pad, trash):
    entropy, mask = (torch.from_numpy(x) for x in data)
    expected = forking_token_mask(entropy, mask, q)
    padded_entropy = torch.cat(
        [torch.where(mask, entropy, t(trash)), torch.full((len(entropy), n_pad), trash, dtype=F64)], 1
    )
    padded_mask = torch.cat([mask, torch.zeros(len(mask), n_pad, dtype=torch.bool)], 1)
    got = forking_token_mask(padded_entropy, padded_mask, q)
    assert torch.equal(got[:, : entropy.shape[1]], expected) and not got[:, entropy.shape[1] :].any()


# ---- dynamic_sampling_keep / overlong_penalty ------------------------------------------------------


def test_dynamic_sampling_by_hand():
    rewards = t([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5 + 1e-9])
    # groups of 2: [1, 1] all equal -> drop; [0, 1] keep; [0, 0] drop;
    # [0.5, 0.5 + 1e-9] equal within 1e-6 -> drop
    expected = [False, False, True, True, False, False, False, False]
    assert dynamic_sampling_keep(rewards, 2).tolist() == expected
    assert dynamic_sampling_keep(rewards, 2, tol=0.0).tolist()[-2:] == [True, True]
    # tol=0 is exact equality
    assert dynamic_sampling_keep(t([0.0, 0.0, 1.0, 1.0]), 2, tol=0.0).tolist() == [False] * 4
    with pytest.raises(ValueError, match="multiple of group_size"):
        dynamic_sampling_keep(rewards, 3)


@FAST
@given(st.integers(1, 4), st.integers(1, 5), st.data())
def test_dynamic_sampling_matches_loop(group_size, n_groups, data):
    rewards = data.draw(
        hnp.arrays(np.float64, group_size * n_groups, elements=st.sampled_from([0.0, 1.0, 0.5]))
    )
    expected = []
    for g in range(n_groups):
        group = rewards[g * group_size : (g + 1) * group_size].tolist()
        expected += [max(group) - min(group) > 1e-6] * group_size
    assert dynamic_sampling_keep(torch.from_numpy(rewards), group_size).tolist() == expected


def test_overlong_penalty_by_hand():
    # max_len 10, buffer 4 -> L_exp = 6: L <= 6 -> 0; 8 -> (6 - 8) / 4 = -0.5; 10 -> -1; 11 -> -factor
    lengths = torch.tensor([1, 6, 8, 9, 10, 11])
    torch.testing.assert_close(
        overlong_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.5, -0.75, -1.0, -1.0])
    )
    torch.testing.assert_close(
        overlong_penalty(lengths, 10, 4, factor=2.0)[[2, 5]], torch.tensor([-1.0, -2.0])
    )
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(lengths, 10, 0)


@FAST
@given(
    hnp.arrays(np.int64, st.integers(0, 10), elements=st.integers(0, 40)),
    st.integers(1, 30),
    st.data(),
    st.floats(0, 3),
)
def test_overlong_penalty_matches_loop(lengths, max_len, data, factor):
    buffer_len = data.draw(st.integers(1, max_len))
    expected = []
    for length in lengths.tolist():
        if length <= max_len - buffer_len:
            expected.append(0.0)
        elif length <= max_len:
            expected.append((max_len - buffer_len - length) / buffer_len * factor)
        else:
            expected.append(-factor)
    got = overlong_penalty(torch.from_numpy(lengths), max_len, buffer_len, factor)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype))


# ---- pass@k / mean@k -------------------------------------------------------------------------------


def exact_pass_at_k(n, c, k):
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_pass_at_k_by_hand():
    # n = 4, c = 1, k = 2: 1 - C(3, 2) / C(4, 2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n = 5, c = 2, k = 2: 1 - C(3, 2) / C(5, 2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0  # n - c < k: always a hit
    assert isinstance(pass_at_k(5, 2, 2), float)
    # vectorised: numpy in -> numpy out, torch in -> torch out
    np.testing.assert_allclose(pass_at_k(np.array([4, 5]), np.array([1, 2]), 2), [0.5, 0.7])
    torch.testing.assert_close(pass_at_k(5, torch.tensor([0, 2]), 2), t([0.0, 0.7]))
    np.testing.assert_allclose(pass_at_k(4, [[0, 1], [4, 1]], 2), [[0.0, 0.5], [1.0, 0.5]])
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        pass_at_k(4, 1, 0)


@FAST
@given(st.integers(1, 200), st.data())
def test_pass_at_k_matches_exact_and_is_monotone(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    value = pass_at_k(n, c, k)
    assert value == pytest.approx(exact_pass_at_k(n, c, k), abs=1e-9)
    assert 0.0 <= value <= 1.0
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12


@FAST
@given(st.integers(1, 30), st.data())
def test_pass_at_k_vectorised_matches_scalar(n, data):
    cs = data.draw(hnp.arrays(np.int64, st.integers(1, 12), elements=st.integers(0, n)))
    k = data.draw(st.integers(1, n))
    np.testing.assert_allclose(pass_at_k(n, cs, k), [pass_at_k(n, int(c), k) for c in cs])
    assert pass_at_k_from_scores((np.arange(n)[None, :] < cs[:, None]), k) == pytest.approx(
        np.mean([exact_pass_at_k(n, int(c), k) for c in cs])
    )


def test_pass_and_mean_at_k_from_scores_by_hand():
    correct = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    # pass@2 per item: 1 - C(3,2)/C(4,2) = 0.5;  1 - C(2,2)/C(4,2) = 5/6;  0 -> mean (0.5 + 5/6 + 0) / 3
    assert pass_at_k_from_scores(correct, 2) == pytest.approx((0.5 + 5 / 6) / 3)
    assert pass_at_k_from_scores(torch.tensor(correct, dtype=torch.bool), 1) == pytest.approx(3 / 12)
    # mean@k: mean over all n samples (unbiased for any k): (0.25 + 0.5 + 0) / 3 = 0.25
    assert mean_at_k(correct, 2) == pytest.approx(0.25) and mean_at_k(correct, 4) == mean_at_k(correct, 1)
    assert mean_at_k(np.array([[0.2, 0.4]]), 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="k <= n"):
        mean_at_k(correct, 5)
    with pytest.raises(ValueError, match=r"\[num_items, n\]"):
        pass_at_k_from_scores([1, 0], 1)


@FAST
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 6)), elements=st.floats(0, 1)),
    st.data(),
)
def test_mean_at_k_is_the_average_of_k_subset_means(scores, data):
    """mean@k = E over random k-subsets of the subset mean (checked exhaustively for one item)."""
    from itertools import combinations

    k = data.draw(st.integers(1, scores.shape[1]))
    row = scores[0].tolist()
    subset_means = [sum(s) / k for s in combinations(row, k)]
    assert mean_at_k(scores[:1], k) == pytest.approx(sum(subset_means) / len(subset_means))
    assert mean_at_k(scores, k) == pytest.approx(float(scores.mean()))


# ---- Registry --------------------------------------------------------------------------------------


def test_registry():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    reg.register("a")(len)
    assert reg.names() == ["a", "b"] and list(reg) == ["b", "a"] and len(reg) == 2 and "a" in reg
    assert reg.get("b") is b and reg["a"] is len and dict(reg.items()) == {"a": len, "b": b}
    assert reg.get("zzz", None) is None
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; valid names: a, b") as err:
        reg.get("c")
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert str(err.value) == "unknown widget 'c'; valid names: a, b"
    with pytest.raises(KeyError):
        reg["c"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(min)
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("")
    assert "widget" in repr(reg)


def test_registry_module_does_not_import_torch():
    import ast
    import inspect

    import shared.registry as registry

    tree = ast.parse(inspect.getsource(registry))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "collections", "typing"}
