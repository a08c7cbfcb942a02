"""The classic vectorizer baseline: scenes drawn with OpenCV come back as SVG that renders close to them."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import cairosvg
import cv2
import numpy as np
import pytest
from PIL import Image

from svg_rlrf.vectorize import VectorizeConfig, main, vectorize

SIZE = 112
FRAME = (0, 0, 64, 64)
RED, BLUE, GREEN, YELLOW, PURPLE, PINK = (230, 25, 75), (67, 99, 216), (60, 180, 75), (255, 225, 25), \
    (145, 30, 180), (250, 190, 212)


def _canvas(colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), colour, np.uint8)


def _scenes() -> dict[str, np.ndarray]:
    rect = _canvas()
    cv2.rectangle(rect, (20, 30), (80, 70), RED, -1)
    circle = _canvas()
    cv2.circle(circle, (56, 56), 30, BLUE, -1, cv2.LINE_AA)
    ring = _canvas()
    cv2.circle(ring, (56, 56), 40, GREEN, -1, cv2.LINE_AA)
    cv2.circle(ring, (56, 56), 18, (255, 255, 255), -1, cv2.LINE_AA)
    overlap = _canvas()
    cv2.rectangle(overlap, (10, 10), (70, 70), YELLOW, -1)
    cv2.circle(overlap, (70, 70), 25, PURPLE, -1, cv2.LINE_AA)
    return {"rect": rect, "circle": circle, "ring": ring, "overlap": overlap}


COLOURS = {"rect": {RED}, "circle": {BLUE}, "ring": {GREEN}, "overlap": {YELLOW, PURPLE}}


def _render(svg: str) -> np.ndarray:
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=SIZE, output_height=SIZE)
    with Image.open(io.BytesIO(png)) as im:
        rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a / 255.0 - b / 255.0) ** 2).mean())


def _fills(svg: str) -> set[tuple[int, ...]]:
    return {tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in re.findall(r'fill="#([0-9a-f]{6})"', svg)}


def _numbers(svg: str) -> list[float]:
    return [float(v) for d in re.findall(r' d="([^"]*)"', svg) for v in re.findall(r"-?[\d.]+", d)]


@pytest.mark.parametrize("curves", [False, True])
@pytest.mark.parametrize("name", ["rect", "circle", "ring", "overlap"])
def test_scenes_render_back_close_to_the_image_in_their_colours(name, curves):
    image = _scenes()[name]
    svg = vectorize(image, viewbox=FRAME, config=VectorizeConfig(curves=curves))
    assert _mse(_render(svg), image) < 0.01
    assert _fills(svg) == COLOURS[name]  # flat fills come back exactly; no antialiasing slivers
    assert svg.count("<path") == len(COLOURS[name])
    fine = vectorize(image, viewbox=FRAME, config=VectorizeConfig(curves=curves, decimals=1))
    assert _mse(_render(fine), image) < 0.002


def test_the_hole_of_a_ring_stays_white_and_the_small_shape_on_top_survives():
    back = _render(vectorize(_scenes()["ring"], viewbox=FRAME))
    assert (back[56, 56] == 255).all()
    assert np.abs(back[56, 56 + 28].astype(int) - GREEN).max() < 8
    svg = vectorize(_scenes()["overlap"], viewbox=FRAME)
    assert svg.index("#ffe119") < svg.index("#911eb4")  # the larger layer first
    back = _render(svg)
    assert np.abs(back[62, 62].astype(int) - PURPLE).max() < 8  # inside both the square and the circle
    assert np.abs(back[20, 20].astype(int) - YELLOW).max() < 8


def test_a_layer_covers_its_holes_that_shapes_on_top_fill():
    image = _canvas()
    cv2.rectangle(image, (10, 10), (100, 100), RED, -1)
    cv2.circle(image, (56, 56), 20, BLUE, -1, cv2.LINE_AA)
    svg = vectorize(image, viewbox=FRAME)
    red = re.search(r'd="([^"]*)" fill="#e6194b"', svg).group(1)
    assert red.count("M") == 1  # a plain square under the circle, no hole cut for it
    assert _mse(_render(svg), image) < 0.01


def test_antialiased_rims_and_specks_make_no_shapes_of_their_own():
    image = _canvas()
    cv2.line(image, (5, 100), (100, 95), (0, 0, 0), 2, cv2.LINE_AA)  # grey rims, between black and white
    cv2.circle(image, (30, 30), 6, PINK, -1, cv2.LINE_AA)  # a light colour near those greys
    cv2.ellipse(image, (50, 60), (40, 20), 30, 0, 360, BLUE, -1, cv2.LINE_AA)
    image[5, 100] = image[8, 8] = (0, 0, 0)  # single-pixel specks
    svg = vectorize(image, viewbox=FRAME)
    assert _fills(svg) == {(0, 0, 0), PINK, BLUE}
    pink = re.search(r'd="([^"]*)" fill="#fabed4"', svg).group(1)
    assert pink.count("M") == 1
    assert re.search(r'd="([^"]*)" fill="#000000"', svg).group(1).count("M") == 1
    assert _mse(_render(svg), image) < 0.01


def test_coordinates_are_in_the_requested_frame_and_short():
    svg = vectorize(_scenes()["circle"], viewbox=FRAME)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox") == "0 0 64 64"
    numbers = _numbers(svg)
    assert min(numbers) >= 0 and max(numbers) <= 64 and all(v == int(v) for v in numbers)
    assert len(svg) < 300
    moved = vectorize(_scenes()["circle"], viewbox=(-32, -32, 64, 64))
    assert ET.fromstring(moved).get("viewBox") == "-32 -32 64 64"
    assert _numbers(moved) == [v - 32 for v in numbers]
    native = vectorize(_scenes()["rect"])
    assert ET.fromstring(native).get("viewBox") == "0 0 112 112"
    assert sorted(set(_numbers(native))) == [20, 30, 71, 81]  # the pixel edges of the rectangle


def test_curves_are_smooth_paths_that_still_parse():
    for decimals in (0, 1):
        svg = vectorize(_scenes()["ring"], viewbox=FRAME, config=VectorizeConfig(curves=True, decimals=decimals))
        ET.fromstring(svg)
        assert "Q" in svg and "L" not in svg
    assert "T" in svg  # at a fine rounding, a chain of smooth quadratics
    rect = vectorize(_scenes()["rect"], viewbox=FRAME, config=VectorizeConfig(curves=True))
    assert "Q" not in rect and "T" not in rect  # corners stay sharp


def test_blank_image_gives_an_empty_valid_document():
    for image, background in ((_canvas(), "white"), (_canvas((20, 40, 60)), "auto"), (_canvas((0, 0, 0)), "black")):
        svg = vectorize(image, viewbox=FRAME, config=VectorizeConfig(background=background))
        root = ET.fromstring(svg)
        assert list(root) == [] and root.get("viewBox") == "0 0 64 64"


def test_background_auto_and_none_on_a_dark_image():
    image = _canvas((0, 0, 0))
    cv2.circle(image, (56, 56), 30, YELLOW, -1, cv2.LINE_AA)
    auto = vectorize(image, viewbox=FRAME, config=VectorizeConfig(background="auto"))
    assert _fills(auto) == {YELLOW}
    everything = vectorize(image, viewbox=FRAME, config=VectorizeConfig(background="none"))
    assert everything.index("#000000") < everything.index("#ffe119")
    assert _mse(_render(everything), image) < 0.01


def test_deterministic():
    image = _scenes()["overlap"]
    for cfg in (VectorizeConfig(), VectorizeConfig(curves=True, decimals=2)):
        assert vectorize(image, viewbox=FRAME, config=cfg) == vectorize(image.copy(), viewbox=FRAME, config=cfg)


@pytest.mark.parametrize("bad, message", [(np.zeros((8, 8), np.uint8), "H x W x 3"),
                                          (np.zeros((8, 8, 4), np.uint8), "H x W x 3"),
                                          (np.zeros((8, 8, 3), np.float32), "uint8"),
                                          (np.zeros((0, 8, 3), np.uint8), "non-empty")])
def test_bad_input_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        vectorize(bad)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="viewbox"):
        vectorize(_canvas(), viewbox=(0, 0, 0, 64))
    with pytest.raises(ValueError, match="colours"):
        VectorizeConfig(colours=0)
    with pytest.raises(ValueError, match="background"):
        VectorizeConfig(background="purple")


def test_command_line(tmp_path, capsys):
    Image.fromarray(_scenes()["rect"]).save(tmp_path / "rect.png")
    main([str(tmp_path / "rect.png"), "--viewbox", "0 0 64 64", "--colours", "4", "--out", str(tmp_path / "r.svg")])
    assert ET.fromstring((tmp_path / "r.svg").read_text()).get("viewBox") == "0 0 64 64"
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.svg")
    main([str(tmp_path / "rect.png"), "--curves"])
    assert capsys.readouterr().out.startswith("<svg")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "broken.png")])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err
