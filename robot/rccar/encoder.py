"""Image observations through a frozen, lab-pretrained encoder (no pretrained weights can be downloaded here).

The car's camera images (``RCCarEnv(image_size=N)``: obs ``{"state", "image"}``) are encoded by a small
convolutional network pretrained as an autoencoder on simulator images, then frozen for SAC:

    rlab rccar encoder --track Monza --out encoders/monza     # collect images, pretrain, save

1. `collect_images` drives pure pursuit at random throttles and lookaheads with slowly drifting noise on
   its steering (an Ornstein-Uhlenbeck process), from random places on the circuit, so the images show
   the centre line, off-centre views and walls close up; crashes reset the env.
2. `pretrain_encoder` trains `ConvEncoder` (4 convolutions of stride 2, a linear layer, LayerNorm, tanh:
   features in [-1, 1], on the scale of the state vector) with a mirror-image decoder on the MSE of the
   reconstructed image in [0, 1]. `save_encoder` / `load_encoder` keep it as a folder: ``encoder.pt`` (the
   state dict) and ``encoder.json`` (architecture, image size, how it was built).
3. `FrozenEncoderExtractor` is an SB3 features extractor for the dict observation: the encoder's features
   of ``obs["image"]`` concatenated with ``obs["state"]``. Its weights are buffers, not parameters: no
   optimiser sees them, SAC's Polyak update of the target critic leaves them alone, and they still travel
   with ``policy.state_dict()`` (so a saved policy carries its encoder) and with ``.to(device)``.

How SB3 hands images to the extractor: SAC wraps the env in ``VecTransposeImage`` when an image space
(uint8, bounds 0..255, 3 dims) is channel-last, so the policy's space is (3, N, N); and `preprocess_obs`
divides such spaces by 255 when the policy's ``normalize_images`` is true (the default). The extractor reads
the layout from the space it is given and takes ``normalize_images`` (what the policy was told) to know
whether the images arrive in [0, 1] or in [0, 255]; it never divides twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

WEIGHTS_FILE = "encoder.pt"
META_FILE = "encoder.json"
FORMAT = "rlab-rccar-encoder/1"
CHANNELS = (16, 32, 32, 64)
"""Output channels of the four stride-2 convolutions."""


def _grid(image_size: int, n_layers: int) -> int:
    """Spatial size after `n_layers` convolutions of kernel 4, stride 2, padding 1 (each halves, rounding down)."""
    for _ in range(n_layers):
        image_size //= 2
    return image_size


class ConvEncoder(nn.Module):
    """(B, 3, N, N) float images in [0, 1] -> (B, feature_dim) features in [-1, 1]."""

    def __init__(self, image_size: int, feature_dim: int = 64, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        if _grid(image_size, len(channels)) < 1:
            raise ValueError(f"encoder: {len(channels)} stride-2 layers need images of at least "
                             f"{2 ** len(channels)} px, got {image_size}")
        self.image_size, self.feature_dim, self.channels = int(image_size), int(feature_dim), tuple(channels)
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.grid = _grid(image_size, len(channels))
        self.fc = nn.Linear(c_in * self.grid * self.grid, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.fc(self.conv(images).flatten(1))))

    def config(self) -> dict:
        return {"image_size": self.image_size, "feature_dim": self.feature_dim, "channels": list(self.channels)}


class ConvDecoder(nn.Module):
    """The encoder's mirror image: features -> (B, 3, N, N) in [0, 1] (used only for pretraining)."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        self.image_size, self.grid = encoder.image_size, encoder.grid
        chans = list(encoder.channels)[::-1]
        self.c0 = chans[0]
        self.fc = nn.Linear(encoder.feature_dim, self.c0 * self.grid * self.grid)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans, [*chans[1:], 3], strict=True):
            layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
        self.deconv = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc(features).view(-1, self.c0, self.grid, self.grid)
        x = self.deconv(x)
        if x.shape[-1] != self.image_size:  # sizes that are not a multiple of 16
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class Autoencoder(nn.Module):
    def __init__(self, image_size: int, feature_dim: int = 64) -> None:
        super().__init__()
        self.encoder = ConvEncoder(image_size, feature_dim)
        self.decoder = ConvDecoder(self.encoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def _to_chw(images: np.ndarray) -> torch.Tensor:
    """(n, N, N, 3) uint8 -> (n, 3, N, N) uint8 tensor (scaled to [0, 1] per batch, to keep memory small)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------ images


def collect_images(make_env: Callable[[], Any], n: int, seed: int, segment_steps: int = 80) -> np.ndarray:
    """`n` camera images (n, N, N, 3) uint8 from noisy pure-pursuit drives on ``make_env()`` (an `RCCarEnv`
    with ``image_size`` set, or a wrapper of one).

    Every `segment_steps` steps the drive restarts at a random place on the circuit with a new random
    throttle (0.15..0.6), lookahead (0.5..2 m) and steering-noise level (0..0.6 of full lock, drifting
    slowly, so the car wanders off the line and into walls); a crash or a stall resets the env (its
    reset mode: teleport or recover) and the drive goes on."""
    from robot.rccar.pursuit import PurePursuit

    if n < 1:
        raise ValueError(f"collect_images: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    env = make_env()
    try:
        space = env.observation_space
        if not isinstance(space, spaces.Dict) or "image" not in space.spaces:
            raise ValueError("collect_images: the env has no camera image in its observation "
                             "(build RCCarEnv with image_size=N)")
        images = np.empty((n, *space["image"].shape), dtype=np.uint8)
        length = env.unwrapped.track.length
        obs, info = env.reset(seed=seed, options={"start_s": float(rng.uniform(0, length))})
        k, left, noise, sigma, pursuit = 0, segment_steps, 0.0, 0.0, PurePursuit()
        while k < n:
            if left == segment_steps:
                pursuit = PurePursuit(throttle=float(rng.uniform(0.15, 0.6)), lookahead_m=float(rng.uniform(0.5, 2.0)))
                sigma, noise = float(rng.uniform(0.0, 0.6)), 0.0
            noise = 0.85 * noise + sigma * math.sqrt(1 - 0.85 ** 2) * float(rng.normal())
            action = pursuit.act(env, info)
            action[0] = np.clip(action[0] + noise, -1.0, 1.0)
            obs, _, terminated, truncated, info = env.step(action)
            images[k] = obs["image"]
            k += 1
            left -= 1
            if left == 0 and k < n:  # a new segment somewhere else on the circuit
                obs, info = env.reset(options={"restart": True, "start_s": float(rng.uniform(0, length))})
                left = segment_steps
            elif terminated or truncated:
                obs, info = env.reset()
    finally:
        env.close()
    return images


# -------------------------------------------------------------------------------------- pretraining


def _train_autoencoder(images: np.ndarray, feature_dim: int, steps: int, batch_size: int, lr: float,
                       seed: int) -> tuple[Autoencoder, list[float]]:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise ValueError(f"pretrain_encoder: images must be (n, N, N, 3) uint8, got {images.shape} {images.dtype}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"pretrain_encoder: steps and batch_size must be >= 1, got {steps} and {batch_size}")
    data = _to_chw(images)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's torch RNG
        torch.manual_seed(seed)
        model = Autoencoder(images.shape[1], feature_dim)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        batch = data[torch.from_numpy(rng.integers(0, len(data), batch_size))].float() / 255.0
        loss = F.mse_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


def pretrain_encoder(images: np.ndarray, feature_dim: int = 64, steps: int = 1500, batch_size: int = 64,
                     lr: float = 1e-3, seed: int = 0) -> tuple[ConvEncoder, list[float]]:
    """Train an autoencoder on (n, N, N, 3) uint8 images (MSE in [0, 1]); returns its encoder (eval mode)
    and the training loss of every minibatch."""
    model, losses = _train_autoencoder(images, feature_dim, steps, batch_size, lr, seed)
    return model.encoder, losses


@torch.no_grad()
def reconstruction_mse(model: Autoencoder, images: np.ndarray, batch_size: int = 256) -> float:
    """Mean squared error (pixels in [0, 1]) of the autoencoder's reconstruction of `images`."""
    data, total = _to_chw(images), 0.0
    for i in range(0, len(data), batch_size):
        batch = data[i:i + batch_size].float() / 255.0
        total += float(F.mse_loss(model(batch), batch, reduction="sum"))
    return total / data.numel()


# ---------------------------------------------------------------------------------------- save/load


def _folder(path: str | Path) -> Path:
    """An encoder folder, also when given the path of one of its two files."""
    path = Path(path)
    return path.parent if path.name in (WEIGHTS_FILE, META_FILE) else path


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_encoder(encoder: ConvEncoder, path: str | Path, info: dict | None = None) -> Path:
    """Write ``encoder.pt`` (state dict) and ``encoder.json`` (architecture, image size, and `info`, e.g. how
    it was built) into the folder `path`; returns the folder."""
    folder = _folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    _write_atomic(folder / WEIGHTS_FILE, lambda tmp: torch.save(state, tmp))
    meta = {"format": FORMAT, **encoder.config(), **(info or {})}
    _write_atomic(folder / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n"))
    return folder


def read_encoder_meta(path: str | Path) -> dict:
    """The encoder folder's ``encoder.json``, checked; raises FileNotFoundError or ValueError naming the file."""
    folder = _folder(path)
    meta_file, weights_file = folder / META_FILE, folder / WEIGHTS_FILE
    for f in (meta_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"encoder {f}: missing ({folder} is not an encoder folder; build one with "
                                    f"`rlab rccar encoder --track TRACK --out {folder}`)")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, OSError) as err:
        raise ValueError(f"encoder {meta_file}: corrupt ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"encoder {meta_file}: not an rccar encoder description (format {found!r}, "
                         f"expected {FORMAT!r})")
    try:
        size, dim, channels = int(meta["image_size"]), int(meta["feature_dim"]), tuple(int(c) for c in meta["channels"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"encoder {meta_file}: corrupt architecture ({type(err).__name__}: {err})") from err
    return {**meta, "image_size": size, "feature_dim": dim, "channels": channels}


def load_encoder(path: str | Path, image_size: int | None = None) -> ConvEncoder:
    """The encoder saved in folder `path` (eval mode, gradients off). With `image_size`, its images must be that
    size. Raises FileNotFoundError (missing files) or ValueError (corrupt files, size mismatch), naming the file."""
    folder = _folder(path)
    meta = read_encoder_meta(folder)
    if image_size is not None and int(image_size) != meta["image_size"]:
        raise ValueError(f"encoder {folder / META_FILE}: trained on {meta['image_size']}x{meta['image_size']} "
                         f"images, but the observation's images are {image_size}x{image_size} (set "
                         f"env.image_size={meta['image_size']} or build an encoder at {image_size} px)")
    weights_file = folder / WEIGHTS_FILE
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError(f"encoder {weights_file}: corrupt weights ({type(err).__name__}: {err})") from err
    encoder = ConvEncoder(meta["image_size"], meta["feature_dim"], meta["channels"])
    try:
        encoder.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(f"encoder {weights_file}: weights do not fit the architecture in {META_FILE} "
                         f"({str(err).splitlines()[0]})") from err
    encoder.requires_grad_(False)
    return encoder.eval()


# ------------------------------------------------------------------------------------ SB3 extractor


def _freeze_as_buffers(module: nn.Module) -> None:
    """Turn every parameter of `module` into a buffer of the same name: out of ``parameters()`` (no optimiser,
    no Polyak update), still in ``state_dict()`` and moved by ``.to()``."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            del sub._parameters[name]
            sub.register_buffer(name, None if param is None else param.detach().requires_grad_(False))


class FrozenEncoderExtractor(BaseFeaturesExtractor):
    """Features of a dict observation ``{"state", "image"}``: the frozen encoder's features of the image, then
    the state. ``features_dim = encoder.feature_dim + state_dim``.

    `normalize_images` must be the policy's own setting: true (SB3's default) means `preprocess_obs` has
    already scaled the uint8 image to [0, 1]; false means it arrives in [0, 255] and is scaled here. Images
    may come channel-first (SAC's `VecTransposeImage`) or channel-last; the layout is read from the space."""

    def __init__(self, observation_space: spaces.Dict, encoder_path: str, normalize_images: bool = True) -> None:
        if not isinstance(observation_space, spaces.Dict) or not {"image", "state"} <= set(observation_space.spaces):
            raise ValueError(f"FrozenEncoderExtractor: needs a dict observation with 'image' and 'state', got "
                             f"{observation_space}")
        if set(observation_space.spaces) != {"image", "state"}:
            extra = sorted(set(observation_space.spaces) - {"image", "state"})
            raise ValueError(f"FrozenEncoderExtractor: observation keys {extra} would be dropped")
        shape = tuple(observation_space["image"].shape)
        if len(shape) != 3 or 3 not in (shape[0], shape[-1]) or shape[0] == shape[-1]:
            raise ValueError(f"FrozenEncoderExtractor: image must be (N, N, 3) or (3, N, N), got {shape}")
        channels_first = shape[0] == 3
        size = shape[1]
        if shape[1] != (shape[2] if channels_first else shape[0]):
            raise ValueError(f"FrozenEncoderExtractor: image must be square, got {shape}")
        encoder = load_encoder(encoder_path, image_size=size)
        state_dim = int(np.prod(observation_space["state"].shape))
        super().__init__(observation_space, features_dim=encoder.feature_dim + state_dim)
        _freeze_as_buffers(encoder)
        self.encoder = encoder.eval()
        self.encoder_path = str(encoder_path)
        self.channels_first = channels_first
        # SB3 scales only uint8 0..255 image spaces; anything else reaches us as it is.
        scaled = normalize_images and is_image_space(observation_space["image"])
        self.input_scale = 1.0 if scaled else 1.0 / 255.0

    def train(self, mode: bool = True) -> FrozenEncoderExtractor:
        super().train(mode)
        self.encoder.eval()  # frozen: always inference behaviour, whatever SAC's set_training_mode says
        return self

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        image = observations["image"].float()
        if not self.channels_first:
            image = image.permute(0, 3, 1, 2)
        if self.input_scale != 1.0:
            image = image * self.input_scale
        with torch.no_grad():
            features = self.encoder(image)
        return torch.cat([features, observations["state"].float().flatten(1)], dim=1)


class EncodedObservation(gym.ObservationWrapper):
    """The cheap equivalent of `FrozenEncoderExtractor` for a frozen encoder: encode each camera image once, when
    the env produces it, and hand the learner a float32 vector ``[features, state]`` (the extractor's output).

    SAC then needs no image pipeline (``MlpPolicy``): its replay buffer holds `features_dim` floats per
    observation instead of N x N x 3 bytes twice (obs and next obs), and a gradient step runs no encoder
    (the extractor runs it on the whole minibatch for the actor, the critic and the target, every step)."""

    def __init__(self, env: gym.Env, encoder_path: str | Path) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict) or set(space.spaces) != {"image", "state"}:
            raise ValueError(f"EncodedObservation: needs a dict observation with 'image' and 'state', got {space}")
        shape = space["image"].shape
        if len(shape) != 3 or shape[-1] != 3 or shape[0] != shape[1]:
            raise ValueError(f"EncodedObservation: image must be (N, N, 3), got {shape}")
        self.encoder = load_encoder(encoder_path, image_size=shape[0])
        n = self.encoder.feature_dim + int(np.prod(space["state"].shape))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)

    @property
    def track(self) -> Any:
        """The circuit (gymnasium's wrappers forward no attributes; callers read ``env.track``)."""
        return self.env.unwrapped.track

    def observation(self, observation: dict) -> np.ndarray:
        image = torch.from_numpy(np.ascontiguousarray(observation["image"])).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            features = self.encoder(image)[0].numpy()
        return np.concatenate([features, np.asarray(observation["state"], dtype=np.float32).ravel()]).astype(np.float32)


def encoder_policy_kwargs(path: str | Path) -> dict:
    """``policy_kwargs`` entries for SB3's SAC (MultiInputPolicy) with the frozen encoder in folder `path`
    (checked now, so a bad path fails before any training).

    ``share_features_extractor=True``: nothing in the extractor trains, so one instance serves actor and critic
    (one copy of the weights in the policy; the critic computes its features without gradients, which is all a
    frozen encoder needs). The target critic still builds its own copy (SB3 always does); it is never changed
    either, since the weights are buffers and the Polyak update only moves parameters."""
    folder = _folder(path)
    read_encoder_meta(folder)
    return {
        "features_extractor_class": FrozenEncoderExtractor,
        "features_extractor_kwargs": {"encoder_path": str(folder.resolve()), "normalize_images": True},
        "normalize_images": True,
        "share_features_extractor": True,
    }


# -------------------------------------------------------------------------------------------- build


def build_encoder(track: str, out: Path, n_images: int = 2000, image_size: int = 64, steps: int = 1500,
                  seed: int = 0, env: Any = None, feature_dim: int = 64, batch_size: int = 64) -> Path:
    """Collect `n_images` camera images on `track`, pretrain the encoder on 90% of them and save it to `out`.
    Prints the held-out reconstruction MSE before and after training (and that of the mean image, the level
    of an encoder that learned nothing about the particular view). `env` is a `robot.rccar.track.EnvConfig`
    for the circuit's scale (default: the lab's defaults); its track and image size are set from the arguments."""
    from robot.rccar.track import EnvConfig

    cfg = dataclasses.replace(env or EnvConfig(), track=track, image_size=image_size)
    started = time.time()
    images = collect_images(lambda: cfg.make(reset_mode="teleport"), n_images, seed)
    print(f"collected {len(images)} camera images ({image_size}x{image_size}) on {track} "
          f"in {time.time() - started:.0f} s", flush=True)
    n_val = max(1, len(images) // 10) if len(images) >= 10 else 0
    train_images, val_images = (images[:-n_val], images[-n_val:]) if n_val else (images, images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        untrained = Autoencoder(image_size, feature_dim).eval()
    before = reconstruction_mse(untrained, val_images)
    mean_image = train_images.astype(np.float64).mean(axis=0) / 255.0
    mean_mse = float(((val_images / 255.0 - mean_image) ** 2).mean())
    print(f"reconstruction MSE (held-out {len(val_images)} images): start {before:.4f} "
          f"(mean image {mean_mse:.4f})", flush=True)
    started = time.time()
    model, losses = _train_autoencoder(train_images, feature_dim, steps, batch_size, 1e-3, seed)
    after = reconstruction_mse(model, val_images)
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    print(f"reconstruction MSE (held-out): end {after:.4f} after {steps} steps in {time.time() - started:.0f} s "
          f"(training batches: first {first:.4f}, last {last:.4f})", flush=True)
    info = {"track": track, "length_m": cfg.length_m, "width_m": cfg.width_m, "smooth_m": cfg.smooth_m,
            "n_images": len(images), "steps": steps, "batch_size": batch_size, "seed": seed,
            "heldout_mse_start": round(before, 6), "heldout_mse_end": round(after, 6),
            "heldout_mse_mean_image": round(mean_mse, 6)}
    folder = save_encoder(model.encoder, out, info)
    print(f"encoder -> {folder}", flush=True)
    return folder
