"""Procedural textures for domain-randomised worlds (numpy only; no image files shipped).

Eight families; the first five train, the last three are held out (``heldout_textures`` worlds use only
those, so a policy is tested on surfaces it has never seen)::

    noise  stripes  checks  gradients  tiles   |   dots  waves  bricks

Each texture draws its scale, orientation and colours from its own seed, so ``texture_png(family, index)``
is the same image in every process: an episode that picks (family, index) from its seeded RNG is
reproducible. PNGs are cached on disk (``RLAB_TEXTURE_CACHE``, default a folder in the temp dir) and
written atomically, so parallel workers share them safely.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

TRAIN_FAMILIES = ("noise", "stripes", "checks", "gradients", "tiles")
HELDOUT_FAMILIES = ("dots", "waves", "bricks")
FAMILIES = TRAIN_FAMILIES + HELDOUT_FAMILIES
POOL_SIZE = 32
"""Distinct textures per family (index 0..POOL_SIZE-1); colour tints per surface add further variety."""


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random colours, (n, 3) float in [0, 255], kept apart in brightness so the pattern is visible."""
    base = rng.uniform(0, 255, size=(n, 3))
    order = np.argsort(base.mean(axis=1))
    base = base[order]
    if n >= 2 and base[-1].mean() - base[0].mean() < 60:
        base[0] *= 0.5
        base[-1] = 255 - (255 - base[-1]) * 0.5
    return base


def _mix(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return mask[..., None] * a + (1.0 - mask[..., None]) * b


def make_texture(family: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One (size, size, 3) uint8 texture of `family` with scale, angle and colours drawn from `rng`.

    Raises ValueError for an unknown family (the message lists the known ones) or a size below 8.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown texture family {family!r}; known: {', '.join(FAMILIES)}")
    if size < 8:
        raise ValueError(f"texture size must be >= 8 pixels, got {size}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    c = _colours(rng, 3)
    if family == "noise":
        cells = int(rng.integers(4, 33))
        coarse = rng.uniform(0, 1, size=(cells + 1, cells + 1))
        idx = np.minimum((np.arange(size) * cells / size).astype(int), cells)
        img = coarse[np.ix_(idx, idx)]
        fine = rng.uniform(0, 1, size=(size, size))
        mask = 0.7 * img + 0.3 * fine
        out = _mix(mask, c[2], c[0])
    elif family == "stripes":
        period = rng.uniform(0.05, 0.35)
        duty = rng.uniform(0.3, 0.7)
        mask = ((u / period) % 1.0 < duty).astype(float)
        out = _mix(mask, c[2], c[0])
    elif family == "checks":
        n = int(rng.integers(2, 12))
        mask = ((np.floor(x * n) + np.floor(y * n)) % 2).astype(float)
        out = _mix(mask, c[2], c[0])
    elif family == "gradients":
        t = (u - u.min()) / max(u.max() - u.min(), 1e-9)
        t = t ** rng.uniform(0.5, 2.0)
        out = _mix(t, c[2], c[0])
        bands = int(rng.integers(0, 6))
        if bands:
            out = out * (0.85 + 0.15 * np.cos(2 * np.pi * bands * t))[..., None]
    elif family == "tiles":
        n = int(rng.integers(2, 9))
        grout = rng.uniform(0.04, 0.15)
        fx, fy = (x * n) % 1.0, (y * n) % 1.0
        mask = ((fx > grout) & (fy > grout)).astype(float)
        shade = rng.uniform(0.8, 1.0, size=(n + 1, n + 1))[np.floor(y * n).astype(int), np.floor(x * n).astype(int)]
        out = _mix(mask, c[2] * shade[..., None], c[0])
    elif family == "dots":
        n = int(rng.integers(3, 10))
        radius = rng.uniform(0.15, 0.42)
        fx, fy = (x * n) % 1.0 - 0.5, (y * n) % 1.0 - 0.5
        mask = (np.hypot(fx, fy) < radius).astype(float)
        out = _mix(mask, c[2], c[0])
    elif family == "waves":
        freq = rng.uniform(2, 10)
        amp = rng.uniform(0.02, 0.12)
        v = -x * np.sin(angle) + y * np.cos(angle)
        mask = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u + amp * np.sin(2 * np.pi * 3 * v)))
        out = _mix(mask, c[2], c[0])
    else:  # bricks
        rows = int(rng.integers(3, 12))
        per_row = int(rng.integers(2, 6))
        mortar = rng.uniform(0.05, 0.15)
        row = np.floor(y * rows)
        fy = (y * rows) % 1.0
        fx = (x * per_row + 0.5 * (row % 2)) % 1.0
        mask = ((fy > mortar) & (fx > mortar / 2)).astype(float)
        out = _mix(mask, c[1], c[0])
    return np.clip(out, 0, 255).astype(np.uint8)


def texture_seed(family: str, index: int) -> int:
    """A stable seed for (family, index): the same in every process and Python version."""
    digest = hashlib.sha256(f"rlab-texture/{family}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def cache_dir() -> Path:
    root = os.environ.get("RLAB_TEXTURE_CACHE") or Path(tempfile.gettempdir()) / f"rlab-textures-{os.getuid()}"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def texture_png(family: str, index: int, size: int = 128) -> Path:
    """The PNG of texture `index` of `family` (generated once, then read from the cache).

    Raises ValueError for an unknown family or an index outside 0..POOL_SIZE-1.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown texture family {family!r}; known: {', '.join(FAMILIES)}")
    if not 0 <= index < POOL_SIZE:
        raise ValueError(f"texture index must be in 0..{POOL_SIZE - 1}, got {index}")
    path = cache_dir() / f"{family}-{index:03d}-{size}.png"
    if path.exists():
        return path
    from PIL import Image

    image = make_texture(family, np.random.default_rng(texture_seed(family, index)), size)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(image).save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
