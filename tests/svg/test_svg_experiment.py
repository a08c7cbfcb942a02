"""The svg results table: rows per config, the vectorizer and the blank canvas from the warm-up's evaluation."""

from __future__ import annotations

import json

from svg_rlrf.experiment import COLUMNS, SPLITS, WARMUP, tables


def _write_eval(run, split, value):
    metrics = {}
    for prefix, offset in (("model", 0.0), ("vectorizer", 100.0), ("blank", 200.0)):
        metrics.update({f"{prefix}/{c}": value + offset for c in COLUMNS})
    metrics["model/items"] = 12.0
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "eval" / f"{split}.json").write_text(json.dumps({"split": split, "metrics": metrics}))


def test_tables_show_each_model_and_both_references(tmp_path):
    for seed in (0, 1):
        for config, value in ((WARMUP, 1.0), ("rlrf", 2.0), ("sft_more", 3.0)):
            for split in SPLITS:
                _write_eval(tmp_path / f"{config}-seed{seed}", split, value + seed)
    text = tables(tmp_path, ["rlrf", "sft_more"], [0, 1])
    for split in SPLITS:
        assert f"**{split}** (12 items" in text
    assert "| rlrf | 2.500 ± 0.500 |" in text  # mean ± std over the two seeds
    assert "| vectorizer | 101.500 ± 0.500 |" in text and "| blank | 201.500 ± 0.500 |" in text
    assert "| sft_more | 1 | 4.000 |" in text
