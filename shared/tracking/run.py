"""A run folder: created once, appended to while training, reopened to resume.

Typical loop::

    run = Run.create("vlm", "grpo-base", config_yaml, seed=cfg.seed)       # or Run.open(path) to resume
    with run:
        ...
        run.log(step, {"loss": loss.item(), "reward/mean": r})
        ...
    # leaving the block marks the run "finished" ("failed" on an exception, "stopped" on Ctrl-C)

``metrics.jsonl`` is the source of truth; TensorBoard gets the same scalars. Importing this module
does not import torch: the TensorBoard writer (and W&B, when asked for) are created on first `log`.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from shared.tracking.env_info import collect_env, now_iso
from shared.tracking.metrics import METRICS_FILE

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
RUN_FILE = "run.json"
STATUSES = ("running", "finished", "failed", "stopped")
RESERVED_KEYS = ("step", "time")

_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


class RunDirError(RuntimeError):
    """A run folder that can't be created (would overwrite a run) or isn't a run folder."""


def _check_part(what: str, value: str) -> None:
    if not _SAFE_PART.match(value):
        raise ValueError(f"run {what} {value!r} must be one folder name (letters, digits, _ . + -)")


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json_value(key: str, value: Any) -> float | int | bool | None:
    """A metric as JSON can hold it: NaN and +-inf become None (JSON has no such numbers)."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, (int, float)) and hasattr(value, "item"):
        value = value.item()  # 0-d torch tensors, numpy scalars
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"metric {key!r} must be a float, int or bool, got {type(value).__name__}")


def _after_last_event_file(tb_dir: Path) -> None:
    """Wait, if needed, until a new TensorBoard event file will sort after every one in `tb_dir`.

    TensorBoard reads a folder's event files in name order, and a resumed run's purge of the steps past its
    checkpoint only hides events of files that sort before the new one. The name is
    ``events.out.tfevents.<unix second>.<host>.<pid>.<counter>``: within one second the counter decides,
    and as text "10" sorts before "9". So a writer opened in the same second as the newest file (a resume
    right after a crash, or in tests) waits for the next second (at most about one)."""
    newest = -1
    for f in tb_dir.glob("events.out.tfevents.*") if tb_dir.is_dir() else ():
        field = f.name.split(".")[3]
        if field.isdigit():
            newest = max(newest, int(field))
    wait = newest + 1 - time.time()
    if 0 < wait <= 2:  # a file stamped further ahead means a clock jump; waiting for it would not end
        time.sleep(wait + 0.01)


def _split_records(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """([(line, record)], torn): the records of a metrics file and whether its last line is torn."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[tuple[str, dict[str, Any]]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines):  # torn by a crash mid-write
                return out, True
            raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{lineno}: a metrics record needs an integer 'step'")
        out.append((line, record))
    return out, False


def _drop_torn_tail(path: Path) -> None:
    """Make the next append start a clean line after a crash mid-write.

    A last line without its newline is cut off when it isn't valid JSON (torn), or gets its
    newline when it is (only the newline was lost).
    """
    try:
        fh = open(path, "rb+")  # noqa: SIM115
    except FileNotFoundError:
        return
    with fh:
        size = fh.seek(0, os.SEEK_END)
        start = size
        while start > 0:  # walk back to the start of the last line
            chunk_start = max(0, start - 4096)
            fh.seek(chunk_start)
            chunk = fh.read(start - chunk_start)
            if start == size and chunk.endswith(b"\n"):
                return
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                start = chunk_start + newline + 1
                break
            start = chunk_start
        fh.seek(start)
        try:
            json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            fh.truncate(start)
        else:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")


class Run:
    """One run folder (see `shared.tracking` for the layout). Use `Run.create` or `Run.open`."""

    def __init__(self, path: str | Path, tensorboard: bool = True, wandb: bool = False,
                 read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        """A view that writes nothing: `log`, `mark` and `truncate_metrics` do nothing (the other
        processes of a multi-process run, where rank 0 writes)."""
        self.tensorboard = tensorboard
        self._purge_step: int | None = None
        self._metrics_fh: Any = None
        self._tb: Any = None
        self._wandb: Any = None
        if wandb:
            self._wandb = self._start_wandb()

    # -- creation -----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        track: str,
        name: str,
        config_yaml: str,
        seed: int,
        root: Path = Path("runs"),
        run_dir: Path | None = None,
        wandb: bool = False,
        tensorboard: bool = True,
    ) -> Run:
        """Make a new run folder and write config.yaml, env.json and run.json into it.

        The folder is ``root/<track>/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3`` appended if taken),
        or exactly `run_dir` when given; an existing non-empty `run_dir` raises `RunDirError`
        (a run is never overwritten). `config_yaml` is the resolved config's text, saved as is.
        wandb=True also logs to Weights & Biases (needs ``pip install wandb``).
        """
        _check_part("track", track)
        _check_part("name", name)
        path = cls._new_folder(track, name, Path(root), run_dir)
        (path / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        env = collect_env(seed)
        _write_atomic(path / ENV_FILE, json.dumps(env, indent=1, default=str) + "\n")
        for sub in ("tb", "checkpoints", "media"):
            (path / sub).mkdir()
        info = {
            "track": track,
            "name": name,
            "created": env["start_time"],
            "status": "running",
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }
        _write_atomic(path / RUN_FILE, json.dumps(info, indent=1) + "\n")
        return cls(path, tensorboard=tensorboard, wandb=wandb)

    @staticmethod
    def _new_folder(track: str, name: str, root: Path, run_dir: Path | None) -> Path:
        if run_dir is not None:
            run_dir = Path(run_dir)
            if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
                raise RunDirError(f"{run_dir} exists and is not empty: a run folder is never overwritten")
            run_dir.mkdir(parents=True, exist_ok=True)
            return run_dir
        base = root / track / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        base.parent.mkdir(parents=True, exist_ok=True)
        candidate, n = base, 2
        while True:
            try:
                candidate.mkdir()  # atomic: two processes starting at once get different folders
                return candidate
            except FileExistsError:
                candidate = base.with_name(f"{base.name}-{n}")
                n += 1

    @classmethod
    def open(
        cls, path: str | Path, resume: bool = True, wandb: bool = False, tensorboard: bool = True,
        read_only: bool = False,
    ) -> Run:
        """Open an existing run folder, to resume it (the default) or to append to it.

        resume=True sets run.json's status back to "running" and records the time in its
        ``resumed`` list. After opening for a resume, call `truncate_metrics(checkpoint_step)`
        before the first `log`, so metrics and TensorBoard forget the steps after the checkpoint.
        read_only=True gives a view that writes nothing (see `Run.read_only`).
        """
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: no such run folder")
        if not (path / CONFIG_FILE).is_file():
            raise RunDirError(f"{path} is not a run folder: it has no {CONFIG_FILE}")
        if read_only:
            return cls(path, tensorboard=False, read_only=True)
        run = cls(path, tensorboard=tensorboard)
        if resume:
            info = run.info
            info["status"] = "running"
            info["pid"] = os.getpid()
            info["hostname"] = socket.gethostname()
            info.setdefault("resumed", []).append(now_iso())
            run._write_info(info)
        if wandb:
            run._wandb = run._start_wandb()
        return run

    # -- paths --------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def env_path(self) -> Path:
        return self.path / ENV_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def media_dir(self) -> Path:
        return self.path / "media"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def info(self) -> dict[str, Any]:
        """The contents of run.json ({} for a run folder written without one)."""
        try:
            return json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    @property
    def status(self) -> str | None:
        return self.info.get("status")

    def _write_info(self, info: dict[str, Any]) -> None:
        _write_atomic(self.path / RUN_FILE, json.dumps(info, indent=1) + "\n")

    def mark(self, status: str) -> None:
        """Set run.json's status ("running", "finished", "failed", "stopped"), atomically."""
        if status not in STATUSES:
            raise ValueError(f"run status {status!r} is not one of {STATUSES}")
        if self.read_only:
            return
        info = self.info
        info["status"] = status
        if status != "running":
            info["ended"] = now_iso()
        self._write_info(info)

    # -- metrics ------------------------------------------------------------------------------------

    def log(self, step: int, metrics: Mapping[str, float | int | bool]) -> None:
        """Append ``{"step": step, "time": unix_time, **metrics}`` to metrics.jsonl and TensorBoard.

        The line is flushed at once (a crash loses at most a torn last line, which readers skip).
        NaN and +-inf are written as null in metrics.jsonl (JSON has no such numbers); TensorBoard
        and W&B get the float itself. Values may also be 0-d tensors or numpy scalars (``.item()``
        is called). Several calls may log the same step (e.g. train and eval metrics).
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if self.read_only:
            return
        clean: dict[str, Any] = {}
        for key, value in metrics.items():
            if key in RESERVED_KEYS:
                raise ValueError(f"metric name {key!r} is reserved in metrics.jsonl")
            clean[key] = _json_value(key, value)
        record = {"step": step, "time": time.time(), **clean}
        fh = self._open_metrics()
        fh.write(json.dumps(record, allow_nan=False) + "\n")
        fh.flush()
        raw = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        if self.tensorboard:
            writer = self._tb_writer()
            for key, value in raw.items():
                writer.add_scalar(key, float(value), step)
        if self._wandb is not None:
            self._wandb.log(dict(raw), step=step)

    def truncate_metrics(self, last_step: int) -> int:
        """Keep only the metrics records with step <= `last_step` (call on resume); returns how many
        lines were dropped (records past `last_step`, plus a torn final line if there was one).

        The file is rewritten atomically (temporary file, then os.replace). The TensorBoard writer
        opened afterwards uses ``purge_step=last_step + 1``, so TensorBoard also hides the events
        that the crashed process wrote past the checkpoint.
        """
        if self.read_only:
            return 0
        self._close_metrics()
        self._close_tb()
        self._purge_step = last_step + 1
        path = self.metrics_path
        if not path.exists():
            return 0
        lines, torn = _split_records(path)
        kept = [line for line, record in lines if record["step"] <= last_step]
        dropped = len(lines) - len(kept) + int(torn)
        if dropped:
            _write_atomic(path, "".join(line + "\n" for line in kept))
        return dropped

    def _open_metrics(self) -> Any:
        if self._metrics_fh is None:
            _drop_torn_tail(self.metrics_path)
            self._metrics_fh = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        return self._metrics_fh

    def _tb_writer(self) -> Any:
        if self._tb is None:
            # torch (via tensorboard's writer) is imported here, on the first log, not on import.
            from torch.utils.tensorboard import SummaryWriter

            _after_last_event_file(self.tb_dir)
            self._tb = SummaryWriter(log_dir=str(self.tb_dir), purge_step=self._purge_step)
        return self._tb

    def _start_wandb(self) -> Any:
        try:
            import wandb
        except ImportError as err:
            raise ImportError(
                "W&B logging was asked for (wandb=True) but wandb is not installed: pip install wandb"
            ) from err
        import yaml

        info = self.info
        config = (
            yaml.safe_load(self.config_path.read_text(encoding="utf-8")) if self.config_path.exists() else {}
        )
        wandb_id = info.get("wandb_id") or f"{info.get('track', 'run')}-{self.path.name}"
        wb_run = wandb.init(
            project=f"rlab-{info.get('track', 'runs')}",
            name=self.path.name,
            id=re.sub(r"[^A-Za-z0-9_-]", "-", wandb_id),
            resume="allow",
            dir=str(self.path),
            config=config if isinstance(config, dict) else {},
        )
        if "wandb_id" not in info:
            info["wandb_id"] = wandb_id
            self._write_info(info)
        return wb_run

    # -- closing ------------------------------------------------------------------------------------

    def _close_metrics(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

    def _close_tb(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def close(self) -> None:
        """Flush and close metrics.jsonl, TensorBoard and W&B (the status is left as it is)."""
        self._close_metrics()
        self._close_tb()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close, and mark "finished" (no exception), "stopped" (Ctrl-C) or "failed" (other error)."""
        try:
            if exc_type is None:
                if self.status == "running":
                    self.mark("finished")
            elif issubclass(exc_type, KeyboardInterrupt):
                self.mark("stopped")
            else:
                self.mark("failed")
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"
