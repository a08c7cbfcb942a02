"""A tiny Qwen2 causal LM and a tokenizer trained locally, saved like any Hugging Face checkpoint.

The tokenizer is byte-level BPE (the `tokenizers` library) with digits split one by one before
BPE (arithmetic needs per-digit tokens), Qwen's special tokens and a ChatML chat template, so
prompts are built with ``tokenizer.apply_chat_template`` exactly as for a real Qwen model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import require

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TinyLMConfig:
    hidden_size: int = 64
    """Width of the transformer."""
    num_layers: int = 2
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads (key/value heads are half of these, as in Qwen2's GQA)."""
    intermediate_size: int = 256
    """MLP width."""
    max_positions: int = 128
    """Longest prompt + completion, in tokens."""
    vocab_size: int = 300
    """Target size of the BPE vocabulary trained on the task corpus (special tokens included)."""

    def __post_init__(self) -> None:
        require(self.hidden_size % self.num_heads == 0, "hidden_size", "must be divisible by num_heads")
        require(self.num_heads % 2 == 0, "num_heads", "must be even (key/value heads are num_heads / 2)")
        require(self.vocab_size >= 270, "vocab_size", "must be >= 270 (256 bytes + special tokens)")


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `corpus`, with Qwen's specials."""
    from shared.lm.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(corpus, vocab_size, SPECIAL_TOKENS, EOS_TOKEN, PAD_TOKEN, CHAT_TEMPLATE)


def build_tiny_lm(cfg: TinyLMConfig, tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised `Qwen2ForCausalLM` sized by `cfg` for `tokenizer`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads // 2,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def banned_token_ids(tokenizer: Any) -> list[int]:
    """Ids the sampler must never emit: every special token except EOS (pad, <|im_start|>, ...)."""
    keep = {tokenizer.eos_token_id}
    return sorted({i for i in tokenizer.all_special_ids if i not in keep}
                  | {tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS} - keep)


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_model(path: Path | str) -> tuple[Any, Any]:
    """Model and tokenizer from a local folder (ours or any causal LM checkpoint); never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no config.json: not a Hugging Face model folder")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="float32")
    return model, tokenizer
