"""One optimizer step of several SFT / GRPO cases on a tiny Qwen2.5-VL, alone or as one of the processes
of a launch (tests/vlm/test_scale.py runs it under torchrun with 2 gloo processes).

Under a launch it runs every case in ddp mode, then the FSDP_CASES in fsdp mode, each on its process's
share of the same 4 prompts, and rank 0 saves the weights after the step and the step's metrics to
``OUT/<mode>.pt``. In-process (`run_case` with the default `Runtime`) it is the single-process reference.

GRPO's rollouts are fixed (`FixedSampler`: the same texts for an item wherever it is sampled, old
log-probs from the current weights), so one process and two give the same batch.

    python -m torch.distributed.run --nproc_per_node 2 tests/vlm/scale_worker.py MODEL_DIR DATASET OUT
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

PIXELS = 3136  # 56 x 56 images: 4 visual tokens
BASE = ["sft.batch_size=4", "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=16",
        "rl.kl_coef=0", "train.grad_clip=0", "train.micro_batch_size=64", f"vision.min_pixels={PIXELS}",
        f"vision.max_pixels={PIXELS}", "data.val_size=4", "sft.target_accuracy=0"]
CASES: dict[str, dict[str, Any]] = {
    # warm-up SFT, one target token per micro-batch row
    "sft": {"kind": "sft", "set": ["train.micro_batch_size=1"]},
    # GRPO with a KL reference model, an entropy bonus, clipping and unequal micro-batches (8 local rows: 3+3+2)
    "grpo": {"kind": "grpo", "set": ["rl.kl_coef=0.05", "rl.entropy_coef=0.01", "train.micro_batch_size=3",
                                     "train.grad_clip=0.5"]},
    # DAPO's token-mean with dynamic sampling: the last two prompts (rank 1's share) have no signal, so
    # rank 1 keeps no row at all and joins with a masked-out one
    "dapo": {"kind": "grpo", "set": ["rl.aggregation=token_mean", "rl.dynamic_sampling=true", "rl.clip_high=0.28"],
             "uniform": (2, 3)},
    # PAPO with gradient through the masked branch: two forwards of the same weights per micro-batch
    "papo": {"kind": "grpo", "set": ["papo.gamma=0.05", "papo.mask_type=blank", "papo.masked_grad=true",
                                     "papo.eta_masked=0.01"]},
}
FSDP_CASES = ("sft", "dapo", "papo")
LR = 0.5
"""SGD: the update is the gradient itself, so any error in the loss normalisation shows."""


def config(model_dir: Path, dataset: Path, extra: list[str]) -> Any:
    from shared.config import load_config
    from vlm_rl.track import CONFIGS_DIR, VLMConfig

    return load_config(VLMConfig, "default", [*BASE, f"model.path={model_dir}", f"data.path={dataset}", *extra],
                       CONFIGS_DIR)


class FixedSampler:
    """Stands in for `sample_completions`: item -> the same G completions wherever it is sampled (mixed
    right and wrong answers, or all wrong for the `uniform` items), with the current weights' log-probs."""

    def __init__(self, uniform: set[str]) -> None:
        self.uniform = uniform
        self.items: list[dict] = []

    def texts(self, item: dict) -> list[str]:
        a = item["answer"]
        if item["id"] in self.uniform:
            return ["<answer>99</answer>"] * 4
        return [f"<think>I count them.</think><answer>{a}</answer>", f"<answer>{a}</answer>",
                "<think>no</think><answer>99</answer>", "no idea"]

    def __call__(self, model: Any, tokenizer: Any, prompt_inputs: dict, group_size: int, max_new_tokens: int,
                 temperature: float = 1.0, banned_ids: Any = (), eos_token_id: Any = None, pad_token_id: Any = None,
                 greedy: bool = False, slicer: Any = None, synced_gpus: bool = False) -> Any:
        from shared.lm.logprobs import completion_logprobs
        from shared.lm.sampling import Rollout, expand_inputs

        assert group_size == 4 and len(self.items) == len(prompt_inputs["input_ids"])
        device = prompt_inputs["input_ids"].device
        texts = [t for item in self.items for t in self.texts(item)]
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_new_tokens - 1] + [eos_token_id]
                for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            mask[i, : len(row)] = 1
        inputs = expand_inputs(prompt_inputs, group_size, slicer)
        extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logp, _ = completion_logprobs(model, inputs["input_ids"], inputs["attention_mask"], ids, mask,
                                          torch.tensor(sorted(set(banned_ids)), device=device), temperature, extras)
        model.train(was_training)
        return Rollout(prompt_ids=inputs["input_ids"], prompt_mask=inputs["attention_mask"], completion_ids=ids,
                       completion_mask=mask, logp=logp, texts=texts, group_size=group_size,
                       truncated=torch.zeros(len(rows), dtype=torch.bool, device=device), model_inputs=extras)


def run_case(name: str, model_dir: Path, dataset: Path, runtime: Any = None, extra: tuple[str, ...] = ()
             ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(weights after one step, the step's metrics averaged over processes) of case `name`, on this
    process's share of the 4 prompts."""
    import copy

    import shared.lm.steps as steps
    from shared.lm.runtime import Runtime
    from shared.lm.trainer import lr_lambda
    from vlm_rl.track import build_setup, load_data

    case = CASES[name]
    runtime = runtime or Runtime()
    cfg = config(model_dir, dataset, [*case["set"], *extra])
    data = load_data(cfg.data)
    setup = build_setup(cfg, data, runtime)
    items = data.train[:4]
    local = runtime.share(items)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
    if case["kind"] == "sft":
        metrics = steps.sft_step(setup, local, opt, sched, cfg.train)
    else:
        sampler = FixedSampler({items[i]["id"] for i in case.get("uniform", ())})
        sampler.items = local
        real, steps.sample_completions = steps.sample_completions, sampler
        try:
            ref = copy.deepcopy(setup.model).eval().requires_grad_(False) if cfg.rl.kl_coef > 0 else None
            metrics, _, _ = steps.grpo_step(setup, local, opt, sched, cfg.rl, cfg.train, ref_model=ref)
        finally:
            steps.sample_completions = real
    state = {k: v.detach().cpu().clone() for k, v in runtime.model_state(setup.model).items()}
    return state, runtime.mean_metrics(metrics)


def _in_sync(runtime: Any, state: dict[str, torch.Tensor]) -> bool:
    """Whether every process holds the same weights (ddp), by a checksum per tensor."""
    sums = [float(v.double().sum()) for v in state.values()]
    return all(s == sums for s in runtime.gather(sums))


def main(model_dir: str, dataset: str, out: str) -> None:
    from shared.lm.runtime import Runtime, init_distributed, launch_rank, launch_world_size

    torch.set_num_threads(1)
    device = torch.device("cpu")
    init_distributed(device)
    import torch.distributed as dist

    for mode, names in (("ddp", tuple(CASES)), ("fsdp", FSDP_CASES)):
        rt = Runtime(device=device, distributed=mode, world_size=launch_world_size(), rank=launch_rank())
        results: dict[str, Any] = {}
        for name in names:
            state, metrics = run_case(name, Path(model_dir), Path(dataset), rt)
            synced = _in_sync(rt, state) if mode == "ddp" else True
            results[name] = {"state": state, "metrics": metrics, "in_sync": synced}
        if rt.is_main:
            torch.save(results, Path(out) / f"{mode}.pt")
    # Leave together: a rank that tears gloo down while the other is still saving or in a collective was
    # seen to abort at exit ("terminate called without an active exception", once in ~20 runs).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
