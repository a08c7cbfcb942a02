"""Scripted drivers: pure pursuit along the centre line, the demonstration recorder, a keyboard driver.

Pure pursuit steers toward a point `lookahead_m` ahead on the centre line (arc length, found near
the car's own progress, never by a global nearest point): curvature ``2 y / d^2`` of the arc through
that point in the car's frame, steering ``atan(wheelbase * curvature)``. At a constant throttle it
is the classical controller a user would otherwise write. `record_demo` drives it slowly for the
demonstration; `tune_pursuit` finds the fastest setting that still completes laps cleanly, the
stronger baseline the practised policy has to beat.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WHEELBASE_M = 0.325
"""Front-to-rear axle distance of pybullet's racecar (its minimum turning radius is ~0.6 m at 0.5 rad)."""


@dataclass(frozen=True)
class PurePursuit:
    throttle: float = 0.3
    """Fraction of the top wheel speed, held constant."""
    lookahead_m: float = 1.0
    """Arc length ahead on the centre line to steer toward."""

    def act(self, env: Any, info: dict) -> np.ndarray:
        """Action ``[steer, throttle]`` in the environment's [-1, 1] units from its `info` (pose, progress)."""
        track = env.unwrapped.track
        target, _ = track.point_at(info["s"] + self.lookahead_m)
        dx, dy = target[0] - info["x"], target[1] - info["y"]
        c, s = math.cos(info["yaw"]), math.sin(info["yaw"])
        x_local, y_local = c * dx + s * dy, -s * dx + c * dy
        d2 = max(x_local * x_local + y_local * y_local, 1e-6)
        steer = math.atan(WHEELBASE_M * 2.0 * y_local / d2)
        max_steer = env.unwrapped.max_steer
        return np.array([np.clip(steer / max_steer, -1, 1), throttle_action(env, self.throttle)], dtype=np.float32)


def throttle_action(env: Any, fraction: float) -> float:
    """The action value that gives `fraction` of top wheel speed under the env's throttle mapping."""
    lo = env.unwrapped.min_throttle
    return float(np.clip(2.0 * (fraction - lo) / (1.0 - lo) - 1.0, -1.0, 1.0))


@dataclass
class DriveLog:
    """One scripted or policy drive: per-step pose, speed and actions, and its laps."""

    x: list[float]
    y: list[float]
    speed: list[float]
    t: list[float]
    actions: list[list[float]]
    laps: list[float]
    """Lap times (s), in order."""
    crashes: int
    interventions: int
    recoveries: int = 0
    lap_crashes: list[int] = field(default_factory=list)
    """Crashes during each lap (a lap with a crash is not a clean lap)."""

    @property
    def clean_laps(self) -> list[float]:
        return [t for t, c in zip(self.laps, self.lap_crashes, strict=True) if c == 0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"xy": np.column_stack([self.x, self.y]), "speed": np.asarray(self.speed), "t": np.asarray(self.t),
                "actions": np.asarray(self.actions).reshape(-1, 2)}


def drive(env: Any, controller: Any, laps: int, max_s: float, frames: list | None = None,
          seed: int | None = 0) -> DriveLog:
    """Drive `controller` (``act(env, info) -> action``, or ``act(obs) -> action`` for a policy; see
    `policy_controller`) from a fresh reset until `laps` laps or `max_s` simulated seconds.

    A crash ends the drive unless the env recovers (the next reset recovers or teleports as configured).
    With `frames`, rendered chase-camera frames are appended to it.
    """
    obs, info = env.reset(seed=seed)
    log = DriveLog([], [], [], [], [], [], 0, 0)
    while info["sim_time_s"] < max_s and len(log.laps) < laps:
        action = controller(obs, info)
        obs, _, terminated, truncated, info = env.step(action)
        log.x.append(info["x"])
        log.y.append(info["y"])
        log.speed.append(info["speed"])
        log.t.append(info["sim_time_s"])
        log.actions.append([float(a) for a in action])
        if frames is not None:
            frames.append(env.render())
        if info.get("lap_completed"):
            log.laps.append(info["lap_time_s"])
            log.lap_crashes.append(info["lap_crashes"])
        if terminated or truncated:
            log.crashes += int(terminated)
            obs, info = env.reset()
    log.interventions, log.recoveries = info["interventions"], info["recoveries"]
    return log


def pursuit_controller(env: Any, pursuit: PurePursuit):
    return lambda obs, info: pursuit.act(env, info)


# ---------------------------------------------------------------------------------- demonstration


@dataclass(frozen=True)
class Demo:
    """A recorded demonstration: the driven path, its lap time, and where it was driven."""

    track: str
    length_m: float
    width_m: float
    lap_time_s: float
    driver: str
    path: np.ndarray
    """(T, 2) positions along the lap."""
    speed: np.ndarray
    smooth_m: float = 0.0

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "demo.npz", path=self.path, speed=self.speed)
        meta = {k: v for k, v in asdict(self).items() if k not in ("path", "speed")}
        (out / "demo.json").write_text(json.dumps(meta, indent=1) + "\n")
        return out

    @staticmethod
    def load(folder: str | Path) -> Demo:
        folder = Path(folder)
        meta_file, data_file = folder / "demo.json", folder / "demo.npz"
        for f in (meta_file, data_file):
            if not f.exists():
                raise FileNotFoundError(f"{folder} is not a demonstration folder: {f.name} is missing "
                                        "(record one with `rlab rccar demo --track ... --out FOLDER`)")
        try:
            meta = json.loads(meta_file.read_text())
            with np.load(data_file) as data:
                path, speed = data["path"], data["speed"]
            demo = Demo(path=path, speed=speed, **meta)
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{folder}: unreadable demonstration ({err})") from err
        if path.ndim != 2 or path.shape[1] != 2 or len(path) < 10 or not np.isfinite(path).all():
            raise ValueError(f"{folder}: demonstration path must be >= 10 finite (x, y) rows, got {path.shape}")
        return demo


def record_demo(env: Any, throttle: float = 0.3, lookahead_m: float = 1.0, max_s: float = 300.0) -> Demo:
    """One slow pure-pursuit lap from a standing start; raises if it crashes or does not finish."""
    log = drive(env, pursuit_controller(env, PurePursuit(throttle, lookahead_m)), laps=1, max_s=max_s)
    if not log.clean_laps:
        raise RuntimeError(f"the demonstration driver did not complete a clean lap (laps {len(log.laps)}, "
                           f"crashes {log.crashes}); lower its throttle or check the track")
    trk = env.unwrapped.track
    arrays = log.to_arrays()
    return Demo(track=trk.name, length_m=round(trk.length, 3), width_m=trk.width, lap_time_s=round(log.laps[0], 2),
                driver=f"pure pursuit, throttle {throttle}, lookahead {lookahead_m} m",
                path=arrays["xy"], speed=arrays["speed"], smooth_m=trk.smooth_m)


def extract_checkpoints(path: np.ndarray, spacing_m: float = 2.5) -> np.ndarray:
    """Points every `spacing_m` of arc length along a driven path (its start excluded): (M, 2)."""
    path = np.asarray(path, dtype=np.float64)
    if spacing_m <= 0:
        raise ValueError(f"checkpoint spacing must be positive, got {spacing_m}")
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    marks = np.arange(spacing_m, s[-1] - spacing_m / 2, spacing_m)
    if len(marks) < 4:
        raise ValueError(f"a {s[-1]:.1f} m path gives fewer than 4 checkpoints at {spacing_m} m spacing")
    return np.column_stack([np.interp(marks, s, path[:, 0]), np.interp(marks, s, path[:, 1])])


# ---------------------------------------------------------------------------------------- tuning


TUNING_THROTTLES = tuple(round(0.3 + 0.05 * k, 2) for k in range(15))
"""0.3 to 1.0 in steps of 0.05: the grid `tune_pursuit` climbs (per lookahead, until a setting crashes)."""


def tune_pursuit(make_env: Any, throttles: tuple[float, ...] = TUNING_THROTTLES,
                 lookaheads: tuple[float, ...] = (0.7, 1.0, 1.4), laps: int = 2) -> dict:
    """The fastest (throttle, lookahead) that drives `laps` clean laps: {throttle, lookahead_m, best_lap_s,
    mean_lap_s, tried: [...]}. `make_env()` builds a teleport-reset env on the track (a crash ends a try)."""
    tried = []
    for lookahead in lookaheads:
        for throttle in throttles:
            env = make_env()
            try:
                per_lap = 60.0 * env.unwrapped.track.length / 55.0
                log = drive(env, pursuit_controller(env, PurePursuit(throttle, lookahead)), laps, laps * per_lap)
            finally:
                env.close()
            ok = len(log.clean_laps) >= laps and log.crashes == 0
            tried.append({"throttle": throttle, "lookahead_m": lookahead, "ok": ok, "laps": log.laps,
                          "crashes": log.crashes})
            if not ok:
                break  # faster throttles at this lookahead crash too
    clean = [t for t in tried if t["ok"]]
    if not clean:
        raise RuntimeError("no pure-pursuit setting completed clean laps on this track")
    best = min(clean, key=lambda t: min(t["laps"]))
    return {"throttle": best["throttle"], "lookahead_m": best["lookahead_m"], "best_lap_s": min(best["laps"]),
            "mean_lap_s": float(np.mean(best["laps"])), "tried": tried}


# -------------------------------------------------------------------------------------- keyboard


KEYS = {"up": 65297, "down": 65298, "left": 65295, "right": 65296}
"""pybullet's key codes for the arrow keys (B3G_UP_ARROW, ...)."""


def keyboard_action(events: dict[int, int], previous: np.ndarray, throttle_step: float = 0.1) -> np.ndarray:
    """Steer and throttle from pybullet keyboard events (``p.getKeyboardEvents()``): arrows held steer
    left/right; up/down raise or lower the throttle in steps. Used by ``rlab rccar demo --teleop``."""
    import pybullet as pb

    down = {key for key, state in events.items() if state & pb.KEY_IS_DOWN}
    steer = (1.0 if KEYS["left"] in down else 0.0) - (1.0 if KEYS["right"] in down else 0.0)
    throttle = float(previous[1])
    if KEYS["up"] in down:
        throttle += throttle_step
    if KEYS["down"] in down:
        throttle -= throttle_step
    return np.array([steer, np.clip(throttle, -1.0, 1.0)], dtype=np.float32)
