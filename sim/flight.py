"""``rlab/IndoorFlight-v0``: a kinematic quadrotor flying forward through indoor worlds, seeing one camera.

    env = gymnasium.make("rlab/IndoorFlight-v0")                                  # generated, train split
    env = gymnasium.make("rlab/IndoorFlight-v0", split="heldout_textures")        # unseen textures
    env = gymnasium.make("rlab/IndoorFlight-v0", world="building.obj", start=(1.0, 2.0, 1.2, 90))

Action: one cell of a K x K grid over the camera image (CAD2RL's action representation), index
``row * K + col`` with row 0 at the top and column 0 on the left. The body turns its heading towards
the cell's centre (left columns turn left: yaw grows) and climbs or descends by ``climb_gain`` times the
cell's vertical angle, then flies ``step_m`` forward. The centre cell (K odd) is straight and level.

Observation: the RGB camera image (image_size x image_size x 3, uint8). Collisions come from ray tests
along the swept path, widened by the body radius, and around the end point; a collision ends the
episode (``terminated``) and ``info["collision"]`` names what was hit (wall, floor, ceiling, furniture,
or world for a user's file). Flying ``max_distance_m`` or leaving the world's box ends it
(``truncated``). ``info["distance_m"]`` is the collision-free distance flown.

The world is static and the body kinematic, so the whole state is the pose: `snapshot` / `restore`
branch an episode (Monte Carlo labels) at the cost of a copy, where pybullet's saveState/restoreState
would snapshot an unchanged world at about 2 ms each. `advance` predicts a step without rendering
(lookahead baselines), and `depth` is the metric depth buffer of the last render (privileged: the
image policy never gets it).

Renderer: ``tiny`` (TinyRenderer, CPU) or ``egl`` (the EGL plugin, for a GPU with EGL). Without a GPU, EGL
runs on Mesa's llvmpipe, whose LLVM clashes with triton's: import ``torch._dynamo`` before the first EGL
environment if the process will use torch (the flight track does), or the later import segfaults.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim.indoor import SPLITS, World, WorldConfig, build_world, load_user_world

NEAR_M, FAR_M = 0.05, 40.0
RENDERERS = ("tiny", "egl")


@dataclass(frozen=True)
class FlightState:
    """The whole episode state: the body pose and the bookkeeping."""

    pos: tuple[float, float, float]
    yaw_deg: float
    distance_m: float
    steps: int


def grid_angles(k: int, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(yaw offsets, pitch offsets) in degrees of each of the k*k cells' centres from the optical axis.

    Columns left of centre have positive yaw (a left turn); rows above centre positive pitch (climb).
    """
    t = math.tan(math.radians(fov_deg) / 2)
    centres = (np.arange(k) + 0.5) / k * 2 - 1  # -1..1, left/top first
    col_yaw = -np.degrees(np.arctan(centres * t))
    row_pitch = -np.degrees(np.arctan(centres * t))
    yaw = np.tile(col_yaw, k)
    pitch = np.repeat(row_pitch, k)
    return yaw, pitch


def _check_args(image_size: Any, grid: Any, renderer: str, step_m: float, max_distance_m: float, body_radius_m: float,
                climb_gain: float, render_mode: str | None, start_jitter_m: float, start_jitter_deg: float) -> None:
    """ValueError naming the first bad constructor argument."""
    if not isinstance(image_size, (int, np.integer)) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be an integer pixel count in 8..1024 (the renderer's range here), "
                         f"got {image_size!r}")
    if not isinstance(grid, (int, np.integer)) or not 1 <= grid <= 15:
        raise ValueError(f"grid (K of the K x K action grid) must be an integer in 1..15, got {grid!r}")
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    for name, value in (("step_m", step_m), ("max_distance_m", max_distance_m), ("body_radius_m", body_radius_m)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (start_jitter_m >= 0 and start_jitter_deg >= 0):
        raise ValueError(f"start jitter must be >= 0, got {start_jitter_m!r} m, {start_jitter_deg!r} deg")
    if not 0 <= climb_gain <= 2:
        raise ValueError(f"climb_gain must be in [0, 2], got {climb_gain!r}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")


class IndoorFlightEnv(gym.Env):
    """See the module docstring. Every argument is validated before any world is built."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, world: str | Path = "generated", split: str = "train",
                 start: tuple[float, float, float, float] | None = None, image_size: int = 64, grid: int = 3,
                 step_m: float = 0.5, max_distance_m: float = 60.0, body_radius_m: float = 0.2,
                 climb_gain: float = 0.5, renderer: str = "tiny", world_config: WorldConfig | None = None,
                 fov_deg: float = 90.0, world_seed: int | None = None, render_mode: str | None = None,
                 render_size: int = 256, start_jitter_m: float = 0.0, start_jitter_deg: float = 0.0) -> None:
        _check_args(image_size, grid, renderer, step_m, max_distance_m, body_radius_m, climb_gain, render_mode,
                    start_jitter_m, start_jitter_deg)
        self.user_world = None if str(world) == "generated" else Path(world).expanduser()
        if self.user_world is not None:
            if start is None:
                raise ValueError("a world file needs a start pose: start=(x, y, z, yaw_deg)")
            if not self.user_world.is_file():
                raise FileNotFoundError(f"world file {self.user_world} does not exist")
        elif split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        if start is not None:
            start = tuple(float(x) for x in start)  # type: ignore[assignment]
            if len(start) != 4 or not all(math.isfinite(x) for x in start):
                raise ValueError(f"start must be four finite numbers (x, y, z, yaw_deg), got {start!r}")
        self.split = split if self.user_world is None else "user"
        self.start = start
        self.image_size, self.k = int(image_size), int(grid)
        self.step_m, self.max_distance_m, self.radius = float(step_m), float(max_distance_m), float(body_radius_m)
        self.climb_gain, self.renderer = float(climb_gain), renderer
        self.world_config = world_config or WorldConfig()
        self.fov_deg, self.world_seed = fov_deg, world_seed
        self.render_mode, self.render_size = render_mode, render_size
        self.start_jitter = (float(start_jitter_m), float(start_jitter_deg))
        self.observation_space = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(self.k * self.k)
        self.straight_action = (self.k // 2) * self.k + self.k // 2
        self._p: Any = None
        self._client = -1
        self._texture_ids: dict[tuple[str, int], int] = {}
        self.world: World | None = None
        self.state: FlightState | None = None
        self.depth: np.ndarray | None = None
        self._yaw_off = self._pitch_off = np.zeros(self.k * self.k)
        if self.user_world is not None:  # load it now: a bad file or start fails before any long run
            self._connect()
            self._load()

    # ------------------------------------------------------------------------------------- set-up

    def _connect(self) -> None:
        if self._p is not None:
            return
        import pybullet
        import pybullet_data
        from pybullet_utils import bullet_client

        client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self._p, self._client = client, client._client
        if self.renderer == "egl":
            import pkgutil

            egl = pkgutil.get_loader("eglRenderer")
            plugin = client.loadPlugin(egl.get_filename(), "_eglRendererPlugin") if egl else -1
            if plugin < 0:
                raise RuntimeError("renderer 'egl': pybullet's EGL plugin did not load (it needs a GPU with EGL "
                                   "drivers); use renderer='tiny'")

    def _load(self, world_seed: int | None = None) -> None:
        p = self._p
        # Remove the previous world's bodies (textures stay loaded and are reused).
        for body in range(p.getNumBodies() - 1, -1, -1):
            p.removeBody(p.getBodyUniqueId(body))
        if self.user_world is not None:
            self.world = load_user_world(p, self._client, self.user_world, self.start,  # type: ignore[arg-type]
                                         fov_deg=self.fov_deg)
        else:
            self.world = build_world(p, self._client, int(world_seed), self.split,  # type: ignore[arg-type]
                                     self.world_config, self._texture_ids, self.radius)
            if self.start is not None:
                self.world.start = self.start  # type: ignore[assignment]
        self._yaw_off, self._pitch_off = grid_angles(self.k, self.world.camera.fov_deg)
        if self.user_world is not None or self.start is not None:
            self._check_start(self.world.start)

    def _check_start(self, start: tuple[float, float, float, float]) -> None:
        """Refuse a start pose inside geometry or closer to it than the body radius."""
        p = self._p
        probe = p.createMultiBody(0, p.createCollisionShape(p.GEOM_SPHERE, radius=self.radius), -1,
                                  basePosition=start[:3])
        try:
            for body in self.world.kinds:  # type: ignore[union-attr]
                hits = p.getClosestPoints(probe, body, 0.0)
                if hits:
                    raise ValueError(f"start pose {tuple(start)} is inside geometry or within the body radius "
                                     f"({self.radius} m) of it: {self.world.kinds[body]} body {body} "  # type: ignore
                                     f"at {hits[0][8]:+.2f} m; pick a point in free space")
        finally:
            p.removeBody(probe)
        # Inside a closed mesh no surface is near the sphere, but every direction hits the inside at once.
        state = FlightState(tuple(start[:3]), start[3], 0.0, 0)  # type: ignore[arg-type]
        if all(self.advance(state, a)[1] is not None for a in range(self.k * self.k)):
            raise ValueError(f"start pose {tuple(start)} is inside geometry or boxed in: every action collides "
                             f"within the first {self.step_m} m step; pick a point in free space")

    # ------------------------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._connect()
        options = options or {}
        if self.user_world is None:
            lo, hi = SPLITS[self.split][0]
            world_seed = options.get("world_seed", self.world_seed)
            if world_seed is None:
                world_seed = int(self.np_random.integers(lo, hi))
            self._load(int(world_seed))
        elif self.world is None:
            self._load()
        x, y, z, yaw = self._jittered(self.world.start)  # type: ignore[union-attr]
        self.state = FlightState((x, y, z), yaw, 0.0, 0)
        obs = self._render_obs()
        return obs, self._info(None)

    def _jittered(self, start: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """The start pose moved by up to the configured jitter (flights from one user start then differ);
        a moved position that is not clear of geometry falls back to the given one."""
        dist, deg = self.start_jitter
        if dist == 0 and deg == 0:
            return start
        x, y, z, yaw = start
        yaw += float(self.np_random.uniform(-deg, deg))
        if dist > 0:
            for _ in range(10):
                off = self.np_random.uniform(-dist, dist, size=3) * np.array([1.0, 1.0, 0.5])
                moved = (x + off[0], y + off[1], z + off[2], yaw)
                try:
                    self._check_start(moved)
                except ValueError:
                    continue
                return moved
        return (x, y, z, yaw)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = self.check_action(action)
        new, hit, left = self.advance(self.state, a)
        self.state = new
        obs = self._render_obs()
        terminated = hit is not None
        truncated = not terminated and (left or new.distance_m >= self.max_distance_m - 1e-9)
        reward = 0.0 if terminated else self.step_m
        info = self._info(hit)
        info["left_world"] = left
        return obs, reward, terminated, truncated, info

    def check_action(self, action: Any) -> int:
        """The action as an int; ValueError naming the problem for NaN, non-integers or out-of-range values."""
        arr = np.asarray(action)
        if arr.size != 1:
            raise ValueError(f"action must be one integer in 0..{self.k * self.k - 1}, got shape {arr.shape}")
        value = arr.reshape(()).item()
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise ValueError(f"action must be an integer in 0..{self.k * self.k - 1}, got {value!r}")
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.k * self.k:
            raise ValueError(f"action {value!r} is outside the action space 0..{self.k * self.k - 1} "
                             f"({self.k} x {self.k} grid)")
        return value

    def render(self) -> np.ndarray | None:
        """A larger view from the same camera (``render_mode="rgb_array"``) for videos."""
        if self.render_mode != "rgb_array" or self.state is None:
            return None
        rgb, _ = self._camera(self.state, self.render_size)
        return rgb

    def close(self) -> None:
        if self._p is not None:
            try:
                self._p.disconnect()
            finally:
                self._p._client = -1  # BulletClient.__del__ would disconnect again (and fail at interpreter exit)
                self._p = None
        self.world = None

    def __del__(self) -> None:
        # At interpreter exit pybullet may be half torn down already: nothing useful to report then.
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------------------- branching API

    def snapshot(self) -> FlightState:
        if self.state is None:
            raise RuntimeError("call reset() before snapshot()")
        return self.state

    def restore(self, state: FlightState) -> np.ndarray:
        """Continue the episode from `state` (from `snapshot` or `advance`); returns its observation."""
        self.state = state
        return self._render_obs()

    def observe(self, state: FlightState) -> np.ndarray:
        """The camera image at `state` without changing the episode."""
        rgb, depth = self._camera(state, self.image_size)
        self.depth = depth
        return rgb

    def advance(self, state: FlightState, action: int) -> tuple[FlightState, str | None, bool]:
        """(next state, collision kind or None, left the world) of `action` from `state`; renders nothing."""
        yaw = state.yaw_deg + float(self._yaw_off[action])
        climb = self.step_m * math.tan(math.radians(float(self._pitch_off[action]))) * self.climb_gain
        r = math.radians(yaw)
        p0 = np.asarray(state.pos)
        move = np.array([math.cos(r) * self.step_m, math.sin(r) * self.step_m, climb])
        p1 = p0 + move
        hit = self._sweep(p0, p1)
        new = FlightState(tuple(float(v) for v in p1), yaw % 360.0,  # type: ignore[arg-type]
                          state.distance_m + (0.0 if hit else float(np.linalg.norm(move))), state.steps + 1)
        lo, hi = self.world.bounds  # type: ignore[union-attr]
        left = bool(np.any(p1 < lo) or np.any(p1 > hi))
        return new, hit, left and hit is None

    def ray_distance(self, state: FlightState, yaw_offset_deg: float = 0.0, max_m: float = 10.0) -> float:
        """Free distance (m) from `state` along its heading turned by `yaw_offset_deg`, level, for a body of the
        configured radius (three parallel rays: centre and either side); `max_m` when nothing is hit."""
        r = math.radians(state.yaw_deg + yaw_offset_deg)
        u = np.array([math.cos(r), math.sin(r), 0.0])
        side = np.array([-u[1], u[0], 0.0]) * self.radius
        p0 = np.asarray(state.pos)
        starts = [p0, p0 + side, p0 - side]
        results = self._p.rayTestBatch(starts, [s + u * max_m for s in starts])
        return float(min(res[2] for res in results) * max_m)

    def _sweep(self, p0: np.ndarray, p1: np.ndarray) -> str | None:
        """What the body (a sphere of the body radius) hits flying from p0 to p1, or None."""
        d = p1 - p0
        length = float(np.linalg.norm(d))
        u = d / length
        side = np.array([-u[1], u[0], 0.0])
        side /= max(np.linalg.norm(side), 1e-9)
        up = np.cross(side, u)
        r = self.radius
        starts, ends = [], []
        for off in (np.zeros(3), side * r, -side * r, up * r, -up * r):
            starts.append(p0 + off)
            ends.append(p1 + off + u * r)
        for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):  # around the end point
            direction = np.array([math.cos(ang), math.sin(ang), 0.0])
            starts.append(p1)
            ends.append(p1 + direction * r)
        starts += [p1, p1]
        ends += [p1 + np.array([0, 0, r]), p1 - np.array([0, 0, r])]
        results = self._p.rayTestBatch(starts, ends)
        best, kind = 2.0, None
        for res in results:
            body, frac = res[0], res[2]
            if body >= 0 and frac < best:
                best, kind = frac, self.world.kinds.get(body, "world")  # type: ignore[union-attr]
        return kind

    # ------------------------------------------------------------------------------------- camera

    def camera_matrices(self, state: FlightState) -> tuple[list, list]:
        """(view, projection) matrices of the body's camera at `state`, as pybullet's getCameraImage takes them."""
        p, cam = self._p, self.world.camera  # type: ignore[union-attr]
        yaw, pitch = math.radians(state.yaw_deg), math.radians(cam.pitch_deg)
        eye = np.asarray(state.pos)
        fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
        view = p.computeViewMatrix(eye.tolist(), (eye + fwd).tolist(), [0, 0, 1])
        return view, p.computeProjectionMatrixFOV(cam.fov_deg, 1.0, NEAR_M, FAR_M)

    def _camera(self, state: FlightState, size: int) -> tuple[np.ndarray, np.ndarray]:
        p, w = self._p, self.world
        view, proj = self.camera_matrices(state)
        light = w.lighting  # type: ignore[union-attr]
        renderer = p.ER_TINY_RENDERER if self.renderer == "tiny" else p.ER_BULLET_HARDWARE_OPENGL
        _, _, rgba, zbuf, _ = p.getCameraImage(
            size, size, view, proj, lightDirection=light.direction, lightColor=light.colour,
            lightAmbientCoeff=light.ambient, lightDiffuseCoeff=light.diffuse, lightSpecularCoeff=light.specular,
            shadow=0, renderer=renderer, flags=p.ER_NO_SEGMENTATION_MASK)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3]
        z = np.asarray(zbuf, dtype=np.float32).reshape(size, size)
        depth = FAR_M * NEAR_M / (FAR_M - (FAR_M - NEAR_M) * z)
        return np.ascontiguousarray(rgb), depth

    def _render_obs(self) -> np.ndarray:
        return self.observe(self.state)  # type: ignore[arg-type]

    def _info(self, hit: str | None) -> dict:
        s = self.state
        w = self.world
        return {"distance_m": s.distance_m, "steps": s.steps, "collision": hit, "pos": s.pos,  # type: ignore
                "yaw_deg": s.yaw_deg, "world_seed": w.seed, "split": w.split,  # type: ignore[union-attr]
                "fov_deg": w.camera.fov_deg}  # type: ignore[union-attr]
