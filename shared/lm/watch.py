"""Early signs of RL drift, watched over a sliding window of RL steps.

Seen on the tiny VLM with a plain GRPO loop: completions grow to the length cap, the share of
groups with identical rewards (no GRPO signal) climbs, the answer format breaks, entropy runs away,
and a few dozen steps later the reward falls to zero. Every one of these is a logged metric; the
watch turns them into a warning while there is still time to stop the run (and resume from an
earlier checkpoint with a lower learning rate or a KL term), and counts active alerts in the
``watch/alerts`` metric. Its state lives in a plain dict so the trainer can checkpoint it.

>>> state = {}
>>> alerts = [warn_drift(state, s, {"truncated_frac": 0.9, "no_signal_frac": 0.1}) for s in range(1, 11)]
>>> alerts[-1][0][:37], alerts[-2]
('completions reached the length cap in', [])
>>> warn_drift(state, 11, {"truncated_frac": 0.9, "no_signal_frac": 0.1})  # warned once while it lasts
[]
"""

from __future__ import annotations

WINDOW = 10
"""RL steps averaged before a rule is checked."""
MAX_TRUNCATED = 0.5
"""Share of completions at the length cap that raises an alert."""
MAX_NO_SIGNAL = 0.7
"""Share of groups with identical rewards that raises an alert."""
FORMAT_DROP = 0.5
"""An alert when a format reward's window mean falls below this fraction of its first window's."""
ENTROPY_RISE = 2.0
"""An alert when the sampled-token entropy's window mean exceeds this multiple of its first window's."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _rules(state: dict, metrics: dict[str, float]) -> dict[str, str | None]:
    hist: dict[str, list[float]] = state.setdefault("history", {})
    first: dict[str, float] = state.setdefault("first", {})
    keys = ["truncated_frac", "no_signal_frac", "sampled_entropy", *(k for k in metrics if k.endswith("/format"))]
    for key in keys:
        if key in metrics:
            values = hist.setdefault(key, [])
            values.append(float(metrics[key]))
            del values[:-WINDOW]
            if len(values) == WINDOW and key not in first:
                first[key] = _mean(values)
    full = {k: _mean(v) for k, v in hist.items() if len(v) == WINDOW}
    out: dict[str, str | None] = {}
    if "truncated_frac" in full:
        m = full["truncated_frac"]
        out["truncated"] = (f"completions reached the length cap in {m:.0%} of samples over the last {WINDOW} steps "
                            "(drift towards the cap often precedes collapse)") if m >= MAX_TRUNCATED else None
    if "no_signal_frac" in full:
        m = full["no_signal_frac"]
        out["no_signal"] = (f"{m:.0%} of groups had identical rewards over the last {WINDOW} steps (no GRPO "
                            "signal; consider rl.dynamic_sampling or a harder/easier data mix)"
                            ) if m >= MAX_NO_SIGNAL else None
    for key, m in full.items():
        if key.endswith("/format") and first.get(key, 0) > 0:
            out[key] = (f"{key} fell to {m:.2f} from {first[key]:.2f} in the first {WINDOW} RL steps "
                        "(the answer format is breaking)") if m < FORMAT_DROP * first[key] else None
    if "sampled_entropy" in full and first.get("sampled_entropy", 0) > 0:
        m, m0 = full["sampled_entropy"], first["sampled_entropy"]
        out["entropy"] = (f"sampled-token entropy rose to {m:.2f} nats from {m0:.2f} in the first {WINDOW} RL "
                          "steps (completions turning to noise)") if m > ENTROPY_RISE * m0 else None
    return out


def warn_drift(state: dict, step: int, metrics: dict[str, float]) -> list[str]:
    """Update the watch with one RL step's metrics; the alerts that became active at this step.

    Sets ``metrics["watch/alerts"]`` to the number of active alerts. An alert is reported once and
    again only after it has cleared.
    """
    active: list[str] = state.setdefault("active", [])
    new = []
    for name, message in _rules(state, metrics).items():
        if message is None:
            if name in active:
                active.remove(name)
        elif name not in active:
            active.append(name)
            new.append(message)
    metrics["watch/alerts"] = len(active)
    return new
