"""PAPO (vlm_rl.papo): image masking, the per-token perception KL worked by hand, and the LossTerm inside
one real grpo_step on a tiny Qwen2.5-VL: off (gamma = 0) it is exactly GRPO, on it changes the update, and
the masked branch gets gradient only when papo.masked_grad says so."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError, load_config
from shared.lm.config import RLConfig, TrainConfig
from shared.lm.logprobs import completion_logprobs
from shared.lm.rewards import REWARDS, RewardScore
from shared.lm.sampling import expand_inputs, sample_completions
from shared.lm.setup import LMSetup
from shared.lm.steps import grpo_step
from vlm_rl.inputs import encode_vlm_prompts, slice_vlm_extras
from vlm_rl.models import TinyVLMConfig, build_tiny_vlm, load_vlm, vlm_banned_ids
from vlm_rl.papo import (
    EXTRAS_KEY,
    PAPOConfig,
    PerceptionTerm,
    mask_image,
    masked_prompt_encoder,
    patch_grid,
    perception_kl,
)

if "test.length" not in REWARDS:

    @REWARDS.register("test.length")
    def _length(completions: list[str], items: list[dict]) -> list[RewardScore]:
        """Varied rewards even from an untrained model, so advantages are not all zero."""
        return [RewardScore(len(c) / 10) for c in completions]


MIN_PIXELS, MAX_PIXELS = 112 * 112, 112 * 112 * 4
G = 4
WHITE = (255, 255, 255)


def _scene(size: tuple[int, int], colour: str, n: int):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for k in range(n):
        x, y = 6 + 22 * k, 8 + 15 * k
        draw.rectangle([x, y, x + 16, y + 16], fill=colour)
    return img


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """(model, processor, image root, 4 items): one image is 140 x 112 (20 visual tokens), the others 112 x 112."""
    root = tmp_path_factory.mktemp("papo")
    model, processor = load_vlm(build_tiny_vlm(TinyVLMConfig(), root / "model", seed=0))
    specs = [((112, 112), "red", 3), ((140, 112), "blue", 2), ((112, 112), "green", 4), ((112, 112), "purple", 1)]
    items = []
    for i, (size, colour, n) in enumerate(specs):
        _scene(size, colour, n).save(root / f"img{i}.png")
        items.append({"id": f"i{i}", "images": [f"img{i}.png"], "question": f"How many {colour} squares?" + " Go." * i})
    return model, processor, root, items


def _setup(vlm, terms=()) -> LMSetup:
    model, processor, root, items = vlm
    return LMSetup(
        model=model, tokenizer=processor.tokenizer,
        encode_prompts=lambda its: encode_vlm_prompts(processor, its, root, MIN_PIXELS, MAX_PIXELS),
        target_text=lambda it: "", train_stream=lambda seed, start=0: iter(items), eval_items=lambda split: [],
        reward_names=["test.length"], reward_weights=[1.0], banned_ids=vlm_banned_ids(processor),
        slice_extras=slice_vlm_extras, loss_terms=list(terms),
    )


def _encoder(vlm, cfg: PAPOConfig):
    _, processor, root, _ = vlm
    return masked_prompt_encoder(processor, root, MIN_PIXELS, MAX_PIXELS, cfg)


# ------------------------------------------------------------------------------------------ config


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="papo.mask_ratio"):
        PAPOConfig(mask_ratio=1.5)
    with pytest.raises(ConfigError, match="papo.eta_masked"):
        PAPOConfig(eta_masked=-0.1)
    with pytest.raises(ConfigError, match="mask_type"):
        load_config(PAPOConfig, overrides=["mask_type=stripes"])
    cfg = load_config(PAPOConfig, overrides=["gamma=0.02", "masked_grad=true"])
    assert cfg.gamma == 0.02 and cfg.masked_grad and cfg.kl_clip == 0.2


# ------------------------------------------------------------------------------------------ masking


def _cells(pixels, patch: int):
    """Each grid cell's pixels, row by row."""
    return [pixels[y : y + patch, x : x + patch] for y, x in patch_grid(*pixels.shape[:2], patch)]


def test_random_patches_blacken_mask_ratio_of_the_grid() -> None:
    import numpy as np

    image = _scene((112, 112), "red", 3)
    before = np.array(image).copy()
    cfg = PAPOConfig(mask_ratio=0.6)
    masked = mask_image(image, cfg, random.Random(0))
    assert masked.size == image.size and masked.mode == "RGB"
    assert np.array_equal(np.array(image), before), "the input image must not change"
    pixels = np.array(masked)
    # 112 / 14 = 8 -> 8 x 8 = 64 patches; round(0.6 * 64) = round(38.4) = 38 black, the rest untouched
    cells = _cells(pixels, 14)
    black = [bool((c == 0).all()) for c in cells]
    assert sum(black) == 38
    for cell, was, is_black in zip(cells, _cells(before, 14), black, strict=True):
        assert is_black or np.array_equal(cell, was)  # whole patches only: black or original
    assert (pixels == 0).all(-1).mean() == pytest.approx(38 / 64)
    # deterministic per seed, different across seeds
    assert np.array_equal(pixels, np.array(mask_image(image, cfg, random.Random(0))))
    assert not np.array_equal(pixels, np.array(mask_image(image, cfg, random.Random(1))))


def test_patches_cut_by_the_border_and_other_ratios() -> None:
    import numpy as np
    from PIL import Image

    image = Image.new("RGB", (100, 60), WHITE)  # grid x 0..98 (8 cols), y 0..56 (5 rows): 40 patches
    pixels = np.array(mask_image(image, PAPOConfig(mask_ratio=0.25, patch_size=14), random.Random(3)))
    assert pixels.shape == (60, 100, 3)
    assert sum(bool((c == 0).all()) for c in _cells(pixels, 14)) == 10  # 0.25 * 40
    full = np.array(mask_image(image, PAPOConfig(mask_ratio=1.0), random.Random(3)))
    assert (full == 0).all()


def test_blank_is_all_black_and_noise_fills_patches() -> None:
    import numpy as np
    from PIL import Image

    image = _scene((112, 112), "blue", 2)
    blank = np.array(mask_image(image, PAPOConfig(mask_type="blank"), random.Random(0)))
    assert blank.shape == (112, 112, 3) and (blank == 0).all()
    white = Image.new("RGB", (112, 112), WHITE)
    cfg = PAPOConfig(mask_type="noise")
    noisy = np.array(mask_image(white, cfg, random.Random(0)))
    changed = [not (c == 255).all() for c in _cells(noisy, 14)]
    assert sum(changed) == 38 and noisy.std() > 50
    assert np.array_equal(noisy, np.array(mask_image(white, cfg, random.Random(0))))
    # transparency goes over white first (as qwen-vl-utils does); the result is RGB of the same size
    rgba = Image.new("RGBA", (56, 56), (0, 0, 0, 0))
    out = np.array(mask_image(rgba, PAPOConfig(mask_ratio=0.25, patch_size=28), random.Random(0)))
    assert out.shape == (56, 56, 3) and sum(bool((c == 255).all()) for c in _cells(out, 28)) == 3


@pytest.mark.parametrize("mask_type", ["random_patches", "blank", "noise"])
def test_masked_prompts_have_the_real_prompts_tokens(vlm, mask_type: str) -> None:
    _, processor, root, items = vlm
    real = encode_vlm_prompts(processor, items, root, MIN_PIXELS, MAX_PIXELS)
    masked = _encoder(vlm, PAPOConfig(mask_type=mask_type))(items)
    assert set(masked) == set(real)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(masked[key], real[key]), key
    # 16 + 20 + 16 + 16 visual tokens; the pixels differ
    assert masked["pixel_values"].shape == real["pixel_values"].shape == (4 * 68, 3 * 2 * 14 * 14)
    assert not torch.equal(masked["pixel_values"], real["pixel_values"])


# ------------------------------------------------------------------------------ the KL, by hand

LN2, LN4 = math.log(2), math.log(4)


def test_perception_kl_by_hand() -> None:
    # real-image log-probs -1 everywhere; masked ones shifted by x = masked - real = [0, -ln2, -ln4, +ln2]
    # k3 = e^x - x - 1 = [0, 0.5 + 0.6931 - 1, 0.25 + 1.3863 - 1, 2 - 0.6931 - 1] = [0, 0.1931, 0.6363, 0.3069]
    # clipped to [0, 0.2]:                                                      [0, 0.1931, 0.2,    0.2   ]
    # the 5th column is padding (NaN in the real branch): 0 in both outputs
    logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0, float("nan")]], requires_grad=True)
    masked = torch.tensor([[-1.0, -1.0 - LN2, -1.0 - LN4, -1.0 + LN2, 3.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    clipped, raw = perception_kl(logp, masked, mask, clip=0.2)
    torch.testing.assert_close(raw, torch.tensor([[0.0, 0.5 + LN2 - 1, 0.25 + LN4 - 1, 1 - LN2, 0.0]]))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.5 + LN2 - 1, 0.2, 0.2, 0.0]]))
    # d k3 / d logp = 1 - e^x = [0, 0.5, (clipped) 0, (clipped) 0, (padding) 0]
    clipped.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.0]]))
    # k1 = logp - masked = -x = [0, 0.6931, 1.3863, -0.6931] -> clamp to [0, 0.2] = [0, 0.2, 0.2, 0]
    clipped_k1, _ = perception_kl(logp.detach(), masked, mask, clip=0.2, estimator="k1")
    torch.testing.assert_close(clipped_k1, torch.tensor([[0.0, 0.2, 0.2, 0.0, 0.0]]))


def test_perception_kl_agrees_with_a_loop_and_ignores_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 6, generator=gen) * 3
    masked = -torch.rand(3, 6, generator=gen) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    clipped, raw = perception_kl(logp, masked, mask, clip=0.5)
    for b in range(3):
        for t in range(6):
            x = float(masked[b, t] - logp[b, t])
            want = math.exp(x) - x - 1 if mask[b, t] else 0.0
            assert float(raw[b, t]) == pytest.approx(want, abs=1e-6)
            assert float(clipped[b, t]) == pytest.approx(min(max(want, 0.0), 0.5), abs=1e-6)
    # padding never changes the result: wider rows and an extra all-padding row, filled with anything
    junk = torch.tensor([float("nan"), float("-inf"), 50.0])
    wide = [torch.cat([t, junk.expand(3, 3)], 1) for t in (logp, masked)]
    wide = [torch.cat([t, torch.full((1, 9), -7.0)]) for t in wide]
    zeros = torch.zeros(4, 9, dtype=mask.dtype)
    wide_mask = torch.cat([torch.cat([mask, zeros[:3, :3]], 1), zeros[:1]])
    clipped_w, raw_w = perception_kl(wide[0], wide[1], wide_mask, clip=0.5)
    torch.testing.assert_close(clipped_w[:3, :6], clipped)
    torch.testing.assert_close(raw_w[:3, :6], raw)
    assert (clipped_w[3] == 0).all() and (clipped_w[:, 6:] == 0).all() and torch.isfinite(raw_w).all()


# ------------------------------------------------------------------------------ the LossTerm


def _rl(**overrides) -> RLConfig:
    return RLConfig(group_size=G, max_new_tokens=8, rewards=["test.length"], **overrides)


def _update(setup: LMSetup, state: dict, items: list[dict], seed: int = 0) -> tuple[dict, dict]:
    setup.model.load_state_dict(state)
    setup.model.zero_grad(set_to_none=True)  # no gradient left over from another test
    opt = torch.optim.SGD(setup.model.parameters(), lr=0.1)  # SGD: the update is the gradient itself
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    torch.manual_seed(seed)
    metrics, _, _ = grpo_step(setup, items, opt, sched, _rl(), TrainConfig(micro_batch_size=6, grad_clip=0))
    assert metrics["nonfinite"] == 0
    return {k: v.clone() for k, v in setup.model.state_dict().items()}, metrics


def test_gamma_zero_is_exactly_grpo_and_gamma_changes_the_update(vlm) -> None:
    items = vlm[3]
    start = copy.deepcopy(vlm[0].state_dict())
    plain, _ = _update(_setup(vlm), start, items)
    off_term = PerceptionTerm(PAPOConfig(gamma=0.0), _encoder(vlm, PAPOConfig()))
    off, off_metrics = _update(_setup(vlm, [off_term]), start, items)
    assert any(not torch.equal(plain[k], start[k]) for k in start), "the update changed nothing"
    for key in plain:
        assert torch.equal(off[key], plain[key]), key
    assert off_metrics["papo/kl"] > 0  # logged even when it does not act (a GRPO run's perception KL)
    on_term = PerceptionTerm(PAPOConfig(gamma=0.5, kl_clip=10.0), _encoder(vlm, PAPOConfig()))
    on, on_metrics = _update(_setup(vlm, [on_term]), start, items)
    assert on_metrics["papo/kl"] > 0 and 0 <= on_metrics["papo/kl_clipped_frac"] <= 1
    assert "time/papo_prepare_s" in on_metrics
    assert any(not torch.equal(on[k], plain[k]) for k in plain), "PAPO must change the update"
    vlm[0].load_state_dict(start)


def _sampled_batch(vlm, term: PerceptionTerm, kept: torch.Tensor, seed: int = 1) -> tuple[LMSetup, dict, object]:
    """A rollout of the 4 items (G each) and the batch dict grpo_step would build for rows `kept`, prepared."""
    setup = _setup(vlm, [term])
    items = vlm[3]
    torch.manual_seed(seed)
    ro = sample_completions(setup.model, setup.tokenizer, setup.encode_prompts(items), G, 8, 1.0, setup.banned_ids,
                            slicer=slice_vlm_extras)
    batch = {"prompt_ids": ro.prompt_ids[kept], "prompt_mask": ro.prompt_mask[kept],
             "completion_ids": ro.completion_ids[kept], "mask": ro.completion_mask[kept]}
    term.prepare(setup, items, ro, kept, batch)
    return setup, batch, ro


def test_prepare_repeats_and_keeps_rows_like_the_sampler(vlm) -> None:
    masked = _encoder(vlm, PAPOConfig())(vlm[3])
    term = PerceptionTerm(PAPOConfig(gamma=0.01), lambda items: masked)  # one fixed draw of masks
    kept = torch.tensor([0, 1, 2, 3, 9, 10, 11, 13])  # groups 0, 2 and 3 (partly), as dynamic sampling might
    _, batch, ro = _sampled_batch(vlm, term, kept)
    want = slice_vlm_extras(expand_inputs(masked, G, slice_vlm_extras), kept, 4 * G)
    assert set(batch[EXTRAS_KEY]) == {"mm_token_type_ids", "pixel_values", "image_grid_thw"}
    for key, value in batch[EXTRAS_KEY].items():
        assert torch.equal(value, want[key]), key
    assert torch.equal(batch[EXTRAS_KEY]["mm_token_type_ids"], ro.model_inputs["mm_token_type_ids"][kept])


def test_prepare_refuses_prompts_with_other_tokens(vlm) -> None:
    _, processor, root, _ = vlm

    def other_text(items):
        changed = [dict(it, question=it["question"] + " Count twice.") for it in items]
        return encode_vlm_prompts(processor, changed, root, MIN_PIXELS, MAX_PIXELS)

    with pytest.raises(ValueError, match="same tokens"):
        _sampled_batch(vlm, PerceptionTerm(PAPOConfig(gamma=0.01), other_text), torch.arange(4 * G))


@pytest.mark.parametrize("masked_grad", [False, True])
def test_masked_branch_gets_gradient_only_when_asked(vlm, masked_grad: bool) -> None:
    cfg = PAPOConfig(gamma=1.0, kl_clip=10.0, masked_grad=masked_grad)
    term = PerceptionTerm(cfg, _encoder(vlm, cfg))
    kept = torch.arange(4 * G)
    setup, batch, _ = _sampled_batch(vlm, term, kept)
    model = setup.model
    model.train()
    model.zero_grad(set_to_none=True)
    rows, mask = slice(2, 9), batch["mask"][2:9]
    real = {k: v for k, v in setup.encode_prompts(vlm[3]).items() if k not in ("input_ids", "attention_mask")}
    real_extras = slice_vlm_extras(real, kept // G, 4)
    with torch.no_grad():  # the real-image branch is a constant here: any gradient comes from the masked one
        logp, _ = completion_logprobs(model, batch["prompt_ids"][rows], batch["prompt_mask"][rows],
                                      batch["completion_ids"][rows], mask, setup.banned_tensor(), 1.0,
                                      slice_vlm_extras(real_extras, rows, 4 * G))
        logp_masked, _ = completion_logprobs(model, batch["prompt_ids"][rows], batch["prompt_mask"][rows],
                                             batch["completion_ids"][rows], mask, setup.banned_tensor(), 1.0,
                                             slice_vlm_extras(batch[EXTRAS_KEY], rows, 4 * G))
    grad_modes = []
    hook = model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    try:
        extra, stats = term.loss(setup, _rl(), batch, rows, logp, None, mask)
    finally:
        hook.remove()
    assert grad_modes == [masked_grad]
    # the term is -gamma * clip(k3(real, masked)) on completion tokens, 0 on padding
    want, raw = perception_kl(logp, logp_masked, mask, 10.0)
    torch.testing.assert_close(extra.detach(), -want * mask, atol=1e-5, rtol=0)
    assert stats["papo/kl"] == pytest.approx(float((raw * mask).sum() / mask.sum()), abs=1e-5)
    assert extra.requires_grad == masked_grad
    if masked_grad:
        extra.sum().backward()
        vision_grads = [p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None]
        assert vision_grads and sum(float(g.abs().sum()) for g in vision_grads) > 0  # through the masked pixels


@pytest.mark.parametrize("masked_grad", [False, True])
def test_full_papo_step_with_double_entropy_loss(vlm, masked_grad: bool) -> None:
    items = vlm[3]
    start = copy.deepcopy(vlm[0].state_dict())
    cfg = PAPOConfig(gamma=0.02, eta_original=0.03, eta_masked=0.03, masked_grad=masked_grad)
    if masked_grad:
        term = PerceptionTerm(cfg, _encoder(vlm, cfg))
    else:
        with pytest.warns(UserWarning, match="eta_masked"):
            term = PerceptionTerm(cfg, _encoder(vlm, cfg))
    assert term.needs_entropy
    after, metrics = _update(_setup(vlm, [term]), start, items)
    assert metrics["papo/kl"] > 0 and metrics["papo/masked_entropy"] > 0 and metrics["papo/masked_nll"] > 0
    assert metrics["entropy"] > 0
    assert any(not torch.equal(after[k], start[k]) for k in start)
    vlm[0].load_state_dict(start)


def test_masked_images_written_by_the_encoder_differ_per_call(vlm, tmp_path: Path) -> None:
    # each RL step draws fresh masks; with the same seed and the same torch RNG state (what a resumed
    # run restores from its checkpoint) a new encoder repeats them
    cfg = PAPOConfig(seed=7)
    first, second = _encoder(vlm, cfg), _encoder(vlm, cfg)
    torch.manual_seed(0)
    a, b = first(vlm[3][:1]), first(vlm[3][:1])
    assert not torch.equal(a["pixel_values"], b["pixel_values"])
    torch.manual_seed(0)
    assert torch.equal(second(vlm[3][:1])["pixel_values"], a["pixel_values"])
    assert torch.equal(second(vlm[3][:1])["pixel_values"], b["pixel_values"])
