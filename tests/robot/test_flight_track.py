"""The flight track end to end: train (tiny), kill and resume, a corrupt checkpoint, eval through the CLI,
the gallery, and config and input errors."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import robot.flight.mc as mc
from robot.flight.track import CONFIGS_DIR, FlightConfig, train
from shared.cli import app
from shared.config import ConfigError, load_config, to_yaml
from shared.tracking.checkpoint import CheckpointWarning, list_checkpoints, load_checkpoint
from shared.tracking.run import Run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["mc.iterations=1", "mc.roots_first=40", "mc.roots=6", "mc.horizon=5", "fit.epochs=1", "fit.width=4",
        "eval.val_flights=2", "eval.videos=1", "env.max_distance_m=6", "env.image_size=32",
        "eval.baselines=[straight,depth,oracle]", "eval.oracle_horizon=4"]


def _cfg(*extra: str) -> FlightConfig:
    return load_config(FlightConfig, "cad2rl", [*TINY, *extra], CONFIGS_DIR)


def _train(run_dir: Path, cfg: FlightConfig, resuming: bool = False) -> str:
    out = io.StringIO()
    run = Run.open(run_dir) if resuming else Run.create("flight", cfg.name, to_yaml(cfg), cfg.train.seed,
                                                         run_dir=run_dir)
    with contextlib.redirect_stdout(out), run:
        train(cfg, run, resuming)
    return out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("flight")
    run_dir = base / "run"
    stdout = _train(run_dir, _cfg())
    return run_dir, stdout


def test_training_writes_the_policy_summary_metrics_and_media(trained) -> None:
    run_dir, stdout = trained
    assert (run_dir / "final" / "value_net.safetensors").exists()
    meta = json.loads((run_dir / "final" / "policy.json").read_text())
    assert meta["net"] == {"k": 3, "image_size": 32, "width": 4, "aux_depth": False, "frames": 1}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["labels"] == 46
    assert [h["round"] for h in summary["history"]] == [0, 1]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val/distance_m" in r for r in rows) and any("collect/label_mean" in r for r in rows)
    media = (run_dir / "media" / "manifest.jsonl").read_text()
    assert "val0.webm" in media and "val0-map.png" in media and "rounds.png" in media
    assert "round 0:" in stdout and "round 1:" in stdout


def test_a_killed_run_resumes_after_its_last_round(tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    real_fit, calls = mc.fit, []

    def dying_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while fitting round 1
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(mc, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        _train(run_dir, _cfg())
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [1]
    monkeypatch.setattr(mc, "fit", real_fit)
    stdout = _train(run_dir, _cfg(), resuming=True)
    assert "resumed after round 1 (40 labels" in stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["labels"] == 46 and [h["round"] for h in summary["history"]] == [0, 1]
    steps = [json.loads(line).get("step") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(s for s in steps if s is not None) == sorted(set(s for s in steps if s is not None))


def test_a_corrupt_checkpoint_is_moved_aside_and_training_starts_over(trained, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    shutil.rmtree(run_dir / "final")
    ckpt = list_checkpoints(run_dir / "checkpoints")[-1][1]
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stdout = _train(run_dir, _cfg(), resuming=True)
    assert any(issubclass(w.category, CheckpointWarning) for w in caught)
    assert "resumed" not in stdout and (run_dir / "final" / "value_net.safetensors").exists()
    assert list((run_dir / "checkpoints").glob("*.corrupt-*"))


def test_eval_on_generated_worlds_and_a_mesh_through_the_cli(trained, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(run_dir), "--worlds", "heldout_textures", "--episodes", "2"])
    assert res.exit_code == 0, res.output
    assert "cad2rl_distance_m:" in res.output and "oracle_distance_m:" in res.output
    result = json.loads((run_dir / "eval" / "heldout_textures.json").read_text())
    assert set(result["results"]) == {"cad2rl", "straight", "depth", "oracle"}
    assert all(len(r["per_flight_m"]) == 2 for r in result["results"].values())
    res = runner.invoke(app, ["eval", str(run_dir), "--world", "pybullet_data:samurai.urdf", "--start",
                              "5,5,1.2,45", "--episodes", "2"])
    assert res.exit_code == 0, res.output
    mesh = json.loads((run_dir / "eval" / "world-samurai.json").read_text())
    assert mesh["split"] == "user" and mesh["start"] == [5.0, 5.0, 1.2, 45.0]
    assert (run_dir / "media" / "eval" / "world-samurai" / "flight0.webm").stat().st_size > 0
    res = runner.invoke(app, ["gallery", str(run_dir), "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    assert ".webm" in (tmp_path / "g" / "index.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--world", "/nowhere/building.obj", "--start", "1,2,1,0"], "building.obj does not exist"),
    (["--world", "pybullet_data:samurai.urdf"], "--world needs --start"),
    (["--world", "pybullet_data:samurai.urdf", "--start", "1,2"], "four finite numbers"),
    (["--worlds", "moon"], "--worlds must be one of"),
    (["--worlds", "heldout", "--start", "1,2,3,4"], "--start goes with --world"),
    (["--track", "Monza"], "flight eval takes --worlds"),
])
def test_eval_input_errors_name_the_problem(trained, args, message) -> None:
    res = CliRunner().invoke(app, ["eval", str(trained[0]), *args])
    assert res.exit_code == 1 and message in res.output


def test_a_start_inside_the_mesh_is_refused(trained, tmp_path) -> None:
    from tests.sim.flight_worlds import pillar_world

    world = pillar_world(tmp_path)
    res = CliRunner().invoke(app, ["eval", str(trained[0]), "--world", str(world), "--start", "2.2,0,1.2,0"])
    assert res.exit_code == 1 and "inside geometry" in res.output


@pytest.mark.parametrize("override, key", [
    ("env.image_size=40", "env.image_size"), ("env.grid=0", "env.grid"), ("mc.horizon=0", "mc.horizon"),
    ("env.corridor_m=[3,2]", "env.corridor_m"), ("eval.baselines=[teleport]", "eval.baselines"),
    ("env.renderer=opengl", "env.renderer"), ("fit.augment=2", "fit.augment"), ("fit.aux_depth=-1", "fit.aux_depth"),
    ("mc.follow=expert", "mc.follow"), ("mc.margin_m=-0.1", "mc.margin_m"), ("mc.margin_mix=1.5", "mc.margin_mix"),
    ("fit.frames=3", "fit.frames"), ("fit.frames=2", "fit.frames"),  # 2 frames with policy-following branches
    ("fit.members=0", "fit.members"), ("fit.choice=-0.5", "fit.choice"), ("mc.near_end=-1", "mc.near_end"),
])
def test_config_errors_name_the_key(override, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(override)


def test_a_two_frame_network_trains_on_stacked_images_and_flies(tmp_path) -> None:
    # Also the fitting options that change only the loss or the data: augmentation and the choice loss.
    run_dir = tmp_path / "frames"
    cfg = _cfg("fit.frames=2", "mc.follow=heuristic", "mc.margin_m=0.2", "fit.augment=0.5", "eval.videos=0",
               "eval.baselines=[straight]", "fit.choice=0.5")
    _train(run_dir, cfg)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("fit/choice_loss", 0) > 0 for row in logged)
    meta = json.loads((run_dir / "final" / "policy.json").read_text())
    assert meta["net"]["frames"] == 2
    tensors, _ = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])
    assert tuple(tensors["data"]["obs"].shape[1:]) == (32, 32, 6)
    res = CliRunner().invoke(app, ["eval", str(run_dir), "--worlds", "val", "--episodes", "2"])
    assert res.exit_code == 0, res.output
    result = json.loads((run_dir / "eval" / "val.json").read_text())["results"]["cad2rl"]
    assert result["distance_m"] > 0


def test_an_ensemble_fits_each_member_resumes_and_flies_the_mean_of_their_maps(tmp_path, monkeypatch) -> None:
    from robot.flight.model import ValueEnsemble
    from robot.flight.track import load_policy

    run_dir = tmp_path / "ensemble"
    cfg = _cfg("fit.members=3", "mc.follow=heuristic", "eval.videos=0", "eval.baselines=[straight]")
    real_fit, calls = mc.fit, []

    def dying_fit(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed while fitting round 1's second member
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(mc, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        _train(run_dir, cfg)
    assert len({id(m) for m in calls[:3]}) == 3  # round 0 fitted three distinct networks
    monkeypatch.setattr(mc, "fit", real_fit)
    assert "resumed after round 1" in _train(run_dir, cfg, resuming=True)
    net, meta = load_policy(run_dir)
    assert isinstance(net, ValueEnsemble) and meta["net"]["members"] == 3
    first, second = (dict(m.named_parameters())["features.0.weight"] for m in net.members[:2])
    assert not torch.equal(first, second)  # own initialisations
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    each = np.stack([m.values(images) for m in net.members])
    np.testing.assert_allclose(net.values(images), each.mean(0), rtol=1e-6)
    assert np.abs(each[0] - each[1]).max() > 1e-4
    res = CliRunner().invoke(app, ["eval", str(run_dir), "--worlds", "val", "--episodes", "2"])
    assert res.exit_code == 0, res.output
    assert len(ValueEnsemble.of([net, net.members[0]]).members) == 4  # an ensemble among them gives its members


def test_mistake_probe_classifies_the_decisive_mistake_of_each_collision(trained, capsys) -> None:
    from robot.flight.mistake_probe import CLASSES, classify, main

    left_open = np.array([1.0, 0.0, 0.0] * 3)
    assert classify(2, left_open, 3) == "wrong side" and classify(1, left_open, 3) == "too straight"
    assert classify(0, left_open, 3) == "none"
    assert classify(0, np.array([0.0, 1.0, 0.0] * 3), 3) == "needless turn"
    main([str(trained[0]), "--flights", "3"])
    out = capsys.readouterr().out
    table = out[out.index("| decisive mistake |"):].splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == list(CLASSES)
    crashes = int(out.split(" collisions")[0].rsplit(", ", 1)[1])
    assert sum(int(line.split("|")[2]) for line in table[2:]) == crashes
    assert out.count(f"{trained[0].name} seed ") == crashes


def test_choice_probe_flies_a_runs_network_with_each_tolerance(trained, capsys) -> None:
    from robot.flight.choice_probe import main as probe

    run_dir, _ = trained
    probe([str(run_dir), "--tie-tols", "0", "0.5", "--mirror", "0", "1", "--flights", "2"])
    out = capsys.readouterr().out
    assert f"{run_dir.name} tie_tol=0 mirror=0:" in out and f"{run_dir.name} tie_tol=0.5 mirror=1:" in out
    table = out[out.index("| mirror |"):].splitlines()
    assert [line.split("|")[2].strip() for line in table[2:]] == ["0", "0.5", "0", "0.5"]
    assert all(line.split("|")[5].strip() == "1" for line in table[2:])
    with pytest.raises(SystemExit):
        probe([str(run_dir), "--tie-tols", "-1"])


def test_choice_probe_flies_several_runs_as_one_ensemble(trained, tmp_path, capsys) -> None:
    from robot.flight.choice_probe import main as probe

    twin = tmp_path / "twin"
    shutil.copytree(trained[0], twin)
    probe([str(trained[0]), str(twin), "--tie-tols", "0.02", "--flights", "3", "--ensemble"])
    out = capsys.readouterr().out
    row = out[out.index("the ensemble |"):].splitlines()[2].split("|")
    together, alone = float(row[3].split("±")[0]), float(row[4])
    assert together == pytest.approx(alone, abs=0.01)  # two copies of one network fly as it does
    assert "ensemble of 2 tie_tol=0.02 mirror=0:" in out and row[5].strip() == "2"
    with pytest.raises(SystemExit):
        probe([str(trained[0]), "--ensemble"])


def test_refit_probe_compares_augmentation_and_choice_weights_on_a_runs_labels(trained, tmp_path, capsys) -> None:
    from robot.flight.refit_probe import main as probe

    run_dir, _ = trained
    args = [str(run_dir), "--augment", "0", "1", "--choices", "0", "0.5", "--epochs", "1", "--every", "1",
            "--flights", "2"]
    probe(args)
    out = capsys.readouterr().out
    width = yaml.safe_load((run_dir / "config.yaml").read_text())["fit"]["width"]
    assert out.count("epochs=") == 4 and f"augment=1 width={width} choice=0.5 fit_seed=0 epochs=1" in out
    table = out[out.index("| augment |"):].splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0", "0", "1", "1"]
    assert [line.split("|")[3].strip() for line in table[2:]] == ["0", "0.5", "0", "0.5"]
    assert all(line.split("|")[2].strip() == str(width) for line in table[2:])
    assert all(line.split("|")[6].strip() == "1" for line in table[2:])
    probe(args)  # the same fits and flights again: the same numbers
    assert capsys.readouterr().out == out
    probe([str(run_dir), "--augment", "0", "--widths", "4", "8", "--epochs", "1", "--every", "1", "--flights", "2"])
    out = capsys.readouterr().out
    assert "width=4 choice=0 fit_seed=0" in out and "width=8 choice=0 fit_seed=0" in out
    table = out[out.index("| augment |"):].splitlines()
    assert [line.split("|")[2].strip() for line in table[2:]] == ["4", "8"]
    with pytest.raises(SystemExit):
        probe([str(run_dir), "--widths", "0"])
    with pytest.raises(SystemExit):
        probe([str(run_dir), "--choices", "-1"])
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "config.yaml", bare / "config.yaml")
    with pytest.raises(SystemExit, match="no checkpoint"):
        probe([str(bare), "--epochs", "1", "--every", "1", "--flights", "1"])


def test_training_with_the_auxiliary_depth_head(tmp_path) -> None:
    from robot.flight.track import load_policy

    run_dir = tmp_path / "run"
    stdout = _train(run_dir, _cfg("fit.aux_depth=1.0", "mc.iterations=0"))
    assert "round 0:" in stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("fit/depth_loss", 0) > 0 for r in rows)
    tensors, _ = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])
    assert tuple(tensors["data"]["depth"].shape) == (40, 8, 8)
    net, meta = load_policy(run_dir)
    assert meta["net"]["aux_depth"] is True and net.depth_head is not None


def test_training_with_the_heuristic_teacher_never_renders_a_branch(tmp_path, monkeypatch) -> None:
    """mc.follow=heuristic: every round's branches follow the ray-test teacher, none the network."""
    taught = []

    def no_policy(*args, **kwargs):
        raise AssertionError("mc.follow=heuristic must not follow the network")

    def counting_teacher(*args, **kwargs):
        taught.append(1)
        return real_teacher(*args, **kwargs)

    real_teacher = mc.follow_heuristic
    monkeypatch.setattr(mc, "follow_policy", no_policy)
    monkeypatch.setattr(mc, "follow_heuristic", counting_teacher)
    run_dir = tmp_path / "run"
    stdout = _train(run_dir, _cfg("mc.follow=heuristic"))
    assert "round 1:" in stdout and len(taught) == 2
    assert (run_dir / "final" / "value_net.safetensors").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
def test_every_shipped_flight_config_loads(name) -> None:
    cfg = load_config(FlightConfig, name, [], CONFIGS_DIR)
    assert cfg.mc.horizon >= 1 and cfg.name
