"""`rlab logs to-minari LOG [LOG...] --out datasets/car-logs`: drive logs as a Minari dataset (offline RL).

    rlab logs to-minari drives/car-20250101-120000 drives/car-20250101-121500 --out datasets/car-logs
    MINARI_DATASETS_PATH=datasets/car-logs python -c "import minari; print(minari.load_dataset('rlab/car-logs-v0'))"

Registered as the top-level command ``logs`` through the ``rlab.commands`` entry point. A LOG is a drive
log folder written by ``rlab drive`` (``robot.deploy.drivelog``) or its ``drive.jsonl``.

What goes into the dataset, per log (ticks 0..n-1 of ``drive.jsonl``):

* observations: the tick's ``observation`` (float32, the vector the policy saw; a non-finite entry was
  logged as null and becomes NaN); the observation space is ``Box(-inf, inf, (n_obs,))`` and the layout's
  names are in the dataset's description and in ``rlab-drive-logs.json`` beside its ``data/`` folder;
* actions: the tick's ``command`` -- what was written to the vehicle after the safety layer (clamped,
  throttle-capped, rate-limited, neutral on an e-stop), ``[steer_rad, throttle_fraction]``, in physical
  units. The action space is the policy's command limits (``car.onnx.json``'s ``command.low/high``; the
  metadata path the log recorded, or ``--metadata``), widened to include the neutral command (0, 0)
  the safety layer writes on a stop. Without the metadata: the limits the safety layer applied
  (``summary.json``), else unbounded;
* one transition per consecutive pair of ticks (n - 1 steps: the last tick's command has no next
  observation logged);
* rewards: a vehicle logs none, so they are 0 -- except where the ticks' readings carry ``reward``
  (``--vehicle sim``: the simulator's reward of the step, m/s toward the next checkpoint minus the crash
  cost), which is used (the reward of step i is read on tick i + 1);
* episodes: one per log, split at crashes where the log marks them (``readings.crash`` on the tick after
  the step that crashed: the sim's; a real car's log marks none): that step is ``terminated`` and a new
  episode starts at the next tick (the sim teleported the car back onto the track, so the terminal step's
  next observation is already the reset one; it is never bootstrapped from). The last step of a log is
  ``truncated``. ``infos`` hold each observation's ``tick`` and time ``t`` (s since the drive started).

Minari stores the dataset under ``$MINARI_DATASETS_PATH/<dataset id>``; this command sets that variable
to ``--out`` for the call (nothing goes to ~/.minari), so load it with the same variable set. The data
format is ``arrow`` (pyarrow; Minari's ``hdf5`` needs h5py, which the lab does not install).

A missing, empty or corrupt log is an error naming the file (and the line); a last line cut short (the
process was killed mid-write) is skipped with a warning, as ``robot.deploy.drivelog.read_log`` does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

EXIT_USAGE = 2
DATA_FORMATS = ("arrow", "parquet", "hdf5")
SIDECAR = "rlab-drive-logs.json"
NEUTRAL = (0.0, 0.0)

app = typer.Typer(help="Drive logs (rlab drive): convert them for offline RL.", no_args_is_help=True,
                  add_completion=False)


class LogError(ValueError):
    """A drive log that cannot be converted; the message names the file (and line)."""


@dataclass
class DriveLogData:
    """The tick records of one ``drive.jsonl`` (in order) and its ``summary.json`` (empty if absent)."""

    path: Path
    ticks: list[dict]
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_obs(self) -> int:
        return len(self.ticks[0]["observation"])


# ------------------------------------------------------------------------------------------ reading


def _jsonl_path(log: Path) -> Path:
    log = Path(log)
    path = log if log.suffix == ".jsonl" else log / "drive.jsonl"
    if not path.is_file():
        where = "no such file" if log.suffix == ".jsonl" else f"{log} is not a drive log folder (no drive.jsonl)"
        raise LogError(f"{path}: {where}")
    return path


def _numbers(value: Any, where: str, what: str, n: int | None = None) -> list[float]:
    if not isinstance(value, list) or (n is not None and len(value) != n):
        size = f"{n} " if n is not None else ""
        raise LogError(f"{where}: {what} must be a list of {size}numbers, got {str(value)[:80]}")
    out = []
    for v in value:
        if v is None:
            out.append(math.nan)  # the log writes non-finite numbers as null
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise LogError(f"{where}: {what} holds a non-number {v!r}")
    return out


def _check_tick(rec: dict, where: str, previous: dict | None) -> dict:
    tick = rec.get("tick")
    if not isinstance(tick, int):
        raise LogError(f"{where}: a tick record without an integer 'tick'")
    n = None if previous is None else len(previous["observation"])
    obs = _numbers(rec.get("observation"), where, "observation", n)
    if not obs:
        raise LogError(f"{where}: empty observation")
    command = _numbers(rec.get("command"), where, "command", 2)
    if not all(math.isfinite(v) for v in command):
        raise LogError(f"{where}: non-finite command {rec.get('command')}")
    if previous is not None and tick != previous["tick"] + 1:
        raise LogError(f"{where}: tick {tick} follows tick {previous['tick']} (ticks must be consecutive)")
    readings = rec.get("readings") if isinstance(rec.get("readings"), dict) else {}
    return {"tick": tick, "t": float(rec.get("t") or 0.0), "observation": obs, "command": command,
            "readings": readings}


def _parse_line(line: str, where: str, last_cut_short: bool, warnings: list[str]) -> dict | None:
    """One JSON object; None for a last line cut short (recorded in `warnings`)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        if last_cut_short:
            warnings.append(f"{where}: skipped a last line cut short ({err.msg})")
            return None
        raise LogError(f"{where}: not valid JSON ({err.msg} at column {err.colno}): the log is corrupt") from None
    if not isinstance(rec, dict):
        raise LogError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if rec.get("kind") not in ("tick", "event"):
        raise LogError(f"{where}: unknown record kind {rec.get('kind')!r} (not a drive log?)")
    return rec


def _read_summary(path: Path, warnings: list[str]) -> dict:
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        warnings.append(f"{path}: not valid JSON ({err.msg}); ignored")
        return {}
    return summary if isinstance(summary, dict) else {}


def read_drive_log(log: str | Path) -> DriveLogData:
    """The tick records of a drive log folder (or its ``drive.jsonl``); `LogError` naming file and line for
    a missing/empty/corrupt log or one with fewer than two ticks."""
    path = _jsonl_path(Path(log))
    text = path.read_text(errors="replace")
    if not text.strip():
        raise LogError(f"{path}: empty (nothing was logged)")
    lines = text.split("\n")
    cut_short = not text.endswith("\n")  # the last line was being written when the process died
    ticks: list[dict] = []
    stop_error = None
    warnings: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        rec = _parse_line(line, where, cut_short and lineno == len(lines), warnings)
        if rec is None:
            break
        if rec["kind"] == "tick":
            ticks.append(_check_tick(rec, where, ticks[-1] if ticks else None))
        elif rec.get("event") == "stop":
            stop_error = rec.get("error")
    if len(ticks) < 2:
        why = f"; the drive stopped: {stop_error}" if stop_error else ""
        raise LogError(f"{path}: {len(ticks)} tick record(s); a dataset needs at least 2 (one transition){why}")
    return DriveLogData(path, ticks, _read_summary(path.parent / "summary.json", warnings), warnings)


# ------------------------------------------------------------------------------------------ spaces


@dataclass(frozen=True)
class Layout:
    """Observation names and the action (command) space of the logs."""

    observation_names: tuple[str, ...]
    command_names: tuple[str, ...]
    command_units: tuple[str, ...]
    low: tuple[float, float]
    high: tuple[float, float]
    source: str


def _load_metadata(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def layout_for(log: DriveLogData, metadata: Path | None = None) -> Layout:
    """From ``--metadata``, else the policy metadata the log's summary names, else the safety limits."""
    config = log.summary.get("config") or {}
    candidates = [metadata] if metadata is not None else [config.get("metadata")]
    for candidate in candidates:
        meta = _load_metadata(Path(candidate)) if candidate else None
        if meta is None:
            if metadata is not None:
                raise LogError(f"--metadata {metadata}: cannot read it as the policy's metadata JSON")
            continue
        entries = (meta.get("observation") or {}).get("layout", [])
        names = [e["name"] if isinstance(e, dict) else str(e) for e in entries]
        cmd = meta.get("command") or {}
        if len(names) != log.n_obs or "low" not in cmd or "high" not in cmd:
            raise LogError(f"{candidate}: its layout has {len(names)} entries, the log {log.path} observes "
                           f"{log.n_obs}, or it lacks command.low/high: not this log's policy metadata")
        return Layout(tuple(names), tuple(cmd.get("names", ("steer_rad", "throttle_fraction"))),
                      tuple(cmd.get("units", ("rad", "fraction of top wheel speed"))),
                      tuple(float(v) for v in cmd["low"]), tuple(float(v) for v in cmd["high"]), str(candidate))
    safety = config.get("safety") or {}
    names = tuple(f"obs{i}" for i in range(log.n_obs))
    command = (("steer_rad", "throttle_fraction"), ("rad", "fraction of top wheel speed"))
    if "low" in safety and "high" in safety:
        return Layout(names, *command, tuple(safety["low"]), tuple(safety["high"]),
                      f"{log.path.parent / 'summary.json'} (safety limits)")
    return Layout(names, *command, (-math.inf, -math.inf), (math.inf, math.inf), "none (unbounded)")


def spaces_for(layout: Layout, logs: Sequence[DriveLogData]) -> tuple[Any, Any]:
    """(observation space, action space); the action space contains neutral and every logged command."""
    from gymnasium import spaces

    commands = np.concatenate([np.asarray([t["command"] for t in log.ticks]) for log in logs])
    low = np.minimum.reduce([np.asarray(layout.low, np.float64), np.asarray(NEUTRAL), commands.min(axis=0)])
    high = np.maximum.reduce([np.asarray(layout.high, np.float64), np.asarray(NEUTRAL), commands.max(axis=0)])
    n_obs = logs[0].n_obs
    return (spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32),
            spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32))


# ------------------------------------------------------------------------------------------ episodes


def _rewards(ticks: list[dict]) -> tuple[np.ndarray, str]:
    """Reward of step i (tick i -> i + 1): the next tick's ``reward`` reading, or 0 where none is logged."""
    later = ticks[1:]
    if all(isinstance(t["readings"].get("reward"), (int, float)) for t in later):
        return np.asarray([float(t["readings"]["reward"]) for t in later]), "readings.reward (simulator)"
    return np.zeros(len(later)), "none logged (0)"


def episodes_from_log(log: DriveLogData, first_id: int = 0) -> tuple[list[Any], dict]:
    """Minari ``EpisodeBuffer``s of one log (split at crashes) and a description of what was done."""
    from minari.data_collector import EpisodeBuffer

    ticks = log.ticks
    obs = np.asarray([t["observation"] for t in ticks], dtype=np.float32)
    actions = np.asarray([t["command"] for t in ticks], dtype=np.float32)
    rewards, reward_source = _rewards(ticks)
    crashed = [bool(t["readings"].get("crash")) for t in ticks[1:]]
    bounds, start = [], 0
    for i, crash in enumerate(crashed):
        if crash:
            bounds.append((start, i + 1, True))
            start = i + 1
    if start < len(ticks) - 1:
        bounds.append((start, len(ticks) - 1, False))
    episodes = []
    for k, (a, b, terminated) in enumerate(bounds):  # steps a..b-1, observations a..b
        n = b - a
        episodes.append(EpisodeBuffer(
            id=first_id + k, observations=obs[a:b + 1], actions=actions[a:b], rewards=rewards[a:b].tolist(),
            terminations=[False] * (n - 1) + [terminated], truncations=[False] * (n - 1) + [not terminated],
            infos={"tick": [t["tick"] for t in ticks[a:b + 1]], "t": [t["t"] for t in ticks[a:b + 1]]}))
    info = {"log": str(log.path), "ticks": len(ticks), "steps": len(ticks) - 1, "episodes": len(episodes),
            "crashes": sum(crashed), "reward": reward_source,
            "non_finite_observations": int((~np.isfinite(obs)).any(axis=1).sum())}
    return episodes, info


# ------------------------------------------------------------------------------------------ dataset


@contextlib.contextmanager
def datasets_path(root: Path) -> Iterator[Path]:
    """``MINARI_DATASETS_PATH`` set to `root` for the block (Minari has no path argument)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _check_dataset_id(dataset_id: str) -> None:
    """Minari's ``(namespace/)name-vN`` (no dots or leading slash: the id is a path under --out)."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise LogError(f"--dataset-id {dataset_id!r}: must be (namespace/)name-vN, e.g. rlab/car-logs-v0 (letters, "
                       "digits, - and _)") from None


def _finite(x: Any) -> Any:
    """For JSON: non-finite floats (an unbounded action space) to None."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _description(layout: Layout, infos: list[dict]) -> str:
    rewards = sorted({i["reward"] for i in infos})
    commands = ", ".join(f"{n} ({u})" for n, u in zip(layout.command_names, layout.command_units, strict=False))
    return (f"rlab drive logs ({len(infos)}): observation = the policy's input vector "
            f"[{', '.join(layout.observation_names)}]; action = the command written to the vehicle after the "
            f"safety layer [{commands}]; reward: {'; '.join(rewards)}; episodes split at crashes (terminated), "
            "each log's end truncated.")


def to_minari(logs: Sequence[str | Path], out: str | Path, dataset_id: str = "rlab/car-logs-v0", *,
              data_format: str = "arrow", metadata: str | Path | None = None, overwrite: bool = False) -> dict:
    """Convert drive logs into the Minari dataset `dataset_id` under `out`; returns what was written."""
    if data_format not in DATA_FORMATS:
        raise LogError(f"--data-format must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}")
    if data_format == "hdf5" and importlib.util.find_spec("h5py") is None:
        raise LogError("--data-format hdf5 needs h5py, which is not installed; use arrow (the default) or parquet")
    if not logs:
        raise LogError("give at least one drive log")
    data = [read_drive_log(log) for log in logs]
    layout = layout_for(data[0], Path(metadata) if metadata is not None else None)
    for log in data[1:]:
        if log.n_obs != data[0].n_obs:
            raise LogError(f"{log.path}: observes {log.n_obs} values, {data[0].path} {data[0].n_obs}: logs of "
                           "different policies cannot share a dataset")
    obs_space, act_space = spaces_for(layout, data)
    buffers, infos = [], []
    for log in data:
        episodes, info = episodes_from_log(log, first_id=len(buffers))
        buffers += episodes
        infos.append(info)

    import minari

    _check_dataset_id(dataset_id)
    with datasets_path(Path(out)) as root:
        target = root / dataset_id
        if target.exists():
            if not overwrite:
                raise LogError(f"{target} exists: give another --dataset-id or --overwrite")
            shutil.rmtree(target)
        try:
            with warnings.catch_warnings():
                # Minari's advice for published datasets (author, code permalink, eval env, env spec): a drive
                # log has no gymnasium env behind it
                warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None)",
                                        category=UserWarning)
                dataset = minari.create_dataset_from_buffers(
                    dataset_id, buffers, observation_space=obs_space, action_space=act_space,
                    algorithm_name="rlab drive (exported ONNX policy, safety layer)", data_format=data_format,
                    description=_description(layout, infos))
        except Exception as err:
            shutil.rmtree(target, ignore_errors=True)  # no half-written dataset
            if isinstance(err, ValueError):
                raise LogError(f"minari: {err}") from None
            raise
        sidecar = {"dataset_id": dataset_id, "logs": infos, "observation_names": list(layout.observation_names),
                   "command_names": list(layout.command_names), "command_units": list(layout.command_units),
                   "policy_command_low": list(layout.low), "policy_command_high": list(layout.high),
                   "action_space_low": act_space.low.tolist(), "action_space_high": act_space.high.tolist(),
                   "layout_source": layout.source, "data_format": data_format}
        (target / SIDECAR).write_text(json.dumps(_finite(sidecar), indent=1, allow_nan=False, default=str) + "\n")
        return {"path": target, "root": root, "episodes": dataset.total_episodes, "steps": dataset.total_steps,
                "logs": infos, "warnings": [w for log in data for w in log.warnings], "layout_source": layout.source}


@app.command("to-minari")
def to_minari_cmd(
    logs: Annotated[list[Path], typer.Argument(help="Drive log folders (rlab drive --log-dir) or drive.jsonl files")],
    out: Annotated[Path, typer.Option(help="Datasets root (MINARI_DATASETS_PATH)")] = Path("datasets/car-logs"),
    dataset_id: Annotated[str, typer.Option(help="Minari dataset id: namespace/name-vN")] = "rlab/car-logs-v0",
    data_format: Annotated[str, typer.Option(help="arrow (default), parquet, or hdf5 (needs h5py)")] = "arrow",
    metadata: Annotated[Path | None, typer.Option(
        help="The policy's metadata JSON (car.onnx.json); default: the one the log recorded")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset of that id")] = False,
) -> None:
    """Convert drive logs into one Minari dataset (one episode per log, split at crashes)."""
    try:
        result = to_minari(logs, out, dataset_id, data_format=data_format, metadata=metadata, overwrite=overwrite)
    except LogError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for warning in result["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    for info in result["logs"]:
        typer.echo(f"{info['log']}: {info['steps']} steps, {info['episodes']} episode(s), crashes {info['crashes']}, "
                   f"reward {info['reward']}")
    typer.echo(f"dataset {dataset_id}: {result['episodes']} episode(s), {result['steps']} steps -> {result['path']}")
    typer.echo(f"load it with MINARI_DATASETS_PATH={result['root']} and minari.load_dataset({dataset_id!r})")
