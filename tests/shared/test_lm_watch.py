"""The drift watch: each rule fires once when its window crosses the threshold, and clears."""

from __future__ import annotations

import doctest

import shared.lm.watch as watch
from shared.lm.watch import WINDOW, warn_drift


def _feed(state, steps, **metrics):
    out = []
    for step in steps:
        m = dict(metrics)
        out.append((warn_drift(state, step, m), m["watch/alerts"]))
    return out


def test_doctest():
    assert doctest.testmod(watch).failed == 0


def test_quiet_run_raises_nothing():
    state = {}
    seen = _feed(state, range(1, 50), truncated_frac=0.1, no_signal_frac=0.3, sampled_entropy=0.8,
                 **{"reward/vlm.format/format": 0.95})
    assert all(not alerts and n == 0 for alerts, n in seen)


def test_no_signal_alert_fires_once_then_clears():
    state = {}
    _feed(state, range(1, WINDOW + 1), no_signal_frac=0.2)
    fired = _feed(state, range(WINDOW + 1, 3 * WINDOW), no_signal_frac=0.9)
    messages = [m for alerts, _ in fired for m in alerts]
    assert len(messages) == 1 and "identical rewards" in messages[0]
    assert fired[-1][1] == 1
    cleared = _feed(state, range(3 * WINDOW, 5 * WINDOW), no_signal_frac=0.1)
    assert cleared[-1][1] == 0


def test_format_and_entropy_are_compared_with_the_first_window():
    state = {}
    _feed(state, range(1, WINDOW + 1), sampled_entropy=0.5, **{"reward/vlm.format/format": 0.9})
    late = _feed(state, range(WINDOW + 1, 3 * WINDOW), sampled_entropy=1.5, **{"reward/vlm.format/format": 0.3})
    messages = " | ".join(m for alerts, _ in late for m in alerts)
    assert "format is breaking" in messages and "sampled-token entropy rose to" in messages
    assert late[-1][1] == 2


def test_state_is_plain_data_for_checkpoints():
    import json

    state = {}
    _feed(state, range(1, 15), truncated_frac=0.8)
    again = json.loads(json.dumps(state))
    assert warn_drift(again, 15, {"truncated_frac": 0.8}) == warn_drift(state, 15, {"truncated_frac": 0.8})
