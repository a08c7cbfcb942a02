"""The svg results table: rows per config, the vectorizer and the blank canvas from the warm-up's evaluation."""

from __future__ import annotations

import json

from svg_rlrf.experiment import COLUMNS, LEVEL_COLUMNS, SPLITS, WARMUP, failure_lines, level_table, tables


def _write_eval(run, split, value, failures=None):
    metrics = {}
    for prefix, offset in (("model", 0.0), ("vectorizer", 100.0), ("blank", 200.0)):
        metrics.update({f"{prefix}/{c}": value + offset for c in COLUMNS})
        metrics.update({f"{prefix}/level{lv}/{c}": 10 * lv + value + offset for lv in (1, 2) for c in LEVEL_COLUMNS})
    metrics["model/items"] = 12.0
    (run / "eval").mkdir(parents=True, exist_ok=True)
    record = {"split": split, "metrics": metrics, **({"failures": failures} if failures is not None else {})}
    (run / "eval" / f"{split}.json").write_text(json.dumps(record))


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
    levels = level_table(tmp_path, ["rlrf", "sft_more"], [0, 1])
    assert "level1 mse" in levels and "level2 colour_precision" in levels
    assert "| rlrf | 12.500 |" in levels and "| blank | 211.500 |" in levels  # mean over seeds, level 1 first


def test_failures_are_summed_over_seeds_by_kind(tmp_path):
    for seed, failures in ((0, {"blank render": 2, "malformed XML: no element found": 1}), (1, {"blank render": 3})):
        for split in SPLITS:
            _write_eval(tmp_path / f"{WARMUP}-seed{seed}", split, 1.0, failures)
    _write_eval(tmp_path / "rlrf-seed0", "test", 1.0)  # an eval written before failures were counted
    _write_eval(tmp_path / "rlrf-seed0", "icons", 1.0, {})
    text = failure_lines(tmp_path, [], [0, 1])
    assert f"- test, {WARMUP}: blank render 5, malformed XML: no element found 1" in text
    assert failure_lines(tmp_path, ["rlrf"], [0]).count("rlrf") == 0


def test_a_named_warmup_is_the_start_of_every_other_run(tmp_path, monkeypatch, capsys):
    import svg_rlrf.experiment as experiment

    trained: dict[str, list[str]] = {}

    def fake_train(track, config, run_dir, sets, log):  # records the overrides; writes what eval would
        trained[run_dir.name] = sets
        (run_dir / "final").mkdir(parents=True)
        for split in SPLITS:
            _write_eval(run_dir, split, 1.0)

    monkeypatch.setattr(experiment, "train_run", fake_train)
    monkeypatch.setattr(experiment, "gallery", lambda *a: tmp_path / "gallery")
    experiment.main(["--seeds", "0", "--configs", "rlrf", "--warmup", "warmup_long", "--out", str(tmp_path),
                     "--jobs", "1"])
    assert sorted(trained) == ["rlrf-seed0", "warmup_long-seed0"]
    assert not any(s.startswith("model.path=") for s in trained["warmup_long-seed0"])
    assert f"model.path={tmp_path / 'warmup_long-seed0' / 'final'}" in trained["rlrf-seed0"]
    table = (tmp_path / "table.md").read_text()
    assert "| warmup_long | 0 |" in table and "| rlrf | 0 |" in table and "| warmup |" not in table
    assert "gallery:" in capsys.readouterr().out
