"""The group-rollout RL loop over Hugging Face generative models (text-only and image-text).

- `sampling`: batched sampling with the KV cache (``model.generate``) that records the log-prob of
  every sampled token as it goes, with banned token ids masked out.
- `logprobs`: per-token log-probs of completions in a training forward pass, micro-batched, never
  keeping full-vocabulary logits for more than one micro-batch.
- `rewards`: the reward registry and the typed `RewardScore`.
- `grpo` / `sft`: one optimisation step each; `trainer`: steps, checkpoints, resume, faults, eval.
- `runtime`: device, bf16 autocast, LoRA, gradient checkpointing and data parallelism (ddp / fsdp
  under `accelerate launch` or `torchrun`): the scale path.
"""
