"""The safety layer between the policy and the actuators, and the keyboard e-stop.

Per tick ``Safety.run`` turns the policy's command into the command written, in this order:

1. e-stop requests (``trigger_estop`` from a signal handler, a key or code; ``reset_estop``) are applied;
   the vehicle's own e-stop (``readings["estop"]``, e.g. the controller's TELEMETRY state ESTOP or its
   ESTOP frame) latches on its rising edge. While latched -- or while the vehicle still reports an e-stop
   -- the command is **neutral**. The latch holds until ``reset_estop()``; the reset is forwarded to
   the vehicle (``SafetyDecision.reset_vehicle``), and a local latch is forwarded as an e-stop to it
   (``SafetyDecision.estop_vehicle``) so the controller stops even if the host dies;
2. a policy that took longer than ``deadline_s`` this tick (``deadline_miss``) -> neutral for the tick;
3. a non-finite observation or command (``non_finite_observation`` / ``non_finite_action``) -> neutral;
4. otherwise: clamp to the command limits (``clamped``), cap |throttle| to ``throttle_cap``
   (``throttle_capped``), and move at most ``max_step`` per tick from the last command written
   (``rate_limited``). Neutral is never rate-limited (stopping is immediate).

Every event is returned with its tick (the drive log writes it) and counted in ``counts``.

Only the standard library and numpy are imported here (the on-vehicle import rule).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.deploy.parts import NEUTRAL_COMMAND, PolicyMetadata, PolicyOutput, Readings

# Used when the metadata records no rate limit: normalised units per tick (RCCarEnv's default max_delta).
DEFAULT_MAX_DELTA = (0.5, 0.3)


@dataclass(frozen=True)
class SafetyConfig:
    """``throttle_cap``: |throttle| limit as a fraction of full throttle (0.3 for first runs; 1.0 = none);
    ``deadline_fraction``: policy deadline as a fraction of the loop period (``deadline_s`` overrides);
    ``max_delta``: rate limit per tick in normalised action units (None: the metadata's
    ``max_delta_per_step``, the training env's, else ``DEFAULT_MAX_DELTA``);
    ``steer_limit_rad``: an optional symmetric steering limit tighter than the policy's."""

    throttle_cap: float = 0.3
    deadline_fraction: float = 0.8
    deadline_s: float | None = None
    max_delta: float | tuple[float, float] | None = None
    steer_limit_rad: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.throttle_cap <= 1.0:
            raise ValueError(f"throttle_cap must be in [0, 1], got {self.throttle_cap}")
        if not self.deadline_fraction > 0.0:
            raise ValueError(f"deadline_fraction must be > 0, got {self.deadline_fraction}")


@dataclass
class SafetyDecision:
    command: np.ndarray  # what the actuators write: [steer_rad, throttle_fraction]
    neutral_reason: str | None = None  # why the command is neutral (None: the policy's, limited)
    events: list[dict] = field(default_factory=list)
    estop_vehicle: str | None = None  # forward an e-stop to the vehicle (the latch source)
    reset_vehicle: bool = False  # forward an e-stop reset to the vehicle
    deadline_miss: bool = False


class Safety:
    """See the module docstring. ``low``/``high``: command limits [steer_rad, throttle]; ``max_step``:
    per-tick rate limit in command units; ``deadline_s``: policy latency limit per tick."""

    name = "safety"

    def __init__(self, low: tuple[float, float], high: tuple[float, float], *, max_step: tuple[float, float],
                 deadline_s: float, throttle_cap: float = 0.3):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.high[1] = min(self.high[1], throttle_cap)
        self.low[1] = max(self.low[1], -throttle_cap)
        if self.low[1] > self.high[1]:
            raise ValueError(f"throttle_cap {throttle_cap} is below the policy's minimum throttle {low[1]}")
        self.uncapped_high, self.uncapped_low = np.asarray(high, dtype=np.float64), np.asarray(low, dtype=np.float64)
        self.max_step = np.asarray(max_step, dtype=np.float64)
        self.deadline_s = deadline_s
        self.throttle_cap = throttle_cap
        self.counts: collections.Counter[str] = collections.Counter()
        self.neutral_ticks: collections.Counter[str] = collections.Counter()
        self.latched: str | None = None  # the e-stop source while latched
        self._requests: collections.deque[tuple[str, str]] = collections.deque()
        self._vehicle_estop = False  # last tick's readings["estop"]
        self._watchdog_trips: float | None = None
        self._last = np.zeros(2)

    @classmethod
    def from_metadata(cls, metadata: PolicyMetadata, period_s: float, config: SafetyConfig = SafetyConfig()) -> Safety:
        low, high = list(metadata.command_low), list(metadata.command_high)
        if config.steer_limit_rad is not None:
            low[0], high[0] = max(low[0], -config.steer_limit_rad), min(high[0], config.steer_limit_rad)
        if config.max_delta is not None:
            delta = np.broadcast_to(np.asarray(config.max_delta, dtype=np.float64), (2,))
            step = tuple(delta * (np.asarray(metadata.command_high) - np.asarray(metadata.command_low)) / 2.0)
        else:
            step = metadata.command_step() or tuple(
                np.asarray(DEFAULT_MAX_DELTA) * (np.asarray(metadata.command_high) - np.asarray(metadata.command_low))
                / 2.0)
        deadline = config.deadline_s if config.deadline_s is not None else config.deadline_fraction * period_s
        return cls(tuple(low), tuple(high), max_step=step, deadline_s=deadline,  # type: ignore[arg-type]
                   throttle_cap=config.throttle_cap)

    def describe(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "throttle_cap": self.throttle_cap,
                "max_step_per_tick": self.max_step.tolist(), "deadline_s": self.deadline_s}

    # -------------------------------------------------------------- requests (any thread, signal handlers)

    def trigger_estop(self, source: str = "api") -> None:
        """Latch the e-stop (applied at the next tick). Safe from a signal handler or another thread."""
        self._requests.append(("estop", source))

    def reset_estop(self) -> None:
        """Clear the latch (at the next tick) and reset the vehicle's e-stop."""
        self._requests.append(("reset", "api"))

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    # -------------------------------------------------------------- per tick

    def _event(self, decision: SafetyDecision, tick: int, name: str, **details: Any) -> None:
        self.counts[name] += 1
        decision.events.append({"tick": tick, "event": name, **details})

    def _estops(self, tick: int, readings: Readings, d: SafetyDecision) -> bool:
        """Apply requests and the vehicle's e-stop; True when the output must be neutral."""
        while self._requests:
            kind, source = self._requests.popleft()
            if kind == "estop":
                if self.latched is None:
                    self.latched = source
                    d.estop_vehicle = source
                    self._event(d, tick, "estop_latched", source=source)
            else:
                self._event(d, tick, "estop_reset", was=self.latched)
                self.latched = None
                d.estop_vehicle = None
                d.reset_vehicle = True
        vehicle_estop = bool(readings.get("estop", 0.0))
        if vehicle_estop and not self._vehicle_estop and self.latched is None:
            self.latched = "vehicle"
            self._event(d, tick, "estop_latched", source="vehicle")
        self._vehicle_estop = vehicle_estop
        trips = readings.get("watchdog_trips")
        if trips is not None:
            if self._watchdog_trips is not None and float(trips) > self._watchdog_trips:
                self._event(d, tick, "controller_watchdog_trip", total=float(trips))
            self._watchdog_trips = float(trips)
        return self.latched is not None or vehicle_estop

    def run(self, tick: int, obs: np.ndarray, out: PolicyOutput, readings: Readings,
            policy_latency_s: float) -> SafetyDecision:
        d = SafetyDecision(command=np.array(NEUTRAL_COMMAND))
        if self._estops(tick, readings, d):
            d.neutral_reason = "estop"
        elif policy_latency_s > self.deadline_s:
            d.deadline_miss = True
            d.neutral_reason = "deadline_miss"
            self._event(d, tick, "deadline_miss", latency_s=round(policy_latency_s, 6), deadline_s=self.deadline_s)
        elif not np.all(np.isfinite(obs)):
            d.neutral_reason = "non_finite_observation"
            self._event(d, tick, "non_finite_observation",
                        indices=[int(i) for i in np.flatnonzero(~np.isfinite(obs))[:8]])
        elif out.command.shape != (2,) or not np.all(np.isfinite(out.command)):
            d.neutral_reason = "non_finite_action"
            self._event(d, tick, "non_finite_action", command=[None if not np.isfinite(v) else float(v)
                                                                for v in out.command.reshape(-1)[:2]])
        else:
            d.command = self._limit(tick, out.command, d)
        if d.neutral_reason is not None:
            self.neutral_ticks[d.neutral_reason] += 1
        self._last = d.command.copy()
        return d

    def _limit(self, tick: int, command: np.ndarray, d: SafetyDecision) -> np.ndarray:
        clamped = np.clip(command, self.uncapped_low, self.uncapped_high)
        if not np.array_equal(clamped, command):
            self._event(d, tick, "clamped", command=command.tolist())
        capped = np.clip(clamped, self.low, self.high)
        if not np.array_equal(capped, clamped):
            self._event(d, tick, "throttle_capped", throttle=float(clamped[1]), cap=self.throttle_cap)
        limited = self._last + np.clip(capped - self._last, -self.max_step, self.max_step)
        if not np.array_equal(limited, capped):
            self._event(d, tick, "rate_limited", wanted=capped.tolist())
        return limited


# ---------------------------------------------------------------------------------------------------
# keyboard e-stop


class KeyEstop:
    """A thread that reads single key presses from ``fd`` (default stdin) and calls ``on_estop`` for any of
    ``estop_keys`` (default space, ``e``, ``s``) and ``on_reset`` for ``reset_key`` (default none: resetting
    from the keyboard is opt-in). On a terminal it switches it to cbreak mode (keys without Enter) and
    restores it on ``stop()``."""

    def __init__(self, on_estop: Callable[[str], Any], *, on_reset: Callable[[], Any] | None = None,
                 fd: int | None = None, estop_keys: str = " es", reset_key: str | None = None):
        self.on_estop, self.on_reset = on_estop, on_reset
        self.fd = fd if fd is not None else 0
        self.estop_keys, self.reset_key = estop_keys, reset_key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: Any = None
        self.presses = 0

    def start(self) -> KeyEstop:
        if os.isatty(self.fd):
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        self._thread = threading.Thread(target=self._run, name="KeyEstop", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            data = os.read(self.fd, 64)
            if not data:  # EOF (stdin closed): nothing more to read
                return
            for ch in data.decode(errors="replace"):
                if ch in self.estop_keys:
                    self.presses += 1
                    self.on_estop("key")
                elif self.reset_key is not None and ch == self.reset_key and self.on_reset is not None:
                    self.on_reset()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        if self._saved is not None:
            import termios

            with contextlib.suppress(Exception):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def __enter__(self) -> KeyEstop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
