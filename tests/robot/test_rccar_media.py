"""robot.rccar.media: the track map, the lap-time curve and the captioned lap video on generated:1."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def drive_with_video(tmp_path_factory):
    """Pure pursuit for ~10 simulated seconds on generated:1, rendered small: (video path, log, env facts)."""
    from robot.rccar.media import lap_video
    from robot.rccar.pursuit import PurePursuit, pursuit_controller
    from sim.rccar import RCCarEnv

    env = RCCarEnv("generated:1", render_mode="rgb_array", render_size=(160, 120))
    try:
        out = tmp_path_factory.mktemp("media") / "lap.webm"
        path, log = lap_video(env, pursuit_controller(env, PurePursuit(throttle=0.5)), out, max_s=10.0)
        return path, log, env.track, env.checkpoints.copy()
    finally:
        env.close()


def _image(path):
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def test_trajectory_plot_draws_a_coloured_path(drive_with_video, tmp_path):
    from robot.rccar.media import trajectory_plot

    _, log, track, checkpoints = drive_with_video
    arrays = log.to_arrays()
    assert len(arrays["xy"]) >= 90 and float(arrays["speed"].max()) > 0.5
    out = trajectory_plot(track, arrays["xy"], arrays["speed"], tmp_path / "maps" / "path.png",
                          title="pure pursuit", checkpoints=checkpoints)
    assert out == tmp_path / "maps" / "path.png" and out.stat().st_size > 0
    assert [p.name for p in out.parent.iterdir()] == ["path.png"]  # no temporary left behind
    rgb = _image(out)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    assert (chroma > 60).sum() > 200  # the speed-coloured path and colour bar, not only grey track


def test_trajectory_plot_rejects_mismatched_speed(drive_with_video, tmp_path):
    from robot.rccar.media import trajectory_plot

    _, _, track, _ = drive_with_video
    with pytest.raises(ValueError, match="speeds"):
        trajectory_plot(track, np.zeros((5, 2)), np.zeros(4), tmp_path / "bad.png")


def test_lap_curve_plot_with_and_without_laps(tmp_path):
    from robot.rccar.media import lap_curve_plot

    points = [(1.0, 42.0), (2.5, 38.5), (4.0, 35.2)]
    series = {"eval (deterministic)": [(2.0, 39.0), (4.0, 34.0)], "eval (stochastic)": []}
    full = lap_curve_plot(points, tmp_path / "curve.png", demo_lap_s=60.0, baseline_lap_s=30.0, series=series,
                          title="practice")
    empty = lap_curve_plot([], tmp_path / "empty.png", demo_lap_s=60.0)
    for out in (full, empty):
        assert out.exists() and out.stat().st_size > 0
        assert _image(out).shape[2] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "empty.png"]
    grouped = lap_curve_plot([], tmp_path / "grouped.png", series={"a s0": [(1.0, 30.0)], "a s1": [(1.0, 31.0)],
                             "b s0": [(1.0, 29.0)]}, groups={"a s0": "a", "a s1": "a", "b s0": "b"})
    assert grouped.stat().st_size > 0


def test_series_styles_colour_by_group_and_label_each_group_once():
    from robot.rccar.media import series_styles

    names = ["droq s0", "droq s1", "droq s2", "ens5 s0", "ens5 s1"]
    styles = series_styles(names, {n: n.split()[0] for n in names})
    assert {styles[n][0] for n in names[:3]} == {"C1"} and {styles[n][0] for n in names[3:]} == {"C2"}
    assert [styles[n][1] for n in names] == ["-", "--", ":", "-", "--"]
    assert [styles[n][2] for n in names] == ["droq (3 runs)", None, None, "ens5 (2 runs)", None]
    alone = series_styles(["x", "y"])
    assert alone == {"x": ("C1", "-", "x"), "y": ("C2", "-", "y")}


def test_lap_video_writes_one_frame_per_step(drive_with_video):
    import imageio_ffmpeg

    path, log, _, _ = drive_with_video
    assert path.suffix == ".webm" and path.stat().st_size > 0
    assert len(log.x) == len(log.t) == len(log.speed) and 9.5 <= log.t[-1] <= 10.5
    n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert n_frames == len(log.x)


def test_lap_video_needs_a_rendering_env(tmp_path):
    from robot.rccar.media import lap_video

    class NoRender:
        render_mode = None

    with pytest.raises(ValueError, match="rgb_array"):
        lap_video(NoRender(), lambda obs, info: None, tmp_path / "x.webm")
