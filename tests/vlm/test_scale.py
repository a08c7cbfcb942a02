"""The scale path of the vlm track (issue 3, part 7): device, bf16, gradient checkpointing, LoRA and data
parallelism (shared.lm.runtime), on a tiny Qwen2.5-VL.

On the CPU (CI): the options are validated naming the key; one SFT / GRPO / DAPO / PAPO step under ddp and
fsdp with two gloo processes equals one process's step on the global batch; `accelerate launch` with two
processes trains a short run in which only rank 0 writes; gradient checkpointing gives the same loss and
gradients; LoRA trains only the adapters and final/ is a plain merged model folder; bf16 runs on the CPU.

Marked `gpu` (skipped without CUDA; `OMP_NUM_THREADS=4 .venv/bin/python -m pytest -m gpu -x -q`): short
train runs on cuda in fp32, bf16 + gradient checkpointing, and bf16 + checkpointing + LoRA, with every model
input checked to be on cuda, and the sampler/trainer log-prob guard on cuda in fp32 and bf16.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError, load_config, to_yaml
from shared.lm.logprobs import completion_logprobs
from shared.lm.runtime import Runtime, has_lora, merge_lora_state, save_model
from shared.lm.sampling import sample_completions
from shared.tracking import read_manifest, read_metrics
from shared.tracking.run import Run
from vlm_rl.data import write_dataset
from vlm_rl.models import TinyVLMConfig, build_tiny_vlm, load_vlm
from vlm_rl.track import CONFIGS_DIR, VLMConfig, build_setup, load_data, train

sys.path.insert(0, str(Path(__file__).parent))
import scale_worker  # noqa: E402  (the worker the launched processes run; its cases are shared here)

REPO = Path(__file__).resolve().parents[2]
PIXELS = scale_worker.PIXELS
TINY_MODEL = TinyVLMConfig(hidden_size=64, num_layers=1, intermediate_size=128, vision_depth=1, vision_hidden_size=32,
                           vision_intermediate_size=64, min_pixels=PIXELS, max_pixels=PIXELS)
TINY = [  # a run of 3 warm-up + 3 GRPO steps on the tiny model built on the spot, with KL and PAPO on
    "model.tiny.hidden_size=64", "model.tiny.num_layers=1", "model.tiny.intermediate_size=128",
    "model.tiny.vision_depth=1", "model.tiny.vision_hidden_size=32", "model.tiny.vision_intermediate_size=64",
    f"model.tiny.min_pixels={PIXELS}", f"model.tiny.max_pixels={PIXELS}", f"vision.min_pixels={PIXELS}",
    f"vision.max_pixels={PIXELS}", "data.val_size=4", "sft.steps=3", "sft.batch_size=4", "sft.target_accuracy=0",
    "train.steps=3", "train.save_every=2", "train.eval_every=0", "eval.size=5", "eval.media_items=2",
    "rl.prompts_per_step=2", "rl.group_size=4", "rl.max_new_tokens=10", "rl.kl_coef=0.05", "papo.gamma=0.02",
]
LORA = ["model.lora.r=4", "model.lora.alpha=8"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny model folder, 56 px counting dataset with 16 train rows of which 4 val, 5 test, 4 test_ood)."""
    root = tmp_path_factory.mktemp("scale")
    dataset = write_dataset(root / "data", "counting", 16, 5, 4, seed=0, image_size=56)
    return build_tiny_vlm(TINY_MODEL, root / "model", seed=0), dataset


def _config(dataset: Path, *extra: str) -> VLMConfig:
    return load_config(VLMConfig, "default", [*TINY, f"data.path={dataset}", *extra], CONFIGS_DIR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="")  # gloo on the CPU, even where a GPU is present
    return env


def _guard_gap(setup, items: list[dict], group_size: int = 3, max_new_tokens: int = 12) -> tuple[float, float]:
    """(max, mean) |sampler log-prob - training forward log-prob| over the sampled tokens, on setup's runtime."""
    rt = setup.runtime
    torch.manual_seed(0)
    with rt.autocast():
        ro = sample_completions(setup.model, setup.tokenizer, setup.prompts(items), group_size, max_new_tokens,
                                1.0, setup.banned_ids, setup.eos_id, setup.pad_id, slicer=setup.slice_extras)
        with torch.no_grad():
            logp, _ = completion_logprobs(setup.model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids,
                                          ro.completion_mask, setup.banned_tensor(), 1.0, ro.model_inputs)
        if rt.dtype == "bfloat16":  # the forwards really ran in bf16
            with torch.no_grad():
                out = setup.model(input_ids=ro.prompt_ids, attention_mask=ro.prompt_mask, logits_to_keep=1,
                                  **ro.model_inputs)
            assert out.logits.dtype == torch.bfloat16
    valid = ro.completion_mask.bool()
    gap = (logp - ro.logp).abs()[valid]
    assert torch.isfinite(ro.logp[valid]).all() and valid.any()
    return float(gap.max()), float(gap.mean())


# --------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(("override", "key"), [
    ("model.dtype=float16", "model.dtype"), ("system.device=tpu", "system.device"),
    ("system.distributed=horovod", "system.distributed"), ("model.lora.r=-1", "model.lora.r"),
    ("model.lora.dropout=1.5", "model.lora.dropout"), ("model.lora.target_modules=[]", "model.lora.target_modules"),
])
def test_scale_options_are_checked_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(VLMConfig, "default", ["model.lora.r=4", override], CONFIGS_DIR)
    assert key in str(err.value)


def test_shares_must_divide_by_the_launch_and_fsdp_says_what_it_lacks(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="rl.prompts_per_step: 3 is not divisible by the 2 processes"):
        load_config(VLMConfig, "default", ["rl.prompts_per_step=3"], CONFIGS_DIR)
    with pytest.raises(ConfigError, match="sft.batch_size"):
        load_config(VLMConfig, "default", ["sft.batch_size=5"], CONFIGS_DIR)
    with pytest.raises(ConfigError, match="rl.kl_coef"):
        load_config(VLMConfig, "default", ["system.distributed=fsdp"], CONFIGS_DIR)  # the default has kl_coef 0.05
    with pytest.raises(ConfigError, match="model.lora.r"):
        load_config(VLMConfig, "default", ["system.distributed=fsdp", "rl.kl_coef=0", "model.lora.r=8"], CONFIGS_DIR)
    assert load_config(VLMConfig, "default", ["system.distributed=none", "rl.prompts_per_step=3"], CONFIGS_DIR)
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: ddp / fsdp mean nothing, nothing to divide
    assert load_config(VLMConfig, "default", ["system.distributed=ddp", "rl.prompts_per_step=3"], CONFIGS_DIR)


def test_default_runtime_is_one_cpu_process_in_float32(world) -> None:
    model_dir, dataset = world
    cfg = _config(dataset, f"model.path={model_dir}", "system.device=cpu")
    setup = build_setup(cfg, load_data(cfg.data))
    rt = setup.runtime
    assert (rt.device.type, rt.dtype, rt.distributed, rt.world_size, rt.is_main) == ("cpu", "float32", "none", 1, True)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in setup.model.parameters())
    assert not has_lora(setup.model) and not _checkpointing(setup.model)


# ---------------------------------------------------------------------------------- data parallelism


def test_one_ddp_or_fsdp_step_equals_one_process_on_the_global_batch(world, tmp_path) -> None:
    """Two gloo processes (torchrun), each on half of the 4 prompts: after one SGD step of each case the weights
    equal those of one process on all 4 (SGD, so a wrong loss normalisation would show), in ddp and fsdp."""
    model_dir, dataset = world
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         str(Path(scale_worker.__file__)), str(model_dir), str(dataset), str(tmp_path)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reference = {name: scale_worker.run_case(name, model_dir, dataset) for name in scale_worker.CASES}
    start = load_vlm(model_dir)[0].state_dict()
    for mode, names in (("ddp", tuple(scale_worker.CASES)), ("fsdp", scale_worker.FSDP_CASES)):
        results = torch.load(tmp_path / f"{mode}.pt", weights_only=False)
        assert sorted(results) == sorted(names)
        for name in names:
            (want, want_metrics), got = reference[name], results[name]
            assert got["in_sync"], f"{mode}/{name}: the two processes' weights differ"
            assert got["state"].keys() == want.keys()
            moved = max(float((want[k] - start[k]).abs().max()) for k in want if k in start)
            assert moved > 1e-4, f"{name}: the step changed nothing, the comparison would prove nothing"
            for key in want:
                torch.testing.assert_close(got["state"][key], want[key], atol=1e-6, rtol=1e-5,
                                           msg=f"{mode}/{name}: {key}")
            for key in ("sft/loss", "grad_norm", "reward", "kl", "papo/kl", "kept_frac"):
                if key in want_metrics:
                    assert got["metrics"][key] == pytest.approx(want_metrics[key], rel=1e-5, abs=1e-7), key
    assert results["dapo"]["metrics"]["kept_frac"] == 0.5  # rank 1 kept nothing and still took part


def test_accelerate_launch_two_processes_trains_and_only_rank_0_writes(world, tmp_path) -> None:
    """`accelerate launch -m shared.cli train vlm` with two CPU processes: every step logged once, eval shards
    gathered (5 items over 2 processes), checkpoints, a final/ that loads, the run marked finished."""
    _, dataset = world
    run_dir = tmp_path / "run"
    sets = [*TINY, f"data.path={dataset}", "sft.target_accuracy=0.99", "sft.check_every=1", "sft.check_size=3",
            "rl.kl_coef=0.05", "papo.gamma=0", "train.eval_every=3"]
    proc = _launch(tmp_path, ["--run-dir", str(run_dir)], sets)
    records = read_metrics(run_dir)
    steps = [r["step"] for r in records if "nonfinite" in r]
    assert steps == list(range(1, 7)), "every step exactly once (rank 1 writes nothing)"
    assert all(r["nonfinite"] == 0 for r in records if "nonfinite" in r)
    assert [r["step"] for r in records if "eval/test/items" in r] == [3, 6]
    assert all(r["eval/test/items"] == 5 for r in records if "eval/test/items" in r)
    assert all("sft/val_accuracy" in r for r in records if r.get("warmup") == 1)
    assert len([m for m in read_manifest(run_dir) if m.group == "eval/test"]) == 4  # 2 items x 2 evals
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    model, _ = load_vlm(run_dir / "final")
    assert not has_lora(model)
    assert proc.stderr.count(f"run: {run_dir}") == 1


def _launch(cwd: Path, args: list[str], sets: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
           "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", f"--main_process_port={_free_port()}",
           "-m", "shared.cli", "train", "vlm", *args]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.slow
def test_a_resumed_two_process_run_ends_with_the_same_weights(world, tmp_path) -> None:
    """Two processes: 2 warm-up + 2 GRPO steps, then resumed to 4 GRPO steps (each process gets its own RNG
    state back from the checkpoint) = 2 + 4 steps without a stop, bit for bit."""
    from safetensors.torch import load_file

    _, dataset = world
    sets = [*TINY, f"data.path={dataset}", "sft.steps=2", "train.lr_schedule=constant", "train.lr_warmup_steps=0",
            "papo.gamma=0"]
    _launch(tmp_path, ["--run-dir", str(tmp_path / "whole")], [*sets, "train.steps=4"])
    _launch(tmp_path, ["--run-dir", str(tmp_path / "cut")], [*sets, "train.steps=2"])
    _launch(tmp_path, ["--resume", str(tmp_path / "cut")], ["train.steps=4"])
    steps = [r["step"] for r in read_metrics(tmp_path / "cut") if "nonfinite" in r]
    assert steps == list(range(1, 7))
    want = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    got = load_file(tmp_path / "cut" / "final" / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------------------ checkpointing, LoRA, bf16


def _sft_loss_and_grads(setup, items: list[dict]) -> tuple[float, dict[str, torch.Tensor]]:
    setup.model.train()
    setup.model.zero_grad(set_to_none=True)
    prompts = setup.prompts(items)
    ids, mask = setup.encode_targets(items)
    extras = {k: v for k, v in prompts.items() if k not in ("input_ids", "attention_mask")}
    with setup.runtime.autocast():
        logp, _ = completion_logprobs(setup.model, prompts["input_ids"], prompts["attention_mask"], ids, mask,
                                      setup.banned_tensor(), 1.0, extras)
    loss = -(logp * mask).sum() / mask.sum()
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in setup.model.named_parameters() if p.grad is not None}


def _checkpointing(model) -> bool:
    flag = getattr(type(model), "is_activation_checkpointing", None)  # the newer name (transformers >= 5.24)
    return bool(model.is_activation_checkpointing if flag is not None else model.is_gradient_checkpointing)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(world) -> None:
    model_dir, dataset = world
    cfg = _config(dataset, f"model.path={model_dir}")
    data = load_data(cfg.data)
    items = data.train[:3]
    plain = build_setup(cfg, data)
    ckpt = build_setup(_config(dataset, f"model.path={model_dir}", "model.gradient_checkpointing=true"), data)
    assert _checkpointing(ckpt.model) and not _checkpointing(plain.model)
    calls = []
    attention = ckpt.model.model.language_model.layers[0].self_attn  # inside the checkpointed block: recomputed
    hook = attention.register_forward_hook(lambda *_: calls.append(1))
    try:
        loss_ckpt, grads_ckpt = _sft_loss_and_grads(ckpt, items)
    finally:
        hook.remove()
    assert len(calls) == 2, "the decoder block ran again in the backward pass (its activations were not kept)"
    loss, grads = _sft_loss_and_grads(plain, items)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    assert grads.keys() == grads_ckpt.keys() and len(grads) == len(list(plain.model.parameters()))
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_lora_trains_only_the_adapters_and_final_is_a_plain_merged_model(world, tmp_path) -> None:
    from peft.tuners.lora import LoraLayer

    from shared.lm.steps import sft_step
    from shared.lm.trainer import lr_lambda

    model_dir, dataset = world
    cfg = _config(dataset, f"model.path={model_dir}", *LORA, "sft.lr=0.05")
    data = load_data(cfg.data)
    setup = build_setup(cfg, data)
    model = setup.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all("language_model" in n for n in trainable), "the vision tower gets no adapters"
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.sft.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("constant", 0, 1))
    for k in range(3):
        assert sft_step(setup, data.train[4 * k: 4 * k + 4], opt, sched, cfg.train)["nonfinite"] == 0
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != p.requires_grad, f"{name}: frozen iff not an adapter"
    out = tmp_path / "final"
    save_model(model, out, setup.runtime)
    setup.save_extra(out)
    loaded, _ = load_vlm(out)
    assert not has_lora(loaded) and loaded.state_dict().keys() == load_vlm(model_dir)[0].state_dict().keys()
    merged = copy.deepcopy(model)  # peft's own merge, in memory
    for module in merged.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    items = data.split("test")[:3]
    for other, atol in ((merged, 1e-6), (model, 1e-5)):  # merged in memory; adapters applied on the fly
        got, want = _logp_of(loaded, setup, items), _logp_of(other, setup, items)
        torch.testing.assert_close(got, want, atol=atol, rtol=0)
    state = merge_lora_state(model, model.state_dict())
    assert not any(".lora_" in k or "base_layer" in k for k in state)


def _logp_of(model, setup, items: list[dict]) -> torch.Tensor:
    """Training log-probs of the items' demonstrations under `model` (setup's prompts and targets)."""
    prompts = setup.prompts(items)
    ids, mask = setup.encode_targets(items)
    extras = {k: v for k, v in prompts.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logp, _ = completion_logprobs(model.eval(), prompts["input_ids"], prompts["attention_mask"], ids, mask,
                                      setup.banned_tensor(), 1.0, extras)
    return logp


def _short_run(dataset: Path, run_dir: Path, *extra: str, hooks: list | None = None, monkeypatch=None) -> list[dict]:
    """Train the TINY run with `extra` overrides; with `hooks`, record (name, device, dtype) of every tensor
    that goes into the policy's (and the reference copy's) forward."""
    import vlm_rl.track as track

    cfg = _config(dataset, *extra)
    if hooks is not None:
        real = track.build_setup

        def hooked(*args, **kwargs):
            setup = real(*args, **kwargs)

            def record(_module, args, kwargs):
                for name, value in [*enumerate(args), *kwargs.items()]:
                    if isinstance(value, torch.Tensor):
                        hooks.append((name, value.device.type, value.dtype))

            setup.model.register_forward_pre_hook(record, with_kwargs=True)
            hooks.append(("parameters", {p.device.type for p in setup.model.parameters()}, None))
            return setup

        monkeypatch.setattr(track, "build_setup", hooked)
    with Run.create("vlm", cfg.name, to_yaml(cfg), cfg.train.seed, run_dir=run_dir, tensorboard=False) as run:
        train(cfg, run, resuming=False)
    return read_metrics(run_dir)


def _check_run(records: list[dict], run_dir: Path) -> None:
    steps = [r for r in records if "nonfinite" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(r["nonfinite"] == 0 for r in steps)
    for r in records:
        for key, value in r.items():
            if isinstance(value, float) or value is None:
                assert value is not None and math.isfinite(value), (r["step"], key)
    assert any("sft/loss" in r for r in records) and any("papo/kl" in r and "kl" in r for r in records)
    model, processor = load_vlm(run_dir / "final")
    assert not has_lora(model) and hasattr(processor, "image_processor")


def test_bfloat16_with_checkpointing_and_lora_trains_on_the_cpu(world, tmp_path) -> None:
    """bf16 on the CPU works (slowly: autocast); the guard then holds to bf16 precision, not 1e-5."""
    _, dataset = world
    run_dir = tmp_path / "bf16"
    records = _short_run(dataset, run_dir, "model.dtype=bfloat16", "model.gradient_checkpointing=true", *LORA)
    _check_run(records, run_dir)
    model_dir = run_dir / "final"
    cfg = _config(dataset, f"model.path={model_dir}", "model.dtype=bfloat16", "eval.size=3")
    setup = build_setup(cfg, load_data(cfg.data))
    assert setup.runtime.dtype == "bfloat16" and all(p.dtype == torch.float32 for p in setup.model.parameters())
    worst, mean = _guard_gap(setup, setup.eval_items("test")[:3])
    print(f"bf16 autocast on the CPU: sampler vs trainer log-probs max {worst:.2e}, mean {mean:.2e}")
    assert mean < 0.05 and worst < 0.5


# ------------------------------------------------------------------------------------------------- gpu


@pytest.mark.gpu
@pytest.mark.parametrize("options", [(), ("model.dtype=bfloat16", "model.gradient_checkpointing=true"),
                                     ("model.dtype=bfloat16", "model.gradient_checkpointing=true", *LORA)],
                         ids=["fp32", "bf16-ckpt", "bf16-ckpt-lora"])
def test_cuda_short_run(world, tmp_path, monkeypatch, options: tuple[str, ...]) -> None:
    """A few warm-up and GRPO steps (KL reference, PAPO) on cuda: finite metrics, a loadable final/, and every
    tensor that reaches the model (prompts, targets, pixels, PAPO's masked inputs) on cuda."""
    _, dataset = world
    seen: list = []
    run_dir = tmp_path / "run"
    records = _short_run(dataset, run_dir, "system.device=cuda", *options, hooks=seen, monkeypatch=monkeypatch)
    _check_run(records, run_dir)
    params = [entry for entry in seen if entry[0] == "parameters"]
    assert params and all(devices == {"cuda"} for _, devices, _ in params)
    inputs = [entry for entry in seen if entry[0] != "parameters"]
    names = {name for name, _, _ in inputs}
    assert {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"} <= names
    off = {(name, device) for name, device, _ in inputs if device != "cuda"}
    assert not off, f"model inputs not on cuda: {sorted(off)}"


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "max_gap", "mean_gap"), [("float32", 1e-5, 1e-6), ("bfloat16", 0.5, 0.05)])
def test_cuda_sampler_and_trainer_logprobs_agree(world, dtype: str, max_gap: float, mean_gap: float) -> None:
    """The guard of tests/vlm/test_vlm_logprobs.py on cuda: float32 within 1e-5 as on the CPU (an H200 gave
    max 9.5e-7), bfloat16 autocast to bf16 precision."""
    model_dir, dataset = world
    cfg = _config(dataset, f"model.path={model_dir}", "system.device=cuda", f"model.dtype={dtype}")
    setup = build_setup(cfg, load_data(cfg.data))
    assert setup.runtime.device.type == "cuda" and next(setup.model.parameters()).is_cuda
    worst, mean = _guard_gap(setup, setup.eval_items("test")[:4])
    print(f"cuda {dtype}: sampler vs trainer log-probs max {worst:.2e}, mean {mean:.2e}")
    assert worst < max_gap and mean < mean_gap


def test_runtime_defaults_keep_the_cpu_path() -> None:
    rt = Runtime()
    t = torch.ones(2)
    assert rt.to_device({"a": t})["a"] is t and rt.share([1, 2, 3]) == [1, 2, 3] and rt.sum([2.0]) == [2.0]
    assert rt.mean_metrics({"x": 1.0}) == {"x": 1.0} and rt.rng_devices == [] and rt.sampling_kwargs == {}
