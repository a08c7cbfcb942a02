"""Load one split of a dataset in the standard format, the lab's or a user's, checking every row.

Files are read through Hugging Face ``datasets`` (``load_dataset("json" | "parquet", data_files=...)``,
local files only, into memory, with a throw-away cache). When ``datasets`` is not installed or cannot
read the file (a line that is not JSON, columns whose types differ between rows), JSONL is read line
by line with the standard library instead (Parquet with pyarrow) and `LoadReport.note` says why.

A bad row is dropped and counted by reason; ``strict=True`` raises at the first one instead:

============================  =====================================================================
reason                        the row ...
============================  =====================================================================
``not_a_row``                 is not a JSON object (a broken line)
``no_question``               has no question (missing, empty or not text)
``no_answer``                 has no answer (missing or empty)
``no_image``                  lists no image (when ``require_image``)
``bad_image_path``            lists an image path that is not a string
``image_outside_folder``      lists an absolute path or one that leaves the dataset folder
``missing_image``             lists an image file that does not exist
``unreadable_image``          lists a file PIL cannot verify and decode (corrupt, truncated, not an image)
============================  =====================================================================

Questions longer than ``max_question_chars`` are cut to that length and counted
(`LoadReport.truncated`); the row is kept. Kept rows have ``images`` as absolute paths and
``answer`` as a string.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_EXAMPLES = 5


@dataclass
class LoadReport:
    """What `load_split` read and what it dropped."""

    path: str
    reader: str
    """``"datasets"`` or ``"json"`` / ``"pyarrow"`` (the fallback readers)."""
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Reason -> number of rows dropped for it."""
    truncated: int = 0
    """Rows kept with their question cut to ``max_question_chars``."""
    examples: list[str] = field(default_factory=list)
    """The first few problems, as ``row <id>: <what is wrong>``."""
    note: str | None = None
    """Why the fallback reader was used, if it was."""

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def add(self, reason: str, row_id: str, detail: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"row {row_id}: {detail}")

    def summary(self) -> str:
        """One line, e.g. ``test.jsonl: 998 of 1000 rows kept; dropped 2 (missing_image 2); ...``."""
        text = f"{Path(self.path).name}: {self.kept} of {self.rows} rows kept"
        if self.dropped:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.dropped.items()))
            text += f"; dropped {self.n_dropped} ({reasons}); first: {'; '.join(self.examples)}"
        if self.truncated:
            text += f"; {self.truncated} questions truncated"
        return text


class BadRow(ValueError):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(detail)


@dataclass(frozen=True)
class _Unparsable:
    error: str


# ---------------------------------------------------------------------------------------- readers


def split_file(root: Path, split: str) -> Path:
    """``root/<split>.jsonl`` or ``root/<split>.parquet`` (exactly one of them must exist)."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    found = [root / f"{split}{ext}" for ext in (".jsonl", ".parquet") if (root / f"{split}{ext}").is_file()]
    if not found:
        have = sorted(p.name for p in root.iterdir() if p.suffix in (".jsonl", ".parquet"))
        raise FileNotFoundError(f"no {split}.jsonl or {split}.parquet in {root} (it has: {', '.join(have) or 'none'})")
    if len(found) > 1:
        raise ValueError(f"both {split}.jsonl and {split}.parquet are in {root}; keep one")
    return found[0]


def _read_with_datasets(path: Path) -> list[dict]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="rlab-datasets-") as cache:
            ds = datasets.load_dataset("parquet" if path.suffix == ".parquet" else "json", data_files=str(path),
                                       split="train", cache_dir=cache, keep_in_memory=True)
            rows = ds.to_list()
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    # Arrow gives every row the union of the struct's keys; drop the None-filled ones again.
    for row in rows:
        if isinstance(row.get("meta"), dict):
            row["meta"] = {k: v for k, v in row["meta"].items() if v is not None}
    return rows


def _read_plain(path: Path) -> list[dict | _Unparsable]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows: list[dict | _Unparsable] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                rows.append(_Unparsable(f"line {line_no} is not JSON ({err.msg})"))
    return rows


def read_rows(path: Path) -> tuple[list[dict | _Unparsable], str, str | None]:
    """The raw rows of a JSONL/Parquet file, the reader used, and why the fallback was used (or None)."""
    try:
        return _read_with_datasets(path), "datasets", None
    except ImportError:
        note = "the datasets library is not installed"
    except Exception as err:  # datasets wraps Arrow/JSON errors in several types
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        note = f"datasets could not read it ({type(err).__name__}: {first})"
    return _read_plain(path), "pyarrow" if path.suffix == ".parquet" else "json", note


# ------------------------------------------------------------------------------------- validation


def _check_image(root: Path, rel: object, decode: bool) -> str:
    from PIL import Image

    if not isinstance(rel, str) or not rel:
        raise BadRow("bad_image_path", f"image path {rel!r} is not a file name")
    full = (root / rel).resolve()
    if Path(rel).is_absolute() or not full.is_relative_to(root):
        raise BadRow("image_outside_folder", f"image {rel!r} is outside the dataset folder")
    if not full.is_file():
        raise BadRow("missing_image", f"image {rel!r} does not exist")
    if not decode:
        return str(full)
    try:
        with Image.open(full) as im:
            im.verify()  # checksums and structure
        with Image.open(full) as im:
            im.load()  # and the pixels decode (verify misses some truncations)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError ...
        raise BadRow("unreadable_image", f"image {rel!r} cannot be read ({type(err).__name__}: {err})") from None
    return str(full)


def _images(raw: dict, root: Path, require_image: bool, check_images: bool) -> list[str]:
    images = raw.get("images")
    images = [] if images is None else [images] if isinstance(images, str) else images
    if not isinstance(images, list | tuple):
        raise BadRow("bad_image_path", f"images is a {type(images).__name__}, not a list of paths")
    if require_image and not images:
        raise BadRow("no_image", "no image")
    return [_check_image(root, rel, check_images) for rel in images]


def validate_row(
    raw: dict | _Unparsable, row_id: str, root: Path, *, default_task: str, max_question_chars: int,
    require_image: bool = True, check_images: bool = True,
) -> tuple[dict, bool]:
    """The cleaned row and whether its question was truncated; raises `BadRow` for a bad one."""
    if isinstance(raw, _Unparsable) or not isinstance(raw, dict):
        raise BadRow("not_a_row", raw.error if isinstance(raw, _Unparsable) else f"a {type(raw).__name__}, not a row")
    question, answer = raw.get("question"), raw.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise BadRow("no_question", "no question")
    if answer is None or isinstance(answer, bool | dict | list) or not str(answer).strip():
        raise BadRow("no_answer", "no answer")
    images = _images(raw, root, require_image, check_images)
    truncated = len(question) > max_question_chars
    meta = raw.get("meta")
    row = {**raw, "id": row_id, "images": images, "question": question[:max_question_chars],
           "answer": str(answer).strip(), "task": raw.get("task") or default_task,
           "meta": meta if isinstance(meta, dict) else {}}
    return row, truncated


def _default_task(root: Path) -> str:
    try:
        return str(json.loads((root / "dataset.json").read_text())["task"])
    except (OSError, ValueError, KeyError, TypeError):
        return root.name


def load_split(
    root: Path, split: str, strict: bool = False, *, max_question_chars: int = 2000, require_image: bool = True,
    check_images: bool = True,
) -> tuple[list[dict], LoadReport]:
    """Read ``root/<split>.jsonl`` (or ``.parquet``) and check every row; return the good rows and a report.

    Args:
        root: the dataset folder; image paths in rows are relative to it.
        split: ``train``, ``test``, ``test_ood`` or any name with a file.
        strict: raise ``ValueError`` naming the row and its problem at the first bad row, instead of
            dropping and counting it.
        max_question_chars: longer questions are truncated (and counted), not dropped.
        require_image: a row without images is bad (the vlm tasks all have one).
        check_images: open every image (``verify()`` then a full decode); off, only the paths are checked.
    """
    root = Path(root).resolve()
    path = split_file(root, split)
    raw_rows, reader, note = read_rows(path)
    report = LoadReport(path=str(path), reader=reader, note=note)
    default_task, rows = _default_task(root), []
    for index, raw in enumerate(raw_rows):
        report.rows += 1
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        row_id = str(raw_id) if raw_id not in (None, "") else f"{split}-{index}"
        try:
            row, truncated = validate_row(raw, row_id, root, default_task=default_task,
                                          max_question_chars=max_question_chars, require_image=require_image,
                                          check_images=check_images)
        except BadRow as bad:
            if strict:
                raise ValueError(f"{path}: row {row_id} (row {index + 1}): {bad.detail} [{bad.reason}]") from None
            report.add(bad.reason, row_id, bad.detail)
            continue
        report.truncated += truncated
        rows.append(row)
    report.kept = len(rows)
    return rows, report
