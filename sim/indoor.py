"""Procedural indoor worlds for flight, built from pybullet primitives, randomised per episode.

A world is a grid of square cells (the corridor width). A braided random maze over the cells gives
corridors with turns, junctions and loops (no dead ends by default: a drone that can only fly forward
cannot turn round in one); some blocks of cells become rooms, joined to the corridors through doorways
(a gap in the wall with a lintel above). Every wall face, floor tile and ceiling tile is its own box, so
a texture keeps its scale whatever the layout. Furniture (primitives and pybullet_data models) stands in
rooms and along corridors. Textures (`sim.textures`), their tints, the lighting, the corridor width,
the ceiling height, the furniture and the camera (field of view, flight height, pitch) are all drawn
from the world's seed: the same seed builds the same world.

Splits: ``train`` draws seeds in [0, 1e6) and textures of the training families; ``val`` seeds in
[2e6, 3e6) (model selection); ``heldout`` seeds in [1e6, 2e6) with training families (unseen layouts);
``heldout_textures`` the same held-out seeds with only the held-out texture families.

`load_user_world` loads an OBJ mesh, a URDF or an SDF as a world instead (all bodies static).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim import textures

SPLITS = {
    "train": ((0, 1_000_000), textures.TRAIN_FAMILIES),
    "heldout": ((1_000_000, 2_000_000), textures.TRAIN_FAMILIES),
    "heldout_textures": ((1_000_000, 2_000_000), textures.HELDOUT_FAMILIES),
    "val": ((2_000_000, 3_000_000), textures.TRAIN_FAMILIES),
}
"""split -> ((first world seed, end), texture families)."""

# Furniture from pybullet_data: (file, scale range).
MODELS = (
    ("table/table.urdf", (0.6, 1.0)),
    ("table_square/table_square.urdf", (0.6, 1.0)),
    ("teddy_vhacd.urdf", (4.0, 7.0)),
    ("duck_vhacd.urdf", (3.0, 5.0)),
    ("sphere2.urdf", (0.4, 0.9)),
    ("cube.urdf", (0.4, 0.9)),
)

@dataclass
class WorldConfig:
    """Ranges that each generated world draws from (all configurable from the flight config)."""

    grid: tuple[int, int] = (6, 6)
    """Cells along x and y."""
    cell_m: tuple[float, float] = (2.2, 3.2)
    """Corridor width (cell side) range."""
    height_m: tuple[float, float] = (2.5, 3.2)
    """Floor-to-ceiling height range."""
    braid: float = 1.0
    """Probability that a dead end gets opened into a neighbour (1: no dead ends)."""
    extra_openings: float = 0.1
    """Probability of removing each remaining interior wall (more junctions and loops)."""
    rooms: tuple[int, int] = (0, 2)
    """Number of rooms (2 x 2 or 2 x 3 cells each) range."""
    furniture: tuple[int, int] = (3, 12)
    """Pieces of furniture range."""
    wall_textures: tuple[int, int] = (1, 4)
    """Distinct wall textures per world range."""
    fov_deg: tuple[float, float] = (70.0, 100.0)
    """Camera field of view range."""
    fly_height_m: tuple[float, float] = (0.9, 1.6)
    """Start altitude range."""
    camera_pitch_deg: tuple[float, float] = (-10.0, 5.0)
    """Camera mounting pitch range (negative looks down)."""
    ambient: tuple[float, float] = (0.3, 0.8)
    diffuse: tuple[float, float] = (0.3, 0.8)
    specular: tuple[float, float] = (0.0, 0.3)
    wall_thickness_m: float = 0.1
    door_width_m: tuple[float, float] = (1.0, 1.4)
    door_height_m: float = 2.1

    def __post_init__(self) -> None:
        for key in ("cell_m", "height_m", "fov_deg", "fly_height_m", "camera_pitch_deg", "ambient", "diffuse",
                    "specular", "door_width_m", "rooms", "furniture", "wall_textures"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"world.{key}: low end {lo} is above high end {hi}")
        if min(self.grid) < 2 or max(self.grid) > 40:
            raise ValueError(f"world.grid: each side must be in 2..40 cells, got {tuple(self.grid)}")
        if self.cell_m[0] < 1.0:
            raise ValueError(f"world.cell_m: corridors narrower than 1 m leave no room to fly, got {self.cell_m[0]}")
        if not self.fov_deg[0] >= 1.0 and self.fov_deg[1] < 170.0:
            raise ValueError(f"world.fov_deg must lie in [1, 170), got {tuple(self.fov_deg)}")
        if self.fly_height_m[1] >= self.height_m[0]:
            raise ValueError(f"world.fly_height_m {tuple(self.fly_height_m)} must stay below the lowest ceiling "
                             f"{self.height_m[0]}")
        if self.wall_textures[0] < 1:
            raise ValueError("world.wall_textures: at least one texture per world")


@dataclass
class Camera:
    fov_deg: float
    pitch_deg: float


@dataclass
class Lighting:
    direction: tuple[float, float, float]
    colour: tuple[float, float, float]
    ambient: float
    diffuse: float
    specular: float


@dataclass
class Layout:
    """The maze: open[i, j, d] says whether cell (i, j) opens towards direction d (0 +x, 1 +y, 2 -x, 3 -y);
    door[i, j, d] marks a doorway (a narrower gap) on that face."""

    nx: int
    ny: int
    open: np.ndarray
    door: np.ndarray
    rooms: list[tuple[int, int, int, int]]


@dataclass
class World:
    """A built world: what the environment needs to fly in it and to draw it."""

    seed: int | None
    split: str
    kinds: dict[int, str]
    """pybullet body id -> kind (wall, floor, ceiling, furniture, world)."""
    rects: list[tuple[str, float, float, float, float, float]]
    """Top-down footprints (kind, cx, cy, half_x, half_y, yaw_rad) for maps."""
    start: tuple[float, float, float, float]
    """Start pose (x, y, z, yaw_deg)."""
    camera: Camera
    lighting: Lighting
    bounds: tuple[np.ndarray, np.ndarray]
    """Axis-aligned box the flight stays inside (leaving it ends the flight without a collision)."""
    textures: dict[str, Any] = field(default_factory=dict)
    """What was drawn (families per surface) for the record."""
    layout: Layout | None = None


_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def _connect(opened: np.ndarray, i: int, j: int, d: int) -> None:
    di, dj = _DIRS[d]
    opened[i, j, d] = True
    opened[i + di, j + dj, (d + 2) % 4] = True


def _inside(opened: np.ndarray, i: int, j: int) -> bool:
    return 0 <= i < opened.shape[0] and 0 <= j < opened.shape[1]


def _spanning_tree(rng: np.random.Generator, opened: np.ndarray) -> None:
    """Randomised depth-first spanning tree over the cells (long corridors with turns)."""
    nx, ny = opened.shape[:2]
    seen = np.zeros((nx, ny), dtype=bool)
    stack = [(int(rng.integers(nx)), int(rng.integers(ny)))]
    seen[stack[0]] = True
    while stack:
        i, j = stack[-1]
        options = [d for d, (di, dj) in enumerate(_DIRS)
                   if _inside(opened, i + di, j + dj) and not seen[i + di, j + dj]]
        if not options:
            stack.pop()
            continue
        d = int(rng.choice(options))
        _connect(opened, i, j, d)
        di, dj = _DIRS[d]
        seen[i + di, j + dj] = True
        stack.append((i + di, j + dj))


def _braid(rng: np.random.Generator, opened: np.ndarray, braid: float, extra: float) -> None:
    """Open dead ends into a neighbour (probability `braid`) and other interior walls (probability `extra`)."""
    nx, ny = opened.shape[:2]
    for i in range(nx):
        for j in range(ny):
            closed = [d for d, (di, dj) in enumerate(_DIRS) if _inside(opened, i + di, j + dj) and not opened[i, j, d]]
            if opened[i, j].sum() == 1 and closed and rng.random() < braid:
                _connect(opened, i, j, int(rng.choice(closed)))
            for d in (0, 1):
                di, dj = _DIRS[d]
                if _inside(opened, i + di, j + dj) and not opened[i, j, d] and rng.random() < extra:
                    _connect(opened, i, j, d)


def _add_room(opened: np.ndarray, door: np.ndarray, room: tuple[int, int, int, int]) -> None:
    """No walls inside the block; its open faces to the outside become doorways."""
    i0, j0, w, h = room
    for i in range(i0, i0 + w):
        for j in range(j0, j0 + h):
            for d, (di, dj) in enumerate(_DIRS):
                ii, jj = i + di, j + dj
                if not _inside(opened, ii, jj):
                    continue
                if i0 <= ii < i0 + w and j0 <= jj < j0 + h:
                    _connect(opened, i, j, d)
                    door[i, j, d] = door[ii, jj, (d + 2) % 4] = False
                elif opened[i, j, d]:
                    door[i, j, d] = door[ii, jj, (d + 2) % 4] = True


def make_layout(rng: np.random.Generator, cfg: WorldConfig) -> Layout:
    """A braided random maze with rooms and doorways (pure numpy; no pybullet)."""
    nx, ny = cfg.grid
    opened = np.zeros((nx, ny, 4), dtype=bool)
    door = np.zeros((nx, ny, 4), dtype=bool)
    _spanning_tree(rng, opened)
    _braid(rng, opened, cfg.braid, cfg.extra_openings)
    rooms = []
    for _ in range(int(rng.integers(cfg.rooms[0], cfg.rooms[1] + 1))):
        w, h = (2, 2) if rng.random() < 0.5 else ((2, 3) if rng.random() < 0.5 else (3, 2))
        if w > nx or h > ny:
            continue
        room = (int(rng.integers(0, nx - w + 1)), int(rng.integers(0, ny - h + 1)), w, h)
        rooms.append(room)
        _add_room(opened, door, room)
    return Layout(nx, ny, opened, door, rooms)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1])) if bounds[1] > bounds[0] else float(bounds[0])


class _Builder:
    """Creates textured static boxes in one pybullet client, sharing shapes and textures."""

    def __init__(self, p: Any, client: int, texture_ids: dict[tuple[str, int], int]) -> None:
        self.p, self.client, self.texture_ids = p, client, texture_ids
        self.kinds: dict[int, str] = {}
        self.rects: list[tuple[str, float, float, float, float, float]] = []

    def texture(self, family: str, index: int) -> int:
        key = (family, index)
        if key not in self.texture_ids:
            self.texture_ids[key] = self.p.loadTexture(str(textures.texture_png(family, index)),
                                                       physicsClientId=self.client)
        return self.texture_ids[key]

    def box(self, kind: str, centre: tuple[float, float, float], half: tuple[float, float, float],
            texture: int | None, tint: tuple[float, float, float], yaw: float = 0.0) -> int:
        p = self.p
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=self.client)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=(*tint, 1.0), physicsClientId=self.client)
        body = p.createMultiBody(0, col, vis, basePosition=centre,
                                 baseOrientation=p.getQuaternionFromEuler((0, 0, yaw)), physicsClientId=self.client)
        if texture is not None:
            p.changeVisualShape(body, -1, textureUniqueId=texture, physicsClientId=self.client)
        self.kinds[body] = kind
        if kind in ("wall", "furniture"):
            self.rects.append((kind, centre[0], centre[1], half[0], half[1], yaw))
        return body


def _tint(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(x) for x in rng.uniform(0.6, 1.0, size=3))  # type: ignore[return-value]


def build_world(p: Any, client: int, seed: int, split: str, cfg: WorldConfig,
                texture_ids: dict[tuple[str, int], int], body_radius_m: float = 0.2) -> World:
    """Build the world of `seed` in `split` into an empty pybullet client; returns its description.

    Raises ValueError for an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown world split {split!r}; known: {', '.join(SPLITS)}")
    _, families = SPLITS[split]
    rng = np.random.default_rng(seed)
    layout = make_layout(rng, cfg)
    cell = _uniform(rng, cfg.cell_m)
    height = _uniform(rng, cfg.height_m)
    b = _Builder(p, client, texture_ids)

    def pick_texture() -> tuple[str, int]:
        return str(rng.choice(families)), int(rng.integers(textures.POOL_SIZE))

    n_wall_tex = int(rng.integers(cfg.wall_textures[0], cfg.wall_textures[1] + 1))
    wall_tex = [pick_texture() for _ in range(n_wall_tex)]
    floor_tex, ceiling_tex = pick_texture(), pick_texture()
    floor_id, ceiling_id = b.texture(*floor_tex), b.texture(*ceiling_tex)
    wall_ids = [b.texture(*t) for t in wall_tex]
    floor_tint, ceiling_tint = _tint(rng), _tint(rng)
    wall_tints = [_tint(rng) for _ in wall_tex]
    # A corridor section (a cell) keeps one wall texture: neighbours differ, so the drone sees sections.
    cell_tex = rng.integers(len(wall_tex), size=(layout.nx, layout.ny))

    _build_cells(b, rng, cfg, layout, cell, height, (floor_id, floor_tint), (ceiling_id, ceiling_tint),
                 list(zip(wall_ids, wall_tints, strict=True)), cell_tex)

    # Start: a cell, facing an open side, away from furniture.
    si, sj = int(rng.integers(layout.nx)), int(rng.integers(layout.ny))
    open_dirs = [d for d in range(4) if layout.open[si, sj, d]]
    d0 = int(rng.choice(open_dirs))
    z0 = _uniform(rng, cfg.fly_height_m)
    start = ((si + 0.5) * cell, (sj + 0.5) * cell, z0, 90.0 * d0)
    _furnish(p, client, b, rng, cfg, layout, cell, height, families, (si, sj), body_radius_m)

    camera = Camera(fov_deg=_uniform(rng, cfg.fov_deg), pitch_deg=_uniform(rng, cfg.camera_pitch_deg))
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.3)
    lighting = Lighting(direction=(float(np.cos(az) * np.cos(el)), float(np.sin(az) * np.cos(el)), float(np.sin(el))),
                        colour=tuple(float(x) for x in rng.uniform(0.75, 1.0, size=3)),  # type: ignore[arg-type]
                        ambient=_uniform(rng, cfg.ambient), diffuse=_uniform(rng, cfg.diffuse),
                        specular=_uniform(rng, cfg.specular))
    bounds = (np.array([-0.5, -0.5, -0.5]), np.array([layout.nx * cell + 0.5, layout.ny * cell + 0.5, height + 0.5]))
    return World(seed=seed, split=split, kinds=b.kinds, rects=b.rects, start=start, camera=camera, lighting=lighting,
                 bounds=bounds, layout=layout,
                 textures={"walls": wall_tex, "floor": floor_tex, "ceiling": ceiling_tex, "cell_m": cell,
                           "height_m": height})


def _build_cells(b: _Builder, rng: np.random.Generator, cfg: WorldConfig, layout: Layout, cell: float, height: float,
                 floor: tuple, ceiling: tuple, walls: list[tuple], cell_tex: np.ndarray) -> None:
    """Floor and ceiling tiles per cell, and each wall face (full, or a doorway with its lintel) once."""
    floor_id, floor_tint = floor
    ceiling_id, ceiling_tint = ceiling
    thick = cfg.wall_thickness_m
    for i in range(layout.nx):
        for j in range(layout.ny):
            cx, cy = (i + 0.5) * cell, (j + 0.5) * cell
            b.box("floor", (cx, cy, -0.05), (cell / 2, cell / 2, 0.05), floor_id, floor_tint)
            b.box("ceiling", (cx, cy, height + 0.05), (cell / 2, cell / 2, 0.05), ceiling_id, ceiling_tint)
            for d, (di, dj) in enumerate(_DIRS):
                ii, jj = i + di, j + dj
                outside = not (0 <= ii < layout.nx and 0 <= jj < layout.ny)
                if d in (2, 3) and not outside:
                    continue  # shared faces are built once, from the cell on their -x / -y side
                tex, tint = walls[int(cell_tex[i, j])]
                # Face centre and orientation.
                fx, fy = cx + di * cell / 2, cy + dj * cell / 2
                along_x = d in (1, 3)  # a face towards +-y runs along x
                if not layout.open[i, j, d]:
                    half = (cell / 2 + thick / 2, thick / 2, height / 2) if along_x else \
                        (thick / 2, cell / 2 + thick / 2, height / 2)
                    b.box("wall", (fx, fy, height / 2), half, tex, tint)
                elif layout.door[i, j, d]:
                    door = min(_uniform(rng, cfg.door_width_m), cell - 2 * thick - 0.2)
                    offset = float(rng.uniform(-1, 1)) * max(0.0, (cell - door) / 2 - thick - 0.1)
                    lo, hi = -cell / 2 - thick / 2, cell / 2 + thick / 2
                    for a, z in ((lo, offset - door / 2), (offset + door / 2, hi)):
                        if z - a < 1e-3:
                            continue
                        mid, half_len = (a + z) / 2, (z - a) / 2
                        if along_x:
                            b.box("wall", (fx + mid, fy, height / 2), (half_len, thick / 2, height / 2), tex, tint)
                        else:
                            b.box("wall", (fx, fy + mid, height / 2), (thick / 2, half_len, height / 2), tex, tint)
                    if height > cfg.door_height_m + 0.05:
                        lintel_h = (height - cfg.door_height_m) / 2
                        centre = (fx + offset, fy) if along_x else (fx, fy + offset)
                        half = (door / 2, thick / 2, lintel_h) if along_x else (thick / 2, door / 2, lintel_h)
                        b.box("wall", (*centre, cfg.door_height_m + lintel_h), half, tex, tint)


def _furnish(p: Any, client: int, b: _Builder, rng: np.random.Generator, cfg: WorldConfig, layout: Layout,
             cell: float, height: float, families: tuple[str, ...], start_cell: tuple[int, int],
             body_radius_m: float) -> None:
    """Furniture against walls or in rooms, never in the start cell; a corridor keeps a passage."""
    import pybullet_data

    n = int(rng.integers(cfg.furniture[0], cfg.furniture[1] + 1))
    data = Path(pybullet_data.getDataPath())
    for _ in range(n):
        i, j = int(rng.integers(layout.nx)), int(rng.integers(layout.ny))
        if (i, j) == start_cell:
            continue
        cx, cy = (i + 0.5) * cell, (j + 0.5) * cell
        # Offset towards a random side so a gap of at least 2 body diameters stays open on the other.
        max_off = cell / 2 - 0.35
        ox, oy = rng.uniform(-max_off, max_off, size=2)
        yaw = float(rng.uniform(0, np.pi))
        if rng.random() < 0.5:  # a primitive: crate, cabinet, pillar, low bench
            hx, hy = rng.uniform(0.15, min(0.6, cell / 4)), rng.uniform(0.15, min(0.6, cell / 4))
            hz = rng.uniform(0.2, min(1.1, height / 2))
            if rng.random() < 0.3:  # a pillar up to the ceiling
                hx = hy = rng.uniform(0.1, 0.25)
                hz = height / 2
            fam, idx = str(rng.choice(families)), int(rng.integers(textures.POOL_SIZE))
            b.box("furniture", (cx + ox, cy + oy, hz), (hx, hy, hz), b.texture(fam, idx), _tint(rng), yaw)
        else:
            name, scale_range = MODELS[int(rng.integers(len(MODELS)))]
            scale = _uniform(rng, scale_range)
            body = p.loadURDF(str(data / name), basePosition=(cx + ox, cy + oy, 0.0),
                              baseOrientation=p.getQuaternionFromEuler((0, 0, yaw)), useFixedBase=True,
                              globalScaling=scale, physicsClientId=client)
            lo, hi = p.getAABB(body, physicsClientId=client)
            if lo[2] < 0:  # stand it on the floor
                p.resetBasePositionAndOrientation(body, (cx + ox, cy + oy, -lo[2]),
                                                  p.getQuaternionFromEuler((0, 0, yaw)), physicsClientId=client)
                lo, hi = p.getAABB(body, physicsClientId=client)
            b.kinds[body] = "furniture"
            b.rects.append(("furniture", (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (hi[0] - lo[0]) / 2,
                            (hi[1] - lo[1]) / 2, 0.0))


# ---------------------------------------------------------------------------------------- user worlds


USER_WORLD_SUFFIXES = (".obj", ".urdf", ".sdf")


def load_user_world(p: Any, client: int, path: str | Path, start: tuple[float, float, float, float],
                    fov_deg: float = 90.0, pitch_deg: float = 0.0) -> World:
    """Load an OBJ mesh (static, concave collision), a URDF (fixed base) or an SDF as a world.

    Raises FileNotFoundError when `path` does not exist, ValueError for another suffix or a file pybullet
    cannot load (the message names the file and pybullet's error).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"world file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in USER_WORLD_SUFFIXES:
        raise ValueError(f"world file {path}: expected one of {', '.join(USER_WORLD_SUFFIXES)}, got {suffix!r}")
    try:
        if suffix == ".obj":
            col = p.createCollisionShape(p.GEOM_MESH, fileName=str(path), flags=p.GEOM_FORCE_CONCAVE_TRIMESH,
                                         physicsClientId=client)
            vis = p.createVisualShape(p.GEOM_MESH, fileName=str(path), physicsClientId=client)
            if col < 0 or vis < 0:
                raise p.error("no mesh could be read")
            bodies = [p.createMultiBody(0, col, vis, physicsClientId=client)]
        elif suffix == ".urdf":
            bodies = [p.loadURDF(str(path), useFixedBase=True, physicsClientId=client)]
        else:
            bodies = list(p.loadSDF(str(path), physicsClientId=client))
    except p.error as err:
        raise ValueError(f"world file {path} did not load in pybullet: {err}") from None
    if not bodies:
        raise ValueError(f"world file {path} has no bodies")
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    rects = []
    for body in bodies:
        for link in range(-1, p.getNumJoints(body, physicsClientId=client)):
            a, z = p.getAABB(body, link, physicsClientId=client)
            a, z = np.asarray(a), np.asarray(z)
            if np.all(np.abs(a) < 1e20) and np.all(np.abs(z) < 1e20):  # planes report infinite boxes
                lo, hi = np.minimum(lo, a), np.maximum(hi, z)
                rects.append(("other", float(a[0] + z[0]) / 2, float(a[1] + z[1]) / 2, float(z[0] - a[0]) / 2,
                              float(z[1] - a[1]) / 2, 0.0))
    if not np.all(np.isfinite(lo)):
        lo, hi = np.array([-50.0, -50.0, -1.0]), np.array([50.0, 50.0, 20.0])
    margin = 2.0
    lighting = Lighting(direction=(0.4, 0.3, 0.85), colour=(1.0, 1.0, 1.0), ambient=0.6, diffuse=0.5, specular=0.1)
    return World(seed=None, split="user", kinds={body: "world" for body in bodies}, rects=rects,
                 start=tuple(float(x) for x in start),  # type: ignore[arg-type]
                 camera=Camera(fov_deg=fov_deg, pitch_deg=pitch_deg), lighting=lighting,
                 bounds=(lo - margin, hi + margin), textures={"file": str(path)})

