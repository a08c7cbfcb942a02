"""The LM training loop: warm-up SFT then RL, with checkpoints, resume, fault handling and evals.

One run = sft.steps + train.steps optimizer steps; steps 1..sft.steps are supervised, the rest RL. After
each step the metrics go to the run; at ``save_every`` a checkpoint holds the weights, optimizer,
scheduler, RNG states and data position, so a resumed run is the same run: metrics past the
checkpoint are dropped and replayed, and the final weights equal an uninterrupted run's.

Under data parallelism (``setup.runtime``, see `shared.lm.runtime`) every process draws the same global
batch from the stream and trains on its share; step metrics are averaged over processes; evals and the
warm-up checks are sharded and gathered, and the warm-up's end is decided by rank 0. Only rank 0 writes
(metrics, media, checkpoints with every process's RNG state, final/); every process resumes from the
checkpoint rank 0 picks.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shared.lm.config import EvalConfig, RLConfig, SFTConfig, TrainConfig
from shared.lm.evaluate import evaluate
from shared.lm.runtime import save_model
from shared.lm.setup import LMSetup
from shared.lm.steps import grpo_step, sft_step
from shared.lm.watch import warn_drift
from shared.tracking import MediaRecord, append_media
from shared.tracking.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from shared.tracking.media import truncate_manifest
from shared.tracking.rng import capture_rng, restore_rng, seed_everything

log = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """The run cannot go on (e.g. too many consecutive non-finite losses); the message says why."""


@dataclass
class TrainerState:
    step: int = 0
    data_position: int = 0
    nonfinite_streak: int = 0
    nonfinite_total: int = 0
    reward_failures_total: int = 0
    phase: str = "sft"
    sft_end: int | None = None
    """Step at which the warm-up ended (sft.steps, or earlier when sft.target_accuracy was reached)."""
    extra: dict[str, Any] = field(default_factory=dict)


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the base lr at phase-local step s (LambdaLR)."""
    shapes = {
        "constant": lambda frac: 1.0,
        "linear": lambda frac: max(0.0, 1.0 - frac),
        "cosine": lambda frac: 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))),
    }
    shape = shapes[schedule]

    def fn(s: int) -> float:
        if warmup > 0 and s < warmup:
            return (s + 1) / warmup
        return shape((s - warmup) / max(1, total - warmup))

    return fn


class LMTrainer:
    def __init__(self, setup: LMSetup, run: Any, train: TrainConfig, sft: SFTConfig, rl: RLConfig,
                 evalcfg: EvalConfig):
        self.setup, self.run = setup, run
        self.rt = setup.runtime
        self.train, self.sft, self.rl, self.evalcfg = train, sft, rl, evalcfg
        if sft.steps + train.steps < 1:
            raise ValueError("nothing to train: sft.steps + train.steps is 0")
        if self.rt.is_distributed and self.rt.rank > 0:  # same weights and data, its own sampling streams
            seed_everything(train.seed + 1_000_003 * self.rt.rank)
        self.state = TrainerState(phase="sft" if sft.steps > 0 else "rl", sft_end=None if sft.steps > 0 else 0)
        self.ref_model = None
        self.optimizer, self.scheduler = self._build_optimizer(self.state.phase)
        if self.state.phase == "rl":
            self._enter_rl()

    # ------------------------------------------------------------------------------ set-up
    @property
    def total_steps(self) -> int:
        """Warm-up steps (as many as ran, once it ended; sft.steps before) + train.steps RL steps."""
        end = self.state.sft_end if self.state.sft_end is not None else self.sft.steps
        return end + self.train.steps

    def _phase_of(self, step: int) -> str:
        end = self.state.sft_end if self.state.sft_end is not None else self.sft.steps
        return "sft" if step <= end else "rl"

    def _build_optimizer(self, phase: str) -> tuple[Any, Any]:
        lr = self.sft.lr if phase == "sft" or self.rl.algorithm == "sft" else self.rl.lr
        total = self.sft.steps if phase == "sft" else self.train.steps
        params = [p for p in self.setup.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.train.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.train.lr_schedule, self.train.lr_warmup_steps, total)
        )
        return optimizer, scheduler

    def _enter_rl(self) -> None:
        self.state.phase = "rl"
        self.optimizer, self.scheduler = self._build_optimizer("rl")
        if self.rl.kl_coef > 0:
            self.ref_model = copy.deepcopy(self.setup.model).eval().requires_grad_(False)

    # ------------------------------------------------------------------------ checkpoints
    def save(self) -> Path | None:
        """Write a checkpoint (rank 0; every process must call it: state and RNG states are gathered)."""
        rt = self.rt
        tensors = {"model": rt.model_state(self.setup.model)}
        if self.ref_model is not None:
            tensors["ref_model"] = self.ref_model.state_dict()
        state = self.state
        objects = {
            "optimizer": rt.optimizer_state(self.setup.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "trainer": {k: getattr(state, k) for k in TrainerState.__dataclass_fields__},
        }
        if rt.is_distributed:
            objects["rng_ranks"] = rt.gather(objects["rng"])
        if not rt.is_main:
            return None
        return save_checkpoint(self.run.checkpoint_dir, state.step, tensors, objects,
                               keep_last=self.train.keep_checkpoints)

    def restore(self) -> bool:
        """Load the newest valid checkpoint; False when there is none (start from scratch)."""
        rt = self.rt
        found = rt.broadcast(latest_checkpoint(self.run.checkpoint_dir) if rt.is_main else None)
        if found is None:
            if rt.is_main:
                self.run.truncate_metrics(0)
                truncate_manifest(self.run.path, 0)
            return False
        step, path = found
        tensors, objects = load_checkpoint(path)
        self.state = TrainerState(**objects["trainer"])
        if self.state.phase == "rl":
            self.optimizer, self.scheduler = self._build_optimizer("rl")
            if "ref_model" in tensors:
                self.ref_model = copy.deepcopy(self.setup.model).eval().requires_grad_(False)
                self.ref_model.load_state_dict(tensors["ref_model"])
        rt.load_model_state(self.setup.model, tensors["model"])
        rt.load_optimizer_state(self.setup.model, self.optimizer, objects["optimizer"])
        self.scheduler.load_state_dict(objects["scheduler"])
        restore_rng(self._rng_of_this_process(objects))
        if rt.is_main:
            dropped = self.run.truncate_metrics(step)
            truncate_manifest(self.run.path, step)
            log.info("resumed from %s (step %d); dropped %d metric records past it", path, step, dropped)
        return True

    def _rng_of_this_process(self, objects: dict[str, Any]) -> dict[str, Any]:
        ranks = objects.get("rng_ranks")
        if not self.rt.is_distributed:
            return objects["rng"]
        if ranks is not None and len(ranks) == self.rt.world_size:
            return ranks[self.rt.rank]
        log.warning("the checkpoint's RNG states are from %s processes, this launch has %d: sampling will "
                    "differ from the interrupted run", len(ranks) if ranks else 1, self.rt.world_size)
        return objects["rng"]

    # ------------------------------------------------------------------------------- loop
    def fit(self, resuming: bool = False) -> Path:
        """Train to sft.steps + train.steps (continuing from the last checkpoint when resuming)."""
        from tqdm.auto import tqdm

        if resuming:
            self.restore()
        stream = self.setup.train_stream(self.train.seed, self.state.data_position)
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc=f"train {self.run.path.name}",
                   unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=1.0, disable=not self.rt.is_main)
        while self.state.step < self.total_steps:
            step = self.state.step + 1
            if self._phase_of(step) == "rl" and self.state.phase != "rl":
                self._enter_rl()
            metrics = self._one_step(step, stream)
            metrics["warmup"] = int(self.state.phase == "sft")
            self.state.step = step
            self._account(metrics)
            if self.state.phase == "rl" and self.rl.algorithm != "sft" and not metrics.get("nonfinite"):
                for message in warn_drift(self.state.extra.setdefault("watch", {}), step, metrics):
                    if self.rt.is_main:
                        log.warning("step %d: %s", step, message)
            if self.state.phase == "sft":
                metrics.update(self._check_warmup(step))
                bar.total = self.total_steps
            if self.rt.is_main:
                self.run.log(step, metrics)
            bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("reward", "sft/loss") if k in metrics}, refresh=False)
            bar.update(1)
            if self._eval_due(step):
                self.run_eval(step)
            due = step % self.train.save_every == 0 or step in (self.total_steps, self.state.sft_end)
            if due and self.state.nonfinite_streak == 0:  # never checkpoint in a run of bad steps
                self.save()
        bar.close()
        return self.save_final()

    def _one_step(self, step: int, stream: Any) -> dict:
        """One step on this process's share of the global batch; metrics averaged over processes."""
        if self.state.phase == "sft" or self.rl.algorithm == "sft":
            items = [next(stream) for _ in range(self.sft.batch_size)]
            self.state.data_position += len(items)
            metrics = sft_step(self.setup, self.rt.share(items), self.optimizer, self.scheduler, self.train)
            return self.rt.mean_metrics(metrics)
        items = [next(stream) for _ in range(self.rl.prompts_per_step)]
        self.state.data_position += len(items)
        metrics, _, _ = grpo_step(self.setup, self.rt.share(items), self.optimizer, self.scheduler, self.rl,
                                  self.train, self.ref_model)
        return self.rt.mean_metrics(metrics)

    def _account(self, metrics: dict) -> None:
        st = self.state
        st.reward_failures_total += int(metrics.get("reward_failures", 0))
        metrics["reward_failures_total"] = st.reward_failures_total
        if metrics.get("nonfinite"):
            st.nonfinite_streak += 1
            st.nonfinite_total += 1
        else:
            st.nonfinite_streak = 0
        metrics["nonfinite_total"] = st.nonfinite_total
        if st.nonfinite_streak >= self.train.max_nonfinite_steps:
            if self.rt.is_main:
                self.run.log(st.step, metrics)
            raise TrainingStopped(
                f"{st.nonfinite_streak} consecutive steps had a non-finite loss (last at step {st.step}); "
                f"stopping (train.max_nonfinite_steps={self.train.max_nonfinite_steps}). The last good "
                f"checkpoint in {self.run.checkpoint_dir} is untouched; lower the learning rate and resume."
            )

    def _eval_due(self, step: int) -> bool:
        every = self.train.eval_every
        return (every > 0 and step % every == 0) or step in (self.total_steps, self.state.sft_end)

    def _check_warmup(self, step: int) -> dict[str, float]:
        """End the warm-up at sft.steps, or as soon as validation accuracy reaches sft.target_accuracy
        ("Warm Up Before You Train": RL should start from a model that sometimes succeeds)."""
        out: dict[str, float] = {}
        sft = self.sft
        if sft.target_accuracy > 0 and step % sft.check_every == 0:
            items = self.setup.eval_items(sft.check_split)[: sft.check_size]
            result = evaluate(self.setup, items, (1,), self.rl.max_new_tokens, greedy=True, seed=self.evalcfg.seed)
            out["sft/val_accuracy"] = result.metrics["accuracy"]
            if out["sft/val_accuracy"] >= sft.target_accuracy:
                self.state.sft_end = step
            self.state.sft_end = self.rt.broadcast(self.state.sft_end)  # rank 0 decides for all
        if step >= sft.steps:
            self.state.sft_end = step
        if self.state.sft_end is not None:
            out["sft/ended"] = 1
        return out

    # ------------------------------------------------------------------------------- eval
    def run_eval(self, step: int) -> dict[str, float]:
        items = self.setup.eval_items(self.evalcfg.split)[: self.evalcfg.size]
        result = evaluate(self.setup, items, (self.evalcfg.k,), self.rl.max_new_tokens,
                          self.evalcfg.temperature, self.evalcfg.greedy, self.evalcfg.seed)
        prefix = f"eval/{self.evalcfg.split}/"
        metrics = {prefix + k: v for k, v in result.metrics.items()}
        if self.rt.is_main:
            self.run.log(step, metrics)
            write_traces(self.run.path, self.setup, result.traces[: self.evalcfg.media_items], step,
                         f"eval/{self.evalcfg.split}")
        return metrics

    def save_final(self) -> Path:
        """final/: a plain save_pretrained folder (LoRA adapters merged, FSDP shards gathered; rank 0 writes)."""
        out = self.run.path / "final"
        save_model(self.setup.model, out, self.rt)
        if self.rt.is_main:
            self.setup.tokenizer.save_pretrained(out)
            if self.setup.save_extra is not None:
                self.setup.save_extra(out)
        self.rt.barrier()
        return out


def write_traces(run_dir: Path, setup: LMSetup, traces: list[dict], step: int, group: str) -> None:
    """One gallery trace per item: question, sampled completion(s), answer, verdict, reward."""
    for trace in traces:
        item = trace["item"]
        image = setup.trace_image(item) if setup.trace_image else None
        rel = None
        if image:
            dest = Path(run_dir) / "media" / "items" / f"{item.get('id')}{Path(image).suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.write_bytes(Path(image).read_bytes())
            rel = str(dest.relative_to(run_dir))
        first = 0
        fields = {
            "question": item.get("question", ""),
            "completion": trace["completions"][first],
            "answer": item.get("answer", ""),
            "verdict": "correct" if trace["correct"][first] else "wrong",
            "reward": round(trace["rewards"][first], 4),
        }
        if trace["reasons"][first]:
            fields["reason"] = trace["reasons"][first]
        append_media(run_dir, MediaRecord(kind="trace", path=rel, step=step, item=str(item.get("id")),
                                          group=group, fields=fields))
