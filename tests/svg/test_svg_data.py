"""svg data: synthetic shapes (determinism, disjoint splits, renders, canvas bounds), folder normalisation
and rejects, the Font Awesome icon set, loading through the vlm loader, and ``rlab data svg``."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svg_rlrf.data import cli, folder, synthetic
from svg_rlrf.data.folder import FolderRejects, SvgReject, normalize_svg, write_from_dir
from svg_rlrf.data.icons import LICENCE, icon_dir, write_icons
from svg_rlrf.data.synthetic import LEVELS, PALETTE, ink_fraction, synthetic_item, write_synthetic
from svg_rlrf.render import render_many
from vlm_rl.data.loader import load_split

C = 64
FRAME = (0.0, 0.0, float(C), float(C))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


def _render(codes: list[str], size: int = 112, viewbox: tuple | None = FRAME) -> list[np.ndarray]:
    results = render_many(codes, size, viewbox=viewbox)
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    return [r.image for r in results]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "shapes", 12, 6, 6, seed=3, progress=False)


def test_module_doctests():
    for module in (synthetic, folder):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


# -------------------------------------------------------------------------------------- synthetic


def test_items_are_a_pure_function_of_seed_split_and_index():
    first = [synthetic_item(0, "train", k) for k in range(9)]
    assert [i.code for i in first] == [synthetic_item(0, "train", k).code for k in range(9)]
    assert [i.code for i in first] != [synthetic_item(1, "train", k).code for k in range(9)]
    assert [i.code for i in first] != [synthetic_item(0, "test", k).code for k in range(9)]
    assert [i.meta["complexity"] for i in first] == [1, 2, 3] * 3


def test_written_dataset_is_deterministic(shapes, tmp_path):
    again = write_synthetic(tmp_path / "again", 12, 6, 6, seed=3, progress=False)
    assert _files(shapes) == _files(again)
    other = write_synthetic(tmp_path / "other", 12, 6, 6, seed=4, progress=False)
    assert _files(other)["train.jsonl"] != _files(shapes)["train.jsonl"]
    card = json.loads((shapes / "dataset.json").read_text())
    assert card["task"] == "svg" and card["canvas"] == C and card["splits"]["val"]["count"] == 6
    assert set(card["stats"]) == {"level1", "level2", "level3"}


def test_splits_are_disjoint_and_rows_load_with_the_vlm_loader(shapes):
    answers = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        rows, report = load_split(shapes, split)
        assert report.kept == n and not report.dropped, report.summary()
        answers[split] = [r["answer"] for r in rows]
        for row in rows:
            assert row["task"] == "svg" and row["question"] and Path(row["images"][0]).is_file()
            assert row["answer"].startswith(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {C} {C}">')
            assert row["meta"]["canvas"] == C and row["meta"]["n_shapes"] == len(row["meta"]["shapes"])
    every = [a for codes in answers.values() for a in codes]
    assert len(set(every)) == len(every)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_level_renders_non_blank_in_the_palette(level):
    items = [synthetic_item(7, "train", k, levels=(level,)) for k in range(12)]
    for item, image in zip(items, _render([i.code for i in items]), strict=True):
        assert ink_fraction(image) > 0.01, item.code
        assert set(item.meta["colours"]) <= set(PALETTE.values())
        assert item.meta["complexity"] == level
    n_shapes = [i.meta["n_shapes"] for i in items]
    assert {1: (1, 1), 2: (2, 3), 3: (3, 5)}[level] == (min(n_shapes), max(n_shapes))
    if level == 3:
        assert all(i.meta["transform"] and "path" in i.meta["shapes"] for i in items)
        assert any(re.search(r' d="M[^"]*[QC]', i.code) for i in items)


@pytest.mark.parametrize("decimals", [0, 1])
def test_shapes_stay_inside_the_canvas_on_the_grid(decimals):
    items = [synthetic_item(11, "val", k, decimals=decimals) for k in range(30)]
    geometry = re.compile(r' (?:x|y|x1|y1|x2|y2|cx|cy|r|rx|ry|width|height|points|d)="([^"]*)"')
    for item in items:  # numbers outside groups are canvas coordinates; every number is on the grid
        outside = geometry.findall(re.sub(r"<g [^>]*>.*?</g>", "", item.code))
        numbers = [float(v) for value in outside for v in re.findall(r"-?\d+(?:\.\d+)?", value)]
        assert numbers and all(0 <= v <= C for v in numbers), item.code
        for value in geometry.findall(item.code):
            assert all(len(part) <= decimals for part in re.findall(r"\.(\d+)", value)), value
    # render in a frame three times as large: nothing may show outside the middle square (groups included)
    wide = [i.code.replace(f'viewBox="0 0 {C} {C}"', f'viewBox="{-C} {-C} {3 * C} {3 * C}"') for i in items]
    for item, image in zip(items, _render(wide, 3 * C, viewbox=(-C, -C, 3 * C, 3 * C)), strict=True):
        ink = image.min(axis=-1) < 200
        ink[C - 1:2 * C + 1, C - 1:2 * C + 1] = False
        assert not ink.any(), item.code


def test_refuses_bad_arguments_and_existing_output(shapes, tmp_path):
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_synthetic(shapes, 1, 0, 0, progress=False)
    with pytest.raises(ValueError, match="levels"):
        write_synthetic(tmp_path / "x", 1, 0, 0, levels=(4,), progress=False)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


# ----------------------------------------------------------------------------------------- folder

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 512">{}</svg>'
GOOD = SVG.format('<path d="M64 64h384v384H64z"/>')
NOISY = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<!-- Created with Inkscape -->
<svg xmlns="http://www.w3.org/2000/svg" xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
     xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="128" height="128" viewBox="0 0 128 128" version="1.1" id="svg8" sodipodi:docname="noisy.svg">
  <title>A title</title><desc>words</desc>
  <metadata><rdf:RDF><rdf:Description about="x"/></rdf:RDF></metadata>
  <sodipodi:namedview id="base" pagecolor="#ffffff" inkscape:zoom="1.4"/>
  <g inkscape:label="Layer 1" inkscape:groupmode="layer" id="layer1">
    <circle id="c1" class="blob" cx="64.4" cy="64" r="32" data-name="x"
            style="fill:red;fill-opacity:1;stroke:none;-inkscape-font-specification:Sans"/>
  </g>
</svg>"""
ODD_VIEWBOX = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="-50 -25 200 100">'
               '<rect x="-50" y="-25" width="200" height="100" fill="#00f"/></svg>')


def test_normalize_strips_metadata_and_keeps_the_drawing():
    code = normalize_svg(NOISY, canvas=C, decimals=0)
    assert code == ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
                    '<circle cx="32" cy="32" r="16" fill="#ff0000"/></svg>')
    assert normalize_svg(GOOD) == ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
                                   '<path d="M8 8H56V56H8Z" fill="#000000"/></svg>')


def test_normalize_maps_an_odd_viewbox_into_the_canvas_centred():
    code = normalize_svg(ODD_VIEWBOX, canvas=C, decimals=0)
    assert code.endswith('viewBox="0 0 64 64"><rect x="0" y="16" width="64" height="32" fill="#0000ff"/></svg>')
    (image,) = _render([code])
    assert (image[40:70, 5:105] == (0, 0, 255)).all() and (image[:20] == 255).all() and (image[-20:] == 255).all()


@pytest.mark.parametrize("body, decimals", [
    ('<path d="m10 20 30 0 0 30-30 0z M60 60 a20 10 0 1090 0 q-40 50-90 0" fill="#3cb44b"/>', 1),
    ('<g transform="rotate(30 64 64)" stroke="#000" stroke-width="6" fill="none">'
     '<polyline points="10,10 110,20 60,110"/><ellipse cx="64" cy="64" rx="40" ry="20"/></g>', 0),
    ('<defs><linearGradient id="g"><stop offset="0" stop-color="red"/><stop offset="1" stop-color="blue"/>'
     '</linearGradient></defs><rect x="8" y="8" width="112" height="60" fill="url(#g)"/>', 0),
])
def test_normalized_code_renders_like_the_source(body, decimals):
    source = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128">{body}</svg>'
    code = normalize_svg(source, canvas=C, decimals=decimals)
    assert code.count('viewBox="0 0 64 64"') == 1
    ours, theirs = _render([code]) + _render([source], viewbox=None)
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 3.0, code


@pytest.mark.parametrize("text, reason", [
    (SVG.format('<image href="data:image/png;base64,iVBORw0KGgo=" width="10" height="10"/>'), "raster_image"),
    (SVG.format('<rect width="9" height="9" fill="url(data:image/png;base64,AAAA)"/>'), "raster_image"),
    ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 9 9">'
     '<use xlink:href="http://example.com/a.svg#x"/></svg>', "external_reference"),
    (SVG.format('<rect width="9" height="9" style="fill:url(http://example.com/p.svg#g)"/>'), "external_reference"),
    ("<svg><rect></svg>", "unparsable"),
    ('<!DOCTYPE svg [<!ENTITY a "aaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>', "doctype"),
    ('<html xmlns="http://www.w3.org/1999/xhtml"/>', "not_svg"),
    ('<svg xmlns="http://www.w3.org/2000/svg"><rect width="9" height="9"/></svg>', "no_size"),
    (SVG.format('<script>alert(1)</script>'), "active_content"),
    (SVG.format('<path d="M0 0 L 10"/>'), "bad_path"),
    ("<svg>" + "x" * 300 + "</svg>", "too_large"),
    ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><title>caf\xe9</title></svg>'.encode("latin-1"),
     "not_utf8"),
])
def test_normalize_rejects_with_a_reason(text, reason):
    with pytest.raises(SvgReject) as err:
        normalize_svg(text, max_bytes=300)
    assert err.value.reason == reason


@pytest.fixture(scope="module")
def svg_folder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    (src / "sub").mkdir()
    (src / "good.svg").write_text(GOOD)
    (src / "sub" / "circle.svg").write_text(SVG.format('<circle cx="256" cy="256" r="200" fill="#4363d8"/>'))
    (src / "copy.svg").write_text(GOOD)  # the same code as good.svg: a duplicate
    (src / "noisy.svg").write_text(NOISY)
    (src / "odd.svg").write_text(ODD_VIEWBOX)
    (src / "raster.svg").write_text(SVG.format('<image href="data:image/png;base64,iVBORw0KGgo=" width="9"/>'))
    (src / "external.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/'
                                      'xlink" viewBox="0 0 9 9"><use xlink:href="http://example.com/a.svg#x"/></svg>')
    (src / "broken.svg").write_text("<svg><rect></svg>")
    (src / "latin1.svg").write_bytes(SVG.format("<title>caf\xe9</title><rect width='99' height='9'/>")
                                     .encode("latin-1"))
    (src / "white.svg").write_text(SVG.format('<rect width="512" height="300" fill="#fff"/>'))
    (src / "notes.txt").write_text("not an svg")
    return src


def test_write_from_dir_counts_rejects_and_writes_loadable_splits(svg_folder, tmp_path):
    out = write_from_dir(svg_folder, tmp_path / "mine", canvas=C, image_size=56, val_frac=0.25, test_frac=0.25,
                         seed=1, progress=False)
    card = json.loads((out / "dataset.json").read_text())
    assert card["rejects"]["counts"] == {"raster_image": 1, "external_reference": 1, "unparsable": 1, "not_utf8": 1,
                                         "blank": 1, "duplicate": 1}
    assert card["rejects"]["files_seen"] == 10 and card["rejects"]["examples"]["blank"] == ["white.svg"]
    kept = {}
    for split in ("train", "val", "test"):
        rows, report = load_split(out, split)
        assert not report.dropped, report.summary()
        kept.update({r["meta"]["file"]: r for r in rows})
    assert set(kept) == {"good.svg", "sub/circle.svg", "noisy.svg", "odd.svg"} or set(kept) == {
        "copy.svg", "sub/circle.svg", "noisy.svg", "odd.svg"}
    assert kept["noisy.svg"]["answer"] == normalize_svg(NOISY, canvas=C)
    assert all(r["meta"]["canvas"] == C and r["task"] == "svg" for r in kept.values())
    again = write_from_dir(svg_folder, tmp_path / "again", canvas=C, image_size=56, val_frac=0.25, test_frac=0.25,
                           seed=1, progress=False)
    assert _files(out) == _files(again)
    limited = write_from_dir(svg_folder, tmp_path / "limited", canvas=C, image_size=56, val_frac=0, test_frac=1,
                             seed=1, limit=2, progress=False)
    assert len(_rows(limited, "test")) == 2 and not (limited / "train.jsonl").exists()


def test_folder_rejects_summary():
    rejects = FolderRejects(seen=3)
    rejects.add("blank", "a.svg")
    rejects.add("blank", "b.svg")
    assert rejects.summary() == "rejected 2 of 3 files: blank 2 (a.svg, b.svg)"


# ------------------------------------------------------------------------------------------ icons


def test_twenty_font_awesome_icons_load_and_render(tmp_path):
    out = write_icons(tmp_path / "fa", n=20, seed=0, canvas=C, image_size=112, progress=False)
    rows, report = load_split(out, "test")
    assert report.kept == 20 and not report.dropped
    images = _render([r["answer"] for r in rows])
    assert all(ink_fraction(im) > 0.01 for im in images)
    assert all(r["meta"]["source"] == "fontawesome-solid" and r["answer"].count("<path") >= 1 for r in rows)
    card = json.loads((out / "dataset.json").read_text())
    assert card["licence"] == LICENCE and "CC BY 4.0" in (out / "README.md").read_text()
    assert (icon_dir("solid") / "house.svg").is_file()


def test_icon_dir_names_the_missing_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install fontawesomefree"):
        icon_dir()
    with pytest.raises(ValueError, match="unknown Font Awesome style"):
        icon_dir("duotone")


# -------------------------------------------------------------------------------------------- CLI


def _app():
    import typer

    app = typer.Typer()
    app.command("svg")(cli.svg)
    app.command("other")(lambda: None)  # keep "svg" a subcommand, as under `rlab data`
    return app


def _invoke(*args: str):
    from typer.testing import CliRunner

    return CliRunner().invoke(_app(), ["svg", *args])


def test_cli_writes_each_source(tmp_path, svg_folder):
    result = _invoke("--synthetic", "--n", "6", "--n-val", "0", "--n-test", "3", "--levels", "1,3",
                     "--out", str(tmp_path / "syn"), "--image-size", "56")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(tmp_path / "syn")) and "wrote 9 items" in result.output
    assert {r["meta"]["complexity"] for r in _rows(tmp_path / "syn", "train")} == {1, 3}
    result = _invoke("--from-dir", str(svg_folder), "--out", str(tmp_path / "dir"), "--test-frac", "0.5")
    assert result.exit_code == 0, result.output
    assert "rejected 6 of 10 files" in result.output and "raster_image 1" in result.output
    result = _invoke("--icons", "fontawesome", "--n", "5", "--style", "regular", "--out", str(tmp_path / "fa"))
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "fa", "test")) == 5


@pytest.mark.parametrize("args, message", [
    ([], "exactly one source"),
    (["--synthetic", "--icons", "fontawesome"], "exactly one source"),
    (["--from-dir", "/nonexistent/folder"], "does not exist"),
    (["--icons", "noun-project"], "unknown icon set"),
    (["--synthetic", "--levels", "1,5"], "--levels"),
])
def test_cli_errors_exit_2(tmp_path, args, message):
    result = _invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_non_empty_out_and_a_folder_without_svgs(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    result = _invoke("--synthetic", "--n", "2", "--out", str(tmp_path / "full"))
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    result = _invoke("--from-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "no .svg files" in result.output


def test_cli_module_imports_light():
    code = ("import sys, svg_rlrf.data.cli; "
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'cairosvg', 'svg_rlrf.render') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
