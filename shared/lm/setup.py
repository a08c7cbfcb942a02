"""What a track hands the LM loop: the model, how to build prompts, where items come from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from shared.lm.runtime import Runtime

Item = dict


class LossTerm(Protocol):
    """An extra per-token loss added to the policy loss inside the RL update (e.g. PAPO's perception
    KL). `prepare` runs once per step, after sampling and before the update, and may store tensors
    in `batch` (rows = the kept samples, `kept_index` into the rollout); `loss` runs per micro-batch
    and returns (per-token loss [b, T] to add, metrics to log)."""

    name: str
    needs_entropy: bool

    def prepare(self, setup: LMSetup, items: list[Item], rollout: Any, kept_index: torch.Tensor,
                batch: dict[str, Any]) -> None: ...

    def loss(self, setup: LMSetup, rl: Any, batch: dict[str, Any], rows: slice, logp: torch.Tensor,
             entropy: torch.Tensor | None, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class LMSetup:
    model: Any
    """A Hugging Face generative model (causal LM or image-text-to-text)."""
    tokenizer: Any
    """Its tokenizer (for image-text models: the processor's tokenizer)."""
    encode_prompts: Callable[[list[Item]], dict[str, torch.Tensor]]
    """Items -> left-padded model inputs (input_ids, attention_mask, and extras such as pixel_values)."""
    target_text: Callable[[Item], str]
    """The supervised completion of an item (warm-up SFT); EOS is appended by the loop."""
    train_stream: Callable[[int, int], Iterator[Item]]
    """train_stream(seed, start) -> endless items; item k depends only on (seed, k) so runs resume."""
    eval_items: Callable[[str], list[Item]]
    """Items of a held-out split by name."""
    reward_names: list[Any]
    """Reward functions: registry names or dotted paths, or configured callables (see `shared.lm.rewards`)."""
    reward_weights: list[float]
    banned_ids: list[int] = field(default_factory=list)
    """Token ids the sampler must never emit (special and placeholder tokens)."""
    slice_extras: Callable[[dict[str, Any], Any, int], dict[str, Any]] | None = None
    """Row selection (a slice or an index tensor) of model inputs, used to repeat prompts G times,
    to drop rows and to micro-batch. Default `shared.lm.sampling.slice_rows` (tensors whose first
    dim is N); image-text models whose pixel_values are flattened across images need their own."""
    trace_image: Callable[[Item], str | None] | None = None
    """Path (absolute) of the image to show beside an item's trace in the gallery, if any."""
    loss_terms: list[LossTerm] = field(default_factory=list)
    """Extra loss terms of the RL update (see `LossTerm`)."""
    save_extra: Callable[[Any], None] | None = None
    """Called with the final model folder to save processors etc. beside the weights."""
    runtime: Runtime = field(default_factory=Runtime)
    """Device, precision and data parallelism (`shared.lm.runtime`); default one CPU process in float32."""

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def banned_tensor(self) -> torch.Tensor:
        return torch.tensor(sorted(set(self.banned_ids)), dtype=torch.long, device=self.runtime.device)

    def prompts(self, items: list[Item]) -> dict[str, Any]:
        """`encode_prompts(items)` with every tensor on the runtime's device."""
        return self.runtime.to_device(self.encode_prompts(items))

    def encode_targets(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded target ids [B, T] (with EOS) and mask [B, T]."""
        rows = [self.tokenizer(self.target_text(it), add_special_tokens=False)["input_ids"] + [self.eos_id]
                for it in items]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return self.runtime.to_device(ids), self.runtime.to_device(mask)
