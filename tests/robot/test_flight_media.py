"""robot.flight.media: the action-grid overlay on the camera image, the flight video and the top-down map."""

from __future__ import annotations

import numpy as np
import pytest

from robot.flight.media import flight_video, overlay_frame, topdown_plot

K = 3
SCALE = 4


def _image(seed: int = 0) -> np.ndarray:
    """A mid-grey 64x64 camera image with mild noise (no colour bias toward red or green)."""
    rng = np.random.default_rng(seed)
    return (110 + rng.integers(0, 30, size=(64, 64, 3))).astype(np.uint8)


def _cell(arr: np.ndarray, action: int, k: int = K, margin: int = 0) -> np.ndarray:
    """The pixels of cell `action` in an overlay of a 64x64 image upscaled SCALE times (optionally inset)."""
    h, w = arr.shape[:2]
    xs = np.rint(np.linspace(0, w, k + 1)).astype(int)
    ys = np.rint(np.linspace(0, h, k + 1)).astype(int)
    r, c = divmod(action, k)
    return arr[ys[r] + margin:ys[r + 1] - margin, xs[c] + margin:xs[c + 1] - margin]


def test_overlay_shape_dtype_and_input_untouched():
    img = _image()
    before = img.copy()
    out = overlay_frame(img, K, 4, values=np.linspace(0, 1, K * K), caption="step 3")
    assert out.shape == (64 * SCALE, 64 * SCALE, 3) and out.dtype == np.uint8
    assert out is not img and not np.shares_memory(out, img)
    np.testing.assert_array_equal(img, before)
    # scale 1 too must hand back a new array, and leave the input alone
    out1 = overlay_frame(img, K, 0, scale=1)
    assert out1.shape == img.shape and not np.shares_memory(out1, img)
    np.testing.assert_array_equal(img, before)


def test_overlay_marks_the_chosen_cell_only():
    img = _image()
    plain = overlay_frame(img, K, 4)  # the centre cell: its mark stays inside cell 4
    top_left = overlay_frame(img, K, 0).astype(int)
    bottom_right = overlay_frame(img, K, 8).astype(int)
    diff_0 = np.abs(top_left - plain).sum(axis=2)
    diff_8 = np.abs(bottom_right - plain).sum(axis=2)
    # Choosing cell 0 draws its outline there; cell 8 stays as it was, and vice versa.
    assert (_cell(diff_0, 0) > 60).sum() > 100
    assert (_cell(diff_0, 8) > 0).sum() == 0
    assert (_cell(diff_8, 8) > 60).sum() > 100
    assert (_cell(diff_8, 0) > 0).sum() == 0
    # Cells off the arrow's path (centre -> corner) are untouched by either choice.
    for untouched in (2, 6):
        assert (_cell(diff_0, untouched) > 0).sum() == 0
        assert (_cell(diff_8, untouched) > 0).sum() == 0
    # The outline hugs the cell's border: its 3-px rim changes almost everywhere, its interior mostly not.
    cell = _cell(diff_0, 0) > 60
    rim = np.ones(cell.shape, dtype=bool)
    rim[3:-3, 3:-3] = False
    assert cell[rim].mean() > 0.9
    assert cell[~rim].mean() < 0.1


def test_overlay_points_an_arrow_from_the_centre_to_the_cell():
    img = _image()
    plain = overlay_frame(img, K, 4).astype(int)
    centre = np.array([64 * SCALE // 2] * 2)
    target = np.array([64 * SCALE // (2 * K)] * 2)  # centre of cell 0 (top-left)
    y, x = np.rint(centre + 0.3 * (target - centre)).astype(int)  # on the way, inside the centre cell
    near = (slice(y - 1, y + 2), slice(x - 1, x + 2))
    toward_0 = np.abs(overlay_frame(img, K, 0).astype(int) - plain).sum(axis=2)
    toward_8 = np.abs(overlay_frame(img, K, 8).astype(int) - plain).sum(axis=2)
    assert toward_0[near].max() > 60  # the arrow to the top-left cell passes here
    assert toward_8[near].max() == 0  # the one to the bottom-right cell does not


def test_overlay_draws_a_grid():
    img = np.full((64, 64, 3), 100, dtype=np.uint8)
    out = overlay_frame(img, K, 4).astype(int)
    x = int(round(64 * SCALE / K))  # first inner vertical grid line
    row = 10  # far from the centre cell's outline and arrow
    assert out[row, x].sum() > out[row, x + 8].sum() + 30  # lighter line (white, semi-transparent)
    assert out[row, x].max() < 250  # ... but not opaque white


def test_values_tint_low_cells_red_and_high_cells_green():
    img = _image()
    values = np.full(K * K, 0.5)
    values[2], values[6] = 0.0, 1.0
    out = overlay_frame(img, K, 4, values=values).astype(float)
    low = _cell(out, 2, margin=6).reshape(-1, 3).mean(axis=0)
    high = _cell(out, 6, margin=6).reshape(-1, 3).mean(axis=0)
    assert low[0] - low[1] > 40  # red over green in the low-value cell
    assert high[1] - high[0] > 40  # green over red in the high-value cell
    assert low[0] > high[0] + 40 and high[1] > low[1] + 40
    # A (k, k) value map means the same as the flat one (row-major, like the action index).
    np.testing.assert_array_equal(overlay_frame(img, K, 4, values=values.reshape(K, K)), out.astype(np.uint8))
    # The values are written in the cells: two different texts give two different overlays.
    other = values.copy()
    other[2] = 0.01  # same tint to within rounding, different digits
    diff = np.abs(overlay_frame(img, K, 4, values=other).astype(int) - out.astype(int)).sum(axis=2)
    assert (_cell(diff, 2) > 60).sum() > 5


def test_caption_draws_a_dark_box_top_left():
    img = np.full((64, 64, 3), 200, dtype=np.uint8)
    plain = overlay_frame(img, K, 8).astype(int)
    captioned = overlay_frame(img, K, 8, caption="v 0.93").astype(int)
    corner = captioned[2:12, 2:30]
    assert corner.mean() < plain[2:12, 2:30].mean() - 60  # dark box with light text
    assert (captioned[:, 128:] == plain[:, 128:]).all()  # nothing else changes


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((64, 64), np.uint8)}, "image must be"),
        ({"image": np.zeros((64, 64, 4), np.uint8)}, "image must be"),
        ({"image": np.zeros((64, 64, 3), np.float32)}, "uint8"),
        ({"k": 0}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"action": -1}, "action"),
        ({"action": K * K}, "action"),
        ({"values": np.zeros(K * K + 1)}, "values"),
        ({"values": np.full(K * K, np.nan)}, "values"),
        ({"scale": 0}, "scale"),
    ],
)
def test_overlay_rejects_bad_arguments(kwargs, match):
    args = {"image": _image(), "k": K, "action": 0, "values": None, "scale": SCALE}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        overlay_frame(**args)


def test_flight_video_writes_webm(tmp_path):
    frames = [_image(i) for i in range(4)]
    out = flight_video(frames, [0, 4, 8, 4], K, tmp_path / "videos" / "flight.webm",
                       values=[np.linspace(0, 1, K * K)] * 3 + [None], captions=[f"step {i}" for i in range(4)])
    assert out == tmp_path / "videos" / "flight.webm"
    data = out.read_bytes()
    assert len(data) > 100 and data[:4] == bytes.fromhex("1A45DFA3")  # EBML magic: Matroska/WebM
    assert [p.name for p in out.parent.iterdir()] == ["flight.webm"]  # no temporary left behind


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frames": [], "actions": []}, "no frames"),
        ({"actions": [0]}, "actions"),
        ({"values": [None]}, "value"),
        ({"captions": ["a", "b", "c"]}, "captions"),
        ({"actions": [0, K * K]}, "action"),
    ],
)
def test_flight_video_rejects_mismatches(tmp_path, kwargs, match):
    args = {"frames": [_image(0), _image(1)], "actions": [0, 1], "k": K, "out": tmp_path / "bad.webm"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        flight_video(**args)
    assert not (tmp_path / "bad.webm").exists()


def _png(path):
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB")).astype(int)


RECTS = [
    ("wall", 0.0, 3.0, 6.0, 0.1, 0.0),
    ("wall", 0.0, -3.0, 6.0, 0.1, 0.0),
    ("furniture", 2.0, 0.5, 0.6, 0.4, 0.7),
    ("other", -2.0, -1.0, 0.3, 0.3, 0.0),
]


def test_topdown_plot_writes_a_png(tmp_path):
    traj = np.c_[np.linspace(-5.0, 1.5, 40), 0.3 * np.sin(np.linspace(0.0, 3.0, 40))]
    out = topdown_plot(RECTS, tmp_path / "maps" / "flight.png", trajectory=traj, collision=(1.5, 0.0),
                       start=(-5.0, 0.0, 0.0), title="episode 1")
    assert out == tmp_path / "maps" / "flight.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["flight.png"]  # no temporary left behind
    rgb = _png(out)
    assert rgb.shape[0] > 0 and rgb.shape[1] > 0
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    blue = (rgb[..., 2] > 150) & (rgb[..., 0] < 80)
    assert red.sum() > 20  # the collision X (and its legend marker)
    assert blue.sum() > 100  # the trajectory


def test_topdown_plot_draws_the_world_without_a_flight(tmp_path):
    out = topdown_plot(RECTS, tmp_path / "world.png")
    rgb = _png(out)
    wall = (np.abs(rgb - np.array([0x4A, 0x4A, 0x4A])).max(axis=2) < 12)
    furniture = (np.abs(rgb - np.array([0xC8, 0x78, 0x2A])).max(axis=2) < 12)
    assert wall.sum() > 200 and furniture.sum() > 100


def test_topdown_plot_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="trajectory"):
        topdown_plot(RECTS, tmp_path / "bad.png", trajectory=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="trajectory"):
        topdown_plot(RECTS, tmp_path / "bad.png", trajectory=np.zeros(10))
    with pytest.raises(ValueError, match="kind"):
        topdown_plot([("sofa", 0.0, 0.0, 1.0, 1.0, 0.0)], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
