"""Sampling G completions per prompt with the KV cache, recording per-token log-probs on the way.

Log-probs are those of the distribution actually sampled from: logits / temperature with banned
ids set to -inf (so a placeholder such as ``<|image_pad|>`` can never be emitted). The training
forward pass (`shared.lm.logprobs`) applies the same transform, so both agree to float precision;
a test holds them to 1e-5.

Models that `shared.lm.logprobs.supports_shared_prompts` knows (Qwen2, Qwen2.5-VL) decode in this
module's own loop (`_decode`): each prompt is prefilled once and its KV cache repeated G times.
Others, and FSDP's lockstep decoding, use transformers' ``generate`` with a recording logits processor.

Memory: full-vocabulary log-probs are kept for ONE decoding step at a time. At step t the logits
processor receives the ids up to t-1, so it gathers the log-prob of the token chosen at t-1 from
the previous step's distribution and then replaces that distribution with step t's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Rollout:
    """G completions for each of B prompts, flattened prompt-major: row i is prompt i // G.

    Shapes (N = B * G, P = prompt length (left padded), T = longest completion):
      prompt_ids, prompt_mask: [N, P]; completion_ids, completion_mask: [N, T] (right padded; the
      mask covers the EOS token when one was produced); logp: [N, T] float32, 0 where masked.
    model_inputs: the extra (already expanded) inputs of the prompts, such as pixel_values.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logp: torch.Tensor
    texts: list[str]
    group_size: int
    truncated: torch.Tensor
    """[N] bool: no EOS before max_new_tokens."""
    model_inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def ban_logits(logits: torch.Tensor, banned_ids: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """The transform both sampling and training apply: divide by temperature, ban ids (-inf)."""
    scores = logits.float() / temperature
    if banned_ids is not None and banned_ids.numel():
        scores = scores.index_fill(-1, banned_ids.to(scores.device), float("-inf"))
    return scores


class _RecordingProcessor:
    """A logits processor that bans ids, applies temperature, and records sampled-token log-probs."""

    def __init__(self, banned_ids: torch.Tensor | None, temperature: float, prompt_len: int):
        self.banned_ids = banned_ids
        self.temperature = temperature
        self.prompt_len = prompt_len
        self.prev_logp: torch.Tensor | None = None  # [N, V] of the previous step only
        self.recorded: list[torch.Tensor] = []  # each [N]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._collect(input_ids)
        scores = ban_logits(scores, self.banned_ids, self.temperature)
        self.prev_logp = torch.log_softmax(scores, dim=-1)
        return scores

    def _collect(self, input_ids: torch.Tensor) -> None:
        if self.prev_logp is not None and input_ids.shape[1] > self.prompt_len:
            last = input_ids[:, -1:]
            self.recorded.append(self.prev_logp.gather(-1, last).squeeze(-1))

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[N, T] log-probs of the generated part of `sequences`."""
        self._collect(sequences)
        self.prev_logp = None
        return torch.stack(self.recorded, dim=1) if self.recorded else sequences.new_zeros((len(sequences), 0))


RowSlicer = Callable[[dict[str, Any], "slice | torch.Tensor", int], dict[str, Any]]


def slice_rows(inputs: dict[str, Any], rows: slice | torch.Tensor, num_rows: int) -> dict[str, Any]:
    """Select rows (a slice or an index tensor) of every tensor whose first dim is `num_rows`.

    The default row slicer for text models. Image-text models whose pixel_values are flattened
    across images (Qwen2-VL/2.5-VL) provide their own (`vlm_rl.inputs.slice_vlm_extras`).
    """
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == num_rows:
            out[key] = value[rows]
        else:
            out[key] = value
    return out


def expand_inputs(inputs: dict[str, Any], group_size: int, slicer: RowSlicer | None = None) -> dict[str, Any]:
    """Repeat each prompt's inputs G times, prompt-major (rows 0,0,0,1,1,1,...).

    Expansion is row selection, so it goes through the same row slicer as micro-batching. (Not the
    model's ``_expand_inputs_for_generation``: in transformers 5.24 it repeat_interleaves Qwen2.5-VL's
    flattened pixel_values patch by patch, scrambling every copied image without any error.)
    """
    num_rows = inputs["input_ids"].shape[0]
    if group_size == 1:
        return dict(inputs)
    index = torch.arange(num_rows).repeat_interleave(group_size)
    return (slicer or slice_rows)(inputs, index, num_rows)


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompt_inputs: dict[str, Any],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    banned_ids: Sequence[int] = (),
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    greedy: bool = False,
    slicer: RowSlicer | None = None,
    synced_gpus: bool = False,
) -> Rollout:
    """Sample `group_size` completions for each prompt of a left-padded batch.

    prompt_inputs: the processor/tokenizer output (input_ids [B, P], attention_mask [B, P], and
    any model extras), on the model's device. With ``greedy`` the argmax is taken (log-probs still
    recorded at temperature). `slicer` selects rows of the inputs (default `slice_rows`; image-text
    models pass their own). ``synced_gpus``: keep decoding until every process is done (FSDP, whose
    forward passes are collectives).
    """
    from shared.lm.logprobs import supports_shared_prompts

    was_training = model.training
    model.eval()
    inputs = expand_inputs(prompt_inputs, group_size, slicer)
    banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long, device=inputs["input_ids"].device)
    eos = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
    pad = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
    try:
        if not synced_gpus and supports_shared_prompts(model):
            completion_ids, logp = _decode(model, prompt_inputs, group_size, max_new_tokens, temperature, banned,
                                           eos, pad, greedy)
        else:
            completion_ids, logp = _generate(model, inputs, max_new_tokens, temperature, banned, eos, pad, greedy,
                                             synced_gpus)
    finally:
        model.train(was_training)
    completion_mask = _completion_mask(completion_ids, eos)
    extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    return Rollout(
        prompt_ids=inputs["input_ids"],
        prompt_mask=inputs["attention_mask"],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logp=torch.where(completion_mask.bool(), logp, torch.zeros_like(logp)),
        texts=tokenizer.batch_decode(completion_ids * completion_mask + pad * (1 - completion_mask),
                                     skip_special_tokens=True),
        group_size=group_size,
        truncated=~_has_eos(completion_ids, eos),
        model_inputs=extras,
    )


def _eos_hits(completion_ids: torch.Tensor, eos: int | Sequence[int]) -> torch.Tensor:
    eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos), dtype=completion_ids.dtype,
                           device=completion_ids.device)
    return torch.isin(completion_ids, eos_ids)


def _has_eos(completion_ids: torch.Tensor, eos: int | Sequence[int]) -> torch.Tensor:
    return _eos_hits(completion_ids, eos).any(-1)


def _completion_mask(completion_ids: torch.Tensor, eos: int | Sequence[int]) -> torch.Tensor:
    """1 up to and including the first EOS, 0 after it (generate pads finished rows)."""
    hits = _eos_hits(completion_ids, eos).long()
    after_eos = (hits.cumsum(-1) - hits) > 0  # strictly after the first EOS
    return (~after_eos).long()


def _generate(model: Any, inputs: dict[str, Any], max_new_tokens: int, temperature: float, banned: torch.Tensor,
              eos: int | Sequence[int], pad: int, greedy: bool, synced_gpus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Transformers' ``generate`` on the expanded rows (models `_decode` does not know, FSDP's lockstep)."""
    from transformers import LogitsProcessorList

    prompt_len = inputs["input_ids"].shape[1]
    recorder = _RecordingProcessor(banned, temperature, prompt_len)
    out = model.generate(
        **inputs,
        do_sample=not greedy,
        temperature=None,
        top_k=None,
        top_p=None,
        max_new_tokens=max_new_tokens,
        logits_processor=LogitsProcessorList([recorder]),
        eos_token_id=eos,
        pad_token_id=pad,
        return_dict_in_generate=True,
        **({"synced_gpus": True} if synced_gpus else {}),
    )
    return out.sequences[:, prompt_len:], recorder.finish(out.sequences)


def _decode(model: Any, prompt_inputs: dict[str, Any], group_size: int, max_new_tokens: int, temperature: float,
            banned: torch.Tensor, eos: int | Sequence[int], pad: int,
            greedy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion ids [N, T] and their log-probs [N, T]: each prompt prefilled ONCE, then G rows decoded.

    The B prompts (vision tower included) run once; the KV cache, the last logits and Qwen2.5-VL's
    rope deltas are repeated G times (prompt-major), and N = B * G rows are decoded. Per step one
    log-softmax of the banned, temperature-scaled logits serves both the draw (``torch.multinomial``
    of its softmax from the global RNG, as ``generate`` does; argmax when greedy) and the recorded
    log-prob. Finished rows get `pad`; decoding stops when every row has produced an EOS. Positions
    are those of the training forward (`shared.lm.logprobs`): the cache position for text models,
    ``rope_delta + valid tokens so far`` on all three axes for Qwen2.5-VL.
    """
    from transformers import DynamicCache

    from shared.lm.logprobs import _inner_vlm, cache_kwarg

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = _inner_vlm(model)
    input_ids, attention_mask = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]
    extras = {k: v for k, v in prompt_inputs.items() if k not in ("input_ids", "attention_mask")}
    device, (num_prompts, prompt_len) = input_ids.device, input_ids.shape
    index = torch.arange(num_prompts, device=device).repeat_interleave(group_size)
    if inner is not None:
        inner.rope_deltas = None  # set afresh by the prefill when it computes 3-D positions
    cache, key = DynamicCache(config=base.config), cache_kwarg(model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=1,
                **{key: cache}, **extras)
    logits = out.logits[:, -1].index_select(0, index)
    cache.batch_repeat_interleave(group_size)
    mask = attention_mask.index_select(0, index)
    deltas = inner.rope_deltas if inner is not None else None
    if deltas is not None:  # next text position of each row: valid prompt tokens + rope delta
        next_pos = (mask.long().sum(-1) + deltas.to(device).view(-1).index_select(0, index)).view(1, -1, 1)
    eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos), dtype=torch.long, device=device)
    unfinished = torch.ones(len(index), dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    logps: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        logp_all = torch.log_softmax(ban_logits(logits, banned, temperature), dim=-1)
        if greedy:
            tok = logp_all.argmax(-1)
        else:
            tok = torch.multinomial(logp_all.exp(), num_samples=1).squeeze(1)
        tok = torch.where(unfinished, tok, torch.full_like(tok, pad))
        tokens.append(tok)
        logps.append(logp_all.gather(-1, tok.unsqueeze(-1)).squeeze(-1))
        unfinished &= ~torch.isin(tok, eos_ids)
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        mask = torch.cat([mask, mask.new_ones((len(index), 1))], dim=1)
        if deltas is not None:
            position_ids = (next_pos + step).expand(3, -1, 1)
        else:
            position_ids = torch.full((len(index), 1), prompt_len + step, dtype=torch.long, device=device)
            if inner is not None:
                position_ids = position_ids.unsqueeze(0).expand(3, -1, 1)
        out = model(input_ids=tok.unsqueeze(1), attention_mask=mask, use_cache=True, position_ids=position_ids,
                    **{key: cache})
        logits = out.logits[:, -1]
    if inner is not None:
        inner.rope_deltas = None
    return torch.stack(tokens, dim=1), torch.stack(logps, dim=1)
