"""Autonomous practice: SAC (stable-baselines3) from a demonstration's checkpoints, FastRLAP style.

The learner is SB3's SAC with a high update-to-data ratio (`gradient_steps` per environment step)
and its critic ensemble (`n_critics`, clipped to the minimum). SB3's SAC has no layer-norm option;
`sac.critic_layer_norm` and `sac.critic_dropout` swap in the lab's policy class (`robot.rccar.critic`)
whose critics have both (DroQ), and `sac.lr_end_frac` anneals the learning rate over practice time.

Practice time is the simulated time of the training car, recovery manoeuvres included; it drives the
budget (`practice.minutes`) and every curve's x axis.

Every `eval_every_min` simulated minutes the current policy drives `eval_laps` laps on a separate
copy of the track, deterministic (the actor's mean) and stochastic (sampled), since early in
training they disagree. Every `checkpoint_every_min` the policy, its optimizers, the entropy
coefficient, the replay buffer and the practice counters go into an atomic checkpoint
(`shared.tracking.checkpoint`); a killed run resumes from it (the car restarts at the line).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class PracticeState:
    """Counters that survive a resume (saved in each checkpoint as plain data)."""

    sim_time_s: float = 0.0
    """Practice time: simulated seconds of the training car, recoveries included."""
    laps: list[tuple[float, float, int]] = field(default_factory=list)
    """(practice minutes at the lap's end, lap time s, crashes during the lap)."""
    crashes: int = 0
    recoveries: int = 0
    interventions: int = 0
    evals: list[dict] = field(default_factory=list)
    next_eval_min: float = 0.0
    next_ckpt_min: float = 0.0
    first_faster_than_demo_min: float | None = None


class PracticeLR:
    """SB3 learning-rate schedule that follows simulated practice time instead of SB3's step budget (which
    is only an upper bound here): `lr` at the start, `lr * end_frac` at the end, linear in between. The
    practice callback sets `progress` (0 to 1); SB3 applies the value before every gradient step."""

    def __init__(self, lr: float, end_frac: float = 1.0) -> None:
        self.lr, self.end_frac, self.progress = float(lr), float(end_frac), 0.0

    def __call__(self, _progress_remaining: float) -> float:
        p = min(1.0, max(0.0, self.progress))
        return self.lr * (1.0 - p * (1.0 - self.end_frac))


def make_sac(env: Any, sac: Any, seed: int, tb_dir: str | None = None) -> Any:
    from stable_baselines3 import SAC

    multi = isinstance(env.observation_space, dict) or hasattr(env.observation_space, "spaces")
    policy: Any = "MultiInputPolicy" if multi else "MlpPolicy"
    policy_kwargs: dict[str, Any] = {"net_arch": list(sac.net_arch), "n_critics": sac.n_critics}
    if sac.critic_layer_norm or sac.critic_dropout > 0:
        from robot.rccar.critic import NormCriticMultiInputPolicy, NormCriticPolicy

        policy = NormCriticMultiInputPolicy if multi else NormCriticPolicy
        policy_kwargs.update(critic_layer_norm=bool(sac.critic_layer_norm), critic_dropout=float(sac.critic_dropout))
    model = SAC(
        policy,
        env,
        learning_rate=sac.lr,
        buffer_size=sac.buffer_size,
        learning_starts=sac.learning_starts,
        batch_size=sac.batch_size,
        tau=sac.tau,
        gamma=sac.gamma,
        train_freq=1,
        gradient_steps=sac.utd,
        ent_coef=sac.ent_coef,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device="cpu",
        verbose=0,
    )
    if sac.lr_end_frac != 1.0:
        model.lr_schedule = PracticeLR(sac.lr, sac.lr_end_frac)
    return model


def policy_controller(model: Any, deterministic: bool):
    return lambda obs, info: model.predict(obs, deterministic=deterministic)[0]


def evaluate_policy_laps(model: Any, make_env: Any, laps: int, max_s: float, deterministic: bool,
                         seed: int = 0) -> dict:
    """Drive `laps` laps (or `max_s` simulated seconds) with the policy: lap times and crashes; best and mean
    lap times count clean laps only (a crash teleports the car back to its last checkpoint)."""
    from robot.rccar.pursuit import drive

    env = make_env()
    try:
        result = drive(env, policy_controller(model, deterministic), laps, max_s, seed=seed)
    finally:
        env.close()
    clean = result.clean_laps
    return {"laps": [round(x, 2) for x in result.laps], "lap_crashes": result.lap_crashes, "crashes": result.crashes,
            "clean_laps": len(clean), "best_lap_s": min(clean) if clean else None,
            "mean_lap_s": float(np.mean(clean)) if clean else None,
            "interventions": result.interventions, "log": result}


# ------------------------------------------------------------------------------------- checkpoints


def save_practice(ckpt_dir: Path, model: Any, state: PracticeState, keep_last: int = 2) -> Path:
    import torch

    from shared.tracking.checkpoint import save_checkpoint

    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    replay = {name: torch.from_numpy(np.ascontiguousarray(getattr(buf, name)[:n]))
              for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")}
    optim = {"actor": model.actor.optimizer.state_dict(), "critic": model.critic.optimizer.state_dict()}
    if model.ent_coef_optimizer is not None:
        optim["ent_coef"] = model.ent_coef_optimizer.state_dict()
    trainer = {"num_timesteps": int(model.num_timesteps), "n_updates": int(model._n_updates),
               "replay_pos": int(buf.pos), "replay_full": bool(buf.full),
               "practice": json.loads(json.dumps(state.__dict__)), "rng": np.random.get_state()}
    tensors = {"policy": model.policy.state_dict(), "replay": replay}
    if model.ent_coef_optimizer is not None:
        tensors["ent"] = {"log_ent_coef": model.log_ent_coef.detach()}
    return save_checkpoint(ckpt_dir, int(model.num_timesteps), tensors, {"optim": optim, "trainer": trainer},
                           keep_last=keep_last)


def load_practice(path: Path, model: Any) -> PracticeState:
    from shared.tracking.checkpoint import load_checkpoint

    tensors, objects = load_checkpoint(path)
    model.policy.load_state_dict(tensors["policy"])
    optim, trainer = objects["optim"], objects["trainer"]
    model.actor.optimizer.load_state_dict(optim["actor"])
    model.critic.optimizer.load_state_dict(optim["critic"])
    if "ent" in tensors and model.ent_coef_optimizer is not None:
        model.log_ent_coef.data.copy_(tensors["ent"]["log_ent_coef"])
        model.ent_coef_optimizer.load_state_dict(optim["ent_coef"])
    buf = model.replay_buffer
    for name, value in tensors["replay"].items():
        getattr(buf, name)[: len(value)] = value.numpy()
    buf.pos, buf.full = trainer["replay_pos"], trainer["replay_full"]
    model.num_timesteps, model._n_updates = trainer["num_timesteps"], trainer["n_updates"]
    np.random.set_state(trainer["rng"])
    p = trainer["practice"]
    state = PracticeState(**{**p, "laps": [tuple(x) for x in p["laps"]]})
    return state


# ----------------------------------------------------------------------------------------- loop


def _log_lap(state: PracticeState, run: Any, step: int, info: dict, demo_lap_s: float) -> None:
    minutes = state.sim_time_s / 60.0
    state.laps.append((round(minutes, 4), info["lap_time_s"], info["lap_crashes"]))
    if state.first_faster_than_demo_min is None and info["lap_time_s"] < demo_lap_s and info["lap_crashes"] == 0:
        state.first_faster_than_demo_min = round(minutes, 3)
    run.log(step, {"practice/lap_s": info["lap_time_s"], "practice/lap_crashes": info["lap_crashes"],
                   "practice/sim_min": minutes})


def _make_callback(model: Any, state: PracticeState, cfg: Any, run: Any, demo_lap_s: float, evaluate_now: Any,
                   bar: Any) -> Any:
    """SB3 callback: counts practice time, laps and crashes, evaluates and checkpoints on schedule,
    and stops learning at the practice-time budget."""
    from stable_baselines3.common.callbacks import BaseCallback

    pc, budget_s = cfg.practice, cfg.practice.minutes * 60.0
    offset = {"sim": state.sim_time_s, "crashes": state.crashes, "recoveries": state.recoveries,
              "interventions": state.interventions}
    started = time.time()

    class Practice(BaseCallback):
        crashes = 0

        def _on_step(self) -> bool:
            info, step = self.locals["infos"][0], self.num_timesteps
            if self.locals["dones"][0] and info.get("crash"):
                self.crashes += 1
            state.sim_time_s = offset["sim"] + info["sim_time_s"]
            if isinstance(model.lr_schedule, PracticeLR):  # set after every env step, before SB3's updates;
                model.lr_schedule.progress = state.sim_time_s / budget_s  # a resumed run continues from its time
            state.crashes = offset["crashes"] + self.crashes
            state.recoveries = offset["recoveries"] + info["recoveries"]
            state.interventions = offset["interventions"] + info["interventions"]
            minutes = state.sim_time_s / 60.0
            if info.get("lap_completed"):
                _log_lap(state, run, step, info, demo_lap_s)
            if step % 200 == 0:
                ent = float(np.exp(model.log_ent_coef.item())) if model.ent_coef_optimizer else 0.0
                wall = (time.time() - started) / max(1e-9, (state.sim_time_s - offset["sim"]) / 60.0)
                run.log(step, {"practice/sim_min": minutes, "practice/crashes": state.crashes,
                               "practice/recoveries": state.recoveries, "practice/interventions": state.interventions,
                               "practice/speed": info["speed"], "sac/ent_coef": ent,
                               "sac/lr": float(model.lr_schedule(1.0)),
                               "perf/wall_s_per_sim_min": wall})
            if step % 50 == 0:
                bar.n = min(round(budget_s), round(state.sim_time_s))
                bar.refresh()
            done = state.sim_time_s >= budget_s
            if minutes >= state.next_eval_min:
                evaluate_now(step)
                state.next_eval_min += pc.eval_every_min
            elif done:  # the budget's last evaluation, before its checkpoint so a resume keeps it
                evaluate_now(step)
            if (minutes >= state.next_ckpt_min and step > 0) or done:
                save_practice(Path(run.checkpoint_dir), model, state)
                state.next_ckpt_min += pc.checkpoint_every_min
            return not done

    return Practice()


def practise(model: Any, state: PracticeState, cfg: Any, run: Any, make_eval_env: Any, demo_lap_s: float,
             on_eval: Any = None) -> PracticeState:
    """Run SAC until `cfg.practice.minutes` of simulated practice; log laps, evaluations, checkpoints."""
    from tqdm import tqdm

    from shared.tracking.checkpoint import list_checkpoints

    pc = cfg.practice
    budget_s = pc.minutes * 60.0
    bar = tqdm(total=round(budget_s), initial=min(round(budget_s), round(state.sim_time_s)), unit="sim s",
               desc="practice", dynamic_ncols=True, mininterval=2.0)

    def evaluate_now(step: int) -> None:
        minutes = state.sim_time_s / 60.0
        row: dict[str, Any] = {"practice_min": round(minutes, 3), "step": step}
        metrics: dict[str, float] = {"practice/sim_min": minutes}
        for mode, det in (("det", True), ("stoch", False)):
            res = evaluate_policy_laps(model, make_eval_env, pc.eval_laps, pc.eval_max_s, det, seed=cfg.train.seed)
            row[mode] = {k: v for k, v in res.items() if k != "log"}
            metrics[f"eval/{mode}_laps"] = len(res["laps"])
            metrics[f"eval/{mode}_crashes"] = res["crashes"]
            if res["best_lap_s"] is not None:
                metrics[f"eval/{mode}_best_lap_s"] = res["best_lap_s"]
                metrics[f"eval/{mode}_mean_lap_s"] = res["mean_lap_s"]
        state.evals.append(row)
        run.log(step, metrics)
        if on_eval is not None:
            on_eval(row)
        bar.write(f"eval @ {minutes:.1f} sim min: deterministic laps {row['det']['laps']} crashes "
                  f"{row['det']['crashes']}; stochastic laps {row['stoch']['laps']} crashes {row['stoch']['crashes']}")

    callback = _make_callback(model, state, cfg, run, demo_lap_s, evaluate_now, bar)
    # The step budget is an upper bound only: the callback stops at the practice-time budget.
    steps_left = int(budget_s * cfg.env.control_hz * 2) + 10
    model.learn(total_timesteps=steps_left, callback=callback, reset_num_timesteps=False, progress_bar=False)
    bar.close()
    step = int(model.num_timesteps)
    late = not state.evals or state.evals[-1]["step"] != step  # learn() ran out of steps before the budget
    if late:
        evaluate_now(step)
    if late or step not in {s for s, _ in list_checkpoints(run.checkpoint_dir)}:
        save_practice(Path(run.checkpoint_dir), model, state)
    return state
