"""Sampling metrics: unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on
Code") and mean@k."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _pass_at_k_scalar(n: int, c: int, k: int) -> float:
    """``1 - C(n-c, k) / C(n, k)`` as the stable product ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``."""
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _as_int_array(x: Any, what: str) -> np.ndarray:
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" and not np.all(array == np.round(array)):
        raise ValueError(f"{what} must be whole numbers, got {x!r}")
    return array.astype(np.int64)


def pass_at_k(n: Any, c: Any, k: int) -> Any:
    """Unbiased pass@k: the chance that at least one of k samples, drawn without replacement from n
    samples of which c are correct, is correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (no huge binomials), once per distinct (n, c).

    Args:
        n: samples per problem; python int, or numpy / torch array.
        c: correct samples per problem, ``0 <= c <= n``; int or array (broadcast against n).
        k: budget, ``1 <= k <= n`` (``k > n`` is a ``ValueError``).

    Returns:
        a python float for scalar n and c; else an array of the broadcast shape (float64), a
        torch tensor if n or c was one, a numpy array otherwise. ``pass@1 = c / n``.
    """
    n_arr, c_arr = np.broadcast_arrays(_as_int_array(n, "n"), _as_int_array(c, "c"))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if np.any(n_arr < k):
        raise ValueError(f"k={k} exceeds the number of samples n={int(n_arr.min())}")
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("c must satisfy 0 <= c <= n")
    pairs, inverse = np.unique(np.stack([n_arr.ravel(), c_arr.ravel()], axis=1), axis=0, return_inverse=True)
    values = np.array([_pass_at_k_scalar(int(nn), int(cc), k) for nn, cc in pairs], dtype=np.float64)
    result = values[np.asarray(inverse).reshape(-1)].reshape(n_arr.shape)
    if isinstance(n, torch.Tensor) or isinstance(c, torch.Tensor):
        return torch.from_numpy(result)
    return float(result) if result.ndim == 0 else result


def _scores_2d(scores: Any, what: str) -> np.ndarray:
    array = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{what} must be [num_items, n] with n >= 1, got shape {array.shape}")
    return array


def pass_at_k_from_scores(correct: Any, k: int) -> float:
    """Mean over items of :func:`pass_at_k`.

    Args:
        correct: ``[num_items, n]`` bool or 0/1 (nonzero = correct), numpy, torch or nested lists.
        k: budget, ``1 <= k <= n``.

    Returns:
        float in [0, 1]; 0.0 for zero items.
    """
    array = _scores_2d(correct, "correct")
    if array.shape[0] == 0:
        return 0.0
    c = (array != 0).sum(axis=1)
    return float(np.mean(pass_at_k(array.shape[1], c, k)))


def mean_at_k(scores: Any, k: int) -> float:
    """mean@k: the expected average score of k samples per item, averaged over items.

    Every k-subset of the n samples is equally likely, so the unbiased (and lowest-variance)
    estimate of the expected mean of k samples is the mean of ALL n samples -- it does not depend
    on k. ``k`` is only checked (``1 <= k <= n``) so that the call reads like ``pass_at_k``. (Taking
    the first k samples would also be unbiased, with more variance.)

    Args:
        scores: ``[num_items, n]`` rewards or 0/1 correctness.
        k: budget, ``1 <= k <= n``.

    Returns:
        float; 0.0 for zero items.
    """
    array = _scores_2d(scores, "scores")
    if not 1 <= k <= array.shape[1]:
        raise ValueError(f"need 1 <= k <= n={array.shape[1]}, got k={k}")
    if array.shape[0] == 0:
        return 0.0
    return float(np.mean(array.astype(np.float64)))
