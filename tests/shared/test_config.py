"""Configs: schema + YAML + dotted overrides; every error names its key and exits 2 in the CLI."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.config import ConfigError, choice, describe_config, load_config, require, to_yaml


@dataclass
class Inner:
    lr: float = 1e-3
    """Learning rate."""
    scale: str = choice("group", "group", "batch", "none")
    """How to scale."""


@dataclass
class Root:
    steps: int = 10
    """Steps in total."""
    tags: list[str] = field(default_factory=list)
    """Free tags."""
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", "must be >= 1")


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("steps: 20\ninner:\n  lr: 0.5\n")
    (tmp_path / "exp.yaml").write_text("extends: base\ninner:\n  scale: batch\n")
    cfg = load_config(Root, "exp", ["steps=30"], tmp_path)
    assert (cfg.steps, cfg.inner.lr, cfg.inner.scale) == (30, 0.5, "batch")
    assert isinstance(cfg, Root) and isinstance(cfg.inner, Inner)


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["inner.lrr=1"], "inner.lrr", "unknown key"),
        (["steps=abc"], "steps", "abc"),
        (["inner.scale=sideways"], "inner.scale", "group, batch, none"),
        (["steps=0"], "steps", ">= 1"),
        (["steps"], "steps", "key=value"),
    ],
)
def test_errors_name_the_key(overrides: list[str], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Root, None, overrides)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_unknown_key_in_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("inner:\n  nope: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Root, tmp_path / "bad.yaml")
    assert info.value.key == "inner.nope"


def test_unknown_config_name_lists_available(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("steps: 2\n")
    with pytest.raises(ConfigError, match="available: one"):
        load_config(Root, "two", [], tmp_path)


def test_broken_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_config(Root, tmp_path / "broken.yaml")


def test_describe_lists_every_field_with_help_and_choices() -> None:
    text = describe_config(Root)
    for needle in ("steps: int = 10", "Steps in total.", "inner.lr", "Learning rate.", "one of: group, batch, none"):
        assert needle in text


def test_yaml_round_trip() -> None:
    cfg = load_config(Root, None, ["inner.scale=none", "tags=[a,b]"])
    again = load_config(Root, None, [], base_yaml=to_yaml(cfg))
    assert again == cfg


def _rlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    ("override", "needle"),
    [("train.stepz=5", "train.stepz"), ("rl.loss=nope", "rl.loss"), ("train.lr_schedule=zigzag", "cosine"),
     ("train.steps=many", "train.steps")],
)
def test_cli_config_error_exits_2_before_any_run_folder(tmp_path: Path, override: str, needle: str) -> None:
    proc = _rlab("train", "diag", "--set", override, "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_help_config_prints_fields(tmp_path: Path) -> None:
    proc = _rlab("train", "diag", "--help-config", cwd=tmp_path)
    assert proc.returncode == 0
    assert "rl.clip_high" in proc.stdout and "DAPO" in proc.stdout
