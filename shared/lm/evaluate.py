"""Held-out evaluation: mean@k and pass@k over a split, with traces for the gallery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shared.lm.rewards import score_batch
from shared.lm.sampling import sample_completions
from shared.lm.setup import LMSetup
from shared.rl import pass_at_k


@dataclass
class EvalResult:
    metrics: dict[str, float]
    """mean@k (mean reward), accuracy (share correct), pass@k for each k, completion length."""
    traces: list[dict[str, Any]]
    """One per item: id, question, answer, completions, rewards, correct, reasons."""


def evaluate(
    setup: LMSetup,
    items: list[dict],
    ks: Sequence[int] = (1,),
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    greedy: bool = True,
    seed: int = 1234,
    batch_prompts: int = 64,
    progress: Any = None,
) -> EvalResult:
    """Sample n = max(ks) completions per item (greedy when n == 1 and `greedy`) and score them.

    Sampling runs under a forked RNG seeded with `seed` (the CPU's and the model's CUDA device's), so
    evaluating never moves the training RNG streams (a resumed run stays identical to an uninterrupted
    one) and evals are comparable. Under data parallelism each process evaluates an equal share of the
    items (the last item repeated to even them out) and every process gets all traces, in item order.
    """
    rt = setup.runtime
    n = max(ks)
    use_greedy = greedy and n == 1
    local = _eval_share(items, rt.rank, rt.world_size) if rt.is_distributed else items
    traces: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=rt.rng_devices):
        torch.manual_seed(seed)
        for start in range(0, len(local), batch_prompts):
            chunk = local[start : start + batch_prompts]
            with rt.autocast():
                rollout = sample_completions(
                    setup.model, setup.tokenizer, setup.prompts(chunk), n, max_new_tokens, temperature,
                    setup.banned_ids, setup.eos_id, setup.pad_id, greedy=use_greedy, slicer=setup.slice_extras,
                    **rt.sampling_kwargs,
                )
            group_items = [it for it in chunk for _ in range(n)]
            scored = score_batch(setup.reward_names, setup.reward_weights, rollout.texts, group_items)
            lengths = rollout.lengths.tolist()
            for i, item in enumerate(chunk):
                rows = range(i * n, (i + 1) * n)
                traces.append({
                    "item": item,
                    "completions": [rollout.texts[r] for r in rows],
                    "rewards": [scored.overall[r] for r in rows],
                    "correct": [bool(scored.correct[r]) for r in rows],
                    "reasons": [scored.reasons[r] for r in rows],
                    "lengths": [lengths[r] for r in rows],
                })
            if progress is not None:
                progress(len(chunk))
    if rt.is_distributed:
        traces = _merge_shares(rt.gather(traces), len(items))
    return EvalResult(summarise(traces, ks), traces)


def _eval_share(items: list[dict], rank: int, world: int) -> list[dict]:
    """Items rank, rank + world, ...; padded with the last item to ceil(len / world) (equal lengths keep
    processes in lockstep)."""
    size = -(-len(items) // world)
    share = items[rank::world]
    return share + [items[-1]] * (size - len(share)) if items else []


def _merge_shares(shares: list[list[dict]], n: int) -> list[dict]:
    """Traces of `_eval_share` shares back in item order, padding dropped."""
    world = len(shares)
    return [shares[i % world][i // world] for i in range(n)]


def summarise(traces: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    """mean@n, accuracy, pass@k for each k, completion length, over per-item traces of `evaluate`."""
    if not traces:
        return {}
    n = len(traces[0]["rewards"])
    rewards = [r for t in traces for r in t["rewards"]]
    correct_counts = [sum(t["correct"]) for t in traces]
    out = {
        f"mean@{n}": sum(rewards) / len(rewards),
        "accuracy": sum(correct_counts) / (n * len(traces)),
        "completion_len": sum(sum(t["lengths"]) for t in traces) / (n * len(traces)),
        "items": float(len(traces)),
    }
    for k in ks:
        out[f"pass@{k}"] = sum(float(pass_at_k(n, c, k)) for c in correct_counts) / len(traces)
    return out
