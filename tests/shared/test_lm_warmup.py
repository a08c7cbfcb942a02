"""Adaptive warm-up: SFT ends once validation accuracy reaches sft.target_accuracy, RL follows for
train.steps, and the boundary survives a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

import shared.lm.trainer as trainer_mod
from shared.config import load_config, to_yaml
from shared.diag.track import CONFIGS_DIR, DiagConfig, train
from shared.lm.evaluate import EvalResult
from shared.tracking import read_metrics
from shared.tracking.run import Run

SMALL = ["train.steps=4", "sft.steps=50", "sft.target_accuracy=0.3", "sft.check_every=2",
         "train.save_every=3", "train.keep_checkpoints=5",
         "train.eval_every=0", "eval.size=4", "task.test_size=4", "task.val_size=4", "rl.prompts_per_step=2",
         "rl.group_size=2", "rl.max_new_tokens=4", "sft.batch_size=4"]


@pytest.fixture
def scripted_val(monkeypatch):
    """Validation checks return 0.0, 0.1, 0.5, ...: the warm-up must stop at the third check (step 6)."""
    real = trainer_mod.evaluate
    script = iter([0.0, 0.1, 0.5, 0.9, 0.9])

    def fake(setup, items, ks, max_new_tokens, temperature=1.0, greedy=True, seed=0, **kw):
        result = real(setup, items, ks, max_new_tokens, temperature, greedy, seed)
        if len(items) == 4 and items[0]["id"].startswith("val"):
            result = EvalResult({**result.metrics, "accuracy": next(script)}, result.traces)
        return result

    monkeypatch.setattr(trainer_mod, "evaluate", fake)


def test_warmup_stops_at_target_then_runs_train_steps_of_rl(tmp_path: Path, scripted_val) -> None:
    cfg = load_config(DiagConfig, "default", SMALL, CONFIGS_DIR)
    with Run.create("diag", "w", to_yaml(cfg), 0, run_dir=tmp_path / "run", tensorboard=False) as run:
        train(cfg, run, resuming=False)
    records = read_metrics(tmp_path / "run")
    val = [(r["step"], r["sft/val_accuracy"]) for r in records if "sft/val_accuracy" in r]
    assert val == [(2, 0.0), (4, 0.1), (6, 0.5)]
    sft_steps = sorted({r["step"] for r in records if r.get("warmup") == 1})
    rl_steps = sorted({r["step"] for r in records if "reward" in r})
    assert sft_steps == list(range(1, 7)) and rl_steps == [7, 8, 9, 10]
    # the warm-up's end is evaluated on the test split and checkpointed
    assert any("eval/test/accuracy" in r and r["step"] == 6 for r in records)
    assert (tmp_path / "run" / "checkpoints" / "step-00000006").exists()
