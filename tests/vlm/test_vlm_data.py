"""vlm task data: generators (determinism, sizes, OOD ranges), writer, loader (bad rows), CLI."""

from __future__ import annotations

import doctest
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlm_rl.data import cli, drawing, loader, tasks, writer
from vlm_rl.data.loader import load_split
from vlm_rl.data.tasks import TASKS, demonstration, generate, spec_key
from vlm_rl.data.writer import write_dataset

TASK_NAMES = list(TASKS)


def _items(task: str, split: str, n: int, seed: int = 0, size: int = 112):
    return list(generate(task, split, n, seed, size))


def _spec(row: dict) -> str:
    return spec_key(row["question"], {k: v for k, v in row["meta"].items() if k != "ood"})


# ------------------------------------------------------------------------------------- generators


@pytest.mark.parametrize("task", TASK_NAMES)
def test_generators_are_deterministic_per_seed(task):
    first, again, other = _items(task, "test", 6), _items(task, "test", 6), _items(task, "test", 6, seed=1)
    assert [r for r, _ in first] == [r for r, _ in again]
    assert [im.tobytes() for _, im in first] == [im.tobytes() for _, im in again]
    assert [r["meta"] for r, _ in first] != [r["meta"] for r, _ in other]
    # item k depends only on (task, split, seed, k): a shorter run is a prefix of a longer one
    assert [r for r, _ in _items(task, "test", 3)] == [r for r, _ in first[:3]]


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("size", [112, 160])
def test_images_have_the_asked_size_and_answers_are_strings(task, size):
    for row, image in _items(task, "test_ood", 4, size=size) + _items(task, "train", 4, size=size):
        assert image.size == (size, size) and image.mode == "RGB"
        assert isinstance(row["answer"], str) and row["answer"].strip() == row["answer"] != ""
        assert row["task"] == task and row["question"].endswith("?")
        json.dumps(row)  # meta is JSON-serialisable


def test_ood_items_are_outside_the_train_ranges():
    n = 60
    train = {t: [r["meta"] for r, _ in _items(t, "train", n)] for t in TASK_NAMES}
    ood = {t: [r["meta"] for r, _ in _items(t, "test_ood", n)] for t in TASK_NAMES}
    assert all(1 <= m["count"] <= 6 for m in train["counting"]) and all(7 <= m["count"] <= 9 for m in ood["counting"])
    assert all(2 <= m["n_bars"] <= 4 for m in train["comparison"])
    assert all(5 <= m["n_bars"] <= 6 for m in ood["comparison"])
    assert all(m["a"] <= 99 and m["b"] <= 99 for m in train["arithmetic"])
    assert all(m["a"] >= 100 and m["b"] >= 100 for m in ood["arithmetic"])
    assert all(min(m["a"], m["b"]) >= 2 and max(m["a"], m["b"]) <= 20 for m in train["control"])
    assert all(m["a"] >= 21 and m["b"] >= 21 for m in ood["control"])
    assert all(m["ood"] for ms in ood.values() for m in ms) and not any(m["ood"] for ms in train.values() for m in ms)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_answers_agree_with_meta(task):
    for row, _ in _items(task, "train", 30):
        m, answer = row["meta"], row["answer"]
        if task == "counting":
            targets = [o for o in m["objects"] if (o["shape"], o["color"]) == (m["shape"], m["color"])]
            assert answer == str(m["count"]) == str(len(targets)) and len(m["objects"]) == m["n_objects"]
            assert f"{m['color']} {m['shape']}s" in row["question"]
        elif task == "comparison":
            values = dict(zip(m["labels"], m["values"], strict=True))
            a, b = m["pair"]
            assert values[a] != values[b]
            expected = max((a, b), key=values.get) if m["question_type"] == "which" else str(abs(values[a] - values[b]))
            assert answer == expected
        elif task == "arithmetic":
            assert answer == str(m["a"] + m["b"]) and [n["value"] for n in m["numbers"]] == [m["a"], m["b"]]
        else:
            assert answer == str(m["a"] + m["b"] if m["op"] == "sum" else m["a"] - m["b"])
            assert f"{m['a']} " in row["question"] and f"{m['b']} " in row["question"]
        assert demonstration(row).endswith(f"<answer>{answer}</answer>")


def test_exclude_forces_other_items():
    # the first run's spec keys are excluded from the second run with the same seed: every item is redrawn
    seen: set[str] = set()
    first = [r for r, _ in generate("control", "test", 5, 0, exclude=seen)]
    assert len(seen) == 5
    second = [r for r, _ in generate("control", "test", 5, 0, exclude=set(seen))]
    assert not {_spec(r) for r in second} & {_spec(r) for r in first}


def test_unknown_task_and_tiny_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="known tasks: counting"):
        list(generate("nope", "test", 1, 0))
    with pytest.raises(ValueError, match="at least 32"):
        list(generate("counting", "test", 1, 0, image_size=16))
    with pytest.raises(ValueError, match="known tasks"):
        write_dataset(tmp_path / "x", "nope", 1, 1, 1, 0)
    assert not (tmp_path / "x").exists()


def test_fonts_include_the_default_and_load():
    names = drawing.font_names()
    assert names[0] == drawing.DEFAULT_FONT
    for name in names[:3]:
        assert drawing.load_font(name, 20).getbbox("123")[2] > 0


def test_module_doctests():
    for module in (tasks, writer, loader):
        assert doctest.testmod(module).failed == 0


# ----------------------------------------------------------------------------------- write / load


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("vlm") / "counting", "counting", n_train=30, n_test=12, n_ood=10,
                         seed=3)


def test_write_then_load_round_trip(small_dataset):
    root = small_dataset
    card = json.loads((root / "dataset.json").read_text())
    assert card["task"] == "counting" and card["seed"] == 3
    assert {s: v["count"] for s, v in card["splits"].items()} == {"train": 30, "test": 12, "test_ood": 10}
    assert "7-9" in card["ood_definition"] and (root / "README.md").is_file()
    specs = {}
    for split, n in (("train", 30), ("test", 12), ("test_ood", 10)):
        written = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
        rows, report = load_split(root, split)
        assert (report.rows, report.kept, report.dropped, report.truncated) == (n, n, {}, 0)
        assert report.reader == "datasets" and report.note is None
        for row, raw in zip(rows, written, strict=True):
            assert {k: row[k] for k in ("id", "question", "answer", "task", "meta")} == \
                {k: raw[k] for k in ("id", "question", "answer", "task", "meta")}
            assert row["images"] == [str((root / raw["images"][0]).resolve())]
            with Image.open(row["images"][0]) as im:
                assert im.size == (112, 112)
        specs[split] = {_spec(r) for r in rows}
    assert not specs["train"] & specs["test"] and not specs["train"] & specs["test_ood"]
    assert not specs["test"] & specs["test_ood"]


def test_parquet_round_trip(tmp_path, small_dataset):
    root = write_dataset(tmp_path / "pq", "counting", n_train=30, n_test=12, n_ood=10, seed=3, file_format="parquet")
    assert (root / "test.parquet").is_file() and not (root / "test.jsonl").exists()
    rows, report = load_split(root, "test")
    reference, _ = load_split(small_dataset, "test")
    assert report.kept == 12 and report.reader == "datasets"
    strip = [{k: r[k] for k in ("id", "question", "answer", "meta")} for r in rows]
    assert strip == [{k: r[k] for k in ("id", "question", "answer", "meta")} for r in reference]


def test_refuses_to_overwrite_and_leaves_no_temporary_folders(tmp_path, small_dataset):
    before = sorted(p.name for p in small_dataset.iterdir())
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_dataset(small_dataset, "counting", 2, 2, 2, seed=0)
    assert sorted(p.name for p in small_dataset.iterdir()) == before
    (tmp_path / "empty").mkdir()
    assert (write_dataset(tmp_path / "empty", "control", 2, 2, 0, seed=0) / "test.jsonl").is_file()
    assert not (tmp_path / "empty" / "test_ood.jsonl").exists()  # a split of size 0 is skipped
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        yield from generate("control", "test", 2, 0)
        raise RuntimeError("disk full")

    monkeypatch.setattr(tasks, "generate", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset(tmp_path / "out", "control", 5, 5, 5, seed=0)
    assert list(tmp_path.iterdir()) == []


def _copy_with_bad_rows(src: Path, dst: Path) -> list[dict]:
    """A copy of the test split where rows 1-5 are broken in five different ways."""
    import shutil

    shutil.copytree(src, dst)
    rows = [json.loads(line) for line in (dst / "test.jsonl").read_text().splitlines()]
    del rows[1]["answer"]
    (dst / rows[2]["images"][0]).unlink()
    png = dst / rows[3]["images"][0]
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])  # a truncated PNG
    rows[4]["images"] = ["../../outside.png"]
    (dst.parent / "outside.png").write_bytes(png.read_bytes())
    rows[5]["question"] = "How many? " * 100  # 1000 characters: truncated, kept
    rows[6]["question"] = ""
    return rows


def _write_jsonl(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines))


def test_loader_drops_and_counts_bad_rows(tmp_path, small_dataset):
    root = tmp_path / "bad"
    rows = _copy_with_bad_rows(small_dataset, root)
    _write_jsonl(root / "test.jsonl", rows)
    kept, report = load_split(root, "test", max_question_chars=200)
    assert report.reader == "datasets"
    assert report.dropped == {"no_answer": 1, "missing_image": 1, "unreadable_image": 1,
                              "image_outside_folder": 1, "no_question": 1}
    assert (report.rows, report.kept, report.truncated) == (12, 7, 1)
    ids = [r["id"] for r in rows]
    assert [e.split(":")[0] for e in report.examples] == [f"row {ids[k]}" for k in (1, 2, 3, 4, 6)]
    assert "does not exist" in report.examples[1] and "cannot be read" in report.examples[2]
    long_row = next(r for r in kept if r["id"] == ids[5])
    assert len(long_row["question"]) == 200
    assert "kept" in report.summary() and "no_answer 1" in report.summary()


def test_loader_strict_mode_names_the_row(tmp_path, small_dataset):
    root = tmp_path / "bad"
    rows = _copy_with_bad_rows(small_dataset, root)
    _write_jsonl(root / "test.jsonl", rows)
    with pytest.raises(ValueError, match=rf"row {rows[1]['id']} \(row 2\): no answer"):
        load_split(root, "test", strict=True)
    _write_jsonl(root / "test.jsonl", rows[2:3])
    with pytest.raises(ValueError, match=rf"row {rows[2]['id']}.*does not exist"):
        load_split(root, "test", strict=True)


def test_loader_falls_back_to_plain_json_for_broken_lines(tmp_path, small_dataset):
    root = tmp_path / "broken"
    import shutil

    shutil.copytree(small_dataset, root)
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    rows[0]["answer"] = 7  # a number, not a string: still an answer
    _write_jsonl(root / "test.jsonl", rows, extra_lines=("{not json\n",))
    kept, report = load_split(root, "test")
    assert report.reader == "json" and "datasets could not read it" in report.note
    assert report.dropped == {"not_a_row": 1} and report.kept == 12 and kept[0]["answer"] == "7"
    assert "line 13 is not JSON" in report.examples[0]


def test_loader_reports_missing_files(tmp_path, small_dataset):
    with pytest.raises(FileNotFoundError, match="no val.jsonl or val.parquet"):
        load_split(small_dataset, "val")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split(tmp_path / "nowhere", "test")


# -------------------------------------------------------------------------------------------- CLI


def test_cli_writes_a_dataset_and_prints_its_folder(tmp_path):
    import typer
    from typer.testing import CliRunner

    assert set(cli.TASK_NAMES) == set(TASKS)
    defaults = {k: p.default for k, p in inspect.signature(cli.vlm).parameters.items()}
    assert defaults["n_test"] >= 1000 and defaults["n_ood"] == 1000 and defaults["image_size"] >= 112
    app = typer.Typer()
    app.command("vlm")(cli.vlm)
    app.command("other")(lambda: None)  # keep "vlm" a subcommand, as under `rlab data`
    out = tmp_path / "arith"
    args = ["vlm", "--task", "arithmetic", "--out", str(out), "--n-train", "4", "--n-test", "3", "--n-ood", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(out))
    assert len((out / "test.jsonl").read_text().splitlines()) == 3
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "not an empty folder" in again.output
    shapes = CliRunner().invoke(app, ["vlm", "--task", "shapes", "--out", str(tmp_path / "shapes"), "--n-train", "2",
                                      "--n-test", "2", "--n-ood", "2"])
    assert shapes.exit_code == 0, shapes.output
    assert json.loads((tmp_path / "shapes" / "test.jsonl").read_text().splitlines()[0])["task"] == "counting"
    bad = CliRunner().invoke(app, ["vlm", "--task", "nope", "--out", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "unknown vlm task 'nope'" in bad.output


def test_cli_module_imports_light():
    code = ("import sys, vlm_rl.data.cli, vlm_rl.data; "
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
