"""Pictures and videos of the rccar track: a top-down map of a drive, a lap-time curve, a chase-camera lap.

`trajectory_plot` draws the track corridor and a driven path coloured by speed; `lap_curve_plot` draws
lap time against simulated practice time with the demonstration's and the tuned pure-pursuit baseline's
lap times as reference lines; `lap_video` drives a controller with rendering on and encodes the frames
(with a small time/speed caption) through `shared.gallery.video.write_video`.

matplotlib and Pillow are imported inside the functions, so importing this module stays cheap. Plots
are drawn and written through `shared.gallery.figures`: a bare `Figure` on the Agg canvas (no pyplot
state, no display needed), saved to a temporary name and renamed, so a crash never leaves half a PNG.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robot.rccar.pursuit import DriveLog, drive
from shared.gallery.figures import new_figure, save_png

if TYPE_CHECKING:

    from sim.racetrack import RaceTrack

_CORRIDOR = "#d9d9d9"
_BOUNDARY = "#555555"


# ----------------------------------------------------------------------------------- track map


def _draw_track(ax: Any, track: RaceTrack) -> None:
    """Grey corridor between the boundaries, the boundary lines, and the start line with a travel arrow."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    left, right = np.asarray(track.left, dtype=float), np.asarray(track.right, dtype=float)
    # Two closed rings of opposite winding: the fill covers only the band between them.
    ring_out = np.vstack([left, left[:1]])
    ring_in = np.vstack([right[::-1], right[-1:]])
    codes = np.full(len(ring_out) + len(ring_in), MplPath.LINETO, dtype=MplPath.code_type)
    codes[0] = codes[len(ring_out)] = MplPath.MOVETO
    codes[len(ring_out) - 1] = codes[-1] = MplPath.CLOSEPOLY
    corridor = MplPath(np.vstack([ring_out, ring_in]), codes)
    ax.add_patch(PathPatch(corridor, facecolor=_CORRIDOR, edgecolor="none", zorder=0))
    for line in (left, right):
        closed = np.vstack([line, line[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=_BOUNDARY, linewidth=0.8, zorder=1)

    centre = np.asarray(track.centre, dtype=float)
    start = centre[0]
    direction = centre[1] - centre[0]
    direction = direction / max(float(np.linalg.norm(direction)), 1e-9)
    arrow_len = max(1.5 * float(track.width), 0.04 * float(track.length))
    ax.plot([right[0, 0], left[0, 0]], [right[0, 1], left[0, 1]], color="black", linewidth=2.0, zorder=3)
    ax.annotate("", xy=tuple(start + arrow_len * direction), xytext=tuple(start),
                arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.5}, zorder=4)
    ax.plot([start[0]], [start[1]], marker="o", markersize=5, color="black", zorder=4, label="start")


def trajectory_plot(track: RaceTrack, xy: np.ndarray, speed: np.ndarray, out: Path, title: str = "",
                    checkpoints: np.ndarray | None = None) -> Path:
    """Top-down map of `track` with the driven path `xy` (T, 2) coloured by `speed` (T,) in m/s.

    `checkpoints` ((M, 2), or (M, 3) as the env keeps them: only x, y are used) are drawn as small dots.
    Writes a PNG to `out` and returns it. Raises ValueError when `xy` and `speed` do not match.
    """
    from matplotlib.collections import LineCollection

    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    speed = np.asarray(speed, dtype=float).reshape(-1)
    if len(xy) != len(speed):
        raise ValueError(f"trajectory_plot: {len(xy)} positions but {len(speed)} speeds")

    fig = new_figure((6.0, 5.0))
    ax = fig.add_subplot()
    _draw_track(ax, track)
    if checkpoints is not None and len(checkpoints):
        cp = np.asarray(checkpoints, dtype=float)[:, :2]
        ax.scatter(cp[:, 0], cp[:, 1], s=6, color="#2b6cb0", zorder=2, label="checkpoints")
    if len(xy) >= 2:
        segments = np.stack([xy[:-1], xy[1:]], axis=1)
        seg_speed = 0.5 * (speed[:-1] + speed[1:])
        lines = LineCollection(segments, cmap="viridis", linewidths=2.0, zorder=5)
        lines.set_array(seg_speed)
        lo, hi = float(np.nanmin(seg_speed)), float(np.nanmax(seg_speed))
        lines.set_clim(lo, hi if hi > lo else lo + 1e-6)
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, label="speed (m/s)", shrink=0.8)
    elif len(xy) == 1:
        ax.plot(xy[:, 0], xy[:, 1], marker="o", color="tab:red", zorder=5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.set_xlabel("x (m)", fontsize=8)
    ax.set_ylabel("y (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title or f"{track.name}: {track.length:.0f} m, {track.width:g} m wide", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    return save_png(fig, out)


# ------------------------------------------------------------------------------------ lap curve


SEED_LINESTYLES = ("-", "--", ":", "-.")


def series_styles(names: list[str], groups: dict[str, str] | None = None) -> dict[str, tuple[str, str, str | None]]:
    """(colour, line style, legend label or None) per series name. Without `groups` every series has its own
    colour and label; with them (series name -> group, e.g. a config whose seeds are the series) a group shares
    one colour, its series take successive line styles, and only the group's first series is labelled, with
    the group's name and its series count."""
    if not groups:
        return {name: (f"C{i + 1}", "-", name) for i, name in enumerate(names)}
    sizes = Counter(groups.get(n, n) for n in names)  # first-seen order: the group's colour index
    colour = {g: f"C{i + 1}" for i, g in enumerate(sizes)}
    styles, seen = {}, Counter()
    for name in names:
        g = groups.get(name, name)
        k = seen[g]
        seen[g] += 1
        label = (g if sizes[g] == 1 else f"{g} ({sizes[g]} runs)") if k == 0 else None
        styles[name] = (colour[g], SEED_LINESTYLES[k % len(SEED_LINESTYLES)], label)
    return styles


def lap_curve_plot(points: list[tuple[float, float]], out: Path, demo_lap_s: float | None = None,
                   baseline_lap_s: float | None = None,
                   series: dict[str, list[tuple[float, float]]] | None = None, title: str = "",
                   groups: dict[str, str] | None = None) -> Path:
    """Lap time (s) against simulated practice time (minutes).

    `points` are (practice minutes, lap seconds) of the practice laps, drawn as markers; each entry of
    `series` (e.g. "eval (deterministic)") as a line with markers, coloured per group where `groups` maps
    series to groups (`series_styles`); `demo_lap_s` and `baseline_lap_s` as horizontal dashed lines. With
    no laps at all the plot says "no lap completed yet". Writes a PNG to `out` and returns it.
    """
    fig = new_figure((7.2, 3.6) if groups else (6.0, 3.6))
    ax = fig.add_subplot()
    styles = series_styles(list(series or {}), groups)
    drawn = False
    if points:
        arr = np.asarray(points, dtype=float).reshape(-1, 2)
        ax.plot(arr[:, 0], arr[:, 1], linestyle="none", marker="o", markersize=4, alpha=0.7,
                color="tab:blue", label="practice laps")
        drawn = True
    for name, pts in (series or {}).items():
        if not pts:
            continue
        arr = np.asarray(pts, dtype=float).reshape(-1, 2)
        colour, linestyle, label = styles[name]
        ax.plot(arr[:, 0], arr[:, 1], marker="s", markersize=3 if groups else 4, linewidth=1.2 if groups else 1.4,
                color=colour, linestyle=linestyle, label=label)
        drawn = True
    if demo_lap_s is not None:
        ax.axhline(demo_lap_s, linestyle="--", linewidth=1.2, color="tab:gray",
                   label=f"demonstration ({demo_lap_s:.1f} s)")
    if baseline_lap_s is not None:
        ax.axhline(baseline_lap_s, linestyle="--", linewidth=1.2, color="tab:red",
                   label=f"tuned pure pursuit ({baseline_lap_s:.1f} s)")
    if not drawn:
        ax.text(0.5, 0.5, "no lap completed yet", transform=ax.transAxes, ha="center", va="center",
                fontsize=11, color="#444444")
    ax.set_xlabel("simulated practice time (min)", fontsize=8)
    ax.set_ylabel("lap time (s)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(title or "lap time during practice", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        if groups:  # many lines: the legend goes beside the axes, not over them
            ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=7, frameon=False)
    return save_png(fig, out, tight=bool(groups))


# ---------------------------------------------------------------------------------------- video


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    """`frame` with `text` in the top-left corner on a dark box (Pillow's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((4, 3), text, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def lap_video(env: Any, controller: Any, out: Path, max_s: float = 60.0, laps: int = 1,
              fps: int | None = None) -> tuple[Path, DriveLog]:
    """Drive `controller` (as `drive` takes it) on `env` (built with ``render_mode="rgb_array"``) for up to
    `laps` laps or `max_s` simulated seconds and encode the chase-camera frames, one per step, captioned
    with the simulated time and speed, to `out` (``.webm`` by default; see `write_video`).

    `fps` defaults to the env's ``metadata["render_fps"]`` (its control rate: real time). Returns
    (path, drive log). Raises ValueError when the env does not render frames.
    """
    from shared.gallery.video import write_video

    if getattr(env, "render_mode", None) != "rgb_array":
        raise ValueError(f"lap_video: the env must be built with render_mode='rgb_array', "
                         f"got {getattr(env, 'render_mode', None)!r}")
    frames: list[np.ndarray] = []
    log = drive(env, controller, laps=laps, max_s=max_s, frames=frames)
    if not frames or any(f is None for f in frames):
        raise ValueError("lap_video: the drive produced no frames (max_s too small, or the env did not render)")
    captioned = [_caption(frame, f"t {t:5.1f} s  v {v:3.1f} m/s")
                 for frame, t, v in zip(frames, log.t, log.speed, strict=True)]
    rate = int(fps if fps is not None else env.metadata.get("render_fps", 10))
    return write_video(captioned, out, fps=rate), log
