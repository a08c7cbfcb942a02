"""One optimisation step each: warm-up SFT and group-rollout RL (GRPO / DAPO / Dr. GRPO ...).

Both return a dict of metrics and never call ``optimizer.step()`` on a non-finite loss: they
report ``nonfinite=1`` and leave the weights untouched (the trainer counts and stops).

Every tensor they build goes to ``setup.runtime.device`` and every forward pass runs under
``setup.runtime.autocast()``. Under data parallelism (`shared.lm.runtime`) each process passes its
own share of the step's items; losses are normalised by counts summed over processes and scaled by
the number of processes (whose gradients are then averaged), so the update equals one process's on
the global batch. Processes also agree on everything that decides how many passes run: a non-finite
loss skips the step on every process, a step is skipped only when no process kept a row, and a
process that kept none (or has fewer micro-batches) joins with zero-weight passes.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch

from shared.lm.config import RLConfig, TrainConfig
from shared.lm.logprobs import batch_prompt_args, completion_logprobs
from shared.lm.rewards import score_batch
from shared.lm.runtime import Runtime
from shared.lm.sampling import Rollout, sample_completions, slice_rows
from shared.lm.setup import LMSetup
from shared.rl import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    aggregate,
    dynamic_sampling_keep,
    forking_token_mask,
    kl,
    overlong_penalty,
    policy_loss,
)


class NonFiniteLoss(Exception):
    """Raised inside a step when a micro-batch loss is NaN/inf; the step is skipped."""


@functools.cache
def _keywords(loss: str) -> frozenset[str]:
    return frozenset(inspect.signature(POLICY_LOSSES.get(loss)).parameters)


def _loss_params(rl: RLConfig) -> dict[str, float]:
    """The clip ranges, for the policy losses that take them (``reinforce`` has none)."""
    accepted = _keywords(rl.loss)
    return {k: v for k, v in (("clip_low", rl.clip_low), ("clip_high", rl.clip_high)) if k in accepted}


def _micro_slices(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _apply_update(model: Any, optimizer: Any, scheduler: Any, grad_clip: float, runtime: Runtime | None = None,
                  bad: bool = False) -> float:
    """Average gradients over processes, clip, step. `bad`: this process saw a non-finite loss (under
    data parallelism it is only raised here, once every process knows, so all skip the step)."""
    rt = runtime or Runtime()
    params = [p for p in model.parameters() if p.requires_grad]
    if rt.is_distributed and rt.any(bad):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss("a process had a non-finite loss")
    rt.average_gradients(params)
    norm = rt.clip_gradients(params, grad_clip if grad_clip > 0 else float("inf"))
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"gradient norm is {float(norm)}")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def sft_step(setup: LMSetup, items: list[dict], optimizer: Any, scheduler: Any, train: TrainConfig) -> dict:
    """Cross-entropy on the target completion tokens (mean over all target tokens)."""
    model, rt = setup.model, setup.runtime
    model.train()
    prompts = setup.prompts(items)
    target_ids, target_mask = setup.encode_targets(items)
    extras = {k: v for k, v in prompts.items() if k not in ("input_ids", "attention_mask")}
    total_tokens = int(target_mask.sum())
    if rt.is_distributed:  # the global token count; x world_size cancels the averaging of gradients
        total_tokens = rt.sum([total_tokens])[0] / rt.world_size
    slicer = setup.slice_extras or slice_rows
    loss_sum, bad = 0.0, False
    try:
        for rows in _micro_slices(len(items), train.micro_batch_size):
            with rt.autocast():
                logp, _ = completion_logprobs(
                    model, prompts["input_ids"][rows], prompts["attention_mask"][rows], target_ids[rows],
                    target_mask[rows], setup.banned_tensor(), 1.0, slicer(extras, rows, len(items)),
                )
            loss = -(logp * target_mask[rows]).sum() / total_tokens
            if not torch.isfinite(loss):
                if not rt.is_distributed:
                    raise NonFiniteLoss(f"SFT loss is {float(loss.detach())}")
                bad = True  # every process must reach the update (and skip it together)
            loss.backward()
            loss_sum += float(loss.detach())
        grad_norm = _apply_update(model, optimizer, scheduler, train.grad_clip, rt, bad)
    except NonFiniteLoss:
        optimizer.zero_grad(set_to_none=True)
        return {"nonfinite": 1}
    return {"sft/loss": loss_sum, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
            "nonfinite": 0}


def _rewards_and_advantages(setup: LMSetup, rl: RLConfig, rollout: Rollout, items: list[dict]) -> tuple:
    group_items = [it for it in items for _ in range(rollout.group_size)]
    scored = score_batch(setup.reward_names, setup.reward_weights, rollout.texts, group_items)
    rewards = torch.tensor(scored.overall, dtype=torch.float32)
    if rl.overlong_buffer > 0:
        rewards = rewards + overlong_penalty(
            rollout.lengths.float().cpu(), rl.max_new_tokens, rl.overlong_buffer, rl.overlong_factor
        )
    advantages = ADVANTAGE_ESTIMATORS.get(rl.advantage)(rewards, rollout.group_size)
    keep = (dynamic_sampling_keep(rewards, rollout.group_size) if rl.dynamic_sampling
            else torch.ones_like(rewards, dtype=torch.bool))
    return scored, rewards, advantages, keep


def _weight_count(mode: str, mask: torch.Tensor) -> float:
    """What an aggregation mode divides by: valid tokens (token_mean), sequences with a valid token
    (seq_mean_token_mean) or rows (the seq_mean_token_sum modes)."""
    if mode == "token_mean":
        return float(mask.sum())
    if mode == "seq_mean_token_mean":  # sequences with no valid token do not count
        return float((mask.sum(-1) > 0).sum())
    return float(mask.shape[0])


def _micro_weight(mode: str, mask_micro: torch.Tensor, mask_all: torch.Tensor) -> float:
    """Share of a micro-batch in its mini-batch, so accumulated gradients equal the full-batch one."""
    return _weight_count(mode, mask_micro) / max(1.0, _weight_count(mode, mask_all))


def _mini_batches(n: int, rl: RLConfig, rt: Runtime) -> list[slice]:
    """The local mini-batches; under data parallelism always rl.mini_batches of them (some may be empty),
    so every process runs as many optimizer steps. Mini-batch m is then slice m of every process's rows."""
    out = list(_micro_slices(n, math.ceil(n / rl.mini_batches)))
    if rt.is_distributed:
        out += [slice(n, n)] * (rl.mini_batches - len(out))
    return out


def _token_loss(setup: LMSetup, rl: RLConfig, batch: dict, rows: slice, stats: dict) -> tuple:
    mask = batch["mask"][rows]
    need_entropy = rl.entropy_coef > 0 or rl.forking_top_quantile < 1 or any(t.needs_entropy for t in setup.loss_terms)
    logp, entropy = completion_logprobs(
        setup.model, completion_ids=batch["completion_ids"][rows], completion_mask=mask,
        banned_ids=setup.banned_tensor(), temperature=rl.temperature, with_entropy=need_entropy,
        **batch_prompt_args(setup.model, batch, rows, batch["extras_fn"]),
    )
    old = batch["old_logp"][rows]
    token_loss = policy_loss(rl.loss, logp, old, batch["advantages"][rows], mask, **_loss_params(rl))
    train_mask = mask.bool()
    if rl.forking_top_quantile < 1:
        train_mask = train_mask & forking_token_mask(entropy.detach(), mask, rl.forking_top_quantile)
    if rl.kl_coef > 0:
        token_kl = kl(logp, batch["ref_logp"][rows], rl.kl_estimator)
        token_loss = token_loss + rl.kl_coef * token_kl
        stats["kl"].append(float((token_kl.detach() * mask).sum() / mask.sum().clamp(min=1)))
    if rl.entropy_coef > 0:
        token_loss = token_loss - rl.entropy_coef * entropy
    if entropy is not None:
        stats["entropy"].append(float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1)))
    for term in setup.loss_terms:
        extra, term_stats = term.loss(setup, rl, batch, rows, logp, entropy, mask)
        token_loss = token_loss + extra
        for key, value in term_stats.items():
            stats[key].append(value)
    ratio = torch.exp(logp.detach() - old) * mask
    clipped = ((ratio > 1 + rl.clip_high) | (ratio < 1 - rl.clip_low)) & mask.bool()
    stats["clip_frac"].append(float(clipped.sum() / mask.sum().clamp(min=1)))
    return token_loss, train_mask.to(token_loss.dtype)


def _ref_logprobs(setup: LMSetup, ref_model: Any, rl: RLConfig, batch: dict, micro: int) -> torch.Tensor:
    out = []
    with torch.no_grad(), setup.runtime.autocast():
        for rows in _micro_slices(len(batch["mask"]), micro):
            lp, _ = completion_logprobs(ref_model, completion_ids=batch["completion_ids"][rows],
                                        completion_mask=batch["mask"][rows], banned_ids=setup.banned_tensor(),
                                        temperature=rl.temperature,
                                        **batch_prompt_args(ref_model, batch, rows, batch["extras_fn"]))
            out.append(lp)
    return torch.cat(out)


def _optimise(setup: LMSetup, rl: RLConfig, train: TrainConfig, batch: dict, optimizer: Any,
              scheduler: Any, timings: dict) -> dict:
    rt = setup.runtime
    stats: dict[str, list[float]] = defaultdict(list)
    n = len(batch["mask"])
    for _ in range(rl.epochs):
        for mb in _mini_batches(n, rl, rt):
            micro = [slice(mb.start + r.start, mb.start + r.stop)
                     for r in _micro_slices(mb.stop - mb.start, train.micro_batch_size)]
            weights = _micro_weights(rl, rt, batch, mb, micro)
            # lockstep (FSDP's forwards are collectives): every process runs as many passes; extra ones
            # go over the first local row with weight 0
            passes = rt.max(len(micro)) if rt.is_distributed else len(micro)
            bad = False
            for i in range(passes):
                real = i < len(micro) and not batch.get("dummy", False)
                rows = micro[i] if i < len(micro) else slice(0, 1)
                bad |= _backward(setup, rl, batch, rows, weights[i] if real else 0.0,
                                 stats if real else defaultdict(list), timings)
            t0 = time.perf_counter()
            stats["grad_norm"].append(_apply_update(setup.model, optimizer, scheduler, train.grad_clip, rt, bad))
            timings["optimizer_s"] += time.perf_counter() - t0
    return {k: sum(v) / len(v) for k, v in stats.items() if v}


def _micro_weights(rl: RLConfig, rt: Runtime, batch: dict, mb: slice, micro: list[slice]) -> list[float]:
    """Each micro-batch's share of its mini-batch; under data parallelism of the GLOBAL mini-batch
    (counts summed over processes), times world_size since the processes' gradients are averaged."""
    mode, mask = rl.aggregation, batch["mask"]
    if not rt.is_distributed:
        return [_micro_weight(mode, mask[rows], mask[mb]) for rows in micro]
    local = 0.0 if batch.get("dummy", False) else _weight_count(mode, mask[mb])
    total = rt.sum([local])[0]
    return [_weight_count(mode, mask[rows]) / max(1.0, total) * rt.world_size for rows in micro]


def _backward(setup: LMSetup, rl: RLConfig, batch: dict, rows: slice, weight: float, stats: dict,
              timings: dict) -> bool:
    """Forward and backward of one micro-batch, its loss scaled by `weight`; True when it was not finite
    (raised at once by a lone process; under data parallelism left to `_apply_update`)."""
    rt = setup.runtime
    t0 = time.perf_counter()
    with rt.autocast():
        token_loss, train_mask = _token_loss(setup, rl, batch, rows, stats)
    timings["forward_s"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = aggregate(token_loss, train_mask, rl.aggregation, max_len=rl.max_new_tokens)
    loss = loss * weight
    bad = not bool(torch.isfinite(loss))
    if bad and not rt.is_distributed:
        raise NonFiniteLoss(f"policy loss is {float(loss.detach())}")
    loss.backward()
    # per process 1/world_size of its weighted share, so the mean over processes is what one process logs
    stats["loss"].append(float(loss.detach()) / rt.world_size if rt.is_distributed else float(loss.detach()))
    timings["loss_backward_s"] += time.perf_counter() - t0
    return bad


def grpo_step(setup: LMSetup, items: list[dict], optimizer: Any, scheduler: Any, rl: RLConfig,
              train: TrainConfig, ref_model: Any = None) -> tuple[dict, Rollout, Any]:
    """Sample G completions per prompt, score, compute advantages, and update the policy."""
    timings = {"sample_s": 0.0, "reward_s": 0.0, "ref_s": 0.0, "forward_s": 0.0, "loss_backward_s": 0.0,
               "optimizer_s": 0.0}
    rt = setup.runtime
    t0 = time.perf_counter()
    with rt.autocast():
        rollout = sample_completions(setup.model, setup.tokenizer, setup.prompts(items), rl.group_size,
                                     rl.max_new_tokens, rl.temperature, setup.banned_ids, setup.eos_id, setup.pad_id,
                                     slicer=setup.slice_extras, **rt.sampling_kwargs)
    timings["sample_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored, rewards, advantages, keep = _rewards_and_advantages(setup, rl, rollout, items)
    timings["reward_s"] = time.perf_counter() - t0
    metrics = _rollout_metrics(rollout, scored, rewards, keep)
    if not (rt.any(bool(keep.any())) if rt.is_distributed else keep.any()):
        return {**metrics, "skipped_no_signal": 1, "nonfinite": 0, **{f"time/{k}": v for k, v in timings.items()}}, \
            rollout, scored
    # a process that kept no row joins the update (collectives) with its first row, masked out
    dummy = not keep.any()
    idx = torch.zeros(1, dtype=torch.long) if dummy else keep.nonzero().squeeze(-1)
    slicer = setup.slice_extras or slice_rows
    extras = rollout.model_inputs
    kept_extras = extras if keep.all() else slicer(extras, idx, len(keep))  # type: ignore[arg-type]
    mask = rollout.completion_mask[idx]
    batch = {
        "prompt_ids": rollout.prompt_ids[idx], "prompt_mask": rollout.prompt_mask[idx],
        "completion_ids": rollout.completion_ids[idx], "mask": torch.zeros_like(mask) if dummy else mask,
        "old_logp": rollout.logp[idx], "advantages": rt.to_device(advantages[idx]),
        "extras_fn": lambda rows: slicer(kept_extras, rows, len(idx)), "dummy": dummy,
        "group": idx // rollout.group_size,  # each prompt's rows share one pass over it (batch_prompt_args)
    }
    for term in setup.loss_terms:  # e.g. PAPO encodes the masked-image inputs of the kept rows
        t0 = time.perf_counter()
        term.prepare(setup, items, rollout, idx, batch)
        timings[f"{term.name}_prepare_s"] = time.perf_counter() - t0
    if rl.kl_coef > 0:
        t0 = time.perf_counter()
        batch["ref_logp"] = _ref_logprobs(setup, ref_model, rl, batch, train.micro_batch_size)
        timings["ref_s"] = time.perf_counter() - t0
    setup.model.train()
    try:
        opt_stats = _optimise(setup, rl, train, batch, optimizer, scheduler, timings)
    except NonFiniteLoss:
        optimizer.zero_grad(set_to_none=True)
        return {**metrics, "nonfinite": 1}, rollout, scored
    metrics.update(opt_stats)
    metrics.update({f"time/{k}": v for k, v in timings.items()})
    metrics.update({"lr": scheduler.get_last_lr()[0], "nonfinite": 0})
    return metrics, rollout, scored


def _rollout_metrics(rollout: Rollout, scored: Any, rewards: torch.Tensor, keep: torch.Tensor) -> dict:
    lengths = rollout.lengths.float()
    out = {
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "reward_failures": scored.failures,
        "completion_len": float(lengths.mean()),
        "truncated_frac": float(rollout.truncated.float().mean()),
        # mean -log p of the sampled tokens: an unbiased estimate of the policy's per-token entropy
        # at the sampling temperature, free (recorded at sampling); logged whether or not a loss needs it
        "sampled_entropy": float(-(rollout.logp * rollout.completion_mask).sum()
                                 / rollout.completion_mask.sum().clamp(min=1)),
        "kept_frac": float(keep.float().mean()),
        # groups whose rewards are all equal carry no GRPO signal; a rising share warns of collapse
        "no_signal_frac": 1.0 - float(dynamic_sampling_keep(rewards, rollout.group_size).float().mean()),
    }
    correct = [c for c in scored.correct if c is not None]
    if correct:
        out["correct"] = sum(correct) / len(correct)
    for name, values in scored.components.items():
        vals = [v for v in values if not math.isnan(v)]
        if vals:
            out[f"reward/{name}"] = sum(vals) / len(vals)
    return out
