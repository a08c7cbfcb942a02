"""Faults the LM loop must survive or stop on cleanly: non-finite losses, raising rewards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.config import load_config, to_yaml
from shared.diag.track import CONFIGS_DIR, DiagConfig, train
from shared.lm.rewards import REWARDS, RewardScore
from shared.lm.trainer import TrainingStopped
from shared.rl import POLICY_LOSSES, register_policy_loss
from shared.tracking import read_metrics
from shared.tracking.checkpoint import latest_checkpoint
from shared.tracking.run import Run

SMALL = ["train.steps=6", "sft.steps=4", "train.save_every=2", "train.eval_every=0", "eval.size=8",
         "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=6", "sft.batch_size=8",
         "task.test_size=8"]

if "test_nan_after_step" not in POLICY_LOSSES:

    @register_policy_loss("test_nan_after_step")
    def _nan_loss(logp, old_logp, advantages, mask, **params):
        """REINFORCE whose loss turns NaN: models a diverging run."""
        return -(logp * 0 + float("nan")) * mask

if "test.flaky" not in REWARDS:

    @REWARDS.register("test.flaky")
    def _flaky(completions: list[str], items: list[dict]) -> list[RewardScore]:
        """Raises on every completion that starts with '1'; 1.0 otherwise."""
        out = []
        for c in completions:
            if c.startswith("1"):
                raise ValueError("flaky scorer")
            out.append(RewardScore(1.0))
        return out


def _run(tmp_path: Path, overrides: list[str]) -> tuple[Run, DiagConfig]:
    cfg = load_config(DiagConfig, "default", SMALL + overrides, CONFIGS_DIR)
    return Run.create("diag", "t", to_yaml(cfg), 0, run_dir=tmp_path / "run", tensorboard=False), cfg


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path: Path) -> None:
    run, cfg = _run(tmp_path, ["rl.loss=test_nan_after_step", "train.max_nonfinite_steps=3"])
    with pytest.raises(TrainingStopped, match="3 consecutive steps had a non-finite loss"):
        train(cfg, run, resuming=False)
    run.close()
    records = [r for r in read_metrics(run.path) if "nonfinite" in r]
    assert [r["nonfinite"] for r in records] == [0, 0, 0, 0, 1, 1, 1]
    assert records[-1]["nonfinite_total"] == 3
    # the last good checkpoint is the end of the warm-up, untouched and loadable
    step, path = latest_checkpoint(run.checkpoint_dir)
    assert step == 4
    assert not (run.path / "final").exists()


def test_skipped_step_leaves_weights_untouched(tmp_path: Path) -> None:
    from shared.diag.track import build_setup
    from shared.lm.steps import grpo_step
    from shared.lm.trainer import LMTrainer

    run, cfg = _run(tmp_path, ["rl.loss=test_nan_after_step", "sft.steps=0"])
    trainer = LMTrainer(build_setup(cfg), run, cfg.train, cfg.sft, cfg.rl, cfg.eval)
    before = {k: v.clone() for k, v in trainer.setup.model.state_dict().items()}
    items = [next(trainer.setup.train_stream(0, i)) for i in range(4)]
    metrics, _, _ = grpo_step(trainer.setup, items, trainer.optimizer, trainer.scheduler, cfg.rl, cfg.train)
    assert metrics["nonfinite"] == 1
    for key, value in trainer.setup.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    run.close()


def test_a_raising_reward_costs_samples_not_the_run(tmp_path: Path) -> None:
    run, cfg = _run(tmp_path, ["rl.rewards=[test.flaky]", "train.steps=2"])
    train(cfg, run, resuming=False)
    run.close()
    rl_records = [r for r in read_metrics(run.path) if "reward_failures" in r]
    assert len(rl_records) == 2
    assert rl_records[-1]["reward_failures_total"] == sum(r["reward_failures"] for r in rl_records)
    assert (run.path / "final" / "model.safetensors").exists()
