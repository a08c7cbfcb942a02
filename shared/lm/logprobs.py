"""Per-token log-probs of completions in a training forward pass.

The input is prompt (left padded) followed by completion (right padded). Only the last T + 1
logits are computed (``logits_to_keep``), in micro-batches, and turned into log-probs of the
completion tokens straight away, so full-vocabulary logits live for one micro-batch at most.
"""

from __future__ import annotations

from typing import Any

import torch

from shared.lm.sampling import ban_logits


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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [N, T] of `completion_ids` (0 where masked), and optionally token entropies [N, T].

    Gradients flow when called under grad mode. Callers micro-batch by slicing rows; `extras` are
    the model's additional inputs for these rows (``mm_token_type_ids`` and image tensors for
    image-text models: without ``mm_token_type_ids`` Qwen2.5-VL silently falls back to 1-D
    positions and the log-probs no longer match sampling).
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    extras = dict(extras or {})
    if "mm_token_type_ids" in extras:  # completion tokens are text (type 0)
        mm = extras["mm_token_type_ids"]
        extras["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(completion_ids.shape)], dim=1)
    t = completion_ids.shape[1]
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
