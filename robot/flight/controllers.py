"""Controllers for `IndoorFlightEnv`: the learned policy and the baselines it is compared with.

A controller is ``controller(env, obs) -> (action, value map or None)``; `env` is the unwrapped
`sim.flight.IndoorFlightEnv` (baselines may read privileged state through it; the learned policy reads
only `obs`).

- ``straight``: always the centre cell.
- ``random``: a uniformly random cell (seeded).
- ``depth``: privileged heuristic on the depth buffer: straight while the centre is clear for 1.5 m, else
  a turn to the side (middle row) with the most open view.
- ``depth_farthest``: the naive privileged heuristic: the cell whose nearest obstacle is farthest.
- ``oracle``: simulator lookahead (the ceiling): tries first moves from straight outwards, each followed
  by every second move and then straight flight to `horizon` steps, and takes the first first move
  with a branch that survives the whole horizon (else the one that survives longest). Ray tests only,
  nothing rendered.
- `policy_controller`: the value network's map through `choose_action`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robot.flight.model import centre_order, choose_action

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


def depth_heuristic(env: Any, obs: np.ndarray, safe_m: float = 1.5, quantile: float = 0.25) -> tuple[int, np.ndarray]:
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


def oracle_controller(horizon: int = 16) -> Controller:
    def act(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
        root = env.snapshot()
        order = centre_order(env.k)
        scores = np.zeros(env.k * env.k)
        for a1 in order:
            first, hit, _ = env.advance(root, int(a1))
            if hit is not None:
                continue
            best = 0
            for a2 in order:
                best = max(best, 1 + survive_steps(env, first, [int(a2)], horizon - 1))
                if best >= horizon:
                    break
            scores[a1] = best / horizon
            if best >= horizon:
                return int(a1), scores
        return int(np.argmax(scores)), scores

    return act


def policy_controller(net: Any, tie_tol: float = 0.02) -> Controller:
    def act(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
        values = net.values(obs[None])[0]
        return choose_action(values, env.k, tie_tol), values

    return act


def baseline(name: str, seed: int = 0, horizon: int = 16) -> Controller:
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
