"""Static galleries: structure, relative links, escaping of untrusted output, grouping, curves, video.

No browser here: `test_gallery_browser.py` loads the page in headless Chromium.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from shared.gallery import (
    GalleryWarning,
    available_metrics,
    build_gallery,
    plot_metric,
    write_demo_run,
    write_gif,
    write_video,
)
from shared.gallery.curves import default_metrics, moving_average
from shared.tracking.media import MediaRecord, append_media

PAYLOAD = "<script>alert(1)</script>"
BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # colours of run 0 and run 1


def make_run(root: Path, name: str = "grpo-20250101-120000", reward_offset: float = 0.0) -> Path:
    """A run folder written by hand: metrics, PNG, SVG, WebM, text and two traces (one hostile)."""
    run = root / "runs" / "vlm" / name
    (run / "media").mkdir(parents=True)
    (run / "config.yaml").write_text("track: vlm\nseed: 7\nmodel:\n  name: tiny\n  lr: 0.0001\n")
    (run / "env.json").write_text(json.dumps({"git": {"sha": "abcdef0123456789", "dirty": True}, "seed": 7}))
    with (run / "metrics.jsonl").open("w") as fh:
        for step in (0, 10, 20, 30):
            reward, loss = step / 30 + reward_offset, 1 - step / 40
            fh.write(json.dumps({"step": step, "time": 0.5 * step, "reward": reward, "loss": loss}) + "\n")
    Image.new("RGB", (32, 24), (200, 30, 30)).save(run / "media" / "target 1.png")  # a space in the name
    # a model-written SVG with a script: must never be inlined
    (run / "media" / "render.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
        f'<rect width="40" height="30" fill="teal"/>{PAYLOAD}</svg>'
    )
    frames = [np.full((24, 33, 3), 20 * k, dtype=np.uint8) for k in range(6)]  # odd width on purpose
    write_video(frames, run / "media" / "rollout.webm", fps=5)
    for step in (10, 20):
        append_media(run, MediaRecord("image", path="media/target 1.png", step=step, item="item-2"))
        append_media(run, MediaRecord("svg", path="media/render.svg", step=step, item="item-10"))
        append_media(run, MediaRecord("video", path="media/rollout.webm", step=step, caption="lap"))
        append_media(run, MediaRecord("text", text=f"note at {step}", step=step))
        right = {"prompt": "what is 2+2?", "completion": f"4 {PAYLOAD}", "answer": "4", "verdict": "correct"}
        wrong = {"prompt": "what is 3+3?", "completion": "7", "answer": "6", "verdict": "wrong", "reward": 0}
        image = "media/target 1.png"
        append_media(run, MediaRecord("trace", path=image, step=step, item="item-2", fields=right))
        append_media(run, MediaRecord("trace", step=step, item="item-10", fields=wrong))
    return run


class _Links(HTMLParser):
    """Collects src/href values, element ids and tag names of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href") and value is not None:
                self.links.append(value)
            if key == "id" and value:
                self.ids.add(value)


def parse(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser


def assert_links_resolve(index: Path) -> list[Path]:
    """Every src/href is relative and names an existing file inside the gallery folder (or an #anchor)."""
    page, root, files = parse(index), index.parent.resolve(), []
    for link in page.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), f"not relative: {link}"
        if link.startswith("#"):
            assert link[1:] in page.ids, f"anchor without target: {link}"
            continue
        target = (root / unquote(parts.path)).resolve()
        assert target.is_relative_to(root), f"leaves the gallery folder: {link}"
        assert target.is_file(), f"broken link: {link}"
        files.append(target)
    return files


def test_single_run_gallery_is_self_contained(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    index = build_gallery([run])
    assert index == run / "gallery" / "index.html"
    files = assert_links_resolve(index)
    suffixes = {f.suffix for f in files}
    assert {".png", ".svg", ".webm"} <= suffixes
    html = index.read_text()
    assert "grpo-20250101-120000" in html and ">vlm<" in html
    assert "abcdef0123" in html and "(dirty)" in html
    assert "<b>seed</b> 7" in html and "<b>model.lr</b> 0.0001" in html
    assert '<source src="assets/grpo-20250101-120000/media/rollout.webm" type="video/webm">' in html
    assert "target%201.png" in html  # the space is URL-encoded
    assert "<video controls muted loop playsinline" in html
    # default curves: every numeric metric but step/time, one PNG each
    assert sorted(p.name for p in (run / "gallery" / "curves").iterdir()) == ["loss.png", "reward.png"]
    assert 'id="step-10"' in html and 'id="step-20"' in html
    assert 'class="card trace good"' in html and 'class="card trace bad"' in html


def test_untrusted_output_is_escaped_and_svg_not_inlined(tmp_path: Path) -> None:
    index = build_gallery([make_run(tmp_path)])
    html = index.read_text()
    page = parse(index)
    assert PAYLOAD not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "script" not in page.tags and "svg" not in page.tags  # SVG goes through <img src>, never inline
    assert any(link.endswith("render.svg") for link in page.links)


def test_group_by_item_sections_span_steps(tmp_path: Path) -> None:
    index = build_gallery([make_run(tmp_path)], tmp_path / "by-item", group_by="item")
    assert_links_resolve(index)
    html = index.read_text()
    # natural order: item-2 before item-10, records without an item last
    positions = [html.index(f'id="{anchor}"') for anchor in ("item-item-2", "item-item-10", "item-None")]
    assert positions == sorted(positions)
    item2 = html[positions[0] : positions[1]]
    assert "step 10" in item2 and "step 20" in item2
    with pytest.raises(ValueError, match="group_by"):
        build_gallery([tmp_path / "runs" / "vlm" / "grpo-20250101-120000"], group_by="color")


def test_two_runs_overlay_on_shared_axes(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a-20250101-000000")
    b = make_run(tmp_path, "b-20250101-000000", reward_offset=0.5)
    with pytest.raises(ValueError, match="out_dir"):
        build_gallery([a, b])
    index = build_gallery([a, b], tmp_path / "cmp", metrics=["reward"], title="a vs b")
    assert_links_resolve(index)
    html = index.read_text()
    assert "<title>a vs b</title>" in html
    assert html.count("a-20250101-000000") > 1 and html.count("b-20250101-000000") > 1
    assert [p.name for p in (tmp_path / "cmp" / "curves").iterdir()] == ["reward.png"]
    plot = Image.open(tmp_path / "cmp" / "curves" / "reward.png").convert("RGB")
    colours = {c for _, c in plot.getcolors(1 << 20)}
    assert BLUE in colours and ORANGE in colours  # both runs drawn on the one plot
    assert (tmp_path / "cmp" / "assets" / "a-20250101-000000").is_dir()
    assert (tmp_path / "cmp" / "assets" / "b-20250101-000000").is_dir()


def test_missing_media_file_is_a_placeholder(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    append_media(run, MediaRecord("image", path="media/gone.png", step=30))
    # a path that leaves the run folder is never copied
    append_media(run, MediaRecord("image", path="../outside.png", step=30))
    (tmp_path / "runs" / "vlm" / "outside.png").write_bytes(b"not for the gallery")
    with pytest.warns(GalleryWarning) as caught:
        index = build_gallery([run])
    messages = " | ".join(str(w.message) for w in caught)
    assert "missing media file media/gone.png" in messages and "../outside.png is outside" in messages
    assert_links_resolve(index)
    html = index.read_text()
    assert "missing: media/gone.png" in html and "missing: ../outside.png" in html
    assert not list((run / "gallery").rglob("outside.png"))


def test_run_without_media_or_metrics_still_renders(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "rccar" / "empty-20250101-000000"
    run.mkdir(parents=True)
    html = build_gallery([run]).read_text()
    assert "No metrics logged" in html and "No media recorded" in html and "no config.yaml" in html
    with pytest.raises(FileNotFoundError):
        build_gallery([tmp_path / "nope"])


def test_rebuild_replaces_curves(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    build_gallery([run])
    build_gallery([run], metrics=["loss"])
    assert [p.name for p in (run / "gallery" / "curves").iterdir()] == ["loss.png"]


def test_unknown_metric_raises_naming_it(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match=r"'accuracy'.*available metrics: time, reward, loss"):
        plot_metric([run], "accuracy", tmp_path / "acc.png")
    with pytest.raises(ValueError, match="accuracy"):
        build_gallery([run], tmp_path / "g", metrics=["accuracy"])
    assert not (tmp_path / "g").exists()  # checked before anything is written


def test_plot_metric_and_available_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert available_metrics([run]) == ["time", "reward", "loss"]
    out = plot_metric([run], "reward", tmp_path / "plots" / "reward.png", smooth=2)
    assert out.is_file() and Image.open(out).format == "PNG"


def test_default_metrics_rank_and_cap() -> None:
    names = ["lr", "time", "grad_norm", "loss/policy", "kl", "eval/pass@4", "reward", "step"]
    assert default_metrics(names) == ["eval/pass@4", "reward", "loss/policy", "kl", "lr", "grad_norm"]
    assert default_metrics([f"m{i}" for i in range(20)]) == [f"m{i}" for i in range(12)]


def test_moving_average_by_hand() -> None:
    # window 3: [1], [1,2], [1,2,3], [2,3,4] -> 1, 1.5, 2, 3
    assert moving_average([1.0, 2.0, 3.0, 4.0], 3) == [1.0, 1.5, 2.0, 3.0]


def test_write_video_webm_and_gif(tmp_path: Path) -> None:
    frames = [np.random.default_rng(k).integers(0, 255, (15, 21, 3), dtype=np.uint8) for k in range(4)]
    webm = write_video(frames, tmp_path / "v" / "clip.webm", fps=4)
    head = webm.read_bytes()[:64]
    assert head[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in head  # EBML header, WebM doctype
    assert not list(webm.parent.glob(".*tmp*"))  # the temporary file was renamed
    gif = write_gif(frames, tmp_path / "clip.gif", fps=4)
    assert Image.open(gif).n_frames == 4
    with pytest.raises(ValueError, match="uint8"):
        write_video([np.zeros((4, 4, 3))], tmp_path / "bad.webm")
    with pytest.raises(ValueError, match="suffix"):
        write_video(frames, tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "none.webm")


def test_demo_run_builds(tmp_path: Path) -> None:
    run = write_demo_run(tmp_path / "runs" / "vlm" / "demo-20250101-000000", video=False)
    index = build_gallery([run])
    assert_links_resolve(index)
    assert "<b>seed</b> 0" in index.read_text()
