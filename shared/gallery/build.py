"""`build_gallery`: one static HTML page from one or more run folders.

The gallery folder is self-contained, so it can be zipped and opened from disk anywhere::

    gallery/
        index.html                      inline CSS, no script, no network
        curves/<metric>.png             learning curves, runs overlaid
        assets/<run-name>/media/...     copies of the media files the manifests reference

Everything in a run folder may come from a model (completions, rendered SVGs), so it is treated as
untrusted: Jinja2 autoescapes every value, and SVG files are shown through ``<img src=...svg>``,
which never runs scripts in the SVG, instead of being inlined.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from shared.gallery import curves
from shared.tracking.media import MediaRecord, read_manifest

GROUP_BY = ("step", "item")
VIDEO_TYPES = {".webm": "video/webm", ".mp4": "video/mp4", ".m4v": "video/mp4", ".ogv": "video/ogg"}
TEXT_FILE_LIMIT = 100_000  # characters of a text record's file shown in the page

# Leaf names of config keys worth showing in a run header, in this order when present.
KEY_CONFIG = (
    "seed", "model", "algorithm", "algo", "advantage_estimator", "policy_loss", "loss_agg_mode",
    "lr", "learning_rate", "batch_size", "group_size", "num_generations", "total_steps", "max_steps",
    "task", "env", "world", "mixture",
)  # fmt: skip
_GOOD = {"correct", "right", "pass", "passed", "ok", "true", "yes", "success", "valid"}
_BAD = {"wrong", "incorrect", "fail", "failed", "false", "no", "error", "invalid", "unparsable", "timeout"}


class GalleryWarning(UserWarning):
    """Something a gallery could not show (a missing media file); the page says so too."""


@dataclass
class RunView:
    """What the page shows about one run."""

    dir: Path
    label: str
    track: str
    colour: str
    asset_dir: str
    key_config: list[tuple[str, str]] = field(default_factory=list)
    config_text: str = ""
    git_sha: str | None = None
    git_dirty: bool | None = None
    n_metric_records: int = 0
    step_range: tuple[int, int] | None = None
    records: list[MediaRecord] = field(default_factory=list)


@dataclass
class Card:
    """One media record, ready for the template (all strings still unescaped: the template escapes)."""

    kind: str
    run: str
    step: int | None
    item: str | None
    group: str | None
    caption: str
    src: str | None = None  # relative URL inside the gallery folder
    missing: str | None = None  # the manifest path that could not be shown
    mime: str | None = None
    text: str | None = None
    fields: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, value, is_block)
    verdict: str = ""  # "good" | "bad" | ""


@dataclass
class Section:
    title: str
    anchor: str
    rows: list[tuple[RunView | None, list[Card]]]


def build_gallery(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    group_by: str = "step",
    metrics: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a static HTML gallery of `run_dirs` into `out_dir`; return the path of its ``index.html``.

    `out_dir` defaults to ``RUN/gallery/`` for one run and is required for several. `group_by` is
    "step" (one section per training step) or "item" (one section per evaluation item, across
    steps). `metrics` picks the curves; by default the ~12 most relevant numeric metrics. Raises
    ValueError for a bad `group_by`, several runs without `out_dir`, or a requested metric no run
    logged; FileNotFoundError for a run folder that does not exist. A missing media file is shown
    as a placeholder with a `GalleryWarning`.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("build_gallery needs at least one run folder")
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"run folder {d} does not exist")
    if out_dir is None:
        if len(dirs) > 1:
            raise ValueError("build_gallery: give out_dir when building a gallery of several runs")
        out_dir = dirs[0] / "gallery"
    out = Path(out_dir)

    loaded = curves.load_runs(dirs)
    available = curves.metric_names(loaded)
    chosen = curves.default_metrics(available) if metrics is None else list(metrics)
    unknown = [m for m in chosen if m not in available]
    if unknown:  # checked before anything is written
        names = ", ".join(available) or "none"
        raise ValueError(f"no run logged metric(s) {unknown}; available metrics: {names}")

    out.mkdir(parents=True, exist_ok=True)
    runs = [_run_view(dirs[i], label, i, records) for i, (label, records) in enumerate(loaded)]
    _dedupe_asset_dirs(runs)
    plots = _write_curves(loaded, chosen, out)
    sections = _sections(runs, out, group_by)
    html = _render(
        title=title or (runs[0].label if len(runs) == 1 else f"{len(runs)} runs"),
        runs=runs,
        plots=plots,
        sections=sections,
        group_by=group_by,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    return index


def _run_view(run_dir: Path, label: str, index: int, metric_records: list[dict]) -> RunView:
    config, config_text = _read_config(run_dir)
    env = _read_json(run_dir / "env.json")
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    sha = env.get("git_sha") or git.get("sha") or git.get("commit") or env.get("commit")
    dirty = env.get("git_dirty", git.get("dirty"))
    key_config = _key_config(config)
    if "seed" not in dict(key_config) and "seed" in env:
        key_config.insert(0, ("seed", str(env["seed"])))
    steps = [int(r["step"]) for r in metric_records]
    return RunView(
        dir=run_dir,
        label=label,
        track=str(config.get("track") or run_dir.parent.name),
        colour=curves.RUN_COLOURS[index % len(curves.RUN_COLOURS)],
        asset_dir=_slug(run_dir.name),
        key_config=key_config,
        config_text=config_text,
        git_sha=str(sha) if sha else None,
        git_dirty=dirty if isinstance(dirty, bool) else None,
        n_metric_records=len(metric_records),
        step_range=(min(steps), max(steps)) if steps else None,
        records=read_manifest(run_dir),
    )


def _read_config(run_dir: Path) -> tuple[dict, str]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}, ""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        warnings.warn(f"gallery: {path} is not valid YAML ({err}); showing it as text", GalleryWarning, 2)
        return {}, text
    return (data if isinstance(data, dict) else {}), text


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        warnings.warn(f"gallery: {path} is not valid JSON ({err})", GalleryWarning, 2)
        return {}
    return data if isinstance(data, dict) else {}


def _key_config(config: dict) -> list[tuple[str, str]]:
    """(dotted key, value) of the KEY_CONFIG leaves of a nested config, at most 10."""
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(config, "")
    leaf_rank = {name: i for i, name in enumerate(KEY_CONFIG)}
    picked = [k for k in flat if k.rsplit(".", 1)[-1] in leaf_rank]
    picked.sort(key=lambda k: leaf_rank[k.rsplit(".", 1)[-1]])
    return [(k, _format_value(flat[k])) for k in picked[:10]]


def _dedupe_asset_dirs(runs: list[RunView]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        n = seen.get(run.asset_dir, 0)
        seen[run.asset_dir] = n + 1
        if n:
            run.asset_dir = f"{run.asset_dir}-{n + 1}"


def _write_curves(loaded: list[curves.RunMetrics], chosen: list[str], out: Path) -> list[tuple[str, str]]:
    """Plot each chosen metric into ``out/curves/``; return (metric, relative src) pairs."""
    curve_dir = out / "curves"
    if curve_dir.exists():
        shutil.rmtree(curve_dir)  # ours alone: drop curves of metrics no longer chosen
    plots, used = [], set()
    for metric in chosen:
        name = _slug(metric)
        while name in used:
            name += "_"
        used.add(name)
        curves.plot_loaded(loaded, metric, curve_dir / f"{name}.png")
        plots.append((metric, f"curves/{quote(name)}.png"))
    return plots


def _sections(runs: list[RunView], out: Path, group_by: str) -> list[Section]:
    """Media cards grouped by step or item; within a section, one row per run when there are several."""
    groups: dict[Any, dict[int, list[Card]]] = {}
    for i, run in enumerate(runs):
        for record in sorted(run.records, key=lambda r: (r.step is None, r.step or 0)):
            key = getattr(record, group_by)
            groups.setdefault(key, {}).setdefault(i, []).append(_card(record, run, out))

    def order(key: Any) -> tuple:
        if key is None:
            return (1, ())
        return (0, _natural_key(str(key)))

    sections, anchors = [], set()
    for key in sorted(groups, key=order):
        if key is None:
            title = f"no {group_by}"
        else:  # "step 100", "item 7"; an item id that already says "item-7" is shown alone
            title = str(key) if str(key).lower().startswith(group_by) else f"{group_by} {key}"
        rows = [(runs[i] if len(runs) > 1 else None, cards) for i, cards in sorted(groups[key].items())]
        anchor = f"{group_by}-{_slug(str(key))}"
        while anchor in anchors:
            anchor += "_"
        anchors.add(anchor)
        sections.append(Section(title=title, anchor=anchor, rows=rows))
    return sections


def _card(record: MediaRecord, run: RunView, out: Path) -> Card:
    card = Card(
        kind=record.kind,
        run=run.label,
        step=record.step,
        item=record.item,
        group=record.group,
        caption=record.caption,
    )
    if record.kind == "text":
        card.text = record.text if record.text is not None else _text_file(record, run, card)
    elif record.path:
        card.src = _copy_asset(record.path, run, out)
        if card.src is None:
            card.missing = record.path
        elif record.kind == "video":
            card.mime = VIDEO_TYPES.get(Path(record.path).suffix.lower())
    if record.kind == "trace":
        card.fields = [(k, _format_value(v), _is_block(v)) for k, v in record.fields.items()]
        card.verdict = _verdict(record.fields)
    return card


def _text_file(record: MediaRecord, run: RunView, card: Card) -> str:
    source = _inside(run.dir, record.path) if record.path else None
    if source is None:
        if record.path:
            card.missing = record.path
        return ""
    return source.read_text(encoding="utf-8", errors="replace")[:TEXT_FILE_LIMIT]


def _copy_asset(rel_path: str, run: RunView, out: Path) -> str | None:
    """Copy a run's media file into ``out/assets/<run>/``; its URL relative to `out`, or None (warned)."""
    source = _inside(run.dir, rel_path)
    if source is None:
        return None
    rel = source.relative_to(run.dir.resolve())
    dest = out / "assets" / run.asset_dir / rel
    if not _same_file(source, dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    return quote(f"assets/{run.asset_dir}/{rel.as_posix()}")


def _same_file(source: Path, dest: Path) -> bool:
    """Whether `dest` is already a copy of `source` (rebuilding a gallery copies only what changed)."""
    if not dest.exists():
        return False
    a, b = source.stat(), dest.stat()
    return a.st_size == b.st_size and b.st_mtime >= a.st_mtime


def _inside(run_dir: Path, rel_path: str) -> Path | None:
    """The existing file `rel_path` names inside `run_dir`, or None with a GalleryWarning.

    A manifest path that leaves the run folder (``../``, absolute) counts as missing: the gallery
    copies only files of the run, never arbitrary files of the machine.
    """
    root = run_dir.resolve()
    source = (root / rel_path).resolve()
    if not source.is_relative_to(root):
        message = f"gallery: {run_dir.name}: media path {rel_path} is outside the run folder"
        warnings.warn(message, GalleryWarning, 2)
        return None
    if not source.is_file():
        warnings.warn(f"gallery: {run_dir.name}: missing media file {rel_path}", GalleryWarning, 2)
        return None
    return source


def _verdict(fields: dict[str, Any]) -> str:
    """Colour class "good", "bad" or "" from a trace's verdict field (or correct, is_correct, ...)."""
    for key in ("verdict", "correct", "is_correct", "passed", "success"):
        if key not in fields:
            continue
        value = fields[key]
        if isinstance(value, (bool, int, float)):
            return "good" if value > 0 else "bad"
        word = str(value).strip().lower()
        if word in _GOOD:
            return "good"
        if word in _BAD:
            return "bad"
        return ""
    return ""


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=1, ensure_ascii=False)
    return str(value)


def _is_block(value: Any) -> bool:
    """Long or multi-line values get a <pre> block; short ones sit on the field's line."""
    return isinstance(value, (dict, list)) or (isinstance(value, str) and (len(value) > 60 or "\n" in value))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "_"


def _natural_key(text: str) -> tuple:
    """Sort "item-2" before "item-10" and 100 before 1000."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p)


def _render(**context: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("shared.gallery", "templates"),
        autoescape=True,  # always: traces hold model output
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("gallery.html.j2").render(**context)
