"""svg_rlrf.probe: the order-free set error, the linear readout, and the readouts run end to end on generated
items (pixels only; the visual-token rows need a trained run)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.config import load_config
from svg_rlrf.placement import item_level
from svg_rlrf.probe import SLOTS, main, probe, ridge, set_error, targets
from svg_rlrf.track import CONFIGS_DIR, SVGConfig, load_data


def test_set_error_ignores_slot_order_and_empty_slots():
    centres = torch.tensor([[[10.0, 20.0], [40.0, 50.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    swapped = torch.tensor([[[40.0, 50.0], [99.0, 99.0], [10.0, 20.0]]])  # the two shapes in other slots
    assert set_error(swapped, centres, mask).item() == 0.0
    off = torch.tensor([[[12.0, 20.0], [40.0, 46.0], [99.0, 99.0]]])  # 2 and 4 units off: mean 3
    assert set_error(off, centres, mask).item() == pytest.approx(3.0)


def test_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = x @ rng.normal(size=(5, 2)) + np.array([32.0, 16.0])
    pred = ridge(x[:300], y[:300], x[300:], lam=1e-6)
    assert np.abs(pred - y[300:]).max() < 1e-4


def test_readouts_run_on_generated_items(tmp_path):
    cfg = load_config(SVGConfig, "default", [f"data.cache_dir={tmp_path / 'data'}", "data.n_train=40", "data.n_val=4",
                                            "data.n_test=8", "data.icons=2", "data.image_size=56"], CONFIGS_DIR)
    data = load_data(cfg.data)
    train = [item for item in data.train if item_level(item) == 2]
    test = [item for item in data.split("test") if item_level(item) == 2]
    centres, mask = targets(train)
    assert centres.shape == (len(train), SLOTS, 2) and set(mask.sum(1)) <= {2.0, 3.0}
    rows = probe(train, test, epochs=1, mlp_epochs=1)
    assert [(name, target) for name, target, _ in rows] == [
        ("mean centre", "first"), ("pixels 16x16, linear", "first"), ("pixels 16x16, MLP", "first"),
        ("pixels 16x16, MLP", "set"), ("pixels 56x56, CNN", "first"), ("pixels 56x56, CNN", "set")]
    assert all(math.isfinite(err) and 0 <= err < 128 for _, _, err in rows), rows


def test_items_without_a_primitive_and_folders_without_a_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no primitive"):
        targets([{"id": "x", "answer": "<svg/>"}])
    with pytest.raises(SystemExit, match="not a trained svg run"):
        main([str(tmp_path)])
