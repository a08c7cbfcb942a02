"""Task data for the vlm track: generators (`tasks`), the writer of the standard on-disk format
(`writer`), the checking loader that reads it back, the lab's or a user's (`loader`), and the
``rlab data vlm`` command (`cli`).

Names are imported lazily, so ``import vlm_rl.data`` (and ``rlab --help``) loads neither PIL, numpy
nor ``datasets``::

    from vlm_rl.data import write_dataset, load_split, demonstration
    root = write_dataset(Path("data/counting"), "counting", n_train=20000, n_test=1000, n_ood=1000, seed=0)
    rows, report = load_split(root, "test")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TASKS": "vlm_rl.data.tasks",
    "Task": "vlm_rl.data.tasks",
    "demonstration": "vlm_rl.data.tasks",
    "generate": "vlm_rl.data.tasks",
    "get_task": "vlm_rl.data.tasks",
    "SPLITS": "vlm_rl.data.writer",
    "write_dataset": "vlm_rl.data.writer",
    "LoadReport": "vlm_rl.data.loader",
    "load_split": "vlm_rl.data.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vlm_rl.data' has no attribute {name!r}")
