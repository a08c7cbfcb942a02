"""Timing of the on-vehicle drive loop (``robot.deploy.runtime``) at 50 Hz on one core with an image policy.

    taskset -c 1 env OMP_NUM_THREADS=1 python bench/drive_latency.py [--duration-s 10] [--rate-hz 50]

The issue's check: "At 50 Hz on one core with the image policy: loop period jitter p99 at most 2 ms and
policy latency p99 at most 5 ms; report the percentiles and the end-to-end latency from sensor read to
command written." Run it pinned to one core (``taskset -c 1``); it prints the CPUs it may use.

Each configuration below runs for ``--duration-s`` seconds in total at ``--rate-hz``, in ``--rounds`` runs
interleaved with the others (on a shared machine a busy spell then hits all of them; the load average
and the share of the pinned core that other processes used during the runs are printed). What is driven:

* the vehicle: ``SerialVehicle`` on one end of a pseudo-terminal pair, opened by name with pyserial (real
  protocol-v1 bytes through the kernel's tty layer, its link thread, heartbeats and keep-alives), and
  ``ReferenceController`` on the other end in a child process (the motor controller is a separate chip on
  the car; a child process shares the core but not the interpreter's lock -- the core sharing is an
  extra load the car does not have);
* the camera: ``Camera(<video file>)`` on a synthetic MJPG video (``--frame-size``, default 320x240)
  written at start-up; a file is decoded synchronously, one frame per tick, inside the loop -- so the
  decode counts in the end-to-end latency (a device camera is read on a grab thread instead);
* the drive log (``--frame-every``, default 1 = every frame saved as PNG, as ``build`` defaults to):
  ``drive.jsonl``, frames and ``summary.json`` in a temporary folder (``--keep-logs DIR`` keeps them);
* the default ``SafetyConfig`` (deadline 0.8 periods, throttle cap 0.3, rate limit from the metadata).

The policies, both driven by the runtime as it is (``build(policy_path, vehicle, camera=Camera(...))``:
its own ``OnnxPolicy``, ``Sensors``, ``ObservationBuilder``, safety and log; no bench-only parts):

1. ``runtime, image policy``: an ONNX graph with inputs ``image`` uint8 [batch, 64, 64, 3] RGB and
   ``observation``, the size of SB3's SAC ``MultiInputPolicy`` actor for ``{"image": 64x64x3, "state"}``
   -- SB3's NatureCNN with 256 features (its ``CombinedExtractor`` default) on the image, concatenated with
   the state, an MLP [256, 256], tanh, and the exporter's unscaling/clipping tail -- with random weights.
   Its metadata carries the ``image`` entry and ``onnx.inputs`` as ``rlab export`` writes them for encoder
   policies (``robot.deploy.export._metadata``), so the loop checks the camera feeds it and ``OnnxPolicy``
   feeds the newest camera frame, resized to 64x64 with ``cv2.INTER_AREA`` and converted BGR -> RGB -- in
   the policy part, so in the policy latency (and the end-to-end latency). The targets are checked on this run;
2. ``runtime, state policy``: the ``rlab export`` graph of a state-only policy
   (``robot.deploy.export.PolicyGraph``: normalisation, SAC actor [256, 256], tanh, unscaling, clipping, the
   non-finite fallback), same vehicle, camera and log (the frame is read and logged, no policy input);
3. ``image policy alone``: the image graph (CNN + MLP)'s ``onnxruntime`` latency back-to-back (``--cnn-calls`` calls,
   one thread), no loop.

The observation is 16 entries the serial vehicle provides (wheel speed, IMU, battery, controller state,
applied action): the simulator's 22-entry state also has v_lat, checkpoints and rays, which no real
vehicle reading provides (``ObservationBuilder.check`` would refuse the layout); its size does not
matter for the timing.

Measured per tick by the loop itself (``DriveLoop._tick``, ``summary.json``): period (tick start to tick
start) and jitter = period - 1 / rate; policy latency (the policy part's ``run``); end-to-end latency
from the start of the sensor read to the return of the command write (``SerialVehicle.write`` handing the
COMMAND frame to the kernel). Jitter is reported as |jitter| (the summary's ``jitter_s`` percentiles are
signed: a late tick gives +d then -d), and the 2 ms target is checked on the p99 of |jitter|.

Peer (the ratio line): the same image policy graph in a bare Python loop paced with ``time.sleep`` on the
same fixed schedule (``t0 + k / rate``, missed slots skipped), fed pre-resized RGB frames from memory: no
serial link, no camera decode, no resize, no safety, no log. The last line is ``ratio: <runtime p99 |jitter|> /
<bare loop p99 |jitter|>`` -- how much the runtime's parts and threads add to the timing noise of the
same work under the same sleep-based pacing.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

IMAGE = 64  # policy image side (px)
CNN_FEATURES = 256  # SB3 CombinedExtractor's cnn_output_dim (MultiInputPolicy)
NET_ARCH = (256, 256)  # SB3 SAC default (and robot.rccar's)
MAX_STEER, MIN_THROTTLE, MAX_DELTA = 0.5, 0.0, (0.5, 0.3)  # RCCarEnv defaults
JITTER_TARGET_S, POLICY_TARGET_S = 0.002, 0.005
VEHICLE_COUNTS = ("tx_commands", "keepalive_commands", "rx_telemetry")  # SerialVehicle.stats()
CONTROLLER_COUNTS = ("commands_applied", "watchdog_trips", "tx_dropped")  # ReferenceController.stats
# Readings SerialVehicle provides, by the names ObservationBuilder resolves (aliases, [i], _divN).
OBS_NAMES = ("v_fwd", "yaw_rate", "acc_x_div10", "acc_y_div10", "acc_z_div10", "applied_steer", "applied_throttle",
             "gyro[0]", "gyro[1]", "accel[0]", "accel[1]", "accel[2]", "battery_v", "controller_state",
             "telemetry_age_s", "wheel_speed")


# ------------------------------------------------------------------------------------------ policies


def build_policies(folder: Path, rate_hz: float, opset: int = 17) -> tuple[Path, Path, dict]:
    """The image policy (inputs ``image`` + ``observation``) and the exporter's state policy, as ONNX +
    ``<file>.json`` metadata."""
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import NatureCNN
    from torch import nn

    from robot.deploy.export import ObsNormalization, PolicyGraph, export_graph

    torch.manual_seed(0)
    torch.set_num_threads(1)
    n_obs = len(OBS_NAMES)
    low, high = np.full(2, -1.0, np.float32), np.full(2, 1.0, np.float32)
    norm = ObsNormalization.identity(n_obs)

    def mlp(n_in: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in NET_ARCH:
            layers += [nn.Linear(n_in, width), nn.ReLU()]
            n_in = width
        return nn.Sequential(*layers, nn.Linear(n_in, 2))  # latent_pi + mu

    class StateActor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(n_obs)

        def get_action_dist_params(self, obs: torch.Tensor) -> tuple:
            return self.net(obs), None, {}

    class ImageActor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            space = spaces.Box(0, 255, (3, IMAGE, IMAGE), np.uint8)
            self.cnn = NatureCNN(space, features_dim=CNN_FEATURES)
            self.net = mlp(CNN_FEATURES + n_obs)

    class ImageGraph(PolicyGraph):
        """PolicyGraph's normalisation and tail; the actor sees NatureCNN(image / 255) ++ state."""

        def forward(self, image: torch.Tensor, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pixels = image.permute(0, 3, 1, 2).float() / 255.0
            return self.finish(self.actor.net(torch.cat([self.actor.cnn(pixels), self.normalize(observation)], dim=1)))

    state_graph = PolicyGraph(StateActor(), norm, low, high, MAX_STEER, MIN_THROTTLE).eval()
    state_path = export_graph(state_graph, n_obs, folder / "state.onnx", opset)

    image_graph = ImageGraph(ImageActor(), norm, low, high, MAX_STEER, MIN_THROTTLE).eval()
    image_path = folder / "image.onnx"
    example = (torch.zeros(1, IMAGE, IMAGE, 3, dtype=torch.uint8), torch.zeros(1, n_obs))
    names = ("image", "observation", "command", "action")  # export_graph's order: image first
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(image_graph, example, str(image_path), dynamo=False, input_names=list(names[:2]),
                          output_names=list(names[2:]), dynamic_axes={n: {0: "batch"} for n in names},
                          opset_version=opset, do_constant_folding=True)

    info = {}
    for path, graph, inputs in ((state_path, state_graph, None), (image_path, image_graph, True)):
        params = sum(p.numel() for p in graph.actor.parameters())
        _write_metadata(path, rate_hz, opset, image=bool(inputs), params=params)
        info[path.stem] = params
    info["cnn_macs"] = _nature_cnn_macs(IMAGE)
    return image_path, state_path, info


def _nature_cnn_macs(size: int) -> int:
    """Multiply-accumulates of NatureCNN (8x8/4 32, 4x4/2 64, 3x3/1 64, linear) on a size x size x 3 image."""
    macs, c_in = 0, 3
    for k, s, c in ((8, 4, 32), (4, 2, 64), (3, 1, 64)):
        size = (size - k) // s + 1
        macs += size * size * c * k * k * c_in
        c_in = c
    return macs + size * size * c_in * CNN_FEATURES


def _write_metadata(onnx_path: Path, rate_hz: float, opset: int, *, image: bool, params: int) -> None:
    """Metadata in robot.deploy.export's format (``rlab-onnx-policy`` v1); with `image`, the ``image`` entry
    and the ``image`` input as ``robot.deploy.export._metadata`` writes them for encoder policies."""
    from robot.deploy.export import IMAGE_INPUT_NAME, IMAGE_RESIZE_RULE

    n_obs = len(OBS_NAMES)
    inputs = [{"name": "observation", "dtype": "float32", "shape": ["batch", n_obs]}]
    extra: dict = {}
    if image:
        inputs.insert(0, {"name": IMAGE_INPUT_NAME, "dtype": "uint8", "shape": ["batch", IMAGE, IMAGE, 3]})
        extra["image"] = {
            "input": IMAGE_INPUT_NAME, "height": IMAGE, "width": IMAGE, "channels": 3, "dtype": "uint8",
            "color_order": "RGB", "layout": "NHWC", "range": [0, 255], "resize": IMAGE_RESIZE_RULE,
            "encoder": {"name": "NatureCNN (bench: random weights)", "features": CNN_FEATURES,
                        "in_graph": "features = NatureCNN(image / 255, NCHW); actor input = [features, "
                                    "normalised observation]"},
        }
    meta = {
        "format": "rlab-onnx-policy", "format_version": 1,
        "onnx": {"file": onnx_path.name, "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(), "opset": opset,
                 "inputs": inputs,
                 "outputs": [{"name": "command", "dtype": "float32", "shape": ["batch", 2],
                              "names": ["steer_rad", "throttle_fraction"]},
                             {"name": "action", "dtype": "float32", "shape": ["batch", 2],
                              "names": ["steer", "throttle"]}]},
        "observation": {"size": n_obs,
                        "layout": [{"index": i, "name": name, "unit": "", "description": "bench: a SerialVehicle "
                                    "reading"} for i, name in enumerate(OBS_NAMES)],
                        "normalization": {"formula": "clip((observation - mean) / std, -clip, clip), inside the "
                                                     "graph", "mean": [0.0] * n_obs, "std": [1.0] * n_obs,
                                          "clip": math.inf}},
        **extra,
        "action": {"names": ["steer", "throttle"], "low": [-1.0, -1.0], "high": [1.0, 1.0], "unit": "normalised",
                   "max_delta_per_step": list(MAX_DELTA)},
        "command": {"names": ["steer_rad", "throttle_fraction"], "units": ["rad", "fraction of top wheel speed"],
                    "low": [-MAX_STEER, MIN_THROTTLE], "high": [MAX_STEER, 1.0], "max_steer_rad": MAX_STEER,
                    "min_throttle": MIN_THROTTLE},
        "control_hz": rate_hz,
        "policy": {"algorithm": "bench: random weights", "parameters": params, "deterministic": True},
    }
    Path(str(onnx_path) + ".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")


# ------------------------------------------------------------------------------------------ camera, controller


def synthetic_frame(k: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A track seen from the car: grey floor, two white borders drifting sideways, some noise (BGR uint8)."""
    frame = np.full((height, width, 3), 90, np.uint8)
    rows = np.arange(height // 3, height)
    depth = (rows - height // 3) / (height - height // 3)  # 0 at the horizon, 1 at the bottom
    centre = width / 2 + 0.25 * width * math.sin(k / 40.0) * (1.0 - depth)
    half = 0.05 * width + 0.45 * width * depth
    for offset in (-1, 1):
        cols = np.clip((centre + offset * half).astype(int), 0, width - 3)
        for dc in range(3):
            frame[rows, cols + dc] = 235
    frame[: height // 3] = (200, 160, 120)
    noise = rng.integers(0, 12, size=frame.shape, dtype=np.uint8)
    return frame + noise


def write_video(path: Path, n_frames: int, width: int, height: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write MJPG to {path}")
    rng = np.random.default_rng(0)
    for k in range(n_frames):
        writer.write(synthetic_frame(k, width, height, rng))
    writer.release()
    return path


class ControllerProcess:
    """A pty pair: ``ReferenceController`` on the master end in a child process (``--controller-fd``), the
    slave's name for ``SerialVehicle``. ``close()`` ends the child (stdin EOF) and returns its stats."""

    def __init__(self) -> None:
        master_fd, self.slave_fd = os.openpty()
        self.slave_name = os.ttyname(self.slave_fd)
        self.proc = subprocess.Popen([sys.executable, __file__, "--controller-fd", str(master_fd)],
                                     pass_fds=(master_fd,), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        os.close(master_fd)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the controller process did not start (said {line!r})")

    def close(self) -> dict:
        out, _ = self.proc.communicate(timeout=10)  # closes the child's stdin: it stops
        os.close(self.slave_fd)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"error": f"no stats from the controller process: {out!r}"}


def controller_main(master_fd: int) -> None:
    """The child: ReferenceController on the adopted master fd until stdin closes; prints its stats."""
    import dataclasses

    from robot.deploy.controller import PtyMasterSerial, ReferenceController

    port = PtyMasterSerial(master_fd, baudrate=115200, timeout=0)
    ctrl = ReferenceController(port)
    ctrl.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes our stdin (or dies)
    ctrl.stop()
    port.close()
    print(json.dumps(dataclasses.asdict(ctrl.stats)), flush=True)


# ------------------------------------------------------------------------------------------ runs


def run_runtime(policy_path: Path, video: Path, log_dir: Path, args: argparse.Namespace, duration_s: float) -> dict:
    """``runtime.build(...).run()`` (its own ``OnnxPolicy``, fed the camera frame when the policy has an
    ``image`` input) against the controller process; the loop's own per-tick timings."""
    from robot.deploy.parts import Camera
    from robot.deploy.runtime import build
    from robot.deploy.vehicles import SerialVehicle

    camera = Camera(str(video), threaded=False)
    ctrl = ControllerProcess()
    try:
        loop = build(policy_path, SerialVehicle(ctrl.slave_name, 115200), rate_hz=args.rate_hz,
                     duration_s=duration_s, camera=camera, log_dir=log_dir, frame_every=args.frame_every,
                     raise_on_error=False)
        result = loop.run()
    finally:
        controller = ctrl.close()
    if result.error is not None:
        raise RuntimeError(f"the drive failed: {result.error}")
    t = loop.stats.timings
    s = result.summary
    # summary.json's frame counts: DriveResult.summary's are taken before the frame writer has drained
    frames = json.loads((log_dir / "summary.json").read_text()).get("frames") or {}
    vehicle = s.get("vehicle", {})
    counts = {"ticks": result.ticks, "deadline_misses": s["deadline_misses"], "skipped": s["skipped_slots"],
              "no_frame": loop.sensors.ticks_without_frame, "frames_used": getattr(loop.policy, "frames_used", 0),
              "frames_saved": frames.get("saved", 0),
              "frames_dropped": frames.get("dropped", 0), **{k: vehicle.get(k, 0) for k in VEHICLE_COUNTS},
              **{f"ctrl_{k}": controller.get(k, 0) for k in CONTROLLER_COUNTS}}
    return {**counts, "jitter": np.abs(t["jitter_s"]), "policy": np.asarray(t["policy_latency_s"]),
            "e2e": np.asarray(t["e2e_latency_s"]), "events": collections.Counter(s["safety_events"]),
            "neutral": collections.Counter(s["neutral_ticks"]), "exit": {result.exit_reason}}


def merge(parts: list[dict]) -> dict:
    """The rounds of one configuration as one run: timings concatenated, counts added."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = value
            elif isinstance(value, np.ndarray):
                out[key] = np.concatenate([out[key], value])
            elif isinstance(value, set):
                out[key] = out[key] | value
            else:
                out[key] = out[key] + value
    return out


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()  # as OnnxPolicy: one thread, sequential
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _frames(n: int, width: int, height: int) -> list[np.ndarray]:
    """Frames as ``OnnxPolicy.prepare_image`` feeds them: resized (cv2.INTER_AREA), BGR -> RGB, [1, H, W, 3]."""
    import cv2

    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        small = cv2.resize(synthetic_frame(k, width, height, rng), (IMAGE, IMAGE), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(small[:, :, ::-1])[None])
    return out


def run_bare(path: Path, frames: list[np.ndarray], rate_hz: float, duration_s: float) -> dict:
    """The peer: the image graph paced by ``time.sleep`` on the runtime's schedule, nothing else."""
    session = _session(path)
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(len(frames), 1, len(OBS_NAMES))).astype(np.float32)
    names = ["command", "action"]
    for k in range(3):  # warm-up, as OnnxPolicy.start()
        session.run(names, {"observation": obs[k], "image": frames[k]})
    period = 1.0 / rate_hz
    jitter, latency = [], []
    t0 = time.perf_counter()
    next_t, prev, k = t0, None, 0
    while next_t - t0 < duration_s - 1e-9:
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        start = time.perf_counter()
        i = k % len(frames)
        session.run(names, {"observation": obs[i], "image": frames[i]})
        latency.append(time.perf_counter() - start)
        if prev is not None:
            jitter.append(start - prev - period)
        prev, k = start, k + 1
        next_t += period
        late = time.perf_counter() - next_t
        if late >= period:
            next_t += int(late // period) * period
    return {"ticks": k, "jitter": np.abs(jitter), "policy": np.asarray(latency)}


def run_alone(path: Path, frames: list[np.ndarray], calls: int) -> np.ndarray:
    session = _session(path)
    obs = np.zeros((1, len(OBS_NAMES)), np.float32)
    names = ["command", "action"]
    out = []
    for k in range(calls + 3):
        t0 = time.perf_counter()
        session.run(names, {"observation": obs, "image": frames[k % len(frames)]})
        out.append(time.perf_counter() - t0)
    return np.asarray(out[3:])


# ------------------------------------------------------------------------------------------ report


def _cpu_busy_s(cpus: list[int]) -> float | None:
    """Busy time (all processes) of `cpus` from /proc/stat, in seconds; None where unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]
            busy += sum(values) - values[3] - values[4]  # minus idle and iowait
    return busy / hz


def _own_cpu_s() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the controller processes, once waited for
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _pct(values: np.ndarray | None) -> str:
    if values is None or len(values) == 0:
        return f"{'-':>22}"
    v = 1e3 * np.asarray(values)
    return f"{np.percentile(v, 50):>6.2f} {np.percentile(v, 99):>7.2f} {v.max():>7.2f}"


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99))


def report(runs: dict[str, dict], alone: np.ndarray, args: argparse.Namespace) -> None:
    head = f"{'':34}{'ticks':>6}  {'|jitter| ms p50/p99/max':>22}  {'policy ms p50/p99/max':>22}  " \
           f"{'e2e ms p50/p99/max':>22}  {'misses':>6}  {'skipped':>7}"
    print(head)
    for name, r in runs.items():
        print(f"{name:34}{r['ticks']:>6}  {_pct(r['jitter'])}  {_pct(r['policy'])}  {_pct(r.get('e2e'))}  "
              f"{r.get('deadline_misses', '-'):>6}  {r.get('skipped', '-'):>7}")
    print(f"{'image policy alone, back-to-back':34}{len(alone):>6}  {_pct(None)}  {_pct(alone)}  {_pct(None)}")
    for name, r in runs.items():
        if "e2e" not in r:
            continue
        print(f"  {name}: exit {', '.join(sorted(r['exit']))}; neutral ticks {dict(r['neutral']) or 0}; safety "
              f"events {dict(sorted(r['events'].items()))}; ticks without a camera frame {r['no_frame']}"
              f"{'; frames fed to the policy ' + str(r['frames_used']) if r['frames_used'] else ''}; log frames "
              f"saved {r['frames_saved']} dropped {r['frames_dropped']}; host tx {r['tx_commands']} commands + "
              f"{r['keepalive_commands']} keep-alives, rx {r['rx_telemetry']} telemetry; controller applied "
              f"{r['ctrl_commands_applied']}, watchdog trips {r['ctrl_watchdog_trips']}, tx dropped "
              f"{r['ctrl_tx_dropped']}")
    img = runs["runtime, image policy"]
    jit, pol = _p99(img["jitter"]), _p99(img["policy"])
    print(f"targets (runtime, image policy, {args.rate_hz:g} Hz): "
          f"p99 |jitter| {1e3 * jit:.2f} ms <= {1e3 * JITTER_TARGET_S:g} ms: "
          f"{'holds' if jit <= JITTER_TARGET_S else 'FAILS'}; "
          f"p99 policy latency {1e3 * pol:.2f} ms <= {1e3 * POLICY_TARGET_S:g} ms: "
          f"{'holds' if pol <= POLICY_TARGET_S else 'FAILS'}; "
          f"p99 end-to-end {1e3 * _p99(img['e2e']):.2f} ms (no target); deadline misses {img['deadline_misses']}")
    bare_run = runs["bare loop, image policy, sleep"]
    print(f"work per tick (p99): runtime sensor read -> command written {1e3 * _p99(img['e2e']):.2f} ms, of which "
          f"policy {1e3 * pol:.2f} ms; bare loop policy {1e3 * _p99(bare_run['policy']):.2f} ms; the same graph "
          f"back-to-back {1e3 * _p99(alone):.2f} ms (warm caches)")
    bare = _p99(bare_run["jitter"])
    print(f"ratio: {jit / bare:.2f} (runtime p99 |jitter| {1e3 * jit:.3f} ms over bare sleep-paced loop p99 "
          f"|jitter| {1e3 * bare:.3f} ms, same image policy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate-hz", type=float, default=50.0, help="loop rate (default 50)")
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="seconds of driving per configuration (3 configurations; default 10)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="split each configuration's time into this many runs, interleaved (default 4)")
    parser.add_argument("--frame-size", default="320x240", help="camera video WxH (default 320x240)")
    parser.add_argument("--frame-every", type=int, default=1, help="drive log: save every n-th frame (0: none)")
    parser.add_argument("--cnn-calls", type=int, default=500, help="back-to-back calls of the image graph alone")
    parser.add_argument("--keep-logs", type=Path, default=None, help="keep policies, video and drive logs here")
    parser.add_argument("--controller-fd", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.controller_fd is not None:
        controller_main(args.controller_fd)
        return
    width, height = (int(v) for v in args.frame_size.lower().split("x"))

    cpus = sorted(os.sched_getaffinity(0))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"drive loop at {args.rate_hz:g} Hz, {args.duration_s:g} s per configuration in {args.rounds} interleaved "
          f"rounds; CPUs {cpus} ({'one core' if len(cpus) == 1 else 'NOT pinned: run under taskset -c N'}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average {load} on "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="drive_latency_") as tmp:
        root = args.keep_logs or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        image_path, state_path, info = build_policies(root, args.rate_hz)
        chunk = args.duration_s / args.rounds
        n_frames = int(args.rate_hz * chunk) + 100
        video = write_video(root / "camera.avi", n_frames, width, height)
        print(f"image policy: NatureCNN(64x64x3 -> {CNN_FEATURES}, {info['cnn_macs'] / 1e6:.1f} M MACs) ++ state "
              f"{len(OBS_NAMES)} -> {list(NET_ARCH)} -> 2, {info['image'] / 1e6:.2f} M parameters (random); "
              f"state policy: rlab export graph, {len(OBS_NAMES)} -> {list(NET_ARCH)} -> 2, "
              f"{info['state'] / 1e3:.0f} k parameters")
        print(f"vehicle: SerialVehicle on a pty, ReferenceController in a child process; camera: {width}x{height} "
              f"MJPG file, {n_frames} frames; drive log with frame_every={args.frame_every} (PNG)")
        frames = _frames(64, width, height)
        names = ("runtime, image policy", "bare loop, image policy, sleep", "runtime, state policy")
        rounds: dict[str, list[dict]] = {name: [] for name in names}
        alone = []
        busy0, own0, wall0 = _cpu_busy_s(cpus), _own_cpu_s(), time.monotonic()
        for k in range(args.rounds):  # interleaved: a busy spell on a shared machine hits every configuration
            rounds[names[0]].append(run_runtime(image_path, video, root / f"log_image_{k}", args, chunk))
            rounds[names[1]].append(run_bare(image_path, frames, args.rate_hz, chunk))
            rounds[names[2]].append(run_runtime(state_path, video, root / f"log_state_{k}", args, chunk))
            alone.append(run_alone(image_path, frames, max(1, args.cnn_calls // args.rounds)))
        busy1, own1, wall = _cpu_busy_s(cpus), _own_cpu_s(), time.monotonic() - wall0
        if busy0 is not None and busy1 is not None:
            other = max(0.0, (busy1 - busy0) - (own1 - own0))
            print(f"other processes kept CPU(s) {cpus} busy {100 * other / (wall * len(cpus)):.0f} % of the "
                  f"{wall:.0f} s of runs (this bench: {100 * (own1 - own0) / (wall * len(cpus)):.0f} %)")
        report({name: merge(parts) for name, parts in rounds.items()}, np.concatenate(alone), args)


if __name__ == "__main__":
    main()
