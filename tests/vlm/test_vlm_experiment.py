"""The results-table command's bookkeeping (the training it drives is covered by test_vlm_track)."""

from __future__ import annotations

import json

import pytest

from vlm_rl.experiment import WARMUP, main, run_summary, tables


def _fake_run(path, test, ood, blank, evals):
    path.mkdir(parents=True)
    records = [{"step": s, "eval/test/accuracy": a} for s, a in evals]
    last = max((s for s, _ in evals), default=0)
    records.append({"step": last, "final_eval/test/accuracy": test, "final_eval/test/vision/blank_accuracy": blank})
    records.append({"step": last, "final_eval/test_ood/accuracy": ood,
                    "final_eval/test_ood/vision/blank_accuracy": blank})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "final").mkdir()
    return path


def test_run_summary_reads_final_evals_and_collapse(tmp_path):
    run = _fake_run(tmp_path / "grpo-seed0", 0.5, 0.2, 0.1, [(50, 0.4), (100, 0.6), (150, 0.5)])
    row = run_summary(run)
    assert row["test"] == 0.5 and row["test_ood"] == 0.2 and row["test blank"] == 0.1
    assert row["end - best"] == pytest.approx(-0.1)  # ended 10 points below its best (step 100)


def test_tables_report_changes_over_each_seeds_warmup(tmp_path):
    rows = {
        WARMUP: {0: {"test": 0.30, "test_ood": 0.10, "test blank": 0.2, "test_ood blank": 0.1},
                 1: {"test": 0.40, "test_ood": 0.20, "test blank": 0.2, "test_ood blank": 0.1}},
        "grpo": {0: {"test": 0.50, "test_ood": 0.10, "test blank": 0.2, "test_ood blank": 0.1, "end - best": 0.0},
                 1: {"test": 0.50, "test_ood": 0.30, "test blank": 0.2, "test_ood blank": 0.1, "end - best": -0.02}},
    }
    text = tables(rows)
    mean_row = next(line for line in text.splitlines() if line.startswith("| grpo |"))
    # Δ test: +0.20 and +0.10 -> mean 0.150, population std 0.050
    assert "0.150 ± 0.050" in mean_row
    per_seed = [line for line in text.splitlines() if line.startswith("| grpo | 1 |")][0]
    assert "| 0.100 |" in per_seed  # seed 1: Δ test_ood = 0.30 - 0.20


def test_finished_runs_are_reused_without_training(tmp_path, capsys):
    for config in (WARMUP, "grpo"):
        _fake_run(tmp_path / f"{config}-seed0", 0.5, 0.25, 0.2, [(10, 0.5)])
    main(["--seeds", "0", "--configs", "grpo", "--out", str(tmp_path), "--jobs", "1"])
    out = capsys.readouterr().out
    table, last = out.strip().rsplit("\n", 1)
    assert "| grpo | 0 |" in table and (tmp_path / "table.md").read_text().strip() == table.strip()
    gallery = tmp_path / "gallery" / "index.html"
    assert last == f"gallery: {gallery}" and (tmp_path / "gallery" / "curves").is_dir()
