"""Reading `metrics.jsonl`, the source of truth of a run's logged numbers."""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All records of `run_dir/metrics.jsonl`, in file order.

    Each record is a dict with at least an integer ``"step"``. A torn last line (a run killed
    mid-write) is ignored; a malformed line elsewhere raises ``ValueError`` naming file and line.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines):  # torn final line from a crash: not a record yet
                break
            raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from err
        if not isinstance(rec, dict) or "step" not in rec:
            raise ValueError(f"{path}:{lineno}: a metrics record needs a 'step' key")
        records.append(rec)
    return records


def metric_series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric across records that carry it."""
    steps, values = [], []
    for rec in records:
        if key in rec and isinstance(rec[key], (int, float)):
            steps.append(int(rec["step"]))
            values.append(float(rec[key]))
    return steps, values
