"""Controllers for `IndoorFlightEnv`: the learned policy and the baselines it is compared with.

A controller is ``controller(env, obs) -> (action, value map or None)``; `env` is the unwrapped
`sim.flight.IndoorFlightEnv` (baselines may read privileged state through it; the learned policy reads
only `obs`).

- ``straight``: always the centre cell.
- ``random``: a uniformly random cell (seeded).
- ``depth``: privileged heuristic on the depth buffer: straight while the centre is clear for 2 m, else
  a turn to the side (middle row) with the most open view.
- ``depth_farthest``: the naive privileged heuristic: the cell whose nearest obstacle is farthest.
- ``oracle``: simulator lookahead (the ceiling): every first move, each followed by the depth heuristic's
  rule on ray tests for `horizon` steps; the move that flies longest, ties towards straight. Ray tests
  only, nothing rendered.
- `policy_controller`: the value network's map through `choose_action`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robot.flight.model import centre_order, choose_action, mirror_actions, stack_frames

Controller = Callable[[Any, np.ndarray], tuple[int, np.ndarray | None]]
BASELINES = ("straight", "random", "depth", "depth_farthest", "oracle")


def straight(env: Any, obs: np.ndarray) -> tuple[int, None]:
    return env.straight_action, None


def random_controller(seed: int) -> Controller:
    rng = np.random.default_rng(seed)

    def act(env: Any, obs: np.ndarray) -> tuple[int, None]:
        return int(rng.integers(env.k * env.k)), None

    return act


def cell_clearance(depth: np.ndarray, k: int, quantile: float = 0.05) -> np.ndarray:
    """(k*k,) low quantile of the metric depth in each cell of a K x K grid over the depth image."""
    h, w = depth.shape
    out = np.empty(k * k)
    for r in range(k):
        for c in range(k):
            cell = depth[r * h // k:(r + 1) * h // k, c * w // k:(c + 1) * w // k]
            out[r * k + c] = np.quantile(cell, quantile)
    return out


def depth_heuristic(env: Any, obs: np.ndarray, safe_m: float = 2.0, quantile: float = 0.25) -> tuple[int, np.ndarray]:
    """Fly straight while the nearest point in the centre cell of the depth buffer is farther than `safe_m`;
    otherwise turn to the side cell of the middle row with the most open view (its `quantile` depth).
    Tuned on validation worlds (safe_m 1.0-3.0, quantile 0.25/0.5; docs/results.md); `depth_farthest`, the
    naive version, turns too late and flies barely farther than straight."""
    if env.depth is None:
        raise RuntimeError("the depth heuristic needs a rendered frame (call reset first)")
    k = env.k
    near = cell_clearance(env.depth, k, 0.02)
    clear = cell_clearance(env.depth, k, quantile)
    shown = clear / max(float(clear.max()), 1e-9)
    if near[env.straight_action] > safe_m:
        return env.straight_action, shown
    row = (k // 2) * k
    sides = [row + c for c in range(k) if row + c != env.straight_action] or [env.straight_action]
    best = max(clear[a] for a in sides)
    for a in centre_order(k):
        if a in sides and clear[a] >= best - 1e-6:
            return int(a), shown
    return int(sides[0]), shown


def depth_farthest(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
    """The naive privileged heuristic: the cell whose nearest point in the depth buffer is farthest, ties
    (within 10%) towards straight. It turns only once something is nearer ahead than beside, which in a
    corridor is too late."""
    if env.depth is None:
        raise RuntimeError("the depth heuristic needs a rendered frame (call reset first)")
    clear = cell_clearance(env.depth, env.k)
    best = clear.max()
    for a in centre_order(env.k):
        if clear[a] >= 0.9 * best:
            return int(a), clear / max(best, 1e-9)
    return int(clear.argmax()), clear / max(best, 1e-9)


def survive_steps(env: Any, state: Any, actions: list[int], horizon: int) -> int:
    """Steps flown without collision following `actions`, then straight, up to `horizon` (ray tests only)."""
    for t in range(horizon):
        a = actions[t] if t < len(actions) else env.straight_action
        state, hit, left = env.advance(state, a)
        if hit is not None:
            return t
        if left:
            return horizon
    return horizon


def ray_heuristic(env: Any, state: Any, safe_m: float = 2.0) -> int:
    """The depth heuristic's rule on ray tests instead of a rendered depth buffer (so a lookahead can run it
    cheaply): straight while the body has `safe_m` free ahead, else the middle-row side cell whose direction
    is freer."""
    if env.ray_distance(state, 0.0) > safe_m:
        return env.straight_action
    row = (env.k // 2) * env.k
    sides = [row + c for c in range(env.k) if row + c != env.straight_action] or [env.straight_action]
    return int(max(sides, key=lambda a: (env.ray_distance(state, float(env._yaw_off[a])), -abs(a - row - env.k // 2))))


def rollout_steps(env: Any, state: Any, steps: int, safe_m: float) -> int:
    """Steps `ray_heuristic` flies from `state` without collision, up to `steps`."""
    for t in range(steps):
        state, hit, left = env.advance(state, ray_heuristic(env, state, safe_m))
        if hit is not None:
            return t
        if left:
            return steps
    return steps


def oracle_controller(horizon: int = 30, safe_m: float = 2.0, follow: str = "heuristic") -> Controller:
    """Simulator lookahead: every first move, then the privileged ray heuristic for the rest of `horizon`
    steps; the move that survives longest, ties towards straight (a one-step policy improvement over the
    heuristic, with the simulator as the model). `follow="straight"` flies straight after the first move
    instead: a controller acting on exact first-round Monte Carlo labels (`python -m
    robot.flight.label_ceiling` compares the two)."""
    if follow not in ("heuristic", "straight"):
        raise ValueError(f"oracle follow-up must be 'heuristic' or 'straight', got {follow!r}")

    def act(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
        root = env.snapshot()
        scores = np.zeros(env.k * env.k)
        for a1 in centre_order(env.k):
            first, hit, left = env.advance(root, int(a1))
            if hit is not None:
                continue
            if left:
                scores[a1] = 1.0
            elif follow == "straight":
                scores[a1] = (1 + survive_steps(env, first, [], horizon - 1)) / horizon
            else:
                scores[a1] = (1 + rollout_steps(env, first, horizon - 1, safe_m)) / horizon
            if a1 == env.straight_action and scores[a1] >= 1.0:
                return int(a1), scores
        best = scores.max()
        return next(int(a) for a in centre_order(env.k) if scores[a] >= best), scores

    return act


def policy_controller(net: Any, tie_tol: float = 0.02, mirror: bool = False) -> Controller:
    """The value network's map through `choose_action`. `mirror` averages the map with the mirrored map of the
    left-right flipped image (test-time augmentation; the network trains on mirrored images too). A two-frame
    network gets the previous camera image with the current one (`stack_frames`); the controller keeps it,
    and forgets it when a flight starts (the environment's step count is 0)."""
    flip = mirror_actions(net.k)
    frames = getattr(net, "frames", 1)
    last: list[np.ndarray | None] = [None]

    def act(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
        if frames > 1:
            previous = None if env.state is None or env.state.steps == 0 else last[0]
            last[0] = obs
            obs = stack_frames(previous, obs, frames)
        if mirror:
            both = net.values(np.stack([obs, obs[:, ::-1]]))
            values = 0.5 * (both[0] + both[1][flip])
        else:
            values = net.values(obs[None])[0]
        return choose_action(values, env.k, tie_tol), values

    return act


def baseline(name: str, seed: int = 0, horizon: int = 30) -> Controller:
    """A baseline controller by name (see the module docstring); ValueError for an unknown one."""
    if name == "straight":
        return straight
    if name == "random":
        return random_controller(seed)
    if name == "depth":
        return depth_heuristic
    if name == "depth_farthest":
        return depth_farthest
    if name == "oracle":
        return oracle_controller(horizon)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
