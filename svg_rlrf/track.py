"""The `svg` track: image -> SVG code, trained from rendering feedback (RLRF).

A run is a supervised warm-up (image -> the target's SVG code) and/or group-rollout RL whose reward
renders each sampled SVG and compares it with the target (`svg_rlrf.rewards.RenderReward`), through
the shared LM loop (`shared.lm.trainer.LMTrainer`). The usual flow is two runs::

    rlab train svg --config warmup                              # SFT only
    rlab train svg --config rlrf --set model.path=RUN/final     # GRPO from rendering rewards

The policy is an image-text model from the vlm track's loader: a local Qwen2-VL / Qwen2.5-VL folder
(model.path), or a tiny Qwen2.5-VL built here whose tokenizer is trained on the dataset's SVG code with
numbers and ``#rrggbb`` colours kept whole (`SVG_SPLIT`). Data: the lab's generated shapes (cached
under data.cache_dir) or any dataset folder in the standard format (data.path; ``rlab data svg``
writes both kinds, and ``--from-dir`` turns a folder of .svg files into one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import require
from shared.lm.config import DataConfig, LMRunConfig, ModelConfig, SFTConfig
from shared.tracks import EvalRequest, Track
from svg_rlrf.rewards import RewardWeights
from vlm_rl.models import TinyVLMConfig
from vlm_rl.track import DATA_REPORT as VLM_DATA_REPORT
from vlm_rl.track import VisionConfig

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).parent / "configs"
DATA_REPORT = VLM_DATA_REPORT
"""File in the run folder: the dataset used and what its loader kept and dropped (as in the vlm track)."""
SVG_SPLIT = r"#[0-9a-fA-F]{6}|\d+"
"""Pieces the SVG tokenizer never merges with their neighbours: digit runs and ``#rrggbb`` colours (BPE
then learns whole numbers and colours, and merges each tag with its first attribute, e.g. ``<circle cx="``)."""
SYSTEM_PROMPT = "You write SVG code."
HELD_OUT = ("test", "val", "icons")


@dataclass
class SVGModelConfig(ModelConfig):
    tiny: TinyVLMConfig = field(default_factory=lambda: TinyVLMConfig(vocab_size=512, max_positions=512))
    """Size of the tiny Qwen2.5-VL built (randomly initialised, seeded by train.seed) when model.path is empty;
    its tokenizer is trained on the training split's SVG code."""


@dataclass
class SVGDataConfig(DataConfig):
    n_train: int = 5000
    """Items of the generated training split."""
    n_val: int = 200
    """Items of the generated val split (warm-up checks, never reported)."""
    n_test: int = 300
    """Items of the generated test split."""
    levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    """Complexity levels of the generated shapes (1: one primitive ... 3: paths, strokes, groups, transforms)."""
    seed: int = 0
    """Seed of the generated dataset (independent of train.seed, so a run's seeds share their data)."""
    canvas: int = 64
    """Side of the canonical frame (viewBox 0 0 C C); integer coordinates."""
    image_size: int = 112
    """Rendered side in pixels (112: 16 visual tokens for the tiny model)."""
    icons: int = 300
    """Font Awesome icons in the `icons` evaluation split (the real icon set)."""
    cache_dir: str = "data"
    """Where generated datasets are kept (written once, reused)."""
    strict: bool = False
    """Stop at the first bad row of a user's dataset instead of dropping and counting it."""

    def __post_init__(self) -> None:
        require(self.n_train >= 1, "data.n_train", "must be >= 1")
        require(self.n_test >= 1, "data.n_test", "must be >= 1")
        require(self.n_val >= 0, "data.n_val", "must be >= 0")
        require(bool(self.levels) and all(lv in (1, 2, 3) for lv in self.levels), "data.levels",
                "must be a non-empty list of levels among 1, 2, 3")
        require(self.canvas >= 8, "data.canvas", "must be >= 8")
        require(self.image_size >= 28, "data.image_size", "must be >= 28 pixels")
        require(self.icons >= 1, "data.icons", "must be >= 1")


@dataclass
class SVGConfig(LMRunConfig):
    name: str = "svg"
    """Run name (the run folder is runs/svg/<name>-<time>)."""
    model: SVGModelConfig = field(default_factory=SVGModelConfig)
    data: SVGDataConfig = field(default_factory=SVGDataConfig)
    vision: VisionConfig = field(default_factory=lambda: VisionConfig(system_prompt=SYSTEM_PROMPT))
    reward: RewardWeights = field(default_factory=RewardWeights)
    """Weights of the rendering reward's components (`svg_rlrf.rewards`)."""
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=1500))
    """The supervised warm-up (image -> the target's SVG code); RL from a random model is refused."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.eval.split in HELD_OUT, "eval.split", f"must be one of {', '.join(HELD_OUT)}")
        require(self.sft.check_split in HELD_OUT, "sft.check_split", f"must be one of {', '.join(HELD_OUT)}")
        rl_from_scratch = self.rl.algorithm == "grpo" and self.train.steps > 0 and self.sft.steps == 0
        require(bool(self.model.path) or not rl_from_scratch, "model.path",
                "is empty and sft.steps is 0: RL would start from a randomly initialised model. Start from a "
                "warm-up run (--set model.path=RUN/final) or add a warm-up (sft.steps)")


# ------------------------------------------------------------------------------------------- data


def _generated(folder: Path, write: Any, what: str) -> Path:
    if (folder / "dataset.json").exists():
        return folder
    log.info("generating %s into %s (once; later runs reuse it)", what, folder)
    try:
        write(folder)
    except FileExistsError:  # another process wrote it meanwhile
        if not (folder / "dataset.json").exists():
            raise
    return folder


def dataset_root(data: SVGDataConfig) -> Path:
    """data.path, or the generated shapes' cache folder (written now if it is not there yet)."""
    if data.path:
        return Path(data.path)
    from svg_rlrf.data.synthetic import write_synthetic

    levels = "".join(str(lv) for lv in sorted(set(data.levels)))
    name = f"svg-shapes-{data.seed}-{data.canvas}-{data.image_size}-L{levels}-{data.n_train}-{data.n_val}-{data.n_test}"
    return _generated(Path(data.cache_dir) / name, lambda out: write_synthetic(
        out, data.n_train, data.n_val, data.n_test, seed=data.seed, canvas=data.canvas, image_size=data.image_size,
        levels=tuple(sorted(set(data.levels))), progress=False), "the svg shapes dataset")


def icons_root(data: SVGDataConfig) -> Path:
    """The real-icon evaluation set (Font Awesome Free, from the fontawesomefree package), cached."""
    from svg_rlrf.data.icons import write_icons

    name = f"svg-icons-fa-{data.seed}-{data.canvas}-{data.image_size}-{data.icons}"
    return _generated(Path(data.cache_dir) / name, lambda out: write_icons(
        out, n=data.icons, seed=data.seed, canvas=data.canvas, image_size=data.image_size, progress=False),
        "the Font Awesome icon set")


@dataclass
class SVGData:
    """Rows per split (images as absolute paths), the loader's reports, and where they came from."""

    root: Path
    train: list[dict]
    splits: dict[str, list[dict]]
    reports: dict[str, Any]
    config: SVGDataConfig

    def split(self, name: str) -> list[dict]:
        if name == "icons" and name not in self.splits:
            rows, self.reports[name] = _load(icons_root(self.config), "test", self.config.strict)
            self.splits[name] = rows
        if name not in self.splits:
            raise ValueError(f"the svg dataset {self.root} has held-out splits {', '.join([*self.splits, 'icons'])} "
                             f"(asked for {name!r})")
        return self.splits[name]

    def report(self) -> dict[str, Any]:
        return {"dataset": str(self.root.resolve()), "train_rows": len(self.train),
                "splits": {name: {"rows": r.rows, "kept": r.kept, "dropped": r.dropped, "examples": r.examples}
                           for name, r in self.reports.items()}}


def _load(root: Path, split: str, strict: bool, check_images: bool = False) -> tuple[list[dict], Any]:
    """Rows of one split; a user's dataset has every image decoded (a broken one is dropped and counted)."""
    from vlm_rl.data import load_split

    return load_split(root, split, strict, max_question_chars=2000, check_images=check_images)


def load_data(data: SVGDataConfig) -> SVGData:
    """The train, val and test splits (a dataset without val takes data.n_val rows from train's tail)."""
    from vlm_rl.data.loader import split_file

    root = dataset_root(data)
    check = bool(data.path)  # generated datasets were written whole; a user's is checked image by image
    reports: dict[str, Any] = {}
    train, reports["train"] = _load(root, "train", data.strict, check)
    splits: dict[str, list[dict]] = {}
    splits["test"], reports["test"] = _load(root, "test", data.strict, check)
    try:
        split_file(root.resolve(), "val")
        splits["val"], reports["val"] = _load(root, "val", data.strict, check)
    except FileNotFoundError:
        n_val = min(data.n_val, len(train) // 2)
        train, splits["val"] = (train[:-n_val], train[-n_val:]) if n_val else (train, [])
    if not train:
        raise ValueError(f"{root}: no usable training rows ({reports['train'].summary()})")
    for report in reports.values():
        if report.n_dropped:
            log.warning("dataset %s", report.summary())
    return SVGData(root, train, splits, reports, data)


def svg_corpus(rows: list[dict], limit: int = 20000) -> list[str]:
    """Text the tiny model's tokenizer is trained on: the SVG code and questions of the training rows."""
    lines = [SYSTEM_PROMPT, "system", "user", "assistant", "You are a helpful assistant."]
    lines += sorted({str(r.get("question", "")) for r in rows[:limit]})
    lines += [str(r["answer"]) for r in rows[:limit]]
    return lines


def train_stream(rows: list[dict], seed: int, start: int, items_before_rl: int, prompts_per_step: int,
                 ) -> Iterator[dict]:
    """`vlm_rl.track.epoch_stream` with each item's RL step (``rl_step``, for the length ramp): the
    warm-up draws the first `items_before_rl` items, then each RL step `prompts_per_step`."""
    from vlm_rl.track import epoch_stream

    for k, row in enumerate(epoch_stream(rows, seed, start), start=start):
        yield {**row, "rl_step": max(0, k - items_before_rl) // max(1, prompts_per_step)}


# --------------------------------------------------------------------------------------- set-up


def load_model(cfg: SVGConfig, data: SVGData, runtime: Any = None) -> tuple[Any, Any]:
    """(model, processor): model.path, or a tiny Qwen2.5-VL whose tokenizer is trained on the training split's
    SVG code with numbers and colours kept whole (`vlm_rl.track.load_model`)."""
    from vlm_rl.track import load_model as load_vlm_model

    return load_vlm_model(cfg, runtime, corpus=svg_corpus(data.train), split_pattern=SVG_SPLIT)


def token_counter(tokenizer: Any) -> Any:
    """Code length in the policy's tokens."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_setup(cfg: SVGConfig, data: SVGData | None = None, runtime: Any = None) -> Any:
    """Model and processor, prompts, the supervised target (the item's SVG), streams and the rendering reward."""
    from shared.lm.runtime import build_runtime, prepare_model
    from shared.lm.setup import LMSetup
    from shared.tracking.rng import seed_everything
    from svg_rlrf.render import renderer_problem
    from svg_rlrf.rewards import RenderReward
    from vlm_rl.inputs import encode_vlm_prompts, slice_vlm_extras
    from vlm_rl.models import vlm_banned_ids

    problem = renderer_problem()
    if problem and cfg.train.steps > 0 and cfg.rl.algorithm != "sft":
        raise RuntimeError(f"RLRF's reward renders every sample, but {problem}")
    if problem:  # a warm-up (or SFT) trains without rendering; only its evaluations need it
        log.warning("%s; the evaluations during training will score every output -1 (render failed)", problem)
    runtime = runtime if runtime is not None else build_runtime(cfg.system, cfg.model.dtype)
    seed_everything(cfg.train.seed)
    data = data if data is not None else load_data(cfg.data)
    model, processor = load_model(cfg, data, runtime)
    model = prepare_model(model, cfg.model, runtime)
    vision = cfg.vision
    system = vision.system_prompt or None

    def encode_prompts(items: list[dict]) -> dict:
        return encode_vlm_prompts(processor, items, data.root, vision.min_pixels, vision.max_pixels, system)

    reward = RenderReward(cfg.reward, token_counter(processor.tokenizer), device=str(runtime.device))
    names: list[Any] = [reward, *cfg.rl.rewards]
    weights = [1.0, *(cfg.rl.reward_weights or [1.0] * len(cfg.rl.rewards))]
    before_rl = cfg.sft.steps * cfg.sft.batch_size
    return LMSetup(
        model=model, tokenizer=processor.tokenizer, encode_prompts=encode_prompts,
        target_text=lambda item: str(item["answer"]),
        train_stream=lambda seed, start=0: train_stream(data.train, seed, start, before_rl, cfg.rl.prompts_per_step),
        eval_items=data.split,
        reward_names=names, reward_weights=weights,
        banned_ids=vlm_banned_ids(processor),
        slice_extras=slice_vlm_extras,
        trace_image=lambda item: item["images"][0] if item.get("images") else None,
        save_extra=processor.save_pretrained,
        runtime=runtime,
    )


# ------------------------------------------------------------------------------- entry points


def train(cfg: SVGConfig, run: Any, resuming: bool) -> None:
    """Train in `run` (warm-up and/or RLRF); under a multi-process launch only rank 0 writes."""
    from vlm_rl.track import train_with_data

    train_with_data(cfg, run, resuming, load_data, build_setup)


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """`rlab eval RUN --split test|val|icons`: reconstruction, code and hedging metrics (svg_rlrf.evaluate)."""
    from svg_rlrf.evaluate import evaluate_run as run_eval

    return run_eval(req)


DEMO_OVERRIDES = {
    False: ["sft.steps=300", "train.steps=10", "train.save_every=10", "train.eval_every=0", "eval.size=32",
            "data.n_train=1500", "data.n_val=32", "data.n_test=48", "data.icons=24", "rl.prompts_per_step=8",
            "rl.group_size=8"],
    True: ["sft.steps=10", "train.steps=2", "train.eval_every=0", "eval.size=8", "rl.prompts_per_step=2",
           "rl.group_size=4", "data.n_train=64", "data.n_val=8", "data.n_test=8", "data.icons=4"],
}
"""Overrides of the default config for `demo` (quick: a smoke test)."""


def demo(runs_root: Path, quick: bool = False) -> Path:
    """This track's step of `make demo`: a short warm-up then a few RLRF steps on generated shapes."""
    from shared.demo import train_demo_run

    return train_demo_run(TRACK, runs_root, [*DEMO_OVERRIDES[quick], f"data.cache_dir={Path(runs_root) / 'data'}"])


TRACK = Track(
    name="svg",
    help="image -> SVG code from rendering feedback (RLRF): a Qwen2.5-VL (tiny or local), warm-up SFT then GRPO",
    schema=SVGConfig,
    configs_dir=CONFIGS_DIR,
    train=train,
    evaluate=evaluate_run,
    demo=demo,
)
