"""Videos that a browser opening the gallery from disk can play.

`write_video` encodes RGB frames with the ffmpeg binary that the `imageio-ffmpeg` wheel ships (no
system ffmpeg needed): WebM/VP9 by default, which every Chromium build plays (Debian's included),
or MP4/H.264 for other viewers. `write_gif` is a no-ffmpeg fallback through Pillow.

Frames are ``(H, W, 3)`` uint8 arrays (``(H, W)`` grey and ``(H, W, 4)`` RGBA are accepted too).
Both writers go through a temporary file and a rename, so a crash never leaves half a video behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# ffmpeg settings per container. VP9 at constant quality (crf, b:v 0); "realtime" + cpu-used 8 keeps
# encoding fast on a CPU runner, which matters more for training-time media than the last bit of quality.
_CODECS: dict[str, tuple[str, list[str]]] = {
    ".webm": ("libvpx-vp9", ["-crf", "32", "-b:v", "0", "-deadline", "realtime", "-cpu-used", "8"]),
    ".mp4": ("libx264", ["-crf", "23", "-preset", "veryfast", "-movflags", "+faststart"]),
}


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Encode `frames` into `path` (``.webm``: VP9, ``.mp4``: H.264, ``.gif``: `write_gif`).

    Odd frame sizes are padded by one edge pixel (yuv420p needs even sizes). Returns the path.
    Raises ValueError for no frames, mixed frame shapes, a non-uint8 dtype or an unknown suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(frames, path, fps=fps)
    if suffix not in _CODECS:
        raise ValueError(f"write_video: unsupported suffix {path.suffix!r}; use .webm, .mp4 or .gif")
    if fps <= 0:
        raise ValueError(f"write_video: fps must be positive, got {fps}")
    import imageio_ffmpeg
    import numpy as np

    rgb = _as_rgb_frames(frames)
    h, w = rgb[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    codec, params = _CODECS[suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")  # same suffix: ffmpeg picks the container by it
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w + w % 2, h + h % 2),
        fps=fps,
        codec=codec,
        quality=None,
        pix_fmt_out="yuv420p",
        macro_block_size=1,  # we pad to even sizes ourselves; imageio's default would rescale
        output_params=params,
    )
    try:
        writer.send(None)  # start the ffmpeg process
        for frame in rgb:
            writer.send(np.ascontiguousarray(np.pad(frame, pad, mode="edge")))
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def write_gif(frames: Iterable[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write an animated, looping GIF with Pillow (256 colours; browsers clamp delays below 20 ms)."""
    from PIL import Image

    if fps <= 0:
        raise ValueError(f"write_gif: fps must be positive, got {fps}")
    path = Path(path)
    images = [Image.fromarray(frame) for frame in _as_rgb_frames(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.gif")
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
    os.replace(tmp, path)
    return path


def _as_rgb_frames(frames: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Check and convert frames to a list of (H, W, 3) uint8 arrays of one shape."""
    import numpy as np

    out = []
    for i, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.dtype != np.uint8:
            raise ValueError(f"frame {i}: dtype {arr.dtype}, expected uint8 (scale floats to 0..255 first)")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"frame {i}: shape {arr.shape}, expected (H, W, 3)")
        if out and arr.shape != out[0].shape:
            raise ValueError(f"frame {i}: shape {arr.shape} differs from frame 0's {out[0].shape}")
        out.append(arr)
    if not out:
        raise ValueError("no frames to write")
    return out
