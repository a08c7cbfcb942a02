"""The `flight` track: config schema, CAD2RL training (Monte Carlo value learning), evaluation against
the baselines, and its step of `make demo`.

    rlab train flight --config cad2rl
    rlab eval RUN --worlds heldout --episodes 50                       # unseen generated worlds
    rlab eval RUN --worlds heldout_textures                            # unseen texture families too
    rlab eval RUN --world path/to/building.obj --start 1.0,2.0,1.2,90  # a mesh the user brings
    rlab gallery RUN                                                   # flight videos, value maps, maps
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import choice, require
from shared.tracks import EvalRequest, Track

CONFIGS_DIR = Path(__file__).parent / "configs"
FINAL = "final"
SUMMARY = "summary.json"
MESH_WORLD = "pybullet_data:samurai.urdf"
"""The environment mesh not built by the generator: pybullet_data's samurai monastery."""
MESH_START = (5.0, 5.0, 1.2, 45.0)
"""A free point among its buildings (flying straight from it hits one after about 5.5 m)."""


@dataclass
class TrainConfig:
    seed: int = 0
    """Seeds the network, the flights and the worlds drawn."""


@dataclass
class EnvConfig:
    image_size: int = 64
    """Camera image side (pixels); the network needs a multiple of 16."""
    grid: int = 3
    """K of the K x K action grid over the image (K*K actions; the centre cell flies straight)."""
    step_m: float = 0.5
    """Distance flown per decision."""
    max_distance_m: float = 60.0
    """A flight that gets this far ends (truncated): the cap on every distance reported."""
    body_radius_m: float = 0.2
    climb_gain: float = 0.5
    """Altitude change per step is this times step_m times the tangent of the cell's vertical angle."""
    renderer: str = choice("tiny", "tiny", "egl")
    """tiny: TinyRenderer on the CPU; egl: pybullet's EGL plugin (needs a GPU with EGL)."""
    cells: list[int] = field(default_factory=lambda: [6, 6])
    """Generated worlds: cells along x and y."""
    corridor_m: list[float] = field(default_factory=lambda: [2.2, 3.2])
    """Generated worlds: corridor width (cell side) range."""
    furniture: list[int] = field(default_factory=lambda: [3, 12])
    """Generated worlds: pieces of furniture range."""
    fov_deg: list[float] = field(default_factory=lambda: [70.0, 100.0])
    """Generated worlds: camera field of view range."""

    def __post_init__(self) -> None:
        require(self.image_size % 16 == 0 and 16 <= self.image_size <= 256, "env.image_size",
                "must be a multiple of 16 in 16..256 (the value network halves it four times)")
        require(1 <= self.grid <= 9, "env.grid", "must be in 1..9")
        for key in ("step_m", "max_distance_m", "body_radius_m"):
            require(getattr(self, key) > 0, f"env.{key}", "must be positive")
        for key in ("cells", "corridor_m", "furniture", "fov_deg"):
            value = getattr(self, key)
            require(len(value) == 2 and value[0] <= value[1], f"env.{key}", "must be [low, high] with low <= high")

    def world_config(self) -> Any:
        from sim.indoor import WorldConfig

        return WorldConfig(grid=tuple(self.cells), cell_m=tuple(self.corridor_m),  # type: ignore[arg-type]
                           furniture=tuple(self.furniture), fov_deg=tuple(self.fov_deg))  # type: ignore[arg-type]

    def make(self, split: str = "train", world: str | None = None, start: Any = None, render: bool = False,
             **extra: Any) -> Any:
        from sim.flight import IndoorFlightEnv

        if self.renderer == "egl":
            # Without a GPU, EGL is Mesa's llvmpipe, whose LLVM clashes with the one in triton: a process that
            # loads the plugin first segfaults when torch later imports its compiler stack (an optimizer
            # does). Loaded in the other order, both work.
            import torch._dynamo  # noqa: F401

        return IndoorFlightEnv(world=resolve_world(world) if world else "generated", split=split, start=start,
                               image_size=self.image_size, grid=self.grid, step_m=self.step_m,
                               max_distance_m=self.max_distance_m, body_radius_m=self.body_radius_m,
                               climb_gain=self.climb_gain, renderer=self.renderer, world_config=self.world_config(),
                               render_mode="rgb_array" if render else None, **extra)


@dataclass
class MCConfig:
    iterations: int = 3
    """Monte Carlo iterations after the first (whose branches fly straight after their first step)."""
    roots_first: int = 3000
    """Labelled states of the first round (cheap: its branches render nothing)."""
    roots: int = 800
    """Labelled states per later iteration (each branch renders every step to run the policy)."""
    horizon: int = 10
    """Steps each branch flies; a label is the fraction of them flown without collision."""
    stride: int = 2
    """Every stride-th state of a flight becomes a root."""
    epsilon_first: float = 0.3
    """Random actions in the first round's flights (which otherwise fly straight)."""
    epsilon: float = 0.1
    """Random actions in later flights (which follow the current network)."""
    tie_tol: float = 0.02
    """Values within this of the best count as tied; ties go to the cell nearest straight."""
    follow: str = choice("policy", "policy", "heuristic")
    """What a branch flies after its first step: the current policy (CAD2RL; the first round flies straight),
    or the privileged depth heuristic's rule on ray tests, a teacher whose values the network learns at the
    states its own flights visit (AggreVaTe; cheap: ray tests render nothing)."""
    margin_m: float = 0.0
    """Blend a cautious label into each label: the same branches for a body this much wider (`mc.label_roots`),
    so moves that keep their distance from walls score above moves that scrape past. 0: plain labels."""
    margin_mix: float = 0.5
    """Weight of the cautious label when `margin_m` > 0."""
    near_end: int = 0
    """Also label every state of the last this-many steps before each collision of the collecting flights
    (besides every `stride`-th state): where a move decided the flight. 0: strided states only. Measured (one
    seed, 8 steps with stride 4; docs/results.md): 27.8 m on 200 held-out worlds against 32.3 m without; many
    such states are past saving, every move failing."""

    def __post_init__(self) -> None:
        require(self.iterations >= 0, "mc.iterations", "must be >= 0")
        require(self.roots_first >= 1 and self.roots >= 1, "mc.roots", "must be >= 1")
        require(self.horizon >= 1, "mc.horizon", "must be >= 1")
        require(self.stride >= 1, "mc.stride", "must be >= 1")
        require(0 <= self.epsilon <= 1 and 0 <= self.epsilon_first <= 1, "mc.epsilon", "must be in [0, 1]")
        require(0 <= self.margin_m <= 2, "mc.margin_m", "must be in [0, 2] metres")
        require(0 <= self.margin_mix <= 1, "mc.margin_mix", "must be in [0, 1]")
        require(0 <= self.near_end <= 100, "mc.near_end", "must be in [0, 100] steps")


@dataclass
class FitConfig:
    epochs: int = 6
    """Passes over all labels so far after each round (the network keeps training, it is not reset)."""
    batch_size: int = 128
    lr: float = 1.0e-3
    width: int = 16
    """Channels of the first convolution (then 2x, 2x, 4x)."""
    mirror: bool = True
    """Also train on left-right mirrored images with mirrored label maps."""
    augment: float = 0.0
    """Strength in [0, 1] of random photometric changes (brightness, contrast, channel order, grey) of every
    training batch; 0 trains on the rendered images as they are."""
    aux_depth: float = 0.0
    """Weight of an auxiliary loss: a second head predicts the root image's coarse log-depth map from the
    simulator's depth buffer (privileged in training only; the policy never reads it). 0: no depth head."""
    choice: float = 0.0
    """Weight of a second loss on the value logits: cross-entropy between their softmax and the move the
    labels choose (best value, ties within `mc.tie_tol` to the centre), so fitting spends its effort on the
    states where the choice matters rather than on cells every move shares. 0: values alone. Measured on two
    runs' cautious teacher labels (docs/results.md): weights 0.3 and 1 flew 8-17 m against 24-36 m for values
    alone; where every move is safe the chosen move is straight, and the term flattens the map's safe/fatal
    contrast."""
    members: int = 1
    """Value networks fitted on the same labels, each from its own initialisation and batch order; the policy
    flies the mean of their maps (an ensemble). Fitting costs this many times one network's. Measured with
    cautious teacher labels (3 seeds, 3 members): no gain over one network on held-out worlds (31.00 against
    30.89 m over 200 worlds; docs/results.md): members that share every label share their errors."""
    frames: int = 1
    """Camera images the network reads: 1 (the current one) or 2 (the previous one and the current one,
    stacked). From one image, how near a wall is stays ambiguous under randomised field of view, ceiling
    height and texture scale; between two images 0.5 m apart, how fast it grows (looming) tells the time to
    contact whatever those are. Measured with cautious teacher labels (2 seeds): no gain over one frame
    (docs/results.md). 2 needs `mc.follow: heuristic` (policy-following branches read one image)."""

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "fit.epochs", "must be >= 1")
        require(self.batch_size >= 1, "fit.batch_size", "must be >= 1")
        require(self.lr > 0, "fit.lr", "must be positive")
        require(self.width >= 1, "fit.width", "must be >= 1")
        require(0 <= self.augment <= 1, "fit.augment", "must be in [0, 1]")
        require(self.aux_depth >= 0, "fit.aux_depth", "must be >= 0")
        require(self.choice >= 0, "fit.choice", "must be >= 0")
        require(self.frames in (1, 2), "fit.frames", "must be 1 or 2")
        require(1 <= self.members <= 16, "fit.members", "must be in [1, 16]")


@dataclass
class EvalConfig:
    val_flights: int = 30
    """Flights on validation worlds after each round; the round with the longest mean is the final model
    (judged by distance flown, not label loss: labels tie too often for the loss to rank models)."""
    episodes: int = 50
    """Flights per evaluation (`rlab eval`; --episodes overrides)."""
    worlds: str = choice("heldout", "heldout", "heldout_textures", "val", "train")
    """Generated worlds `rlab eval` flies in by default."""
    success_m: float = 30.0
    """Report the fraction of flights that get at least this far."""
    baselines: list[str] = field(default_factory=lambda: ["straight", "random", "depth", "depth_farthest", "oracle"])
    """Flown on the same worlds in every evaluation."""
    oracle_horizon: int = 30
    """Steps the oracle's lookahead flies after each first move."""
    start_jitter_m: float = 0.3
    """User worlds: each flight starts within this distance of the given start (clear of geometry) ..."""
    start_jitter_deg: float = 30.0
    """... and within this many degrees of its heading, so flights differ."""
    videos: int = 2
    """Flight videos written per evaluation (and at the end of training)."""

    def __post_init__(self) -> None:
        from robot.flight.controllers import BASELINES

        require(self.val_flights >= 1 and self.episodes >= 1, "eval", "flight counts must be >= 1")
        for name in self.baselines:
            require(name in BASELINES, "eval.baselines", f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


@dataclass
class FlightConfig:
    name: str = "cad2rl"
    train: TrainConfig = field(default_factory=TrainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    mc: MCConfig = field(default_factory=MCConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        require(self.fit.frames == 1 or self.mc.follow == "heuristic", "fit.frames",
                "2 frames need mc.follow: heuristic (branches that follow the policy render one image per step)")


def resolve_world(world: str) -> str:
    """A world path, with ``pybullet_data:NAME`` meaning a file shipped in pybullet_data."""
    if world.startswith("pybullet_data:"):
        import pybullet_data

        return str(Path(pybullet_data.getDataPath()) / world.split(":", 1)[1])
    return world


def parse_start(text: str) -> tuple[float, float, float, float]:
    """``"x,y,z,yaw_deg"`` -> a tuple; ValueError naming the problem."""
    try:
        parts = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"--start must be four numbers x,y,z,yaw_deg, got {text!r}") from None
    if len(parts) != 4 or not all(math.isfinite(x) for x in parts):
        raise ValueError(f"--start must be four finite numbers x,y,z,yaw_deg, got {text!r}")
    return parts  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ train


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="state", mininterval=5.0, leave=False)


def train(cfg: FlightConfig, run: Any, resuming: bool) -> None:
    import numpy as np
    import torch

    from robot.flight.controllers import policy_controller, straight
    from robot.flight.mc import Batch, collect, fit, fly, follow_heuristic, follow_policy, summarise
    from robot.flight.model import build_value_net, members_of, net_config
    from shared.tracking.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from shared.tracking.rng import seed_everything

    run_dir = Path(run.path)
    seed_everything(cfg.train.seed)
    net = build_value_net(cfg.fit.members, k=cfg.env.grid, image_size=cfg.env.image_size, width=cfg.fit.width,
                          aux_depth=cfg.fit.aux_depth > 0, frames=cfg.fit.frames)
    optimizers = [torch.optim.Adam(m.parameters(), lr=cfg.fit.lr) for m in members_of(net)]
    rng = np.random.default_rng(cfg.train.seed)
    data = Batch.empty(cfg.env.image_size, cfg.env.grid ** 2, cfg.fit.frames)
    done, history, best = 0, [], {"round": -1, "distance_m": -1.0}
    best_state = None
    found = latest_checkpoint(run.checkpoint_dir) if resuming else None
    if found is not None:
        tensors, objects = load_checkpoint(found[1])
        net.load_state_dict(tensors["model"])
        saved = objects["optimizer"]  # one state dict per member (a dict alone before fit.members existed)
        for optimizer, state in zip(optimizers, saved if isinstance(saved, list) else [saved], strict=True):
            optimizer.load_state_dict(state)
        data = Batch.from_tensors(tensors["data"])
        best_state = tensors.get("best")
        trainer = objects["trainer"]
        rng.bit_generator.state = trainer["rng"]
        done, history, best = trainer["rounds_done"], trainer["history"], trainer["best"]
        run.truncate_metrics(done)
        print(f"resumed after round {done} ({len(data)} labels; {found[1].name})", flush=True)
    env = cfg.env.make("train")
    val_env = cfg.env.make("val")
    val_rng = np.random.default_rng(10_000 + cfg.train.seed)
    val_seeds = [int(s) for s in val_rng.integers(0, 2**31, cfg.eval.val_flights)]
    base_path = run_dir / "val_baselines.json"
    if base_path.exists():
        val_base = json.loads(base_path.read_text())
    else:
        val_base = {"straight": summarise([fly(val_env, straight, s) for s in val_seeds], cfg.eval.success_m)}
        base_path.write_text(json.dumps(val_base, indent=1) + "\n")
    straight_m = val_base["straight"]["distance_m"]
    print(f"validation worlds: straight flight {straight_m:.2f} m over {len(val_seeds)} flights", flush=True)
    rounds = 1 + cfg.mc.iterations
    try:
        for r in range(done, rounds):
            first = r == 0
            n_roots = cfg.mc.roots_first if first else cfg.mc.roots
            if cfg.mc.follow == "heuristic":
                follow, kind = follow_heuristic(), "teacher"
            else:
                follow = None if first else follow_policy(net, cfg.env.grid, cfg.mc.tie_tol)
                kind = "straight" if first else "policy"
            bar = _progress(n_roots, f"round {r} ({kind} branches)")
            batch, stats = collect(env, None if first else net, n_roots, rng, horizon=cfg.mc.horizon,
                                   stride=cfg.mc.stride, epsilon=cfg.mc.epsilon_first if first else cfg.mc.epsilon,
                                   tie_tol=cfg.mc.tie_tol, follow=follow, progress=bar.update,
                                   margin_m=cfg.mc.margin_m, margin_mix=cfg.mc.margin_mix, frames=cfg.fit.frames,
                                   near_end=cfg.mc.near_end)
            bar.close()
            data = data.extend(batch)
            t0 = time.time()
            each = [fit(member, optimizer, data, rng, epochs=cfg.fit.epochs, batch_size=cfg.fit.batch_size,
                        mirror=cfg.fit.mirror, augment=cfg.fit.augment, aux_weight=cfg.fit.aux_depth,
                        choice_weight=cfg.fit.choice, tie_tol=cfg.mc.tie_tol)
                    for member, optimizer in zip(members_of(net), optimizers, strict=True)]
            fit_stats = {key: float(np.mean([e[key] for e in each])) for key in each[0]}
            fit_stats["fit/seconds"] = time.time() - t0
            val = summarise([fly(val_env, policy_controller(net, cfg.mc.tie_tol), s) for s in val_seeds],
                            cfg.eval.success_m)
            row = {**stats, **fit_stats, "val/distance_m": val["distance_m"], "val/distance_se": val["distance_se"],
                   "val/new_ground_m": val["new_ground_m"],
                   "val/x_straight": val["distance_m"] / max(straight_m, 1e-9), "data/labels": len(data)}
            run.log(r + 1, row)
            history.append({"round": r, **row})
            if val["distance_m"] > best["distance_m"]:
                best = {"round": r, "distance_m": val["distance_m"]}
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            print(f"round {r}: {len(batch)} new labels ({stats['collect/seconds']:.0f} s), fit loss "
                  f"{fit_stats['fit/loss']:.4f}; validation {val['distance_m']:.2f} ± {val['distance_se']:.2f} m "
                  f"({row['val/x_straight']:.2f}x straight)", flush=True)
            save_checkpoint(run.checkpoint_dir, r + 1,
                            {"model": net.state_dict(), "best": best_state,
                             "data": data.tensors()},
                            {"optimizer": [optimizer.state_dict() for optimizer in optimizers],
                             "trainer": {"rounds_done": r + 1, "history": history, "best": best,
                                         "rng": rng.bit_generator.state}},
                            keep_last=1)
    finally:
        env.close()
        val_env.close()
    net.load_state_dict(best_state)
    final = run_dir / FINAL
    final.mkdir(exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(final / "value_net.safetensors"))
    meta = {"net": net_config(net), "env": cfg.env.__dict__, "tie_tol": cfg.mc.tie_tol, "best_round": best["round"],
            "observation": f"rgb {cfg.env.image_size}x{cfg.env.image_size}",
            "action": f"cell of a {cfg.env.grid}x{cfg.env.grid} image grid, row-major, row 0 at the top"}
    (final / "policy.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    summary = {"seed": cfg.train.seed, "rounds": rounds, "best_round": best["round"], "labels": len(data),
               "val_straight_m": straight_m, "val_best_m": best["distance_m"],
               "val_best_x_straight": best["distance_m"] / max(straight_m, 1e-9), "history": history}
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    _train_media(cfg, run, net, history, straight_m, val_seeds)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1), flush=True)


def _train_media(cfg: FlightConfig, run: Any, net: Any, history: list[dict], straight_m: float,
                 seeds: list[int]) -> None:
    from robot.flight.controllers import policy_controller
    from shared.tracking import MediaRecord, append_media

    run_dir = Path(run.path)
    step = len(history)
    curve = _curve_plot(history, straight_m, run_dir / "media" / "final" / "rounds.png",
                        f"seed {cfg.train.seed}: validation flight distance per round")
    append_media(run_dir, MediaRecord("image", str(curve.relative_to(run_dir)), step=step, group="final",
                                      caption="mean collision-free distance on validation worlds after each round"))
    env = cfg.env.make("val")
    try:
        for i, seed in enumerate(seeds[: cfg.eval.videos]):
            _flight_media(env, policy_controller(net, cfg.mc.tie_tol), seed, run_dir, run_dir / "media" / "final",
                          f"val{i}", step, "final", "validation world")
    finally:
        env.close()


def _curve_plot(history: list[dict], straight_m: float, out: Path, title: str) -> Path:
    from shared.gallery.figures import new_figure, save_png

    fig = new_figure((5.5, 3.4))
    ax = fig.add_subplot()
    xs = [h["round"] for h in history]
    ys = [h["val/distance_m"] for h in history]
    se = [h["val/distance_se"] for h in history]
    ax.errorbar(xs, ys, yerr=se, marker="o", capsize=3, label="CAD2RL policy")
    ax.axhline(straight_m, color="grey", ls="--", label="fly straight")
    ax.set_xlabel("round (0: straight-flight branches)")
    ax.set_ylabel("collision-free distance (m)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return save_png(fig, out, tight=True)


def _flight_media(env: Any, controller: Any, seed: int, run_dir: Path, folder: Path, tag: str, step: int,
                  group: str, where: str) -> dict:
    from robot.flight.mc import fly
    from robot.flight.media import flight_video, topdown_plot
    from shared.tracking import MediaRecord, append_media

    flight = fly(env, controller, seed, record=True)
    end = flight.collision or "distance cap / edge"
    actions = flight.actions + [flight.actions[-1]] if flight.actions else [env.straight_action]
    values = flight.values + [None] if flight.values else [None]
    captions = [f"{i * env.step_m:4.1f} m" for i in range(len(flight.frames))]
    video = flight_video(flight.frames, actions, env.k, folder / f"{tag}.webm", values=values, captions=captions,
                         fps=env.metadata["render_fps"], scale=4)
    append_media(run_dir, MediaRecord("video", str(video.relative_to(run_dir)), step=step, group=group,
                                      caption=f"{where} (world seed {flight.world_seed}): {flight.distance_m:.1f} m, "
                                              f"ended by {end}; value map and chosen direction drawn in"))
    w = env.world
    plot = topdown_plot(w.rects, folder / f"{tag}-map.png", trajectory=flight.xy,
                        collision=tuple(flight.xy[-1]) if flight.collision else None,
                        start=(w.start[0], w.start[1], w.start[3]),
                        title=f"{where}: {flight.distance_m:.1f} m ({end})")
    append_media(run_dir, MediaRecord("image", str(plot.relative_to(run_dir)), step=step, group=group,
                                      caption=f"top-down map of the same flight ({where})"))
    return {"distance_m": flight.distance_m, "collision": flight.collision}


# ------------------------------------------------------------------------------------------- eval


def load_policy(run_dir: Path) -> tuple[Any, dict]:
    from safetensors.torch import load_file

    from robot.flight.model import build_value_net

    folder = Path(run_dir) / FINAL
    if not (folder / "value_net.safetensors").exists():
        raise FileNotFoundError(f"{run_dir} has no {FINAL}/value_net.safetensors (the run has not finished; "
                                f"resume it with rlab train flight --resume {run_dir})")
    meta = json.loads((folder / "policy.json").read_text())
    net = build_value_net(**meta["net"])
    net.load_state_dict(load_file(str(folder / "value_net.safetensors")))
    net.eval()
    return net, meta


def _eval_env(cfg: FlightConfig, req: EvalRequest, world: str | None, start: Any) -> tuple[Any, str, str, Any]:
    """(env, split, tag, start) of an evaluation: a user's world file, or a split of generated worlds."""
    if world is not None:
        if start is None:
            raise ValueError("--world needs --start x,y,z,yaw_deg (a free point inside the world)")
        start = parse_start(start) if isinstance(start, str) else tuple(start)
        env = cfg.env.make(world=world, start=start, start_jitter_m=cfg.eval.start_jitter_m,
                           start_jitter_deg=cfg.eval.start_jitter_deg)
        split = "user"
        tag = "world-" + Path(resolve_world(world)).stem
    else:
        if start is not None:
            raise ValueError("--start goes with --world (generated worlds have their own start poses)")
        split = req.options.get("worlds") or (req.split if req.split != "test" else cfg.eval.worlds)
        from sim.indoor import SPLITS

        if split not in SPLITS:
            raise ValueError(f"--worlds must be one of {', '.join(SPLITS)}, got {split!r}")
        env = cfg.env.make(split)
        tag = split
    return env, split, tag, start


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """`rlab eval RUN [--worlds SPLIT | --world FILE --start x,y,z,yaw] [--episodes N]`: the policy and the
    baselines on the same worlds; writes eval/<tag>.json, videos and maps."""
    import numpy as np

    from robot.flight.controllers import baseline, policy_controller
    from robot.flight.mc import fly, summarise
    from shared.config import load_config

    run_dir = Path(req.run_dir)
    cfg = load_config(FlightConfig, run_dir / "config.yaml", [], CONFIGS_DIR)
    unknown = set(req.options) - {"worlds", "episodes", "world", "start"}
    if unknown:
        raise ValueError(f"flight eval takes --worlds, --episodes, --world and --start, not "
                         f"{', '.join(sorted(unknown))}")
    episodes = int(req.options.get("episodes") or cfg.eval.episodes)
    if req.limit is not None:
        episodes = min(episodes, int(req.limit))
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    world, start = req.options.get("world"), req.options.get("start")
    env, split, tag, start = _eval_env(cfg, req, world, start)
    net, meta = load_policy(run_dir)
    # The same worlds for every run (and every controller): seeds differ only in what they trained on.
    seeds = [int(s) for s in np.random.default_rng(20_000).integers(0, 2**31, episodes)]
    controllers = {"cad2rl": policy_controller(net, meta.get("tie_tol", cfg.mc.tie_tol))}
    controllers.update({name: baseline(name, cfg.train.seed, cfg.eval.oracle_horizon) for name in cfg.eval.baselines})
    results: dict[str, dict] = {}
    try:
        for name, controller in controllers.items():
            t0 = time.time()
            flights = [fly(env, controller, s) for s in seeds]
            results[name] = summarise(flights, cfg.eval.success_m)
            results[name]["seconds"] = round(time.time() - t0, 1)
            results[name]["per_flight_m"] = [round(f.distance_m, 2) for f in flights]
            print(f"{tag}: {name:9s} {results[name]['distance_m']:6.2f} ± {results[name]['distance_se']:.2f} m "
                  f"(new ground {results[name]['new_ground_m']:.2f} m)", flush=True)
        for i, s in enumerate(seeds[: cfg.eval.videos]):
            _flight_media(env, controllers["cad2rl"], s, run_dir, run_dir / "media" / "eval" / tag, f"flight{i}", 0,
                          f"eval/{tag}", f"{tag} world")
    finally:
        env.close()
    straight_m = results.get("straight", {}).get("distance_m")
    out = {"worlds": tag, "split": split, "episodes": episodes, "world": world, "start": start, "seeds": seeds,
           "success_m": cfg.eval.success_m, "results": results}
    path = run_dir / "eval" / f"{tag}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    metrics: dict[str, float] = {}
    for name, res in results.items():
        metrics[f"{name}_distance_m"] = res["distance_m"]
        metrics[f"{name}_distance_se"] = res["distance_se"]
        metrics[f"{name}_new_ground_m"] = res["new_ground_m"]
        metrics[f"{name}_beyond_{cfg.eval.success_m:g}m"] = res[f"beyond_{cfg.eval.success_m:g}m"]
    if straight_m:
        metrics["cad2rl_x_straight"] = results["cad2rl"]["distance_m"] / straight_m
    return metrics


# ------------------------------------------------------------------------------------------- demo


DEMO_OVERRIDES = {
    False: ["mc.iterations=1", "mc.roots_first=400", "mc.roots=60", "fit.epochs=4", "eval.val_flights=8",
            "eval.videos=1", "eval.episodes=8"],
    True: ["mc.iterations=1", "mc.roots_first=60", "mc.roots=8", "mc.horizon=6", "fit.epochs=1",
           "eval.val_flights=2", "eval.videos=1", "env.max_distance_m=10", "eval.episodes=2"],
}


def demo(runs_root: Path, quick: bool) -> Path:
    """A short CAD2RL run: one round of straight-flight branches, one of policy branches."""
    from shared.demo import train_demo_run

    return train_demo_run(TRACK, runs_root, DEMO_OVERRIDES[quick], "cad2rl", lambda cfg: (
        f"{cfg.mc.roots_first} + {cfg.mc.roots} Monte Carlo labelled states in generated indoor worlds"))


TRACK = Track(
    name="flight",
    help="CAD2RL collision-free indoor flight from one camera: Monte Carlo value learning in randomised worlds",
    schema=FlightConfig,
    configs_dir=CONFIGS_DIR,
    train=train,
    evaluate=evaluate_run,
    demo=demo,
)
