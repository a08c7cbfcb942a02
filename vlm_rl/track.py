"""The `vlm` track: config schema, model/data set-up, train, eval and its step of `make demo`.

A run is warm-up SFT on short worked demonstrations (``<think>..</think><answer>..</answer>``),
then group-rollout RL (GRPO, DAPO, Dr. GRPO by config) through `shared.lm.trainer.LMTrainer`, on
a task dataset in the standard format: the lab's generated one (cached under data.cache_dir) or
a user's (data.path). The model is a local Hugging Face image-text folder (model.path) or a tiny
Qwen2.5-VL built on the spot (model.tiny).

Torch, transformers and PIL are imported inside the functions, so listing tracks stays fast.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import choice, require
from shared.lm.config import DataConfig, LMRunConfig, ModelConfig
from shared.tracks import EvalRequest, Track
from vlm_rl.data.cli import TASK_NAMES
from vlm_rl.models import TinyVLMConfig
from vlm_rl.papo import PAPOConfig

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).parent / "configs"
DATA_REPORT = "data.json"
"""File in the run folder: the dataset used and what its loader kept, dropped and truncated."""
EVAL_SPLITS = ("test", "test_ood", "val")
DEFAULT_SYSTEM_PROMPT = ("Think first in <think> </think>, then answer in <answer> </answer>.")


# ----------------------------------------------------------------------------------------- schema


@dataclass
class VLMModelConfig(ModelConfig):
    tiny: TinyVLMConfig = field(default_factory=TinyVLMConfig)
    """Size of the tiny Qwen2.5-VL built (randomly initialised, seeded by train.seed) when model.path is empty."""


@dataclass
class VLMDataConfig(DataConfig):
    task: str = choice("counting", *TASK_NAMES)
    """Task of the generated dataset (used when data.path is empty; a user's rows carry their own task)."""
    n_train: int = 20000
    """Training items of the generated dataset (val_size more are generated for the val split)."""
    n_test: int = 1000
    """Items of each generated test split (test and test_ood; 1000 gives a ~1.5-point standard error)."""
    val_size: int = 200
    """Items taken from the tail of the train split as the val split (warm-up checks); never trained on."""
    seed: int = 0
    """Seed of the generated dataset (independent of train.seed, so seeds of a run share their data)."""
    image_size: int = 112
    """Image side of the generated dataset in pixels (112: 16 visual tokens for the tiny model)."""
    cache_dir: str = "data"
    """Where generated datasets are kept (data/vlm-<task>-<seed>-<image_size>-<n_train+val>-<n_test>),
    written once and reused."""
    strict: bool = False
    """Stop at the first bad row (missing or unreadable image, no question, no answer), naming it;
    otherwise bad rows are dropped, counted and reported (run folder data.json and the log)."""
    check_images: bool = True
    """Decode every image of a user's dataset when loading (generated datasets are only path-checked)."""
    max_question_chars: int = 2000
    """Longer questions are truncated to this many characters (and counted in the report)."""

    def __post_init__(self) -> None:
        require(self.n_train >= 1, "data.n_train", "must be >= 1")
        require(self.n_test >= 1, "data.n_test", "must be >= 1")
        require(self.val_size >= 0, "data.val_size", "must be >= 0")
        require(self.image_size >= 32, "data.image_size", "must be >= 32 pixels")
        require(self.max_question_chars >= 1, "data.max_question_chars", "must be >= 1")


@dataclass
class VisionConfig:
    min_pixels: int = 112 * 112
    """Images with fewer pixels are upscaled by qwen-vl-utils before the processor."""
    max_pixels: int = 112 * 112 * 4
    """Images with more pixels are downscaled (bounds the visual tokens of a real model's inputs)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """System turn of every prompt (empty: the chat template's default system prompt)."""

    def __post_init__(self) -> None:
        require(self.min_pixels >= 1, "vision.min_pixels", "must be >= 1")
        require(self.max_pixels >= self.min_pixels, "vision.max_pixels", "must be >= vision.min_pixels")


@dataclass
class RewardConfig:
    format_weight: float = 0.0
    """Weight of the format reward (vlm.format) added to answer accuracy (vlm.accuracy) when rl.rewards
    is empty; 0 rewards accuracy only."""

    def __post_init__(self) -> None:
        require(self.format_weight >= 0, "reward.format_weight", "must be >= 0")


@dataclass
class VLMConfig(LMRunConfig):
    name: str = "vlm"
    """Run name (the run folder is runs/vlm/<name>-<time>)."""
    model: VLMModelConfig = field(default_factory=VLMModelConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    papo: PAPOConfig = field(default_factory=PAPOConfig)
    """PAPO's implicit perception loss (papo.gamma > 0 turns it on) and double entropy loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        uses_val = self.sft.target_accuracy > 0 and self.sft.check_split == "val"
        require(self.data.val_size > 0 or not uses_val, "data.val_size",
                "sft.target_accuracy checks the val split, which needs data.val_size >= 1")
        require(self.eval.split in EVAL_SPLITS, "eval.split", f"must be one of {', '.join(EVAL_SPLITS)}")
        require(self.sft.check_split in EVAL_SPLITS, "sft.check_split", f"must be one of {', '.join(EVAL_SPLITS)}")


# ------------------------------------------------------------------------------------------- data


@dataclass
class VLMData:
    """The loaded dataset: rows per split (images as absolute paths) and the loader's reports."""

    root: Path
    train: list[dict]
    """Rows of the train stream (the val rows excluded)."""
    splits: dict[str, list[dict]]
    """Held-out rows by split name: test, test_ood (when the dataset has it) and val."""
    reports: dict[str, Any]
    """Split -> `vlm_rl.data.LoadReport`."""

    def split(self, name: str) -> list[dict]:
        if name not in self.splits:
            raise ValueError(f"the vlm dataset {self.root} has held-out splits {', '.join(self.splits)} "
                             f"(asked for {name!r})")
        return self.splits[name]

    def report(self) -> dict[str, Any]:
        """What data.json holds."""
        return {"dataset": str(self.root.resolve()), "train_rows": len(self.train),
                "splits": {name: {"rows": r.rows, "kept": r.kept, "dropped": r.dropped, "truncated": r.truncated,
                                  "examples": r.examples, "reader": r.reader, "note": r.note}
                           for name, r in self.reports.items()}}


def dataset_root(data: VLMDataConfig) -> Path:
    """data.path, or the generated dataset's cache folder (written now if it is not there yet)."""
    if data.path:
        return Path(data.path)
    from vlm_rl.data import write_dataset

    n_rows = data.n_train + data.val_size
    root = Path(data.cache_dir) / f"vlm-{data.task}-{data.seed}-{data.image_size}-{n_rows}-{data.n_test}"
    if (root / "dataset.json").exists():
        return root
    log.info("generating the %s dataset into %s (once; later runs reuse it)", data.task, root)
    try:
        write_dataset(root, data.task, n_rows, data.n_test, data.n_test, data.seed, data.image_size)
    except FileExistsError:  # another process wrote it meanwhile (the writer renames a whole folder into place)
        if not (root / "dataset.json").exists():
            raise
    return root


def load_data(data: VLMDataConfig) -> VLMData:
    """Every split, checked row by row (bad rows dropped and counted, or an error when data.strict)."""
    from vlm_rl.data import load_split
    from vlm_rl.data.loader import split_file

    root = dataset_root(data)
    check = data.check_images and bool(data.path)  # the generated cache was written whole; paths are checked

    def load(split: str) -> tuple[list[dict], Any]:
        return load_split(root, split, data.strict, max_question_chars=data.max_question_chars, check_images=check)

    reports: dict[str, Any] = {}
    rows, reports["train"] = load("train")
    splits: dict[str, list[dict]] = {}
    for split in ("test", "test_ood"):
        try:
            split_file(root.resolve(), split)
        except FileNotFoundError:
            if split == "test":
                raise
            continue
        splits[split], reports[split] = load(split)
    n_val = min(data.val_size, len(rows) // 2)
    train, splits["val"] = (rows[:-n_val], rows[-n_val:]) if n_val else (rows, [])
    if not train:
        raise ValueError(f"{root}: no usable training rows ({reports['train'].summary()})")
    for report in reports.values():
        if report.n_dropped or report.truncated or report.note:
            log.warning("dataset %s", report.summary() + (f" ({report.note})" if report.note else ""))
    return VLMData(root, train, splits, reports)


def epoch_stream(rows: list[dict], seed: int, start: int = 0) -> Iterator[dict]:
    """Endless items: seeded permutations of `rows`, one per epoch; item k depends only on (seed, k).

    >>> a = epoch_stream([{"id": i} for i in range(3)], 0); b = epoch_stream([{"id": i} for i in range(3)], 0, 4)
    >>> [next(a)["id"] for _ in range(7)][4:] == [next(b)["id"] for _ in range(3)]
    True
    """
    n, k = len(rows), start
    epoch, order = -1, list(range(n))
    while True:
        e, i = divmod(k, n)
        if e != epoch:
            epoch, order = e, list(range(n))
            random.Random(f"vlm-train|{seed}|{e}").shuffle(order)
        yield rows[order[i]]
        k += 1


# --------------------------------------------------------------------------------------- set-up


def load_model(cfg: Any, runtime: Any = None, corpus: list[str] | None = None,
               split_pattern: str | None = None) -> tuple[Any, Any]:
    """(model, processor): from model.path, or a tiny Qwen2.5-VL built (and reloaded) in a temporary folder
    (under a multi-process launch built by rank 0, whose folder the others read: transformers'
    save_pretrained writes only on rank 0 once a process group exists). `cfg` is any config with
    model.path, model.tiny, model.dtype and train.seed (the vlm and svg tracks'); `corpus` and
    `split_pattern` shape the tiny model's tokenizer (`vlm_rl.models.build_tiny_vlm`)."""
    import tempfile

    from shared.lm.runtime import Runtime, load_dtype
    from vlm_rl.models import build_tiny_vlm, load_vlm

    dtype = load_dtype(cfg.model)
    if cfg.model.path:
        return load_vlm(cfg.model.path, dtype)
    rt = runtime if runtime is not None else Runtime()
    with tempfile.TemporaryDirectory(prefix="rlab-tiny-vlm-") as tmp:
        folder = Path(tmp) / "model"
        if rt.is_main:
            build_tiny_vlm(cfg.model.tiny, folder, seed=cfg.train.seed, corpus=corpus, split_pattern=split_pattern)
        loaded = load_vlm(Path(rt.broadcast(str(folder))), dtype)
        rt.barrier()  # rank 0's folder goes when every process has read it
        return loaded


def build_setup(cfg: VLMConfig, data: VLMData | None = None, runtime: Any = None) -> Any:
    """Model and processor, prompt encoding, demonstrations, data streams and rewards for the LM loop.

    The model gets the config's scale options (device, model.dtype, LoRA, gradient checkpointing,
    data parallelism: `shared.lm.runtime`); `runtime` defaults to the one system.* describes."""
    import vlm_rl.rewards  # noqa: F401  (registers vlm.accuracy and vlm.format)
    from shared.lm.runtime import build_runtime, prepare_model
    from shared.lm.setup import LMSetup
    from shared.tracking.rng import seed_everything
    from vlm_rl.data import demonstration
    from vlm_rl.inputs import encode_vlm_prompts, slice_vlm_extras
    from vlm_rl.models import vlm_banned_ids

    runtime = runtime if runtime is not None else build_runtime(cfg.system, cfg.model.dtype)
    seed_everything(cfg.train.seed)
    data = data if data is not None else load_data(cfg.data)
    model, processor = load_model(cfg, runtime)
    model = prepare_model(model, cfg.model, runtime)
    vision = cfg.vision
    system = vision.system_prompt or None

    def encode_prompts(items: list[dict]) -> dict:
        return encode_vlm_prompts(processor, items, data.root, vision.min_pixels, vision.max_pixels, system)

    rewards, weights = cfg.rl.rewards, cfg.rl.reward_weights
    if not rewards:
        rewards, weights = ["vlm.accuracy"], [1.0]
        if cfg.reward.format_weight > 0:
            rewards, weights = [*rewards, "vlm.format"], [*weights, cfg.reward.format_weight]
    return LMSetup(
        model=model, tokenizer=processor.tokenizer, encode_prompts=encode_prompts,
        target_text=demonstration,
        train_stream=lambda seed, start=0: epoch_stream(data.train, seed, start),
        eval_items=data.split,
        reward_names=list(rewards), reward_weights=list(weights) or [1.0] * len(rewards),
        banned_ids=vlm_banned_ids(processor),
        slice_extras=slice_vlm_extras,
        trace_image=lambda item: item["images"][0] if item.get("images") else None,
        loss_terms=_papo_terms(cfg, processor, data.root, system),
        save_extra=processor.save_pretrained,
        runtime=runtime,
    )


def _papo_terms(cfg: VLMConfig, processor: Any, root: Path, system: str | None) -> list:
    """PAPO's perception-KL LossTerm when papo.gamma or an entropy weight is on, else none."""
    papo = cfg.papo
    if max(papo.gamma, papo.eta_original, papo.eta_masked) <= 0:
        return []
    from vlm_rl.papo import PerceptionTerm, masked_prompt_encoder

    encode = masked_prompt_encoder(processor, root, cfg.vision.min_pixels, cfg.vision.max_pixels, papo, system)
    return [PerceptionTerm(papo, encode)]


# ------------------------------------------------------------------------------- entry points


def train_with_data(cfg: Any, run: Any, resuming: bool, load: Any, setup: Any) -> None:
    """Train an LM track's run on a loaded dataset: `load(cfg.data)` (rank 0 first, so a generated dataset is
    written once before the others read it; its report goes to the run's DATA_REPORT), then
    `setup(cfg, data, runtime)` and the shared loop. The vlm and svg tracks' `train`."""
    from shared.lm.runtime import build_runtime
    from shared.lm.trainer import LMTrainer

    runtime = build_runtime(cfg.system, cfg.model.dtype)
    if runtime.is_main:
        data = load(cfg.data)
        (Path(run.path) / DATA_REPORT).write_text(json.dumps(data.report(), indent=2) + "\n")
    runtime.barrier()
    if not runtime.is_main:
        data = load(cfg.data)
    trainer = LMTrainer(setup(cfg, data, runtime), run, cfg.train, cfg.sft, cfg.rl, cfg.eval)
    trainer.fit(resuming=resuming)


def train(cfg: VLMConfig, run: Any, resuming: bool) -> None:
    """Train in `run`; under a multi-process launch every process calls it and only rank 0 writes."""
    train_with_data(cfg, run, resuming, load_data, build_setup)


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """`rlab eval RUN`: per-task mean@k and pass@k, format errors and the vision probe (vlm_rl.evaluate)."""
    from vlm_rl.evaluate import evaluate_run as run_eval

    return run_eval(req)


DEMO_OVERRIDES = {
    False: ["sft.steps=250", "sft.target_accuracy=0", "train.steps=15", "train.save_every=15", "train.eval_every=0",
            "eval.size=100", "data.n_train=3000", "data.n_test=200", "data.val_size=100"],
    True: ["sft.steps=20", "sft.target_accuracy=0", "train.steps=3", "train.eval_every=0", "eval.size=16",
           "rl.prompts_per_step=4", "rl.group_size=4", "data.n_train=200", "data.n_test=32", "data.val_size=16"],
}
"""Overrides of the default config for `demo` (quick: a smoke test of ~20 s)."""


def demo(runs_root: Path, quick: bool = False) -> Path:
    """This track's step of `make demo`: a short warm-up then a few GRPO steps on counting, from the
    default config; returns the run folder (evaluate it with `evaluate_run`, then build its gallery)."""
    from shared.demo import train_demo_run

    return train_demo_run(TRACK, runs_root, [*DEMO_OVERRIDES[quick], f"data.cache_dir={Path(runs_root) / 'data'}"])


TRACK = Track(
    name="vlm",
    help="visual reasoning with verifiable rewards: a Qwen2.5-VL (tiny or local), warm-up SFT then GRPO/DAPO",
    schema=VLMConfig,
    configs_dir=CONFIGS_DIR,
    train=train,
    evaluate=evaluate_run,
    demo=demo,
)
