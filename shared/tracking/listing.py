"""Finding, summarising and comparing run folders (``rlab runs ls / show / compare``).

Read-only: nothing here writes to a run folder, and torch is never imported (checkpoints are
counted and checked by their manifests and file sizes, not loaded).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from shared.tracking.checkpoint import list_checkpoints, verify_checkpoint
from shared.tracking.media import read_manifest
from shared.tracking.metrics import METRICS_FILE, read_metrics
from shared.tracking.run import CONFIG_FILE, ENV_FILE, RUN_FILE

_TAIL_BYTES = 64 * 1024
_MAX_SUMMARY_METRICS = 4
_HIGHLIGHT_WORDS = (
    "name", "model", "lr", "learning_rate", "batch", "steps", "epochs", "seed", "algo", "loss", "advantage",
    "reward", "group", "kl", "entropy", "task", "dataset", "mixture", "env", "world",
)  # fmt: skip
_MAX_HIGHLIGHTS = 20


class RunLookupError(LookupError):
    """A run reference that matches no run folder, or more than one."""


@dataclass
class RunSummary:
    """One line of ``rlab runs ls``."""

    path: Path
    track: str
    name: str
    created: str
    """ISO time from run.json (the config file's mtime for folders without one)."""
    status: str
    """run.json's status; "crashed" when it says running but its process on this host is gone."""
    last_step: int | None
    checkpoints: int
    """Number of ``step-*`` checkpoint folders (valid or not; `show_run` checks them)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Latest value of up to a few metrics (those asked for, else the first ones logged)."""


# ---------------------------------------------------------------------------------------------------
# reading one run folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _tail_records(run_dir: Path, max_bytes: int = _TAIL_BYTES) -> list[dict[str, Any]]:
    """The metrics records in the last `max_bytes` of metrics.jsonl (cheap for long runs)."""
    path = run_dir / METRICS_FILE
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first line is probably cut
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append(record)
    return out


def _latest_values(records: list[dict[str, Any]]) -> dict[str, Any]:
    """{metric: its last logged value} over records (train and eval may be logged separately)."""
    latest: dict[str, Any] = {}
    for record in records:
        for key, value in record.items():
            if key not in ("step", "time"):
                latest[key] = value
    return latest


def _pid_gone(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("hostname") != socket.gethostname():
        return False  # another machine's run: can't tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def summarize_run(path: Path, metric_keys: list[str] | None = None) -> RunSummary:
    """The `RunSummary` of one run folder."""
    path = Path(path)
    info = _read_json(path / RUN_FILE)
    status = str(info.get("status", "unknown"))
    if status == "running" and _pid_gone(info):
        status = "crashed"
    created = info.get("created") or datetime.fromtimestamp(
        (path / CONFIG_FILE).stat().st_mtime
    ).astimezone().isoformat(timespec="seconds")
    records = _tail_records(path)
    latest = _latest_values(records)
    keys = [k for k in metric_keys if k in latest] if metric_keys else list(latest)[:_MAX_SUMMARY_METRICS]
    return RunSummary(
        path=path,
        track=str(info.get("track", path.parent.name)),
        name=str(info.get("name", path.name)),
        created=str(created),
        status=status,
        last_step=max((r["step"] for r in records), default=None),
        checkpoints=len(list_checkpoints(path / "checkpoints")),
        metrics={k: latest[k] for k in keys},
    )


# ---------------------------------------------------------------------------------------------------
# finding runs


def _run_dirs(root: Path) -> list[Path]:
    """Run folders under root: root/<track>/<run>/ (or root/<run>/ when root is one track)."""
    if not root.is_dir():
        return []
    found = {p.parent for p in root.glob(f"*/*/{CONFIG_FILE}")}
    found |= {p.parent for p in root.glob(f"*/{CONFIG_FILE}")}
    return sorted(found)


def find_runs(root: Path = Path("runs"), metric_keys: list[str] | None = None) -> list[RunSummary]:
    """Summaries of every run folder under `root`, oldest first."""
    runs = [summarize_run(p, metric_keys) for p in _run_dirs(Path(root))]
    return sorted(runs, key=lambda r: (r.created, str(r.path)))


def resolve_run(ref: str | Path, root: Path = Path("runs")) -> Path:
    """The run folder that `ref` names: a path to a run folder, or a unique prefix or suffix of a
    run folder's name (``grpo-base``, ``20260131-140509``, ``vlm/grpo``) under `root`.

    Raises `RunLookupError` listing the candidates when `ref` matches several runs or none.
    """
    as_path = Path(ref)
    if as_path.is_dir():
        if (as_path / CONFIG_FILE).is_file():
            return as_path
        raise RunLookupError(f"{as_path} is a folder but not a run folder (no {CONFIG_FILE})")
    ref = str(ref).strip("/")
    dirs = _run_dirs(Path(root))
    exact = [d for d in dirs if ref in (d.name, f"{d.parent.name}/{d.name}")]
    if len(exact) == 1:
        return exact[0]
    candidates = exact or [
        d
        for d in dirs
        if d.name.startswith(ref) or d.name.endswith(ref) or f"{d.parent.name}/{d.name}".startswith(ref)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        known = ", ".join(f"{d.parent.name}/{d.name}" for d in dirs[-10:]) or "none"
        raise RunLookupError(f"no run matches {ref!r} under {root} (runs there: {known})")
    listing = "\n  ".join(str(d) for d in candidates)
    raise RunLookupError(
        f"{ref!r} matches {len(candidates)} runs under {root}; give more of the name:\n  {listing}"
    )


# ---------------------------------------------------------------------------------------------------
# showing and comparing


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} from nested dicts; lists and scalars are leaves."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, dotted))
        else:
            out[dotted] = value
    return out


def load_flat_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml, flattened to dotted keys ({} if missing or unreadable)."""
    try:
        return flatten_config(yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError):
        return {}


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _config_highlights(flat: dict[str, Any]) -> list[str]:
    picked = [k for k in flat if any(w in k.lower().split(".")[-1] for w in _HIGHLIGHT_WORDS)]
    picked = picked or list(flat)
    lines = [f"  {k} = {_fmt(flat[k])}" for k in picked[:_MAX_HIGHLIGHTS]]
    if len(flat) > len(lines):
        lines.append(f"  ... ({len(flat) - len(lines)} more in {CONFIG_FILE})")
    return lines


def _checkpoint_lines(run_dir: Path) -> list[str]:
    ckpts = list_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        return ["checkpoints: none"]
    lines = [f"checkpoints: {len(ckpts)}"]
    for step, path in ckpts:
        reason = verify_checkpoint(path, full=False)
        lines.append(f"  step {step}: " + ("ok" if reason is None else f"INVALID ({reason})"))
    return lines


def show_run(path: Path) -> str:
    """A readable multi-line summary of one run: identity, git, config highlights, last metrics,
    checkpoints (quick-checked) and media count."""
    path = Path(path)
    summary = summarize_run(path)
    env = _read_json(path / ENV_FILE)
    git = env.get("git") or {}
    sha = git.get("sha")
    if sha is None:
        git_line = "not a git checkout" if git.get("root") is None else "no commit yet"
    else:
        git_line = sha[:12]
    if git.get("dirty"):
        git_line += " (dirty)"
    lines = [
        f"run:     {path}",
        f"track:   {summary.track}    name: {summary.name}    status: {summary.status}",
        f"created: {summary.created}    host: {env.get('hostname', '?')}    seed: {env.get('seed', '?')}",
        f"git:     {git_line}",
        "config:",
        *_config_highlights(load_flat_config(path)),
    ]
    latest = _latest_values(_tail_records(path))
    lines.append(f"last step: {summary.last_step if summary.last_step is not None else 'none logged'}")
    lines += [f"  {k} = {_fmt(v)}" for k, v in latest.items()]
    lines += _checkpoint_lines(path)
    lines.append(f"media:   {len(read_manifest(path))} records")
    return "\n".join(lines)


def compare_rows(paths: list[Path], metrics: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) comparing runs: one row per config key whose value differs between the runs
    (dotted keys; "-" where a run lacks the key), then one row per metric with each run's final
    value (all metrics that every run logged, or exactly `metrics` when given)."""
    paths = [Path(p) for p in paths]
    configs = [load_flat_config(p) for p in paths]
    missing = object()
    keys = list(dict.fromkeys(k for c in configs for k in c))
    rows: list[list[str]] = []
    for key in keys:
        values = [c.get(key, missing) for c in configs]
        if any(v != values[0] for v in values[1:]):
            rows.append([key, *("-" if v is missing else _fmt(v) for v in values)])
    finals = [_latest_values(read_metrics(p)) for p in paths]
    if metrics is None:
        metrics = [k for k in finals[0] if all(k in f for f in finals[1:])] if finals else []
    for key in metrics:
        rows.append([f"final {key}", *(_fmt(f[key]) if key in f else "-" for f in finals)])
    header = ["key", *(f"{p.parent.name}/{p.name}" for p in paths)]
    return header, rows


def compare_runs(paths: list[Path], metrics: list[str] | None = None) -> Table:
    """`compare_rows` as a rich table (config differences, then final metric values)."""
    header, rows = compare_rows(paths, metrics)
    table = Table(title="run comparison")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def runs_table(runs: list[RunSummary]) -> Table:
    """The `find_runs` summaries as a rich table (``rlab runs ls``)."""
    table = Table(title="runs")
    for column in ("run", "status", "created", "last step", "ckpts", "metrics"):
        table.add_column(column)
    for r in runs:
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in r.metrics.items())
        step = "-" if r.last_step is None else str(r.last_step)
        table.add_row(f"{r.track}/{r.path.name}", r.status, r.created, step, str(r.checkpoints), metrics)
    return table
