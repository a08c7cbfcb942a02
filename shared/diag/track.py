"""The `diag` track: config schema, model/data set-up, train, eval and its step of `make demo`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import choice, require
from shared.diag.model import TinyLMConfig
from shared.lm.config import LMRunConfig, ModelConfig
from shared.lm.rewards import REWARDS, RewardScore
from shared.tracks import EvalRequest, Track

CONFIGS_DIR = Path(__file__).parent / "configs"


@dataclass
class DiagModelConfig(ModelConfig):
    tiny: TinyLMConfig = field(default_factory=TinyLMConfig)
    """Size of the tiny Qwen2 built when model.path is empty."""


@dataclass
class TaskConfig:
    kind: str = choice("add", "add", "reverse")
    """Which digit task: add (a+b=) or reverse (reverse a digit string)."""
    max_digits: int = 2
    """Operands have 1..max_digits digits (reverse: strings of 2..max_digits+2 digits)."""
    test_size: int = 1000
    """Items in the held-out test split (never seen in training; results are reported on it)."""
    val_size: int = 200
    """Items in the validation split (warm-up checks; never seen in training)."""

    def __post_init__(self) -> None:
        require(1 <= self.max_digits <= 6, "task.max_digits", "must be between 1 and 6")
        require(self.test_size >= 1, "task.test_size", "must be >= 1")


@dataclass
class DiagConfig(LMRunConfig):
    name: str = "diag"
    """Run name (the run folder is runs/diag/<name>-<time>)."""
    model: DiagModelConfig = field(default_factory=DiagModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.data.path, "data.path", "the diag track generates its data; leave data.path empty")


# ------------------------------------------------------------------------------------- rewards


@REWARDS.register("diag.exact")
def exact_answer(completions: list[str], items: list[dict]) -> list[RewardScore]:
    """1 for exactly the right number, else 0; components: format (a bare number) and digits
    (share of answer digits right, position by position).

    >>> exact_answer(["42", "41", "x"], [{"answer": "42"}] * 3)[1].components["digits"]
    0.5
    """
    from shared.diag.task import parse_answer

    scores = []
    for completion, item in zip(completions, items, strict=True):
        answer = item["answer"]
        parsed = parse_answer(completion)
        if parsed is None:
            scores.append(RewardScore(0.0, {"format": 0.0, "digits": 0.0}, "not a bare number", False))
            continue
        digits = sum(a == b for a, b in zip(parsed.rjust(len(answer)), answer, strict=False)) / len(answer)
        ok = parsed == answer
        scores.append(RewardScore(float(ok), {"format": 1.0, "digits": digits}, None, ok))
    return scores


# --------------------------------------------------------------------------------------- set-up


def build_setup(cfg: DiagConfig) -> Any:
    """Model (built tiny, or loaded from model.path), tokenizer, prompts and data streams."""
    from shared.diag.model import banned_token_ids, build_tiny_lm, load_model, train_tokenizer
    from shared.diag.task import DigitTask
    from shared.lm.runtime import build_runtime, prepare_model
    from shared.lm.setup import LMSetup
    from shared.tracking.rng import seed_everything

    runtime = build_runtime(cfg.system, cfg.model.dtype)
    seed_everything(cfg.train.seed)
    task = DigitTask(cfg.task.kind, cfg.task.max_digits, cfg.task.test_size, cfg.task.val_size)
    if cfg.model.path:
        model, tokenizer = load_model(cfg.model.path)
    else:
        tokenizer = train_tokenizer(_corpus(task), cfg.model.tiny.vocab_size)
        model = build_tiny_lm(cfg.model.tiny, tokenizer, seed=cfg.train.seed)
    model = prepare_model(model, cfg.model, runtime)

    def encode_prompts(items: list[dict]) -> dict:
        messages = [[{"role": "user", "content": it["question"]}] for it in items]
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=True, return_tensors="pt", padding=True)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    splits = {name: task.split(name) for name in ("test", "val")}
    rewards = cfg.rl.rewards or ["diag.exact"]
    return LMSetup(
        model=model, tokenizer=tokenizer, encode_prompts=encode_prompts,
        target_text=lambda it: it["answer"],
        train_stream=task.train_stream,
        eval_items=lambda split: _split(split, splits),
        reward_names=rewards, reward_weights=cfg.rl.reward_weights or [1.0] * len(rewards),
        banned_ids=banned_token_ids(tokenizer),
        runtime=runtime,
    )


def _split(name: str, splits: dict[str, list[dict]]) -> list[dict]:
    if name not in splits:
        raise ValueError(f"the diag track has held-out splits {', '.join(splits)} (asked for {name!r})")
    return splits[name]


def _corpus(task: Any) -> list[str]:
    from shared.diag.model import CHAT_TEMPLATE  # noqa: F401  (the template's text is in the corpus)

    stream = task.train_stream(seed=0)
    lines = []
    for _ in range(2000):
        it = next(stream)
        lines.append(f"<|im_start|>user\n{it['question']}<|im_end|>\n<|im_start|>assistant\n{it['answer']}<|im_end|>")
    return lines


# ------------------------------------------------------------------------------- entry points


def train(cfg: DiagConfig, run: Any, resuming: bool) -> None:
    from shared.lm.trainer import LMTrainer

    trainer = LMTrainer(build_setup(cfg), run, cfg.train, cfg.sft, cfg.rl, cfg.eval)
    trainer.fit(resuming=resuming)


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """Sample max(k) completions per held-out item from the run's final model; log mean@k, pass@k."""
    import sys

    from tqdm.auto import tqdm

    from shared.config import load_config
    from shared.lm.evaluate import evaluate
    from shared.lm.trainer import write_traces
    from shared.tracking import read_metrics
    from shared.tracking.run import Run

    cfg = load_config(DiagConfig, req.run_dir / "config.yaml")
    final = req.run_dir / "final"
    if not final.exists():
        raise FileNotFoundError(f"{final} does not exist: the run has not finished (resume it first)")
    cfg.model.path = str(final)
    cfg.model.lora.r = 0  # final/ has the adapters merged in
    cfg.system.device = "auto"  # wherever this evaluation runs
    setup = build_setup(cfg)
    items = setup.eval_items(req.split)[: req.limit]
    with tqdm(total=len(items), desc=f"eval {req.split}", unit="item", file=sys.stderr) as bar:
        result = evaluate(setup, items, req.ks, cfg.rl.max_new_tokens, cfg.eval.temperature,
                          greedy=cfg.eval.greedy, seed=cfg.eval.seed, progress=bar.update)
    step = max((r["step"] for r in read_metrics(req.run_dir)), default=0)
    metrics = {f"final_eval/{req.split}/{k}": v for k, v in result.metrics.items()}
    with Run.open(req.run_dir, resume=False) as run:
        run.log(step, metrics)
    write_traces(req.run_dir, setup, result.traces[: cfg.eval.media_items], step, f"final_eval/{req.split}")
    return metrics


def demo(runs_root: Path, quick: bool = False) -> Path:
    """The diag step of `make demo`: the default config (quick: a few steps); returns the run folder."""
    from shared.demo import train_demo_run

    overrides = ["train.steps=10", "sft.steps=20", "eval.size=50", "train.eval_every=0"] if quick else []
    return train_demo_run(TRACK, runs_root, overrides)


TRACK = Track(
    name="diag",
    help="built-in diagnostic: tiny Qwen2 on digit tasks, warm-up SFT then GRPO",
    schema=DiagConfig,
    configs_dir=CONFIGS_DIR,
    train=train,
    evaluate=evaluate_run,
    demo=demo,
)
