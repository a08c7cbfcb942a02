"""Config sections every LM track (diag, vlm, svg) shares. Tracks nest them in their own root."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import choice, require

DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
DISTRIBUTED = ("auto", "none", "ddp", "fsdp")


@dataclass
class LoRAConfig:
    r: int = 0
    """LoRA rank (peft's LoraConfig.r); 0 turns LoRA off and trains every weight. With r > 0 only the
    adapters train, the base weights are frozen (and stored in bfloat16 when model.dtype=bfloat16), and
    the saved final/ model has the adapters merged in (a plain model folder)."""
    alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapters' input (0 keeps sampling and training log-probs equal)."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Names of the linear layers that get adapters: the attention projections of the language model by
    default (Qwen2.5-VL's vision tower names its projections qkv/proj, so it is left alone)."""

    def __post_init__(self) -> None:
        require(self.r >= 0, "model.lora.r", "must be >= 0 (0: no LoRA)")
        require(self.alpha > 0, "model.lora.alpha", "must be > 0")
        require(0 <= self.dropout < 1, "model.lora.dropout", "must be in [0, 1)")
        require(not self.r or bool(self.target_modules), "model.lora.target_modules", "must name at least one layer")


@dataclass
class ModelConfig:
    path: str = ""
    """Local Hugging Face model folder (e.g. /models/Qwen2.5-VL-3B-Instruct or runs/.../final).
    Empty: build the track's tiny model from scratch. Nothing is ever downloaded."""
    dtype: str = choice("float32", *DTYPES)
    """Compute precision. float32: everything in fp32. bfloat16: every forward pass (sampling, training,
    reference, evals) runs under torch.autocast(bfloat16); trainable weights, gradients and AdamW state
    stay float32 (master weights), frozen base weights under LoRA are stored in bfloat16. Meant for CUDA;
    it also runs on CPU (slowly). Sampling and training log-probs then agree to bf16 precision, not 1e-5."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (transformers' activation /
    gradient checkpointing, use_reentrant=False): less memory, about one more forward per update.
    Sampling (eval mode, KV cache on) is unaffected; training forwards never use the cache."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """Low-rank adapters (peft) instead of full fine-tuning; off while lora.r = 0."""


@dataclass
class DataConfig:
    path: str = ""
    """Dataset folder in the standard format (train.jsonl/test.jsonl + files). Empty: the track's
    built-in generator."""


@dataclass
class TrainConfig:
    steps: int = 150
    """RL optimizer steps, after the sft.steps warm-up steps (a run has sft.steps + train.steps steps;
    0 makes a warm-up-only run)."""
    seed: int = 0
    """Seeds model init, data order and sampling; a resumed run continues the same streams."""
    save_every: int = 50
    """Write a checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many recent valid checkpoints to keep (at least 2 leaves a fallback if one is corrupt)."""
    eval_every: int = 100
    """Evaluate on the held-out split every N steps (0: only at the end of each phase)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_schedule: str = choice("constant", "constant", "cosine", "linear")
    """Learning-rate shape within each phase, after lr_warmup_steps of linear warm-up."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up at the start of each phase."""
    max_nonfinite_steps: int = 5
    """Stop the run after this many consecutive steps with a NaN/inf loss (each one is skipped)."""
    micro_batch_size: int = 64
    """Sequences per forward/backward pass; gradients accumulate over micro-batches."""

    def __post_init__(self) -> None:
        require(self.steps >= 0, "train.steps", "must be >= 0")
        require(self.save_every >= 1, "train.save_every", "must be >= 1")
        require(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        require(self.micro_batch_size >= 1, "train.micro_batch_size", "must be >= 1")
        require(self.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be >= 1")


@dataclass
class SFTConfig:
    steps: int = 0
    """Warm-up supervised steps before RL ("Warm Up Before You Train"); 0 skips the warm-up."""
    batch_size: int = 32
    """Examples per SFT step."""
    lr: float = 1e-3
    """AdamW learning rate of the warm-up."""
    target_accuracy: float = 0.0
    """End the warm-up early once greedy accuracy on the validation split reaches this (RL should
    start from a model that sometimes succeeds, not one that has solved the task); 0: run sft.steps."""
    check_every: int = 10
    """Warm-up steps between validation checks (when target_accuracy > 0)."""
    check_size: int = 200
    """Validation items per check."""
    check_split: str = "val"
    """Split used for the checks (never the test split that results are reported on)."""

    def __post_init__(self) -> None:
        require(self.steps >= 0, "sft.steps", "must be >= 0")
        require(0 <= self.target_accuracy <= 1, "sft.target_accuracy", "must be in [0, 1]")
        require(self.check_every >= 1, "sft.check_every", "must be >= 1")


@dataclass
class RLConfig:
    algorithm: str = choice("grpo", "grpo", "sft")
    """What runs after the warm-up: group-rollout RL (grpo: GRPO/DAPO/Dr. GRPO by the keys below), or
    more supervised steps at sft.lr and sft.batch_size (sft: the honest control experiment)."""
    prompts_per_step: int = 16
    """Prompts per RL step; each gets group_size samples."""
    group_size: int = 8
    """Samples per prompt (the GRPO group)."""
    max_new_tokens: int = 16
    """Completion length cap."""
    temperature: float = 1.0
    """Sampling temperature; training log-probs use the same temperature."""
    lr: float = 2e-4
    """AdamW learning rate of the RL phase."""
    advantage: str = "grpo"
    """Advantage estimator (shared.rl.ADVANTAGE_ESTIMATORS): grpo, grpo_batch, dr_grpo, rloo, ..."""
    loss: str = "ppo_clip"
    """Policy loss (shared.rl.POLICY_LOSSES): ppo_clip, gspo, cispo, reinforce."""
    aggregation: str = "seq_mean_token_mean"
    """Loss aggregation (shared.rl.AGGREGATIONS): token_mean (DAPO), seq_mean_token_mean (GRPO),
    seq_mean_token_sum, seq_mean_token_sum_norm (Dr. GRPO; divides by max_new_tokens)."""
    clip_low: float = 0.2
    """Lower clip range: ratio >= 1 - clip_low."""
    clip_high: float = 0.2
    """Upper clip range: ratio <= 1 + clip_high (DAPO's clip-higher uses 0.28)."""
    epochs: int = 1
    """Optimisation passes over each batch of rollouts (old log-probs recorded once, at sampling)."""
    mini_batches: int = 1
    """Optimizer steps per pass: the batch is split into this many mini-batches."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to a frozen reference model (0: no reference model is kept)."""
    kl_estimator: str = choice("k3", "k1", "k2", "k3")
    """KL estimator (Schulman's k1/k2/k3)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (subtracted from the loss)."""
    forking_top_quantile: float = 1.0
    """Train only on the top-q highest-entropy tokens ("Beyond the 80/20 Rule"); 1.0 keeps all."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal (they carry no gradient)."""
    overlong_buffer: int = 0
    """DAPO soft overlong penalty: buffer length before max_new_tokens (0: off)."""
    overlong_factor: float = 1.0
    """Maximum overlong penalty."""
    rewards: list[str] = field(default_factory=list)
    """Reward functions by registry name or dotted path; empty: the track's default."""
    reward_weights: list[float] = field(default_factory=list)
    """Weights of `rewards` (empty: all 1)."""

    def __post_init__(self) -> None:
        from shared.rl import ADVANTAGE_ESTIMATORS, AGGREGATIONS, POLICY_LOSSES

        for key, value, registry in (
            ("rl.advantage", self.advantage, ADVANTAGE_ESTIMATORS),
            ("rl.loss", self.loss, POLICY_LOSSES),
            ("rl.aggregation", self.aggregation, AGGREGATIONS),
        ):
            require(value in registry, key, f"{value!r} is not allowed; choose one of: {', '.join(registry)}")
        require(self.group_size >= 2, "rl.group_size", "must be >= 2 (group advantages need a group)")
        require(self.temperature > 0, "rl.temperature", "must be > 0")
        require(0 < self.forking_top_quantile <= 1, "rl.forking_top_quantile", "must be in (0, 1]")
        require(self.epochs >= 1 and self.mini_batches >= 1, "rl.epochs", "epochs and mini_batches must be >= 1")
        require(not self.reward_weights or len(self.reward_weights) == len(self.rewards), "rl.reward_weights",
                "needs one weight per entry of rl.rewards")


@dataclass
class EvalConfig:
    split: str = "test"
    """Held-out split evaluated during training."""
    size: int = 200
    """Items evaluated during training (rlab eval uses the whole split unless --limit)."""
    k: int = 1
    """Samples per item during training evals (mean@k, pass@k)."""
    temperature: float = 1.0
    """Sampling temperature of evals."""
    greedy: bool = True
    """Greedy decoding when k == 1 (otherwise sampled)."""
    seed: int = 1234
    """Evaluation sampling seed (independent of the training RNG streams)."""
    media_items: int = 8
    """Items whose traces are written to the run's media at each eval (the gallery shows them)."""


@dataclass
class SystemConfig:
    device: str = choice("auto", *DEVICES)
    """Where the model runs: auto (cuda when available, else cpu), cpu or cuda. Under a multi-process launch
    each process takes cuda:LOCAL_RANK."""
    distributed: str = choice("auto", *DISTRIBUTED)
    """Data parallelism over the processes of a launcher (`accelerate launch`, `torchrun`): auto (ddp when
    WORLD_SIZE > 1, fsdp when accelerate's launcher says --use_fsdp, else none), none, ddp (each process
    holds the whole model; gradients are averaged once per optimizer step) or fsdp (parameters, gradients
    and optimizer state sharded across processes with torch FSDP2, one unit per transformer block).
    Each process takes an equal share of every step's prompts (rl.prompts_per_step and sft.batch_size must
    be divisible by the number of processes); only process 0 writes the run folder."""


@dataclass
class LMRunConfig:
    """The root every LM track's config extends (one level): the sections the LM loop reads.

    A track subclasses it, narrows `model`/`data` to its own sections and adds its own.
    """

    name: str = "run"
    """Run name (the run folder is runs/<track>/<name>-<time>)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    """Device and data parallelism (the scale path; the precision is model.dtype)."""

    def __post_init__(self) -> None:
        require(self.sft.steps + self.train.steps >= 1, "train.steps", "sft.steps + train.steps must be >= 1")
        self.check_launch()

    def check_launch(self, world_size: int | None = None) -> None:
        """Checks that depend on the launch: shares per process (WORLD_SIZE from the launcher's
        environment unless given) and what FSDP does not support."""
        from shared.lm.runtime import launch_world_size, resolve_distributed

        world = launch_world_size() if world_size is None else world_size
        mode = resolve_distributed(self.system.distributed, world)
        if mode != "none":
            uses_sft = self.sft.steps > 0 or self.rl.algorithm == "sft"
            uses_rl = self.train.steps > 0 and self.rl.algorithm == "grpo"
            shares = [("rl.prompts_per_step", self.rl.prompts_per_step)] if uses_rl else []
            shares += [("sft.batch_size", self.sft.batch_size)] if uses_sft else []
            for key, value in shares:
                require(value % world == 0, key, f"{value} is not divisible by the {world} processes of this launch "
                        "(WORLD_SIZE): each process takes an equal share")
        if mode == "fsdp":
            require(self.rl.kl_coef == 0, "rl.kl_coef", "the KL reference model is not supported with "
                    "system.distributed=fsdp (it would need its own sharding); use 0, or ddp")
            require(self.model.lora.r == 0, "model.lora.r", "LoRA is not supported with system.distributed=fsdp "
                    "(use ddp: the frozen base is small enough to replicate)")
