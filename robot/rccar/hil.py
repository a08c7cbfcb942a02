"""`SimVehicle`: the rccar track's pybullet car behind the on-vehicle runtime's ``Vehicle`` interface.

``rlab drive --policy car.onnx --vehicle sim`` runs the exported policy through the very drive loop that
runs it on the car (``robot.deploy.runtime``: observation builder by layout names, onnxruntime, the safety
layer, the drive log), with the simulator where the motor controller would be -- hardware-in-the-loop
style, without the hardware. It lives here, outside ``robot.deploy``, because it imports the simulator
(import-linter keeps pybullet out of ``robot.deploy``).

The env is ``RCCarEnv`` built from the ONNX metadata's ``env`` section (the run's ``EnvConfig``: track,
length_m, width_m, smooth_m, control_hz, ...) and ``env_params`` (max_steer, min_throttle, n_lookahead,
n_rays, ray_range_m, max_delta, max_wheel_speed), or from explicit arguments; ``track=`` (``--track``)
drives another circuit. Checkpoints are the exporting run's ``final/checkpoints.npy`` when the run folder
named in the metadata still exists and the circuit is the one it was trained on; otherwise the env's
centre-line checkpoints (every ``checkpoint_spacing_m``). ``stats()["checkpoints"]`` says which.

Lock-step: ``write(command)`` steps the env by one control step (``1 / control_hz`` of simulated time)
and ``read()`` returns the state after it. The simulator therefore runs exactly as fast as the loop
ticks: simulated time is ``ticks / control_hz`` (plus 0.05 s settling the car after each crash or stuck
reset), whatever the wall clock -- a loop at ``--rate-hz 20``
drives a 10 Hz policy's car at twice real time (the runtime's rate limit and deadline are per tick, as
they would be on the car). Zero throttle is applied by the neutral command the loop writes (e-stop, deadline
miss: each such tick still steps the sim with it); ``neutral()`` itself, called on the stop paths, only
counts -- with the loop stopped nothing steps the simulation, so the car is frozen where it is.

Commands ``[steer_rad, throttle_fraction]`` (steer positive left, the env's convention) become the env's
normalised action: ``steer = steer_rad / max_steer``, ``throttle = (f - min_throttle) / (1 - min_throttle)
* 2 - 1``, both clipped to [-1, 1]. The env keeps its own ``max_delta`` actuator rate limit (the actuator
model the policy was trained with), so a neutral command takes a few steps to take effect in the sim.

Readings (``provides``): every name of the exported observation layout (``v_fwd``, ``v_lat``,
``yaw_rate``, ``acc_x_div10``, ``acc_y_div10``, ``applied_steer``, ``applied_throttle``,
``checkpoint<k>_x_div5``/``_y_div5``, ``ray<k>``), taken by index from the env's own observation vector
(the env computes its rays and checkpoints), plus what a real car's controller reports --
``wheel_speed`` (m/s: the front wheels' spin x radius, which differs from ``v_fwd`` while they slip),
``gyro`` ([0, 0, yaw_rate] rad/s) and ``accel`` ([acc_x, acc_y, 9.81] m/s^2, as an IMU reads at rest) --
and the simulator's bookkeeping for the log: ``x``, ``y``, ``yaw``, ``s_m`` (arc length),
``progress_m``, ``sim_time_s``, ``reward`` (the env's reward of the last step), ``laps``,
``lap_time_s`` (the last completed lap, NaN before the first: null in the log), ``crash`` (1 on the
read after a step that crashed; the env is then reset, teleporting by default), ``crashes`` and
``stuck_resets`` (counts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot.deploy.parts import PolicyMetadata, VehicleError
from robot.deploy.vehicles import Vehicle

WHEEL_RADIUS_M = 0.05  # pybullet's racecar
FRONT_WHEEL_JOINTS = (1, 3)
GRAVITY = 9.81
# RCCarEnv parameters outside EnvConfig that the export records (metadata "env_params").
ENV_EXTRA = ("max_steer", "min_throttle", "n_lookahead", "n_rays", "ray_range_m", "max_delta", "max_wheel_speed")
VEHICLE_READINGS = ("wheel_speed", "gyro", "accel")
SIM_READINGS = ("x", "y", "yaw", "s_m", "progress_m", "sim_time_s", "reward", "laps", "lap_time_s", "crash",
                "crashes", "stuck_resets")


def state_layout_names(n_lookahead: int = 3, n_rays: int = 9) -> list[str]:
    """``RCCarEnv``'s state vector, entry by entry, under the names of ``robot.deploy.export``'s layout."""
    names = ["v_fwd", "v_lat", "yaw_rate", "acc_x_div10", "acc_y_div10", "applied_steer", "applied_throttle"]
    for k in range(n_lookahead):
        names += [f"checkpoint{k}_x_div5", f"checkpoint{k}_y_div5"]
    return names + [f"ray{k}" for k in range(n_rays)]


def _env_config(env: Mapping[str, Any], track: str | None) -> Any:
    """The run's ``EnvConfig``, ``track`` overriding. No encoder: the vehicle hands the policy the raw camera
    image (an exported image policy has its encoder in the graph)."""
    from robot.rccar.track import EnvConfig

    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    kwargs = {k: v for k, v in env.items() if k in fields}
    kwargs.update(encoder="")
    if track:
        kwargs["track"] = track
    return EnvConfig(**kwargs)


class SimVehicle(Vehicle):
    """See the module docstring. ``env``: the run's env section (EnvConfig fields); ``env_params``: RCCarEnv
    parameters beyond it (the metadata's ``env_params``); ``layout``: the observation names the policy
    uses (default: the env's full state layout); ``run_dir``/``run_track``: where the exporting run's
    ``final/checkpoints.npy`` is and the circuit it was trained on; ``reset_mode``: what a crash does
    (``teleport``: back on the centre line at the last checkpoint; ``recover``: the scripted K-turn);
    ``make_env``: build the env another way (tests)."""

    name = "sim"

    def __init__(self, env: Mapping[str, Any] | None = None, *, track: str | None = None,
                 env_params: Mapping[str, Any] | None = None, layout: Sequence[str] | None = None,
                 run_dir: str | Path | None = None, run_track: str | None = None, reset_mode: str = "teleport",
                 seed: int | None = 0, make_env: Callable[..., Any] | None = None):
        self.env_section = dict(env or {})
        self.cfg = _env_config(self.env_section, track)
        self.track_name = self.cfg.track
        self.env_params = {k: v for k, v in dict(env_params or {}).items() if k in ENV_EXTRA}
        n_lookahead = int(self.env_params.get("n_lookahead", 3))
        n_rays = int(self.env_params.get("n_rays", 9))
        if self.cfg.observation == "onboard":
            from sim.rccar import ONBOARD_STATE

            self.state_names = list(ONBOARD_STATE)
        else:
            self.state_names = state_layout_names(n_lookahead, n_rays)
        self.layout = list(layout) if layout is not None else list(self.state_names)
        if self.layout != self.state_names:
            raise VehicleError(
                f"the policy's observation layout ({len(self.layout)} entries: {', '.join(self.layout[:9])}...) "
                f"is not RCCarEnv's state vector for n_lookahead={n_lookahead}, n_rays={n_rays} "
                f"({len(self.state_names)} entries): the sim vehicle fills the observation from the env's own "
                "vector by index")
        self.index = {name: i for i, name in enumerate(self.state_names)}
        self.provides = frozenset(self.layout) | frozenset(VEHICLE_READINGS) | frozenset(SIM_READINGS)
        if self.cfg.image_size:  # the car's own camera, RGB uint8 N x N (the runtime prefers it to --camera)
            self.provides |= {"image"}
        self._image: np.ndarray | None = None
        self.run_dir = Path(run_dir) if run_dir else None
        self.run_track = run_track if run_track is not None else self.env_section.get("track")
        self.reset_mode, self.seed, self._make_env = reset_mode, seed, make_env
        self.env: Any = None
        self.checkpoints_source = "not started"
        self.steps = self.crashes = self.stuck_resets = 0
        self.crash_kinds: dict[str, int] = {}
        self._obs: np.ndarray | None = None
        self._info: dict[str, Any] = {}
        self._reward = 0.0
        self._crash = False
        self.laps: list[tuple[float, int]] = []  # (lap time s, crashes in the lap), kept after close()
        self.neutrals = 0
        self._closed = False

    @classmethod
    def from_metadata(cls, metadata: str | Path | Mapping[str, Any], *, track: str | None = None,
                      **kwargs: Any) -> SimVehicle:
        """From an exported policy (``car.onnx``: its ``car.onnx.json``) or the metadata dict itself."""
        if isinstance(metadata, Mapping):
            meta = PolicyMetadata.from_dict(metadata)
        else:
            meta = PolicyMetadata.load(metadata)
        raw = meta.raw
        env = raw.get("env") or {}
        if not isinstance(env, Mapping):
            raise VehicleError(f"{meta.source}: the metadata's env section is not a mapping")
        run_track = raw.get("track") or env.get("track")
        return cls(env, track=track, env_params=raw.get("env_params") or {}, layout=meta.observation_names,
                   run_dir=raw.get("run_dir"), run_track=run_track, **kwargs)

    # ------------------------------------------------------------------ set-up

    @property
    def max_steer(self) -> float:
        return float(self.env_params.get("max_steer", 0.5))

    @property
    def min_throttle(self) -> float:
        return float(self.env_params.get("min_throttle", 0.0))

    def _run_checkpoints(self) -> np.ndarray | None:
        """The run's ``final/checkpoints.npy`` when it exists and this is the circuit it was trained on."""
        if self.run_dir is None or self.track_name != self.run_track:
            return None
        path = self.run_dir / "final" / "checkpoints.npy"
        if not path.is_file():
            return None
        try:
            points = np.load(path)
        except (OSError, ValueError):
            return None
        if points.ndim != 2 or points.shape[1] < 2 or len(points) < 4 or not np.isfinite(points).all():
            return None
        self.checkpoints_source = str(path)
        return points[:, :2]

    def _build_env(self) -> Any:
        checkpoints = self._run_checkpoints()
        if checkpoints is None:
            self.checkpoints_source = f"centre line every {self.cfg.checkpoint_spacing_m:g} m"
        extra = dict(self.env_params)
        if "max_delta" in extra:
            extra["max_delta"] = tuple(float(v) for v in extra["max_delta"])
        if self._make_env is not None:
            return self._make_env(self.cfg, checkpoints=checkpoints, reset_mode=self.reset_mode, **extra)
        return self.cfg.make(checkpoints=checkpoints, reset_mode=self.reset_mode, **extra)

    def start(self) -> None:
        if self._closed:
            raise VehicleError("the sim vehicle is closed")
        try:
            self.env = self._build_env()
            obs, info = self.env.reset(seed=self.seed)
        except (ValueError, FileNotFoundError, KeyError) as err:
            raise VehicleError(f"cannot build the simulator on track {self.track_name!r}: "
                               f"{type(err).__name__}: {err}") from err
        obs = self._split(obs)
        n = len(self.state_names)
        if np.shape(obs) != (n,):
            raise VehicleError(f"the env's observation has shape {np.shape(obs)}, the layout {n} entries")
        self._obs, self._info = np.asarray(obs, dtype=np.float64), dict(info)

    # ------------------------------------------------------------------ the loop's calls

    def _require_env(self) -> Any:
        if self.env is None or self._obs is None:
            raise VehicleError("the sim vehicle is not started (start() not called, or closed)")
        return self.env

    def _wheel_speed(self) -> float:
        env = self.env.unwrapped
        try:  # the env's pybullet client and car: the front wheels' spin, as an encoder would see it
            spins = [env._p.getJointState(env._car, j)[1] for j in FRONT_WHEEL_JOINTS]
            return float(np.mean(spins)) * WHEEL_RADIUS_M
        except (AttributeError, TypeError, IndexError):
            return float(self._obs[self.index["v_fwd"]])

    def _split(self, obs: Any) -> Any:
        """The state vector of an observation; a camera image (dict observation) is kept for `read`."""
        if isinstance(obs, dict):
            self._image = obs["image"]
            return obs["state"]
        return obs

    def read(self) -> dict[str, float | np.ndarray]:
        self._require_env()
        obs, info, ix = self._obs, self._info, self.index
        readings: dict[str, float | np.ndarray] = {name: float(obs[ix[name]]) for name in self.layout}
        acc_x, acc_y = 10.0 * float(obs[ix["acc_x_div10"]]), 10.0 * float(obs[ix["acc_y_div10"]])
        laps = self.laps
        readings.update(
            wheel_speed=self._wheel_speed(), gyro=np.array([0.0, 0.0, float(obs[ix["yaw_rate"]])]),
            accel=np.array([acc_x, acc_y, GRAVITY]),
            x=float(info.get("x", math.nan)), y=float(info.get("y", math.nan)), yaw=float(info.get("yaw", math.nan)),
            s_m=float(info.get("s", math.nan)), progress_m=float(info.get("progress_m", math.nan)),
            sim_time_s=float(info.get("sim_time_s", math.nan)), reward=self._reward, laps=float(len(laps)),
            lap_time_s=float(laps[-1][0]) if laps else math.nan, crash=1.0 if self._crash else 0.0,
            crashes=float(self.crashes), stuck_resets=float(self.stuck_resets))
        if self._image is not None:
            readings["image"] = self._image
        return readings

    def to_action(self, command: Any) -> np.ndarray:
        """``[steer_rad, throttle_fraction]`` -> the env's normalised ``[steer, throttle]`` (clipped)."""
        steer_rad, fraction = (float(v) for v in np.asarray(command, dtype=np.float64).reshape(-1)[:2])
        if not (math.isfinite(steer_rad) and math.isfinite(fraction)):
            raise VehicleError(f"refusing a non-finite command {command!r} (the safety layer should never pass one)")
        lo = self.min_throttle
        steer = steer_rad / self.max_steer
        throttle = (fraction - lo) / (1.0 - lo) * 2.0 - 1.0
        return np.clip(np.array([steer, throttle]), -1.0, 1.0)

    def write(self, command: Any) -> None:
        self._step(self.to_action(command))

    def _step(self, action: np.ndarray) -> None:
        env = self._require_env()
        obs, reward, terminated, truncated, info = env.step(action)
        self.steps += 1
        self._reward, self._crash = float(reward), bool(terminated)
        if terminated:
            self.crashes += 1
            kind = str(info.get("crash"))
            self.crash_kinds[kind] = self.crash_kinds.get(kind, 0) + 1
        elif truncated:
            self.stuck_resets += 1
        if terminated or truncated:  # not fresh: laps keep counting across the reset
            obs, info = env.reset()
        self._obs, self._info = np.asarray(self._split(obs), dtype=np.float64), dict(info)
        self.laps = list(env.unwrapped.lap_times)

    def neutral(self) -> None:
        """Nothing to stop between ticks: the simulation only advances in ``write`` (the loop writes the
        neutral command itself while it runs), and is frozen once the loop stops. Counted in ``stats``."""
        self.neutrals += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.env is not None:
            try:
                self.env.close()
            finally:
                self.env = None

    def stats(self) -> dict[str, Any]:
        info = self._info
        return {"track": str(self.track_name), "checkpoints": self.checkpoints_source, "reset_mode": self.reset_mode,
                "control_hz": float(self.cfg.control_hz), "sim_steps": self.steps,
                "sim_time_s": float(info.get("sim_time_s", 0.0)), "progress_m": float(info.get("progress_m", 0.0)),
                "laps": len(self.laps), "lap_times_s": [float(t) for t, _ in self.laps],
                "lap_crashes": [int(c) for _, c in self.laps], "crashes": self.crashes,
                "crash_kinds": dict(self.crash_kinds), "stuck_resets": self.stuck_resets, "neutrals": self.neutrals}
