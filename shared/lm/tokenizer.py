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
    **fast_kwargs: Any,
) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `corpus` with the `tokenizers` library.

    Digits are split one by one before BPE (arithmetic needs per-digit tokens); padding is on the
    left (generation); `fast_kwargs` go to `PreTrainedTokenizerFast` (e.g. extra special tokens).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
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
