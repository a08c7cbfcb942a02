"""Image-text models: load any local Qwen2-VL / Qwen2.5-VL folder, or build a tiny Qwen2.5-VL here.

The tiny model is made of transformers' own classes (`Qwen2_5_VLConfig`,
`Qwen2_5_VLForConditionalGeneration`, `Qwen2_5_VLProcessor` with `Qwen2VLImageProcessor`), a
byte-level BPE tokenizer trained locally with `tokenizers` (digits split one by one, Qwen2.5-VL's
special tokens and chat template), and is written with ``save_pretrained``: it loads back through
`AutoModelForImageTextToText` / `AutoProcessor` exactly like a downloaded Qwen2.5-VL-3B-Instruct.

Torch and transformers are imported inside the functions, so ``rlab --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.config import require

# Qwen2.5's special tokens, in Qwen's order (ids 151643..151656 in the real vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2.5-VL-Instruct's chat template (chat_template.json of Qwen/Qwen2.5-VL-3B-Instruct).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class TinyVLMConfig:
    hidden_size: int = 128
    """Width of the language model."""
    num_layers: int = 2
    """Decoder layers of the language model."""
    num_heads: int = 4
    """Attention heads of the language model."""
    num_kv_heads: int = 2
    """Key/value heads of the language model (grouped-query attention)."""
    intermediate_size: int = 512
    """MLP width of the language model."""
    max_positions: int = 1024
    """Longest prompt (visual tokens included) + completion, in tokens."""
    vision_depth: int = 2
    """Blocks of the vision transformer."""
    vision_hidden_size: int = 64
    """Width of the vision transformer."""
    vision_heads: int = 4
    """Attention heads of the vision transformer."""
    vision_intermediate_size: int = 128
    """MLP width of the vision transformer."""
    patch_size: int = 14
    """Side of a vision patch in pixels (14 as in Qwen2.5-VL)."""
    spatial_merge_size: int = 2
    """Side of the square of patches merged into one visual token (2: 2x2 patches -> 1 token)."""
    temporal_patch_size: int = 2
    """Frames per temporal patch (an image is repeated to fill it, as in Qwen2.5-VL)."""
    vocab_size: int = 400
    """Target size of the BPE vocabulary trained on the task corpus (special tokens included)."""
    min_pixels: int = 112 * 112
    """Images with fewer pixels are upscaled (112 x 112 gives 16 visual tokens)."""
    max_pixels: int = 112 * 112 * 4
    """Images with more pixels are downscaled (224 x 224 gives 64 visual tokens)."""
    rope_theta: float = 1.0e6
    """Base of the language model's 3-D rotary position (Qwen2.5-VL's 1e6). Qwen2.5-VL gives time the highest
    rotary frequencies, then height, then width; at a head size of 32 and 1e6 the width section turns by
    about 1e-3 radians across 8 visual tokens, so a smaller base is what lets a tiny model tell columns apart
    by position (see docs/results.md, svg sixth round)."""

    def __post_init__(self) -> None:
        require(self.hidden_size % self.num_heads == 0, "hidden_size", "must be divisible by num_heads")
        head_dim = self.hidden_size // self.num_heads
        require(head_dim % 8 == 0, "hidden_size", "hidden_size / num_heads must be a multiple of 8 (3-D rotary)")
        require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads", "must divide num_heads")
        require(self.vision_hidden_size % self.vision_heads == 0, "vision_hidden_size",
                "must be divisible by vision_heads")
        require((self.vision_hidden_size // self.vision_heads) % 4 == 0, "vision_hidden_size",
                "vision_hidden_size / vision_heads must be a multiple of 4 (2-D rotary)")
        require(self.vocab_size >= 256 + len(SPECIAL_TOKENS), "vocab_size",
                f"must be >= {256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens)")
        factor = self.patch_size * self.spatial_merge_size
        require(self.min_pixels >= factor * factor, "min_pixels", f"must be >= {factor}^2 (one visual token)")
        require(self.max_pixels >= self.min_pixels, "max_pixels", "must be >= min_pixels")
        require(self.rope_theta > 1, "rope_theta", "must be > 1")
        for key in ("num_layers", "vision_depth", "patch_size", "spatial_merge_size", "temporal_patch_size",
                    "max_positions", "intermediate_size", "vision_intermediate_size"):
            require(getattr(self, key) > 0, key, "must be positive")

    @property
    def mrope_section(self) -> list[int]:
        """Split of the rotary half-dimension into (time, height, width), in Qwen2.5-VL's 2:3:3 ratio."""
        half = self.hidden_size // self.num_heads // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


# -------------------------------------------------------------------------------------------- tokenizer


def default_corpus() -> list[str]:
    """Lines covering letters, digits, the answer tags and the chat scaffolding of the lab's tasks."""
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "brown", "pink", "cyan"]
    shapes = ["circle", "square", "triangle", "star", "rectangle", "bar", "segment", "digit", "number", "object"]
    lines = [DEFAULT_SYSTEM_PROMPT, "system", "user", "assistant", "The quick brown fox jumps over the lazy dog.",
             "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG?!", "0123456789 + - * / = . , : ; ( ) % < >"]
    for i, colour in enumerate(colours):
        for j, shape in enumerate(shapes):
            n = (i * 7 + j * 3) % 12
            lines.append(f"How many {colour} {shape}s are in the image?")
            lines.append(f"<think>I count the {colour} {shape}s one by one: there are {n}.</think>"
                         f"<answer>{n}</answer>")
    for a in range(0, 100, 7):
        b = (a * 13 + 5) % 100
        lines.append("What is the sum of the two numbers in the image?")
        lines.append(f"<think>The numbers are {a} and {b}. {a} + {b} = {a + b}.</think><answer>{a + b}</answer>")
        lines.append(f"<think>The left bar is {a} and the right bar is {b}; the difference is {abs(a - b)}."
                     f"</think><answer>{abs(a - b)}</answer>")
    lines += ["Which bar is taller, the left or the right one?", "By how much is the longer segment longer?",
              "Answer with a number. Think first in <think> </think>, then answer in <answer> </answer>."]
    return lines


def train_vlm_tokenizer(corpus: Iterable[str], vocab_size: int, split_pattern: str | None = None) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` with Qwen2.5-VL's special tokens and chat template.

    Digits are split one by one before BPE unless `split_pattern` is given (see
    `shared.lm.tokenizer.train_bpe_tokenizer`); EOS is ``<|im_end|>``, padding ``<|endoftext|>`` on the left.
    """
    from shared.lm.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(
        corpus, vocab_size, SPECIAL_TOKENS, EOS_TOKEN, PAD_TOKEN, CHAT_TEMPLATE, split_pattern=split_pattern,
        split_special_tokens=False,
        model_max_length=32768,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN,
                              "vision_bos_token": VISION_START, "vision_eos_token": VISION_END},
    )


# ---------------------------------------------------------------------------------------------- build


def _model_config(cfg: TinyVLMConfig, tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", IMAGE_TOKEN), ("video_token_id", VIDEO_TOKEN),
        ("vision_start_token_id", VISION_START), ("vision_end_token_id", VISION_END)]}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta),
                         "mrope_section": cfg.mrope_section},
        bos_token_id=tokenizer.pad_token_id,  # Qwen's configs name <|endoftext|> as bos; it is never prepended
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_heads=cfg.vision_heads,
        patch_size=cfg.patch_size,
        spatial_merge_size=cfg.spatial_merge_size,
        temporal_patch_size=cfg.temporal_patch_size,
        out_hidden_size=cfg.hidden_size,
        window_size=cfg.patch_size * cfg.spatial_merge_size * 4,  # 112 px windows at the defaults, as in Qwen2.5-VL
        fullatt_block_indexes=[cfg.vision_depth - 1],
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def build_processor(cfg: TinyVLMConfig, tokenizer: Any) -> Any:
    """The real `Qwen2_5_VLProcessor` around `tokenizer`, with cfg's pixel bounds and patch sizes."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = dict(patch_size=cfg.patch_size, merge_size=cfg.spatial_merge_size,
                 temporal_patch_size=cfg.temporal_patch_size)
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels},
                                            **sizes)
    video_processor = Qwen2VLVideoProcessor(**sizes)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def build_tiny_vlm(cfg: TinyVLMConfig, out_dir: Path | str, seed: int = 0,
                   corpus: Iterable[str] | None = None, split_pattern: str | None = None) -> Path:
    """Build a randomly initialised tiny Qwen2.5-VL (model, tokenizer, processor) and save it in `out_dir`.

    The tokenizer is trained on `corpus` (default: the vlm tasks' text) with `split_pattern` (see
    `train_vlm_tokenizer`)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    tokenizer = train_vlm_tokenizer(corpus if corpus is not None else default_corpus(), cfg.vocab_size, split_pattern)
    processor = build_processor(cfg, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(_model_config(cfg, tokenizer))
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id, None
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# ----------------------------------------------------------------------------------------------- load


def _check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder: expected a Hugging Face model folder")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no config.json: not a Hugging Face model folder")
    if not any((path / name).exists() for name in ("preprocessor_config.json", "processor_config.json")):
        raise FileNotFoundError(f"{path} holds no preprocessor_config.json (nor processor_config.json): "
                                "the image processor is missing; save the processor beside the weights")
    has_template = (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists()
    if not has_template:
        import json

        for name in ("tokenizer_config.json", "processor_config.json"):
            if (path / name).exists() and json.loads((path / name).read_text()).get("chat_template"):
                has_template = True
    if not has_template:
        raise FileNotFoundError(f"{path} holds no chat template (chat_template.jinja, chat_template.json or "
                                "'chat_template' in tokenizer_config.json): prompts cannot be built")


def load_vlm(path: Path | str, dtype: str = "float32") -> tuple[Any, Any]:
    """Model and processor from a local image-text model folder (Qwen2-VL, Qwen2.5-VL, ours); never downloads.

    Raises FileNotFoundError naming what is missing (folder, config.json, processor config, chat
    template). The tokenizer pads on the left (generation).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(path)
    _check_model_folder(path)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ValueError(f"{path}: AutoProcessor gave {type(processor).__name__}, not an image-text processor")
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype)
    return model, processor


def vlm_banned_ids(processor: Any) -> list[int]:
    """Ids the sampler must never emit: every special, vision and placeholder token except EOS.

    A sampled ``<|image_pad|>`` makes the next forward crash ("Image features and image tokens do
    not match"); ``<|im_start|>``, padding and the vision markers are never valid completions either.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    names = set(SPECIAL_TOKENS) | set(tokenizer.all_special_tokens)
    names |= {tok.content for tok in tokenizer.added_tokens_decoder.values() if tok.special}
    ids = {tokenizer.convert_tokens_to_ids(name) for name in names}
    for attr in ("image_token_id", "video_token_id"):
        if getattr(processor, attr, None) is not None:
            ids.add(getattr(processor, attr))
    eos = tokenizer.eos_token_id
    return sorted(i for i in ids if i is not None and i != eos)


def visual_tokens(processor: Any, height: int, width: int) -> int:
    """Visual tokens of one image of this size after the processor's resizing and patch merging."""
    data = processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
    return int(data["num_image_tokens"][0])


# ------------------------------------------------------------------------------------------------ CLI


def tiny_vlm(
    out: Annotated[Path, typer.Option(help="Folder to write the model, tokenizer and processor to")] = Path(
        "models/tiny-vl"),
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation")] = 0,
    hidden_size: Annotated[int, typer.Option(help="Width of the language model")] = TinyVLMConfig.hidden_size,
    num_layers: Annotated[int, typer.Option(help="Decoder layers")] = TinyVLMConfig.num_layers,
    vision_depth: Annotated[int, typer.Option(help="Vision transformer blocks")] = TinyVLMConfig.vision_depth,
    vision_hidden_size: Annotated[int, typer.Option(
        help="Width of the vision transformer")] = TinyVLMConfig.vision_hidden_size,
    vocab_size: Annotated[int, typer.Option(help="Target BPE vocabulary size")] = TinyVLMConfig.vocab_size,
    min_pixels: Annotated[int, typer.Option(
        help="Smaller images are upscaled to this many pixels (112*112: 16 visual tokens)")] = TinyVLMConfig.min_pixels,
    max_pixels: Annotated[int, typer.Option(
        help="Larger images are downscaled to this many pixels")] = TinyVLMConfig.max_pixels,
) -> None:
    """Build a tiny Qwen2.5-VL (random weights, local BPE tokenizer, the real processor) into --out.

    The folder loads like a downloaded Qwen2.5-VL-Instruct (AutoModelForImageTextToText, AutoProcessor).
    """
    from shared.config import ConfigError

    try:
        cfg = TinyVLMConfig(hidden_size=hidden_size, num_layers=num_layers, vision_depth=vision_depth,
                            vision_hidden_size=vision_hidden_size, vocab_size=vocab_size, min_pixels=min_pixels,
                            max_pixels=max_pixels)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    path = build_tiny_vlm(cfg, out, seed=seed)
    model, processor = load_vlm(path)
    params = sum(p.numel() for p in model.parameters())
    typer.echo(f"{path}")
    typer.echo(f"parameters: {params:,} ({params / 1e6:.2f}M); vocabulary: {len(processor.tokenizer)} tokens; "
               f"visual tokens per 112x112 image: {visual_tokens(processor, 112, 112)}")
