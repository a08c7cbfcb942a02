"""Pictures and videos of the flight track: the camera view with the action grid, a flight video, a top-down map.

`overlay_frame` upscales one 64x64 camera image and draws CAD2RL's K x K action grid over it: each cell
tinted by the predicted value (red = likely collision, green = free flight) with the value written in it,
the chosen cell outlined and an arrow from the image centre to it (the direction the drone turns toward).
Action index ``a`` is the cell at row ``a // K`` (row 0 = top) and column ``a % K`` (column 0 = left).
`flight_video` overlays a sequence of frames and encodes them through `shared.gallery.video.write_video`
(``.webm``/VP9 by default, which Chromium plays). `topdown_plot` draws the world from above (walls,
furniture, other boxes as rotated rectangles) with the flown path, its start and the collision point.

cv2, matplotlib and Pillow are imported inside the functions, so importing this module stays cheap. Plots
are drawn and written through `shared.gallery.figures`: a bare `Figure` on the Agg canvas (no pyplot
state, no display needed), saved to a temporary name and renamed, so a crash never leaves half a PNG.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.gallery.figures import new_figure, save_png

if TYPE_CHECKING:
    pass

# Colours are RGB (frames are RGB throughout the lab; cv2 only draws, it never converts).
_GRID_RGB = (255, 255, 255)
_GRID_ALPHA = 0.35
_VALUE_ALPHA = 0.35
_ACTION_RGB = (0, 255, 255)  # cyan: stands out against both the red and the green tint
_TEXT_RGB = (255, 255, 255)

_RECT_STYLE: dict[str, tuple[str, str]] = {  # kind -> (fill colour, legend label)
    "wall": ("#4a4a4a", "wall"),
    "furniture": ("#c8782a", "furniture"),
    "other": ("#c4c4c4", "other"),
}


# ---------------------------------------------------------------------------------- camera overlay


def _check_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"overlay_frame: image must be (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"overlay_frame: image must be uint8, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"overlay_frame: image is empty, shape {arr.shape}")
    return arr


def _check_values(values: Any, k: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.size != k * k:
        raise ValueError(f"overlay_frame: values must have k*k = {k * k} entries, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("overlay_frame: values contain NaN or infinity")
    return arr.reshape(k, k)


def _value_rgb(v: float) -> np.ndarray:
    """Red (0) through yellow (0.5) to green (1); `v` is clipped to [0, 1]."""
    v = min(max(float(v), 0.0), 1.0)
    return np.array([255.0 * min(1.0, 2.0 * (1.0 - v)), 255.0 * min(1.0, 2.0 * v), 0.0])


def _draw_values(out: np.ndarray, vals: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Tint each cell of `out` by its value (alpha `_VALUE_ALPHA`) and write the value in it."""
    import cv2

    k = len(vals)
    tint = np.empty(out.shape, dtype=float)
    for r in range(k):
        for c in range(k):
            tint[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = _value_rgb(vals[r, c])
    out = np.clip(np.rint((1.0 - _VALUE_ALPHA) * out + _VALUE_ALPHA * tint), 0, 255).astype(np.uint8)

    font = cv2.FONT_HERSHEY_SIMPLEX
    cell_w = int(np.min(np.diff(xs)))
    cell_h = int(np.min(np.diff(ys)))
    (base_w, base_h), _ = cv2.getTextSize("0.00", font, 1.0, 1)
    font_scale = min(0.45, 0.8 * cell_w / base_w, 0.5 * cell_h / base_h)
    if font_scale < 0.22:  # cells too small for legible digits: the tint alone carries the value
        return out
    for r in range(k):
        for c in range(k):
            text = f"{vals[r, c]:.2f}"
            (tw, th), _ = cv2.getTextSize(text, font, font_scale, 1)
            org = ((xs[c] + xs[c + 1] - tw) // 2, (ys[r] + ys[r + 1] + th) // 2)
            cv2.putText(out, text, org, font, font_scale, (0, 0, 0), 3, cv2.LINE_AA)  # dark outline
            cv2.putText(out, text, org, font, font_scale, _TEXT_RGB, 1, cv2.LINE_AA)
    return out


def _draw_grid(out: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Thin, semi-transparent grid lines on the inner cell borders."""
    import cv2

    lines = out.copy()
    h, w = out.shape[:2]
    for x in xs[1:-1]:
        cv2.line(lines, (int(x), 0), (int(x), h - 1), _GRID_RGB, 1)
    for y in ys[1:-1]:
        cv2.line(lines, (0, int(y)), (w - 1, int(y)), _GRID_RGB, 1)
    return cv2.addWeighted(lines, _GRID_ALPHA, out, 1.0 - _GRID_ALPHA, 0.0)


def _draw_action(out: np.ndarray, action: int, k: int, xs: np.ndarray, ys: np.ndarray) -> None:
    """Outline the chosen cell (thick, inside the cell) and point an arrow from the image centre at it."""
    import cv2

    r, c = divmod(action, k)
    x0, x1, y0, y1 = int(xs[c]), int(xs[c + 1]) - 1, int(ys[r]), int(ys[r + 1]) - 1
    thick = max(1, min(3, (min(x1 - x0, y1 - y0) + 1) // 6))
    inset = thick // 2
    cv2.rectangle(out, (x0 + inset, y0 + inset), (x1 - inset, y1 - inset), _ACTION_RGB, thick)
    h, w = out.shape[:2]
    centre = (w // 2, h // 2)
    target = ((x0 + x1 + 1) // 2, (y0 + y1 + 1) // 2)
    length = float(np.hypot(target[0] - centre[0], target[1] - centre[1]))
    if length < 3.0:  # the centre cell: "fly straight on", a dot instead of a zero-length arrow
        cv2.circle(out, centre, max(2, thick + 1), _ACTION_RGB, -1, cv2.LINE_AA)
    else:
        tip = min(0.5, 10.0 / length)  # ~10 px arrow head whatever the distance
        cv2.arrowedLine(out, centre, target, _ACTION_RGB, 2, cv2.LINE_AA, tipLength=tip)


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    """`frame` with `text` in the top-left corner on a dark box (Pillow's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((4, 3), text, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=font)
    return np.asarray(image).copy()


def overlay_frame(image: np.ndarray, k: int, action: int, values: np.ndarray | None = None, scale: int = 4,
                  caption: str = "") -> np.ndarray:
    """The camera `image` ((H, W, 3) uint8) upscaled `scale` times with the K x K action grid drawn over it.

    Grid lines are thin and semi-transparent. With `values` (k*k floats in [0, 1], shape (k*k,) or (k, k),
    row-major like the action index) each cell is tinted red (low) to green (high) at about 35% alpha and
    its value written in it with two decimals (the digits are left out when cells are too small to read;
    the tint is clipped to [0, 1], the text is not). The chosen `action` cell (row ``action // k``,
    column ``action % k``) is outlined thick in cyan and an arrow runs from the image centre to its
    centre (a dot when it is the centre cell). A non-empty `caption` goes in the top-left on a dark box.

    Returns a new (H*scale, W*scale, 3) uint8 array; `image` is never modified. Raises ValueError when
    `image` is not (H, W, 3) uint8, `k` < 1 or finer than the upscaled image, `scale` < 1, `action` is
    outside [0, k*k), or `values` does not have k*k finite entries.
    """
    import cv2

    arr = _check_image(image)
    if int(k) != k or k < 1:
        raise ValueError(f"overlay_frame: k must be an integer >= 1, got {k!r}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"overlay_frame: scale must be an integer >= 1, got {scale!r}")
    k, scale = int(k), int(scale)
    h, w = arr.shape[0] * scale, arr.shape[1] * scale
    if k > min(h, w):
        raise ValueError(f"overlay_frame: k = {k} cells do not fit a {w}x{h} image")
    if isinstance(action, bool) or int(action) != action or not 0 <= action < k * k:
        raise ValueError(f"overlay_frame: action must be an integer in [0, {k * k}), got {action!r}")
    action = int(action)
    vals = None if values is None else _check_values(values, k)

    out = cv2.resize(np.ascontiguousarray(arr), (w, h), interpolation=cv2.INTER_NEAREST)
    if out is arr or np.shares_memory(out, arr):  # scale 1 may hand the input back
        out = out.copy()
    xs = np.rint(np.linspace(0, w, k + 1)).astype(int)
    ys = np.rint(np.linspace(0, h, k + 1)).astype(int)
    if vals is not None:
        out = _draw_values(out, vals, xs, ys)
    out = _draw_grid(out, xs, ys)
    _draw_action(out, action, k, xs, ys)
    if caption:
        out = _caption(out, caption)
    return np.ascontiguousarray(out, dtype=np.uint8)


# ------------------------------------------------------------------------------------------- video


def flight_video(frames: Sequence[np.ndarray], actions: Sequence[int], k: int, out: str | Path,
                 values: Sequence[np.ndarray | None] | None = None, captions: Sequence[str] | None = None,
                 fps: int = 4, scale: int = 4) -> Path:
    """Overlay every camera frame with `overlay_frame` and encode them into `out` with `write_video`.

    `frames` ((H, W, 3) uint8 images) and `actions` (action indices) are equally long lists; `values`
    (per frame: k*k values or None) and `captions` (per frame: a string) are optional lists of the same
    length. The suffix of `out` picks the container (``.webm``/VP9 plays in Chromium; ``.mp4``, ``.gif``).
    Returns the path. Raises ValueError when there are no frames, the lists differ in length, or a frame
    fails `overlay_frame`'s checks (or `write_video`'s: unknown suffix, fps <= 0).
    """
    from shared.gallery.video import write_video

    frames, actions = list(frames), list(actions)
    if not frames:
        raise ValueError("flight_video: no frames")
    if len(actions) != len(frames):
        raise ValueError(f"flight_video: {len(frames)} frames but {len(actions)} actions")
    values = [None] * len(frames) if values is None else list(values)
    captions = [""] * len(frames) if captions is None else list(captions)
    if len(values) != len(frames):
        raise ValueError(f"flight_video: {len(frames)} frames but {len(values)} value maps")
    if len(captions) != len(frames):
        raise ValueError(f"flight_video: {len(frames)} frames but {len(captions)} captions")
    overlaid = [overlay_frame(frame, k, action, values=vals, scale=scale, caption=text or "")
                for frame, action, vals, text in zip(frames, actions, values, captions, strict=True)]
    return write_video(overlaid, Path(out), fps=fps)


# ---------------------------------------------------------------------------------------- top-down


def _rect_corners(cx: float, cy: float, half_x: float, half_y: float, yaw: float) -> np.ndarray:
    """The four corners (4, 2) of a box centred at (cx, cy) with half extents along its own axes, yawed."""
    local = np.array([[-half_x, -half_y], [half_x, -half_y], [half_x, half_y], [-half_x, half_y]], dtype=float)
    cos, sin = np.cos(yaw), np.sin(yaw)
    rot = np.array([[cos, -sin], [sin, cos]])
    return local @ rot.T + np.array([cx, cy], dtype=float)


def _draw_rects(ax: Any, rects: Iterable[tuple[str, float, float, float, float, float]]) -> list[np.ndarray]:
    """Filled rotated rectangles, one legend entry per kind; returns their corner arrays."""
    from matplotlib.patches import Polygon

    labelled: set[str] = set()
    corners_all = []
    for i, rect in enumerate(rects):
        if len(rect) != 6:
            raise ValueError(f"topdown_plot: rect {i} must be (kind, cx, cy, half_x, half_y, yaw), got {rect!r}")
        kind, cx, cy, hx, hy, yaw = rect
        if kind not in _RECT_STYLE:
            raise ValueError(f"topdown_plot: rect {i} has kind {kind!r}; expected one of {sorted(_RECT_STYLE)}")
        colour, label = _RECT_STYLE[kind]
        corners = _rect_corners(float(cx), float(cy), abs(float(hx)), abs(float(hy)), float(yaw))
        ax.add_patch(Polygon(corners, closed=True, facecolor=colour, edgecolor="none", zorder=1,
                             label=None if kind in labelled else label))
        labelled.add(kind)
        corners_all.append(corners)
    return corners_all


def topdown_plot(rects: Iterable[tuple[str, float, float, float, float, float]], out: str | Path,
                 trajectory: np.ndarray | None = None, collision: tuple[float, float] | None = None,
                 start: tuple[float, float, float] | None = None, title: str = "") -> Path:
    """A top-down map of the world as a PNG: boxes, the flown path, its start and the collision point.

    `rects` are (kind, cx, cy, half_x, half_y, yaw_rad) with kind "wall" (dark grey), "furniture"
    (orange-brown) or "other" (light grey), drawn as filled rotated rectangles. `trajectory` ((N, 2) x, y
    in metres) is drawn as a blue line with its first point marked; `collision` ((x, y)) as a red X;
    `start` ((x, y, yaw_deg)) as an arrow pointing along the yaw. Equal aspect, metre axes, a legend.
    Writes a PNG to `out` (parent folders created, written atomically) and returns the path. Raises
    ValueError when `trajectory` is not (N, 2), or a rect is malformed or of an unknown kind.
    """
    traj = None
    if trajectory is not None:
        traj = np.asarray(trajectory, dtype=float)
        if traj.ndim != 2 or traj.shape[1] != 2:
            raise ValueError(f"topdown_plot: trajectory must be (N, 2) x, y, got shape {traj.shape}")

    fig = new_figure((6.0, 6.0))
    ax = fig.add_subplot()
    points = _draw_rects(ax, rects)
    if traj is not None and len(traj):
        ax.plot(traj[:, 0], traj[:, 1], color="tab:blue", linewidth=1.8, zorder=3, label="trajectory")
        ax.plot([traj[0, 0]], [traj[0, 1]], marker="o", markersize=6, color="tab:blue", markeredgecolor="white",
                linestyle="none", zorder=4, label="trajectory start")
        points.append(traj)
    if start is not None:
        x, y, yaw_deg = (float(v) for v in start)
        extent = np.vstack(points + [np.array([[x, y]])])
        span = float(np.max(np.ptp(extent, axis=0))) if len(extent) > 1 else 0.0
        length = max(0.3, 0.08 * span)
        yaw = np.deg2rad(yaw_deg)
        tip = (x + length * np.cos(yaw), y + length * np.sin(yaw))
        ax.annotate("", xy=tip, xytext=(x, y), zorder=5,
                    arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.8})
        ax.update_datalim([(x, y), tip])  # annotations do not count towards autoscaling
        ax.plot([x], [y], marker="o", markersize=5, color="black", linestyle="none", zorder=5, label="start pose")
    if collision is not None:
        cx, cy = (float(v) for v in collision)
        ax.plot([cx], [cy], marker="X", markersize=12, color="red", markeredgecolor="white", linestyle="none",
                zorder=6, label="collision")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.set_xlabel("x (m)", fontsize=8)
    ax.set_ylabel("y (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.2)
    ax.set_title(title or "flight, top-down", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    return save_png(fig, out, tight=True)
