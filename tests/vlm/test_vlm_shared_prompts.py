"""Shared-prompt training forward (`completion_logprobs(..., prompt_index=...)`): each distinct prompt
runs once and its KV cache is repeated to its rows. Log-probs and gradients must equal the unshared
pass (every row carries its own copy of the prompt) on the text model (diag track) and the tiny
Qwen2.5-VL, with left-padded prompts of different lengths, completions that end early (EOS, padding
after it), a text-only row among image rows, and groups of unequal size (rows dropped)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.lm.logprobs import completion_logprobs, supports_shared_prompts
from shared.lm.sampling import slice_rows

TEMPERATURE = 0.8


def _random_completions(n: int, t: int, vocab: int, banned: torch.Tensor, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, t), generator=g)
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[banned] = False
    pool = allowed.nonzero().squeeze(-1)
    ids = pool[torch.randint(0, len(pool), (n, t), generator=g)]
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    lengths[0] = t
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    return ids, mask


def _compare(model, prompts: dict, index: torch.Tensor, slicer, banned: torch.Tensor, t: int, seed: int = 0) -> None:
    """Shared vs unshared log-probs, entropies and parameter gradients (weighted sum of both)."""
    assert supports_shared_prompts(model)
    num = len(prompts["input_ids"])
    extras = {k: v for k, v in prompts.items() if k not in ("input_ids", "attention_mask")}
    comp, cmask = _random_completions(len(index), t, model.config.get_text_config().vocab_size, banned, seed)
    weight = torch.randn(comp.shape, generator=torch.Generator().manual_seed(seed + 1))
    results = []
    for shared in (False, True):
        model.zero_grad(set_to_none=True)
        if shared:
            args = (prompts["input_ids"], prompts["attention_mask"], extras, index)
        else:
            args = (prompts["input_ids"][index], prompts["attention_mask"][index], slicer(extras, index, num), None)
        logp, ent = completion_logprobs(model, args[0], args[1], comp, cmask, banned, TEMPERATURE, args[2],
                                        with_entropy=True, prompt_index=args[3])
        ((logp * weight).sum() + 0.1 * (ent * weight).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), ent.detach(), grads))
    (lp0, e0, g0), (lp1, e1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=0)
    torch.testing.assert_close(e1, e0, atol=1e-5, rtol=0)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        scale = float(g0[name].abs().max()) + 1e-12
        torch.testing.assert_close(g1[name] / scale, g0[name] / scale, atol=1e-5, rtol=1e-5, msg=name)
    model.zero_grad(set_to_none=True)


def test_shared_prompts_text_model(tiny_lm) -> None:
    from shared.diag.model import banned_token_ids

    model, tokenizer, _ = tiny_lm
    model.train()
    msgs = [[{"role": "user", "content": q}] for q in ["reverse 12", "reverse 123456", "reverse 9"]]
    enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt", padding=True)
    prompts = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    assert (prompts["attention_mask"] == 0).any()
    index = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])  # unequal groups, as after dropping rows
    _compare(model, prompts, index, slice_rows, torch.tensor(banned_token_ids(tokenizer)), t=7)
    _compare(model, prompts, index[3:5] - 1, slice_rows, torch.tensor(banned_token_ids(tokenizer)), t=1)


@pytest.fixture(scope="module")
def vlm_prompts(tmp_path_factory):
    from PIL import Image, ImageDraw

    from vlm_rl.models import TinyVLMConfig, build_tiny_vlm, load_vlm, vlm_banned_ids

    root: Path = tmp_path_factory.mktemp("shared-prompts")
    model, processor = load_vlm(build_tiny_vlm(TinyVLMConfig(), root / "model", seed=0))
    items = []
    for i, (size, colour) in enumerate([((112, 112), "red"), ((140, 112), "blue"), ((112, 140), "green")]):
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).ellipse([10, 10, 40 + 10 * i, 40], fill=colour)
        img.save(root / f"img{i}.png")
        items.append({"id": str(i), "images": [f"img{i}.png"], "question": f"How many {colour}?" + " Count." * i})
    return model, processor, items, root, torch.tensor(vlm_banned_ids(processor))


def test_shared_prompts_vlm(vlm_prompts) -> None:
    from vlm_rl.inputs import encode_vlm_prompts, slice_vlm_extras

    model, processor, items, root, banned = vlm_prompts
    model.train()
    prompts = encode_vlm_prompts(processor, items, root, 112 * 112, 112 * 112 * 4)
    assert (prompts["attention_mask"] == 0).any()
    index = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    _compare(model, prompts, index, slice_vlm_extras, banned, t=6)
    # a text-only row among image rows, and a batch without any image
    mixed = encode_vlm_prompts(processor, [items[0], {"id": "t", "images": [], "question": "Just text?"}, items[2]],
                               root, 112 * 112, 112 * 112 * 4)
    _compare(model, mixed, index, slice_vlm_extras, banned, t=5, seed=3)
    text = encode_vlm_prompts(processor, [{"id": "a", "images": [], "question": "One?"},
                                          {"id": "b", "images": [], "question": "Two words here?"}],
                              root, 112 * 112, 112 * 112 * 4)
    _compare(model, text, torch.tensor([0, 1, 1]), slice_vlm_extras, banned, t=4, seed=5)


@pytest.mark.parametrize("greedy", [True, False])
def test_own_decode_loop_matches_generate(tiny_lm, vlm_prompts, greedy: bool) -> None:
    """The sampler's loop (one prefill per prompt, cache repeated G times) gives generate's tokens: greedy
    exactly, and the same draws from the global RNG when sampling (ids may differ only where two
    probabilities tie to float precision, so the check is on the greedy and on most sampled tokens)."""
    from shared.diag.model import banned_token_ids
    from shared.lm.sampling import _decode, _generate, expand_inputs
    from vlm_rl.inputs import encode_vlm_prompts, slice_vlm_extras

    model, tokenizer, _ = tiny_lm
    msgs = [[{"role": "user", "content": q}] for q in ["reverse 12", "reverse 123456"]]
    enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt", padding=True)
    text = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    vmodel, processor, items, root, vbanned = vlm_prompts
    vinputs = encode_vlm_prompts(processor, items, root, 112 * 112, 112 * 112 * 4)
    cases = [(model, text, torch.tensor(banned_token_ids(tokenizer)), tokenizer, None),
             (vmodel, vinputs, vbanned, processor.tokenizer, slice_vlm_extras)]
    for mdl, inputs, banned, tok, slicer in cases:
        mdl.eval()
        eos, pad = tok.eos_token_id, tok.pad_token_id
        torch.manual_seed(7)
        ids_a, lp_a = _decode(mdl, inputs, 3, 10, 0.9, banned, eos, pad, greedy)
        torch.manual_seed(7)
        with torch.no_grad():
            ids_b, lp_b = _generate(mdl, expand_inputs(inputs, 3, slicer), 10, 0.9, banned, eos, pad, greedy, False)
        assert ids_a.shape == ids_b.shape
        same = (ids_a == ids_b).float().mean()
        assert same == 1.0 if greedy else same > 0.9
        if greedy:
            torch.testing.assert_close(lp_a, lp_b, atol=1e-5, rtol=0)
