"""`rlab demo` / `make demo`: the main job on embedded defaults, ending with a gallery path.

The main job is the `diag` track: warm-up SFT then GRPO with the default config and a final
evaluation with pass@k. Each track adds its own short step through `Track.demo` (the vlm track:
a short warm-up then GRPO on counting); one gallery shows every run. The whole demo stays under
15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.tracks import Track


def train_demo_run(track: Track, runs_root: Path, overrides: list[str], config: str = "default",
                   describe: Callable[[Any], str] | None = None) -> Path:
    """A track's demo step: its `config` with `overrides`, trained in a new run (marked finished when
    `train` returns); the run folder. `describe(cfg)` says what the step does (default: the LM tracks'
    warm-up SFT then RL)."""
    from shared.config import load_config, to_yaml
    from shared.tracking.run import Run

    cfg = load_config(track.schema, config, overrides, track.configs_dir)
    what = describe(cfg) if describe else f"warm-up SFT (up to {cfg.sft.steps} steps) then RL ({cfg.train.steps} steps)"
    with Run.create(track.name, cfg.name, to_yaml(cfg), cfg.train.seed, root=runs_root) as run:
        print(f"[demo] {track.name}: {what} -> {run.path}", flush=True)
        track.train(cfg, run, False)
        return run.path


def _evaluate(track: str, run_dir: Path, limit: int | None) -> None:
    from shared.tracks import EvalRequest, load_track

    what = "pass@1, pass@4" if track in ("diag", "vlm") else "the track's own evaluation"
    print(f"[demo] {track}: final evaluation on the held-out split ({what})", flush=True)
    metrics = load_track(track).evaluate(EvalRequest(run_dir, "test", (1, 4), limit=limit))
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1), flush=True)


def run_demo(runs_root: Path, quick: bool = False) -> Path:
    """Train, evaluate and render every track's short step; returns the gallery's index.html.

    The diag track runs first, then every other installed track that offers a `demo` (shared.tracks).
    """
    from shared.gallery import build_gallery
    from shared.tracks import load_track, track_names

    start = time.time()
    run_dirs = []
    for name in sorted(track_names(), key=lambda n: n != "diag"):  # the core's own track first
        track = load_track(name)
        if track.demo is None:
            continue
        run_dir = track.demo(runs_root, quick)
        if track.evaluate is not None:
            _evaluate(name, run_dir, None if name == "diag" and not quick else 100)
        run_dirs.append(run_dir)
    out = Path(runs_root) / f"gallery-{time.strftime('%Y%m%d-%H%M%S')}"
    index = build_gallery(run_dirs, out, title="rlab demo")
    print(f"[demo] finished in {time.time() - start:.0f} s", flush=True)
    return index
