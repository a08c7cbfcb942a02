"""Reward plumbing: a raising reward costs one sample, never the run."""

from __future__ import annotations

import math

import pytest

from shared.lm.rewards import REWARDS, RewardScore, resolve_reward, score_batch


def picky(completions: list[str], items: list[dict]) -> list[RewardScore]:
    """Raises on the completion 'boom', scores len() otherwise."""
    out = []
    for c in completions:
        if c == "boom":
            raise RuntimeError("cannot score boom")
        out.append(RewardScore(float(len(c)), {"len": float(len(c))}, correct=len(c) > 1))
    return out


def nan_reward(completions: list[str], items: list[dict]) -> list[RewardScore]:
    return [RewardScore(math.nan) for _ in completions]


def test_raising_sample_scores_zero_with_reason_and_is_counted() -> None:
    scored = score_batch([f"{__name__}:picky"], [1.0], ["ab", "boom", "c"], [{}, {}, {}])
    assert scored.overall == [2.0, 0.0, 1.0]
    assert scored.failures == 1
    assert "cannot score boom" in scored.reasons[1]
    assert scored.reasons[0] is None
    assert scored.components[f"{__name__}:picky/len"][0] == 2.0


def test_weights_sum_and_nonfinite_becomes_zero_with_reason() -> None:
    scored = score_batch([f"{__name__}:picky", f"{__name__}.nan_reward"], [0.5, 1.0], ["abcd"], [{}])
    # 0.5 * 4 + 1.0 * 0 (NaN replaced)
    assert scored.overall == [2.0]
    assert "non-finite" in scored.reasons[0]


def test_registry_lookup_errors_list_names() -> None:
    import shared.diag.track  # noqa: F401  (a track registers its rewards on import)

    assert resolve_reward("diag.exact") is REWARDS.get("diag.exact")
    with pytest.raises(KeyError, match="diag.exact"):
        resolve_reward("no-such-reward")
    with pytest.raises(ValueError, match="cannot be imported"):
        resolve_reward("no_such_module.sub:fn")


def test_diag_exact_components() -> None:
    from shared.diag.track import exact_answer

    s = exact_answer(["321", " 21 ", "3x1", "1234"], [{"answer": "321"}] * 4)
    assert [x.overall for x in s] == [1.0, 0.0, 0.0, 0.0]
    assert s[1].components == {"format": 1.0, "digits": 2 / 3}  # " 21" right-aligned on "321": "2", "1" right
    assert s[2].reason == "not a bare number" and s[2].correct is False


def no_verdict(completions: list[str], items: list[dict]) -> list[RewardScore]:
    """A reward with no notion of success (correct=None), like a format bonus."""
    return [RewardScore(0.5) for _ in completions]


def test_a_reward_without_verdict_leaves_correct_alone() -> None:
    scored = score_batch([f"{__name__}:picky", f"{__name__}:no_verdict"], [1.0, 1.0], ["ab", "c"], [{}, {}])
    # picky: "ab" correct (len > 1), "c" wrong; no_verdict must not turn "ab" into wrong
    assert scored.correct == [True, False]


def test_importing_rewards_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, shared.lm.rewards; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
