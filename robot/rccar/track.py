"""The `rccar` track: config schema, training (demonstration -> checkpoints -> SAC practice), evaluation,
and its step of `make demo`.

    rlab rccar demo --track Monza --out demos/monza              # a slow pure-pursuit lap
    rlab train rccar --config fastrlap --set demo=demos/monza    # practice from its checkpoints
    rlab eval RUN --track Zandvoort --laps 5                     # laps on a circuit never trained on
    rlab gallery RUN
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import choice, require
from shared.tracks import EvalRequest, Track

CONFIGS_DIR = Path(__file__).parent / "configs"
FINAL = "final"
SUMMARY = "summary.json"
log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    seed: int = 0
    """Seeds SAC (network init, sampling) and the environment."""


@dataclass
class EnvConfig:
    track: str = "Monza"
    """Training circuit: a bundled name (Monza, Spielberg, Budapest, Zandvoort), a TUM-format CSV path,
    or generated:SEED."""
    length_m: float = 80.0
    """The circuit's centre line is scaled to this loop length (RC scale)."""
    width_m: float = 1.4
    """Corridor width between the walls."""
    smooth_m: float = 2.0
    """RC-scale simplification: Gaussian smoothing (m of arc length) of the centre line, so hairpins and
    chicanes that no RC car can drive open up (Monza and Spielberg are infeasible at 80 m without it)."""
    on_infeasible: str = choice("error", "error", "warn")
    """A track tighter than the car can drive (radius, sections too close): refuse, or warn and load."""
    control_hz: float = 10.0
    """Policy rate; physics runs at 240 Hz."""
    reset_mode: str = choice("recover", "recover", "teleport")
    """After a crash: recover (back up and drive on, no human; FastRLAP) or teleport to the last checkpoint."""
    crash_cost: float = 10.0
    """Reward penalty of a crash (reward is otherwise m/s toward the next checkpoint)."""
    checkpoint_spacing_m: float = 2.5
    """Checkpoints are extracted from the demonstration every this many metres."""
    checkpoint_radius_m: float = 1.0
    """A checkpoint counts as reached within this distance (or once the car's progress passes it)."""
    randomize: bool = False
    """Domain randomisation per episode (friction, mass, motor strength, actuation latency)."""
    image_size: int = 0
    """Add the car camera's image (N x N) to the observation (0: state only): SB3's CNN trained end to end,
    or a frozen pretrained encoder with `encoder`."""
    observation: str = choice("full", "full", "onboard")
    """full: the simulator's state (checkpoints ahead, range rays, lateral speed); onboard: only what the real
    car measures (speed, yaw rate, accelerations, its last command) plus the camera (needs image_size)."""
    encoder: str = ""
    """Folder of a pretrained image encoder (`rlab rccar encoder --out FOLDER`; needs image_size equal to
    its own): the policy sees its frozen features plus the state vector. No weights can be downloaded here,
    so the lab pretrains its own (an autoencoder on camera images from the simulator)."""

    def __post_init__(self) -> None:
        require(not self.encoder or self.image_size > 0, "env.encoder",
                "needs env.image_size > 0 (the encoder reads the camera image)")
        require(self.observation == "full" or self.image_size > 0, "env.observation",
                "onboard needs env.image_size > 0 (the camera is how it sees the track)")
        for key in ("length_m", "width_m", "checkpoint_spacing_m", "checkpoint_radius_m"):
            require(getattr(self, key) > 0, f"env.{key}", "must be positive")
        require(self.crash_cost >= 0, "env.crash_cost", "must be >= 0")
        require(self.smooth_m >= 0, "env.smooth_m", "must be >= 0")
        require(0 < self.control_hz <= 60, "env.control_hz", "must be in (0, 60]")
        require(self.image_size == 0 or 16 <= self.image_size <= 256, "env.image_size", "0 or 16..256")

    def make(self, track: str | None = None, checkpoints: Any = None, reset_mode: str | None = None,
             render: bool = False, **extra: Any) -> Any:
        from sim.rccar import RCCarEnv

        env = RCCarEnv(
            track=track or self.track, length_m=self.length_m, width_m=self.width_m,
            on_infeasible=self.on_infeasible, smooth_m=self.smooth_m, checkpoints=checkpoints,
            checkpoint_spacing_m=self.checkpoint_spacing_m, checkpoint_radius_m=self.checkpoint_radius_m,
            control_hz=self.control_hz, crash_cost=self.crash_cost, reset_mode=reset_mode or self.reset_mode,
            image_size=self.image_size or None, observation=self.observation, randomization={"enabled": self.randomize},
            render_mode="rgb_array" if render else None, **extra)
        if self.encoder:
            from robot.rccar.encoder import EncodedObservation

            env = EncodedObservation(env, self.encoder)
        return env


@dataclass
class DemoDriverConfig:
    throttle: float = 0.3
    """Pure-pursuit throttle (fraction of top speed) of the demonstration recorded when `demo` is empty."""
    lookahead_m: float = 1.0

    def __post_init__(self) -> None:
        require(0 < self.throttle <= 1, "demo_driver.throttle", "must be in (0, 1]")
        require(self.lookahead_m > 0, "demo_driver.lookahead_m", "must be positive")


@dataclass
class SACConfig:
    lr: float = 3.0e-4
    lr_end_frac: float = 1.0
    """The learning rate at the end of the practice budget, as a fraction of `lr`, reached linearly in
    simulated practice time (actor, critics and entropy coefficient alike); 1: constant."""
    batch_size: int = 256
    buffer_size: int = 200_000
    utd: int = 2
    """Update-to-data ratio: gradient steps per environment step."""
    learning_starts: int = 500
    """Environment steps of random actions before the first update."""
    gamma: float = 0.99
    tau: float = 0.005
    ent_coef: str = "auto_0.1"
    """SB3's entropy coefficient: "auto_0.1" learns it from 0.1 (SB3's default start, 1.0, made the car
    park: the entropy bonus outweighed the small per-step reward)."""
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    n_critics: int = 2
    """Critic ensemble size (the TD target takes the minimum)."""
    critic_layer_norm: bool = False
    """Layer normalisation after each hidden layer of every critic (DroQ, RLPD): keeps Q estimates bounded at
    a high update-to-data ratio. SB3's SAC has no such option; the lab's policy class adds it."""
    critic_dropout: float = 0.0
    """Dropout rate in every critic's hidden layers (DroQ uses 0.01 with layer norm); 0: none."""

    def __post_init__(self) -> None:
        require(self.utd >= 1, "sac.utd", "must be >= 1")
        require(self.n_critics >= 1, "sac.n_critics", "must be >= 1")
        require(0.0 <= self.critic_dropout < 1.0, "sac.critic_dropout", "must be in [0, 1)")
        require(0.0 < self.lr_end_frac <= 1.0, "sac.lr_end_frac", "must be in (0, 1]")


@dataclass
class PracticeConfig:
    minutes: float = 20.0
    """Budget of simulated practice time (recoveries included)."""
    eval_every_min: float = 2.0
    eval_laps: int = 2
    eval_max_s: float = 90.0
    """An evaluation drive stops after this many simulated seconds (a policy that crawls)."""
    checkpoint_every_min: float = 2.0

    def __post_init__(self) -> None:
        for key in ("minutes", "eval_every_min", "eval_max_s", "checkpoint_every_min"):
            require(getattr(self, key) > 0, f"practice.{key}", "must be positive")
        require(self.eval_laps >= 1, "practice.eval_laps", "must be >= 1")


@dataclass
class EvalConfig:
    track: str = "Spielberg"
    """The circuit never trained on (`rlab eval RUN` default; --track overrides)."""
    laps: int = 5
    baseline: bool = True
    """Tune the pure-pursuit baseline (fastest clean setting) on the training circuit at the start of the run."""


@dataclass
class RCCarConfig:
    name: str = "rccar"
    demo: str = ""
    """Demonstration folder (`rlab rccar demo --out FOLDER`); empty: record a slow pure-pursuit lap first."""
    train: TrainConfig = field(default_factory=TrainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    demo_driver: DemoDriverConfig = field(default_factory=DemoDriverConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    practice: PracticeConfig = field(default_factory=PracticeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ------------------------------------------------------------------------------------------ train


def _demo(cfg: RCCarConfig, run_dir: Path) -> Any:
    from robot.rccar.pursuit import Demo, record_demo

    saved = run_dir / "demo"
    if (saved / "demo.json").exists():
        return Demo.load(saved)
    if cfg.demo:
        demo = Demo.load(cfg.demo)
        env = cfg.env.make()
        try:
            trk = env.track
            if (demo.track != trk.name or abs(demo.length_m - trk.length) > 0.01 * trk.length
                    or demo.width_m != trk.width or demo.smooth_m != trk.smooth_m):
                raise ValueError(f"demo {cfg.demo} was driven on {demo.track} ({demo.length_m} m loop, "
                                 f"{demo.width_m} m wide, smooth_m {demo.smooth_m}), but env is {trk.name} "
                                 f"({trk.length:g} m, {trk.width:g} m, smooth_m {trk.smooth_m:g}); "
                                 "record it with the same settings")
        finally:
            env.close()
    else:
        env = cfg.env.make(reset_mode="teleport")
        try:
            demo = record_demo(env, cfg.demo_driver.throttle, cfg.demo_driver.lookahead_m)
        finally:
            env.close()
    demo.save(saved)
    return demo


def _baseline(cfg: RCCarConfig, run_dir: Path) -> dict | None:
    from robot.rccar.pursuit import tune_pursuit

    path = run_dir / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())
    if not cfg.eval.baseline:
        return None
    result = tune_pursuit(lambda: cfg.env.make(reset_mode="teleport"))
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def train(cfg: RCCarConfig, run: Any, resuming: bool) -> None:
    import shutil

    import numpy as np

    from robot.rccar.practice import PracticeState, load_practice, make_sac, practise, save_practice  # noqa: F401
    from robot.rccar.pursuit import extract_checkpoints
    from shared.tracking.checkpoint import latest_checkpoint

    run_dir = Path(run.path)
    if cfg.env.encoder:  # the run keeps its own copy: evaluation and export need it after the source moves
        copy = run_dir / "encoder"
        if not copy.exists():
            if not Path(cfg.env.encoder).is_dir():
                raise FileNotFoundError(f"env.encoder: {cfg.env.encoder} is not an encoder folder "
                                        "(build one with `rlab rccar encoder --track ... --out FOLDER`)")
            shutil.copytree(cfg.env.encoder, copy)
        cfg.env.encoder = str(copy)
    demo = _demo(cfg, run_dir)
    print(f"demonstration: {demo.lap_time_s:.1f} s lap on {demo.track} ({demo.driver})", flush=True)
    baseline = _baseline(cfg, run_dir)
    if baseline:
        print(f"tuned pure pursuit: {baseline['best_lap_s']:.1f} s (throttle {baseline['throttle']}, "
              f"lookahead {baseline['lookahead_m']} m)", flush=True)
    checkpoints = extract_checkpoints(demo.path, cfg.env.checkpoint_spacing_m)
    np.save(run_dir / "checkpoints.npy", checkpoints)
    env = cfg.env.make(checkpoints=checkpoints)
    model = make_sac(env, cfg.sac, cfg.train.seed)
    state = PracticeState()
    found = latest_checkpoint(run.checkpoint_dir) if resuming else None
    if resuming:  # records logged after the checkpoint we continue from are dropped (they happen again)
        from shared.tracking.media import truncate_manifest

        step = found[0] if found is not None else 0
        run.truncate_metrics(step)
        truncate_manifest(run.path, step)
        shutil.rmtree(run_dir / FINAL, ignore_errors=True)
    if found is not None:
        state = load_practice(found[1], model)
        print(f"resumed at {state.sim_time_s / 60:.2f} simulated minutes ({found[1].name})", flush=True)

    def make_eval_env() -> Any:
        return cfg.env.make(checkpoints=checkpoints, reset_mode="teleport")

    state = practise(model, state, cfg, run, make_eval_env, demo.lap_time_s)
    env.close()
    final = run_dir / FINAL
    final.mkdir(exist_ok=True)
    model.save(final / "policy.zip")
    policy_meta = {"track": cfg.env.track, "env": cfg.env.__dict__, "observation": "state" if not cfg.env.image_size
                   else "state+image", "action": ["steer", "throttle"], "action_low": [-1, -1], "action_high": [1, 1],
                   "control_hz": cfg.env.control_hz, "run": str(run_dir)}
    (final / "policy.json").write_text(json.dumps(policy_meta, indent=1, default=str) + "\n")
    np.save(final / "checkpoints.npy", checkpoints)
    summary = _summary(cfg, demo, baseline, state)
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    _media(cfg, run, model, checkpoints, demo, baseline, state)
    print(json.dumps({k: v for k, v in summary.items() if k != "evals"}, indent=1), flush=True)


def _summary(cfg: RCCarConfig, demo: Any, baseline: dict | None, state: Any) -> dict:
    last = state.evals[-1] if state.evals else {}
    return {
        "track": cfg.env.track, "reset_mode": cfg.env.reset_mode, "seed": cfg.train.seed,
        "practice_min": round(state.sim_time_s / 60, 3), "demo_lap_s": demo.lap_time_s,
        "baseline_lap_s": baseline["best_lap_s"] if baseline else None,
        "practice_best_lap_s": min((lap for _, lap, crashes in state.laps if crashes == 0), default=None),
        "practice_laps": len(state.laps), "crashes": state.crashes, "recoveries": state.recoveries,
        "interventions": state.interventions,
        "first_faster_than_demo_min": state.first_faster_than_demo_min,
        "final_det_best_lap_s": last.get("det", {}).get("best_lap_s"),
        "final_det_crashes": last.get("det", {}).get("crashes"),
        "final_stoch_best_lap_s": last.get("stoch", {}).get("best_lap_s"),
        "final_stoch_crashes": last.get("stoch", {}).get("crashes"),
        "evals": state.evals,
    }


def _media(cfg: RCCarConfig, run: Any, model: Any, checkpoints: Any, demo: Any, baseline: dict | None,
           state: Any) -> None:
    from robot.rccar.media import lap_curve_plot, lap_video, trajectory_plot
    from robot.rccar.practice import policy_controller
    from shared.tracking import MediaRecord, append_media

    run_dir, step = Path(run.path), int(model.num_timesteps)
    media = run_dir / "media" / "final"
    env = cfg.env.make(checkpoints=checkpoints, reset_mode="teleport", render=True)
    try:
        video, drive_log = lap_video(env, policy_controller(model, True), media / "lap.webm",
                                     max_s=cfg.practice.eval_max_s)
        arrays = drive_log.to_arrays()
        laps = ", ".join(f"{x:.1f} s" for x in drive_log.laps) or "no lap"
        append_media(run_dir, MediaRecord("video", str(video.relative_to(run_dir)), step=step, group="final",
                                          caption=f"deterministic policy, chase camera ({laps}, crashes "
                                                  f"{drive_log.crashes})"))
        plot = trajectory_plot(env.track, arrays["xy"], arrays["speed"], media / "trajectory.png",
                               title=f"{cfg.env.track}: practised policy", checkpoints=checkpoints)
        append_media(run_dir, MediaRecord("image", str(plot.relative_to(run_dir)), step=step, group="final",
                                          caption="trajectory coloured by speed"))
        demo_plot = trajectory_plot(env.track, demo.path, demo.speed, media / "demo.png",
                                    title=f"demonstration ({demo.lap_time_s:.1f} s)", checkpoints=checkpoints)
        append_media(run_dir, MediaRecord("image", str(demo_plot.relative_to(run_dir)), step=step, group="final",
                                          caption="the demonstration and its checkpoints"))
    finally:
        env.close()
    series = {f"eval ({name})": [(e["practice_min"], e[key]["best_lap_s"]) for e in state.evals
                                 if e[key]["best_lap_s"] is not None]
              for name, key in (("deterministic", "det"), ("stochastic", "stoch"))}
    curve = lap_curve_plot([(m, lap) for m, lap, _ in state.laps], media / "lap_times.png", demo_lap_s=demo.lap_time_s,
                           baseline_lap_s=baseline["best_lap_s"] if baseline else None, series=series,
                           title=f"{cfg.env.track}, reset {cfg.env.reset_mode}, seed {cfg.train.seed}")
    append_media(run_dir, MediaRecord("image", str(curve.relative_to(run_dir)), step=step, group="final",
                                      caption="lap time against simulated practice time"))


# ------------------------------------------------------------------------------------------- eval


def load_policy(run_dir: Path) -> Any:
    from stable_baselines3 import SAC

    path = Path(run_dir) / FINAL / "policy.zip"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {FINAL}/policy.zip (the run has not finished; "
                                f"resume it with rlab train rccar --resume {run_dir})")
    return SAC.load(path, device="cpu")


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """`rlab eval RUN [--track T] [--laps N]`: laps of the deterministic and the stochastic policy on a
    circuit (split "test": the config's unseen eval.track; "train": the training circuit)."""
    import numpy as np

    from robot.rccar.media import trajectory_plot
    from robot.rccar.practice import evaluate_policy_laps
    from shared.config import load_config
    from shared.tracking import MediaRecord, append_media

    run_dir = Path(req.run_dir)
    cfg = load_config(RCCarConfig, run_dir / "config.yaml", [], CONFIGS_DIR)
    if cfg.env.encoder and (run_dir / "encoder").exists():
        cfg.env.encoder = str(run_dir / "encoder")
    unknown = set(req.options) - {"track", "laps"}
    if unknown:
        raise ValueError(f"rccar eval takes --track and --laps, not {', '.join(sorted(unknown))}")
    if req.split not in ("test", "train"):
        raise ValueError(f"rccar eval splits: test (the unseen eval.track) or train, not {req.split!r}")
    track = req.options.get("track") or (cfg.env.track if req.split == "train" else cfg.eval.track)
    laps = int(req.options.get("laps") or cfg.eval.laps)
    model = load_policy(run_dir)
    trained_on = track == cfg.env.track
    checkpoints = np.load(run_dir / FINAL / "checkpoints.npy") if trained_on else None

    def make_env() -> Any:
        return cfg.env.make(track=track, checkpoints=checkpoints, reset_mode="teleport")

    probe = make_env()
    per_lap = 60.0 * probe.track.length / 55.0
    probe.close()
    metrics: dict[str, float] = {}
    results = {}
    tag = Path(str(track)).stem.replace(":", "-")
    for mode, det in (("det", True), ("stoch", False)):
        res = evaluate_policy_laps(model, make_env, laps, laps * per_lap, det, seed=cfg.train.seed)
        results[mode] = {k: v for k, v in res.items() if k != "log"}
        metrics[f"{mode}_laps"] = len(res["laps"])
        metrics[f"{mode}_crashes"] = res["crashes"]
        if res["best_lap_s"] is not None:
            metrics[f"{mode}_best_lap_s"] = res["best_lap_s"]
            metrics[f"{mode}_mean_lap_s"] = res["mean_lap_s"]
        if det:
            arrays = res["log"].to_arrays()
            env = make_env()
            plot = trajectory_plot(env.track, arrays["xy"], arrays["speed"],
                                   run_dir / "media" / "eval" / f"{tag}.png", title=f"{track}: {laps} laps")
            env.close()
            append_media(run_dir, MediaRecord("image", str(plot.relative_to(run_dir)), group=f"eval/{tag}",
                                              caption=f"deterministic policy on {track}: laps "
                                                      f"{results['det']['laps']}, crashes {res['crashes']}"))
    out = run_dir / "eval" / f"{tag}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"track": str(track), "laps": laps, **results}, indent=1) + "\n")
    return metrics


# ------------------------------------------------------------------------------------------- demo


DEMO_OVERRIDES = {
    False: ["practice.minutes=1.5", "practice.eval_every_min=0.75", "practice.checkpoint_every_min=0.75",
            "practice.eval_laps=1", "practice.eval_max_s=60", "eval.baseline=false", "eval.laps=1",
            "sac.learning_starts=200"],
    True: ["practice.minutes=0.3", "practice.eval_every_min=0.3", "practice.checkpoint_every_min=0.3",
           "practice.eval_laps=1", "practice.eval_max_s=20", "eval.baseline=false", "eval.laps=1",
           "sac.learning_starts=100", "env.track=generated:1", "env.length_m=55", "env.width_m=1.6",
           "env.smooth_m=0", "eval.track=generated:2"],
}


def demo(runs_root: Path, quick: bool) -> Path:
    """A short practice from a recorded slow lap (1.5 simulated minutes; quick: 20 s)."""
    from shared.demo import train_demo_run

    return train_demo_run(TRACK, runs_root, DEMO_OVERRIDES[quick], "fastrlap", lambda cfg: (
        f"slow demonstration lap, then {cfg.practice.minutes} simulated minutes of SAC practice"))


TRACK = Track(
    name="rccar",
    help="FastRLAP lap learning: one slow demonstration, then autonomous SAC practice in pybullet",
    schema=RCCarConfig,
    configs_dir=CONFIGS_DIR,
    train=train,
    evaluate=evaluate_run,
    demo=demo,
)
