"""How tracks plug into `rlab`: an entry point in the ``rlab.tracks`` group names a `Track`.

``pyproject.toml``::

    [project.entry-points."rlab.tracks"]
    diag = "shared.diag.track:TRACK"

Listing tracks reads only package metadata (fast `rlab --help`); a track's module is imported when
it is used, and keeps heavy imports (torch, transformers) inside its functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

TRACKS_GROUP = "rlab.tracks"
COMMANDS_GROUP = "rlab.commands"
MODELS_GROUP = "rlab.models"
DATA_GROUP = "rlab.data"


@dataclass(frozen=True)
class EvalRequest:
    """What `rlab eval RUN` asks of a track."""

    run_dir: Path
    split: str = "test"
    ks: tuple[int, ...] = (1,)
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Track:
    name: str
    help: str
    schema: type
    """Root dataclass of the track's config."""
    configs_dir: Path
    """Folder of the track's YAML experiment files; ``default.yaml`` is used when none is named."""
    train: Callable[[Any, Any, bool], None]
    """train(config, run, resuming): runs (or resumes) training inside `run` (a shared.tracking.Run)."""
    evaluate: Callable[[EvalRequest], dict[str, float]] | None = None
    """Evaluate a finished run's model; returns the metrics it also logs into the run."""
    demo: Callable[[Path, bool], Path] | None = None
    """demo(runs_root, quick) -> the run folder of a short run of this track (its step of `make demo`)."""


def track_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=TRACKS_GROUP))


def load_track(name: str) -> Track:
    eps = {ep.name: ep for ep in entry_points(group=TRACKS_GROUP)}
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none installed: run `make setup`)"
        raise KeyError(f"unknown track {name!r}; known tracks: {known}")
    track = eps[name].load()
    if not isinstance(track, Track):
        raise TypeError(f"entry point {eps[name].value} is not a shared.tracks.Track")
    return track
