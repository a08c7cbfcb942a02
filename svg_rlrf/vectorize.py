"""A classic, non-learned image -> SVG vectorizer: the baseline that puts a learned policy on a familiar scale.

In the spirit of tracing tools such as Potrace and VTracer (no code from them): quantise the colours, trace
each colour's regions with OpenCV, simplify the outlines into polygons, write one ``<path>`` per colour.

1. Background: pixels near white (every channel within `VectorizeConfig.background_tol` of 255) are not
   drawn (the lab's images are drawn on white).
2. Palette: the image's dominant colours (`svg_rlrf.metrics.dominant_colours`, which tells flat colours from
   antialiasing blends), at most ``colours`` of them by area; each drawn pixel takes the nearest palette
   colour, or the background when it is closer to white (an antialiased rim).
3. Regions: per colour, ``cv2.findContours`` with the two-level hierarchy (outer outlines and their holes),
   specks under ``min_area_px`` dropped, outlines simplified with ``cv2.approxPolyDP(epsilon_px)``.
4. Output: one ``<path fill-rule="evenodd">`` per colour (holes stay holes), largest colour first so small
   shapes on top survive, coordinates mapped into the requested viewBox and rounded to ``decimals``. Traced
   outlines run through boundary pixel centres, half a pixel inside the region; a stroke of one pixel's
   width in the same colour (``outline``) puts the edge back where it was.

``python -m svg_rlrf.vectorize IMAGE.png [--colours K] [--viewbox "0 0 64 64"] [--out FILE.svg]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class VectorizeConfig:
    colours: int = 8
    """Most colours traced (the largest by area)."""
    min_area_px: float = 4.0
    """Regions (and holes) smaller than this many pixels are dropped."""
    epsilon_px: float = 0.8
    """Polygon simplification tolerance (``cv2.approxPolyDP``), in image pixels."""
    decimals: int = 0
    """Decimals of the output coordinates."""
    background_tol: int = 16
    """A pixel within this of white in every channel is background."""
    outline: bool = True
    """Stroke each path with one pixel's width of its own colour (the traced outline sits half a pixel in)."""

    def __post_init__(self) -> None:
        if self.colours < 1 or self.min_area_px < 0 or self.epsilon_px < 0 or self.decimals < 0:
            raise ValueError(f"VectorizeConfig needs colours >= 1 and non-negative min_area_px, epsilon_px and "
                             f"decimals (got {self.colours}, {self.min_area_px}, {self.epsilon_px}, {self.decimals})")


def _check_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"vectorize needs a uint8 image, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"vectorize needs an H x W x 3 RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _labels(arr: np.ndarray, cfg: VectorizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """(palette [K, 3], label map H x W: -1 background, else the palette index)."""
    from svg_rlrf.metrics import dominant_colours

    drawn = arr.min(axis=-1) < 255 - cfg.background_tol
    labels = np.full(arr.shape[:2], -1, dtype=np.int32)
    if not drawn.any():
        return np.zeros((0, 3), np.uint8), labels
    palette = np.asarray(dominant_colours(arr), dtype=np.float32).reshape(-1, 3)
    if len(palette) == 0:  # no flat colour (gradients, noise): the most common drawn colours instead
        colours, counts = np.unique(arr[drawn].reshape(-1, 3), axis=0, return_counts=True)
        palette = colours[np.argsort(-counts, kind="stable")].astype(np.float32)
    pixels = arr[drawn].astype(np.float32)
    dist = np.linalg.norm(pixels[:, None, :] - palette[None, :, :], axis=-1)
    nearest = dist.argmin(axis=1)
    area = np.bincount(nearest, minlength=len(palette))
    keep = np.argsort(-area, kind="stable")[: cfg.colours]
    palette = palette[keep]
    dist = dist[:, keep]
    nearest = dist.argmin(axis=1)
    to_white = np.linalg.norm(pixels - 255.0, axis=-1)
    nearest[to_white < dist[np.arange(len(nearest)), nearest]] = -1  # rims closer to white than to the colour
    labels[drawn] = nearest
    return np.clip(np.rint(palette), 0, 255).astype(np.uint8), labels


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if decimals:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _path_data(mask: np.ndarray, cfg: VectorizeConfig, scale: tuple[float, float], offset: tuple[float, float],
               ) -> str:
    """Outer outlines and their holes of one colour's mask as path data (absolute coordinates)."""
    import cv2

    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    parts = []
    for contour in contours:
        if cv2.contourArea(contour) < cfg.min_area_px and len(contour) * 1.0 < cfg.min_area_px * 2:
            continue
        points = cv2.approxPolyDP(contour, cfg.epsilon_px, True).reshape(-1, 2) if cfg.epsilon_px else contour[:, 0]
        if len(points) < 2:
            continue
        coords = [(_fmt(offset[0] + (x + 0.5) * scale[0], cfg.decimals),
                   _fmt(offset[1] + (y + 0.5) * scale[1], cfg.decimals)) for x, y in points]
        parts.append("M" + " ".join(f"{x} {y}" for x, y in coords) + "Z")
    del hierarchy
    return "".join(parts)


def vectorize(image: Any, *, viewbox: tuple[float, float, float, float] | None = None,
              config: VectorizeConfig | None = None) -> str:
    """An SVG document drawing `image` (H x W x 3 uint8 RGB on white), its coordinates in `viewbox` (default
    ``0 0 W H``). Deterministic; a blank image gives a valid empty document."""
    cfg = config or VectorizeConfig()
    arr = _check_image(image)
    height, width = arr.shape[:2]
    vx, vy, vw, vh = viewbox if viewbox is not None else (0.0, 0.0, float(width), float(height))
    if not (vw > 0 and vh > 0):
        raise ValueError(f"viewbox needs a positive width and height, got {viewbox}")
    scale, offset = (vw / width, vh / height), (vx, vy)
    palette, labels = _labels(arr, cfg)
    areas = [(int((labels == k).sum()), k) for k in range(len(palette))]
    stroke = _fmt(max(scale), max(cfg.decimals, 2))
    shapes = []
    for area, k in sorted(areas, key=lambda a: (-a[0], a[1])):
        if area < cfg.min_area_px:
            continue
        data = _path_data(labels == k, cfg, scale, offset)
        if not data:
            continue
        colour = "#{:02x}{:02x}{:02x}".format(*(int(c) for c in palette[k]))
        extra = f' stroke="{colour}" stroke-width="{stroke}" stroke-linejoin="round"' if cfg.outline else ""
        shapes.append(f'<path d="{data}" fill="{colour}" fill-rule="evenodd"{extra}/>')
    box = " ".join(_fmt(v, 3) for v in (vx, vy, vw, vh))
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">{"".join(shapes)}</svg>'


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svg_rlrf.vectorize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path, help="PNG/JPEG image to trace (drawn on white)")
    parser.add_argument("--colours", type=int, default=VectorizeConfig.colours, help="most colours traced")
    parser.add_argument("--epsilon", type=float, default=VectorizeConfig.epsilon_px,
                        help="polygon simplification tolerance in pixels")
    parser.add_argument("--viewbox", default=None, help='output frame, e.g. "0 0 64 64" (default: the image size)')
    parser.add_argument("--out", type=Path, default=None, help="write the SVG here (default: stdout)")
    args = parser.parse_args(argv)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as im:
            rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        arr = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        box = tuple(float(v) for v in args.viewbox.replace(",", " ").split()) if args.viewbox else None
        if box is not None and len(box) != 4:
            raise ValueError(f"--viewbox needs four numbers, got {args.viewbox!r}")
        svg = vectorize(arr, viewbox=box, config=VectorizeConfig(colours=args.colours, epsilon_px=args.epsilon))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.out:
        args.out.write_text(svg + "\n")
        print(args.out)
    else:
        print(svg)


if __name__ == "__main__":
    main()
