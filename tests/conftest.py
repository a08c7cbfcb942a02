"""Shared fixtures: a tiny diag model/tokenizer built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer, task) of the diag track: a ~0.1M-parameter Qwen2 and a local BPE tokenizer."""
    from shared.diag.model import TinyLMConfig, build_tiny_lm, train_tokenizer
    from shared.diag.task import DigitTask
    from shared.diag.track import _corpus

    task = DigitTask("reverse", 2, test_size=50)
    tokenizer = train_tokenizer(_corpus(task), 300)
    model = build_tiny_lm(TinyLMConfig(), tokenizer, seed=0)
    return model, tokenizer, task
