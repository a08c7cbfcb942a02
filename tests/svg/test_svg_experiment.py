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
