"""Hand-built worlds for flight tests: OBJ boxes written on the fly (no generator involved)."""

from __future__ import annotations

from pathlib import Path


def box_obj(path: Path, boxes: list[tuple[float, float, float, float, float, float]]) -> Path:
    """Write an OBJ of axis-aligned boxes, each (x0, y0, z0, x1, y1, z1); returns the path."""
    lines, base = [], 0
    faces = ((0, 1, 2, 3), (4, 7, 6, 5), (0, 4, 5, 1), (1, 5, 6, 2), (2, 6, 7, 3), (3, 7, 4, 0))
    for x0, y0, z0, x1, y1, z1 in boxes:
        for z in (z0, z1):
            for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
                lines.append(f"v {x} {y} {z}")
        for f in faces:  # two triangles per face
            a, b, c, d = (base + i + 1 for i in f)
            lines += [f"f {a} {b} {c}", f"f {a} {c} {d}"]
        base += 8
    path.write_text("\n".join(lines) + "\n")
    return path


def pillar_world(tmp_path: Path) -> Path:
    """A floor and one 1.2 m wide pillar 2 m ahead of the origin (facing +x): straight hits it, a turn misses."""
    return box_obj(tmp_path / "pillar.obj", [(-5, -20, -0.2, 40, 20, 0.0), (2.0, -0.6, 0.0, 2.4, 0.6, 3.0)])
