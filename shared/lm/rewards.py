"""Reward functions: plain functions over a batch that return typed, named scores.

A reward function takes the decoded completions and their dataset items and returns one
`RewardScore` per completion::

    @REWARDS.register("diag.exact")
    def exact(completions: list[str], items: list[dict]) -> list[RewardScore]: ...

Configs name reward functions by registry name or by dotted path (``my_pkg.rewards:fn``); a track
may also hand the loop a configured callable (an object with a ``name``) instead of a name. A
function that raises is retried sample by sample; a sample that still raises scores 0 with the
reason recorded, and training goes on (the count is a metric).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared.registry import Registry


@dataclass
class RewardScore:
    overall: float
    """The scalar the optimiser sees."""
    components: dict[str, float] = field(default_factory=dict)
    """Named parts (format, accuracy, ...), logged separately."""
    reason: str | None = None
    """Why a sample failed (unparsable answer, unrenderable SVG, a raising reward function)."""
    correct: bool | None = None
    """Verifiable success, for pass@k; None when the task has no notion of it."""


RewardFn = Callable[[list[str], list[dict]], list[RewardScore]]
REWARDS: Registry[RewardFn] = Registry("reward function")


def resolve_reward(name: str) -> RewardFn:
    """A registered reward by name, or ``package.module:function`` / ``package.module.function``."""
    if name in REWARDS:
        return REWARDS.get(name)
    if ":" in name or "." in name:
        module, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"reward {name!r} is not registered ({', '.join(REWARDS)}) and cannot be "
                             f"imported ({err})") from err
    return REWARDS.get(name)  # raises, listing the registered names


@dataclass
class ScoredBatch:
    overall: list[float]
    components: dict[str, list[float]]
    reasons: list[str | None]
    correct: list[bool | None]
    failures: int
    """Samples whose reward function raised (scored 0)."""


def _safe_scores(fn: RewardFn, name: str, completions: list[str], items: list[dict]) -> tuple[list, int]:
    try:
        scores = fn(completions, items)
        if len(scores) != len(completions):
            raise ValueError(f"returned {len(scores)} scores for {len(completions)} completions")
        return list(scores), 0
    except Exception:  # noqa: BLE001 - retry one by one to isolate the bad sample
        pass
    out, failures = [], 0
    for completion, item in zip(completions, items, strict=True):
        try:
            out.append(fn([completion], [item])[0])
        except Exception as err:  # noqa: BLE001 - a bad sample costs its reward, not the run
            failures += 1
            out.append(RewardScore(0.0, reason=f"{name} raised {type(err).__name__}: {err}"))
    return out, failures


def reward_label(name: str | RewardFn) -> str:
    """How a reward is named in metrics: its registry name, or a callable's ``name`` (else its __name__)."""
    if isinstance(name, str):
        return name
    return str(getattr(name, "name", None) or getattr(name, "__name__", type(name).__name__))


def score_batch(
    names: Sequence[str | RewardFn], weights: Sequence[float], completions: list[str], items: list[dict]
) -> ScoredBatch:
    """Weighted sum of the reward functions (names or callables) over a batch; never raises for a bad sample."""
    n = len(completions)
    overall = [0.0] * n
    components: dict[str, list[float]] = {}
    reasons: list[str | None] = [None] * n
    correct: list[bool | None] = [None] * n
    failures = 0
    for name, weight in zip(names, weights, strict=True):
        fn, label = (resolve_reward(name) if isinstance(name, str) else name), reward_label(name)
        scores, failed = _safe_scores(fn, label, completions, items)
        failures += failed
        for i, score in enumerate(scores):
            value = float(score.overall)
            if not math.isfinite(value):
                value, score.reason = 0.0, score.reason or f"{label} returned a non-finite reward"
            overall[i] += weight * value
            reasons[i] = reasons[i] or score.reason
            if score.correct is not None:  # a reward with no notion of success leaves the verdict alone
                correct[i] = score.correct if correct[i] is None else (correct[i] and score.correct)
            for key, val in score.components.items():
                components.setdefault(f"{label}/{key}", [math.nan] * n)[i] = float(val)
    return ScoredBatch(overall, components, reasons, correct, failures)
