"""Export and on-vehicle runtime of a policy that sees the camera (an ``env.encoder`` run).

A tiny encoder run is built by hand: an encoder pretrained with robot.rccar.encoder on 16 camera images
(32 px) of generated:1, SAC trained 60 steps on ``EncodedObservation(env)`` (net [32, 32]), saved as
robot.rccar.track.train lays out a run (with its copy of the encoder in ``<run>/encoder/``). Checked: the
exported graph (inputs ``image`` uint8 and ``observation``) matches ``model.predict`` on
``EncodedObservation``'s flat vector of random images and states within 1e-5; the metadata's image entry;
the runtime's frame preparation (INTER_AREA resize, BGR -> RGB, a vehicle's RGB "image" first); and a
1 s drive at 20 Hz against ReferenceController on a pty with a camera on an MJPG file.

The state part of this policy is RCCarEnv's full state (v_lat, checkpoints ahead, rays), which
SerialVehicle cannot provide: driving it on plain SerialVehicle is the clear missing-fields error; the
drive itself uses a SerialVehicle that adds those fields as constants (as a stand-in for a localiser).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("stable_baselines3")
ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")


from robot.deploy.controller import PtyMasterSerial, ReferenceController  # noqa: E402
from robot.deploy.drivelog import read_log  # noqa: E402
from robot.deploy.export import export_onnx  # noqa: E402
from robot.deploy.parts import ObservationLayoutError, OnnxPolicy, PartError, PolicyMetadata, Sensors  # noqa: E402
from robot.deploy.runtime import drive  # noqa: E402
from robot.deploy.vehicles import SerialVehicle, Vehicle  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*observation space m.* value is -?infinity"),
]

ENV_KW = {"track": "generated:1", "length_m": 55.0, "width_m": 1.6, "smooth_m": 0.0}
SIZE, FEATURES = 32, 16
TOL = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, SAC, EncodedObservation wrapper for reference features)."""
    from stable_baselines3 import SAC

    from robot.rccar.encoder import EncodedObservation, collect_images, pretrain_encoder, save_encoder
    from robot.rccar.track import EnvConfig

    run_dir = tmp_path_factory.mktemp("runs") / "rccar" / "tiny-encoder"
    cam_cfg = EnvConfig(**ENV_KW, image_size=SIZE, reset_mode="teleport")
    images = collect_images(lambda: cam_cfg.make(), 16, seed=0, segment_steps=8)
    encoder, _ = pretrain_encoder(images, feature_dim=FEATURES, steps=5, batch_size=8, seed=0)
    save_encoder(encoder, run_dir / "encoder", {"track": ENV_KW["track"], "n_images": len(images)})

    cfg = EnvConfig(**ENV_KW, image_size=SIZE, encoder=str(run_dir / "encoder"), reset_mode="teleport")
    env = cfg.make()
    assert isinstance(env, EncodedObservation)
    model = SAC("MlpPolicy", env, learning_starts=20, batch_size=32, buffer_size=1000,
                policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu", verbose=0)
    model.learn(60)
    env.close()

    final = run_dir / "final"
    final.mkdir(parents=True)
    model.save(final / "policy.zip")
    meta = {"track": cfg.track, "env": cfg.__dict__, "observation": "state+image", "action": ["steer", "throttle"],
            "action_low": [-1, -1], "action_high": [1, 1], "control_hz": cfg.control_hz, "run": str(run_dir)}
    (final / "policy.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    (run_dir / "config.yaml").write_text(f"name: tiny-encoder\nenv:\n  track: generated:1\n  image_size: {SIZE}\n"
                                         f"  encoder: {run_dir / 'encoder'}\n")
    return run_dir, model, env


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    run_dir, _, _ = run
    return export_onnx(run_dir, tmp_path_factory.mktemp("export") / "car.onnx")


def test_image_policy_matches_predict_on_encoded_observations(run, exported):
    _, model, wrapper = run
    onnx_path, meta_path = exported
    rng = np.random.default_rng(1)
    n_state = model.observation_space.shape[0] - FEATURES
    images = rng.integers(0, 256, size=(48, SIZE, SIZE, 3), dtype=np.uint8)
    images[:8] = images[:8] // 4  # darker ones too
    states = rng.normal(0.0, 2.0, size=(48, n_state)).astype(np.float32)
    flat = np.stack([wrapper.observation({"image": im, "state": st}) for im, st in zip(images, states, strict=True)])
    expected = model.predict(flat, deterministic=True)[0]

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("image", "tensor(uint8)"),
                                                                 ("observation", "tensor(float)")]
    command, action = session.run(["command", "action"], {"image": images, "observation": states})
    np.testing.assert_allclose(action, expected, atol=TOL, rtol=0)
    assert (np.abs(command[:, 0]) <= 0.5 + 1e-7).all()

    meta = json.loads(meta_path.read_text())
    image = meta["image"]
    assert (image["input"], image["height"], image["width"], image["channels"]) == ("image", SIZE, SIZE, 3)
    assert (image["dtype"], image["color_order"]) == ("uint8", "RGB") and "INTER_AREA" in image["resize"]
    assert meta["observation"]["size"] == n_state == len(meta["observation"]["layout"])
    assert len(meta["observation"]["normalization"]["mean"]) == FEATURES + n_state
    assert meta["parity"]["max_abs_diff_action"] <= TOL
    parsed = PolicyMetadata.load(onnx_path)
    assert parsed.image is not None and (parsed.image.height, parsed.image.width) == (SIZE, SIZE)
    assert parsed.n_obs == n_state


def test_frames_are_resized_with_inter_area_and_converted_to_rgb(exported):
    onnx_path, _ = exported
    policy = OnnxPolicy(onnx_path)
    assert policy.image_input == "image" and policy.image_hw == (SIZE, SIZE)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 2] = 200  # red in OpenCV's BGR
    frame[:, :32, 0] = 90  # a blue left half
    policy.configure_image(bgr=True, spec=PolicyMetadata.load(onnx_path).image)
    img = policy.prepare_image(frame)
    assert img.shape == (1, SIZE, SIZE, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0], cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    assert img[0, 0, 0, 0] == 200 and img[0, 0, 0, 2] == 90  # RGB
    policy.configure_image(bgr=False)  # a vehicle's "image" reading is RGB already
    np.testing.assert_array_equal(policy.prepare_image(frame)[0],
                                  cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    # before any frame the command is NaN (the safety layer makes it neutral)
    n = policy.n_obs
    assert np.isnan(OnnxPolicy(onnx_path).run(np.zeros(n, np.float32)).command).all()
    out = policy.run(np.zeros(n, np.float32), frame)
    assert np.isfinite(out.command).all()


class _ImageVehicle(Vehicle):
    name = "cam-vehicle"
    provides = frozenset({"image", "wheel_speed"})

    def __init__(self):
        self.frame = np.full((10, 10, 3), 7, np.uint8)

    def read(self):
        return {"image": self.frame, "wheel_speed": 0.0}


class _Camera:
    def __init__(self):
        self.opened = 0

    def open(self):
        self.opened += 1

    def read(self):
        return np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def test_a_vehicle_image_takes_precedence_over_the_camera():
    vehicle, camera = _ImageVehicle(), _Camera()
    sensors = Sensors(vehicle, camera)
    assert sensors.image_source == "vehicle"
    assert sensors.run(0)["image"] is vehicle.frame
    assert Sensors(SerialVehicle("loop://"), camera).image_source == "camera"
    assert Sensors(SerialVehicle("loop://")).image_source is None


# ------------------------------------------------------------------------------------------ pty drive



@pytest.fixture
def bench():
    master_fd, slave_fd = os.openpty()
    port = PtyMasterSerial(master_fd, baudrate=115200, timeout=0)
    ctrl = ReferenceController(port)
    ctrl.start()
    yield os.ttyname(slave_fd), ctrl
    ctrl.stop()
    port.close()
    os.close(slave_fd)


class _LocalisedSerialVehicle(SerialVehicle):
    """SerialVehicle plus constant values for the state fields it cannot measure (v_lat, checkpoints, rays)."""

    def __init__(self, port: str, names: tuple[str, ...]):
        super().__init__(port, 115200)
        self.extra = {n: 0.0 for n in names if n == "v_lat"}
        self.extra.update({n: (1.0 if n.endswith("_x_div5") or n.startswith("ray") else 0.0)
                           for n in names if n.startswith(("checkpoint", "ray"))})
        self.provides = SerialVehicle.provides | frozenset(self.extra)

    def read(self):
        return {**super().read(), **self.extra}


def _video(path: Path, n: int = 40) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(n):
        frame = np.full((48, 64, 3), 90, np.uint8)
        frame[24:] = (60, 60, 60)
        writer.write(frame + rng.integers(0, 20, size=frame.shape, dtype=np.uint8))
    writer.release()
    return path


def test_image_policy_drives_on_the_pty_with_a_camera(exported, bench, tmp_path):
    onnx_path, _ = exported
    port, ctrl = bench
    names = PolicyMetadata.load(onnx_path).observation_names
    video = _video(tmp_path / "cam.avi")

    # the state part needs fields SerialVehicle does not measure: a clear error at start-up
    with pytest.raises(PartError, match="cannot provide") as info:
        drive(onnx_path, SerialVehicle(port, 115200), rate_hz=20, duration_s=1.0, camera=str(video),
              handle_signals=False)
    missing = info.value.__cause__
    assert isinstance(missing, ObservationLayoutError)
    assert {"v_lat", "checkpoint0_x_div5", "ray0"} <= set(missing.missing)

    # an image policy without a camera (or a vehicle "image"): a clear error at start-up
    with pytest.raises(PartError, match="nothing provides an image"):
        drive(onnx_path, _LocalisedSerialVehicle(port, names), rate_hz=20, duration_s=1.0, handle_signals=False)

    log_dir = tmp_path / "log"
    result = drive(onnx_path, _LocalisedSerialVehicle(port, names), rate_hz=20, duration_s=1.0, camera=str(video),
                   log_dir=log_dir, handle_signals=False)
    assert result.ok and result.exit_reason == "duration"
    assert 15 <= result.ticks <= 21
    ticks = [r for r in read_log(log_dir) if r["kind"] == "tick"]
    assert len(ticks) == result.ticks
    assert all(t["neutral_reason"] != "non_finite_action" for t in ticks)  # every tick had a frame
    assert result.summary["frames"]["saved"] == result.ticks
    assert len(ctrl.actuator.history) > 0


@pytest.fixture(scope="module")
def onboard_exported(tmp_path_factory):
    """An image policy on env.observation="onboard" (camera + what the car measures), exported."""
    from stable_baselines3 import SAC

    from robot.rccar.encoder import collect_images, pretrain_encoder, save_encoder
    from robot.rccar.track import EnvConfig

    run_dir = tmp_path_factory.mktemp("runs") / "rccar" / "tiny-onboard"
    cam_cfg = EnvConfig(**ENV_KW, image_size=SIZE, reset_mode="teleport")
    images = collect_images(lambda: cam_cfg.make(), 12, seed=1, segment_steps=6)
    encoder, _ = pretrain_encoder(images, feature_dim=FEATURES, steps=5, batch_size=8, seed=0)
    save_encoder(encoder, run_dir / "encoder", {"track": ENV_KW["track"], "n_images": len(images)})
    cfg = EnvConfig(**ENV_KW, image_size=SIZE, observation="onboard", encoder=str(run_dir / "encoder"),
                    reset_mode="teleport")
    env = cfg.make()
    model = SAC("MlpPolicy", env, learning_starts=10, batch_size=16, buffer_size=500,
                policy_kwargs={"net_arch": [16, 16]}, seed=0, device="cpu", verbose=0)
    model.learn(30)
    env.close()
    final = run_dir / "final"
    final.mkdir(parents=True)
    model.save(final / "policy.zip")
    meta = {"track": cfg.track, "env": cfg.__dict__, "action": ["steer", "throttle"], "control_hz": cfg.control_hz,
            "run": str(run_dir)}
    (final / "policy.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return export_onnx(run_dir, tmp_path_factory.mktemp("export") / "onboard.onnx")


def test_an_onboard_image_policy_drives_the_serial_car_and_the_sim(onboard_exported, bench, tmp_path):
    """The layout of env.observation="onboard" is what SerialVehicle measures: no missing fields; the same
    file drives the simulated car, whose camera feeds the image input."""
    from robot.rccar.hil import SimVehicle

    onnx_path, _ = onboard_exported
    assert list(PolicyMetadata.load(onnx_path).observation_names) == [
        "v_fwd", "yaw_rate", "acc_x_div10", "acc_y_div10", "applied_steer", "applied_throttle"]
    port, ctrl = bench
    result = drive(onnx_path, SerialVehicle(port, 115200), rate_hz=20, duration_s=0.8,
                   camera=str(_video(tmp_path / "cam.avi")), log_dir=tmp_path / "serial", handle_signals=False)
    assert result.ok and result.exit_reason == "duration" and result.ticks >= 10
    assert len(ctrl.actuator.history) > 0
    sim = SimVehicle.from_metadata(onnx_path)
    assert "image" in sim.provides
    result = drive(onnx_path, sim, rate_hz=20, max_ticks=10, log_dir=tmp_path / "sim", handle_signals=False)
    assert result.ok and result.ticks == 10
    ticks = [r for r in read_log(tmp_path / "sim") if r["kind"] == "tick"]
    assert all(t["neutral_reason"] != "non_finite_action" for t in ticks)  # the sim's camera fed every tick
