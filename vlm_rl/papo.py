"""PAPO: Perception-Aware Policy Optimization (Wang et al. 2025, arXiv 2507.06448), as a `LossTerm`.

PAPO adds to the GRPO/DAPO objective an *implicit perception loss*: the KL divergence between the
policy's token distribution given the real image and given a masked copy of it, over the SAME
sampled completion, which the update MAXIMISES (a policy that ignores the image has KL 0), plus a
*double entropy loss* that keeps both branches' entropies low, against "KL_prcp hacking" (the
paper's name for the collapse where the KL is driven up by making outputs erratic). Per completion
token t of a sampled response o, with I the image and I_mask its masked copy:

    KL_prcp,t   = k3(log pi(o_t | I), log pi(o_t | I_mask))            # Schulman's k3, x = masked - real
                = exp(x) - x - 1,   x = log pi(o_t | I_mask) - log pi(o_t | I)
    loss_t     += -gamma * clip(KL_prcp,t, 0, kl_clip)                  # gamma: the paper's KL_prcp weight
                  + eta_original * H_t(pi(. | I)) + eta_masked * H_t(pi(. | I_mask))

and the lab's aggregation then averages over completion tokens only, like the policy loss (the
authors' `average_loss(..., response_mask)`). The lab MINIMISES its loss, so the KL enters with a
minus sign and the entropies with a plus sign (the paper's double entropy loss is a penalty).
H_t is the exact entropy of the next-token distribution; the authors estimate it by the sampled
token's negative log-prob (same mean, noisier; logged here as ``papo/masked_nll``).

The masked log-probs are computed in `PerceptionTerm.loss`, per micro-batch, with the current
weights; the authors compute them once per step with the rollout weights, like old log-probs.
With one epoch and one mini-batch (the lab's default) the two are the same numbers.

Images are masked as PIL images right before the processor (`MaskedImageProcessor`), after
qwen-vl-utils has resized them, so the patch grid lines up with the vision tower's 14-pixel patches
and the masked prompt has exactly the tokens of the real one. The one extra cost of a PAPO step is
one forward pass of the policy over the kept rows with the masked images, per micro-batch.

Torch, numpy and PIL are imported inside the functions, so importing the config stays cheap.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import choice, require
from shared.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

EXTRAS_KEY = "papo/extras"
"""Key of the batch dict under which `PerceptionTerm.prepare` stores the masked-image model extras."""


@dataclass
class PAPOConfig:
    gamma: float = 0.0
    """Weight of the implicit perception loss (the paper's gamma); 0 turns PAPO off. The authors use
    0.01 by default and found 0.02 good for 3B models; 0.04 collapsed ("KL_prcp hacking")."""
    kl_clip: float = 0.2
    """Each token's perception KL is clamped to [0, kl_clip] before averaging, so a token stops
    pushing once its KL passes kl_clip (no gradient beyond it). 0.2 is the authors' value for their
    `kl_prcp_clipping` option; their released PAPO-G/D configs leave that option off, where only the
    k3 estimator's own cap of 10 applies: set 10 to reproduce those runs."""
    kl_estimator: str = choice("k3", "k1", "k2", "k3")
    """Per-token estimator of KL(pi(.|I) || pi(.|I_mask)) from the sampled tokens
    (shared.rl.KL_ESTIMATORS); the authors' configs use k3 (EasyR1's low_var_kl)."""
    mask_ratio: float = 0.6
    """Share of the patch grid that is masked (random_patches, noise); the paper found 0.6-0.8 best
    and full blackening (1.0) more prone to collapse. Ignored by blank."""
    patch_size: int = 14
    """Side of a masked patch in pixels of the image the processor receives (14 = Qwen2.5-VL's patch)."""
    mask_type: str = choice("random_patches", "random_patches", "blank", "noise")
    """random_patches: blacken round(mask_ratio * patches) patches drawn without replacement (the
    authors draw each patch with probability mask_ratio: same mean, no spread); blank: the whole
    image black (the authors' ratio-1.0 ablation); noise: those patches get uniform RGB noise."""
    masked_grad: bool = False
    """Whether the masked branch receives gradient. False (the authors' implementation, where the
    masked log-probs are precomputed constants): the KL can only grow by moving the real-image
    branch away from what the model predicts without the image, and the masked forward runs
    without autograd (no activations kept, no second backward: about 1.3x a GRPO step on the tiny
    model). True (TRL's PAPOTrainer) also lets the update make the masked branch worse, an easy
    way to raise the KL without perceiving more (a rising masked-branch entropy is the paper's
    early sign of KL_prcp hacking), and costs a second backward (about 2x a GRPO step).
    eta_masked has no effect on the update unless this is True."""
    eta_original: float = 0.0
    """Weight of the entropy of pi(.|I) in the double entropy loss (a penalty; the authors' configs carry 0.03)."""
    eta_masked: float = 0.0
    """Weight of the entropy of pi(.|I_mask) in the double entropy loss (a penalty; the authors'
    configs carry 0.03). Needs masked_grad=True to change the update."""
    seed: int = 0
    """Seed of the mask RNG (which patches are masked, and the noise)."""

    def __post_init__(self) -> None:
        require(self.gamma >= 0, "papo.gamma", "must be >= 0 (PAPO maximises the perception KL)")
        require(self.kl_clip > 0, "papo.kl_clip", "must be > 0")
        require(0 < self.mask_ratio <= 1, "papo.mask_ratio", "must be in (0, 1]")
        require(self.patch_size >= 1, "papo.patch_size", "must be >= 1")
        require(self.mask_type in MASK_TYPES, "papo.mask_type",
                f"{self.mask_type!r} is not allowed; choose one of: {', '.join(MASK_TYPES)}")
        for key in ("eta_original", "eta_masked"):
            require(getattr(self, key) >= 0, f"papo.{key}",
                    "must be >= 0 (the double entropy loss is a penalty; an entropy bonus is rl.entropy_coef)")


# ------------------------------------------------------------------------------------------ masking

MaskFn = Callable[["np.ndarray", PAPOConfig, random.Random], None]
MASK_TYPES: Registry[MaskFn] = Registry("PAPO mask type")
"""name -> ``fn(pixels [H, W, C] uint8, cfg, rng)`` that masks ``pixels`` in place."""


def patch_grid(height: int, width: int, patch_size: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the patch grid, row by row; edge patches may be cut by the border."""
    return [(y, x) for y in range(0, height, patch_size) for x in range(0, width, patch_size)]


def _chosen_patches(pixels: np.ndarray, cfg: PAPOConfig, rng: random.Random) -> list[tuple[int, int]]:
    grid = patch_grid(pixels.shape[0], pixels.shape[1], cfg.patch_size)
    count = min(len(grid), math.floor(cfg.mask_ratio * len(grid) + 0.5))  # round half up
    return rng.sample(grid, count)


@MASK_TYPES.register("random_patches")
def _random_patches(pixels: np.ndarray, cfg: PAPOConfig, rng: random.Random) -> None:
    p = cfg.patch_size
    for y, x in _chosen_patches(pixels, cfg, rng):
        pixels[y : y + p, x : x + p] = 0


@MASK_TYPES.register("blank")
def _blank(pixels: np.ndarray, cfg: PAPOConfig, rng: random.Random) -> None:
    pixels[...] = 0


@MASK_TYPES.register("noise")
def _noise(pixels: np.ndarray, cfg: PAPOConfig, rng: random.Random) -> None:
    import numpy as np

    noise = np.random.default_rng(rng.getrandbits(64))
    p = cfg.patch_size
    for y, x in _chosen_patches(pixels, cfg, rng):
        block = pixels[y : y + p, x : x + p]
        block[...] = noise.integers(0, 256, size=block.shape, dtype=np.uint8)


def mask_image(image: Image.Image, cfg: PAPOConfig, rng: random.Random) -> Image.Image:
    """A masked RGB copy of `image`, of the same size (so the processor gives it the same tokens).

    Patches are ``cfg.patch_size`` squares on a grid from the top-left corner; which ones (and the
    noise) come from `rng`, so the same seed gives the same mask. Images with transparency are
    first put over white, as qwen-vl-utils does. Black is 0 in every channel.
    """
    import numpy as np
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    pixels = np.array(image.convert("RGB"), dtype=np.uint8)  # [H, W, 3], a copy
    MASK_TYPES.get(cfg.mask_type)(pixels, cfg, rng)
    return Image.fromarray(pixels)  # uint8 [H, W, 3] -> RGB


class MaskedImageProcessor:
    """An image-text processor whose every image is masked (`mask_image`) right before processing.

    Everything else (chat template, tokenizer, image processor settings) is the wrapped processor's,
    so `vlm_rl.inputs.encode_vlm_prompts(MaskedImageProcessor(p, cfg, rng), items, ...)` builds the
    masked prompts exactly as the real ones, from images already resized by qwen-vl-utils.
    """

    def __init__(self, processor: Any, cfg: PAPOConfig, rng: random.Random) -> None:
        self.processor, self.cfg, self.rng = processor, cfg, rng

    def __call__(self, *args: Any, images: Any = None, **kwargs: Any) -> Any:
        if images is None and args:  # images passed positionally (the processors' first parameter)
            images, args = args[0], args[1:]
        return self.processor(*args, images=self._mask(images), **kwargs)

    def _mask(self, images: Any) -> Any:
        from PIL import Image

        if images is None:
            return None
        if isinstance(images, Image.Image):
            return mask_image(images, self.cfg, self.rng)
        return [self._mask(img) for img in images]

    def __getattr__(self, name: str) -> Any:  # only called for names this wrapper does not have
        if name == "processor":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.processor, name)


def masked_prompt_encoder(processor: Any, root: Path | str, min_pixels: int, max_pixels: int, cfg: PAPOConfig,
                          system_prompt: str | None = None) -> Callable[[list[dict]], dict[str, Any]]:
    """``encode_masked(items)`` for `PerceptionTerm`: `encode_vlm_prompts` with masked images.

    Pass the same root, pixel bounds and system prompt as the setup's `encode_prompts`. Each call
    (each RL step) draws fresh masks from a generator seeded by cfg.seed and one draw from torch's
    global RNG, which checkpoints capture: a resumed run draws the same masks as an uninterrupted one.
    """
    import torch

    from vlm_rl.inputs import encode_vlm_prompts

    masking = MaskedImageProcessor(processor, cfg, random.Random(cfg.seed))

    def encode_masked(items: list[dict]) -> dict[str, Any]:
        masking.rng = random.Random(f"{cfg.seed}-{int(torch.randint(0, 2**62, (1,)))}")
        return encode_vlm_prompts(masking, items, root, min_pixels, max_pixels, system_prompt)

    return encode_masked


# ------------------------------------------------------------------------------------ the loss


def perception_kl(logp: torch.Tensor, logp_masked: torch.Tensor, mask: torch.Tensor, clip: float,
                  estimator: str = "k3") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token implicit perception KL (PAPO's KL_prcp), clipped.

    Args:
        logp: ``[B, T]`` log pi(o_t | real image) of the sampled tokens (carries the gradient).
        logp_masked: ``[B, T]`` log pi(o_t | masked image) of the same tokens.
        mask: ``[B, T]`` bool or 0/1, the completion tokens; padding may hold any value, even NaN.
        clip: upper bound of a token's KL (lower bound 0).
        estimator: a name in ``shared.rl.KL_ESTIMATORS``; k3 is ``exp(x) - x - 1``, x = masked - real.

    Returns:
        ``(clipped, raw)``, both ``[B, T]`` and 0 at padding: ``clamp(raw, 0, clip)`` (what the loss
        uses; no gradient where the clamp is active) and the unclipped estimate (for logging).
    """
    import torch

    from shared.rl import kl

    if logp.shape != logp_masked.shape or logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, logp_masked {tuple(logp_masked.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape")
    valid = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # padding is replaced before the estimator, so a NaN or -inf there reaches neither value nor gradient
    raw = kl(torch.where(valid, logp, zero), torch.where(valid, logp_masked.to(logp.dtype), zero), estimator)
    raw = torch.where(valid, raw, zero)
    return raw.clamp(min=0.0, max=clip), raw


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> float:
    return float((values.detach() * valid).sum() / valid.sum().clamp(min=1))


class PerceptionTerm:
    """PAPO's implicit perception loss and double entropy loss, a `shared.lm.setup.LossTerm`.

    `prepare` (once per RL step) encodes the prompts with masked images through `encode_masked`,
    repeats them G times and keeps the rows the step kept, as the sampler did for the real ones,
    and stores their extras in ``batch["papo/extras"]``. `loss` (per micro-batch) runs the policy
    on the same prompt + sampled completion with the masked extras and returns the per-token term
    (see the module docstring) and its metrics.
    """

    name = "papo"

    def __init__(self, cfg: PAPOConfig, encode_masked: Callable[[list[dict]], dict[str, Any]]) -> None:
        if cfg.eta_masked > 0 and not cfg.masked_grad:
            warnings.warn("papo.eta_masked > 0 with papo.masked_grad=false: the masked branch carries no "
                          "gradient, so its entropy term is logged but does not change the update "
                          "(as in the authors' code)", stacklevel=2)
        self.cfg = cfg
        self.encode_masked = encode_masked
        self.needs_entropy = cfg.eta_original > 0

    def prepare(self, setup: Any, items: list[dict], rollout: Any, kept_index: torch.Tensor,
                batch: dict[str, Any]) -> None:
        from shared.lm.sampling import slice_rows

        slicer = setup.slice_extras or slice_rows
        masked = setup.runtime.to_device(self.encode_masked(items))
        # rows of "repeat each prompt G times, then keep kept_index" are prompts kept_index // G:
        # one row selection through the setup's slicer, without materialising all N copies
        kept = slicer(masked, kept_index // rollout.group_size, len(items))
        _check_same_tokens(kept, batch, items, kept_index // rollout.group_size)
        batch[EXTRAS_KEY] = {k: v for k, v in kept.items() if k not in ("input_ids", "attention_mask")}

    def loss(self, setup: Any, rl: Any, batch: dict[str, Any], rows: slice, logp: torch.Tensor,
             entropy: torch.Tensor | None, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        from shared.lm.logprobs import batch_prompt_args, completion_logprobs
        from shared.lm.sampling import slice_rows

        cfg = self.cfg
        slicer = setup.slice_extras or slice_rows
        prompts = batch_prompt_args(setup.model, batch, rows,
                                    lambda r: slicer(batch[EXTRAS_KEY], r, len(batch["mask"])))
        with torch.set_grad_enabled(cfg.masked_grad and torch.is_grad_enabled()):
            logp_masked, entropy_masked = completion_logprobs(
                setup.model, completion_ids=batch["completion_ids"][rows], completion_mask=mask,
                banned_ids=setup.banned_tensor(), temperature=rl.temperature, with_entropy=cfg.eta_masked > 0,
                **prompts,
            )
        kl_tok, raw = perception_kl(logp, logp_masked, mask, cfg.kl_clip, cfg.kl_estimator)
        token = -cfg.gamma * kl_tok
        if cfg.eta_original > 0:
            if entropy is None:
                raise ValueError("papo.eta_original > 0 needs the token entropy (needs_entropy is set)")
            token = token + cfg.eta_original * entropy
        if cfg.eta_masked > 0:
            token = token + cfg.eta_masked * entropy_masked
        valid = mask.to(logp.dtype)
        stats = {
            "papo/kl": _masked_mean(raw, valid),
            "papo/kl_clipped_frac": _masked_mean((raw > cfg.kl_clip).to(valid.dtype), valid),
            # the paper's entropy estimate: mean negative log-prob of the sampled tokens, masked branch
            "papo/masked_nll": _masked_mean(-logp_masked, valid),
        }
        if entropy_masked is not None:
            stats["papo/masked_entropy"] = _masked_mean(entropy_masked, valid)
        return token * valid, stats


def _check_same_tokens(kept: dict[str, Any], batch: dict[str, Any], items: list[dict], prompt_index: Any) -> None:
    ids, att = kept["input_ids"], kept["attention_mask"]
    want_ids, want_att = batch["prompt_ids"], batch["prompt_mask"]
    if ids.shape != want_ids.shape:
        detail = f"shapes {tuple(ids.shape)} vs {tuple(want_ids.shape)}"
    else:
        bad = ((ids != want_ids) | (att.to(want_att.dtype) != want_att)).any(-1).nonzero()
        if len(bad) == 0:
            return
        row = int(bad[0])
        detail = f"first at kept row {row}, item {items[int(prompt_index[row])].get('id')!r}"
    raise ValueError(
        "PAPO: the masked-image prompts do not have the same tokens as the real ones "
        f"({detail}); masking must keep each image's size (mask the PIL image before the processor) and "
        "encode_masked must build prompts exactly as setup.encode_prompts does (same root, pixel bounds, "
        "system prompt)"
    )
