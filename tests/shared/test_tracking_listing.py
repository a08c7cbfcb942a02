"""Run listing for `rlab runs ls / show / compare`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from shared.tracking import MediaRecord, Run, RunLookupError, append_media, find_runs, resolve_run, show_run
from shared.tracking.checkpoint import save_checkpoint
from shared.tracking.listing import compare_rows, compare_runs, runs_table

BASE = "algo:\n  name: grpo\n  lr: 0.001\n  group_size: 8\nmodel: tiny\nseed: 1\n"
OTHER = "algo:\n  name: dapo\n  lr: 0.001\n  clip_high: 0.28\nmodel: tiny\nseed: 2\n"


def _run(root: Path, folder: str, config: str, steps: int, track: str = "vlm") -> Run:
    run = Run.create(track, folder.rsplit("-", 2)[0], config, seed=1, run_dir=root / track / folder,
                     tensorboard=False)  # fmt: skip
    for step in range(1, steps + 1):
        run.log(step, {"loss": 1.0 / step, "reward/mean": step / 10})
    run.log(steps, {"eval/pass@1": 0.5})
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    with _run(tmp_path, "grpo-20260101-100000", BASE, 3) as a:
        save_checkpoint(a.checkpoint_dir, 3, {}, {"trainer": {"step": 3}})
        append_media(a.path, MediaRecord(kind="text", text="hello", step=3))
    b = _run(tmp_path, "grpo-20260102-100000", BASE, 2)
    b.mark("stopped")
    b.close()
    _run(tmp_path, "dapo-20260103-100000", OTHER, 4).close()  # still "running", pid alive
    return tmp_path


def test_find_runs_summarises_each_folder(runs: Path) -> None:
    found = {r.path.name: r for r in find_runs(runs)}
    assert sorted(found) == ["dapo-20260103-100000", "grpo-20260101-100000", "grpo-20260102-100000"]
    first = found["grpo-20260101-100000"]
    assert (first.track, first.name, first.status) == ("vlm", "grpo", "finished")
    assert first.last_step == 3 and first.checkpoints == 1
    assert first.metrics == {
        "loss": pytest.approx(1 / 3),
        "reward/mean": pytest.approx(0.3),
        "eval/pass@1": 0.5,
    }
    assert found["grpo-20260102-100000"].status == "stopped"
    assert found["dapo-20260103-100000"].status == "running"
    assert all(r.metrics == {"eval/pass@1": 0.5} for r in find_runs(runs, metric_keys=["eval/pass@1"]))
    assert find_runs(runs / "nothing") == []
    Console(width=200, record=True).print(runs_table(list(found.values())))


def test_a_running_run_whose_process_is_gone_is_crashed(runs: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info_path = runs / "vlm" / "dapo-20260103-100000" / "run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "pid": dead.pid}))
    assert {r.path.name: r.status for r in find_runs(runs)}["dapo-20260103-100000"] == "crashed"


def test_resolve_run_by_path_prefix_and_suffix(runs: Path) -> None:
    a = runs / "vlm" / "grpo-20260101-100000"
    assert resolve_run(str(a), runs) == a
    assert resolve_run("grpo-20260101-100000", runs) == a
    assert resolve_run("vlm/grpo-20260101", runs) == a
    assert resolve_run("dapo", runs).name == "dapo-20260103-100000"  # unique prefix
    assert resolve_run("20260102-100000", runs).name == "grpo-20260102-100000"  # unique suffix


def test_resolve_run_errors_name_the_candidates(runs: Path) -> None:
    with pytest.raises(RunLookupError, match="matches 2 runs") as err:
        resolve_run("grpo", runs)
    assert "grpo-20260101-100000" in str(err.value) and "grpo-20260102-100000" in str(err.value)
    with pytest.raises(RunLookupError, match="no run matches 'ppo'") as err:
        resolve_run("ppo", runs)
    assert "vlm/dapo-20260103-100000" in str(err.value)
    with pytest.raises(RunLookupError, match="not a run folder"):
        resolve_run(str(runs / "vlm"), runs)


def test_show_run_is_a_readable_summary(runs: Path) -> None:
    text = show_run(runs / "vlm" / "grpo-20260101-100000")
    assert "status: finished" in text
    assert "git:" in text and "seed: 1" in text
    assert "algo.lr = 0.001" in text and "algo.group_size = 8" in text
    assert "last step: 3" in text and "eval/pass@1 = 0.5" in text
    assert "step 3: ok" in text
    assert "media:   1 records" in text


def test_compare_shows_only_differences_and_final_metrics(runs: Path) -> None:
    paths = [runs / "vlm" / "grpo-20260101-100000", runs / "vlm" / "dapo-20260103-100000"]
    header, rows = compare_rows(paths)
    assert header == ["key", "vlm/grpo-20260101-100000", "vlm/dapo-20260103-100000"]
    table = {row[0]: row[1:] for row in rows}
    # algo.lr and model agree, so they are not shown; a key one run lacks shows "-"
    assert table["algo.name"] == ["grpo", "dapo"]
    assert table["algo.group_size"] == ["8", "-"]
    assert table["algo.clip_high"] == ["-", "0.28"]
    assert table["seed"] == ["1", "2"]
    assert "algo.lr" not in table and "model" not in table
    assert table["final loss"] == ["0.333333", "0.25"]
    assert table["final eval/pass@1"] == ["0.5", "0.5"]

    _, rows = compare_rows(paths, metrics=["reward/mean", "missing"])
    assert [r[0] for r in rows][-2:] == ["final reward/mean", "final missing"]
    assert rows[-1][1:] == ["-", "-"]
    rendered = Console(width=200, record=True)
    rendered.print(compare_runs(paths))
    assert "algo.clip_high" in rendered.export_text()
