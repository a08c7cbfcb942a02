"""Random-number-generator state: seed everything, capture it into a checkpoint, restore it on resume.

`capture_rng()` returns only plain Python values and torch tensors (the numpy key is stored as a
list of ints), so ``rng.pt`` loads with ``torch.load(..., weights_only=True)``.

numpy and torch are imported inside the functions: importing this module stays cheap, and a
generator whose library is not installed is simply left out.
"""

from __future__ import annotations

import importlib.util
import os
import random
import warnings
from typing import Any


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global generator and torch (CPU and every CUDA device).

    ``PYTHONHASHSEED`` is set too, which only affects subprocesses started afterwards.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    if _has("numpy"):
        import numpy as np

        np.random.seed(seed % 2**32)
    if _has("torch"):
        import torch

        torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng() -> dict[str, Any]:
    """The state of every generator the lab uses, as a dict that `restore_rng` takes back.

    Keys: ``python`` (always), ``numpy`` and ``torch`` (when installed), ``torch_cuda`` (a list, one
    ByteTensor per device, when CUDA is available).
    """
    state: dict[str, Any] = {"python": random.getstate()}
    if _has("numpy"):
        import numpy as np

        name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        state["numpy"] = {
            "bit_generator": str(name),
            "key": [int(k) for k in key],  # a list, not an ndarray: loads with weights_only=True
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        }
    if _has("torch"):
        import torch

        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states captured by `capture_rng`.

    A CUDA state saved on a machine with a different number of GPUs restores the devices both
    have, with a warning (draws on the other devices will differ from the interrupted run).
    """
    random.setstate(_as_python_state(state["python"]))
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state(
            (s["bit_generator"], np.asarray(s["key"], dtype=np.uint32), s["pos"], s["has_gauss"], s["gauss"])
        )
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"].cpu())
        _restore_cuda(state.get("torch_cuda"))


def _as_python_state(value: Any) -> tuple:
    # random.setstate needs tuples; a state that went through a serialiser may come back as lists.
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def _restore_cuda(cuda_states: list | None) -> None:
    import torch

    if not cuda_states or not torch.cuda.is_available():
        if cuda_states:
            warnings.warn("the checkpoint holds CUDA RNG states but CUDA is not available here", stacklevel=3)
        return
    n = torch.cuda.device_count()
    if len(cuda_states) != n:
        warnings.warn(
            f"the checkpoint holds CUDA RNG states for {len(cuda_states)} devices, this machine has {n}; "
            f"restoring the first {min(n, len(cuda_states))}",
            stacklevel=3,
        )
    for device, s in enumerate(cuda_states[:n]):
        torch.cuda.set_rng_state(s.cpu(), device)
