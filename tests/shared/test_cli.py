"""The `rlab` command end to end on a tiny diag run: train, runs ls/show/compare/plot, eval, gallery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["train.steps=3", "sft.steps=3", "train.save_every=3", "train.eval_every=3", "eval.size=8",
        "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=6", "sft.batch_size=8",
        "task.test_size=8", "task.kind=reverse"]


def rlab(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_help_imports_no_torch() -> None:
    code = ("import sys; from shared.cli import app, _register_track_commands; _register_track_commands(); "
            "import typer.main as tm; tm.get_command(app); "
            "assert 'torch' not in sys.modules, 'rlab --help imported torch'; "
            "assert 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = subprocess.run([sys.executable, "-m", "shared.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("train", "eval", "gallery", "runs", "demo", "models"):
        assert command in out.stdout


def test_unknown_track_exits_2(tmp_path: Path) -> None:
    proc = rlab("train", "nosuchtrack", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "known tracks: diag" in proc.stderr


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    cwd = tmp_path_factory.mktemp("cli")
    sets = [x for o in TINY for x in ("--set", o)]
    rlab("train", "diag", *sets, "--run-dir", "runs/diag/first", cwd=cwd)
    rlab("train", "diag", *sets, "--set", "rl.lr=1e-3", "--set", "train.seed=1", "--run-dir", "runs/diag/second",
         cwd=cwd)
    return cwd, cwd / "runs/diag/first", cwd / "runs/diag/second"


def test_run_folder_layout(two_runs) -> None:
    _, first, _ = two_runs
    for name in ("config.yaml", "env.json", "metrics.jsonl", "tb", "checkpoints", "media", "final"):
        assert (first / name).exists(), name
    env = json.loads((first / "env.json").read_text())
    assert env["seed"] == 0 and "torch" in json.dumps(env)
    assert "rl:" in (first / "config.yaml").read_text()
    assert any((first / "tb").iterdir())


def test_runs_ls_show_compare_plot(two_runs) -> None:
    cwd, first, second = two_runs
    assert "first" in rlab("runs", "ls", cwd=cwd).stdout
    shown = rlab("runs", "show", "first", cwd=cwd).stdout
    assert "diag" in shown and "checkpoint" in shown.lower()
    compared = rlab("runs", "compare", "first", "second", cwd=cwd).stdout
    assert "rl.lr" in compared and "train.seed" in compared
    png = Path(rlab("runs", "plot", "first", "second", "--metric", "reward", cwd=cwd).stdout.strip())
    assert png.exists() and png.stat().st_size > 1000
    bad = rlab("runs", "plot", "first", "--metric", "nope", cwd=cwd, check=False)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_eval_and_gallery(two_runs) -> None:
    cwd, first, second = two_runs
    out = rlab("eval", "first", "--k", "1,4", "--limit", "6", cwd=cwd).stdout
    assert "final_eval/test/pass@4" in out and "final_eval/test/pass@1" in out
    index = Path(rlab("gallery", "first", cwd=cwd).stdout.strip())
    html = index.read_text()
    assert index.exists() and "trace" in html.lower()
    both = Path(rlab("gallery", "first", "second", "--out", str(cwd / "g2"), cwd=cwd).stdout.strip())
    assert both.exists()
    assert rlab("gallery", "first", "second", cwd=cwd, check=False).returncode == 2


def test_models_tiny_lm_loads_back(tmp_path: Path) -> None:
    rlab("models", "tiny-lm", "--out", str(tmp_path / "m"), cwd=tmp_path)
    from shared.diag.model import load_model

    model, tokenizer = load_model(tmp_path / "m")
    assert model.config.model_type == "qwen2" and tokenizer.eos_token == "<|im_end|>"


def test_train_from_a_saved_model_path(two_runs) -> None:
    cwd, first, _ = two_runs
    proc = rlab("train", "diag", *[x for o in TINY for x in ("--set", o)], "--set", "sft.steps=0",
                "--set", f"model.path={first / 'final'}", "--run-dir", "runs/diag/from-final", cwd=cwd)
    assert (cwd / "runs/diag/from-final/final/config.json").exists(), proc.stderr


def test_demo_quick_ends_with_a_gallery_of_every_track(tmp_path: Path) -> None:
    out = rlab("demo", "--quick", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("gallery: ")
    index = Path(last.removeprefix("gallery: "))
    assert index.exists()
    html = index.read_text()
    for track in ("diag", "vlm", "svg", "fastrlap", "cad2rl"):  # rccar and flight runs are named after their config
        assert f"{track}-" in html, f"the demo gallery has no {track} run"
