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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): the
    tiny models gain nothing from more, and on a busy 2-core machine two threads mostly wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly where CUDA is not available (this lab's CPU machines, CI)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu); none on this machine")
    for item in gpu_items:
        item.add_marker(skip)
