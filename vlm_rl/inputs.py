"""Model inputs of image-text prompts, and row slicing of their extra tensors.

Qwen2-VL / Qwen2.5-VL processors return, for a batch of B prompts with one image each:

- ``input_ids``, ``attention_mask``, ``mm_token_type_ids``: [B, P] (left padded; mm type 1 marks
  the image placeholders, and the model needs it for its 3-D rotary positions);
- ``pixel_values``: [sum over images of t*h*w patches, C * temporal_patch * patch^2], flattened
  across images, so row i's patches are a contiguous block whose length comes from
- ``image_grid_thw``: [number of images, 3] (patches along time, height, width).

Row slicing (micro-batches, dropping rows, repeating prompts G times) must therefore cut
``pixel_values`` by the patch counts, not by the first dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PIXEL_KEYS = ("pixel_values", "image_grid_thw")
"""Extras flattened across images: sliced by image, not by row."""


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()  # qwen-vl-utils converts to RGB (RGBA over white) as for Qwen's own inputs
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"image {path} cannot be read: {err}") from err


def vlm_messages(item: dict[str, Any], images: Sequence[Any], min_pixels: int, max_pixels: int,
                 system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The chat of one item: optional system turn, then a user turn with its images before the question."""
    content: list[dict[str, Any]] = [
        {"type": "image", "image": img, "min_pixels": min_pixels, "max_pixels": max_pixels} for img in images
    ]
    content.append({"type": "text", "text": item["question"]})
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": content})
    return messages


def encode_vlm_prompts(
    processor: Any,
    items: Sequence[dict[str, Any]],
    root: Path | str,
    min_pixels: int,
    max_pixels: int,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """Left-padded model inputs of `items` (rows ``{id, images: [paths relative to root], question, ...}``).

    Images are resized by qwen-vl-utils (``process_vision_info``, min/max pixels), the prompt is
    the processor's chat template with a generation prompt. Returns every tensor the processor
    gives (input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw).
    A missing or unreadable image raises ValueError naming the file.
    """
    from qwen_vl_utils import process_vision_info

    root = Path(root)
    chats = []
    for item in items:
        images = [_open_image(root / rel) for rel in item.get("images") or []]
        chats.append(vlm_messages(item, images, min_pixels, max_pixels, system_prompt))
    texts = [processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    patch_size = getattr(processor.image_processor, "patch_size", 14)
    # qwen-vl-utils resizes to multiples of patch_size * 2 (its merge size); before 0.0.14 always 28
    kwargs = {} if patch_size == 14 else {"image_patch_size": patch_size}
    image_inputs, _ = process_vision_info(chats, **kwargs)
    processor.tokenizer.padding_side = "left"
    enc = processor(text=texts, images=image_inputs, padding=True, return_tensors="pt")
    return dict(enc)


def image_patch_counts(image_grid_thw: Any) -> Any:
    """Patches per image [num_images] (t * h * w) from ``image_grid_thw`` [num_images, 3]."""
    return image_grid_thw.prod(-1)


def row_image_counts(extras: dict[str, Any], num_rows: int) -> Any:
    """[num_rows] number of images of each row.

    Read from ``mm_token_type_ids`` (1 marks an image placeholder): rows take images in order
    until their placeholder count is covered, so rows without images or with several work. Without
    it, one image per row is assumed (and checked against ``image_grid_thw``).
    """
    import torch

    grid = extras["image_grid_thw"]
    mm = extras.get("mm_token_type_ids")
    if mm is None or mm.shape[0] != num_rows:
        if len(grid) != num_rows:
            raise ValueError(f"image_grid_thw has {len(grid)} images for {num_rows} rows and there is no "
                             "mm_token_type_ids to tell which row holds which: pass images_per_row")
        return torch.ones(num_rows, dtype=torch.long)
    row_tokens = (mm == 1).sum(-1).tolist()
    patches = image_patch_counts(grid)
    total_tokens = sum(row_tokens)
    if total_tokens == 0 or int(patches.sum()) % total_tokens:
        raise ValueError(f"mm_token_type_ids marks {total_tokens} image tokens, which does not match the "
                         f"{int(patches.sum())} patches of image_grid_thw")
    image_tokens = (patches // (int(patches.sum()) // total_tokens)).tolist()  # merge_size^2 patches per token
    counts, image = [], 0
    for need in row_tokens:
        start = image
        while need > 0 and image < len(image_tokens):
            need -= image_tokens[image]
            image += 1
        if need != 0:
            raise ValueError("image placeholders of a row do not match whole images of image_grid_thw")
        counts.append(image - start)
    return torch.tensor(counts, dtype=torch.long)


def slice_vlm_extras(
    extras: dict[str, Any],
    rows: slice | Any,
    num_rows: int,
    images_per_row: Any | None = None,
) -> dict[str, Any]:
    """Rows `rows` (a slice or a LongTensor of row indices, repeats allowed) of the extra model inputs.

    Per-row tensors (first dim == num_rows, e.g. mm_token_type_ids) are indexed directly;
    ``pixel_values`` is cut into per-image blocks by the patch counts of ``image_grid_thw`` and
    those blocks are gathered in row order, as is ``image_grid_thw``. Each row is assumed to hold
    one image unless ``images_per_row`` [num_rows] says otherwise (0 for a text-only row).
    Plugs into `shared.lm.setup.LMSetup.slice_extras`; with ``rows = arange(B).repeat_interleave(G)``
    it repeats each prompt G times (prompt-major).
    """
    import torch

    if extras.get("pixel_values_videos") is not None:
        raise ValueError("slice_vlm_extras handles images only; video inputs (pixel_values_videos) are not supported")
    index = torch.arange(num_rows)[rows] if isinstance(rows, slice) else torch.as_tensor(rows, dtype=torch.long)
    out: dict[str, Any] = {}
    for key, value in extras.items():
        if key in PIXEL_KEYS:
            continue
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == num_rows:
            out[key] = value[index]
        else:
            out[key] = value
    if extras.get("image_grid_thw") is None:
        return out
    grid = extras["image_grid_thw"]
    per_row = row_image_counts(extras, num_rows) if images_per_row is None else torch.as_tensor(images_per_row)
    if int(per_row.sum()) != len(grid):
        raise ValueError(f"images_per_row sums to {int(per_row.sum())} but image_grid_thw has {len(grid)} images")
    image_index = _block_index(per_row, index)
    if len(image_index) == 0:  # text-only rows: no vision inputs at all (empty pixel_values would crash)
        return out
    out["image_grid_thw"] = grid[image_index]
    if extras.get("pixel_values") is not None:
        pixels, patches = extras["pixel_values"], image_patch_counts(grid)
        if int(patches.sum()) != len(pixels):
            raise ValueError(f"pixel_values has {len(pixels)} patches but image_grid_thw accounts for "
                             f"{int(patches.sum())}")
        out["pixel_values"] = pixels[_block_index(patches, image_index)]
    return out


def _block_index(lengths: Any, which: Any) -> Any:
    """Indices of blocks `which` (in that order, repeats allowed) of a flat axis cut into blocks of `lengths`.

    >>> import torch
    >>> _block_index(torch.tensor([2, 0, 3]), torch.tensor([2, 0, 2])).tolist()
    [2, 3, 4, 0, 1, 2, 3, 4]
    """
    import torch

    starts = lengths.cumsum(0) - lengths
    sel = lengths[which]
    offsets = torch.arange(int(sel.sum()), device=lengths.device) - torch.repeat_interleave(sel.cumsum(0) - sel, sel)
    return torch.repeat_interleave(starts[which], sel) + offsets


def expand_vlm_inputs(inputs: dict[str, Any], group_size: int, images_per_row: Any | None = None) -> dict[str, Any]:
    """Repeat each prompt's inputs `group_size` times, prompt-major, pixel blocks included."""
    import torch

    num_rows = len(inputs["input_ids"])
    rows = torch.arange(num_rows).repeat_interleave(group_size)
    return slice_vlm_extras(inputs, rows, num_rows, images_per_row)
