"""sim.racetrack: loading, scaling, feasibility checks, local projection and input validation."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from sim.racetrack import (
    TrackError,
    TrackLimits,
    bundled_tracks,
    generate_centreline,
    load_track,
    read_centreline_csv,
)

HEADER = "# x_m,y_m,w_tr_right_m,w_tr_left_m"
WARN = TrackLimits(on_infeasible="warn")


def write_csv(path: Path, xy: np.ndarray, width: float = 1.0) -> Path:
    """A TUM-format CSV of `xy` with a constant width each side."""
    rows = [f"{x:.6f},{y:.6f},{width},{width}" for x, y in xy]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def stadium(straight: float, radius: float, step: float = 0.05) -> np.ndarray:
    """A counter-clockwise stadium: bottom straight left to right, right half-circle, top straight back."""
    line = np.arange(0.0, straight, step)
    arc = np.arange(0.0, math.pi, step / radius) - math.pi / 2
    return np.vstack(
        [
            np.column_stack([line, np.full_like(line, -radius)]),
            np.column_stack([straight + radius * np.cos(arc), radius * np.sin(arc)]),
            np.column_stack([straight - line, np.full_like(line, radius)]),
            np.column_stack([-radius * np.cos(arc), -radius * np.sin(arc)]),
        ]
    )


def circle(radius: float, n: int = 200) -> np.ndarray:
    theta = np.arange(n) * 2 * math.pi / n
    return np.column_stack([radius * np.cos(theta), radius * np.sin(theta)])


def perimeter(xy: np.ndarray) -> float:
    return float(np.sum(np.hypot(*(np.roll(xy, -1, axis=0) - xy).T)))


def test_bundled_tracks_are_listed():
    assert bundled_tracks() == ["Budapest", "Monza", "Spielberg", "Zandvoort"]


@pytest.mark.parametrize("name", ["Budapest", "Monza", "Spielberg", "Zandvoort"])
def test_bundled_track_loads_or_names_its_radius_problem(name):
    """At 55 m the real circuits' tightest corners are below the car's turning radius; the error says so."""
    try:
        track = load_track(name)
    except TrackError as err:
        assert str(err).startswith(f"{name}.csv at length 55 m")
        assert "min centre-line radius" in str(err) and "turning radius" in str(err)
    else:
        assert track.min_radius >= TrackLimits().min_turn_radius_m


def test_budapest_is_feasible_at_200m():
    """The shortest loop (10 m grid) at which a real circuit fits a 1.6 m corridor: Budapest at 200 m."""
    track = load_track("budapest", length_m=200.0)
    assert not track.problems and track.min_radius >= 0.8 and track.closest_approach >= 1.9


@pytest.mark.parametrize("source", ["monza", "MONZA", "Monza.csv", "monza.CSV"])
def test_bundled_names_are_case_insensitive(source):
    with pytest.warns(UserWarning, match="Monza.csv at length 55 m"):
        assert load_track(source, limits=WARN).name == "Monza"


@pytest.mark.parametrize("source", ["Zandvoort", "generated:4"])
@pytest.mark.parametrize("length_m", [40.0, 55.0, 80.0])
def test_scaled_length_and_uniform_spacing(source, length_m):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        track = load_track(source, length_m=length_m, limits=WARN)
    n = len(track.centre)
    assert abs(perimeter(track.centre) - length_m) < 0.01 * length_m
    assert track.length == pytest.approx(length_m) and track.ds * n == pytest.approx(length_m)
    assert track.s[0] == 0 and np.allclose(np.diff(track.s), track.ds)
    spacing = np.hypot(*np.diff(track.centre, axis=0).T)
    assert np.allclose(spacing, track.ds, rtol=0.02)
    assert track.centre.shape == track.normal.shape == track.left.shape == track.right.shape == (n, 2)
    assert np.allclose(np.hypot(*track.normal.T), 1.0)
    assert np.allclose(np.hypot(*(track.left - track.right).T), track.width)


def test_read_bundled_csv():
    xy, widths = read_centreline_csv(Path(__file__).parents[2] / "sim" / "data" / "racetracks" / "Monza.csv")
    assert xy.shape == widths.shape == (1159, 2)
    assert (widths > 0).all()


def test_circle_radius_heading_and_lateral_sign(tmp_path):
    """Counter-clockwise circle: heading +90 deg at (r, 0), left is inward, radius measured as r."""
    track = load_track(write_csv(tmp_path / "circle.csv", circle(5.0)), length_m=2 * math.pi * 5.0)
    assert track.min_radius == pytest.approx(5.0, rel=0.01)
    # On a single curve the closest "non-adjacent" points are the chord at the max(3 * width, 4 m) separation.
    assert track.closest_approach == pytest.approx(10.0 * math.sin(4.8 / 10.0), abs=0.02)
    inside = track.project([4.5, 0.0])
    outside = track.project([5.4, 0.0])
    assert inside.lateral == pytest.approx(0.5, abs=0.01) and outside.lateral == pytest.approx(-0.4, abs=0.01)
    assert inside.heading == pytest.approx(math.pi / 2, abs=0.01)
    assert inside.s == 0.0 and inside.index == 0


def test_lateral_is_positive_left_of_travel_on_generated_track():
    track = load_track("generated:2")
    for i in range(0, len(track.centre), 37):
        proj = track.project(track.centre[i] + 0.3 * track.normal[i], hint=i)
        assert proj.index == i and proj.lateral == pytest.approx(0.3, abs=1e-9)
        assert track.project(track.right[i], hint=i).lateral == pytest.approx(-track.width / 2)


def test_project_with_hint_stays_on_its_section(tmp_path):
    """Stadium with straights 2.2 m apart: a point nearer the other straight stays on the hinted one."""
    xy = stadium(straight=10.0, radius=1.1)
    track = load_track(write_csv(tmp_path / "stadium.csv", xy), length_m=perimeter(xy))
    assert track.closest_approach == pytest.approx(2.2, abs=0.02) and not track.problems
    bottom = track.project([5.0, -1.1])  # global search at the start
    assert abs(bottom.lateral) < 0.01 and abs(bottom.heading) < 0.01
    top = track.project([5.0, 1.1])
    point = np.array([5.0, -0.05])  # 1.05 m from the bottom straight, 1.15 m from the top one
    assert track.project(point).index == bottom.index
    on_top = track.project(point, hint=top.index)
    assert abs(on_top.index - top.index) <= 1
    assert on_top.lateral == pytest.approx(1.15, abs=0.01)  # top straight runs right to left: its left is down
    assert abs(math.remainder(on_top.heading - math.pi, 2 * math.pi)) < 0.01


def test_point_at_and_project_round_trip():
    track = load_track("generated:1")
    hint = None
    for s in np.arange(0.0, track.length, 0.37):
        xy, heading = track.point_at(s)
        proj = track.project(xy, hint=hint)
        hint = proj.index
        assert abs(track.wrap_delta(proj.s - s)) <= track.ds / 2 + 1e-9
        # off by at most the bend of one step: the chord's sagitta and tangent turn at the tightest corner
        assert abs(proj.lateral) <= track.ds**2 / (2 * track.min_radius)
        assert abs(math.remainder(proj.heading - heading, 2 * math.pi)) <= track.ds / track.min_radius
    for s in (0.0, 3.3, track.length - 1e-9):
        assert np.allclose(track.point_at(s + track.length)[0], track.point_at(s)[0])
        assert np.allclose(track.point_at(s - 2 * track.length)[0], track.point_at(s)[0])
    assert np.allclose(track.point_at(0.0)[0], track.centre[0])


def test_wrap_delta():
    track = load_track("generated")
    half = track.length / 2
    assert track.wrap_delta(0.0) == 0.0
    assert track.wrap_delta(half) == pytest.approx(half)
    assert track.wrap_delta(-half) == pytest.approx(half)
    assert track.wrap_delta(track.length - 1.0) == pytest.approx(-1.0)
    assert track.wrap_delta(1.0 - track.length) == pytest.approx(1.0)
    assert track.wrap_delta(3 * track.length + 0.5) == pytest.approx(0.5)


def test_infeasible_track_lists_every_problem(tmp_path):
    """Straights 1.0 m apart joined by 0.5 m half-circles: too tight, walls fold, sections too close."""
    xy = stadium(straight=10.0, radius=0.5, step=0.02)
    path = write_csv(tmp_path / "tight.csv", xy)
    with pytest.raises(TrackError) as err:
        load_track(path, length_m=perimeter(xy))
    message = str(err.value)
    assert message.startswith("tight.csv")
    assert "below the car's 0.65 m turning radius" in message
    assert "inner wall folds" in message
    assert "come within 1.00 m; the corridor needs 1.90 m" in message
    with pytest.warns(UserWarning, match="turning radius") as record:
        track = load_track(path, length_m=perimeter(xy), limits=WARN)
    assert len(record) == 1 and str(record[0].message) == message
    assert len(track.problems) == 3 and track.report()["feasible"] is False


def test_report_fields():
    report = load_track("generated:5").report()
    assert report["name"] == "generated:5" and report["n_points"] == 550 and report["feasible"]
    for key in ("length", "width", "min_radius", "min_radius_s", "closest_approach"):
        assert isinstance(report[key], float)
    assert len(report["closest_approach_s"]) == 2


@pytest.mark.parametrize("seed", range(10))
def test_generated_tracks_are_feasible_at_defaults(seed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        track = load_track(f"generated:{seed}", length_m=55.0, width_m=1.6)
    assert track.name == f"generated:{seed}" and not track.problems
    assert track.min_radius >= 0.8 and track.closest_approach >= 1.9


def test_generator_is_deterministic():
    assert np.array_equal(generate_centreline(3), generate_centreline(3))
    assert not np.array_equal(generate_centreline(3), generate_centreline(4))
    assert np.array_equal(load_track("generated").centre, load_track("generated:0").centre)


ROWS = [f"{x:.4f},{y:.4f},1.0,1.0" for x, y in circle(5.0, 20)]


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "bad.csv: empty file"),
        ("\n".join(ROWS), "bad.csv: no header line"),
        (csv_text(*ROWS, header="# x,y,wr,wl"), "does not name the columns"),
        (csv_text(), "no data rows"),
        (csv_text(*ROWS[:3], "1.0,2.0,1.0", *ROWS[3:]), "row 4 (line 5): expected 4 columns"),
        (csv_text(*ROWS[:16], "1.0,2.0,1.0,1.0,9", *ROWS[16:]), "row 17 (line 18): expected 4 columns"),
        (csv_text(*ROWS[:5], "1.0,abc,1.0,1.0", *ROWS[5:]), "row 6 (line 7): non-numeric value 'abc' in y_m"),
        (csv_text(*ROWS[:16], "nan,2.0,1.0,1.0", *ROWS[16:]), "bad.csv: row 17 (line 18): NaN in x_m"),
        (csv_text(*ROWS[:2], "1.0,2.0,1.0,inf", *ROWS[2:]), "row 3 (line 4): inf in w_tr_left_m"),
        (csv_text(*ROWS[:2], "1.0,2.0,-0.5,1.0", *ROWS[2:]), "row 3 (line 4): negative width -0.5 in w_tr_right_m"),
        (csv_text(*ROWS[:6]), "only 6 distinct points"),
        (csv_text(*ROWS[:12]), "bad.csv: not closed: the last point is"),
    ],
)
def test_bad_csv(tmp_path, text, problem):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TrackError) as err:
        load_track(path)
    assert problem in str(err.value)


def test_self_crossing_centre_line(tmp_path):
    """A figure eight crosses itself at the origin; the message says between which rows."""
    t = np.arange(60) * 2 * math.pi / 60
    xy = np.column_stack([10 * np.sin(t), 5 * np.sin(2 * t)])
    with pytest.raises(TrackError, match=r"eight.csv: centre line crosses itself: segment rows \d+-\d+ crosses"):
        load_track(write_csv(tmp_path / "eight.csv", xy))


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(TrackError, match="nope.csv: file not found"):
        load_track(tmp_path / "nope.csv")
    with pytest.raises(TrackError, match="Silverstone: file not found .*bundled circuits: Budapest"):
        load_track("Silverstone")
    with pytest.raises(TrackError, match="must be an integer"):
        load_track("generated:abc")
    for kwargs, label in (({"length_m": 0.0}, "length_m"), ({"width_m": -1.0}, "width_m"), ({"ds": 0.0}, "ds")):
        with pytest.raises(TrackError, match=f"Monza: {label} must be a positive number"):
            load_track("Monza", **kwargs)
    with pytest.raises(TrackError, match="fewer than 40 points"):
        load_track("Monza", length_m=10.0, ds=0.5)
    with pytest.raises(TrackError, match="on_infeasible"):
        TrackLimits(on_infeasible="ignore")
