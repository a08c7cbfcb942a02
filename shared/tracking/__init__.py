"""Run folders: resolved config, environment, metrics (JSONL + TensorBoard), media, checkpoints.

Layout of one run::

    runs/<track>/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml      resolved config
        env.json         git sha + dirty flag, package versions, seed, CPU/GPU
        metrics.jsonl    one JSON object per logged step, with its "step" (the source of truth)
        tb/              TensorBoard events
        checkpoints/     step-00000050/ ... (atomic: written under a temporary name, then renamed)
        media/           files + manifest.jsonl (what the gallery shows)
"""

from shared.tracking.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from shared.tracking.env_info import collect_env
from shared.tracking.listing import RunLookupError, RunSummary, compare_runs, find_runs, resolve_run, show_run
from shared.tracking.media import MediaRecord, append_media, read_manifest
from shared.tracking.metrics import METRICS_FILE, metric_series, read_metrics
from shared.tracking.rng import capture_rng, restore_rng, seed_everything
from shared.tracking.run import Run, RunDirError

__all__ = [
    "METRICS_FILE",
    "CheckpointError",
    "CheckpointWarning",
    "MediaRecord",
    "Run",
    "RunDirError",
    "RunLookupError",
    "RunSummary",
    "append_media",
    "capture_rng",
    "collect_env",
    "compare_runs",
    "find_runs",
    "latest_checkpoint",
    "load_checkpoint",
    "metric_series",
    "read_manifest",
    "read_metrics",
    "resolve_run",
    "restore_rng",
    "save_checkpoint",
    "seed_everything",
    "show_run",
    "verify_checkpoint",
]
