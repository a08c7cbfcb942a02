"""CAD2RL's Monte Carlo policy evaluation: fly, branch every action from visited states, label, regress.

One iteration:

1. **Fly** the current policy (epsilon-greedy; the first iteration flies straight with random turns) in
   freshly generated training worlds; every `stride` steps the state is a root.
2. **Label** each root: every action is a branch that takes that action, then follows the current
   policy (the first iteration: flies straight) for the rest of the `horizon`; a branch ends at its
   collision. The label of an action is the fraction of the horizon it survived. Branches of all roots
   of an episode advance in lockstep, so each step renders every live branch once and runs the network
   once on the whole batch.
3. **Fit** the value network on every label so far (images mirrored left-right with their label maps:
   free data, as corridors have no handedness).

Following the current policy after the first branch step, instead of flying straight, is what makes the
labels see turns coming: "turn, then fly straight" labels are myopic.

`mc.follow: heuristic` swaps the follow-up policy for a privileged teacher: after its first step a branch
flies the depth heuristic's rule on ray tests (`controllers.ray_heuristic`), so a label is the value of an
action under the teacher, at states the learner's own flights visit (AggreVaTe, Ross and Bagnell 2014).
The simulator is privileged in training only, as in CAD2RL's labels; the policy still reads the image
alone. Ray tests render nothing, so these labels cost a fraction of the policy-following ones.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot.flight.controllers import ray_heuristic
from robot.flight.model import (
    DEPTH_SIDE,
    AnyValueNet,
    ValueNet,
    choice_targets,
    choose_action,
    coarse_depth,
    mirror_actions,
    stack_frames,
)


@dataclass
class Batch:
    obs: np.ndarray
    """(N, H, W, 3 * frames) uint8 root images (with 2 frames, the previous image and the root's, stacked)."""
    labels: np.ndarray
    """(N, K*K) float32 fraction of the horizon each action survived."""
    depth: np.ndarray | None = None
    """(N, DEPTH_SIDE, DEPTH_SIDE) float32 coarse log-depth of each root image (`coarse_depth`), the
    auxiliary target; None for labels collected before it was kept."""

    @staticmethod
    def empty(image_size: int, n_actions: int, frames: int = 1) -> Batch:
        return Batch(np.zeros((0, image_size, image_size, 3 * frames), np.uint8), np.zeros((0, n_actions), np.float32),
                     np.zeros((0, DEPTH_SIDE, DEPTH_SIDE), np.float32))

    def __len__(self) -> int:
        return len(self.obs)

    def tensors(self) -> dict[str, Any]:
        """The arrays as torch tensors, for a checkpoint."""
        import torch

        out = {"obs": torch.from_numpy(self.obs), "labels": torch.from_numpy(self.labels)}
        if self.depth is not None:
            out["depth"] = torch.from_numpy(self.depth)
        return out

    @staticmethod
    def from_tensors(tensors: dict[str, Any]) -> Batch:
        """The inverse of `tensors` (a checkpoint written before depth maps were kept has none)."""
        depth = tensors.get("depth")
        return Batch(tensors["obs"].numpy(), tensors["labels"].numpy(), None if depth is None else depth.numpy())

    def extend(self, other: Batch) -> Batch:
        if not len(self) or not len(other):
            depth = other.depth if not len(self) else self.depth
        elif (self.depth is None) != (other.depth is None):
            raise ValueError("cannot join labels with depth maps and labels without them")
        else:
            depth = None if self.depth is None else np.concatenate([self.depth, other.depth])
        return Batch(np.concatenate([self.obs, other.obs]), np.concatenate([self.labels, other.labels]), depth)


def follow_policy(net: AnyValueNet | None, k: int, tie_tol: float) -> Callable[[Any, list], list[int]] | None:
    """The batched follow-up policy of branches: None flies straight (nothing rendered)."""
    if net is None:
        return None

    def act(env: Any, states: list) -> list[int]:
        images = np.stack([env.observe(s) for s in states])
        values = net.values(images)
        return [choose_action(v, k, tie_tol) for v in values]

    return act


def follow_heuristic(safe_m: float = 2.0) -> Callable[[Any, list], list[int]]:
    """The batched follow-up of `mc.follow: heuristic`: the privileged ray-test rule for every branch."""

    def act(env: Any, states: list) -> list[int]:
        return [ray_heuristic(env, s, safe_m) for s in states]

    return act


def label_roots(env: Any, roots: list, horizon: int, follow: Callable[[Any, list], list[int]] | None,
                margin_m: float = 0.0, margin_mix: float = 0.5) -> np.ndarray:
    """(len(roots), K*K) Monte Carlo labels of every action at every root (all in `env`'s current world).

    `margin_m` > 0 blends in a cautious label: the same branches flown by a body `margin_m` wider (every
    collision test and every ray of the follow-up), weighted `margin_mix`. A move that passes a wall with a
    hand's breadth to spare then scores below one that keeps its distance, so a learned policy, whose
    values are never exact, turns before the last possible step. The plain label keeps the ranking at roots
    already within the margin of something, where every cautious branch fails at once."""
    plain = _label_roots(env, roots, horizon, follow)
    if margin_m <= 0 or margin_mix <= 0:
        return plain
    radius = env.radius
    env.radius = radius + margin_m
    try:
        cautious = _label_roots(env, roots, horizon, follow)
    finally:
        env.radius = radius
    return ((1.0 - margin_mix) * plain + margin_mix * cautious).astype(np.float32)


def _label_roots(env: Any, roots: list, horizon: int, follow: Callable[[Any, list], list[int]] | None) -> np.ndarray:
    n_actions = env.k * env.k
    labels = np.zeros((len(roots), n_actions), np.float32)
    live: list[tuple[int, int, Any]] = []  # (root index, action, state)
    for i, root in enumerate(roots):
        for a in range(n_actions):
            state, hit, left = env.advance(root, a)
            if hit is not None:
                continue
            labels[i, a] = 1.0
            if not left:
                live.append((i, a, state))
    for _ in range(1, horizon):
        if not live:
            break
        actions = ([env.straight_action] * len(live) if follow is None
                   else follow(env, [s for _, _, s in live]))
        still = []
        for (i, a, state), act in zip(live, actions, strict=True):
            nxt, hit, left = env.advance(state, act)
            if hit is not None:
                continue
            labels[i, a] += 1.0
            if not left:
                still.append((i, a, nxt))
            else:  # left the world's box without a collision: counts as surviving the rest
                labels[i, a] = horizon
        live = still
    return np.minimum(labels / horizon, 1.0)


def collect(env: Any, net: AnyValueNet | None, n_roots: int, rng: np.random.Generator, *, horizon: int, stride: int,
            epsilon: float, tie_tol: float, follow: Callable[[Any, list], list[int]] | None, max_steps: int = 400,
            progress: Callable[[int], None] | None = None, margin_m: float = 0.0,
            margin_mix: float = 0.5, frames: int = 1, near_end: int = 0) -> tuple[Batch, dict[str, float]]:
    """Fly episodes in new training worlds until `n_roots` labelled roots; (batch, stats).

    `net` steers the flights (None: straight, with random turns at rate `epsilon`); `follow` is the batched
    policy the branches follow after their first step (`follow_policy`, `follow_heuristic`; None: straight);
    `margin_m` and `margin_mix` as in `label_roots`. `frames=2` keeps each root's previous camera image with
    it (`stack_frames`), for a two-frame network; branches must then not follow a policy that reads images.
    `near_end` > 0 also makes every state of the last `near_end` steps before a collision a root (besides
    every `stride`-th), so the labels dwell where a move decided the flight (`collect/dense_roots` counts them).
    """
    obs_list, label_list, depth_list = [], [], []
    flown, episodes, t0, have, dense = [], 0, time.time(), 0, 0
    n_actions = env.k * env.k
    while have < n_roots:
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        roots, images, depths, previous = [], [], [], None
        recent: deque = deque(maxlen=near_end)  # (state, image, depth buffer) of the last near_end steps' non-roots
        for t in range(max_steps):
            seen = stack_frames(previous, obs, frames)
            if t % stride == 0:
                roots.append(env.snapshot())
                images.append(seen)
                depths.append(coarse_depth(env.depth))
            if near_end:
                recent.append(None if t % stride == 0 else (env.snapshot(), seen, env.depth))
            if rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            elif net is None:
                action = env.straight_action
            else:
                action = choose_action(net.values(seen[None])[0], env.k, tie_tol)
            previous = obs
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        flown.append(info["distance_m"])
        episodes += 1
        strided = len(roots)
        if near_end and info.get("collision") is not None:
            # Every state of the last near_end steps before a collision is a root: where a move decides
            # whether the flight goes on (the strided roots among them are in already).
            for state, image, depth in (entry for entry in recent if entry is not None):
                roots.append(state)
                images.append(image)
                depths.append(coarse_depth(depth))
        roots, images, depths = roots[:n_roots - have], images[:n_roots - have], depths[:n_roots - have]
        dense += max(0, len(roots) - strided)
        have += len(roots)
        label_list.append(label_roots(env, roots, horizon, follow, margin_m, margin_mix))
        obs_list.append(np.stack(images))
        depth_list.append(np.stack(depths))
        if progress is not None:
            progress(len(roots))
    batch = Batch(np.concatenate(obs_list), np.concatenate(label_list), np.concatenate(depth_list))
    stats = {"collect/episodes": episodes, "collect/flight_m": float(np.mean(flown)),
             "collect/label_mean": float(batch.labels.mean()),
             "collect/label_ties": float(np.mean((batch.labels >= batch.labels.max(1, keepdims=True) - 1e-6).sum(1))),
             "collect/seconds": time.time() - t0}
    if near_end:
        stats["collect/dense_roots"] = dense
    return batch, stats


def photometric(images: Any, generator: Any, strength: float) -> Any:
    """Random photometric changes of a (B, H, W, 3 * frames) image batch (a float tensor in [0, 255] back): per
    image a brightness gain and offset, a contrast change about its mean, a random permutation of the colour
    channels and, at rate strength/2, grey, the same for every frame of a stacked image. Geometry is untouched,
    so the label map stays valid. `strength` in (0, 1] scales the ranges (1: gain 0.5-1.5, offset +-40,
    contrast 0.5-1.5)."""
    import torch

    x = images.float()
    b, h, w, c = x.shape
    if c > 3:  # stacked frames: one (H, W*frames, 3) image each, so every frame gets the same change
        x = x.view(b, h, w, c // 3, 3).reshape(b, h, w * (c // 3), 3)
        return photometric(x, generator, strength).view(b, h, w, c // 3, 3).reshape(b, h, w, c)

    def uniform(lo: float, hi: float) -> Any:
        return lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=generator)

    s = strength
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(1 - 0.5 * s, 1 + 0.5 * s) + mean
    x = x * uniform(1 - 0.5 * s, 1 + 0.5 * s) + uniform(-40 * s, 40 * s)
    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(b)])
    x = torch.gather(x, 3, perm[:, None, None, :].expand_as(x))
    grey = torch.rand(b, generator=generator) < s / 2
    x[grey] = x[grey].mean(dim=3, keepdim=True).expand(-1, -1, -1, 3)
    return x.clamp(0, 255)


def fit(net: ValueNet, optimizer: Any, data: Batch, rng: np.random.Generator, *, epochs: int, batch_size: int,
        mirror: bool = True, augment: float = 0.0, aux_weight: float = 0.0, choice_weight: float = 0.0,
        tie_tol: float = 0.02) -> dict[str, float]:
    """Regress `net` on `data` (binary cross-entropy against the soft labels); the mean loss of the last epoch.
    `augment` > 0 applies `photometric` changes of that strength to every training batch. `aux_weight` > 0
    adds that multiple of the mean squared error of the depth head against the coarse log-depth maps (the
    network needs `aux_depth`, the data its depth maps). `choice_weight` > 0 adds that multiple of a
    cross-entropy between the softmax of the value logits and the move the labels choose (`choice_targets`
    with `tie_tol`), meant to put the fitting's effort on the decision rather than on cells every move shares.
    Measured, it hurts (`FitConfig.choice`): where every move is safe the chosen move is straight, and the term
    drives the straight logit above turns that are just as safe, flattening the map's safe/fatal contrast."""
    import torch

    aux = aux_weight > 0
    if aux and (net.depth_head is None or data.depth is None):
        raise ValueError("an auxiliary depth loss needs a ValueNet(aux_depth=True) and labels with depth maps")

    generator = torch.Generator().manual_seed(int(rng.integers(2**31))) if augment > 0 else None

    obs, labels, depth = data.obs, data.labels, data.depth
    if mirror:
        flip = mirror_actions(net.k)
        obs = np.concatenate([obs, obs[:, :, ::-1]])
        labels = np.concatenate([labels, labels[:, flip]])
        depth = None if depth is None else np.concatenate([depth, depth[:, :, ::-1]])
    choices = choice_targets(labels, net.k, tie_tol) if choice_weight > 0 else None
    n = len(obs)
    net.train()
    last, last_depth, last_choice = float("nan"), float("nan"), float("nan")
    for _ in range(epochs):
        order = rng.permutation(n)
        total, total_depth, total_choice, count = 0.0, 0.0, 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(obs[idx]))
            if augment > 0:
                x = photometric(x, generator, augment)
            y = torch.from_numpy(labels[idx])
            logits, depth_pred = net.forward_all(x) if aux else (net(x), None)
            loss = value_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            if aux:
                target = torch.from_numpy(np.ascontiguousarray(depth[idx]))
                depth_loss = torch.nn.functional.mse_loss(depth_pred, target)
                loss = value_loss + aux_weight * depth_loss
                total_depth += depth_loss.item() * len(idx)
            if choices is not None:
                target = torch.from_numpy(choices[idx])
                choice_loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
                loss = loss + choice_weight * choice_loss
                total_choice += choice_loss.item() * len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += value_loss.item() * len(idx)
            count += len(idx)
        last, last_depth, last_choice = (total / max(count, 1), total_depth / max(count, 1),
                                         total_choice / max(count, 1))
    net.eval()
    stats = {"fit/loss": last, "fit/samples": n}
    if aux:
        stats["fit/depth_loss"] = last_depth
    if choices is not None:
        stats["fit/choice_loss"] = last_choice
    return stats


# ------------------------------------------------------------------------------------------ flying


@dataclass
class Flight:
    distance_m: float
    collision: str | None
    """What ended it (None: the distance cap or the world's edge)."""
    world_seed: int | None
    xy: np.ndarray
    frames: list[np.ndarray] | None = None
    actions: list[int] | None = None
    values: list[np.ndarray | None] | None = None


def fly(env: Any, controller: Any, seed: int, max_steps: int | None = None, record: bool = False) -> Flight:
    """One flight of `controller` (see `robot.flight.controllers`) from ``env.reset(seed=seed)``."""
    obs, info = env.reset(seed=seed)
    steps = max_steps or int(math.ceil(env.max_distance_m / env.step_m)) + 1
    xy = [info["pos"][:2]]
    frames, actions, values = ([obs], [], []) if record else (None, None, None)
    hit = None
    for _ in range(steps):
        action, v = controller(env, obs)
        obs, _, terminated, truncated, info = env.step(action)
        xy.append(info["pos"][:2])
        if record:
            actions.append(action)  # type: ignore[union-attr]
            values.append(v)  # type: ignore[union-attr]
            frames.append(obs)  # type: ignore[union-attr]
        if terminated or truncated:
            hit = info["collision"]
            break
    return Flight(info["distance_m"], hit, info["world_seed"], np.asarray(xy), frames, actions, values)


def new_ground_m(xy: np.ndarray, cell_m: float = 0.5) -> float:
    """Ground a flight covered: distinct `cell_m` squares its positions visited, times `cell_m`. Equal to the
    distance for a flight that never comes back; far less for one that circles in a room (which flies on
    without a collision, so its distance alone would look like success)."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return 0.0
    cells = {tuple(c) for c in np.floor(xy[1:] / cell_m).astype(np.int64)}
    return len(cells) * cell_m


def summarise(flights: list[Flight], success_m: float) -> dict[str, float]:
    """Mean collision-free distance with its standard error, the new ground covered (`new_ground_m`), the
    fraction beyond `success_m`, collisions by kind."""
    d = np.array([f.distance_m for f in flights], dtype=float)
    g = np.array([new_ground_m(f.xy) for f in flights], dtype=float)
    out = {"distance_m": float(d.mean()), "distance_se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0,
           "new_ground_m": float(g.mean()), f"beyond_{success_m:g}m": float(np.mean(d >= success_m)),
           "flights": len(d)}
    kinds: dict[str, int] = {}
    for f in flights:
        key = f.collision or "none"
        kinds[key] = kinds.get(key, 0) + 1
    for key, count in sorted(kinds.items()):
        out[f"collisions/{key}"] = count / len(flights)
    return out
