"""Atomic checkpoints: round trip, exact resume, corruption handling, pruning, SIGKILL mid-save, RNG."""

from __future__ import annotations

import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.tracking import (
    CheckpointError,
    CheckpointWarning,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    seed_everything,
    verify_checkpoint,
)
from shared.tracking.checkpoint import list_checkpoints, read_manifest

# ---------------------------------------------------------------------------------------------------
# a tiny trainer whose every step consumes python, numpy and torch randomness


def _make(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1)
    )
    return model, torch.optim.Adam(model.parameters(), lr=0.05)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    model.train()
    for _ in range(steps):
        scale = random.uniform(0.5, 1.5) * float(np.random.uniform(0.5, 1.5))
        x = torch.randn(16, 4) * scale
        loss = ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()  # dropout draws from torch RNG
        opt.zero_grad()
        loss.backward()
        opt.step()


def _save(ckpt_dir: Path, step: int, model, opt, keep_last: int | None = 2) -> Path:
    return save_checkpoint(
        ckpt_dir,
        step,
        tensors={"model": model.state_dict()},
        objects={"optimizer": opt.state_dict(), "rng": capture_rng(), "trainer": {"step": step, "epoch": 0}},
        keep_last=keep_last,
    )


def _tiny(ckpt_dir: Path, step: int, keep_last: int | None = None) -> Path:
    return save_checkpoint(
        ckpt_dir,
        step,
        {"model": {"w": torch.full((4,), float(step))}},
        {"trainer": {"step": step}},
        keep_last,
    )


# ---------------------------------------------------------------------------------------------------
# round trips


def test_round_trip_gives_identical_state(tmp_path: Path) -> None:
    seed_everything(0)
    model, opt = _make(0)
    _train(model, opt, 2)
    path = _save(tmp_path, 2, model, opt)
    assert path.name == "step-00000002"
    manifest = read_manifest(path)
    assert manifest["step"] == 2
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "rng.pt", "trainer.pt"}

    tensors, objects = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(tensors["model"][key], value)
    saved_state = opt.state_dict()["state"]
    for index, state in objects["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, saved_state[index][name])
    assert objects["trainer"] == {"step": 2, "epoch": 0}
    # Everything we write for a trainer loads with the safe unpickler.
    for name in ("optimizer.pt", "rng.pt", "trainer.pt"):
        torch.load(path / name, weights_only=True)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    seed_everything(1)
    model, opt = _make(1)
    _train(model, opt, 6)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    seed_everything(1)
    model, opt = _make(1)
    _train(model, opt, 3)
    path = _save(tmp_path, 3, model, opt)
    _train(model, opt, 2)  # work after the checkpoint that a crash loses

    seed_everything(99)  # a fresh process: other weights, other generator states
    model, opt = _make(99)
    tensors, objects = load_checkpoint(path)
    model.load_state_dict(tensors["model"])
    opt.load_state_dict(objects["optimizer"])
    restore_rng(objects["rng"])
    _train(model, opt, 6 - objects["trainer"]["step"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, uninterrupted[key]), key


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # one storage, two state-dict keys


def test_tied_and_noncontiguous_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Tied()
    view = torch.arange(12.0).reshape(3, 4).t()  # non-contiguous
    path = save_checkpoint(tmp_path, 1, {"model": model.state_dict(), "extra": {"view": view}}, {})
    tensors, _ = load_checkpoint(path)
    fresh = _Tied()
    fresh.load_state_dict(tensors["model"])
    assert torch.equal(fresh.embed.weight, model.embed.weight)
    assert fresh.head.weight.data_ptr() == fresh.embed.weight.data_ptr()  # still tied
    assert torch.equal(tensors["extra"]["view"], view)


def test_rng_capture_restore_reproduces_draws() -> None:
    seed_everything(5)
    state = capture_rng()

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()

    first = draws()
    draws()
    restore_rng(state)
    assert draws() == first
    seed_everything(5)
    assert draws() == first


# ---------------------------------------------------------------------------------------------------
# corruption and crashes


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_truncated_newest_falls_back_to_previous(tmp_path: Path) -> None:
    _tiny(tmp_path, 10)
    _tiny(tmp_path, 20)
    _truncate(tmp_path / "step-00000020" / "model.safetensors")
    reason = verify_checkpoint(tmp_path / "step-00000020")
    assert reason is not None and "step-00000020/model.safetensors" in reason

    with pytest.warns(CheckpointWarning, match="model.safetensors"):
        found = latest_checkpoint(tmp_path)
    assert found == (10, tmp_path / "step-00000010")
    # moved aside, never deleted, so it can't be mistaken for a good one again
    aside = list(tmp_path.glob("step-00000020.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "model.safetensors").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(tmp_path) == found


def test_bit_flip_is_caught_by_sha256(tmp_path: Path) -> None:
    path = _tiny(tmp_path, 40)
    file = path / "trainer.pt"
    data = bytearray(file.read_bytes())
    data[-5] ^= 0xFF
    file.write_bytes(bytes(data))
    assert verify_checkpoint(path, full=False) is None  # same size: only the hash sees it
    assert verify_checkpoint(path) == f"{file}: sha256 mismatch (truncated or corrupt)"
    with pytest.raises(CheckpointError, match="trainer.pt: sha256 mismatch"):
        load_checkpoint(path)


def test_unfinished_writes_are_ignored(tmp_path: Path) -> None:
    _tiny(tmp_path, 20)
    # a crash before the rename: a temporary folder (its process is gone)
    tmp = tmp_path / ".tmp-step-00000030-999999999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    # a folder without its manifest (written by something that isn't atomic)
    (tmp_path / "step-00000040").mkdir()
    (tmp_path / "step-00000040" / "model.safetensors").write_bytes(b"x")

    with pytest.warns(CheckpointWarning, match="checkpoint.json missing: write did not finish"):
        assert latest_checkpoint(tmp_path) == (20, tmp_path / "step-00000020")
    _tiny(tmp_path, 50)
    assert not tmp.exists()  # the next save cleans up leftovers


def test_all_bad_gives_none(tmp_path: Path) -> None:
    _tiny(tmp_path, 1)
    _tiny(tmp_path, 2)
    (tmp_path / "step-00000002" / "checkpoint.json").unlink()
    _truncate(tmp_path / "step-00000001" / "trainer.pt")
    with pytest.warns(CheckpointWarning) as record:
        assert latest_checkpoint(tmp_path) is None
    assert len(record) == 2
    assert latest_checkpoint(tmp_path / "missing") is None


def test_saving_a_step_again_moves_the_old_one_aside(tmp_path: Path) -> None:
    _tiny(tmp_path, 10)
    _truncate(tmp_path / "step-00000010" / "model.safetensors")
    _tiny(tmp_path, 10)
    assert verify_checkpoint(tmp_path / "step-00000010") is None
    corrupt = list(tmp_path.glob("step-00000010.corrupt-*"))
    assert len(corrupt) == 1 and (corrupt[0] / "checkpoint.json").exists()  # kept for inspection

    _tiny(tmp_path, 10)  # over a valid one: that one is kept too
    assert len(list(tmp_path.glob("step-00000010.replaced-*"))) == 1


def test_pruning_keeps_the_newest_valid(tmp_path: Path) -> None:
    for step in range(1, 6):
        _tiny(tmp_path, step, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]

    # An invalid checkpoint doesn't count towards keep_last and is moved aside, not deleted.
    _truncate(tmp_path / "step-00000005" / "model.safetensors")
    _tiny(tmp_path, 6, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    assert len(list(tmp_path.glob("step-00000005.corrupt-*"))) == 1

    # The checkpoint just written is never pruned, even if newer ones exist.
    _tiny(tmp_path, 3, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 6]
    with pytest.raises(ValueError, match="keep_last"):
        _tiny(tmp_path, 7, keep_last=0)


def _save_forever(ckpt_dir: Path, step: int) -> None:
    torch.set_num_threads(1)
    while True:
        save_checkpoint(
            ckpt_dir,
            step,
            {"model": {"w": torch.full((256, 1024), float(step))}},
            {"trainer": {"step": step}},
        )
        step += 1


def _wait_for_step(ckpt_dir: Path, step: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(s >= step for s, _ in list_checkpoints(ckpt_dir)):
            return
        time.sleep(0.002)
    raise AssertionError(f"the child never finished checkpoint {step}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_during_save_always_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    _tiny(tmp_path, 0)
    rnd = random.Random(0)
    for _ in range(6):
        start = latest_checkpoint(tmp_path)[0] + 1
        pid = os.fork()
        if pid == 0:  # the child saves 1 MiB checkpoints until it is killed
            try:
                _save_forever(tmp_path, start)
            finally:
                os._exit(1)
        try:
            _wait_for_step(tmp_path, start)  # at least one save done, then kill at a random moment
            time.sleep(rnd.uniform(0.0, 0.05))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # no invalid step-* folder ever appears
            step, path = latest_checkpoint(tmp_path)
        tensors, objects = load_checkpoint(path)
        assert step >= start and objects["trainer"]["step"] == step
        assert torch.all(tensors["model"]["w"] == step)
    _tiny(tmp_path, 10_000)
    assert not list(tmp_path.glob(".tmp-*"))  # the crashed writes' leftovers are gone
