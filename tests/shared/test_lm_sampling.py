"""Correctness guards of the LM loop: sampler log-probs == training log-probs; banned ids never appear."""

from __future__ import annotations

import pytest
import torch

from shared.diag.model import banned_token_ids
from shared.lm.logprobs import completion_logprobs
from shared.lm.sampling import _completion_mask, sample_completions


def _prompts(tokenizer, questions):
    msgs = [[{"role": "user", "content": q}] for q in questions]
    enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_training_forward(tiny_lm, temperature: float) -> None:
    model, tokenizer, _ = tiny_lm
    torch.manual_seed(0)
    # prompts of different lengths, so left padding is exercised
    inputs = _prompts(tokenizer, ["reverse 12", "reverse 123456", "reverse 9", "reverse 5550"])
    assert (inputs["attention_mask"] == 0).any()
    banned = banned_token_ids(tokenizer)
    ro = sample_completions(model, tokenizer, inputs, group_size=3, max_new_tokens=12, temperature=temperature,
                            banned_ids=banned)
    assert ro.completion_ids.shape[0] == 12 and ro.logp.shape == ro.completion_ids.shape
    with torch.no_grad():
        logp, _ = completion_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids,
                                      ro.completion_mask, torch.tensor(banned), temperature)
    assert torch.isfinite(ro.logp).all()
    torch.testing.assert_close(logp, ro.logp, atol=1e-5, rtol=0)
    # micro-batched rows give the same numbers
    with torch.no_grad():
        part, _ = completion_logprobs(model, ro.prompt_ids[5:9], ro.prompt_mask[5:9], ro.completion_ids[5:9],
                                      ro.completion_mask[5:9], torch.tensor(banned), temperature)
    torch.testing.assert_close(part, logp[5:9], atol=1e-5, rtol=0)


def test_banned_ids_are_never_sampled(tiny_lm) -> None:
    model, tokenizer, _ = tiny_lm
    torch.manual_seed(1)
    inputs = _prompts(tokenizer, ["reverse 12"] * 4)
    # ban everything but the digit '7' and EOS: the sampler has no other choice
    seven = tokenizer.convert_tokens_to_ids("7")
    banned = [i for i in range(len(tokenizer)) if i not in (seven, tokenizer.eos_token_id)]
    ro = sample_completions(model, tokenizer, inputs, 4, 6, 1.0, banned)
    valid = ro.completion_ids[ro.completion_mask.bool()]
    assert set(valid.tolist()) <= {seven, tokenizer.eos_token_id}
    assert all(set(t) <= {"7"} for t in ro.texts)


def test_special_tokens_are_banned_by_default(tiny_lm) -> None:
    _, tokenizer, _ = tiny_lm
    banned = banned_token_ids(tokenizer)
    assert tokenizer.pad_token_id in banned and tokenizer.convert_tokens_to_ids("<|im_start|>") in banned
    assert tokenizer.eos_token_id not in banned


def test_completion_mask_stops_after_first_eos() -> None:
    eos = 2
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 7, 2, 0], [5, 6, 7, 8, 9]])
    # row 0: up to and including EOS; row 1: the first EOS ends it; row 2: no EOS (truncated)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(_completion_mask(ids, eos), expected)
