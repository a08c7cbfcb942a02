"""The media manifest: what a run wants a gallery to show.

`media/manifest.jsonl` holds one `MediaRecord` per line. File paths are relative to the run folder
(for example ``media/step-100/item-3.png``), so a run folder can be moved or zipped.

Kinds:
  image  a raster file (png/jpg/webp/gif)          -> ``path``
  svg    an SVG file, shown inline                 -> ``path``
  video  a video that plays in Chromium (webm/mp4) -> ``path``
  text   a plain text block                        -> ``text``
  trace  a reasoning trace: ``fields`` holds e.g. prompt, completion, answer, verdict, reward;
         ``path`` (optional) an image shown beside it
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "media/manifest.jsonl"
KINDS = ("image", "svg", "video", "text", "trace")


@dataclass
class MediaRecord:
    kind: str
    """One of KINDS."""
    path: str | None = None
    """File path relative to the run folder (image, svg, video; optional for trace)."""
    text: str | None = None
    """Body of a `text` record."""
    step: int | None = None
    """Training step the record belongs to (gallery can group by it)."""
    item: str | None = None
    """Evaluation item id (gallery can group by it, e.g. one test prompt across steps)."""
    group: str | None = None
    """Free label such as "eval/test" or "train"."""
    caption: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    """Named values of a trace (prompt, completion, answer, verdict, reward, ...)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"media kind {self.kind!r} is not one of {KINDS}")
        if self.kind in ("image", "svg", "video") and not self.path:
            raise ValueError(f"a {self.kind} media record needs a path")


def append_media(run_dir: str | Path, record: MediaRecord) -> None:
    """Append one record to the run's manifest (creating `media/`)."""
    path = Path(run_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")


def read_manifest(run_dir: str | Path) -> list[MediaRecord]:
    """All media records of a run; a torn last line is ignored."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(MediaRecord(**json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise
    return out


def truncate_manifest(run_dir: str | Path, last_step: int) -> int:
    """On resume: drop records logged after step `last_step` (they will be written again).

    Records without a step are kept. Rewrites the manifest atomically; returns how many were dropped.
    """
    import os

    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return 0
    records = read_manifest(run_dir)
    kept = [r for r in records if r.step is None or r.step <= last_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(records) - len(kept)
