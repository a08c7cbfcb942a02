"""The vlm track end to end on a tiny model and tiny images: configs, a short warm-up + GRPO run, eval with
the vision probe and gallery traces, resume after a checkpoint, bad datasets."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shared.config import ConfigError, load_config, to_yaml
from shared.tracking import read_manifest, read_metrics
from shared.tracking.run import Run
from shared.tracks import EvalRequest, track_names
from vlm_rl.data import write_dataset
from vlm_rl.track import CONFIGS_DIR, DATA_REPORT, VLMConfig, epoch_stream, load_data, train

# Tiny everything: 56 px images (4 visual tokens), a ~0.1M-parameter model, a few steps of each phase.
TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=1", "model.tiny.intermediate_size=128",
    "model.tiny.vision_depth=1", "model.tiny.vision_hidden_size=32", "model.tiny.vision_intermediate_size=64",
    "model.tiny.min_pixels=3136", "model.tiny.max_pixels=3136", "vision.min_pixels=3136", "vision.max_pixels=3136",
    "data.val_size=8", "sft.steps=4", "sft.batch_size=8", "sft.target_accuracy=0", "train.steps=4",
    "train.save_every=2", "train.eval_every=0", "eval.size=8", "eval.media_items=4", "rl.prompts_per_step=4",
    "rl.group_size=4", "rl.max_new_tokens=12", "data.max_question_chars=200",
]
BAD_ROWS = [  # appended to train.jsonl: dropped and counted, training goes on
    {"id": "bad-missing", "images": ["images/train/nope.png"], "question": "How many red circles are there?",
     "answer": "2", "task": "counting", "meta": {}},
    {"id": "bad-noanswer", "images": ["images/train/000000.png"], "question": "How many red circles are there?",
     "answer": "", "task": "counting", "meta": {}},
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A 56 px counting dataset (72 train rows, 8 of them val; 8 test, 8 test_ood) with two bad rows and one
    over-long question appended to train.jsonl."""
    root = write_dataset(tmp_path_factory.mktemp("data") / "counting", "counting", 72, 8, 8, seed=0, image_size=56)
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    long = {**rows[0], "id": "long-question", "question": "How many " + "very " * 100 + "red circles are there?"}
    with (root / "train.jsonl").open("a") as f:
        for row in [*BAD_ROWS, long]:
            f.write(json.dumps(row) + "\n")
    return root


def _config(dataset: Path, *extra: str) -> VLMConfig:
    return load_config(VLMConfig, "default", [*TINY, f"data.path={dataset}", *extra], CONFIGS_DIR)


def _train(cfg: VLMConfig, run_dir: Path) -> Path:
    with Run.create("vlm", cfg.name, to_yaml(cfg), cfg.train.seed, run_dir=run_dir, tensorboard=False) as run:
        train(cfg, run, resuming=False)
    return run_dir


def _train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if "nonfinite" in r]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    return _train(_config(dataset), tmp_path_factory.mktemp("runs") / "run")


# ------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
def test_every_config_loads(name):
    cfg = load_config(VLMConfig, name, (), CONFIGS_DIR)
    assert cfg.data.task == "counting" and cfg.sft.steps + cfg.train.steps >= 1


def test_config_variants_say_what_they_change():
    load = lambda name: load_config(VLMConfig, name, (), CONFIGS_DIR)  # noqa: E731
    assert load("warmup").train.steps == 0 and load("warmup").sft.target_accuracy > 0
    dapo = load("dapo").rl
    assert (dapo.clip_high, dapo.dynamic_sampling, dapo.aggregation) == (0.28, True, "token_mean")
    assert dapo.overlong_buffer > 0 and dapo.kl_coef == 0
    assert load("dr_grpo").rl.advantage == "dr_grpo"
    assert load("sft_control").rl.algorithm == "sft"
    assert load("default").sft.target_accuracy > 0 and load("default").sft.check_split == "val"


@pytest.mark.parametrize(("override", "key"), [
    ("rl.loss=nope", "rl.loss"), ("data.task=juggling", "data.task"), ("data.nope=1", "data.nope"),
    ("vision.max_pixels=10", "vision.max_pixels"), ("data.n_train=0", "data.n_train"),
    ("eval.split=train", "eval.split"), ("model.tiny.num_heads=3", "hidden_size"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(VLMConfig, "default", [override], CONFIGS_DIR)
    assert key in str(err.value)


@pytest.mark.skipif("vlm" not in track_names(), reason="the vlm entry point is not installed yet")
def test_cli_config_error_exits_2_naming_the_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "train", "vlm", "--set", "rl.loss=nope"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rl.loss" in proc.stderr
    assert not (tmp_path / "runs").exists(), "no run folder for a bad config"


# ---------------------------------------------------------------------------------------------- data


def test_train_stream_is_resumable_and_excludes_val(dataset):
    data = load_data(_config(dataset).data)
    val_ids = {r["id"] for r in data.split("val")}
    assert len(val_ids) == 8 and not val_ids & {r["id"] for r in data.train}
    full = epoch_stream(data.train, seed=3)
    first = [next(full)["id"] for _ in range(2 * len(data.train) + 5)]
    later = epoch_stream(data.train, seed=3, start=len(data.train) + 2)
    assert [next(later)["id"] for _ in range(len(data.train) + 3)] == first[len(data.train) + 2:]
    assert sorted(first[: len(data.train)]) == sorted(r["id"] for r in data.train), "each epoch once"
    assert first[: len(data.train)] != first[len(data.train): 2 * len(data.train)], "a new order each epoch"


def test_bad_rows_are_counted_and_strict_names_the_row(dataset, caplog):
    with caplog.at_level(logging.WARNING, logger="vlm_rl.track"):
        data = load_data(_config(dataset).data)
    report = data.reports["train"]
    assert report.dropped == {"missing_image": 1, "no_answer": 1} and report.truncated == 1
    assert "dropped 2" in caplog.text and "missing_image 1" in caplog.text
    with pytest.raises(ValueError, match="bad-missing"):
        load_data(_config(dataset, "data.strict=true").data)


def test_generated_dataset_is_cached_and_reused(tmp_path):
    cfg = load_config(VLMConfig, "default", ["data.n_train=6", "data.n_test=2", "data.val_size=2",
                                             "data.image_size=32", f"data.cache_dir={tmp_path}"], CONFIGS_DIR)
    first = load_data(cfg.data)
    assert first.root == tmp_path / "vlm-counting-0-32-8-2"
    stamp = (first.root / "train.jsonl").stat().st_mtime_ns
    again = load_data(cfg.data)
    assert (again.root / "train.jsonl").stat().st_mtime_ns == stamp
    assert [r["id"] for r in again.train] == [r["id"] for r in first.train] and len(first.train) == 6
    assert set(first.splits) == {"test", "test_ood", "val"}


# --------------------------------------------------------------------------------------------- train


def test_short_run_writes_a_loadable_model_and_reports_its_data(trained):
    from vlm_rl.models import load_vlm

    assert _train_steps(trained) == list(range(1, 9))
    records = read_metrics(trained)
    assert any("sft/loss" in r for r in records) and any("reward" in r for r in records)
    assert any("eval/test/accuracy" in r for r in records)
    model, processor = load_vlm(trained / "final")
    assert processor.tokenizer.chat_template and hasattr(processor, "image_processor")
    report = json.loads((trained / DATA_REPORT).read_text())
    assert report["splits"]["train"]["dropped"] == {"missing_image": 1, "no_answer": 1}
    assert report["splits"]["train"]["truncated"] == 1 and report["train_rows"] == 65


def test_eval_logs_vision_probe_and_writes_traces_with_images(trained):
    from vlm_rl.evaluate import evaluate_run

    metrics = evaluate_run(EvalRequest(trained, "test", (1, 2), limit=6))
    prefix = "final_eval/test/"
    for key in ("accuracy", "mean@2", "pass@1", "pass@2", "format_error_rate", "task/counting/accuracy",
                "vision/real_accuracy", "vision/blank_accuracy", "vision/dependence", "task/counting/blank_accuracy"):
        assert prefix + key in metrics, key
    assert metrics[prefix + "items"] == 6
    assert metrics[prefix + "vision/dependence"] == pytest.approx(
        metrics[prefix + "vision/real_accuracy"] - metrics[prefix + "vision/blank_accuracy"])
    assert any(prefix + "vision/dependence" in r for r in read_metrics(trained))
    traces = [m for m in read_manifest(trained) if m.group == "final_eval/test"]
    assert len(traces) == 4
    for trace in traces:
        assert trace.path and (trained / trace.path).is_file()
        assert {"question", "completion", "answer", "verdict"} <= set(trace.fields)


def test_blank_probe_keeps_the_prompt_tokens(trained, dataset, tmp_path):
    from vlm_rl.evaluate import blank_items
    from vlm_rl.inputs import encode_vlm_prompts
    from vlm_rl.models import load_vlm

    _, processor = load_vlm(trained / "final")
    items = load_data(_config(dataset).data).split("test")[:3]
    real = encode_vlm_prompts(processor, items, dataset, 3136, 3136)
    blank = encode_vlm_prompts(processor, blank_items(items, tmp_path), dataset, 3136, 3136)
    assert torch.equal(real["input_ids"], blank["input_ids"])
    assert not torch.equal(real["pixel_values"], blank["pixel_values"])


def test_model_folder_without_processor_or_template_is_a_clear_error(trained, dataset, tmp_path):
    from vlm_rl.track import build_setup

    for missing, words in (("processor_config.json", "image processor is missing"),
                           ("chat_template.jinja", "no chat template")):
        folder = tmp_path / missing
        shutil.copytree(trained / "final", folder)
        (folder / missing).unlink()
        if missing == "chat_template.jinja":  # the template may also sit in the tokenizer's config
            config = json.loads((folder / "tokenizer_config.json").read_text())
            config.pop("chat_template", None)
            (folder / "tokenizer_config.json").write_text(json.dumps(config))
        with pytest.raises(FileNotFoundError, match=words):
            build_setup(_config(dataset, f"model.path={folder}"))


class _Killed(Exception):
    pass


def test_resume_after_a_checkpoint_gives_every_step_once(trained, dataset, tmp_path, monkeypatch):
    """Crash in the second RL step (after the checkpoint at step 6), resume: the same run as `trained`."""
    import shared.lm.trainer as trainer

    calls = {"n": 0}
    real_step = trainer.grpo_step

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Killed
        return real_step(*args, **kwargs)

    cfg = _config(dataset)
    run_dir = tmp_path / "killed"
    monkeypatch.setattr(trainer, "grpo_step", crashing_step)
    with pytest.raises(_Killed):
        _train(cfg, run_dir)
    monkeypatch.setattr(trainer, "grpo_step", real_step)
    assert max(_train_steps(run_dir)) == 6 and not (run_dir / "final").exists()
    with Run.open(run_dir, tensorboard=False) as run:
        train(cfg, run, resuming=True)
    assert _train_steps(run_dir) == list(range(1, 9)), "every step exactly once"
    ref, got = load_file(trained / "final" / "model.safetensors"), load_file(run_dir / "final" / "model.safetensors")
    assert ref.keys() == got.keys()
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0, msg=key)
