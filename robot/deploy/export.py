"""Export a finished rccar run's SAC policy to ONNX for the on-vehicle runtime (``rlab export RUN``).

This is the one module of ``robot.deploy`` that imports torch, stable-baselines3 and the simulator
(import-linter exempts it and ``robot.deploy.cli_export``; no other ``robot.deploy`` module may import
either). The vehicle side only needs the ``.onnx`` file, its metadata JSON and onnxruntime.

The graph (input ``observation``: float32 ``[batch, n_obs]``, the ``RCCarEnv`` state vector) is

1. observation normalisation: ``clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip)``. SB3's SAC
   trains on raw observations, so the defaults are mean 0, std 1, clip +inf (exactly the identity).
   They are buffers of the graph, not constants baked into the first layer, so a policy trained under
   ``VecNormalize`` can be exported with its statistics: ``ObsNormalization.from_vecnormalize(vn)``
   (``std = sqrt(var + epsilon)``, ``clip = clip_obs``, as ``VecNormalize.normalize_obs`` does);
2. SB3's deterministic actor: ``tanh(mu(latent_pi(features(obs))))``
   (``Actor.get_action_dist_params`` then the squashed distribution's mode), then SB3's
   ``unscale_action`` from [-1, 1] to the action space bounds -- exactly what
   ``model.predict(obs, deterministic=True)`` returns;
3. output ``action``: that action clipped to the action space and to [-1, 1] (the range ``RCCarEnv.step``
   accepts); a row with a non-finite entry becomes ``[0, -1]`` (straight, minimum throttle), the
   env's own fallback;
4. output ``command``: ``action`` in physical units with the env's mapping, clipped:
   ``steer_rad = action[0] * max_steer`` in [-max_steer, max_steer] rad and
   ``throttle_fraction = min_throttle + (action[1] + 1) / 2 * (1 - min_throttle)`` in [min_throttle, 1]
   (fraction of the top wheel speed; negative only where min_throttle < 0 allows reversing).

``max_steer``, ``min_throttle`` (and ``n_lookahead``, ``n_rays``, ``ray_range_m``, ``max_delta``,
``max_wheel_speed``) come from the run's env section (``final/policy.json``, else ``config.yaml``) where it
sets them, else from ``RCCarEnv``'s defaults: the run's config does not expose them, so training used
the defaults.

The graph is stateless. ``RCCarEnv`` also rate-limits the *applied* action (at most ``max_delta`` per
control step, in normalised units) and feeds the applied action back as observation entries 5 and 6:
the vehicle runtime must do the same (the metadata records ``max_delta``).

Encoder runs (``env.encoder`` set: SAC trained on ``EncodedObservation``'s flat vector, the frozen
encoder's features of the camera image followed by the state vector) export with a second input,
``image``: uint8 ``[batch, H, W, 3]``, RGB, at the encoder's image size (``env.image_size``). The graph
computes ``encoder(image / 255)`` (NCHW) from the run's own copy of the encoder (``<run>/encoder/``, else
``env.encoder``), concatenates ``[features, observation]`` exactly as ``EncodedObservation`` does and goes
on as above; the normalisation then covers that whole vector (``feature_dim + n_state`` entries, features
first -- what a ``VecNormalize`` around the encoded env would see). The metadata's ``image`` entry says
how the runtime must prepare the frame; ``observation`` keeps the layout of the state part only.
Image policies without a frozen encoder (SB3's CNN trained end to end on the dict observation) are still
refused.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import platform
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "rlab-onnx-policy"
FORMAT_VERSION = 1
FINAL = "final"
INPUT_NAME = "observation"
IMAGE_INPUT_NAME = "image"
IMAGE_RESIZE_RULE = ("the whole camera frame resized to width x height with cv2.INTER_AREA (no crop; the aspect ratio "
                     "is not kept), converted to RGB (OpenCV's frames are BGR), uint8 0..255, channel-last")
OUTPUT_NAMES = ("command", "action")
ACTION_NAMES = ("steer", "throttle")
COMMAND_NAMES = ("steer_rad", "throttle_fraction")
# RCCarEnv parameters the export depends on; the run's env section overrides RCCarEnv's defaults.
ENV_PARAMS = ("max_steer", "min_throttle", "n_lookahead", "n_rays", "ray_range_m", "max_delta", "max_wheel_speed",
              "control_hz")
PARITY_SAMPLES = 64
PARITY_TOL = 1e-4


class ExportError(ValueError):
    """A run that cannot be exported (missing files, unsupported policy); the message says why."""


@dataclass(frozen=True)
class ObsNormalization:
    """``clip((obs - mean) / std, -clip, clip)`` in the graph, before the actor."""

    mean: np.ndarray
    std: np.ndarray
    clip: float = math.inf

    @classmethod
    def identity(cls, n_obs: int) -> ObsNormalization:
        return cls(np.zeros(n_obs, np.float32), np.ones(n_obs, np.float32))

    @classmethod
    def from_vecnormalize(cls, vec_normalize: Any) -> ObsNormalization:
        """The statistics of an SB3 ``VecNormalize`` (``norm_obs`` on a Box observation)."""
        rms = vec_normalize.obs_rms
        return cls(np.asarray(rms.mean, np.float32), np.sqrt(np.asarray(rms.var) + vec_normalize.epsilon).astype(
            np.float32), float(vec_normalize.clip_obs))

    def checked(self, n_obs: int) -> ObsNormalization:
        mean, std = np.asarray(self.mean, np.float32).ravel(), np.asarray(self.std, np.float32).ravel()
        if mean.shape != (n_obs,) or std.shape != (n_obs,):
            raise ExportError(f"observation normalisation: mean and std need {n_obs} entries, got {mean.shape[0]} "
                              f"and {std.shape[0]}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()) or not self.clip > 0:
            raise ExportError("observation normalisation: mean must be finite, std finite and > 0, clip > 0")
        return ObsNormalization(mean, std, float(self.clip))


class PolicyGraph(nn.Module):
    """Normalisation, SB3's deterministic SAC actor, unscaling and clipping (see the module docstring).

    ``actor`` is an SB3 SAC ``Actor`` (anything with ``get_action_dist_params(obs) -> (mean, ...)``);
    forward returns ``(command, action)``, both ``[batch, 2]``.
    """

    def __init__(self, actor: nn.Module, norm: ObsNormalization, action_low: np.ndarray, action_high: np.ndarray,
                 max_steer: float, min_throttle: float) -> None:
        super().__init__()
        self.actor = actor
        f32 = torch.float32
        self.register_buffer("obs_mean", torch.as_tensor(norm.mean, dtype=f32))
        self.register_buffer("obs_std", torch.as_tensor(norm.std, dtype=f32))
        self.register_buffer("obs_clip", torch.tensor(norm.clip, dtype=f32))
        low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
        self.register_buffer("action_low", torch.as_tensor(low))
        self.register_buffer("action_high", torch.as_tensor(high))
        self.register_buffer("action_min", torch.as_tensor(np.maximum(low, -1.0)))
        self.register_buffer("action_max", torch.as_tensor(np.minimum(high, 1.0)))
        self.register_buffer("action_fallback", torch.tensor([0.0, -1.0], dtype=f32))
        self.register_buffer("command_scale", torch.tensor([max_steer, (1.0 - min_throttle) / 2.0], dtype=f32))
        self.register_buffer("command_offset", torch.tensor([0.0, min_throttle + (1.0 - min_throttle) / 2.0],
                                                            dtype=f32))
        self.register_buffer("command_min", torch.tensor([-max_steer, min_throttle], dtype=f32))
        self.register_buffer("command_max", torch.tensor([max_steer, 1.0], dtype=f32))

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(self.actor.get_action_dist_params(self.normalize(observation))[0])

    def normalize(self, observation: torch.Tensor) -> torch.Tensor:
        x = (observation - self.obs_mean) / self.obs_std
        return torch.minimum(torch.maximum(x, -self.obs_clip), self.obs_clip)

    def finish(self, mean_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(command, action) from the actor's pre-squash mean actions: squash, unscale, clip, map."""
        squashed = torch.tanh(mean_actions)  # the squashed Gaussian's mode (SB3: deterministic=True)
        action = self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)  # unscale_action
        action = torch.minimum(torch.maximum(action, self.action_min), self.action_max)
        finite = torch.isfinite(action).all(dim=1, keepdim=True)
        action = torch.where(finite, action, self.action_fallback)
        command = action * self.command_scale + self.command_offset
        command = torch.minimum(torch.maximum(command, self.command_min), self.command_max)
        return command, action


class EncoderPolicyGraph(nn.Module):
    """``PolicyGraph`` behind the frozen image encoder: forward(image uint8 [batch, H, W, 3] RGB, observation
    float32 [batch, n_state]) -> ``policy([encoder(image / 255), observation])`` (``EncodedObservation``)."""

    def __init__(self, encoder: nn.Module, policy: PolicyGraph) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.policy = policy

    def forward(self, image: torch.Tensor, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 255.0
        features = self.encoder(x)
        return self.policy(torch.cat([features, observation.to(torch.float32)], dim=1))


# ------------------------------------------------------------------------------------------ run


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: cannot read ({err})") from None


def env_section(run_dir: Path) -> dict:
    """The run's env config: ``final/policy.json``'s ``env``, else ``config.yaml``'s, else empty."""
    policy_json = run_dir / FINAL / "policy.json"
    if policy_json.is_file():
        env = _read_json(policy_json).get("env")
        if isinstance(env, dict):
            return env
    config = run_dir / "config.yaml"
    if config.is_file():
        import yaml

        env = (yaml.safe_load(config.read_text()) or {}).get("env")
        if isinstance(env, dict):
            return env
    return {}


def env_params(env: dict) -> dict[str, Any]:
    """`ENV_PARAMS`: the run's env section where it sets them, else ``RCCarEnv``'s defaults."""
    from sim.rccar import RCCarEnv

    defaults = {name: p.default for name, p in inspect.signature(RCCarEnv.__init__).parameters.items()}
    params = {name: env.get(name, defaults[name]) for name in ENV_PARAMS}
    params["max_delta"] = [float(v) for v in params["max_delta"]]
    for name in ("max_steer", "min_throttle", "ray_range_m", "max_wheel_speed", "control_hz"):
        params[name] = float(params[name])
    params["n_lookahead"], params["n_rays"] = int(params["n_lookahead"]), int(params["n_rays"])
    if not params["max_steer"] > 0 or not -1.0 <= params["min_throttle"] < 1.0:
        raise ExportError(f"env: need max_steer > 0 and min_throttle in [-1, 1), got {params['max_steer']} and "
                          f"{params['min_throttle']}")
    return params


def observation_layout(n_lookahead: int, n_rays: int, ray_range_m: float = 5.0,
                       observation: str = "full") -> list[dict]:
    """One entry per observation index (``RCCarEnv._obs``): name, unit, meaning. ``observation="onboard"``:
    only `sim.rccar.ONBOARD_STATE` (what a real car measures), no checkpoints or rays."""
    from sim.rccar import ONBOARD_STATE

    layout = [
        ("v_fwd", "m/s", "forward speed"),
        ("v_lat", "m/s", "lateral speed (left positive)"),
        ("yaw_rate", "rad/s", "yaw rate (counter-clockwise positive)"),
        ("acc_x_div10", "m/s^2 / 10", "forward acceleration / 10"),
        ("acc_y_div10", "m/s^2 / 10", "lateral acceleration / 10"),
        ("applied_steer", "normalised [-1, 1]", "steer applied last step (after the max_delta rate limit), x max_steer"
                                                " rad"),
        ("applied_throttle", "normalised [-1, 1]", "throttle applied last step (after the rate limit), before the "
                                                   "min_throttle..1 mapping"),
    ]
    if observation == "onboard":
        rows = {name: (name, unit, what) for name, unit, what in layout}
        return [{"index": i, "name": n, "unit": rows[n][1], "description": rows[n][2]}
                for i, n in enumerate(ONBOARD_STATE)]
    for k in range(n_lookahead):
        layout.append((f"checkpoint{k}_x_div5", "m / 5", f"checkpoint {k} ahead, car frame, x forward"))
        layout.append((f"checkpoint{k}_y_div5", "m / 5", f"checkpoint {k} ahead, car frame, y left"))
    entries = [{"index": i, "name": n, "unit": u, "description": d} for i, (n, u, d) in enumerate(layout)]
    angles = np.linspace(-math.pi / 2, math.pi / 2, n_rays) if n_rays else []
    for k, angle in enumerate(angles):
        entries.append({"index": len(entries), "name": f"ray{k}", "unit": f"fraction of {ray_range_m:g} m",
                        "description": f"distance to a wall at {float(angle):+.4f} rad from the heading "
                                       "(left positive), 1 if none within range", "angle_rad": float(angle)})
    return entries


def load_run_policy(run_dir: Path) -> Any:
    """The run's ``final/policy.zip`` as an SB3 SAC on the CPU; `ExportError` naming the folder if missing."""
    from stable_baselines3 import SAC

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a run folder (no such folder)")
    path = run_dir / FINAL / "policy.zip"
    if not path.is_file():
        raise ExportError(f"{run_dir} has no {FINAL}/policy.zip (the run has not finished; resume it with "
                          f"rlab train rccar --resume {run_dir})")
    return SAC.load(path, device="cpu")


def _encoder_folder(run_dir: Path, env: dict) -> Path | None:
    """The encoder of an encoder run: the run's copy ``<run>/encoder/``, else ``env.encoder``; None for a run
    without one; `ExportError` when the run names one that is gone."""
    if not env.get("encoder"):
        return None
    for folder in (run_dir / "encoder", Path(str(env["encoder"]))):
        if folder.is_dir():
            return folder
    raise ExportError(f"{run_dir}: trained with the image encoder env.encoder={env['encoder']!r}, but neither "
                      f"{run_dir / 'encoder'} nor that folder exists (the graph needs the encoder's weights)")


def _load_run_encoder(folder: Path, env: dict) -> Any:
    """The run's frozen encoder (``robot.rccar.encoder.load_encoder``: eval mode, gradients off); its image
    size must be the run's ``env.image_size``."""
    from robot.rccar.encoder import load_encoder

    try:
        return load_encoder(folder, image_size=int(env["image_size"]) if env.get("image_size") else None)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err)) from None


def _check_supported(run_dir: Path, env: dict, model: Any, encoder: bool = False) -> int:
    """The observation size of a SAC policy on a flat vector (the state, or with `encoder` the encoded image
    and the state) with a 2-D Box action; `ExportError` otherwise."""
    from gymnasium import spaces

    obs_space = model.observation_space
    if ((env.get("image_size") and not encoder) or not isinstance(obs_space, spaces.Box)
            or len(obs_space.shape) != 1):
        raise ExportError(f"export of image policies without a frozen encoder is not supported: {run_dir}'s policy "
                          f"observes {obs_space} (only the state vector, or env.encoder features + state, can be "
                          "exported)")
    act_space = model.action_space
    if not isinstance(act_space, spaces.Box) or act_space.shape != (2,):
        raise ExportError(f"{run_dir}: expected a [steer, throttle] Box action, got {act_space}")
    if not getattr(model.policy, "squash_output", False) or not hasattr(model.policy, "actor"):
        raise ExportError(f"{run_dir}: expected an SB3 SAC policy (tanh-squashed actor), got "
                          f"{type(model.policy).__name__}")
    return int(obs_space.shape[0])


def build_policy_graph(model: Any, params: dict, normalization: ObsNormalization | None = None) -> PolicyGraph:
    n_obs = int(model.observation_space.shape[0])
    norm = (normalization or ObsNormalization.identity(n_obs)).checked(n_obs)
    model.policy.set_training_mode(False)
    return PolicyGraph(model.policy.actor, norm, model.action_space.low, model.action_space.high,
                       params["max_steer"], params["min_throttle"]).eval()


def export_graph(graph: nn.Module, n_obs: int, out: Path, opset: int = 17,
                 image_hw: tuple[int, int] | None = None) -> Path:
    """``torch.onnx.export`` with input ``observation`` float32 [batch, n_obs] and a dynamic batch axis;
    with `image_hw` (an `EncoderPolicyGraph`) first input ``image`` uint8 [batch, H, W, 3].

    The TorchScript exporter (``dynamo=False``): the torch.export one needs onnxscript, which the lab
    does not install, and this graph (an MLP) gains nothing from it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example: tuple[torch.Tensor, ...] = (torch.zeros(1, n_obs, dtype=torch.float32),)
    inputs = [INPUT_NAME]
    if image_hw is not None:
        example = (torch.zeros(1, *image_hw, 3, dtype=torch.uint8), *example)
        inputs = [IMAGE_INPUT_NAME, *inputs]
    axes = {name: {0: "batch"} for name in (*inputs, *OUTPUT_NAMES)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(graph, example, str(out), dynamo=False, input_names=inputs,
                          output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    import onnx

    onnx.checker.check_model(onnx.load(str(out)))
    return out


@torch.no_grad()
def encode_images(encoder: nn.Module, images: np.ndarray) -> np.ndarray:
    """``EncodedObservation``'s features of (n, H, W, 3) uint8 RGB images, one image at a time as it does."""
    out = [encoder(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float() / 255.0)[0].numpy()
           for im in np.asarray(images)]
    return np.asarray(out, dtype=np.float32)


def _parity(onnx_path: Path, model: Any, n_obs: int, norm: ObsNormalization | None,
            encoder: nn.Module | None = None) -> dict | None:
    """Largest |ONNX action - model.predict(deterministic=True)| on random observations (identity
    normalisation only: with statistics, predict would see unnormalised inputs); None without onnxruntime.
    With `encoder`: random images and states, predict on ``[encode_images(images), states]``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    feed: dict[str, np.ndarray] = {}
    n_features = 0
    if encoder is not None:
        size = int(encoder.image_size)
        images = rng.integers(0, 256, size=(PARITY_SAMPLES, size, size, 3), dtype=np.uint8)
        feed[IMAGE_INPUT_NAME] = images
        n_features = int(encoder.feature_dim)
    obs = rng.normal(0.0, 2.0, size=(PARITY_SAMPLES, n_obs)).astype(np.float32)
    if norm is not None:
        obs = (obs * norm.std + norm.mean).astype(np.float32)
    if encoder is not None:
        obs[:, :n_features] = encode_images(encoder, images)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed[INPUT_NAME] = obs[:, n_features:]
    _, action = session.run(list(OUTPUT_NAMES), feed)
    normed = obs if norm is None else np.clip((obs - norm.mean) / norm.std, -norm.clip, norm.clip)
    expected = np.clip(model.predict(normed, deterministic=True)[0], -1.0, 1.0)
    diff = float(np.max(np.abs(action - expected)))
    if not diff <= PARITY_TOL:
        raise ExportError(f"exported graph disagrees with model.predict by {diff:.3g} (tolerance {PARITY_TOL})")
    return {"samples": PARITY_SAMPLES, "max_abs_diff_action": diff, "onnxruntime": ort.__version__}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import onnx
    import stable_baselines3

    return {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def metadata_path(onnx_path: Path) -> Path:
    """``car.onnx`` -> ``car.onnx.json``."""
    return Path(onnx_path).with_name(Path(onnx_path).name + ".json")


def export_onnx(run_dir: Path, out: Path, opset: int = 17, *,
                normalization: ObsNormalization | None = None) -> tuple[Path, Path]:
    """Export ``run_dir/final/policy.zip`` to `out` (ONNX) and its metadata to ``<out>.json``.

    `normalization`: observation statistics to put in the graph (default: none, mean 0 / std 1, as SAC
    trains). Raises `ExportError` for a run without a final policy or with an unsupported (image) policy.
    """
    run_dir, out = Path(run_dir), Path(out)
    model = load_run_policy(run_dir)
    env = env_section(run_dir)
    encoder_dir = _encoder_folder(run_dir, env)
    n_obs = _check_supported(run_dir, env, model, encoder=encoder_dir is not None)
    encoder = _load_run_encoder(encoder_dir, env) if encoder_dir is not None else None
    n_features = int(encoder.feature_dim) if encoder is not None else 0
    params = env_params(env)
    mode = env.get("observation", "full")
    expected = len(observation_layout(params["n_lookahead"], params["n_rays"], observation=mode))
    if n_obs != n_features + expected:
        with_features = f"{n_features} encoder features + " if encoder is not None else ""
        raise ExportError(f"{run_dir}: the policy observes {n_obs} values, but {with_features}the env's "
                          f"{mode} layout (n_lookahead {params['n_lookahead']}, n_rays {params['n_rays']}) has "
                          f"{n_features + expected}")
    policy_graph = build_policy_graph(model, params, normalization)
    if encoder is None:
        graph: nn.Module = policy_graph
        onnx_path = export_graph(graph, n_obs, out, opset)
    else:
        graph = EncoderPolicyGraph(encoder, policy_graph).eval()
        size = int(encoder.image_size)
        onnx_path = export_graph(graph, expected, out, opset, image_hw=(size, size))
    parity = _parity(onnx_path, model, n_obs, normalization.checked(n_obs) if normalization else None, encoder)
    meta = _metadata(run_dir, onnx_path, opset, env, params, policy_graph, model, parity,
                     encoder=encoder, encoder_dir=encoder_dir)
    meta_path = metadata_path(onnx_path)
    meta_path.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return onnx_path, meta_path


def _metadata(run_dir: Path, onnx_path: Path, opset: int, env: dict, params: dict, graph: PolicyGraph, model: Any,
              parity: dict | None, *, encoder: nn.Module | None = None, encoder_dir: Path | None = None) -> dict:
    n_features = int(encoder.feature_dim) if encoder is not None else 0
    n_obs = int(graph.obs_mean.shape[0]) - n_features  # the state part
    max_steer, min_throttle = params["max_steer"], params["min_throttle"]
    policy_json = run_dir / FINAL / "policy.json"
    policy_meta = _read_json(policy_json) if policy_json.is_file() else {}
    inputs = [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", n_obs]}]
    extra: dict[str, Any] = {}
    normalization_scope = "observation"
    if encoder is not None:
        size = int(encoder.image_size)
        inputs.insert(0, {"name": IMAGE_INPUT_NAME, "dtype": "uint8", "shape": ["batch", size, size, 3]})
        extra["image"] = {
            "input": IMAGE_INPUT_NAME, "height": size, "width": size, "channels": 3, "dtype": "uint8",
            "color_order": "RGB", "layout": "NHWC", "range": [0, 255], "resize": IMAGE_RESIZE_RULE,
            "encoder": {**encoder.config(), "channels": list(encoder.channels), "folder": str(encoder_dir),
                        "in_graph": "features = encoder(image / 255, NCHW); policy input = [features, observation]"},
        }
        normalization_scope = (f"the policy input [encoder features ({n_features}), observation ({n_obs})], "
                               "features first")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "onnx": {
            "file": onnx_path.name, "sha256": _sha256(onnx_path), "opset": opset,
            "inputs": inputs,
            "outputs": [{"name": "command", "dtype": "float32", "shape": ["batch", 2], "names": list(COMMAND_NAMES)},
                        {"name": "action", "dtype": "float32", "shape": ["batch", 2], "names": list(ACTION_NAMES)}],
        },
        "observation": {
            "size": n_obs,
            "layout": observation_layout(params["n_lookahead"], params["n_rays"], params["ray_range_m"],
                                         env.get("observation", "full")),
            "normalization": {"formula": "clip((observation - mean) / std, -clip, clip), inside the graph",
                              "applies_to": normalization_scope,
                              "mean": graph.obs_mean.tolist(), "std": graph.obs_std.tolist(),
                              "clip": float(graph.obs_clip)},
        },
        **extra,
        "action": {
            "names": list(ACTION_NAMES), "low": [-1.0, -1.0], "high": [1.0, 1.0], "unit": "normalised",
            "policy_space_low": graph.action_low.tolist(), "policy_space_high": graph.action_high.tolist(),
            "non_finite_fallback": graph.action_fallback.tolist(),
            "max_delta_per_step": params["max_delta"],
            "rate_limit": "not in the graph: the runtime moves the applied action at most max_delta per control step "
                          "toward `action` and feeds the applied action back as observation 5 and 6 (RCCarEnv.step)",
        },
        "command": {
            "names": list(COMMAND_NAMES), "units": ["rad", "fraction of top wheel speed"],
            "low": [-max_steer, min_throttle], "high": [max_steer, 1.0],
            "mapping": {"steer_rad": "action[0] * max_steer",
                        "throttle_fraction": "min_throttle + (action[1] + 1) / 2 * (1 - min_throttle)"},
            "max_steer_rad": max_steer, "min_throttle": min_throttle,
            "max_wheel_speed_rad_s": params["max_wheel_speed"],
        },
        "control_hz": float(policy_meta.get("control_hz", params["control_hz"])),
        "policy": {"algorithm": type(model).__name__, "file": f"{FINAL}/policy.zip",
                   "sha256": _sha256(run_dir / FINAL / "policy.zip"), "num_timesteps": int(model.num_timesteps),
                   "deterministic": True},
        "run_dir": str(run_dir.resolve()),
        "track": policy_meta.get("track", env.get("track")),
        "env": env,
        "env_params": params,
        "parity": parity,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
