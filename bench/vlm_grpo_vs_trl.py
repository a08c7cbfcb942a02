"""Seconds per GRPO optimizer step on the tiny Qwen2.5-VL: this lab's loop against TRL's GRPOTrainer.

    OMP_NUM_THREADS=1 python bench/vlm_grpo_vs_trl.py [--steps 10] [--warmup 3] [--prompts 16] [--group 8]
                                                      [--tokens 40] [--rounds 2]
    OMP_NUM_THREADS=1 python bench/vlm_grpo_vs_trl.py --profile      # where one lab step spends its time

Both sides get the same work: the same tiny Qwen2.5-VL folder (`vlm_rl.models.build_tiny_vlm`,
default `TinyVLMConfig`, random weights), the same counting dataset (`vlm_rl.data.write_dataset`),
per optimizer step P prompts x G generations sampled ONCE at temperature 1 (no top-k/top-p) with
exactly T new tokens each (EOS and the lab's special/placeholder tokens are banned on both sides, so
lengths do not depend on when a model would stop; --allow-eos lifts the EOS ban), reward =
accuracy + format (the lab's vlm.accuracy and vlm.format, weight 1 each), GRPO advantages, PPO-clip
0.2, loss averaged per sequence then over sequences, no KL (beta 0), AdamW at the same constant lr,
gradient clipping at 1, float32, micro-batches of --micro-batch sequences with gradient accumulation,
one thread, single process CPU.

- lab: `vlm_rl.track.build_setup` + `shared.lm.steps.grpo_step` (what `LMTrainer` runs per RL step;
  old log-probs are recorded while sampling, so there is no extra forward pass).
- trl: `trl.GRPOTrainer` with per_device_train_batch_size = micro-batch, gradient_accumulation_steps
  = steps_per_generation = P*G / micro-batch (one generate call per optimizer step, no old-log-prob
  pass), loss_type "grpo", beta 0, use_vllm False, no gradient checkpointing, bf16 off, no eval, no
  saving, no logging, report_to none; images in TRL's format (an "image" column, the prompt as
  system + user chat messages), the tiny model's processor as processing_class.

Each side runs in its own subprocess (so peak RSS is its own): --warmup untimed steps, then --steps
timed steps; a step is timed end to end (prompt encoding, sampling, rewards, forward, backward,
optimizer; for TRL from one ``on_step_end`` to the next, data loading included). --rounds repeats
the pair in ABBA order (lab, trl, trl, lab, ...) so drift in the machine's load hits both sides;
the medians pool the timed steps of all rounds. Both sides count per step: generated (unmasked)
completion tokens, prompt tokens, calls of the model's forward (decoding steps + training
micro-batches) and images through the vision tower, so unequal work shows. The last line is
``ratio: <lab steps/s over TRL steps/s>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
RESULT_PREFIX = "RESULT "
N_TEST = 16
"""Rows of the (unused) test split: the lab's loader requires one."""


# ------------------------------------------------------------------------------------------ shared


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


class _Counter:
    """Forward calls of the whole model and images (grid rows) through its vision tower."""

    def __init__(self, model: Any):
        self.forwards = 0
        self.images = 0
        model.register_forward_pre_hook(self._on_model)
        visual = getattr(getattr(model, "model", model), "visual", None)
        if visual is not None:
            visual.register_forward_pre_hook(self._on_visual, with_kwargs=True)

    def _on_model(self, module: Any, args: Any) -> None:
        self.forwards += 1

    def _on_visual(self, module: Any, args: Any, kwargs: dict) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.images += 0 if grid is None else len(grid)

    def take(self) -> tuple[int, int]:
        out = (self.forwards, self.images)
        self.forwards = self.images = 0
        return out


def _banned_ids(processor: Any, allow_eos: bool) -> list[int]:
    from vlm_rl.models import vlm_banned_ids

    banned = set(vlm_banned_ids(processor))
    if not allow_eos:
        banned.add(processor.tokenizer.eos_token_id)
    return sorted(banned)


def _result(side: str, times: list[float], cpu: list[float], per_step: list[dict], rss_before: float,
            extra: dict) -> dict:
    return {"side": side, "step_s": times, "cpu_s": cpu, "per_step": per_step, "rss_before_steps_mb": rss_before,
            "peak_rss_mb": _peak_rss_mb(), **extra}


# --------------------------------------------------------------------------------------------- lab


def _lab_setup(args: argparse.Namespace, work: Path) -> tuple[Any, Any]:
    from shared.lm.config import RLConfig, TrainConfig
    from vlm_rl.track import RewardConfig, VLMConfig, VLMDataConfig, VLMModelConfig, build_setup

    cfg = VLMConfig(
        model=VLMModelConfig(path=str(work / "model")),
        data=VLMDataConfig(path=str(work / "data"), val_size=0),
        train=TrainConfig(steps=args.warmup + args.steps, seed=args.seed, micro_batch_size=args.micro_batch,
                          grad_clip=1.0, lr_schedule="constant"),
        rl=RLConfig(prompts_per_step=args.prompts, group_size=args.group, max_new_tokens=args.tokens,
                    temperature=1.0, lr=args.lr, kl_coef=0.0, loss="ppo_clip", clip_low=0.2, clip_high=0.2,
                    aggregation="seq_mean_token_mean", advantage="grpo"),
        reward=RewardConfig(format_weight=1.0),  # rewards vlm.accuracy + 1.0 * vlm.format
    )
    setup = build_setup(cfg)  # setup.banned_ids: vlm_banned_ids(processor), as `_banned_ids` gives TRL
    if not args.allow_eos:
        setup.banned_ids = sorted(set(setup.banned_ids) | {setup.eos_id})
    return cfg, setup


def _lab_optimizer(cfg: Any, setup: Any) -> tuple[Any, Any]:
    """What `LMTrainer` builds for the RL phase."""
    import torch

    from shared.lm.trainer import lr_lambda

    params = [p for p in setup.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.rl.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda("constant", 0, cfg.train.steps))
    return optimizer, scheduler


def run_lab(args: argparse.Namespace, work: Path) -> dict:
    _single_thread()
    from shared.lm.steps import grpo_step

    cfg, setup = _lab_setup(args, work)
    optimizer, scheduler = _lab_optimizer(cfg, setup)
    counter = _Counter(setup.model)
    stream = setup.train_stream(cfg.train.seed, 0)
    rss_before = _peak_rss_mb()
    times, cpu, per_step = [], [], []
    for _ in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        items = [next(stream) for _ in range(cfg.rl.prompts_per_step)]
        metrics, rollout, _ = grpo_step(setup, items, optimizer, scheduler, cfg.rl, cfg.train)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        forwards, images = counter.take()
        per_step.append({
            "sequences": len(rollout.completion_ids), "gen_tokens": int(rollout.completion_mask.sum()),
            "prompt_tokens": int(rollout.prompt_mask.sum()), "forwards": forwards, "images": images,
            "reward": metrics["reward"], "optimizer_steps": 1 - int(metrics.get("nonfinite", 0)),
            "split": {k[5:]: v for k, v in metrics.items() if k.startswith("time/")},
        })
    params = sum(p.numel() for p in setup.model.parameters())
    return _result("lab", times, cpu, per_step, rss_before, {"params": params})


# --------------------------------------------------------------------------------------------- TRL


def _trl_dataset(work: Path) -> Any:
    import datasets

    from vlm_rl.data import load_split
    from vlm_rl.track import DEFAULT_SYSTEM_PROMPT

    rows, _ = load_split(work / "data", "train")
    data = {
        "prompt": [[{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": r["question"]}]
                   for r in rows],
        "image": [str(Path(work / "data", r["images"][0])) for r in rows],  # decoded from disk on access
        "answer": [str(r["answer"]) for r in rows],
    }
    return datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())


def _texts(completions: list) -> list[str]:
    return [c[0]["content"] if isinstance(c, list) else c for c in completions]


def accuracy(completions: list, answer: list[str], **_: Any) -> list[float]:
    """The lab's vlm.accuracy reward as a TRL reward function."""
    from vlm_rl.rewards import accuracy_reward

    return [s.overall for s in accuracy_reward(_texts(completions), [{"answer": a} for a in answer])]


def format_(completions: list, **_: Any) -> list[float]:
    """The lab's vlm.format reward as a TRL reward function."""
    from vlm_rl.rewards import format_reward

    texts = _texts(completions)
    return [s.overall for s in format_reward(texts, [{}] * len(texts))]


def _trl_config(args: argparse.Namespace, work: Path, banned: list[int]) -> Any:
    from trl import GRPOConfig

    accumulation = args.prompts * args.group // args.micro_batch
    return GRPOConfig(
        output_dir=str(work / "trl-out"), seed=args.seed, use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation, num_generations=args.group, num_iterations=1,
        max_completion_length=args.tokens, temperature=1.0, top_p=1.0, top_k=0,
        generation_kwargs={"suppress_tokens": banned},
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.0, loss_type="grpo", epsilon=0.2, scale_rewards="group",
        use_vllm=False, max_steps=args.warmup + args.steps,
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
    )


def run_trl(args: argparse.Namespace, work: Path) -> dict:
    _single_thread()
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from vlm_rl.models import load_vlm

    model, processor = load_vlm(work / "model")
    dataset = _trl_dataset(work)
    config = _trl_config(args, work, _banned_ids(processor, args.allow_eos))
    generated: list[dict] = []

    class Trainer(GRPOTrainer):
        def _generate(self, prompts: list) -> Any:  # counts what was generated; otherwise TRL's own
            out = super()._generate(prompts)
            prompt_ids, completion_ids = out[0], out[1]
            generated.append({"sequences": len(completion_ids), "gen_tokens": sum(len(c) for c in completion_ids),
                              "prompt_tokens": sum(len(p) for p in prompt_ids)})
            return out

        def _calculate_rewards(self, *a: Any, **kw: Any) -> Any:  # [N, reward functions], weights 1
            rewards = super()._calculate_rewards(*a, **kw)
            generated[-1]["reward"] = float(rewards.nansum(dim=1).mean())
            return rewards

    marks: list[tuple[float, float]] = []
    state: dict[str, Any] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            state["rss_before"] = _peak_rss_mb()
            marks.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, *_: Any, **__: Any) -> None:
            marks.append((time.perf_counter(), time.process_time()))
            generated[-1]["forwards"], generated[-1]["images"] = counter.take()

    trainer = Trainer(model=model, reward_funcs=[accuracy, format_], args=config, train_dataset=dataset,
                      processing_class=processor, callbacks=[Clock()])
    counter = _Counter(trainer.model)
    trainer.train()
    times = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
    per_step = [{**g, "optimizer_steps": 1} for g in generated]
    if len(per_step) != len(times) or trainer.state.global_step != len(times):
        raise RuntimeError(f"TRL made {trainer.state.global_step} optimizer steps, {len(generated)} generate calls "
                           f"and {len(times)} timed steps: generation is not once per optimizer step")
    params = sum(p.numel() for p in model.parameters())
    return _result("trl", times, cpu, per_step, state["rss_before"], {"params": params})


# ----------------------------------------------------------------------------------------- profile

FOCUS = (
    ("sampling: sample_completions", "shared/lm/sampling.py", "sample_completions"),
    ("  model.generate", "transformers/generation/utils.py", "generate"),
    ("  generate: vision tower before prefill", "transformers/generation/utils.py",
     "_prepare_multimodal_encoder_kwargs_for_generation"),
    ("  generate: prefill (P*G rows)", "transformers/generation/utils.py", "_prefill"),
    ("  log-prob recording (logits processor)", "shared/lm/sampling.py", "__call__"),
    ("  torch.multinomial", "~", "<built-in method torch.multinomial>"),
    ("  KV cache update (torch.cat)", "transformers/cache_utils.py", "update"),
    ("  causal mask building", "transformers/masking_utils.py", "create_causal_mask"),
    ("rewards + advantages", "shared/lm/steps.py", "_rewards_and_advantages"),
    ("training forward (log-probs)", "shared/lm/logprobs.py", "completion_logprobs"),
    ("backward", "torch/autograd/__init__.py", "backward"),
    ("optimizer (clip + AdamW)", "shared/lm/steps.py", "_apply_update"),
    ("vision tower, all passes", "qwen2_5_vl/modeling_qwen2_5_vl.py", "get_image_features"),
    ("3-D rope index, all passes", "qwen2_5_vl/modeling_qwen2_5_vl.py", "get_rope_index"),
    ("prompt encoding (images + processor)", "vlm_rl/inputs.py", "encode_vlm_prompts"),
    ("row slicing of vision inputs", "vlm_rl/inputs.py", "slice_vlm_extras"),
)
"""(label, file suffix, function) of the costs `run_profile` names: cumulative seconds, largest match."""


def _focus(stats: dict) -> list[tuple[str, float, int]]:
    out = []
    for label, suffix, func in FOCUS:
        hits = [(ct, nc) for (file, _, name), (_, nc, _, ct, _) in stats.items()
                if name == func and file.replace("\\", "/").endswith(suffix)]
        ct, nc = max(hits) if hits else (0.0, 0)
        out.append((label, ct, nc))
    return out


def run_profile(args: argparse.Namespace, work: Path) -> None:
    """cProfile of one lab step after the warm-up steps, and the step's split from grpo_step's timers."""
    import cProfile
    import io
    import pstats

    _single_thread()
    from shared.lm.steps import grpo_step

    cfg, setup = _lab_setup(args, work)
    optimizer, scheduler = _lab_optimizer(cfg, setup)
    stream = setup.train_stream(cfg.train.seed, 0)
    for _ in range(args.warmup):
        grpo_step(setup, [next(stream) for _ in range(args.prompts)], optimizer, scheduler, cfg.rl, cfg.train)
    items = [next(stream) for _ in range(args.prompts)]
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    metrics, _, _ = grpo_step(setup, items, optimizer, scheduler, cfg.rl, cfg.train)
    profiler.disable()
    total = time.perf_counter() - t0
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile_rows)
    print(out.getvalue())
    print(f"one lab GRPO step under cProfile: {total:.3f} s (profiling overhead included)")
    print("named costs (cumulative s, calls):")
    focus = _focus(pstats.Stats(profiler).stats)  # type: ignore[attr-defined]
    for label, seconds, calls in focus:
        print(f"  {label:<42} {seconds:7.3f} s  {100 * seconds / total:5.1f}%  ({calls} calls)")
    generate, vision, prefill = (focus[i][1] for i in (1, 2, 3))
    decode = generate - vision - prefill
    print(f"  {'generate: decode steps (the rest)':<42} {decode:7.3f} s  {100 * decode / total:5.1f}%  "
          f"({1000 * decode / max(1, args.tokens - 1):.1f} ms per step after the first)")
    print("grpo_step's own timers:")
    for key, value in metrics.items():
        if key.startswith("time/"):
            print(f"  {key[5:]:<18} {value:7.3f} s  {100 * value / total:5.1f}%")
    print("  old log-probs: recorded by the sampler's logits processor (no separate forward pass)")


# ------------------------------------------------------------------------------------------ driver


def prepare(args: argparse.Namespace, work: Path) -> None:
    """The tiny model and the counting dataset, written once into `work` (reused when already there)."""
    from vlm_rl.data import write_dataset
    from vlm_rl.models import TinyVLMConfig, build_tiny_vlm

    if not (work / "model" / "config.json").exists():
        build_tiny_vlm(TinyVLMConfig(), work / "model", seed=args.seed)
    if not (work / "data" / "dataset.json").exists():
        write_dataset(work / "data", "counting", args.n_train, N_TEST, 0, args.seed, 112)


def _child(side: str, args: argparse.Namespace, work: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--workdir", str(work),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--prompts", str(args.prompts),
           "--group", str(args.group), "--tokens", str(args.tokens), "--micro-batch", str(args.micro_batch),
           "--lr", repr(args.lr), "--seed", str(args.seed)] + (["--allow-eos"] if args.allow_eos else [])
    proc = subprocess.run(cmd, env={**os.environ, **THREAD_ENV}, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"the {side} side failed (exit code {proc.returncode})")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _merge(runs: list[dict], warmup: int) -> dict:
    """Pool the timed steps (after `warmup`) of every round of one side."""
    timed = [t for r in runs for t in r["step_s"][warmup:]]
    cpu = [t for r in runs for t in r["cpu_s"][warmup:]]
    steps = [s for r in runs for s in r["per_step"][warmup:]]
    out = {"median": statistics.median(timed), "min": min(timed), "max": max(timed), "n": len(timed),
           "cpu_median": statistics.median(cpu),
           "round_medians": [statistics.median(r["step_s"][warmup:]) for r in runs],
           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
           "rss_before_steps_mb": max(r["rss_before_steps_mb"] for r in runs), "params": runs[0]["params"]}
    for key in ("sequences", "gen_tokens", "prompt_tokens", "forwards", "images", "optimizer_steps"):
        values = [s[key] for s in steps]
        out[key] = (min(values), max(values))
    out["reward"] = statistics.mean(s.get("reward", float("nan")) for s in steps)
    out["mean_len"] = statistics.mean(s["gen_tokens"] / s["sequences"] for s in steps)
    if "split" in steps[0]:
        out["split"] = {k: statistics.median(s["split"][k] for s in steps) for k in steps[0]["split"]}
    return out


def _span(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}-{pair[1]}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(args: argparse.Namespace, lab: dict, trl: dict, load_at_start: str) -> None:
    import platform

    import torch
    import transformers
    import trl as trl_pkg

    eos = "EOS banned" if not args.allow_eos else "EOS allowed"
    print(f"vlm GRPO step, tiny Qwen2.5-VL ({lab['params'] / 1e6:.2f}M parameters), counting task: "
          f"{args.prompts} prompts x {args.group} generations x {args.tokens} new tokens ({eos}), temperature 1, "
          f"lr {args.lr:g}, beta 0, micro-batch {args.micro_batch}, fp32, 1 thread")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_pkg.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs; load average (1/5/15 min) "
          f"{load_at_start} at start, {_load()} at end")
    print(f"{args.warmup} warm-up steps not timed, then {args.steps} timed steps per side and round, "
          f"{args.rounds} round(s) in ABBA order")
    print()
    header = (f"{'side':<5} {'s/step':>7} {'steps/s':>8} {'min':>6} {'max':>6} {'CPU s/step':>10}  "
              f"per-round median s/step")
    print(header)
    print("-" * len(header))
    for name, r in (("lab", lab), ("trl", trl)):
        rounds = " ".join(f"{m:.3f}" for m in r["round_medians"])
        print(f"{name:<5} {r['median']:7.3f} {1 / r['median']:8.3f} {r['min']:6.3f} {r['max']:6.3f} "
              f"{r['cpu_median']:10.3f}  {rounds}")
    print()
    header = (f"{'side':<5} {'seqs':>5} {'gen tok':>8} {'mean len':>8} {'prompt tok':>11} {'fwd':>4} {'images':>6} "
              f"{'peak RSS MB':>11} {'RSS before steps MB':>19} {'reward':>7}")
    print(header)
    print("-" * len(header))
    for name, r in (("lab", lab), ("trl", trl)):
        print(f"{name:<5} {_span(r['sequences']):>5} {_span(r['gen_tokens']):>8} {r['mean_len']:8.1f} "
              f"{_span(r['prompt_tokens']):>11} {_span(r['forwards']):>4} {_span(r['images']):>6} "
              f"{r['peak_rss_mb']:11.0f} {r['rss_before_steps_mb']:19.0f} {r['reward']:7.3f}")
    print()
    print("s/step: wall-clock median over the timed steps of all rounds (CPU s/step: process CPU time, less "
          "sensitive to other jobs);\nper step: seqs = sequences, gen tok = completion tokens generated, prompt tok "
          "= non-pad prompt tokens, fwd = model forward calls\n(decoding steps + training micro-batches), images = "
          "images through the vision tower; ranges are over steps")
    split = lab.get("split", {})
    if split:
        print("lab split (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in split.items()))
    print(f"CPU-time ratio: {trl['cpu_median'] / lab['cpu_median']:.3f} (TRL CPU s/step over lab CPU s/step)")
    print(f"ratio: {trl['median'] / lab['median']:.3f} (lab steps/s over TRL steps/s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per side and round (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps before them (default 3)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per optimizer step (default 16)")
    parser.add_argument("--group", type=int, default=8, help="generations per prompt (default 8)")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per completion (default 40)")
    parser.add_argument("--micro-batch", type=int, default=64,
                        help="sequences per forward/backward pass on both sides (default 64, the lab's "
                             "train.micro_batch_size); must divide prompts x group")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate, both sides (default 2e-4)")
    parser.add_argument("--rounds", type=int, default=2, help="repeats of the pair, ABBA order (default 2)")
    parser.add_argument("--n-train", type=int, default=256, help="training rows of the generated dataset")
    parser.add_argument("--seed", type=int, default=0, help="model init, data and sampling seed (default 0)")
    parser.add_argument("--allow-eos", action="store_true",
                        help="let completions stop at EOS (lengths then differ; see the mean len column)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for the model and dataset (kept; default: a temporary folder)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the comparison: cProfile one lab step after --warmup steps")
    parser.add_argument("--profile-rows", type=int, default=40, help="rows of the cProfile table (default 40)")
    parser.add_argument("--side", choices=("lab", "trl"), default=None,
                        help="internal: run one side in this process and print its result as JSON")
    args = parser.parse_args(argv)
    if args.prompts * args.group % args.micro_batch:
        parser.error(f"--micro-batch {args.micro_batch} must divide prompts x group = {args.prompts * args.group}")
    if min(args.steps, args.prompts, args.tokens, args.rounds) < 1 or args.warmup < 0 or args.group < 2:
        parser.error("--steps, --prompts, --tokens, --rounds must be >= 1, --warmup >= 0, --group >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update(THREAD_ENV)  # before torch is imported (children inherit it too)
    if args.side is not None:
        result = (run_lab if args.side == "lab" else run_trl)(args, args.workdir)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    load_at_start = _load()
    with tempfile.TemporaryDirectory(prefix="vlm-grpo-bench-") as tmp:
        work = args.workdir or Path(tmp)
        prepare(args, work)
        if args.profile:
            run_profile(args, work)
            return
        runs: dict[str, list[dict]] = {"lab": [], "trl": []}
        for r in range(args.rounds):
            for side in ("lab", "trl") if r % 2 == 0 else ("trl", "lab"):
                print(f"round {r + 1}/{args.rounds}: {side} ...", file=sys.stderr, flush=True)
                runs[side].append(_child(side, args, work))
        report(args, _merge(runs["lab"], args.warmup), _merge(runs["trl"], args.warmup), load_at_start)


if __name__ == "__main__":
    main()
