"""Run folders: layout, never overwriting, metrics.jsonl + TensorBoard, truncation on resume."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from shared.tracking import Run, RunDirError, read_metrics
from shared.tracking import run as run_module
from shared.tracking.env_info import collect_env, git_info

CONFIG = "trainer:\n  lr: 0.001\n  steps: 10\nseed: 3\n"


def _create(tmp_path: Path, **kwargs) -> Run:
    kwargs.setdefault("tensorboard", False)
    return Run.create("vlm", "demo", CONFIG, seed=3, root=tmp_path, **kwargs)


def test_create_writes_the_layout(tmp_path: Path) -> None:
    run = _create(tmp_path)
    assert run.path.parent == tmp_path / "vlm"
    assert re.fullmatch(r"demo-\d{8}-\d{6}", run.path.name)
    assert run.config_path.read_text() == CONFIG  # the resolved config, byte for byte
    for folder in (run.tb_dir, run.checkpoint_dir, run.media_dir):
        assert folder.is_dir()
    env = json.loads(run.env_path.read_text())
    assert env["seed"] == 3
    assert set(env["git"]) == {"sha", "dirty", "root"}
    assert env["packages"]["torch"] is not None
    info = json.loads((run.path / "run.json").read_text())
    assert info["track"] == "vlm" and info["name"] == "demo" and info["status"] == "running"
    run.close()


def test_same_second_gets_a_numbered_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module.time, "strftime", lambda fmt: "20260131-140509")
    names = [_create(tmp_path).path.name for _ in range(3)]
    assert names == ["demo-20260131-140509", "demo-20260131-140509-2", "demo-20260131-140509-3"]


def test_existing_nonempty_run_dir_is_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.yaml").write_text("precious: true\n")
    with pytest.raises(RunDirError, match="not empty"):
        _create(tmp_path, run_dir=target)
    assert (target / "config.yaml").read_text() == "precious: true\n"
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _create(tmp_path, run_dir=empty).path == empty  # an empty folder is fine
    assert (empty / "config.yaml").exists()


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name"):
        Run.create("vlm", "../escape", CONFIG, seed=0, root=tmp_path)


def test_open_validates_and_resumes(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such run folder"):
        Run.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunDirError, match="config.yaml"):
        Run.open(tmp_path / "plain")

    first = _create(tmp_path)
    first.mark("failed")
    first.close()
    again = Run.open(first.path, tensorboard=False)
    assert again.status == "running"
    assert len(again.info["resumed"]) == 1


def test_context_manager_marks_the_status(tmp_path: Path) -> None:
    with _create(tmp_path) as run:
        pass
    assert run.status == "finished"
    with pytest.raises(RuntimeError), _create(tmp_path) as run:
        raise RuntimeError("boom")
    assert run.status == "failed"
    with pytest.raises(ValueError, match="status"):
        run.mark("exploded")


def test_log_appends_json_lines(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    run = _create(tmp_path)
    run.log(1, {"loss": 0.5, "ok": True, "count": 3})
    run.log(2, {"loss": float("nan"), "grad": float("inf"), "acc": np.float32(0.25)})
    # Flushed at once: readable before close.
    records = read_metrics(run.path)
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["loss"] == 0.5 and records[0]["ok"] is True and records[0]["count"] == 3
    assert records[1]["loss"] is None and records[1]["grad"] is None  # NaN/inf -> null
    assert records[1]["acc"] == 0.25
    assert isinstance(records[0]["time"], float)
    with pytest.raises(ValueError, match="reserved"):
        run.log(3, {"step": 1})
    with pytest.raises(TypeError, match="'name'"):
        run.log(3, {"name": "text"})
    run.close()


def _write_records(run: Run, steps: range) -> None:
    for step in steps:
        run.log(step, {"loss": 1.0 / step})


def test_truncate_metrics_drops_later_steps_and_a_torn_line(tmp_path: Path) -> None:
    run = _create(tmp_path)
    _write_records(run, range(1, 6))
    run.close()
    with run.metrics_path.open("a") as fh:
        fh.write('{"step": 6, "lo')  # a crash in the middle of a line
    resumed = Run.open(run.path, tensorboard=False)
    # records 4 and 5 plus the torn line
    assert resumed.truncate_metrics(3) == 3
    assert [r["step"] for r in read_metrics(run.path)] == [1, 2, 3]
    resumed.log(4, {"loss": 0.0})
    assert [r["step"] for r in read_metrics(run.path)] == [1, 2, 3, 4]
    assert resumed.truncate_metrics(10) == 0
    resumed.close()


def test_log_after_a_torn_line_starts_a_clean_line(tmp_path: Path) -> None:
    run = _create(tmp_path)
    _write_records(run, range(1, 3))
    run.close()
    with run.metrics_path.open("a") as fh:
        fh.write('{"step": 3, "lo')
    again = Run.open(run.path, tensorboard=False)
    again.log(3, {"loss": 0.3})
    again.close()
    assert [r["step"] for r in read_metrics(run.path)] == [1, 2, 3]


def test_tensorboard_forgets_steps_after_the_checkpoint(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = _create(tmp_path, tensorboard=True)
    _write_records(run, range(1, 6))  # loss = 1/step
    run.close()
    resumed = Run.open(run.path)
    resumed.truncate_metrics(2)
    resumed.log(3, {"loss": 30.0})
    resumed.log(4, {"loss": 40.0})
    resumed.close()
    acc = event_accumulator.EventAccumulator(str(run.tb_dir))
    acc.Reload()
    scalars = acc.Scalars("loss")
    assert [s.step for s in scalars] == [1, 2, 3, 4]
    assert [s.value for s in scalars][2:] == [30.0, 40.0]


def test_a_resumed_writers_event_file_sorts_after_the_last_one(tmp_path: Path) -> None:
    # A file from this host and process in this second whose counter sorts after the new writer's as text
    # ("999999999" > "10"): without the wait, the new file would sort first and the purge would not apply.
    pytest.importorskip("torch.utils.tensorboard")  # imported now, so the writer below opens at once
    run = _create(tmp_path, tensorboard=True)
    run.tb_dir.mkdir(parents=True, exist_ok=True)
    earlier = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.999999999"
    (run.tb_dir / earlier).write_bytes(b"")
    run.log(1, {"loss": 1.0})
    run.close()
    names = sorted(f.name for f in run.tb_dir.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == earlier


def test_wandb_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install wandb"):
        _create(tmp_path, wandb=True)

    logged: list[tuple[dict, int]] = []
    fake_run = types.SimpleNamespace(log=lambda d, step: logged.append((d, step)), finish=lambda: None)
    init_kwargs: dict = {}

    def init(**kwargs):
        init_kwargs.update(kwargs)
        return fake_run

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    run = _create(tmp_path, wandb=True)
    run.log(5, {"loss": float("nan")})
    run.close()
    assert init_kwargs["config"] == {"trainer": {"lr": 0.001, "steps": 10}, "seed": 3}
    assert logged[0][1] == 5 and math.isnan(logged[0][0]["loss"])
    assert run.info["wandb_id"]  # kept so that a resume continues the same W&B run


def test_env_outside_git_and_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_info(tmp_path) == {"sha": None, "dirty": None, "root": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    env = collect_env(seed=7)
    assert env["git"]["sha"] is None
    json.dumps(env)  # serialisable
    assert env["seed"] == 7 and env["cpu"]["count"] >= 1


def test_importing_tracking_does_not_import_torch() -> None:
    code = "import sys, shared.tracking, shared.tracking.listing; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
