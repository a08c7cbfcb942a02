"""robot.rccar.encoder: camera images, autoencoder pretraining, save/load, and SAC with the frozen encoder
(generated:1 at 55 m, 32 px images, a few dozen images and steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("stable_baselines3")
pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
ENV_KWARGS = {"length_m": 55.0, "width_m": 1.6, "smooth_m": 0.0, "image_size": SIZE, "reset_mode": "teleport"}


def _make_env():
    from sim.rccar import RCCarEnv

    return RCCarEnv("generated:1", **ENV_KWARGS)


@pytest.fixture(scope="module")
def images():
    from robot.rccar.encoder import collect_images

    return collect_images(_make_env, 32, seed=0, segment_steps=8)


@pytest.fixture(scope="module")
def pretrained(images, tmp_path_factory):
    """(encoder, losses, saved folder) after a short pretraining."""
    from robot.rccar.encoder import pretrain_encoder, save_encoder

    encoder, losses = pretrain_encoder(images, feature_dim=16, steps=60, batch_size=16, lr=2e-3, seed=0)
    folder = save_encoder(encoder, tmp_path_factory.mktemp("enc") / "encoder", {"track": "generated:1"})
    return encoder, losses, folder


def test_collect_images_shape_and_variety(images):
    assert images.shape == (32, SIZE, SIZE, 3) and images.dtype == np.uint8
    flat = images.reshape(len(images), -1).astype(np.float64)
    assert len({img.tobytes() for img in images}) >= 28  # not one view repeated
    # Pixels change across the drive: most of a frame is sky and grey track (small changes with the car's
    # pitch and the ground texture), but where the walls come and go (turns, off-centre views) they change a lot.
    spread = flat.std(axis=0)
    assert spread.mean() > 4 and np.percentile(spread, 99) > 50


def test_collect_images_needs_a_camera():
    from robot.rccar.encoder import collect_images
    from sim.rccar import RCCarEnv

    with pytest.raises(ValueError, match="image_size"):
        collect_images(lambda: RCCarEnv("generated:1", length_m=55.0, width_m=1.6), 4, seed=0)


def test_pretraining_lowers_reconstruction_loss(pretrained):
    _, losses, _ = pretrained
    assert len(losses) == 60 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)


def test_save_load_round_trip_gives_identical_features(pretrained, images):
    import torch

    from robot.rccar.encoder import load_encoder

    encoder, _, folder = pretrained
    meta = json.loads((folder / "encoder.json").read_text())
    assert meta["image_size"] == SIZE and meta["feature_dim"] == 16 and meta["track"] == "generated:1"
    loaded = load_encoder(folder, image_size=SIZE)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.from_numpy(images[:8]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        assert torch.equal(encoder(x), loaded(x))
    assert torch.equal(load_encoder(folder / "encoder.pt")(x), loaded(x))  # a file inside the folder works too


def test_load_errors_name_the_file_and_the_problem(pretrained, tmp_path):
    import shutil

    from robot.rccar.encoder import encoder_policy_kwargs, load_encoder

    _, _, folder = pretrained
    with pytest.raises(FileNotFoundError, match=r"encoder\.json: missing"):
        load_encoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="missing"):
        encoder_policy_kwargs(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=rf"trained on {SIZE}x{SIZE} images, but .* 64x64"):
        load_encoder(folder, image_size=64)

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "encoder.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"encoder\.pt: corrupt weights"):
        load_encoder(bad)
    pt = (folder / "encoder.pt").read_bytes()
    (bad / "encoder.pt").write_bytes(pt[: len(pt) // 2])  # truncated
    with pytest.raises(ValueError, match=r"encoder\.pt: corrupt weights"):
        load_encoder(bad)
    (bad / "encoder.pt").write_bytes(pt)
    (bad / "encoder.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"encoder\.json: corrupt"):
        load_encoder(bad)
    meta = json.loads((folder / "encoder.json").read_text())
    (bad / "encoder.json").write_text(json.dumps({**meta, "feature_dim": 32}))
    with pytest.raises(ValueError, match="do not fit the architecture"):
        load_encoder(bad)


def test_sac_with_frozen_encoder_learns_and_leaves_it_unchanged(pretrained):
    import torch
    from stable_baselines3 import SAC

    from robot.rccar.encoder import FrozenEncoderExtractor, encoder_policy_kwargs, load_encoder

    encoder, _, folder = pretrained
    env = _make_env()
    kwargs = {"net_arch": [32, 32], "n_critics": 2, **encoder_policy_kwargs(folder)}
    model = SAC("MultiInputPolicy", env, learning_starts=50, batch_size=16, buffer_size=1000, train_freq=1,
                gradient_steps=1, ent_coef="auto_0.1", policy_kwargs=kwargs, seed=0, device="cpu", verbose=0)
    policy = model.policy
    extractor = policy.actor.features_extractor
    assert isinstance(extractor, FrozenEncoderExtractor) and policy.critic.features_extractor is extractor
    assert extractor.channels_first and extractor.input_scale == 1.0  # SAC transposed; SB3 scales by 255
    assert extractor.features_dim == 16 + env.observation_space["state"].shape[0]

    # The extractor's features of a raw observation are the encoder's features of the image in [0, 1]
    # (one division by 255, channels in the right order), followed by the state.
    obs, _ = env.reset(seed=1)
    obs_t, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        got = policy.actor.extract_features(obs_t, extractor)
        want = encoder(torch.from_numpy(obs["image"]).permute(2, 0, 1)[None].float() / 255.0)
    assert torch.allclose(got[:, :16], want, atol=1e-6)
    assert torch.allclose(got[:, 16:], torch.from_numpy(obs["state"])[None])

    # Frozen: no encoder tensor is a parameter, so no optimiser holds one and Polyak leaves the target's copy.
    frozen = {id(t) for m in (extractor, policy.critic_target.features_extractor) for t in m.encoder.state_dict(
        keep_vars=True).values()}
    assert not any(p.requires_grad for p in extractor.encoder.buffers())
    for opt in (policy.actor.optimizer, policy.critic.optimizer):
        assert not frozen & {id(p) for group in opt.param_groups for p in group["params"]}
    assert not any("encoder" in name for name, _ in policy.named_parameters())

    def snapshot(module):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    enc_before, target_before = snapshot(extractor.encoder), snapshot(policy.critic_target.features_extractor)
    actor_before = snapshot(policy.actor.mu)
    model.learn(200)
    env.close()
    assert model.num_timesteps == 200 and model._n_updates > 0
    for before, module in ((enc_before, extractor.encoder), (target_before, policy.critic_target.features_extractor)):
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert not extractor.encoder.training
    assert any(not torch.equal(v, policy.actor.mu.state_dict()[k]) for k, v in actor_before.items())
    reloaded = load_encoder(folder)  # the file on disk is untouched too
    assert all(torch.equal(v, extractor.encoder.state_dict()[k]) for k, v in reloaded.state_dict().items())


def test_extractor_handles_channel_last_unscaled_images(pretrained):
    import torch
    from gymnasium import spaces

    from robot.rccar.encoder import FrozenEncoderExtractor

    encoder, _, folder = pretrained
    space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (5,), np.float32),
                         "image": spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
    extractor = FrozenEncoderExtractor(space, str(folder), normalize_images=False)
    assert not extractor.channels_first and extractor.input_scale == pytest.approx(1 / 255)
    image = torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8)
    state = torch.randn(2, 5)
    out = extractor({"image": image.float(), "state": state})
    with torch.no_grad():
        want = encoder(image.permute(0, 3, 1, 2).float() / 255.0)
    assert out.shape == (2, 21) and torch.allclose(out[:, :16], want, atol=1e-6)
    with pytest.raises(ValueError, match="trained on 32x32"):
        FrozenEncoderExtractor(spaces.Dict({"state": space["state"],
                                            "image": spaces.Box(0, 255, (3, 64, 64), np.uint8)}), str(folder))


def test_build_encoder_writes_a_loadable_folder(tmp_path, capsys):
    from robot.rccar.encoder import build_encoder, load_encoder
    from robot.rccar.track import EnvConfig

    env = EnvConfig(length_m=55.0, width_m=1.6, smooth_m=0.0)
    folder = build_encoder("generated:1", tmp_path / "enc", n_images=12, image_size=16, steps=5, seed=0, env=env,
                   feature_dim=8, batch_size=8)
    text = capsys.readouterr().out
    assert "start" in text and "end" in text and "held-out" in text
    meta = json.loads((folder / "encoder.json").read_text())
    assert meta["track"] == "generated:1" and meta["n_images"] == 12 and meta["length_m"] == 55.0
    assert load_encoder(folder, image_size=16).feature_dim == 8


def test_encoded_observation_wrapper_matches_the_extractor(pretrained):
    import torch
    from stable_baselines3.common.preprocessing import preprocess_obs

    from robot.rccar.encoder import EncodedObservation, FrozenEncoderExtractor

    _, _, folder = pretrained
    raw = _make_env()
    wrapped = EncodedObservation(_make_env(), folder)
    try:
        obs, _ = raw.reset(seed=2)
        vec, _ = wrapped.reset(seed=2)
        assert wrapped.observation_space.shape == (16 + raw.observation_space["state"].shape[0],)
        assert vec.dtype == np.float32 and wrapped.observation_space.contains(vec)
        extractor = FrozenEncoderExtractor(raw.observation_space, str(folder))
        tensors = preprocess_obs({k: torch.from_numpy(v)[None] for k, v in obs.items()}, raw.observation_space)
        with torch.no_grad():
            assert np.allclose(extractor(tensors)[0].numpy(), vec, atol=1e-6)
        vec, *_ = wrapped.step(np.array([0.0, 0.0], dtype=np.float32))
        assert vec.shape == wrapped.observation_space.shape
        assert wrapped.track is wrapped.unwrapped.track
    finally:
        raw.close()
        wrapped.close()
