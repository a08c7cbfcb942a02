"""`rlab drive --policy car.onnx --vehicle sim|serial:PORT`: an exported policy driving a vehicle.

    rlab drive --policy car.onnx --vehicle sim --duration-s 60                 # the pybullet car (HIL style)
    rlab drive --policy car.onnx --vehicle sim --track generated:2             # another circuit
    rlab drive --policy car.onnx --vehicle serial:/dev/ttyUSB0 --camera 0 --throttle-cap 0.3

Registered as the top-level command ``drive`` through the ``rlab.commands`` entry point. It calls
``robot.deploy.runtime.drive`` (fixed-rate loop, safety layer, drive log; see that module) with
``vehicle_from_spec(spec, factories={"sim": ...})``: ``serial:PORT`` is the car's motor controller
(``SerialVehicle``), ``sim`` the rccar track's pybullet car (``robot.rccar.hil.SimVehicle``, built from
the policy's metadata; imported only for ``--vehicle sim``, so driving the real car never imports pybullet).

The log goes to ``--log-dir`` (default ``drives/<policy stem>-<YYYYmmdd-HHMMSS>``). At the end the summary
is printed (ticks, period/jitter/latency percentiles, safety events, exit reason; laps and lap times on
the sim) with the log folder. A part that fails (a vehicle that cannot provide the policy's observation
fields, a lost serial link, ...) exits 1 with the runtime's message, which names the part and the cause.
Exit codes: 0 a normal stop (duration, Ctrl-C, SIGTERM), 1 a failure, 2 a usage error, 130 a second Ctrl-C.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.clikit import SingleCommandGroup
from shared.clikit import fail as _fail

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


app = typer.Typer(cls=SingleCommandGroup, help="Drive a vehicle (sim or serial:PORT) with an exported ONNX policy.",
                  no_args_is_help=True, add_completion=False)



def default_log_dir(policy: Path, root: Path = Path("drives")) -> Path:
    """``drives/<policy stem>-<local time>``; ``-2``, ``-3``... if that folder already holds a drive."""
    base = root / f"{policy.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while (path / "drive.jsonl").exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _sim_vehicle(policy: Path, track: str | None, **kwargs: Any) -> Any:
    from robot.rccar.hil import SimVehicle

    return SimVehicle.from_metadata(policy, track=track, **kwargs)


def _pct(stats: dict | None, scale: float = 1000.0) -> str:
    if not stats or stats.get("p50") is None:
        return "n/a"
    return f"p50 {stats['p50'] * scale:.2f} ms, p99 {stats['p99'] * scale:.2f} ms"


def summary_lines(summary: dict) -> list[str]:
    """The drive summary as printed: ticks and timing, safety counts, the vehicle's laps (sim), exit reason."""
    lines = [f"ticks: {summary.get('ticks')} in {summary.get('duration_s', 0.0):.2f} s at "
             f"{summary.get('rate_hz')} Hz (skipped slots {summary.get('skipped_slots', 0)})",
             f"period: {_pct(summary.get('period_s'))}",
             f"jitter: {_pct(summary.get('jitter_s'))}, |max| "
             + (f"{summary['jitter_s']['abs_max'] * 1000:.2f} ms" if (summary.get("jitter_s") or {}).get("abs_max")
                is not None else "n/a"),
             f"policy latency: {_pct(summary.get('policy_latency_s'))}",
             f"end-to-end latency: {_pct(summary.get('e2e_latency_s'))}"]
    events = summary.get("safety_events") or {}
    lines.append("safety events: " + (", ".join(f"{k} {v}" for k, v in events.items()) or "none")
                 + f"; deadline misses {summary.get('deadline_misses', 0)}")
    neutral = summary.get("neutral_ticks") or {}
    if neutral:
        lines.append("neutral ticks: " + ", ".join(f"{k} {v}" for k, v in neutral.items()))
    vehicle = summary.get("vehicle") or {}
    if "lap_times_s" in vehicle:  # the sim
        laps = ", ".join(f"{t:.2f} s" for t in vehicle["lap_times_s"]) or "none completed"
        lines.append(f"laps: {vehicle.get('laps', 0)} ({laps}); crashes {vehicle.get('crashes', 0)}, "
                     f"stuck resets {vehicle.get('stuck_resets', 0)}; progress {vehicle.get('progress_m', 0.0):.1f} m "
                     f"in {vehicle.get('sim_time_s', 0.0):.1f} s simulated on {vehicle.get('track')}")
    lines.append(f"exit: {summary.get('exit_reason')}" + (f" ({summary['error']})" if summary.get("error") else ""))
    return lines


@app.callback(invoke_without_command=True)
def drive(
    policy: Annotated[Path, typer.Option(help="Exported policy (car.onnx; its metadata car.onnx.json beside it)")],
    vehicle: Annotated[str, typer.Option(help="sim (the rccar pybullet car) or serial:PORT (the motor controller)")],
    track: Annotated[str | None, typer.Option(
        help="--vehicle sim: drive this circuit instead of the one in the policy's metadata")] = None,
    camera: Annotated[str | None, typer.Option(help="Camera device index (0) or video file; frames go to the log")
                      ] = None,
    rate_hz: Annotated[float | None, typer.Option(help="Loop rate (default: the policy's control_hz)")] = None,
    duration_s: Annotated[float, typer.Option(help="Stop after this many seconds")] = 60.0,
    log_dir: Annotated[Path | None, typer.Option(help="Drive log folder (default drives/<policy>-<time>)")] = None,
    throttle_cap: Annotated[float, typer.Option(help="|throttle| limit, fraction of full (1.0: none)")] = 0.3,
    estop_key: Annotated[bool, typer.Option(
        "--estop-key/--no-estop-key", help="Space/e/s on the terminal latches the e-stop")] = True,
    baud: Annotated[int, typer.Option(help="--vehicle serial: baud rate")] = 115200,
) -> None:
    """Drive VEHICLE with POLICY at a fixed rate, through the safety layer, logging every tick."""
    from robot.deploy.parts import DeployError
    from robot.deploy.runtime import drive as run_drive
    from robot.deploy.safety import SafetyConfig
    from robot.deploy.vehicles import vehicle_from_spec

    if not policy.is_file():
        raise _fail(f"--policy {policy}: no such file (export one with `rlab export RUN --out car.onnx`)", EXIT_USAGE)
    if track is not None and vehicle != "sim":
        raise _fail("--track applies to --vehicle sim only", EXIT_USAGE)
    if duration_s <= 0 or (rate_hz is not None and rate_hz <= 0):
        raise _fail("--duration-s and --rate-hz must be positive", EXIT_USAGE)
    try:
        safety = SafetyConfig(throttle_cap=throttle_cap)
    except ValueError as err:
        raise _fail(f"--throttle-cap: {err}", EXIT_USAGE) from None
    policy = policy.resolve()  # the log records it: absolute, so `rlab logs` finds the metadata from anywhere
    kwargs = {"baud": baud} if vehicle.startswith("serial:") else {}
    try:
        car = vehicle_from_spec(vehicle, factories={"sim": functools.partial(_sim_vehicle, policy, track)}, **kwargs)
    except (ValueError, DeployError) as err:
        raise _fail(f"--vehicle {vehicle}: {err}", EXIT_USAGE) from None
    out = log_dir if log_dir is not None else default_log_dir(policy)
    typer.echo(f"driving {vehicle} with {policy.name} for {duration_s:g} s; log: {out}"
               + ("; space/e/s: e-stop" if estop_key else "") + "; Ctrl-C: stop", err=True)
    try:
        result = run_drive(policy, car, rate_hz=rate_hz, duration_s=duration_s, camera=camera, log_dir=out,
                           estop_key=estop_key, safety=safety, raise_on_error=False)
    except (DeployError, ValueError) as err:  # before the loop ran (metadata, ONNX file, throttle cap vs policy)
        raise _fail(str(err)) from None
    for line in summary_lines(result.summary):
        typer.echo(line)
    typer.echo(f"log: {result.log_dir}")
    if result.error is not None:
        raise _fail(str(result.error))
    if result.shutdown_errors:
        raise _fail("shutdown failed: " + "; ".join(result.shutdown_errors))
    if result.exit_reason == "keyboard_interrupt":
        raise typer.Exit(EXIT_INTERRUPTED)
