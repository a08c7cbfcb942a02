"""The GRPO update: micro-batching with gradient accumulation equals one full batch, for every
aggregation mode; several epochs / mini-batches reuse the log-probs recorded at sampling."""

from __future__ import annotations

import copy

import pytest
import torch

from shared.config import load_config
from shared.diag.track import CONFIGS_DIR, DiagConfig, build_setup
from shared.lm.rewards import REWARDS, RewardScore
from shared.lm.steps import grpo_step
from shared.lm.trainer import lr_lambda

if "test.length" not in REWARDS:

    @REWARDS.register("test.length")
    def _length(completions: list[str], items: list[dict]) -> list[RewardScore]:
        """Varied rewards even from an untrained model, so advantages are not all zero."""
        return [RewardScore(len(c) / 10) for c in completions]


SMALL = ["task.test_size=8", "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=6",
         "rl.rewards=[test.length]"]


def _update(setup, state, cfg, seed: int) -> dict[str, torch.Tensor]:
    setup.model.load_state_dict(state)
    opt = torch.optim.SGD(setup.model.parameters(), lr=0.1)  # SGD: the update is the gradient itself
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
    items = [next(setup.train_stream(0, i)) for i in range(cfg.rl.prompts_per_step)]
    torch.manual_seed(seed)
    metrics, rollout, _ = grpo_step(setup, items, opt, sched, cfg.rl, cfg.train)
    assert metrics["nonfinite"] == 0
    return {k: v.clone() for k, v in setup.model.state_dict().items()}


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
                                         "seq_mean_token_sum_norm"])
def test_micro_batches_accumulate_to_the_full_batch_gradient(aggregation: str) -> None:
    cfg = load_config(DiagConfig, "default", [*SMALL, f"rl.aggregation={aggregation}", "train.grad_clip=0"],
                      CONFIGS_DIR)
    setup = build_setup(cfg)
    start = copy.deepcopy(setup.model.state_dict())
    cfg.train.micro_batch_size = 64
    full = _update(setup, start, cfg, seed=3)
    cfg.train.micro_batch_size = 3  # 16 rows -> 3+3+3+3+3+1
    micro = _update(setup, start, cfg, seed=3)
    moved = sum(float((full[k] - start[k]).abs().sum()) for k in start)
    assert moved > 0, "the update changed nothing: the test would prove nothing"
    for key in full:
        torch.testing.assert_close(micro[key], full[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss,advantage", [("ppo_clip", "grpo"), ("gspo", "grpo"), ("cispo", "grpo"),
                                            ("reinforce", "w_reinforce"), ("reinforce", "rloo")])
def test_every_policy_loss_trains(loss: str, advantage: str) -> None:
    """Each registered loss gets only the keywords it takes (W-REINFORCE: reinforce, no clip range)."""
    from shared.rl import POLICY_LOSSES

    assert {"ppo_clip", "gspo", "cispo", "reinforce"} <= set(POLICY_LOSSES)
    cfg = load_config(DiagConfig, "default", [*SMALL, f"rl.loss={loss}", f"rl.advantage={advantage}"], CONFIGS_DIR)
    setup = build_setup(cfg)
    start = copy.deepcopy(setup.model.state_dict())
    after = _update(setup, start, cfg, seed=1)
    assert any(not torch.equal(after[k], start[k]) for k in start)


def test_two_epochs_two_minibatches_run_four_optimizer_steps() -> None:
    cfg = load_config(DiagConfig, "default", [*SMALL, "rl.epochs=2", "rl.mini_batches=2"], CONFIGS_DIR)
    setup = build_setup(cfg)
    calls = []
    opt = torch.optim.AdamW(setup.model.parameters(), lr=1e-3)
    opt.register_step_post_hook(lambda *_: calls.append(1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
    items = [next(setup.train_stream(0, i)) for i in range(4)]
    torch.manual_seed(0)
    metrics, _, _ = grpo_step(setup, items, opt, sched, cfg.rl, cfg.train)
    assert len(calls) == 4 and metrics["nonfinite"] == 0
    assert 0.0 <= metrics["clip_frac"] <= 1.0


def _step_with_reference(*overrides: str) -> dict:
    """One GRPO step (AdamW, lr 1e-2) with a frozen copy of the initial model as the KL reference."""
    cfg = load_config(DiagConfig, "default", [*SMALL, "rl.kl_coef=0.1", *overrides], CONFIGS_DIR)
    setup = build_setup(cfg)
    ref = copy.deepcopy(setup.model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(setup.model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
    items = [next(setup.train_stream(0, i)) for i in range(4)]
    torch.manual_seed(0)
    metrics, _, _ = grpo_step(setup, items, opt, sched, cfg.rl, cfg.train, ref_model=ref)
    return metrics


def test_kl_to_reference_and_entropy_are_logged() -> None:
    metrics = _step_with_reference("rl.entropy_coef=0.01", "rl.forking_top_quantile=0.5", "rl.epochs=2")
    # epoch 1 starts at the reference weights (KL 0); epoch 2 has moved away from them
    assert metrics["kl"] > 0 and metrics["entropy"] > 0


def test_reference_equals_the_policy_before_any_update() -> None:
    """The KL reference forward (shared prompts) and the policy's agree on identical weights: the
    first epoch's KL is ~0 (any mismatch between the two paths would show here)."""
    metrics = _step_with_reference()
    assert metrics["nonfinite"] == 0 and abs(metrics["kl"]) < 1e-8


def test_entropy_bonus_has_a_gradient() -> None:
    """With zero advantages only the entropy bonus moves the weights, and it raises the entropy."""
    from shared.lm.logprobs import completion_logprobs
    from shared.lm.sampling import sample_completions

    cfg = load_config(DiagConfig, "default", SMALL, CONFIGS_DIR)
    setup = build_setup(cfg)
    items = [next(setup.train_stream(0, i)) for i in range(4)]
    torch.manual_seed(0)
    ro = sample_completions(setup.model, setup.tokenizer, setup.encode_prompts(items), 2, 6, 1.0,
                            setup.banned_ids)
    _, entropy = completion_logprobs(setup.model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids,
                                     ro.completion_mask, setup.banned_tensor(), 1.0, with_entropy=True)
    mean_entropy = (entropy * ro.completion_mask).sum() / ro.completion_mask.sum()
    (-mean_entropy).backward()
    grads = [p.grad for p in setup.model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


class _CountingTerm:
    """A loss term that adds `weight * logp` (a pure likelihood push) and counts its calls."""

    name, needs_entropy = "counting", True

    def __init__(self, weight: float) -> None:
        self.weight, self.prepared, self.calls = weight, 0, 0

    def prepare(self, setup, items, rollout, kept_index, batch) -> None:
        self.prepared += 1
        batch["term/counting"] = len(kept_index)

    def loss(self, setup, rl, batch, rows, logp, entropy, mask):
        self.calls += 1
        assert entropy is not None and batch["term/counting"] == len(batch["mask"])
        return -self.weight * logp * mask, {"counting/term": 1.0}


def test_loss_terms_are_prepared_once_and_called_per_micro_batch() -> None:
    cfg = load_config(DiagConfig, "default", [*SMALL, "rl.epochs=2"], CONFIGS_DIR)
    setup = build_setup(cfg)
    start = copy.deepcopy(setup.model.state_dict())
    cfg.train.micro_batch_size = 8  # 16 rows -> 2 micro-batches x 2 epochs
    term = _CountingTerm(0.0)
    setup.loss_terms = [term]
    plain = _update(setup, start, cfg, seed=5)
    assert (term.prepared, term.calls) == (1, 4)
    term_on = _CountingTerm(1.0)
    setup.loss_terms = [term_on]
    pushed = _update(setup, start, cfg, seed=5)
    assert any(not torch.equal(plain[k], pushed[k]) for k in plain), "a non-zero term must change the update"
