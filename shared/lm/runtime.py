"""Where and how the LM loop runs: device, precision and data parallelism (the scale path).

A `Runtime` is built once per process from the config (`build_runtime`) and travels in
`LMSetup.runtime`; `prepare_model` applies the model options (LoRA, gradient checkpointing, storage
dtype, device, sharding). The default `Runtime()` is one process on the CPU in float32: the loop
then does exactly what it did before the scale path existed.

Precision (model.dtype). ``float32``: everything in fp32. ``bfloat16``: every forward pass
(sampling, training, reference model, evals) runs under ``torch.autocast(bfloat16)``, while the
trainable weights, their gradients and AdamW's state stay float32 (master weights: bf16 updates of
small learning rates would round away). Frozen weights (the base model under LoRA) are stored in
bfloat16, which halves their memory and changes nothing in the matrix products (autocast feeds
them bf16 anyway).

Data parallelism (system.distributed), under a launcher that sets RANK / WORLD_SIZE / LOCAL_RANK
(``accelerate launch``, ``torchrun``):

- ``ddp``: every process holds the whole model (rank 0's weights are broadcast at start) and takes
  an equal, disjoint share of each step's prompts. Gradients accumulate locally over the micro-batches
  and are averaged across processes once per optimizer step (`Runtime.average_gradients`), so every
  process applies the same update. The losses are normalised by GLOBAL counts (tokens, sequences or
  rows, all-reduced), so one step equals one single-process step on the global batch. This is
  DistributedDataParallel's arithmetic without its per-backward reducer hooks: an RL step's backward
  passes differ between processes (dynamic sampling leaves a process fewer rows, or none; PAPO runs a
  second forward of the same weights), and the reducer requires every process to run the same
  backward calls with every parameter used once.
- ``fsdp``: parameters, gradients and optimizer state sharded with torch's FSDP2 (``fully_shard``,
  one unit per transformer block as named by the model's ``_no_split_modules``, then the root; what
  accelerate's FSDP2 plugin does with transformer_based_wrap). Accelerate's plugin itself is not used:
  it only engages on CUDA, and this path is tested on CPU (gloo). Every forward and backward is a
  collective, so processes run in lockstep: each runs the same number of micro-batches (padding with
  zero-weight ones), evals pad their shards to equal length, and sampling passes ``synced_gpus``.
  Checkpoints gather full state dicts onto rank 0.

Only rank 0 writes the run folder (metrics, checkpoints, media, final/); all processes read a
checkpoint to resume, so the run folder must be on a filesystem every process sees (one node).
Torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

BF16 = "bfloat16"


# ------------------------------------------------------------------------------------------ launch


def launch_world_size() -> int:
    """Processes of this launch (WORLD_SIZE, set by accelerate launch / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launch_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def launch_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0)


def resolve_distributed(mode: str, world_size: int) -> str:
    """none, ddp or fsdp for system.distributed = `mode` with `world_size` processes.

    auto: none for one process, fsdp when accelerate's launcher was told --use_fsdp
    (ACCELERATE_USE_FSDP), ddp otherwise. One process is always none.
    """
    if world_size <= 1:
        return "none"
    if mode == "auto":
        return "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") else "ddp"
    return mode


def resolve_device(preference: str, world_size: int = 1) -> Any:
    """torch.device for system.device (auto: cuda when available); cuda:LOCAL_RANK under a launcher."""
    import torch

    from shared.config import ConfigError

    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("system.device", "cuda was asked for, but torch sees no CUDA device here")
        index = launch_local_rank() if world_size > 1 else torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_distributed(device: Any) -> None:
    """Join the launcher's process group (env://): nccl on CUDA, gloo on CPU. A no-op once joined."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def broadcast_object(obj: Any, device: Any = None) -> Any:
    """Rank 0's `obj` on every process (identity without a process group)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]


# ----------------------------------------------------------------------------------------- runtime


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


@dataclass
class Runtime:
    """Device, compute precision and this process's place in the launch (see the module docstring)."""

    device: Any = field(default_factory=_cpu)
    """torch.device of the model and of every tensor the loop builds."""
    dtype: str = "float32"
    """Compute precision (model.dtype): float32, or bfloat16 autocast."""
    distributed: str = "none"
    """none, ddp or fsdp."""
    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.distributed != "none" and self.world_size > 1

    def describe(self) -> str:
        where = f"{self.device} {self.dtype}"
        return where if not self.is_distributed else f"{where}, {self.distributed} rank {self.rank}/{self.world_size}"

    # -- precision and placement ----------------------------------------------------------------

    def autocast(self) -> Any:
        """Context of every forward pass: bf16 autocast, or nothing in float32."""
        if self.dtype != BF16:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def to_device(self, value: Any) -> Any:
        """`value` (a tensor, or a dict of them and other things) on this runtime's device."""
        if isinstance(value, dict):
            return {k: self.to_device(v) for k, v in value.items()}
        if hasattr(value, "to") and hasattr(value, "device") and value.device != self.device:
            return value.to(self.device)
        return value

    @property
    def rng_devices(self) -> list[int]:
        """CUDA devices whose generator `torch.random.fork_rng` must save (sampling draws there)."""
        return [self.device.index or 0] if self.device.type == "cuda" else []

    @property
    def sampling_kwargs(self) -> dict[str, Any]:
        """Extra `sample_completions` arguments: FSDP processes decode in lockstep until all are done."""
        return {"synced_gpus": True} if self.distributed == "fsdp" and self.world_size > 1 else {}

    # -- shares and collectives -----------------------------------------------------------------

    def share(self, items: list) -> list:
        """This process's contiguous, equal share of a global batch (its length divides by world_size)."""
        if not self.is_distributed:
            return items
        if len(items) % self.world_size:
            raise ValueError(f"{len(items)} items cannot be shared equally by {self.world_size} processes")
        k = len(items) // self.world_size
        return items[self.rank * k : (self.rank + 1) * k]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes (float64)."""
        if not self.is_distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def max(self, value: int) -> int:
        if not self.is_distributed:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        return self.max(int(bool(flag))) > 0

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order (a list of one without distribution)."""
        if not self.is_distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process."""
        return broadcast_object(obj, self.device) if self.is_distributed else obj

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as dist

            dist.barrier()

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Per-process step metrics -> their mean over the processes that logged them (equal shares),
        counts summed. Exact for means over equal shares (reward, correct, completion_len, sft/loss);
        a spread such as reward_std becomes the mean of the processes' spreads."""
        if not self.is_distributed:
            return metrics
        every = self.gather(metrics)
        out: dict[str, float] = {}
        for key in dict.fromkeys(k for m in every for k in m):
            values = [m[key] for m in every if key in m and isinstance(m[key], (int, float))]
            if not values:
                continue
            if key in SUMMED_METRICS:
                out[key] = type(values[0])(sum(values))
            elif key in AGREED_METRICS:
                out[key] = max(values)
            else:
                out[key] = sum(values) / len(values)
        return out

    # -- gradients ----------------------------------------------------------------------------------

    def average_gradients(self, params: list[Any]) -> None:
        """ddp: replace every trainable parameter's gradient by its mean over processes (a missing one
        counts as zero), in flat buckets. A no-op otherwise (FSDP reduces in its backward hooks)."""
        if not (self.is_distributed and self.distributed == "ddp"):
            return
        import torch
        import torch.distributed as dist

        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        for bucket in _buckets(grads, 1 << 25):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def clip_gradients(self, params: list[Any], max_norm: float) -> Any:
        """Global gradient norm (clipping to `max_norm`); with FSDP the norm is over all shards."""
        import torch

        if self.distributed != "fsdp":
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    # -- state -------------------------------------------------------------------------------------

    def model_state(self, model: Any) -> dict[str, Any]:
        """The model's full state dict (FSDP: gathered onto rank 0, empty elsewhere)."""
        if self.distributed != "fsdp":
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_model_state(self, model: Any, state: dict[str, Any]) -> None:
        if self.distributed != "fsdp":
            model.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, model: Any, optimizer: Any) -> dict[str, Any]:
        if self.distributed != "fsdp":
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
        if self.distributed != "fsdp":
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


SUMMED_METRICS = frozenset({"reward_failures"})
"""Step metrics that are counts: summed over processes, not averaged."""
AGREED_METRICS = frozenset({"nonfinite", "grad_norm", "lr", "skipped_no_signal"})
"""Step metrics every process computes identically (decided together, or after the gradient all-reduce)."""


def _buckets(tensors: list[Any], size: int) -> list[list[Any]]:
    """Consecutive groups of same-dtype, same-device tensors of about `size` elements each."""
    out: list[list[Any]] = []
    current: list[Any] = []
    count = 0
    for t in tensors:
        if current and (count + t.numel() > size or t.dtype != current[0].dtype or t.device != current[0].device):
            out.append(current)
            current, count = [], 0
        current.append(t)
        count += t.numel()
    if current:
        out.append(current)
    return out


def build_runtime(system: Any, dtype: str = "float32") -> Runtime:
    """The runtime of this process for a config's `system` section and model.dtype; joins the
    launcher's process group when the launch is distributed."""
    world = launch_world_size()
    mode = resolve_distributed(system.distributed, world)
    device = resolve_device(system.device, world if mode != "none" else 1)
    if mode == "none":
        if world > 1:
            log.warning("WORLD_SIZE=%d but system.distributed=none: every process trains alone", world)
        return Runtime(device=device, dtype=dtype)
    init_distributed(device)
    import torch.distributed as dist

    runtime = Runtime(device=device, dtype=dtype, distributed=mode, world_size=dist.get_world_size(),
                      rank=dist.get_rank())
    log.info("runtime: %s", runtime.describe())
    return runtime


# ------------------------------------------------------------------------------------------- model


def load_dtype(cfg: Any) -> str:
    """The dtype to load a ModelConfig's weights in: bfloat16 for a frozen LoRA base under
    model.dtype=bfloat16 (half the memory while loading), float32 otherwise (master weights)."""
    return BF16 if cfg.dtype == BF16 and cfg.lora.r > 0 else "float32"


def prepare_model(model: Any, cfg: Any, runtime: Runtime) -> Any:
    """Apply a ModelConfig's options to a freshly built or loaded model, in this order: LoRA adapters
    (base frozen; stored in bf16 under model.dtype=bfloat16), gradient checkpointing, the device, then
    the distribution (ddp: rank 0's weights broadcast; fsdp: sharded). Returns the model to train (the
    same object: adapters are injected in place)."""
    import torch

    if cfg.lora.r > 0:
        model = add_lora(model, cfg.lora)
        for p in model.parameters():
            if p.requires_grad:  # adapters: float32 master weights, whatever the base was loaded in
                p.data = p.data.float()
            elif runtime.dtype == BF16:
                p.data = p.data.to(torch.bfloat16)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    model.to(runtime.device)
    if runtime.is_distributed and runtime.distributed == "ddp":
        import torch.distributed as dist

        with torch.no_grad():
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)
    elif runtime.is_distributed and runtime.distributed == "fsdp":
        shard_model(model)
    return model


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation (gradient) checkpointing of every decoder/vision block: transformers'
    activation_checkpointing_enable, or gradient_checkpointing_enable where a version lacks it."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def add_lora(model: Any, lora: Any) -> Any:
    """Inject peft LoRA adapters into `model` in place (it stays the same transformers class, so
    generate and the forward are unchanged); only the adapters train."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules))
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"model.lora.target_modules={list(lora.target_modules)} matched no layer of the model")
    return model


def shard_model(model: Any) -> Any:
    """FSDP2: one `fully_shard` unit per transformer block (the model's _no_split_modules), then the root."""
    from torch.distributed.fsdp import fully_shard

    names = set(getattr(model, "_no_split_modules", None) or [])
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in names:
            fully_shard(module)
    fully_shard(model)
    return model


def has_lora(model: Any) -> bool:
    """Whether `model` carries LoRA adapters (by parameter name: peft is imported only when it does)."""
    return any(".lora_A." in name for name, _ in model.named_parameters())


def merge_lora_state(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """`state` (a full state dict of `model` with LoRA adapters) with the adapters merged into their
    base weights, W + (B @ A) * alpha / r, under the keys of the model without adapters."""
    from peft.tuners.lora import LoraLayer

    out = dict(state)
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        base = out.pop(f"{name}.base_layer.weight")
        merged = base.float()
        for adapter in module.active_adapters:
            a = out.pop(f"{name}.lora_A.{adapter}.weight").float()
            b = out.pop(f"{name}.lora_B.{adapter}.weight").float()
            merged = merged + (b @ a) * module.scaling[adapter]
        out[f"{name}.weight"] = merged.to(base.dtype)
        if f"{name}.base_layer.bias" in out:
            out[f"{name}.bias"] = out.pop(f"{name}.base_layer.bias")
    left = [k for k in out if ".lora_" in k or ".base_layer." in k]
    if left:
        raise ValueError(f"LoRA weights left after merging (unsupported adapter layers?): {left[:3]}")
    return out


def save_model(model: Any, out: Any, runtime: Runtime) -> None:
    """`model.save_pretrained(out)` as a plain model folder: LoRA adapters merged, FSDP shards gathered.
    Collective under FSDP (every process calls it); only rank 0 writes."""
    lora = has_lora(model)
    if not lora and runtime.distributed != "fsdp":
        if runtime.is_main:
            model.save_pretrained(out)
        return
    state = runtime.model_state(model)
    if not runtime.is_main:
        return
    if lora:
        state = merge_lora_state(model, state)
    model.save_pretrained(out, state_dict=state)
