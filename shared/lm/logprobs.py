"""Per-token log-probs of completions in a training forward pass.

The input is prompt (left padded) followed by completion (right padded). Only the last T + 1
logits are computed (``logits_to_keep``), in micro-batches, and turned into log-probs of the
completion tokens straight away, so full-vocabulary logits live for one micro-batch at most.

With ``prompt_index`` the G rows of a prompt share one pass over that prompt (vision tower and
prompt tokens run once per distinct prompt; see `_shared_prompt_logits`): the same log-probs and
gradients as the unshared pass (a test holds both to 1e-5), for the models of `SHARED_PROMPT_MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from shared.lm.sampling import ban_logits

SHARED_PROMPT_MODELS = ("qwen2", "qwen2_5_vl")
"""config.model_type of the models whose prompts `completion_logprobs` can share between rows."""


def supports_shared_prompts(model: Any) -> bool:
    """Whether `completion_logprobs` can run each distinct prompt once (``prompt_index``) for `model`.

    Qwen2 text models and Qwen2.5-VL, as plain modules or under a PEFT (LoRA) wrapper, when no
    gradient checkpointing is on (it turns the KV cache off) and the model is not FSDP-sharded.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in SHARED_PROMPT_MODELS:
        return False
    checkpointing = getattr(base, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers before is_activation_checkpointing
        checkpointing = getattr(base, "is_gradient_checkpointing", False)
    if checkpointing:
        return False
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return True
    return not isinstance(model, FSDPModule) and not isinstance(base, FSDPModule)


def _inner_vlm(model: Any) -> Any:
    """The Qwen2.5-VL inner model holding ``rope_deltas`` (None for text models)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    return inner if inner is not None and hasattr(inner, "rope_deltas") else None


def cache_kwarg(model: Any) -> str:
    """The forward's KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values`` before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _shared_prompt_logits(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          completion_ids: torch.Tensor, completion_mask: torch.Tensor, extras: dict[str, Any],
                          prompt_index: torch.Tensor) -> torch.Tensor:
    """Logits [N, T, V] predicting every completion token, each distinct prompt run once.

    The U prompts (vision tower and prompt tokens) go through the model once, filling a KV cache
    that is then repeated to the N rows by `prompt_index` inside autograd (so every row's gradient
    reaches the shared prompt), and only the completion tokens run per row. Positions are the ones
    the unshared forward gives: text models count the padded sequence (cache position); Qwen2.5-VL
    continues each prompt's 3-D rope after its last position (``rope_delta + valid tokens so far``,
    all three axes), which is what `get_rope_index` assigns to text after the prompt.
    """
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = _inner_vlm(model)
    if inner is not None:
        inner.rope_deltas = None  # set afresh by this prefill when it computes 3-D positions
    cache = DynamicCache(config=base.config)
    key = cache_kwarg(model)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, logits_to_keep=1,
                **{key: cache}, **extras)
    first = out.logits[:, -1:].index_select(0, prompt_index)  # predicts completion token 0: [N, 1, V]
    t = completion_ids.shape[1]
    if t == 1:
        return first
    rope_deltas = inner.rope_deltas if inner is not None else None
    cache.batch_select_indices(prompt_index)
    mask = prompt_mask.index_select(0, prompt_index)
    full_mask = torch.cat([mask, completion_mask[:, : t - 1].to(mask.dtype)], dim=1)
    p = prompt_ids.shape[1]
    n = len(prompt_index)
    if rope_deltas is not None:
        pos = full_mask.long().cumsum(-1)[:, p:] - 1 + rope_deltas.to(full_mask.device).index_select(0, prompt_index)
        position_ids = pos.unsqueeze(0).expand(3, n, t - 1)
    else:
        pos = torch.arange(p, p + t - 1, device=completion_ids.device).unsqueeze(0).expand(n, -1)
        position_ids = pos.unsqueeze(0).expand(3, n, t - 1) if inner is not None else pos
    rest = model(input_ids=completion_ids[:, : t - 1], attention_mask=full_mask, use_cache=True,
                 position_ids=position_ids, **{key: cache})
    if inner is not None:
        inner.rope_deltas = None
    return torch.cat([first, rest.logits], dim=1)


def completion_logprobs(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    banned_ids: torch.Tensor | None = None,
    temperature: float = 1.0,
    extras: dict[str, Any] | None = None,
    with_entropy: bool = False,
    prompt_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [N, T] of `completion_ids` (0 where masked), and optionally token entropies [N, T].

    Gradients flow when called under grad mode. Callers micro-batch by slicing rows; `extras` are
    the model's additional inputs for these rows (``mm_token_type_ids`` and image tensors for
    image-text models: without ``mm_token_type_ids`` Qwen2.5-VL silently falls back to 1-D
    positions and the log-probs no longer match sampling).

    ``prompt_index`` [N]: row n's prompt is row ``prompt_index[n]`` of `prompt_ids`, `prompt_mask` and
    `extras`, which then hold the U distinct prompts only; each runs once (needs
    `supports_shared_prompts(model)`). Without it every row carries its own prompt.
    """
    extras = dict(extras or {})
    t = completion_ids.shape[1]
    if prompt_index is not None and t > 0:
        if not supports_shared_prompts(model):
            raise ValueError(f"prompt_index: {type(model).__name__} cannot share prompts between rows "
                             "(see supports_shared_prompts)")
        logits = _shared_prompt_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, extras,
                                       prompt_index)
    else:
        if prompt_index is not None:  # no completion tokens: nothing to score
            empty = completion_ids.new_zeros(completion_ids.shape, dtype=torch.float32)
            return empty, (empty if with_entropy else None)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
        if "mm_token_type_ids" in extras:  # completion tokens are text (type 0)
            mm = extras["mm_token_type_ids"]
            extras["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(completion_ids.shape)], dim=1)
        out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=t + 1, use_cache=False,
                    **extras)
        logits = out.logits[:, :-1]  # position j predicts token j + 1: [N, T, V]
    scores = ban_logits(logits, banned_ids, temperature)
    logp_all = torch.log_softmax(scores, dim=-1)
    logp = logp_all.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    mask = completion_mask.to(logp.dtype)
    # a banned id in the completion (only possible for data we did not sample) gets -inf: zero it
    logp = torch.where(mask > 0, logp, torch.zeros_like(logp))
    entropy = None
    if with_entropy:
        from shared.rl import token_entropy

        # differentiable (an entropy bonus needs its gradient); banned ids (-inf) contribute 0
        entropy = token_entropy(scores.masked_fill(torch.isinf(scores), -1e9)) * mask
    return logp, entropy


def batch_prompt_args(model: Any, batch: dict[str, Any], rows: slice,
                      extras_of: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """`completion_logprobs` keyword arguments of the prompts of `rows` of a GRPO batch.

    `batch` holds per-row ``prompt_ids``, ``prompt_mask`` and, optionally, ``group`` (the prompt each
    row was sampled from; rows of a prompt are consecutive); `extras_of(rows)` gives the rows' extra
    model inputs (a slice or an index tensor). Where the model allows (`supports_shared_prompts`) each
    distinct prompt of `rows` is passed once with a ``prompt_index``; otherwise every row's own.
    """
    if batch.get("group") is None or not supports_shared_prompts(model):
        return {"prompt_ids": batch["prompt_ids"][rows], "prompt_mask": batch["prompt_mask"][rows],
                "extras": extras_of(rows)}
    positions = torch.arange(len(batch["group"]))[rows]
    _, inverse, counts = torch.unique_consecutive(batch["group"][positions].cpu(), return_inverse=True,
                                                  return_counts=True)
    first = positions[counts.cumsum(0) - counts]
    device = batch["prompt_ids"].device
    return {"prompt_ids": batch["prompt_ids"][first.to(device)], "prompt_mask": batch["prompt_mask"][first.to(device)],
            "extras": extras_of(first), "prompt_index": inverse.to(device)}
