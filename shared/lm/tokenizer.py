"""Training a byte-level BPE tokenizer locally (no tokenizer can be downloaded here)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def train_bpe_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str],
    eos_token: str,
    pad_token: str,
    chat_template: str,
    split_pattern: str | None = None,
    **fast_kwargs: Any,
) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `corpus` with the `tokenizers` library.

    By default digits are split one by one before BPE (arithmetic needs per-digit tokens) and the
    byte-level step splits words as GPT-2 does. With `split_pattern` (a regex), each match becomes a
    piece of its own and the text between matches is left whole for BPE to merge across words and
    punctuation: code-like text such as SVG then gets tokens like ``<circle cx="`` while numbers and
    colours (``\\d+|#[0-9a-f]{6}``) stay separate. Padding is on the left (generation); `fast_kwargs` go
    to `PreTrainedTokenizerFast` (e.g. extra special tokens).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if split_pattern:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos_token, pad_token=pad_token,
                                   padding_side="left", **fast_kwargs)
    fast.chat_template = chat_template
    return fast
