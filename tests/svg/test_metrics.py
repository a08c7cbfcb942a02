"""svg metrics (svg_rlrf.metrics): maximal on identical images, RLRF's pixel score as 2 x corr - 1, the blank
canvas, half a shape, the right shape in the wrong colour (which the pixel and edge scores pay for and the
colour overlap does not), SSIM's blank-canvas baseline, the code-length term, shape counting on odd code."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from svg_rlrf import metrics as m

RED = (230, 25, 75)
BLUE = (67, 99, 216)
GREEN = (60, 180, 75)
PINK = (250, 190, 212)  # red mixed with white: a colour of its own here, not an antialiased edge
BLACK = (0, 0, 0)
PAIR_FNS = [m.pixel_l2_score, m.edge_l2_score, m.ssim, m.mse, m.edge_l2, m.area_ratio, m.colour_iou,
            m.colour_accuracy, m.colour_precision]


def canvas(size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), 255, np.uint8)


def rect(colour=RED, x1: int = 47, size: int = 64) -> np.ndarray:
    """A 40 x 24 rectangle (or its left part up to column x1) on white."""
    img = canvas(size)
    cv2.rectangle(img, (8, 8), (x1, 31), colour, -1)
    return img


def scene() -> np.ndarray:
    """Flat fills and antialiased edges: a rectangle, two overlapping antialiased discs, a thin diagonal line."""
    img = canvas(112)
    cv2.rectangle(img, (80, 5), (105, 30), PINK, -1)
    cv2.circle(img, (40, 40), 25, RED, -1, cv2.LINE_AA)
    cv2.circle(img, (70, 70), 25, BLUE, -1, cv2.LINE_AA)
    cv2.line(img, (5, 100), (100, 5), GREEN, 1, cv2.LINE_AA)
    return img


# ------------------------------------------------------------------------------------------ identity


@pytest.mark.parametrize("make", [rect, scene])
def test_identical_images_score_the_maximum_on_every_metric(make):
    img = make()
    other = img.copy()
    assert m.pixel_l2_score(img, other) == pytest.approx(1.0)
    assert m.edge_l2_score(img, other) == pytest.approx(1.0)
    assert m.ssim(img, other) == pytest.approx(1.0)
    assert m.mse(img, other) == 0.0 and m.edge_l2(img, other) == 0.0
    assert m.colour_iou(img, other) == 1.0 and m.colour_accuracy(img, other) == 1.0
    assert m.colour_precision(img, other) == 1.0  # antialiased edges are not judged
    assert m.area_ratio(img, other) == 1.0


def test_every_metric_returns_a_python_float_and_is_deterministic():
    pred, target = rect(BLUE, x1=30), scene()[:64, :64].copy()
    for fn in PAIR_FNS:
        first = fn(pred, target)
        assert type(first) is float and fn(pred, target) == first, fn.__name__
    assert type(m.length_score(10, 12)) is float and type(m.code_efficiency([3], [4])) is float


def test_noise_without_flat_colours_still_scores_one_against_itself():
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert len(m.dominant_colours(noise)) == 0
    assert m.colour_iou(noise, noise.copy()) == 1.0
    assert m.colour_iou(m.blank_like(noise), noise) == 0.0


# ---------------------------------------------------------------------------------- RLRF pixel score


def test_pixel_l2_score_is_two_correlations_minus_one():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        mix = rng.uniform(0.3, 0.9)
        b = np.clip(mix * a + (1 - mix) * rng.integers(0, 256, a.shape), 0, 255).astype(np.uint8)
        corr = np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1]
        assert m.pixel_l2_score(a, b) == pytest.approx(2 * corr - 1, abs=1e-9)
        assert m.pixel_l2_score(a, 255 - a) == -1.0  # corr = -1: 2 x corr - 1 = -3, clipped


def test_znorm_is_zero_mean_unit_std_and_zero_on_a_uniform_image():
    z = m.znorm(rect())
    assert z.dtype == np.float32 and z.shape == (64, 64, 3)
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, abs=1e-5)
    blank = m.znorm(canvas())
    assert np.isfinite(blank).all() and not blank.any()


def test_edge_map_is_a_soft_float_map_and_empty_on_a_blank_canvas():
    edges = m.edge_map(rect())
    assert edges.dtype == np.float32 and edges.shape == (64, 64)
    assert float(edges.min()) >= 0.0 and float(edges.max()) <= 1.0 and edges[31, 8] > 0.5
    assert not m.edge_map(canvas()).any()


# ------------------------------------------------------------------------------------ blank and half


def test_a_blank_prediction_scores_zero_on_the_rewards_and_nothing_drawn():
    target = scene()
    blank = m.blank_like(target)
    assert blank.dtype == np.uint8 and blank.shape == target.shape and (blank == 255).all()
    assert m.pixel_l2_score(blank, target) == 0.0 and m.edge_l2_score(blank, target) == 0.0
    assert m.colour_iou(blank, target) == 0.0 and m.colour_accuracy(blank, target) == 0.0
    assert m.area_ratio(blank, target) == 0.0
    assert m.mse(blank, target) > 0.05 and m.edge_l2(blank, target) > 0.0


def test_half_the_shape_is_half_the_area_and_half_the_colour_overlap():
    target, half = rect(), rect(x1=27)  # columns 8..27 of 8..47
    assert m.area_ratio(half, target) == pytest.approx(0.5)
    assert m.colour_iou(half, target) == pytest.approx(0.5)
    assert m.colour_accuracy(half, target) == pytest.approx(0.5)


def test_area_ratio_of_a_blank_target_is_one_or_infinite():
    assert m.area_ratio(canvas(), canvas()) == 1.0
    assert m.area_ratio(rect(), canvas()) == math.inf
    assert m.colour_iou(canvas(), canvas()) == 1.0 and m.colour_iou(rect(), canvas()) == 0.0


# --------------------------------------------------------------------------------------- the hedges


def test_right_shape_wrong_colour_is_paid_by_pixel_and_edge_scores_but_not_by_colour_iou():
    target = rect(RED)
    for wrong in (BLACK, (128, 0, 0), GREEN):
        pred = rect(wrong)
        assert m.edge_l2_score(pred, target) == pytest.approx(1.0)  # same outline: full edge reward
        assert m.pixel_l2_score(pred, target) > m.pixel_l2_score(m.blank_like(target), target)  # > 0
        assert m.colour_iou(pred, target) == 0.0 and m.colour_accuracy(pred, target) == 0.0
        assert m.area_ratio(pred, target) == 1.0
    # dark shapes correlate with the target's intensities: RLRF's pixel reward is high for a black rectangle
    assert m.pixel_l2_score(rect(BLACK), target) > 0.6
    assert m.pixel_l2_score(rect((128, 0, 0)), target) > 0.85


def test_covering_the_canvas_in_the_target_colour_gets_little_colour_iou():
    target = rect(RED)
    cover = np.empty_like(target)
    cover[:] = RED
    assert m.colour_accuracy(cover, target) == 1.0  # every target pixel has its colour...
    assert m.area_ratio(cover, target) > 4.0  # ...because everything is drawn
    assert m.colour_iou(cover, target) == pytest.approx(40 * 24 / 64**2)


def test_colour_precision_judges_the_colours_drawn_wherever_they_are():
    target = rect(RED)
    moved = canvas()
    cv2.rectangle(moved, (8, 36), (47, 59), RED, -1)  # the right colour, below the target's place
    assert m.colour_accuracy(moved, target) == 0.0 and m.colour_precision(moved, target) == 1.0
    assert m.colour_precision(rect((128, 128, 128)), target) == 0.0  # a grey hedge in the right place
    half_grey = rect(RED)
    cv2.rectangle(half_grey, (28, 8), (47, 31), (128, 128, 128), -1)
    assert m.colour_precision(half_grey, target) == pytest.approx(0.5, abs=0.03)
    assert math.isnan(m.colour_precision(canvas(), target))  # nothing drawn: no colour to judge
    assert m.colour_precision(rect(), canvas()) == 0.0
    thin = canvas()
    cv2.line(thin, (5, 60), (60, 5), RED, 1, cv2.LINE_AA)  # no flat pixel: every drawn pixel is judged
    assert 0.0 < m.colour_precision(thin, target) < 1.0


def test_ssim_of_a_blank_canvas_on_sparse_shapes_is_high():
    target = canvas(112)
    cv2.circle(target, (30, 30), 6, RED, -1)
    cv2.rectangle(target, (70, 60), (80, 75), BLUE, -1)
    blank = m.blank_like(target)
    assert m.ssim(blank, target) > 0.8  # the blank baseline problem: SSIM cannot tell "drew nothing"
    assert m.pixel_l2_score(blank, target) == 0.0 and m.colour_iou(blank, target) == 0.0


# ------------------------------------------------------------------------------------ colour finding


def test_dominant_colours_ignore_antialiased_edges_and_keep_thin_strokes():
    colours = {tuple(int(v) for v in c) for c in m.dominant_colours(scene())}
    assert colours == {RED, BLUE, PINK, GREEN}


def test_colour_iou_tolerates_a_near_colour_but_not_a_far_one():
    target = rect(RED)
    assert m.colour_iou(rect((222, 35, 80)), target) == 1.0
    assert m.colour_iou(rect((255, 0, 0)), target) == 0.0  # 83 RGB units away: beyond the default tolerance
    assert m.colour_iou(rect((255, 0, 0)), target, tol=90) == 1.0


# ------------------------------------------------------------------------------------------------ code


def test_length_score_is_flat_to_half_the_reference_then_quadratic():
    assert m.length_score(0, 100) == 1.0 and m.length_score(50, 100) == 1.0
    assert m.length_score(51, 100) == pytest.approx(1 - 0.01**2)
    assert m.length_score(100, 100) == pytest.approx(0.75)
    assert m.length_score(150, 100) == pytest.approx(0.0)
    assert m.length_score(191, 100) > -1.0 and m.length_score(200, 100) == -1.0  # clipped
    assert m.length_score(0, 0) == 1.0 and m.length_score(1, 0) == 0.75  # a reference of length 0 counts as 1
    with pytest.raises(ValueError, match="pred_len"):
        m.length_score(-1, 10)


def test_shape_count_score_costs_a_missing_shape_as_much_as_a_spurious_one():
    assert m.shape_count_score(2, 2) == 1.0
    assert m.shape_count_score(1, 2) == m.shape_count_score(3, 2) == 0.5
    assert m.shape_count_score(0, 2) == 0.0 and m.shape_count_score(2, 3) == pytest.approx(2 / 3)
    assert m.shape_count_score(9, 2) == -1.0  # clipped
    assert m.shape_count_score(1, 0) == 1.0 and m.shape_count_score(0, 0) == 0.0  # no reference shape counts as 1
    with pytest.raises(ValueError, match="pred_shapes"):
        m.shape_count_score(-1, 2)


@pytest.mark.parametrize("code, count", [
    ('<svg><g><g transform="x"><rect/><circle r="2"/></g><path d="M0 0"/></g></svg>', 3),
    ('<svg><g><ellipse/><line/><polyline points="1"/><polygon points="1"/></g><g><g><g><rect/></g></g></g>', 5),
    ('<svg><rect x="1" y="2"/><circle cx="3', 2),  # truncated mid-attribute
    ("<svg><rect></rect><Circle/><svg:path d=''/></svg>", 3),  # closing tags no, case and prefixes yes
    ("<svg><defs><linearGradient id='g'/><pattern/></defs><!-- <rect/> --><lines/><path-like/></svg>", 0),
    ("<svg><!-- unclosed comment <rect/>", 0),
    ("<<<< >>> rect circle", 0),
    ("", 0),
    (None, 0),
    (42, 0),
])
def test_count_shapes_on_nested_and_malformed_code(code, count):
    assert m.count_shapes(code) == count


def test_code_efficiency_is_the_negated_mean_excess_over_the_reference():
    assert m.code_efficiency(120, 100) == -20.0
    assert m.code_efficiency([90, 130], [100, 100]) == -10.0
    assert m.code_efficiency([80], [100]) == 20.0
    with pytest.raises(ValueError, match="token counts"):
        m.code_efficiency([1, 2], [1])


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", PAIR_FNS)
def test_a_shape_mismatch_raises_naming_both_shapes(fn):
    with pytest.raises(ValueError, match=r"\(64, 64, 3\).*\(32, 48, 3\)"):
        fn(canvas(), np.full((32, 48, 3), 255, np.uint8))


def test_non_rgb_or_non_uint8_images_are_refused():
    with pytest.raises(ValueError, match=r"H x W x 3.*\(64, 64\)"):
        m.mse(np.zeros((64, 64), np.uint8), canvas())
    with pytest.raises(ValueError, match="float64"):
        m.foreground_mask(np.ones((8, 8, 3)))


def test_per_colour_overlap_counts_a_small_shape_as_much_as_a_large_one():
    target = np.full((64, 64, 3), 255, np.uint8)
    cv2.rectangle(target, (4, 4), (50, 50), (230, 25, 75), -1)
    cv2.rectangle(target, (54, 54), (60, 60), (67, 99, 216), -1)
    big_only = target.copy()
    big_only[54:61, 54:61] = 255
    assert m.colour_iou(big_only, target) > 0.95  # the small shape is 2% of the drawn area
    assert m.colour_iou(big_only, target, per_colour=True) == pytest.approx(0.5, abs=0.02)
    assert m.colour_iou(target, target, per_colour=True) == pytest.approx(1.0)
