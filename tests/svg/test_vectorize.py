"""The classic vectorizer baseline: scenes drawn with OpenCV come back as SVG that renders close to them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from svg_rlrf.metrics import colour_iou, mse
from svg_rlrf.render import render_one
from svg_rlrf.vectorize import VectorizeConfig, main, vectorize

SIZE = 112
FRAME = (0, 0, 64, 64)


def _canvas() -> np.ndarray:
    return np.full((SIZE, SIZE, 3), 255, np.uint8)


def _scenes() -> dict[str, np.ndarray]:
    rect = _canvas()
    cv2.rectangle(rect, (20, 30), (80, 70), (230, 25, 75), -1)
    circle = _canvas()
    cv2.circle(circle, (56, 56), 30, (67, 99, 216), -1, cv2.LINE_AA)
    ring = _canvas()
    cv2.circle(ring, (56, 56), 40, (60, 180, 75), -1, cv2.LINE_AA)
    cv2.circle(ring, (56, 56), 18, (255, 255, 255), -1, cv2.LINE_AA)
    overlap = _canvas()
    cv2.rectangle(overlap, (10, 10), (70, 70), (255, 225, 25), -1)
    cv2.circle(overlap, (70, 70), 25, (145, 30, 180), -1, cv2.LINE_AA)
    return {"rect": rect, "circle": circle, "ring": ring, "overlap": overlap}


def _render(svg: str) -> np.ndarray:
    result = render_one(svg, SIZE, viewbox=FRAME)
    assert result.ok, result.reason
    return result.image


@pytest.mark.parametrize("name", ["rect", "circle", "ring", "overlap"])
def test_scenes_render_back_close_to_the_image(name):
    image = _scenes()[name]
    svg = vectorize(image, viewbox=FRAME)
    back = _render(svg)
    assert mse(back, image) < 0.01
    assert colour_iou(back, image) > 0.85


def test_the_hole_of_a_ring_stays_white():
    back = _render(vectorize(_scenes()["ring"], viewbox=FRAME))
    assert (back[56, 56] > 240).all()
    assert back[56, 56 + 28].tolist() != [255, 255, 255]


def test_coordinates_are_in_the_requested_frame_and_short():
    svg = vectorize(_scenes()["circle"], viewbox=FRAME)
    root = ET.fromstring(svg)
    assert root.get("viewBox") == "0 0 64 64"
    numbers = [float(t) for t in svg.split('d="')[1].split('"')[0].replace("M", " ").replace("Z", " ").split()]
    assert min(numbers) >= 0 and max(numbers) <= 64
    assert len(svg) < 600


def test_blank_image_gives_an_empty_valid_document():
    svg = vectorize(_canvas(), viewbox=FRAME)
    root = ET.fromstring(svg)
    assert list(root) == []


def test_deterministic():
    image = _scenes()["overlap"]
    assert vectorize(image, viewbox=FRAME) == vectorize(image.copy(), viewbox=FRAME)


@pytest.mark.parametrize("bad, message", [(np.zeros((8, 8), np.uint8), "H x W x 3"),
                                          (np.zeros((8, 8, 3), np.float32), "uint8"),
                                          (np.zeros((0, 8, 3), np.uint8), "H x W x 3")])
def test_bad_input_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        vectorize(bad)
    with pytest.raises(ValueError, match="colours"):
        VectorizeConfig(colours=0)


def test_command_line(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(_scenes()["rect"]).save(tmp_path / "rect.png")
    main([str(tmp_path / "rect.png"), "--viewbox", "0 0 64 64", "--out", str(tmp_path / "rect.svg")])
    assert ET.fromstring((tmp_path / "rect.svg").read_text()).get("viewBox") == "0 0 64 64"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "broken.png")])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err
