"""Where a diag GRPO step spends its time, and what recording log-probs costs over plain sampling.

    python bench/diag_step_split.py [--steps 20] [--warmup-steps 200]

Builds the diag default set-up, warms it up with SFT (so completions have realistic lengths),
then times GRPO steps split into sampling, reward, forward (training log-probs), loss + backward
and optimizer. The peer is Hugging Face ``model.generate`` on the same prompts with no log-prob
recording; the last line is ``ratio: <our sampling> / <plain generate>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from shared.config import load_config
    from shared.diag.track import CONFIGS_DIR, DiagConfig, build_setup
    from shared.lm.steps import grpo_step, sft_step
    from shared.lm.trainer import lr_lambda

    cfg = load_config(DiagConfig, "default", [], CONFIGS_DIR)
    setup = build_setup(cfg)
    params = [p for p in setup.model.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.sft.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
    stream = setup.train_stream(0, 0)
    for _ in range(args.warmup_steps):
        sft_step(setup, [next(stream) for _ in range(cfg.sft.batch_size)], opt, sched, cfg.train)
    opt = torch.optim.AdamW(params, lr=cfg.rl.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))

    keys = ["sample_s", "reward_s", "forward_s", "loss_backward_s", "optimizer_s"]
    split = {k: [] for k in keys}
    totals, plain = [], []
    for _ in range(args.steps):
        items = [next(stream) for _ in range(cfg.rl.prompts_per_step)]
        # the peer: plain generate, same prompts, same group size and length cap
        inputs = setup.encode_prompts(items)
        t0 = time.perf_counter()
        with torch.no_grad():
            setup.model.generate(**inputs, do_sample=True, num_return_sequences=cfg.rl.group_size,
                                 max_new_tokens=cfg.rl.max_new_tokens, top_k=None, top_p=None,
                                 eos_token_id=setup.eos_id, pad_token_id=setup.pad_id)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        metrics, _, _ = grpo_step(setup, items, opt, sched, cfg.rl, cfg.train)
        totals.append(time.perf_counter() - t0)
        for k in keys:
            split[k].append(metrics.get(f"time/{k}", 0.0))

    total = statistics.median(totals)
    print(f"GRPO step (16 prompts x 8 samples, {args.steps} steps, median): {total * 1000:.1f} ms")
    for k in keys:
        med = statistics.median(split[k])
        print(f"  {k:<16} {med * 1000:8.1f} ms  {100 * med / total:5.1f}%")
    sample, peer = statistics.median(split["sample_s"]), statistics.median(plain)
    print(f"plain model.generate (peer): {peer * 1000:.1f} ms")
    print(f"ratio: {sample / peer:.3f} (our sampling with log-prob recording over plain HF generate)")


if __name__ == "__main__":
    main()
