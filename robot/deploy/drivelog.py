"""The drive log: one folder per drive, written as the car drives (a crash leaves a readable log).

``DIR/drive.jsonl``
    one JSON object per line, flushed per line. ``{"kind": "tick", "tick", "t", "observation", "action",
    "policy_command", "command", "neutral_reason", "readings", "timing": {"period_s", "jitter_s",
    "policy_latency_s", "inference_s", "e2e_latency_s"}, "events": [...], "frame"}`` per tick, and
    ``{"kind": "event", "t", "event", ...}`` for what is not a tick (start, stop, errors, neutral sent).
    ``command`` is what was written to the vehicle; ``policy_command`` the policy's, before safety.
    Non-finite numbers are written as null.
``DIR/frames/NNNNNN.png``
    camera frames (``readings["image"]``) via ``cv2.imwrite`` on a writer thread (a full queue drops the
    frame and counts it; it never stalls the loop).
``DIR/summary.json``
    ``DriveStats.summary()``: ticks, duration, period/jitter/latency percentiles, safety event counts,
    deadline misses, exit reason, ... Written at start (``exit_reason: "running"``), every
    ``summary_every_s`` and at the end, atomically (write + rename). ``summarize_log(DIR)`` recomputes
    the timing part from ``drive.jsonl`` alone (for a log whose process was killed).

Only numpy, OpenCV and the standard library are imported here (the on-vehicle import rule).
"""

from __future__ import annotations

import collections
import json
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

TIMING_KEYS = ("period_s", "jitter_s", "policy_latency_s", "inference_s", "e2e_latency_s")


def jsonable(x: Any) -> Any:
    """Numpy values to plain JSON; NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def percentiles(values: list[float] | np.ndarray) -> dict[str, float | None]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None, "mean": None}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "min": float(a.min()), "mean": float(a.mean())}


class DriveStats:
    """Per-tick timings and counts; ``summary()`` is what ``summary.json`` holds."""

    def __init__(self, rate_hz: float):
        self.rate_hz = rate_hz
        self.timings: dict[str, list[float]] = {k: [] for k in TIMING_KEYS}
        self.ticks = 0
        self.neutral_ticks: collections.Counter[str] = collections.Counter()
        self.events: collections.Counter[str] = collections.Counter()
        self.skipped_slots = 0  # schedule slots skipped after an overrun of more than a period
        self.started_at: float | None = None  # wall clock (time.time) of the first tick
        self.duration_s = 0.0

    def add(self, timing: dict[str, float | None], events: list[dict], neutral_reason: str | None) -> None:
        self.ticks += 1
        for k in TIMING_KEYS:
            v = timing.get(k)
            if v is not None:
                self.timings[k].append(float(v))
        for e in events:
            self.events[e["event"]] += 1
        if neutral_reason is not None:
            self.neutral_ticks[neutral_reason] += 1

    def summary(self, **extra: Any) -> dict[str, Any]:
        t = self.timings
        return jsonable({
            "ticks": self.ticks, "duration_s": self.duration_s, "rate_hz": self.rate_hz,
            "nominal_period_s": 1.0 / self.rate_hz,
            "period_s": percentiles(t["period_s"]),
            "jitter_s": {**percentiles(t["jitter_s"]),
                         "abs_max": max((abs(v) for v in t["jitter_s"]), default=None)},
            "policy_latency_s": percentiles(t["policy_latency_s"]),
            "inference_s": percentiles(t["inference_s"]),
            "e2e_latency_s": percentiles(t["e2e_latency_s"]),
            "safety_events": dict(sorted(self.events.items())),
            "deadline_misses": self.events.get("deadline_miss", 0),
            "neutral_ticks": dict(sorted(self.neutral_ticks.items())),
            "skipped_slots": self.skipped_slots,
            "started_at": self.started_at,
            **extra,
        })


class _FrameWriter:
    def __init__(self, directory: Path, maxsize: int = 16, compression: int = 1):
        import cv2

        self.cv2, self.directory, self.compression = cv2, directory, compression
        self.queue: queue.Queue[tuple[str, np.ndarray] | None] = queue.Queue(maxsize=maxsize)
        self.saved = 0
        self.dropped = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="DriveLogFrames", daemon=True)
        self.thread.start()

    def put(self, name: str, image: np.ndarray) -> bool:
        if self.error is not None:
            raise OSError(f"frame writer failed: {self.error}")
        try:
            self.queue.put_nowait((name, image))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            name, image = item
            try:
                ok = self.cv2.imwrite(str(self.directory / name), image,
                                      [self.cv2.IMWRITE_PNG_COMPRESSION, self.compression])
                if not ok:
                    raise OSError(f"cv2.imwrite({self.directory / name}) returned False")
                self.saved += 1
            except Exception as err:  # reported by the next put() and by close()
                self.error = f"{type(err).__name__}: {err}"
                return

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join(10.0)


class DriveLog:
    """Writes ``drive.jsonl``, ``frames/`` and ``summary.json`` into ``directory`` (created; refused if it
    already holds a ``drive.jsonl``). ``frame_every``: save every n-th camera frame (0: none)."""

    name = "log"

    def __init__(self, directory: str | Path, *, frame_every: int = 1, summary_every_s: float = 2.0,
                 fsync_every_s: float = 1.0):
        self.directory = Path(directory)
        self.frame_every, self.summary_every_s, self.fsync_every_s = frame_every, summary_every_s, fsync_every_s
        self._file: Any = None
        self._frames: _FrameWriter | None = None
        self._last_summary = 0.0
        self._fsync_stop = threading.Event()
        self._fsync_thread: threading.Thread | None = None
        self._fsync_error: str | None = None
        self.lines = 0
        self.config: Any = {}

    @property
    def jsonl_path(self) -> Path:
        return self.directory / "drive.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.directory / "summary.json"

    @property
    def frames_dir(self) -> Path:
        return self.directory / "frames"

    def start(self, config: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.jsonl_path.exists():
            raise FileExistsError(f"{self.jsonl_path} exists: give a new --log-dir (drive logs are never appended to)")
        self._file = open(self.jsonl_path, "x", buffering=1)  # noqa: SIM115 -- closed in close()
        if self.fsync_every_s:
            self._fsync_thread = threading.Thread(target=self._fsync_loop, args=(self._file.fileno(),),
                                                  name="DriveLogFsync", daemon=True)
            self._fsync_thread.start()
        self.config = jsonable(config)
        self.write_summary({"exit_reason": "running", "config": self.config})

    def _frames_writer(self) -> _FrameWriter:
        if self._frames is None:
            self.frames_dir.mkdir(exist_ok=True)
            self._frames = _FrameWriter(self.frames_dir)
        return self._frames

    def write_tick(self, record: dict[str, Any], image: np.ndarray | None = None) -> None:
        tick = int(record["tick"])
        if image is not None and self.frame_every and tick % self.frame_every == 0:
            name = f"{tick:06d}.png"
            if self._frames_writer().put(name, image):
                record["frame"] = f"frames/{name}"
        self._write({"kind": "tick", **record})

    def write_event(self, event: str, **details: Any) -> None:
        self._write({"kind": "event", "event": event, "wall_time": time.time(), **details})

    def _write(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":")) + "\n")
        self.lines += 1
        if self._fsync_error is not None:
            raise OSError(f"fsync of {self.jsonl_path} failed: {self._fsync_error}")

    def _fsync_loop(self, fd: int) -> None:
        """fsync off the loop thread (an SD card's fsync can take tens of ms): power loss costs at most
        ``fsync_every_s`` of log; each line is flushed to the OS at once (a process crash costs nothing)."""
        while not self._fsync_stop.wait(self.fsync_every_s):
            try:
                os.fsync(fd)
            except OSError as err:
                self._fsync_error = f"{type(err).__name__}: {err}"
                return

    def maybe_write_summary(self, summary_fn: Any) -> None:
        now = time.monotonic()
        if now - self._last_summary >= self.summary_every_s:
            self._last_summary = now
            self.write_summary(summary_fn())

    def frame_counts(self) -> dict[str, Any]:
        f = self._frames
        return {"saved": 0 if f is None else f.saved, "dropped": 0 if f is None else f.dropped,
                "error": None if f is None else f.error}

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.summary_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(jsonable({**summary, "config": self.config}), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, self.summary_path)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        try:
            if self._frames is not None:
                self._frames.close()
            if summary is not None and self._file is not None:
                self.write_summary({**summary, "frames": self.frame_counts()})
        finally:
            self._fsync_stop.set()
            if self._fsync_thread is not None:
                self._fsync_thread.join(5.0)
                self._fsync_thread = None
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def shutdown(self) -> None:
        self.close()


def read_log(directory: str | Path) -> list[dict[str, Any]]:
    """The lines of ``drive.jsonl`` (a last line cut short by a crash is skipped)."""
    out = []
    for line in (Path(directory) / "drive.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def summarize_log(directory: str | Path) -> dict[str, Any]:
    """Timing percentiles and event counts recomputed from ``drive.jsonl`` alone."""
    lines = read_log(directory)
    ticks = [rec for rec in lines if rec.get("kind") == "tick"]
    starts = [rec for rec in lines if rec.get("kind") == "event" and rec.get("event") == "start"]
    stats = DriveStats(float(starts[0]["rate_hz"]) if starts else float("nan"))
    for rec in ticks:
        stats.add(rec.get("timing", {}), rec.get("events", []), rec.get("neutral_reason"))
    if ticks:
        stats.duration_s = ticks[-1]["t"] - ticks[0]["t"] + 1.0 / stats.rate_hz
    stops = [rec for rec in lines if rec.get("kind") == "event" and rec.get("event") == "stop"]
    return stats.summary(exit_reason=stops[-1].get("exit_reason") if stops else "incomplete")
