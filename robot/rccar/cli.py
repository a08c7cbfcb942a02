"""`rlab rccar ...`: record a demonstration lap (scripted or by keyboard) and check a track.

Heavy imports (pybullet, numpy) happen inside the commands so `rlab --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.clikit import fail as _fail

app = typer.Typer(help="RC-car track: record demonstration laps, inspect circuits.", no_args_is_help=True)



@app.command("demo")
def record(
    track: Annotated[str, typer.Option(help="Circuit: bundled name, TUM-format CSV path, or generated:SEED")],
    out: Annotated[Path, typer.Option(help="Folder to write demo.json and demo.npz into")],
    length_m: Annotated[float, typer.Option(help="Scale the centre line to this loop length")] = 80.0,
    width_m: Annotated[float, typer.Option(help="Corridor width")] = 1.4,
    smooth_m: Annotated[float, typer.Option(
        help="RC-scale simplification: smooth the centre line over this many metres (0: as drawn)")] = 2.0,
    throttle: Annotated[float, typer.Option(help="Scripted driver's throttle (fraction of top speed)")] = 0.3,
    lookahead_m: Annotated[float, typer.Option(help="Scripted driver's pure-pursuit lookahead")] = 1.0,
    teleop: Annotated[bool, typer.Option(help="Drive it yourself with the arrow keys in pybullet's window")] = False,
    warn_infeasible: Annotated[bool, typer.Option(help="Load a track tighter than the car with a warning")] = False,
) -> None:
    """Record one slow lap; its path gives the checkpoints and its lap time is the bar to beat."""
    from robot.rccar.pursuit import record_demo
    from sim.racetrack import TrackError
    from sim.rccar import RCCarEnv

    try:
        env = RCCarEnv(track=track, length_m=length_m, width_m=width_m, smooth_m=smooth_m, reset_mode="teleport",
                       gui=teleop,
                       on_infeasible="warn" if warn_infeasible else "error")
    except (TrackError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    try:
        demo = _teleop(env) if teleop else record_demo(env, throttle, lookahead_m)
    except RuntimeError as err:
        raise _fail(str(err)) from None
    finally:
        env.close()
    folder = demo.save(out)
    typer.echo(f"demonstration: {demo.lap_time_s:.1f} s lap on {demo.track} ({len(demo.path)} steps) -> {folder}")


def _teleop(env):
    """Drive one lap with the arrow keys at the control rate in real time (Esc-free: close the window to stop)."""
    import time

    import numpy as np

    from robot.rccar.pursuit import Demo, keyboard_action

    obs, info = env.reset(seed=0)
    action = np.array([0.0, -1.0], dtype=np.float32)
    path, speed = [], []
    typer.echo("arrows: left/right steer, up/down throttle; one lap records the demonstration")
    while not info.get("lap_completed"):
        tick = time.time()
        action = keyboard_action(env._p.getKeyboardEvents(), action)
        obs, _, terminated, truncated, info = env.step(action)
        path.append((info["x"], info["y"]))
        speed.append(info["speed"])
        if terminated or truncated:
            obs, info = env.reset()
        time.sleep(max(0.0, env.dt - (time.time() - tick)))
    trk = env.track
    return Demo(track=trk.name, length_m=round(trk.length, 3), width_m=trk.width,
                lap_time_s=round(info["lap_time_s"], 2), driver="keyboard teleoperation",
                path=np.asarray(path), speed=np.asarray(speed), smooth_m=trk.smooth_m)


@app.command("encoder")
def encoder(
    track: Annotated[str, typer.Option(help="Circuit to collect camera images on")],
    out: Annotated[Path, typer.Option(help="Folder for encoder.pt and encoder.json")],
    n_images: Annotated[int, typer.Option(help="Camera images to collect")] = 2000,
    image_size: Annotated[int, typer.Option(help="Image side in pixels (env.image_size must match)")] = 64,
    steps: Annotated[int, typer.Option(help="Autoencoder training steps")] = 1500,
    seed: Annotated[int, typer.Option(help="Seeds the drives and the training")] = 0,
    length_m: Annotated[float, typer.Option(help="Loop length to scale to")] = 80.0,
    width_m: Annotated[float, typer.Option(help="Corridor width")] = 1.4,
    smooth_m: Annotated[float, typer.Option(help="RC-scale simplification (0: as drawn)")] = 2.0,
) -> None:
    """Pretrain a frozen image encoder: collect camera images from noisy scripted drives, train an autoencoder,
    save its encoder (use it with --set env.image_size=N --set env.encoder=FOLDER)."""
    from robot.rccar.encoder import build_encoder
    from robot.rccar.track import EnvConfig
    from sim.racetrack import TrackError

    try:
        folder = build_encoder(track, out, n_images, image_size, steps, seed,
                               env=EnvConfig(length_m=length_m, width_m=width_m, smooth_m=smooth_m))
    except (TrackError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"encoder: {folder}")


@app.command("track")
def track_info(
    track: Annotated[str, typer.Argument(help="Bundled name, CSV path or generated:SEED")],
    length_m: Annotated[float, typer.Option(help="Loop length to scale to")] = 80.0,
    width_m: Annotated[float, typer.Option(help="Corridor width")] = 1.4,
    smooth_m: Annotated[float, typer.Option(help="RC-scale simplification (0: as drawn)")] = 2.0,
) -> None:
    """Load a circuit at RC scale and report its tightest radius and closest sections (or why it is refused)."""
    import json

    from sim.racetrack import TrackError, TrackLimits, load_track

    try:
        trk = load_track(track, length_m=length_m, width_m=width_m, limits=TrackLimits(on_infeasible="warn"),
                         smooth_m=smooth_m)
    except (TrackError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    typer.echo(json.dumps(trk.report(), indent=1, default=str))
