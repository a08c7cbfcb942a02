"""The parts of the on-vehicle drive loop (``robot.deploy.runtime.DriveLoop``) and their errors.

Every part has a ``name`` (used in errors and the log), an optional ``start()`` (called once before the
first tick), ``run(...)`` (once per tick) and ``shutdown()`` (always called once at the end, also after
an error, an e-stop or Ctrl-C). Per tick the loop calls, in order::

    readings = Sensors.run(tick)                       # vehicle telemetry (+ camera frame)
    obs      = ObservationBuilder.run(readings)        # float32 [n_obs], by name from the metadata layout
    out      = OnnxPolicy.run(obs)                     # PolicyOutput(command, action, inference_s)
               OnnxPolicy.run(obs, readings.get("image"))   # a policy that sees the camera (ImageSpec)
    decision = Safety.run(tick, obs, out, readings, policy_latency_s)   # robot.deploy.safety
    Actuators.run(decision)                            # vehicle.write(decision.command)

Commands are ``[steer_rad, throttle_fraction]`` as the exported graph's ``command`` output: steer in
radians, positive to the **left** (the simulator's and ROS's convention), throttle as a fraction of the
top wheel speed (negative: reverse). ``PolicyMetadata`` reads the exporter's metadata JSON
(``car.onnx.json``, format ``rlab-onnx-policy``).

Only numpy, onnxruntime, OpenCV and the standard library are imported here (the on-vehicle import rule).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np

if TYPE_CHECKING:
    from robot.deploy.safety import SafetyDecision
    from robot.deploy.vehicles import Vehicle

Reading = Union[float, np.ndarray]
Readings = dict[str, Reading]

NEUTRAL_COMMAND = (0.0, 0.0)
# Fields the drive loop adds to every tick's readings (the command written on the previous tick):
# ``applied_command`` [steer_rad, throttle_fraction] and ``applied_action``, the same in the policy's
# normalised action space (the simulator's "applied action" observation entries).
RUNTIME_FIELDS = frozenset({"applied_command", "applied_action"})

# Observation names of the exported rccar policies (robot.deploy.export.observation_layout) that a real
# vehicle provides under another name. ``v_fwd`` from the wheel encoder is the speed of the driven
# wheels (it differs from the body's speed while the wheels slip). Resolved names are logged.
DEFAULT_ALIASES: dict[str, str] = {
    "v_fwd": "wheel_speed",
    "yaw_rate": "gyro[2]",
    "acc_x": "accel[0]",
    "acc_y": "accel[1]",
    "acc_z": "accel[2]",
}


# ---------------------------------------------------------------------------------------------------
# errors


class DeployError(RuntimeError):
    """Base class of the runtime's errors; the message says what failed and what to check."""


class MetadataError(DeployError):
    """The policy's metadata JSON is missing or lacks a field the runtime needs."""


class ObservationLayoutError(DeployError):
    """The policy observes fields the vehicle cannot provide (``missing`` names them)."""

    def __init__(self, missing: list[str], provides: Iterable[str]):
        self.missing = list(missing)
        self.provides = sorted(provides)
        super().__init__(
            f"the policy's observation layout needs {len(self.missing)} field(s) the vehicle cannot provide: "
            f"{', '.join(self.missing)} (the vehicle provides: {', '.join(self.provides) or 'nothing'}; "
            "give aliases= to map a layout name to one of them)")


class PolicyError(DeployError):
    """The ONNX policy cannot be loaded or does not have the expected inputs/outputs."""


class CameraError(DeployError):
    """The camera cannot be opened or stopped delivering frames."""


class VehicleError(DeployError):
    """A vehicle failed (cannot start, bad command)."""


class VehicleLinkError(VehicleError):
    """The link to the vehicle's controller is gone (serial port vanished, no telemetry)."""


class PartError(DeployError):
    """A part raised: ``part`` is its name, ``phase`` start/run/shutdown, ``tick`` the tick (or None), and
    the part's exception is ``__cause__`` (and ``original``)."""

    def __init__(self, part: str, phase: str, exc: BaseException, tick: int | None = None):
        self.part, self.phase, self.tick, self.original = part, phase, tick, exc
        self.result: Any = None  # the DriveResult (summary, ...), set by DriveLoop.run() before it raises
        where = f" at tick {tick}" if tick is not None else ""
        super().__init__(f"part '{part}' failed in {phase}(){where}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------------
# part protocol


class Part(Protocol):
    name: str

    def start(self) -> None: ...

    def run(self, *args: Any) -> Any: ...

    def shutdown(self) -> None: ...


# ---------------------------------------------------------------------------------------------------
# metadata


def metadata_path_for(onnx_path: str | Path) -> Path:
    """Where the exporter writes the metadata: ``car.onnx`` -> ``car.onnx.json`` (else ``car.json``)."""
    p = Path(onnx_path)
    first = p.with_name(p.name + ".json")
    second = p.with_suffix(".json")
    return first if first.is_file() or not second.is_file() else second


def _floats(value: Any, n: int, what: str, where: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        value = [value] * n
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise MetadataError(f"{where}: {what} must be {n} numbers, got {value!r}") from err
    if len(out) != n:
        raise MetadataError(f"{where}: {what} must have {n} entries, got {len(out)}")
    return out


@dataclass(frozen=True)
class ImageSpec:
    """The metadata's ``image`` entry (policies exported with an image encoder): the ONNX input ``input``
    takes uint8 ``[batch, height, width, channels]`` in ``color_order`` (RGB), the whole frame resized with
    cv2.INTER_AREA (``resize``)."""

    input: str = "image"
    height: int = 0
    width: int = 0
    channels: int = 3
    dtype: str = "uint8"
    color_order: str = "RGB"
    resize: str = ""

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ImageSpec:
        if not isinstance(data, Mapping):
            raise MetadataError(f"{source}: image must be an object (input, height, width, channels, ...)")
        try:
            spec = cls(input=str(data.get("input", "image")), height=int(data["height"]), width=int(data["width"]),
                       channels=int(data.get("channels", 3)), dtype=str(data.get("dtype", "uint8")),
                       color_order=str(data.get("color_order", "RGB")).upper(), resize=str(data.get("resize", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise MetadataError(f"{source}: image needs integer height and width "
                                f"({type(err).__name__}: {err})") from None
        if spec.height < 1 or spec.width < 1 or spec.channels != 3 or spec.dtype != "uint8" or \
                spec.color_order not in ("RGB", "BGR"):
            raise MetadataError(f"{source}: unsupported image entry {dict(data)} (the runtime feeds uint8 "
                                "height x width x 3 frames, RGB or BGR)")
        return spec


@dataclass(frozen=True)
class PolicyMetadata:
    """What the runtime needs from the exporter's metadata JSON (the rest is kept in ``raw``).

    ``command_low``/``command_high``: the limits of the ``command`` output in its units (rad, fraction);
    ``max_delta``: the training env's rate limit per control step in normalised action units (None if not
    recorded); ``control_hz``: the control rate the policy was trained at; ``image``: the camera input of a
    policy exported with an image encoder (None: the policy sees the state vector only).
    """

    observation_names: tuple[str, ...]
    command_low: tuple[float, float]
    command_high: tuple[float, float]
    command_names: tuple[str, ...] = ("steer_rad", "throttle_fraction")
    command_units: tuple[str, ...] = ("rad", "fraction of top wheel speed")
    action_names: tuple[str, ...] = ("steer", "throttle")
    max_delta: tuple[float, float] | None = None
    control_hz: float | None = None
    image: ImageSpec | None = None
    source: str = "<dict>"
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_obs(self) -> int:
        return len(self.observation_names)

    @classmethod
    def load(cls, onnx_path: str | Path) -> PolicyMetadata:
        path = metadata_path_for(onnx_path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise MetadataError(f"no metadata next to the policy: expected {path} (rlab export writes "
                                f"<out>.json beside <out>)") from None
        except (OSError, json.JSONDecodeError) as err:
            raise MetadataError(f"{path}: cannot read the metadata: {err}") from err
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> PolicyMetadata:
        obs = data.get("observation")
        if not isinstance(obs, Mapping) or not isinstance(obs.get("layout"), list):
            raise MetadataError(f"{source}: needs observation.layout (one entry per observation index)")
        names = _layout_names(obs["layout"], source)
        if "size" in obs and int(obs["size"]) != len(names):
            raise MetadataError(f"{source}: observation.size is {obs['size']} but the layout has {len(names)} entries")
        cmd = data.get("command")
        if not isinstance(cmd, Mapping) or "low" not in cmd or "high" not in cmd:
            raise MetadataError(f"{source}: needs command.low and command.high (limits of the command output)")
        low = _floats(cmd["low"], 2, "command.low", source)
        high = _floats(cmd["high"], 2, "command.high", source)
        if not all(lo < hi for lo, hi in zip(low, high, strict=True)):
            raise MetadataError(f"{source}: command.low {low} must be below command.high {high}")
        action = data.get("action") or {}
        max_delta = action.get("max_delta_per_step")
        control_hz = data.get("control_hz")
        return cls(
            observation_names=names, command_low=low, command_high=high,  # type: ignore[arg-type]
            command_names=tuple(cmd.get("names", cls.command_names)),
            command_units=tuple(cmd.get("units", cls.command_units)),
            action_names=tuple(action.get("names", cls.action_names)),
            max_delta=None if max_delta is None else _floats(max_delta, 2, "action.max_delta_per_step", source),
            control_hz=None if control_hz is None else float(control_hz),
            image=None if data.get("image") is None else ImageSpec.from_dict(data["image"], source),
            source=source, raw=dict(data))

    def to_normalised(self, command: Any) -> np.ndarray:
        """A command in physical units -> the policy's normalised action space (the affine map of the
        export: [low, high] -> [-1, 1])."""
        lo, hi = np.asarray(self.command_low), np.asarray(self.command_high)
        return 2.0 * (np.asarray(command, dtype=np.float64) - lo) / (hi - lo) - 1.0

    def command_step(self) -> tuple[float, float] | None:
        """``max_delta`` (normalised, per step) in command units per step, or None."""
        if self.max_delta is None:
            return None
        half = (np.asarray(self.command_high) - np.asarray(self.command_low)) / 2.0
        return tuple(float(v) for v in np.asarray(self.max_delta) * half)  # type: ignore[return-value]


def _layout_names(layout: list, source: str) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for i, entry in enumerate(layout):
        if isinstance(entry, str):
            index, name = i, entry
        elif isinstance(entry, Mapping) and "name" in entry:
            index, name = int(entry.get("index", i)), str(entry["name"])
        else:
            raise MetadataError(f"{source}: observation.layout[{i}] must be a name or {{index, name, ...}}")
        if index in names:
            raise MetadataError(f"{source}: observation.layout has index {index} twice")
        names[index] = name
    if sorted(names) != list(range(len(names))):
        raise MetadataError(f"{source}: observation.layout indices must be 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


# ---------------------------------------------------------------------------------------------------
# sensors


class Camera:
    """``cv2.VideoCapture(source)``: a device index (``0``/``"0"`` for /dev/video0) or a path/URL.

    A device is read on a grab thread (``threaded``, default for device indexes): ``VideoCapture.read()``
    blocks until the camera's next frame (33 ms at 30 fps), which must not stall the control loop, so
    ``read()`` returns the newest frame not yet returned, or None when none arrived since the last tick.
    A file is read synchronously, one frame per tick (recorded video replayed as a camera).
    ``max_failures`` consecutive failed grabs raise ``CameraError`` (from ``read()``).
    """

    def __init__(self, source: int | str = 0, *, width: int | None = None, height: int | None = None,
                 max_failures: int = 5, threaded: bool | None = None):
        if isinstance(source, str) and source.isdigit():  # "--camera 0": a device index
            source = int(source)
        self.source, self.width, self.height, self.max_failures = source, width, height, max_failures
        self.threaded = isinstance(source, int) if threaded is None else threaded
        self.cap: Any = None
        self.failures = 0  # consecutive
        self.total_failures = 0
        self.grabbed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: np.ndarray | None = None
        self._new = False
        self._error: CameraError | None = None

    def open(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            hint = (f" (is /dev/video{self.source} there and readable, and not used by another process?)"
                    if isinstance(self.source, int) else " (does the file/URL exist and can OpenCV decode it?)")
            raise CameraError(f"cannot open camera {self.source!r}: cv2.VideoCapture({self.source!r}).isOpened() "
                              f"is False{hint}")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self.cap = cap
        if self.threaded:
            self._thread = threading.Thread(target=self._grab_loop, name=f"Camera({self.source})", daemon=True)
            self._thread.start()

    def _grab(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if ok and frame is not None:
            self.failures = 0
            self.grabbed += 1
            return frame
        self.failures += 1
        self.total_failures += 1
        if self.failures >= self.max_failures:
            raise CameraError(f"camera {self.source!r}: {self.failures} consecutive reads failed (unplugged?)")
        return None

    def _grab_loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._grab()
            except Exception as err:  # raised to the loop by the next read()
                self._error = err if isinstance(err, CameraError) else CameraError(f"camera {self.source!r}: {err}")
                return
            if frame is None:
                time.sleep(0.01)
                continue
            with self._lock:
                self._frame, self._new = frame, True

    def read(self) -> np.ndarray | None:
        if not self.threaded:
            return self._grab()
        if self._error is not None:
            raise self._error
        with self._lock:
            if not self._new:
                return None
            self._new = False
            return self._frame

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class Sensors:
    """Reads the vehicle (``vehicle.read()``) and, with a camera, one frame per tick into ``"image"``.

    A vehicle that provides ``"image"`` itself (a simulator rendering the car's camera: RGB) takes precedence:
    its frame is kept and the camera's is not read into the readings (``image_source`` says which is used;
    the camera's frames are OpenCV's BGR).

    The vehicle is started here (``start()``) and closed by ``Actuators.shutdown()`` (after neutral)."""

    name = "sensors"

    def __init__(self, vehicle: Vehicle, camera: Camera | int | str | None = None):
        self.vehicle = vehicle
        self.camera = Camera(camera) if isinstance(camera, (int, str)) else camera
        self.ticks_without_frame = 0  # normal when the camera is slower than the loop

    @property
    def provides(self) -> frozenset[str]:
        extra = {"image"} if self.camera is not None else set()
        return frozenset(self.vehicle.provides) | extra

    @property
    def image_source(self) -> str | None:
        """``"vehicle"`` (its "image" reading, RGB), ``"camera"`` (OpenCV frames, BGR) or None."""
        if "image" in self.vehicle.provides:
            return "vehicle"
        return "camera" if self.camera is not None else None

    def start(self) -> None:
        self.vehicle.start()
        if self.camera is not None:
            self.camera.open()

    def run(self, tick: int) -> Readings:
        readings = dict(self.vehicle.read())
        if self.camera is not None and "image" not in self.vehicle.provides:
            frame = self.camera.read()
            if frame is None:
                self.ticks_without_frame += 1
            else:
                readings["image"] = frame
        return readings

    def shutdown(self) -> None:
        if self.camera is not None:
            self.camera.release()


# ---------------------------------------------------------------------------------------------------
# observation


@dataclass(frozen=True)
class FieldSource:
    """Where observation entry ``name`` comes from: ``readings[key]`` (element ``index`` of an array) x scale."""

    name: str
    key: str
    index: int | None = None
    scale: float = 1.0

    def describe(self) -> str:
        src = self.key if self.index is None else f"{self.key}[{self.index}]"
        return src if self.scale == 1.0 else f"{src} * {self.scale:g}"


_INDEXED = re.compile(r"(.+)\[(\d+)\]")
_DIV = re.compile(r"(.+)_div(\d+(?:\.\d+)?)")
_AXIS = re.compile(r"(.+)_([xyz])")


class ObservationBuilder:
    """Fills the policy's observation vector, entry by entry, from the readings by the layout's names.

    A layout name resolves (first match wins) to: the runtime's applied action (``applied_<action name>``,
    e.g. ``applied_steer`` -> ``applied_action[0]``); a reading of that exact name; an alias
    (``aliases``, default ``DEFAULT_ALIASES``); ``base[i]`` (element i of an array reading);
    ``<name>_div<N>`` (the reading divided by N, as ``acc_x_div10``); ``<base>_x|_y|_z`` (elements 0/1/2).
    ``check(provides)`` resolves every entry at start-up and raises ``ObservationLayoutError`` naming all
    the fields the vehicle cannot provide.
    """

    name = "observation"

    def __init__(self, metadata: PolicyMetadata, aliases: Mapping[str, str] | None = None):
        self.metadata = metadata
        self.aliases = dict(DEFAULT_ALIASES if aliases is None else aliases)
        self.sources: list[FieldSource] = []
        self.non_finite = 0  # ticks whose observation had a NaN/inf entry

    def check(self, provides: Iterable[str]) -> list[FieldSource]:
        available = set(provides) | RUNTIME_FIELDS
        sources, missing = [], []
        for name in self.metadata.observation_names:
            src = self._resolve(name, available, depth=0)
            if src is None:
                missing.append(name)
            else:
                sources.append(src)
        if missing:
            raise ObservationLayoutError(missing, set(provides))
        self.sources = sources
        return sources

    def _resolve(self, name: str, available: set[str], depth: int) -> FieldSource | None:
        if depth > 8:
            return None
        applied = {f"applied_{a}": i for i, a in enumerate(self.metadata.action_names)}
        if name in applied:
            return FieldSource(name, "applied_action", applied[name])
        if name in available:
            return FieldSource(name, name)
        if name in self.aliases:
            src = self._resolve(self.aliases[name], available, depth + 1)
            return None if src is None else FieldSource(name, src.key, src.index, src.scale)
        m = _INDEXED.fullmatch(name)
        if m and m.group(1) in available:
            return FieldSource(name, m.group(1), int(m.group(2)))
        m = _DIV.fullmatch(name)
        if m and float(m.group(2)) != 0:
            src = self._resolve(m.group(1), available, depth + 1)
            if src is not None:
                return FieldSource(name, src.key, src.index, src.scale / float(m.group(2)))
        m = _AXIS.fullmatch(name)
        if m and m.group(1) in available:
            return FieldSource(name, m.group(1), "xyz".index(m.group(2)))
        return None

    def start(self) -> None:
        if not self.sources:
            raise DeployError("ObservationBuilder.check(provides) must run before start()")

    def run(self, readings: Readings) -> np.ndarray:
        if "applied_command" in readings and "applied_action" not in readings:
            readings["applied_action"] = self.metadata.to_normalised(readings["applied_command"])
        obs = np.empty(len(self.sources), dtype=np.float32)
        for i, src in enumerate(self.sources):
            try:
                value = readings[src.key]
            except KeyError:
                raise DeployError(f"observation[{i}] {src.name!r}: the readings have no {src.key!r} (the vehicle "
                                  "declares it in `provides` but read() did not return it)") from None
            if src.index is not None:
                value = np.asarray(value).reshape(-1)[src.index]
            elif np.ndim(value) != 0:
                raise DeployError(f"observation[{i}] {src.name!r}: reading {src.key!r} has shape "
                                  f"{np.shape(value)}; name one element (e.g. {src.key}[0])")
            obs[i] = float(value) * src.scale
        if not np.all(np.isfinite(obs)):
            self.non_finite += 1
        return obs

    def shutdown(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------
# policy


@dataclass(frozen=True)
class PolicyOutput:
    command: np.ndarray  # [steer_rad, throttle_fraction], float64
    action: np.ndarray | None  # normalised, float64 (None if the graph has no "action" output)
    inference_s: float  # onnxruntime's run() alone


class OnnxPolicy:
    """An ONNX policy on onnxruntime (one thread, sequential execution, CPU unless ``providers``):
    input ``observation`` float32 [batch, n_obs], outputs ``command`` (and ``action`` if present).

    A policy exported with an image encoder also has input ``image`` uint8 [batch, H, W, 3] (``image_input``
    names it, ``image_hw`` is (H, W)); ``run(obs, frame)`` feeds it the newest frame: resized to W x H with
    cv2.INTER_AREA (whole frame, no crop) and converted BGR -> RGB when ``image_bgr`` (frames from the
    ``Camera`` part, i.e. OpenCV; the drive loop sets it from ``Sensors.image_source``; a vehicle's own
    "image" reading is RGB). Ticks without a new frame reuse the last one; before the first frame the
    command is NaN, which the safety layer turns into neutral (``non_finite_action``).
    ``image_order`` is the colour order the graph expects (the metadata's ``image.color_order``, RGB)."""

    name = "policy"
    INPUT = "observation"
    IMAGE_INPUT = "image"

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int = 1,
                 warmup: int = 3):
        import onnxruntime as ort

        self.path = Path(path)
        self.warmup = warmup
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NoSuchFile)
            raise PolicyError(f"cannot load the ONNX policy {self.path}: {type(err).__name__}: {err}") from err
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if self.INPUT not in inputs or "command" not in outputs:
            raise PolicyError(f"{self.path}: needs input 'observation' and output 'command'; it has inputs "
                              f"{sorted(inputs)} and outputs {outputs}")
        shape = inputs[self.INPUT].shape
        self.n_obs: int | None = shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None
        self.output_names = ["command"] + (["action"] if "action" in outputs else [])
        self.last_inference_s: float | None = None
        self.image_input: str | None = None
        self.image_hw: tuple[int, int] | None = None
        self.image_bgr = True  # frames arrive as OpenCV's BGR (the Camera part); the loop sets it
        self.image_order = "RGB"
        self._image: np.ndarray | None = None
        self.frames_used = 0
        if self.IMAGE_INPUT in inputs:
            ishape = inputs[self.IMAGE_INPUT].shape
            if len(ishape) != 4 or not all(isinstance(d, int) for d in ishape[1:]) or ishape[3] != 3:
                raise PolicyError(f"{self.path}: input 'image' must be uint8 [batch, H, W, 3] with fixed H, W; "
                                  f"got shape {ishape}")
            self.image_input, self.image_hw = self.IMAGE_INPUT, (int(ishape[1]), int(ishape[2]))
        extra = sorted(set(inputs) - {self.INPUT, self.IMAGE_INPUT})
        if extra:
            raise PolicyError(f"{self.path}: unexpected inputs {extra} (the runtime feeds 'observation' and 'image')")

    def configure_image(self, *, bgr: bool, spec: Any = None) -> None:
        """Where frames come from (``bgr``: OpenCV) and the metadata's ``ImageSpec`` (checked against the
        graph's input); raises ``PolicyError`` on a mismatch."""
        self.image_bgr = bool(bgr)
        if spec is not None and self.image_hw is not None:
            if (spec.height, spec.width) != self.image_hw:
                raise PolicyError(f"{self.path}: the metadata's image is {spec.height}x{spec.width} but the graph's "
                                  f"input is {self.image_hw[0]}x{self.image_hw[1]}")
            self.image_order = spec.color_order

    def prepare_image(self, frame: np.ndarray) -> np.ndarray:
        """A frame (H' x W' x 3 uint8) -> [1, H, W, 3] uint8 in the graph's colour order."""
        import cv2

        assert self.image_hw is not None
        img = np.asarray(frame)
        if img.ndim != 3 or img.shape[2] != 3:
            raise DeployError(f"camera frame must be H x W x 3, got shape {img.shape}")
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        h, w = self.image_hw
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        if self.image_bgr != (self.image_order == "BGR"):
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img)[None]

    def start(self) -> None:
        if self.n_obs is not None:
            for _ in range(self.warmup):  # the first runs allocate; keep them out of the first ticks
                feed = {self.INPUT: np.zeros((1, self.n_obs), dtype=np.float32)}
                if self.image_hw is not None:
                    feed[self.IMAGE_INPUT] = np.zeros((1, *self.image_hw, 3), dtype=np.uint8)
                self.session.run(self.output_names, feed)

    def run(self, obs: np.ndarray, image: np.ndarray | None = None) -> PolicyOutput:
        x = np.asarray(obs, dtype=np.float32).reshape(1, -1)
        feed = {self.INPUT: x}
        if self.image_input is not None:
            if image is not None:
                self._image = self.prepare_image(image)
                self.frames_used += 1
            if self._image is None:  # no frame yet: NaN -> the safety layer holds neutral
                nan = np.full(2, np.nan)
                return PolicyOutput(nan, nan.copy() if "action" in self.output_names else None, 0.0)
            feed[self.IMAGE_INPUT] = self._image
        t0 = time.perf_counter()
        result = self.session.run(self.output_names, feed)
        dt = time.perf_counter() - t0
        self.last_inference_s = dt
        command = np.asarray(result[0], dtype=np.float64).reshape(-1)
        action = np.asarray(result[1], dtype=np.float64).reshape(-1) if len(result) > 1 else None
        return PolicyOutput(command, action, dt)

    def shutdown(self) -> None:
        self.session = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------------
# actuators


class Actuators:
    """Writes the safety layer's command to the vehicle (``vehicle.write``), forwarding e-stop and reset
    requests first. ``shutdown()`` sends neutral and closes the vehicle (also when neutral fails)."""

    name = "actuators"

    def __init__(self, vehicle: Vehicle):
        self.vehicle = vehicle
        self.written = 0

    def start(self) -> None:
        pass

    def run(self, decision: SafetyDecision) -> None:
        if decision.estop_vehicle:
            self.vehicle.estop(decision.estop_vehicle)
        if decision.reset_vehicle:
            self.vehicle.reset_estop()
        self.vehicle.write(decision.command)
        self.written += 1

    def neutral(self) -> None:
        self.vehicle.neutral()

    def shutdown(self) -> None:
        try:
            self.vehicle.neutral()
        finally:
            self.vehicle.close()
