"""The vlm guard: log-probs recorded while sampling equal those of the training forward pass (1e-5).

Also: micro-batches cut with slice_vlm_extras give the same numbers; dropping mm_token_type_ids
changes them (the pitfall of issue 3); banned vision/special tokens are never sampled, and a sampled
<|image_pad|> would crash the next forward.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from shared.lm.logprobs import completion_logprobs
from shared.lm.sampling import expand_inputs, sample_completions
from vlm_rl.inputs import encode_vlm_prompts, expand_vlm_inputs, slice_vlm_extras
from vlm_rl.models import TinyVLMConfig, build_tiny_vlm, load_vlm, vlm_banned_ids

G = 3
MIN_PIXELS, MAX_PIXELS = 112 * 112, 112 * 112 * 4


def _draw(path: Path, size: tuple[int, int], colour: str, n: int) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for k in range(n):
        x, y = 8 + 24 * k, 10 + 17 * k
        draw.ellipse([x, y, x + 18, y + 18], fill=colour)
    img.save(path)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """(model, processor, prompt inputs of 3 items, banned ids): the images differ in size (16 and 20 tokens)."""
    root = tmp_path_factory.mktemp("vlm")
    model, processor = load_vlm(build_tiny_vlm(TinyVLMConfig(), root / "model", seed=0))
    specs = [((112, 112), "red", 3), ((140, 112), "blue", 2), ((112, 112), "green", 4)]
    items = []
    for i, (size, colour, n) in enumerate(specs):
        _draw(root / f"img{i}.png", size, colour, n)
        question = f"How many {colour} circles?" + " Count." * i  # different lengths: left padding
        items.append({"id": str(i), "images": [f"img{i}.png"], "question": question})
    inputs = encode_vlm_prompts(processor, items, root, MIN_PIXELS, MAX_PIXELS)
    return model, processor, inputs, vlm_banned_ids(processor)


def _sample(vlm, temperature: float = 1.0, seed: int = 0, max_new_tokens: int = 12):
    model, processor, inputs, banned = vlm
    torch.manual_seed(seed)
    # G samples per prompt: the shared sampler repeats the inputs through slice_vlm_extras, which keeps
    # whole image blocks (see test_shared_expand_inputs_keeps_image_blocks)
    return sample_completions(model, processor.tokenizer, inputs, group_size=G, max_new_tokens=max_new_tokens,
                              temperature=temperature, banned_ids=banned, slicer=slice_vlm_extras)


def _train_logp(model, ro, banned, temperature, extras, rows=slice(None)):
    with torch.no_grad():
        logp, _ = completion_logprobs(model, ro.prompt_ids[rows], ro.prompt_mask[rows], ro.completion_ids[rows],
                                      ro.completion_mask[rows], torch.tensor(banned), temperature, extras)
    return logp


def test_inputs_hold_what_the_forward_needs(vlm) -> None:
    _, processor, inputs, _ = vlm
    assert {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"} <= set(inputs)
    assert (inputs["attention_mask"] == 0).any()  # different prompt lengths: left padding is exercised
    assert (inputs["attention_mask"][:, -1] == 1).all()
    # 112x112 -> 8x8 patches of 14 px -> 8*8/4 = 16 tokens; 140 wide x 112 high -> 8x10 patches -> 20 tokens
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 10], [1, 8, 8]]
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (inputs["input_ids"] == image_id).sum(-1).tolist() == [16, 20, 16]
    assert torch.equal(inputs["mm_token_type_ids"] == 1, inputs["input_ids"] == image_id)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_training_forward(vlm, temperature: float) -> None:
    model, _, inputs, banned = vlm
    ro = _sample(vlm, temperature)
    assert ro.completion_ids.shape[0] == 3 * G and torch.isfinite(ro.logp).all()
    # the rollout carries the expanded extras; they are the original prompts' rows repeated G times
    extras = ro.model_inputs
    assert set(extras) == {"mm_token_type_ids", "pixel_values", "image_grid_thw"}
    logp = _train_logp(model, ro, banned, temperature, extras)
    torch.testing.assert_close(logp, ro.logp, atol=1e-5, rtol=0)
    # micro-batches (rows 2..6 span all three prompts; rows 4 and 7 pick the 20-token image)
    for rows in (slice(2, 7), torch.tensor([7, 0, 4])):
        part = _train_logp(model, ro, banned, temperature, slice_vlm_extras(extras, rows, 3 * G), rows)
        torch.testing.assert_close(part, logp[rows], atol=1e-5, rtol=0)


def test_training_forward_without_mm_token_type_ids_does_not_match(vlm) -> None:
    # Without mm_token_type_ids Qwen2.5-VL cannot build its 3-D rotary positions and silently falls
    # back to 1-D ones: no error, but the log-probs are not those of the sampler.
    model, _, _, banned = vlm
    ro = _sample(vlm, seed=1)
    extras = {k: v for k, v in ro.model_inputs.items() if k != "mm_token_type_ids"}
    logp = _train_logp(model, ro, banned, 1.0, extras)
    gap = (logp - ro.logp).abs().max().item()
    print(f"max |log-prob gap| without mm_token_type_ids: {gap:.2e}")
    assert gap > 1e-4


def test_banned_ids_are_never_sampled_and_image_pad_would_crash(vlm) -> None:
    model, processor, inputs, banned = vlm
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_id in banned and processor.tokenizer.eos_token_id not in banned
    # make every banned id the most likely token by far, so only the ban keeps them out
    bias = torch.zeros(model.config.text_config.vocab_size)
    bias[banned] = 30.0
    hook = model.lm_head.register_forward_hook(lambda _m, _i, out: out + bias)
    try:
        ro = _sample(vlm, seed=2, max_new_tokens=8)
        sampled = ro.completion_ids[ro.completion_mask.bool()]
        assert not torch.isin(sampled, torch.tensor(banned)).any()
        assert torch.isfinite(ro.logp).all()
        # a second forward on the sampled sequences works
        full = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
        mask = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
        mm = torch.cat([ro.model_inputs["mm_token_type_ids"], torch.zeros_like(ro.completion_ids)], 1)
        with torch.no_grad():
            model(input_ids=full, attention_mask=mask, pixel_values=ro.model_inputs["pixel_values"],
                  image_grid_thw=ro.model_inputs["image_grid_thw"], mm_token_type_ids=mm)
        # without the ban, <|image_pad|> is sampled and the next forward fails
        torch.manual_seed(3)
        bad = sample_completions(model, processor.tokenizer, inputs, 1, 4, banned_ids=[])
    finally:
        hook.remove()
    assert (bad.completion_ids == image_id).any()
    full = torch.cat([bad.prompt_ids, bad.completion_ids], 1)
    with pytest.raises(ValueError, match="Image features and image tokens do not match"), torch.no_grad():
        model(input_ids=full, attention_mask=torch.ones_like(full), **bad.model_inputs)


def test_shared_expand_inputs_keeps_image_blocks(vlm) -> None:
    model, _, inputs, _ = vlm
    expanded = expand_inputs(inputs, G, slice_vlm_extras)
    assert torch.equal(expanded["image_grid_thw"], inputs["image_grid_thw"].repeat_interleave(G, 0))
    assert torch.equal(expanded["pixel_values"], expand_vlm_inputs(inputs, G)["pixel_values"])


def test_expand_vlm_inputs_matches_generate_own_expansion(vlm) -> None:
    # generate(num_return_sequences=G) encodes the images once and repeats whole image features;
    # sampling from our expanded inputs with the same seed gives the same tokens
    model, processor, inputs, _ = vlm
    torch.manual_seed(4)
    own = model.generate(**inputs, do_sample=True, max_new_tokens=6, num_return_sequences=G,
                         pad_token_id=processor.tokenizer.pad_token_id)
    torch.manual_seed(4)
    ours = model.generate(**expand_vlm_inputs(inputs, G), do_sample=True, max_new_tokens=6,
                          pad_token_id=processor.tokenizer.pad_token_id)
    assert torch.equal(own, ours)


def test_generation_speed_is_printed(vlm) -> None:
    model, processor, inputs, banned = vlm
    one = slice_vlm_extras(inputs, slice(0, 1), 3)
    torch.manual_seed(5)
    start = time.perf_counter()
    out = model.generate(**one, do_sample=True, max_new_tokens=64, min_new_tokens=64, suppress_tokens=banned,
                         pad_token_id=processor.tokenizer.pad_token_id)
    elapsed = time.perf_counter() - start
    print(f"64 new tokens for one 112x112 prompt: {elapsed:.3f} s")  # timings are never asserted
    assert out.shape[1] == one["input_ids"].shape[1] + 64


def test_mixed_batch_with_a_text_only_row(vlm, tmp_path: Path) -> None:
    # one prompt without an image: its rows carry no pixels, micro-batches of only such rows drop the vision keys
    model, processor, _, banned = vlm
    _draw(tmp_path / "a.png", (112, 112), "red", 2)
    items = [{"id": "a", "images": ["a.png"], "question": "How many red circles?"},
             {"id": "b", "images": [], "question": "What is 3 + 4?"}]
    inputs = encode_vlm_prompts(processor, items, tmp_path, MIN_PIXELS, MAX_PIXELS)
    assert inputs["image_grid_thw"].shape == (1, 3)
    torch.manual_seed(6)
    ro = sample_completions(model, processor.tokenizer, expand_vlm_inputs(inputs, 2), 1, 8, banned_ids=banned)
    logp = _train_logp(model, ro, banned, 1.0, ro.model_inputs)
    torch.testing.assert_close(logp, ro.logp, atol=1e-5, rtol=0)
    text_rows = slice(2, 4)
    extras = slice_vlm_extras(ro.model_inputs, text_rows, 4)
    assert set(extras) == {"mm_token_type_ids"}
    torch.testing.assert_close(_train_logp(model, ro, banned, 1.0, extras, text_rows), logp[text_rows],
                               atol=1e-5, rtol=0)


def test_slice_vlm_extras_by_hand() -> None:
    # 3 rows: row 0 has one image of 2 patches, row 1 none, row 2 two images of 1 and 3 patches
    # (merge 1x1 here, so one placeholder per patch: row 0 -> 2, row 1 -> 0, row 2 -> 1 + 3 = 4)
    grid = torch.tensor([[1, 1, 2], [1, 1, 1], [1, 1, 3]])
    pixels = torch.arange(6).unsqueeze(-1).float()  # patch k holds value k: image blocks [0 1] [2] [3 4 5]
    mm = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]])
    extras = {"mm_token_type_ids": mm, "pixel_values": pixels, "image_grid_thw": grid, "rope_deltas": None}
    out = slice_vlm_extras(extras, torch.tensor([2, 0, 0]), 3)
    # row 2 (images 1, 2 -> patches 2 | 3 4 5), then row 0 twice (patches 0 1)
    assert out["pixel_values"].squeeze(-1).tolist() == [2, 3, 4, 5, 0, 1, 0, 1]
    assert out["image_grid_thw"].tolist() == [[1, 1, 1], [1, 1, 3], [1, 1, 2], [1, 1, 2]]
    assert torch.equal(out["mm_token_type_ids"], mm[[2, 0, 0]]) and out["rope_deltas"] is None
    assert set(slice_vlm_extras(extras, slice(1, 2), 3)) == {"mm_token_type_ids", "rope_deltas"}
    # without mm_token_type_ids one image per row is assumed, and a mismatch is an error that says so
    one_each = {"pixel_values": pixels, "image_grid_thw": grid}
    assert slice_vlm_extras(one_each, slice(1, 3), 3)["pixel_values"].squeeze(-1).tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="images_per_row"):
        slice_vlm_extras({"pixel_values": pixels, "image_grid_thw": grid[:2]}, slice(0, 1), 3)
    assert slice_vlm_extras(extras, slice(0, 2), 3, images_per_row=[1, 0, 2])["pixel_values"].numel() == 2


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_bad_image_is_a_value_error_naming_the_file(vlm, tmp_path: Path, problem: str) -> None:
    _, processor, _, _ = vlm
    _draw(tmp_path / "good.png", (112, 112), "red", 1)
    if problem == "corrupt":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    items = [{"id": "0", "images": ["good.png"], "question": "q"}, {"id": "1", "images": ["bad.png"], "question": "q"}]
    with pytest.raises(ValueError, match="bad.png"):
        encode_vlm_prompts(processor, items, tmp_path, MIN_PIXELS, MAX_PIXELS)
