"""Drawing helpers for the task generators: coloured shapes, scenes without overlap, fonts, rotated
text and pixel noise. PIL and numpy only; every random choice comes from the caller's
``random.Random`` so that an item is a pure function of its seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 200, 20),
    "purple": (145, 60, 195),
    "orange": (245, 125, 20),
}
"""Named colours of shapes and bars, far apart from each other and from the light backgrounds."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

FONT_DIRS: tuple[Path, ...] = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
"""Where TrueType/OpenType fonts are looked for (besides PIL's built-in default font)."""

DEFAULT_FONT = "default"
"""The name recorded in ``meta`` for PIL's built-in font."""


def light_background(rng: random.Random) -> tuple[int, int, int]:
    """A near-white background colour, slightly tinted."""
    return (rng.randint(225, 255), rng.randint(225, 255), rng.randint(225, 255))


PROCESSOR_MEAN_RGB = (122, 116, 104)
"""The Qwen2-VL image processor's normalisation mean (OpenAI CLIP's) in 0-255 RGB."""


def mid_background(rng: random.Random) -> tuple[int, int, int]:
    """A mid-grey background near `PROCESSOR_MEAN_RGB`, slightly tinted.

    Background patches then normalise to about zero, so a scene's features vary with its objects
    rather than sitting on a large constant: on near-white backgrounds the tiny model's mean-pooled
    visual features varied by about 11% across counting scenes, on this grey by about 39%, and it
    learned to count on grey where it stayed at chance on white (docs/results.md).
    """
    return tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in PROCESSOR_MEAN_RGB)  # type: ignore[return-value]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, fill: tuple[int, int, int]) -> None:
    """A shape centred at (x, y) inside the circle of radius `r` (pixels)."""
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        h = 0.72 * r  # corners at ~r from the centre
        draw.rectangle((x - h, y - h, x + h, y + h), fill=fill)
    elif shape == "triangle":
        pts = [(x + r * math.cos(a), y - r * math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def place_circles(
    rng: random.Random, radii: list[float], size: int, gap: float, tries: int = 200
) -> list[tuple[float, float]] | None:
    """Centres for discs of the given radii inside a `size` square, at least `gap` pixels apart
    (rejection sampling, largest first); None when they do not fit within `tries` per disc."""
    order = sorted(range(len(radii)), key=lambda i: -radii[i])
    centres: dict[int, tuple[float, float]] = {}
    for i in order:
        r = radii[i]
        for _ in range(tries):
            x, y = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
            if all(math.hypot(x - cx, y - cy) >= r + radii[j] + gap for j, (cx, cy) in centres.items()):
                centres[i] = (x, y)
                break
        else:
            return None
    return [centres[i] for i in range(len(radii))]


def shape_scene(
    rng: random.Random, kinds: list[tuple[str, str]], size: int, radius_range: tuple[float, float],
    background: Callable[[random.Random], tuple[int, int, int]] = light_background,
) -> tuple[Image.Image, list[dict]]:
    """An RGB image of `kinds` ((shape, colour name) pairs) at random sizes and non-overlapping
    positions on a `background(rng)` colour, and the objects drawn as ``{shape, color, x, y, r}``
    dicts (in drawing order)."""
    scale = size / 112
    for _ in range(100):
        radii = [round(rng.uniform(*radius_range) * scale, 1) for _ in kinds]
        centres = place_circles(rng, radii, size, gap=2 * scale)
        if centres is not None:
            break
    else:
        raise RuntimeError(f"cannot place {len(kinds)} shapes on a {size}px image; use a larger image_size")
    image = Image.new("RGB", (size, size), background(rng))
    draw = ImageDraw.Draw(image)
    objects = []
    for (shape, color), r, (x, y) in zip(kinds, radii, centres, strict=True):
        draw_shape(draw, shape, x, y, r, COLORS[color])
        objects.append({"shape": shape, "color": color, "x": round(x, 1), "y": round(y, 1), "r": r})
    return image, objects


# ------------------------------------------------------------------------------------------ fonts


@cache
def font_names() -> tuple[str, ...]:
    """PIL's default font first, then every TrueType/OpenType font found under `FONT_DIRS` that
    draws digits, sorted by file name. Datasets record the font name per item; the same seed gives
    the same dataset on machines with the same fonts."""
    paths = sorted(
        {p for d in FONT_DIRS if d.is_dir() for ext in ("*.ttf", "*.otf") for p in d.rglob(ext)},
        key=lambda p: (p.name, str(p)),
    )
    names = [DEFAULT_FONT]
    for path in paths:
        try:
            left, top, right, bottom = ImageFont.truetype(str(path), 20).getbbox("0123456789")
        except OSError:
            continue
        if right - left > 20 and bottom - top > 5:
            names.append(str(path))
    return tuple(names)


@lru_cache(maxsize=512)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font by `font_names` entry and pixel size; PIL's bitmap font when FreeType is missing."""
    if name != DEFAULT_FONT:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size)
    except (TypeError, ImportError, OSError):  # no FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def font_label(name: str) -> str:
    """The short name recorded in ``meta`` (the file's stem)."""
    return name if name == DEFAULT_FONT else Path(name).stem


def text_mask(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, angle: float) -> Image.Image:
    """An "L" mask of `text` rotated by `angle` degrees (counter-clockwise), cropped to its ink."""
    left, top, right, bottom = font.getbbox(text)
    layer = Image.new("L", (int(right - left) + 4, int(bottom - top) + 4), 0)
    ImageDraw.Draw(layer).text((2 - left, 2 - top), text, font=font, fill=255)
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bbox = layer.getbbox()
    return layer.crop(bbox) if bbox else layer


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """Gaussian pixel noise of standard deviation `sigma` (0-255 scale), the same on all channels."""
    if sigma <= 0:
        return image
    arr = np.array(image, dtype=np.float32)
    arr += np.random.default_rng(seed).standard_normal((*arr.shape[:2], 1), dtype=np.float32) * np.float32(sigma)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
