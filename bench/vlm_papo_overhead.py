"""What PAPO's extra forward pass costs: a PAPO-G step against a GRPO step on the same rollouts.

    OMP_NUM_THREADS=1 python bench/vlm_papo_overhead.py [--steps 10] [--warmup-steps 300] [--model DIR]

Builds the vlm default set-up (tiny Qwen2.5-VL, counting), warms it up with SFT so completions have
realistic lengths (or loads --model, e.g. a warm-up run's final/), then times pairs of steps on the
same 16 prompts x 8 samples from the same weights and the same RNG state: a plain GRPO step (the
peer) and a PAPO-G step (config papo: perception KL against a masked image, gamma 0.01, masked
branch without gradient). Both sample identical completions, so the difference is PAPO's masked
prompt encoding, its extra forward pass and its loss. The last line is the median ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def _setup(config: str, model_dir: str):
    from shared.config import load_config
    from vlm_rl.track import CONFIGS_DIR, VLMConfig, build_setup, load_data

    overrides = ["data.n_train=4000", "data.n_test=200", "data.val_size=100"]
    if model_dir:
        overrides.append(f"model.path={model_dir}")
    cfg = load_config(VLMConfig, config, overrides, CONFIGS_DIR)
    return cfg, build_setup(cfg, load_data(cfg.data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed step pairs")
    parser.add_argument("--warmup-steps", type=int, default=300, help="SFT steps before timing (without --model)")
    parser.add_argument("--model", default="", help="start from this model folder instead of a fresh warm-up")
    args = parser.parse_args()

    from shared.lm.steps import grpo_step, sft_step
    from shared.lm.trainer import lr_lambda
    from shared.tracking.rng import capture_rng, restore_rng

    cfg, setup = _setup("papo", args.model)
    papo_terms = list(setup.loss_terms)
    model = setup.model
    params = [p for p in model.parameters() if p.requires_grad]
    stream = setup.train_stream(0, 0)
    if not args.model:
        opt = torch.optim.AdamW(params, lr=cfg.sft.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
        for _ in range(args.warmup_steps):
            sft_step(setup, [next(stream) for _ in range(cfg.sft.batch_size)], opt, sched, cfg.train)

    # the KL reference (the default config's rl.kl_coef > 0): the model as the timed steps start
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.rl.kl_coef > 0 else None
    times: dict[str, list[float]] = {"grpo": [], "papo": []}
    lengths: dict[str, list[float]] = {"grpo": [], "papo": []}
    for _ in range(args.steps):
        items = [next(stream) for _ in range(cfg.rl.prompts_per_step)]
        weights, rng = copy.deepcopy(model.state_dict()), capture_rng()
        for name, terms in (("grpo", []), ("papo", papo_terms)):
            model.load_state_dict(weights)
            restore_rng(rng)
            setup.loss_terms = terms
            opt = torch.optim.AdamW(params, lr=cfg.rl.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
            t0 = time.perf_counter()
            metrics, _, _ = grpo_step(setup, items, opt, sched, cfg.rl, cfg.train, ref_model)
            times[name].append(time.perf_counter() - t0)
            lengths[name].append(metrics.get("completion_len", float("nan")))
    grpo, papo = statistics.median(times["grpo"]), statistics.median(times["papo"])
    print(f"{args.steps} step pairs, {cfg.rl.prompts_per_step} prompts x {cfg.rl.group_size} samples, "
          f"max {cfg.rl.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}")
    print(f"GRPO step (peer): {grpo:.3f} s median   mean completion length {statistics.mean(lengths['grpo']):.1f}")
    print(f"PAPO-G step:      {papo:.3f} s median   mean completion length {statistics.mean(lengths['papo']):.1f}")
    ratios = [p / g for p, g in zip(times["papo"], times["grpo"], strict=True)]
    print(f"per-pair ratios: min {min(ratios):.2f}, max {max(ratios):.2f} (target: at most 1.6)")
    print(f"ratio: {papo / grpo:.3f} (PAPO-G step time over GRPO step time)")


if __name__ == "__main__":
    main()
