"""Kill -9 at any moment, resume, and get the same run: every step logged once, identical weights."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from shared.tracking import read_metrics

OVERRIDES = [
    "train.steps=16", "sft.steps=8", "train.save_every=4", "train.eval_every=12", "eval.size=16",
    "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=6", "sft.batch_size=8",
    "task.kind=reverse", "task.test_size=16", "train.keep_checkpoints=3",
]


def _cmd(*extra: str) -> list[str]:
    args = [sys.executable, "-m", "shared.cli", "train", "diag"]
    for o in OVERRIDES:
        args += ["--set", o]
    return args + list(extra)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if "nonfinite" in r]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] == wb[key]).all(), key


def _logged_steps(run_dir: Path) -> int:
    try:
        return max((r["step"] for r in read_metrics(run_dir)), default=0)
    except (ValueError, OSError):
        return 0


def _start_and_kill(args: list[str], run_dir: Path, cwd: Path, kill_after_step: int, rng: random.Random) -> None:
    """Start training and SIGKILL it once `kill_after_step` is logged, plus a random 0-40 ms (mid-step,
    mid-eval or mid-checkpoint, wherever that lands)."""
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while _logged_steps(run_dir) < kill_after_step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.04))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "final").exists(), "the run finished before the kill"


@pytest.mark.slow
def test_kill9_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    _run(_cmd("--run-dir", str(ref)), tmp_path)
    assert _train_steps(ref) == list(range(1, 25))

    killed = tmp_path / "killed"
    rng = random.Random(int(os.environ.get("RLAB_TEST_SEED", "0")))
    first, second = sorted(rng.sample(range(3, 19), 2))
    _start_and_kill(_cmd("--run-dir", str(killed)), killed, tmp_path, first, rng)   # killed once...
    _start_and_kill(_cmd("--resume", str(killed)), killed, tmp_path, second, rng)  # ...and again
    _run(_cmd("--resume", str(killed)), tmp_path)

    assert _train_steps(killed) == list(range(1, 25)), "every step exactly once"
    _assert_same_weights(ref, killed)
    eval_steps = [r["step"] for r in read_metrics(killed) if "eval/test/accuracy" in r]
    assert eval_steps == [8, 12, 24]


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    _run(_cmd("--run-dir", str(ref), "--set", "train.steps=8"), tmp_path)

    run = tmp_path / "run"
    _run(_cmd("--run-dir", str(run), "--set", "train.steps=4"), tmp_path)
    newest = run / "checkpoints" / "step-00000012" / "model.safetensors"
    good_previous = (run / "checkpoints" / "step-00000008" / "model.safetensors").read_bytes()
    newest.write_bytes(newest.read_bytes()[:100])  # truncated

    proc = _run(_cmd("--resume", str(run), "--set", "train.steps=8"), tmp_path)
    assert "model.safetensors" in proc.stderr and "step-00000012" in proc.stderr
    assert (run / "checkpoints" / "step-00000008" / "model.safetensors").read_bytes() == good_previous
    assert any(p.name.startswith("step-00000012.corrupt") for p in (run / "checkpoints").iterdir())
    assert _train_steps(run) == list(range(1, 17))
    _assert_same_weights(ref, run)


def test_resume_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(_cmd("--resume", str(tmp_path / "empty")), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a run folder" in proc.stderr
