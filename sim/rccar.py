"""`rlab/RCCar-v0`: pybullet's 1:10 racecar on a closed track, for FastRLAP-style lap learning.

The car is ``racecar/racecar_differential.urdf`` from pybullet_data with the gear constraints of
pybullet's own racecar example (a differential on each axle; without them ``racecar.urdf`` scrubs
and understeers). Rear wheels are driven through the differential rings by velocity control
(throttle x `max_wheel_speed` rad/s, force `motor_force`; 100 rad/s on 0.05 m wheels is 5 m/s); the
front wheels are steered by position control (+-`max_steer` rad). Every joint motor brakes by
default in pybullet, so all motors start with force 0. Physics runs at `physics_hz` (240), control at `control_hz` (10).

Actions are ``[steer, throttle]`` in [-1, 1]; throttle -1..1 maps to `min_throttle`..1 of the top
wheel speed (forward only by default: reversing is the recovery manoeuvre's job). As in FastRLAP,
each applied action moves at most `max_delta` per step from the previous one, and the applied
action is part of the observation.

Observation (state, float32): forward and lateral speed (m/s), yaw rate (rad/s), forward and
lateral acceleration (m/s^2), the applied steer and throttle, the next `n_lookahead` checkpoints
in the car's frame (m / 5), and `n_rays` range rays over the front half-plane to the walls
(fraction of `ray_range_m`). With ``image_size`` set, the observation is a dict with ``state``
and ``image`` (the car's own camera, uint8 H x W x 3). ``observation="onboard"`` keeps only what a real
car measures in the state (`ONBOARD_STATE`: speed, yaw rate, accelerations, its last command) and needs
the camera: a policy trained on it can drive the real car through `robot.deploy`.

Reward (FastRLAP's shape): the car's velocity toward the next checkpoint (m/s), minus
`crash_cost` on a crash. Checkpoints default to points every 2.5 m on the centre line; a learner
passes those extracted from a demonstration instead (``checkpoints=``).

Episodes end on a crash (terminated: a wall contact, leaving the track, or rolling over) or when
the car is stuck (truncated: slower than 0.1 m/s for `stuck_s`). What the next ``reset()`` does is
`reset_mode`:

- ``"recover"`` (FastRLAP's autonomous practice): no teleport. A scripted K-turn backs away from the
  wall with the wheels turned so the nose swings toward the track direction, brakes, pulls forward a
  little if it is still not lined up, and so on; every leg stops short of a wall and ends at rest. The
  next episode starts where the car ends up, and the manoeuvre's simulated time counts as practice
  time (``info["sim_time_s"]``; ``info["recoveries"]`` counts manoeuvres). Only a car on its roof, or
  one not lined up after `max_recovery_tries` reverse legs, is put back on the centre line (a human
  picking it up), and counted in ``info["interventions"]``.
- ``"teleport"``: the car is placed at rest on the centre line at the last checkpoint it reached.

Laps are timed continuously across such resets (a recovery's time is part of the lap); progress
along the centre line is tracked near the last position (`RaceTrack.project` with a hint), never by
a global nearest point, which would jump to a neighbouring section.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim.racetrack import RaceTrack, TrackLimits, load_track

URDF = "racecar/racecar_differential.urdf"
STEER_JOINTS = (0, 2)
DRIVE_JOINTS = (8, 15)  # the differential rings of the rear and front axle
WHEEL_LINKS = (1, 3, 12, 14)
CAMERA_LINK = 5
# (parent link, child link, gear ratio, aux link): pybullet's racecar example couples the wheels
# through the two differentials this way.
GEARS = ((9, 11, 1, -1), (10, 13, -1, -1), (9, 13, -1, -1), (16, 18, 1, -1), (16, 19, -1, -1),
         (17, 19, -1, -1), (1, 18, -1, 15), (3, 19, -1, 15))
ONBOARD_STATE = ("v_fwd", "yaw_rate", "acc_x_div10", "acc_y_div10", "applied_steer", "applied_throttle")
"""The state of ``observation="onboard"``: only what a real car measures (wheel speed, gyro, IMU) and its own
last command; the track is seen through the camera image alone (no checkpoints, no range rays)."""
WALL_HEIGHT = 0.2
WALL_THICKNESS = 0.05


@contextlib.contextmanager
def _quiet_stdio():
    """Silence file descriptors 1 and 2 (C-level prints) for the block; Python's streams are flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real descriptors (e.g. some notebook kernels): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_c_stdio()  # C's own buffers may still hold the text: flush it into /dev/null
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _flush_c_stdio() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def _two_sided(indices: list[int]) -> list[int]:
    """Each triangle in both windings: pybullet's TinyRenderer skips back faces, and without this the right
    wall (built facing outward) and the track surface (facing down) were invisible to the cameras."""
    tris = np.asarray(indices).reshape(-1, 3)
    return np.concatenate([tris, tris[:, ::-1]]).ravel().tolist()


@dataclass(frozen=True)
class Randomization:
    """Per-episode domain randomisation ranges (multipliers and seconds); all off when `enabled` is false."""

    enabled: bool = False
    friction: tuple[float, float] = (0.7, 1.3)
    mass: tuple[float, float] = (0.85, 1.15)
    motor: tuple[float, float] = (0.8, 1.2)
    latency_s: tuple[float, float] = (0.0, 0.05)


class RCCarEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        track: str | Path | RaceTrack = "generated:0",
        length_m: float = 55.0,
        width_m: float = 1.6,
        on_infeasible: str = "error",
        smooth_m: float = 0.0,
        checkpoints: np.ndarray | None = None,
        checkpoint_spacing_m: float = 2.5,
        checkpoint_radius_m: float = 1.0,
        control_hz: float = 10.0,
        physics_hz: float = 240.0,
        max_steer: float = 0.5,
        max_wheel_speed: float = 100.0,
        motor_force: float = 20.0,
        min_throttle: float = 0.0,
        max_delta: tuple[float, float] = (0.5, 0.3),
        crash_cost: float = 10.0,
        stuck_s: float = 3.0,
        reset_mode: str = "teleport",
        max_recovery_tries: int = 3,
        start_s: float = 0.0,
        random_start: bool = False,
        n_lookahead: int = 3,
        n_rays: int = 9,
        ray_range_m: float = 5.0,
        image_size: int | None = None,
        observation: str = "full",
        randomization: Randomization | dict | None = None,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (320, 240),
        gui: bool = False,
    ) -> None:
        if reset_mode not in ("teleport", "recover"):
            raise ValueError(f"RCCar-v0: reset_mode must be 'teleport' or 'recover', got {reset_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"RCCar-v0: render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not 0 < control_hz <= physics_hz:
            raise ValueError(f"RCCar-v0: need 0 < control_hz <= physics_hz, got {control_hz} and {physics_hz}")
        if not -1.0 <= min_throttle < 1.0:
            raise ValueError(f"RCCar-v0: min_throttle must be in [-1, 1), got {min_throttle}")
        self.track = track if isinstance(track, RaceTrack) else load_track(
            track, length_m=length_m, width_m=width_m, limits=TrackLimits(on_infeasible=on_infeasible),
            smooth_m=smooth_m)
        self.checkpoints = self._checkpoints(checkpoints, checkpoint_spacing_m)
        self.checkpoint_radius = checkpoint_radius_m
        self.substeps = max(1, round(physics_hz / control_hz))
        self.dt = self.substeps / physics_hz
        self.physics_dt = 1.0 / physics_hz
        self.max_steer, self.max_wheel_speed, self.motor_force = max_steer, max_wheel_speed, motor_force
        self.min_throttle = min_throttle
        self.max_delta = np.asarray(max_delta, dtype=np.float64)
        self.crash_cost, self.stuck_steps = crash_cost, max(1, round(stuck_s / self.dt))
        self.reset_mode, self.max_recovery_tries = reset_mode, max_recovery_tries
        self.start_s, self.random_start = start_s, random_start
        self.n_lookahead, self.n_rays, self.ray_range = n_lookahead, n_rays, ray_range_m
        self.image_size = image_size
        if observation not in ("full", "onboard"):
            raise ValueError(f"RCCar-v0: observation must be 'full' or 'onboard', got {observation!r}")
        if observation == "onboard" and not image_size:
            raise ValueError("RCCar-v0: observation='onboard' needs image_size (the camera is how it sees the track)")
        self.observation = observation
        self.randomization = (Randomization(**randomization) if isinstance(randomization, dict)
                              else randomization or Randomization())
        self.render_mode, self.render_size, self.gui = render_mode, render_size, gui
        self.metadata = {**self.metadata, "render_fps": int(round(control_hz))}

        n_state = 7 + 2 * n_lookahead + n_rays if observation == "full" else len(ONBOARD_STATE)
        state_space = spaces.Box(-np.inf, np.inf, shape=(n_state,), dtype=np.float32)
        if image_size:
            self.observation_space = spaces.Dict({
                "state": state_space,
                "image": spaces.Box(0, 255, shape=(image_size, image_size, 3), dtype=np.uint8)})
        else:
            self.observation_space = state_space
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

        self._p: Any = None
        self._car = -1
        self._walls: tuple[int, ...] = ()
        self._needs_recovery = False
        self._first_reset = True
        self.sim_time = 0.0
        self.interventions = 0
        self.recoveries = 0

    # ------------------------------------------------------------------------------------ set-up

    def _checkpoints(self, given: np.ndarray | None, spacing: float) -> np.ndarray:
        """Checkpoints as (M, 3): x, y and their arc length on the centre line, in driving order."""
        trk = self.track
        if given is None:
            n = max(4, int(trk.length // spacing))
            s = np.arange(n) * (trk.length / n) + trk.length / n
            xy = np.array([trk.point_at(v)[0] for v in s])
        else:
            xy = np.asarray(given, dtype=np.float64)
            if xy.ndim != 2 or xy.shape[1] < 2 or len(xy) < 4 or not np.isfinite(xy).all():
                raise ValueError(f"RCCar-v0: checkpoints must be >= 4 finite (x, y) rows, got shape {xy.shape}")
            xy = xy[:, :2]
            hint = None
            s = []
            for point in xy:
                proj = trk.project(point, hint=hint, window_m=max(6.0, 3 * spacing))
                s.append(proj.s)
                hint = proj.index
            s = np.asarray(s)
        return np.column_stack([xy, np.mod(s, trk.length)])

    def _connect(self) -> None:
        with _quiet_stdio():  # pybullet prints its build time and "argv[0]=" from C on import and connect
            import pybullet as pb
            import pybullet_data
            from pybullet_utils.bullet_client import BulletClient

            self._p = p = BulletClient(connection_mode=pb.GUI if self.gui else pb.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath())
        self._build_world()

    def _build_world(self) -> None:
        """Ground, car (motors off, differential gears) and track walls, in an empty simulation."""
        import pybullet as pb

        p = self._p
        p.resetSimulation()
        p.setTimeStep(self.physics_dt)
        p.setGravity(0, 0, -9.81)
        self._plane = p.loadURDF("plane.urdf")
        self._car = p.loadURDF(URDF, [0, 0, 0.05], useFixedBase=False)
        for joint in range(p.getNumJoints(self._car)):
            p.setJointMotorControl2(self._car, joint, pb.VELOCITY_CONTROL, targetVelocity=0, force=0)
        for parent, child, ratio, aux in GEARS:
            c = p.createConstraint(self._car, parent, self._car, child, jointType=pb.JOINT_GEAR,
                                   jointAxis=[0, 1, 0], parentFramePosition=[0, 0, 0], childFramePosition=[0, 0, 0])
            if aux >= 0:
                p.changeConstraint(c, gearRatio=ratio, gearAuxLink=aux, maxForce=10000)
            else:
                p.changeConstraint(c, gearRatio=ratio, maxForce=10000)
        self._base_mass = p.getDynamicsInfo(self._car, -1)[0]
        self._base_friction = {link: p.getDynamicsInfo(self._car, link)[1] for link in WHEEL_LINKS}
        trk = self.track
        self._walls = (self._wall_body(trk.left, trk.normal), self._wall_body(trk.right, -trk.normal))
        self._track_surface()

    def _ribbon(self, inner: np.ndarray, outer: np.ndarray, z0: float, z1: float) -> tuple[list, list]:
        """Vertices and triangles of a closed band between two polylines, z0..z1 high (a wall or a floor)."""
        n = len(inner)
        verts = np.concatenate([np.column_stack([inner, np.full(n, z0)]), np.column_stack([inner, np.full(n, z1)]),
                                np.column_stack([outer, np.full(n, z0)]), np.column_stack([outer, np.full(n, z1)])])
        tris = []
        i = np.arange(n)
        j = (i + 1) % n
        for a, b in ((0, 1), (2, 3), (1, 3)) if z1 > z0 else ((0, 2),):  # inner face, outer face, top
            lo, hi = a * n, b * n
            tris.append(np.column_stack([lo + i, lo + j, hi + j]))
            tris.append(np.column_stack([lo + i, hi + j, hi + i]))
        indices = np.concatenate(tris).ravel()
        return verts.tolist(), indices.astype(int).tolist()

    def _wall_body(self, line: np.ndarray, outward: np.ndarray) -> int:
        """One static concave mesh for a whole boundary: a low wall `WALL_THICKNESS` thick, outside the corridor."""
        import pybullet as pb

        p = self._p
        step = max(1, int(round(0.25 / self.track.ds)))
        pts, out = line[::step], outward[::step]
        verts, idx = self._ribbon(pts, pts + out * WALL_THICKNESS, 0.0, WALL_HEIGHT)
        col = p.createCollisionShape(pb.GEOM_MESH, vertices=verts, indices=idx, flags=pb.GEOM_FORCE_CONCAVE_TRIMESH)
        vis = p.createVisualShape(pb.GEOM_MESH, vertices=verts, indices=_two_sided(idx),
                                  rgbaColor=[0.85, 0.2, 0.15, 1])
        return p.createMultiBody(0, col, vis)

    def _track_surface(self) -> None:
        import pybullet as pb

        p = self._p
        step = max(1, int(round(0.25 / self.track.ds)))
        verts, idx = self._ribbon(self.track.left[::step], self.track.right[::step], 0.002, 0.002)
        vis = p.createVisualShape(pb.GEOM_MESH, vertices=verts, indices=_two_sided(idx),
                                  rgbaColor=[0.35, 0.35, 0.38, 1])
        p.createMultiBody(0, -1, vis)

    # ---------------------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        options = options or {}
        if self._p is None:
            self._connect()
        fresh = self._first_reset or seed is not None or options.get("restart", False)
        if fresh and not self._first_reset:
            # Rebuilt, not just re-posed: pybullet keeps solver warm-starts and contact caches across
            # pose resets (and restoreState), and the same seed would not give the same episode.
            self._build_world()
        self._randomize()
        if fresh:
            s0 = float(self.np_random.uniform(0, self.track.length)) if self.random_start else self.start_s
            s0 = float(options.get("start_s", s0))
            self._place(s0)
            self._new_lap_clock()
            self.sim_time, self.interventions, self.recoveries = 0.0, 0, 0
            self._crashes_in_lap = 0
            self._first_reset = False
        elif self._needs_recovery:
            if self.reset_mode == "teleport":
                self._place(float(self.checkpoints[self._cp - 1, 2]) if self._cp_passed else self._s0,
                            keep_progress=True)
            else:
                self._recover()
        self._needs_recovery = False
        self._applied = np.array([0.0, -1.0])
        self._stuck = 0
        self._steps = 0
        self._read_state(first=True)
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        if not np.isfinite(a).all():
            a = np.array([0.0, -1.0])
        self._applied = self._applied + np.clip(a - self._applied, -self.max_delta, self.max_delta)
        pos_before = self._pos.copy()
        target = self.checkpoints[self._cp, :2]
        self._drive(self._applied[0], self._throttle(self._applied[1]), self.substeps, delay=self._latency_steps)
        self._read_state()
        self._steps += 1
        velocity = (self._pos - pos_before) / self.dt
        to_cp = target - pos_before
        reward = float(velocity @ (to_cp / (np.linalg.norm(to_cp) + 1e-9)))
        self._advance_checkpoints()
        lap_done = self._update_laps()
        crash = self._crash_kind()
        self._stuck = self._stuck + 1 if abs(self._v_fwd) < 0.1 else 0
        terminated = crash is not None
        truncated = not terminated and self._stuck >= self.stuck_steps
        if terminated:
            reward -= self.crash_cost
            self._crashes_in_lap += 1
        if terminated or truncated:
            self._needs_recovery = True
        info = self._info()
        info.update(crash=crash, stuck=truncated, lap_completed=lap_done)
        if lap_done:
            info["lap_time_s"] = self.lap_times[-1][0]
            info["lap_crashes"] = self.lap_times[-1][1]
        return self._obs(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._p is None:
            return None
        w, h = self.render_size
        yaw = self._yaw
        eye = [self._pos[0] - 1.6 * math.cos(yaw), self._pos[1] - 1.6 * math.sin(yaw), 1.1]
        target = [self._pos[0] + 0.8 * math.cos(yaw), self._pos[1] + 0.8 * math.sin(yaw), 0.0]
        return self._camera(eye, target, w, h, fov=70)

    def close(self) -> None:
        if self._p is not None:
            self._p.disconnect()
            self._p = None

    # ------------------------------------------------------------------------------- internals

    @property
    def lap_times(self) -> list[tuple[float, int]]:
        """Completed laps as (seconds, crashes during the lap), since the last fresh reset."""
        return self._laps

    def _throttle(self, a: float) -> float:
        return self.min_throttle + (a + 1.0) / 2.0 * (1.0 - self.min_throttle)

    def _randomize(self) -> None:
        r, p = self.randomization, self._p
        u = (lambda lo_hi: float(self.np_random.uniform(*lo_hi))) if r.enabled else (lambda lo_hi: 1.0)
        friction, mass, self._motor_scale = u(r.friction), u(r.mass), u(r.motor)
        latency = float(self.np_random.uniform(*r.latency_s)) if r.enabled else 0.0
        self._latency_steps = min(self.substeps - 1, int(round(latency / self.physics_dt)))
        p.changeDynamics(self._car, -1, mass=self._base_mass * mass)
        for link, base in self._base_friction.items():
            p.changeDynamics(self._car, link, lateralFriction=base * friction)

    def _drive(self, steer: float, throttle: float, substeps: int, delay: int = 0) -> None:
        """Hold (steer, throttle) for `substeps` physics steps, the first `delay` still on the old command."""
        import pybullet as pb

        p = self._p
        for k in range(substeps):
            if k == delay:
                for joint in STEER_JOINTS:
                    p.setJointMotorControl2(self._car, joint, pb.POSITION_CONTROL,
                                            targetPosition=steer * self.max_steer)
                for joint in DRIVE_JOINTS:
                    p.setJointMotorControl2(self._car, joint, pb.VELOCITY_CONTROL,
                                            targetVelocity=throttle * self.max_wheel_speed,
                                            force=self.motor_force * self._motor_scale)
            p.stepSimulation()
        self.sim_time += substeps * self.physics_dt

    def _place(self, s: float, keep_progress: bool = False) -> None:
        """The car at rest on the centre line at arc length `s`, facing along the track; with
        `keep_progress` the lap's progress counts the jump (a teleport back is progress lost)."""
        import pybullet as pb

        s_before = getattr(self, "_s", s)

        xy, heading = self.track.point_at(s)
        # The base link's origin sits near the rear axle; centre the car's length on the point.
        back = 0.16
        pos = [xy[0] - back * math.cos(heading), xy[1] - back * math.sin(heading), 0.05]
        p = self._p
        p.resetBasePositionAndOrientation(self._car, pos, pb.getQuaternionFromEuler([0, 0, heading]))
        p.resetBaseVelocity(self._car, [0, 0, 0], [0, 0, 0])
        for joint in range(p.getNumJoints(self._car)):
            p.resetJointState(self._car, joint, 0.0, 0.0)
        self._drive(0.0, 0.0, 12)  # settle on the wheels
        self._hint = None
        self._read_state(first=True)
        if keep_progress:
            self._progress += self.track.wrap_delta(self._s - s_before)

    def _new_lap_clock(self) -> None:
        """Laps start where the car stands now: one lap is one track length of progress."""
        self._laps: list[tuple[float, int]] = []
        self._progress = 0.0
        self._lap_start_time = 0.0
        self._next_lap_at = self.track.length
        self._s0 = s0 = self._s
        later = np.nonzero(self.checkpoints[:, 2] > s0 + 1e-6)[0]
        self._cp = int(later[0]) if len(later) else 0
        self._cp_passed = 0

    def _read_state(self, first: bool = False) -> None:
        p = self._p
        pos, orn = p.getBasePositionAndOrientation(self._car)
        lin, ang = p.getBaseVelocity(self._car)
        roll, pitch, yaw = p.getEulerFromQuaternion(orn)
        c, s = math.cos(yaw), math.sin(yaw)
        v_fwd, v_lat = c * lin[0] + s * lin[1], -s * lin[0] + c * lin[1]
        if first:
            self._v_prev = (v_fwd, v_lat)
        acc = ((v_fwd - self._v_prev[0]) / self.dt, (v_lat - self._v_prev[1]) / self.dt)
        self._v_prev = (v_fwd, v_lat)
        self._pos, self._z = np.array(pos[:2]), pos[2]
        self._yaw, self._tilt = yaw, max(abs(roll), abs(pitch))
        self._v_fwd, self._v_lat, self._yaw_rate, self._acc = v_fwd, v_lat, ang[2], acc
        centre = self._pos + 0.16 * np.array([c, s])
        proj = self.track.project(centre, hint=getattr(self, "_hint", None))
        if not first and getattr(self, "_hint", None) is not None:
            self._progress += self.track.wrap_delta(proj.s - self._s)
        self._hint, self._s, self._lateral, self._track_heading = proj.index, proj.s, proj.lateral, proj.heading

    def _advance_checkpoints(self) -> None:
        """The next checkpoint is reached within its radius or once the car's progress passes it."""
        for _ in range(len(self.checkpoints)):
            cp = self.checkpoints[self._cp]
            ahead = self.track.wrap_delta(cp[2] - self._s)
            if np.linalg.norm(cp[:2] - self._pos) < self.checkpoint_radius or ahead < 0:
                if ahead < -self.track.length / 4:  # far behind: a wrap artefact, not a pass
                    break
                self._cp = (self._cp + 1) % len(self.checkpoints)
                self._cp_passed += 1
            else:
                break

    def _update_laps(self) -> bool:
        if self._progress < self._next_lap_at:
            return False
        now = self.sim_time
        self._laps.append((round(now - self._lap_start_time, 4), self._crashes_in_lap))
        self._lap_start_time, self._crashes_in_lap = now, 0
        self._next_lap_at += self.track.length
        return True

    def _crash_kind(self) -> str | None:
        if self._tilt > math.radians(60):
            return "rollover"
        if abs(self._lateral) > self.track.width / 2 + 0.4:
            return "off_track"
        for wall in self._walls:
            if self._p.getContactPoints(self._car, wall):
                return "wall"
        return None

    def _recover(self) -> None:
        """A K-turn back onto the track, without a human: reverse with the wheels turned so the nose swings
        toward the track direction, brake, then (if still not lined up) a short forward leg turning the same
        way, and so on. Each leg stops short of a wall (a range ray ahead or behind) and ends at rest.
        A car on its roof, or not lined up after `max_recovery_tries` reverse legs, is put back on the
        centre line (a human picking it up) and counted in `interventions`."""
        self.recoveries += 1
        if self._tilt < math.radians(60):
            for leg in range(2 * self.max_recovery_tries):
                reverse = leg % 2 == 0
                self._leg(reverse, max_s=1.5 if reverse else 1.0)
                if self._lined_up():
                    return
        self.interventions += 1
        self._place(self._s, keep_progress=True)

    def _heading_error(self) -> float:
        """The car's heading minus the track direction, wrapped to (-pi, pi] (positive: pointing left of it)."""
        d = self._yaw - self._track_heading
        return math.atan2(math.sin(d), math.cos(d))

    def _touching(self) -> bool:
        return any(self._p.getContactPoints(self._car, wall) for wall in self._walls)

    def _clearance(self, backwards: bool) -> float:
        """Free distance straight ahead (or behind) of the car to a wall, in metres (capped at 2 m)."""
        c, s = math.cos(self._yaw), math.sin(self._yaw)
        sign = -1.0 if backwards else 1.0
        # From the rear axle forward the car is ~0.37 m long; start the ray at the bumper it looks from.
        start = self._pos + (np.array([c, s]) * (-0.05 if backwards else 0.37))
        end = start + sign * 2.0 * np.array([c, s])
        hit = self._p.rayTest([*start, 0.1], [*end, 0.1])[0]
        return 2.0 * hit[2] if hit[0] in self._walls else 2.0

    def _lined_up(self) -> bool:
        return (abs(self._heading_error()) < math.radians(30) and not self._touching()
                and self._clearance(backwards=False) > 0.6 and abs(self._lateral) < self.track.width / 2)

    def _leg(self, reverse: bool, max_s: float) -> None:
        """One leg of the K-turn, then brake to a stop. Reversing with the wheels turned left swings the nose
        right, so the steering follows the heading error's sign in reverse and the opposite sign forward."""
        for _ in range(max(1, int(max_s / self.dt))):
            err = self._heading_error()
            steer = float(np.clip(err / 0.4, -1.0, 1.0)) * (1.0 if reverse else -1.0)
            self._drive(steer, -0.5 if reverse else 0.4, self.substeps)
            self._read_state()
            if self._lined_up() or self._clearance(backwards=reverse) < 0.25:
                break
        for _ in range(int(round(1.0 / self.dt))):  # brake: the next leg (or episode) starts at rest
            self._drive(0.0, 0.0, self.substeps)
            self._read_state()
            if abs(self._v_fwd) < 0.05:
                break

    def _camera(self, eye: list, target: list, w: int, h: int, fov: float) -> np.ndarray:
        import pybullet as pb

        p = self._p
        view = p.computeViewMatrix(eye, target, [0, 0, 1])
        proj = p.computeProjectionMatrixFOV(fov, w / h, 0.05, 30.0)
        _, _, rgba, _, _ = p.getCameraImage(w, h, view, proj, renderer=pb.ER_TINY_RENDERER, shadow=0)
        return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()

    def _rays(self) -> np.ndarray:
        angles = np.linspace(-math.pi / 2, math.pi / 2, self.n_rays) + self._yaw
        start = np.column_stack([np.repeat(self._pos[None], self.n_rays, 0), np.full(self.n_rays, 0.1)])
        end = start + np.column_stack([np.cos(angles), np.sin(angles), np.zeros(self.n_rays)]) * self.ray_range
        hits = self._p.rayTestBatch(start.tolist(), end.tolist())
        out = np.ones(self.n_rays)
        for k, hit in enumerate(hits):
            if hit[0] in self._walls:
                out[k] = hit[2]
        return out

    def _obs(self) -> Any:
        c, s = math.cos(self._yaw), math.sin(self._yaw)
        rot = np.array([[c, s], [-s, c]])
        n = len(self.checkpoints)
        ahead = self.checkpoints[[(self._cp + k) % n for k in range(self.n_lookahead)], :2]
        local = ((ahead - self._pos) @ rot.T) / 5.0
        if self.observation == "onboard":  # what a real car measures: wheel speed, gyro, IMU, its own command
            state = np.array([self._v_fwd, self._yaw_rate, self._acc[0] / 10, self._acc[1] / 10, *self._applied],
                             dtype=np.float32)
        else:
            state = np.concatenate([[self._v_fwd, self._v_lat, self._yaw_rate, self._acc[0] / 10, self._acc[1] / 10],
                                    self._applied, local.ravel(), self._rays()]).astype(np.float32)
        if not self.image_size:
            return state
        link = self._p.getLinkState(self._car, CAMERA_LINK)
        eye = list(link[0])
        yaw = self._yaw
        target = [eye[0] + math.cos(yaw), eye[1] + math.sin(yaw), eye[2] - 0.15]
        return {"state": state, "image": self._camera(eye, target, self.image_size, self.image_size, fov=90)}

    def _info(self) -> dict:
        return {"s": self._s, "lateral": self._lateral, "speed": self._v_fwd, "x": float(self._pos[0]),
                "y": float(self._pos[1]), "yaw": self._yaw, "checkpoint": self._cp, "laps": len(self._laps),
                "sim_time_s": self.sim_time, "progress_m": self._progress, "recoveries": self.recoveries,
                "interventions": self.interventions}
