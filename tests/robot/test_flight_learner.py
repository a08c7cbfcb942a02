"""robot.flight: action choice, Monte Carlo labels, baselines and fitting, on hand-built worlds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot.flight.controllers import baseline, cell_clearance, depth_heuristic, oracle_controller, straight
from robot.flight.mc import Batch, Flight, collect, fit, fly, follow_heuristic, label_roots, photometric, summarise
from robot.flight.model import (
    DEPTH_SIDE,
    ValueNet,
    centre_order,
    choice_targets,
    choose_action,
    coarse_depth,
    mirror_actions,
)
from sim.flight import IndoorFlightEnv
from tests.sim.flight_worlds import pillar_world


@pytest.fixture
def pillar(tmp_path):
    env = IndoorFlightEnv(world=pillar_world(tmp_path), start=(0, 0, 1.2, 0), max_distance_m=8.0)
    env.reset(seed=0)
    yield env
    env.close()


def test_ties_go_to_the_cell_nearest_straight() -> None:
    assert centre_order(3)[0] == 4
    assert choose_action([0.5, 0.9, 0.5, 0.9, 0.9, 0.9, 0, 0, 0], 3) == 4
    assert choose_action([0.5, 0.9, 0.5, 0.9, 0.85, 0.9, 0, 0, 0], 3, tie_tol=0.02) == 1  # nearest of the best
    assert choose_action([0.5, 0.9, 0.5, 0.9, 0.85, 0.9, 0, 0, 0], 3, tie_tol=0.1) == 4
    assert choose_action([1.0, 0, 0, 0, 0, 0, 0, 0, 0], 3) == 0


def test_a_mirrored_policy_averages_the_map_of_the_flipped_image(pillar) -> None:
    from robot.flight.controllers import policy_controller

    torch.manual_seed(0)
    net = ValueNet(3, 32, width=4)
    obs = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    plain = net.values(obs[None])[0]
    flipped = net.values(obs[None, :, ::-1])[0][mirror_actions(3)]
    _, values = policy_controller(net, mirror=True)(pillar, obs)
    assert np.allclose(values, 0.5 * (plain + flipped), atol=1e-6)
    _, values = policy_controller(net)(pillar, obs)
    assert np.allclose(values, plain)
    symmetric = np.concatenate([obs[:, :16], obs[:, :16][:, ::-1]], axis=1)
    _, values = policy_controller(net, mirror=True)(pillar, symmetric)
    assert np.allclose(values, values[mirror_actions(3)], atol=1e-6), "a symmetric image gets a symmetric map"


def test_a_two_frame_policy_pairs_each_image_with_the_one_before(pillar) -> None:
    from robot.flight.controllers import policy_controller
    from robot.flight.model import stack_frames

    torch.manual_seed(0)
    net = ValueNet(3, 64, width=4, frames=2)
    seen = []
    real = net.values
    net.values = lambda images: (seen.append(np.array(images)), real(images))[1]
    act = policy_controller(net)
    obs0, _ = pillar.reset(seed=0)
    act(pillar, obs0)
    obs1, *_ = pillar.step(4)
    act(pillar, obs1)
    obs2, _ = pillar.reset(seed=0)  # a new flight forgets the last image of the one before
    act(pillar, obs2)
    assert [s.shape for s in seen] == [(1, 64, 64, 6)] * 3
    assert np.array_equal(seen[0][0], stack_frames(None, obs0, 2))
    assert np.array_equal(seen[1][0], np.concatenate([obs0, obs1], axis=-1))
    assert np.array_equal(seen[2][0], np.concatenate([obs2, obs2], axis=-1))
    assert stack_frames(obs0, obs1, 1) is obs1
    with pytest.raises(ValueError, match="1 or 2 camera frames"):
        ValueNet(3, 32, frames=3)


def test_photometric_changes_every_frame_of_a_stacked_image_alike() -> None:
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
    stacked = torch.cat([img, img], dim=-1)
    out = photometric(stacked, torch.Generator().manual_seed(0), 1.0)
    assert out.shape == (4, 16, 16, 6)
    assert torch.equal(out[..., :3], out[..., 3:])
    assert not torch.equal(out[..., :3], img.float())


def test_mirror_swaps_left_and_right_columns() -> None:
    m = mirror_actions(3)
    assert m.tolist() == [2, 1, 0, 5, 4, 3, 8, 7, 6]
    assert (m[m] == np.arange(9)).all()


def test_labels_see_the_pillar_ahead(pillar) -> None:
    root = pillar.snapshot()
    labels = label_roots(pillar, [root], horizon=12, follow=None)[0]
    assert labels.shape == (9,) and ((labels >= 0) & (labels <= 1)).all()
    # Straight (4) hits the pillar 2 m ahead within 4 steps; the side columns clear it and survive the horizon.
    assert labels[4] < 0.4
    assert labels[3] == 1.0 and labels[5] == 1.0


def test_following_a_straight_policy_gives_the_same_labels_as_straight_branches(pillar) -> None:
    calls = []

    def follow(env, states):
        calls.append(len(states))
        return [env.straight_action] * len(states)

    root = pillar.snapshot()
    a = label_roots(pillar, [root, root], horizon=10, follow=None)
    b = label_roots(pillar, [root, root], horizon=10, follow=follow)
    assert np.array_equal(a, b)
    assert calls and max(calls) <= 18, "branches of both roots advance in one batch per step"


def test_a_heuristic_follow_up_labels_straight_as_the_teacher_would_fly_it(pillar) -> None:
    root = pillar.snapshot()
    plain = label_roots(pillar, [root], horizon=12, follow=None)[0]
    taught = label_roots(pillar, [root], horizon=12, follow=follow_heuristic())[0]
    # Straight into the pillar 2 m ahead: flying straight on hits it; the teacher steers round it afterwards.
    assert plain[4] < 0.4 and taught[4] == 1.0
    assert (taught >= plain).all(), "the teacher never flies a branch shorter than flying straight here"


def test_cautious_labels_fly_a_wider_body_and_blend_in(pillar) -> None:
    root = pillar.snapshot()
    plain = label_roots(pillar, [root], horizon=12, follow=None)[0]
    cautious = label_roots(pillar, [root], horizon=12, follow=None, margin_m=0.4, margin_mix=1.0)[0]
    assert pillar.radius == pytest.approx(0.2), "the body radius is restored after the cautious branches"
    # Straight into the pillar: the wider body hits it a step earlier; the turns still clear it.
    assert cautious[4] < plain[4] and cautious[3] == 1.0 and (cautious <= plain).all()
    mixed = label_roots(pillar, [root], horizon=12, follow=None, margin_m=0.4, margin_mix=0.25)[0]
    assert np.allclose(mixed, 0.75 * plain + 0.25 * cautious)
    assert np.array_equal(label_roots(pillar, [root], horizon=12, follow=None, margin_m=0.0, margin_mix=1.0)[0], plain)


def test_near_end_labels_every_state_before_a_collision(pillar) -> None:
    # Straight into the pillar 2 m ahead (a collision within 4 steps) with one strided root, the start:
    # near_end=2 adds the two states before the collision, whose straight moves are worth less and less, the
    # last one nothing (by then no move clears the pillar; at the start a turn does). Without it, the start is
    # the only root of an episode.
    kwargs = dict(horizon=6, stride=1000, epsilon=0.0, tie_tol=0.02, follow=None)
    batch, stats = collect(pillar, None, 3, np.random.default_rng(0), near_end=2, **kwargs)
    assert len(batch) == 3 and stats["collect/episodes"] == 1 and stats["collect/dense_roots"] == 2
    straight = batch.labels[:, 4]
    assert straight[0] > straight[1] > straight[2] == 0.0 and batch.labels[0].max() == 1.0
    assert not np.array_equal(batch.obs[1], batch.obs[2])
    _, stats = collect(pillar, None, 2, np.random.default_rng(0), **kwargs)
    assert stats["collect/episodes"] == 2 and "collect/dense_roots" not in stats


def test_a_straight_follow_lookahead_acts_on_exact_first_round_labels(pillar) -> None:
    root = pillar.snapshot()
    labels = label_roots(pillar, [root], horizon=12, follow=None)[0]
    action, scores = oracle_controller(12, follow="straight")(pillar, None)
    assert np.allclose(scores, labels), "the same numbers as the Monte Carlo labels with straight branches"
    assert action in (3, 5)
    with pytest.raises(ValueError, match="'heuristic' or 'straight'"):
        oracle_controller(12, follow="policy")


def test_label_ceiling_command(capsys) -> None:
    from robot.flight.label_ceiling import main

    main(["--horizons", "3", "--flights", "1", "--margins", "0", "0.3", "--noise", "0", "0.2"])
    out = capsys.readouterr().out
    assert "follow straight, horizon 3, margin 0 m, noise 0:" in out
    assert "follow heuristic, horizon 3, margin 0.3 m, noise 0.2:" in out
    assert out.count("\n| straight | 3 |") == 4 and out.count("\n| heuristic | 3 |") == 4
    with pytest.raises(SystemExit):
        main(["--noise", "-1"])


def test_baselines_on_the_pillar(pillar) -> None:
    flown = {name: fly(pillar, baseline(name, 0, 12), seed=0) for name in ("straight", "depth", "oracle")}
    assert flown["straight"].collision == "world" and flown["straight"].distance_m < 2.0
    assert flown["oracle"].collision is None and flown["oracle"].distance_m == pytest.approx(8.0)
    assert flown["depth"].distance_m > flown["straight"].distance_m
    pillar.reset(seed=0)
    clear = cell_clearance(pillar.depth, 3)
    assert clear[4] < clear[3] and clear[4] < clear[5], "the pillar is nearest in the centre cell"
    action, scores = oracle_controller(12)(pillar, None)
    assert scores[action] == 1.0, "the oracle's move has a branch that survives the whole horizon"
    # With the pillar one step away, flying straight is no longer among the surviving first moves.
    near = IndoorFlightEnv(world=pillar.user_world, start=(1.0, 0, 1.2, 0))
    near.reset(seed=0)
    action, scores = oracle_controller(12)(near, None)
    assert action != 4 and scores[4] < 1.0
    action, _ = depth_heuristic(near, None)
    assert action in (3, 5), "1 m from the pillar the depth heuristic steers sideways in the middle row"
    near.close()
    assert straight(pillar, None)[0] == 4
    with pytest.raises(ValueError, match="unknown baseline 'wall-follow'"):
        baseline("wall-follow")


def _half_lit(rng: np.random.Generator, n: int, right_too: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(n dark 16 x 16 images with a bright left half where `left`, else (`right_too`) a bright right half, left)."""
    obs = rng.integers(0, 60, size=(n, 16, 16, 3)).astype(np.uint8)
    left = rng.random(n) < 0.5
    obs[left, :, :8] += 150
    if right_too:
        obs[~left, :, 8:] += 150
    return obs, left


@pytest.mark.parametrize("augment", [0.0, 1.0])
def test_fit_learns_which_side_is_open(augment: float) -> None:
    # Images bright on the left half mean "left is free" (labels of column 0 high), and vice versa. The
    # photometric augmentation keeps which half is brighter, so the network learns it either way.
    rng = np.random.default_rng(0)
    n = 256
    obs, left = _half_lit(rng, n)
    labels = np.zeros((n, 9), np.float32)
    labels[np.ix_(left, [0, 3, 6])] = 1.0
    labels[np.ix_(~left, [2, 5, 8])] = 1.0
    torch.manual_seed(0)
    net = ValueNet(3, 16, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    data = Batch(obs, labels)
    before = torch.nn.functional.binary_cross_entropy(torch.from_numpy(net.values(obs)), torch.from_numpy(labels))
    stats = fit(net, opt, data, rng, epochs=15, batch_size=32, augment=augment)
    v = net.values(obs)
    assert stats["fit/loss"] < 0.5 * float(before)
    assert (v[left][:, 3] > v[left][:, 5]).mean() > 0.95
    assert (v[~left][:, 5] > v[~left][:, 3]).mean() > 0.95


def test_choice_targets_are_the_move_choose_action_makes_with_its_ties_shared() -> None:
    maps = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 1],  # every move safe: straight
                     [0, 0, 0, 1, 0.5, 0.99, 0, 0, 0],  # left and right tie (within 0.02), straight is worse
                     [0, 0, 0.3, 0.2, 0.1, 0.25, 0, 0, 0.3],  # two corners tie: both corners
                     [0.9, 1, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9]], np.float32)  # one best: up
    t = choice_targets(maps, 3, tie_tol=0.02)
    assert t.shape == (4, 9) and np.allclose(t.sum(1), 1)
    assert t[0, 4] == 1 and set(np.flatnonzero(t[1])) == {3, 5} and set(np.flatnonzero(t[2])) == {2, 8}
    assert t[3, 1] == 1
    for m, row in zip(maps, t, strict=True):  # the move choose_action makes always carries weight
        assert row[choose_action(m, 3, 0.02)] > 0
    flip = mirror_actions(3)
    assert np.allclose(choice_targets(maps[:, flip], 3), t[:, flip])  # mirrored maps teach the mirrored move


def test_the_choice_loss_teaches_the_best_move_when_values_are_close() -> None:
    # Bright-left images: left 1.0, right 0.9, straight 0.8 (and the mirror for bright-right). The chosen move
    # must come out on top of the fitted map, and the choice loss must fall well below its start (log 9).
    rng = np.random.default_rng(0)
    n = 256
    obs, left = _half_lit(rng, n)
    labels = np.full((n, 9), 0.5, np.float32)
    labels[:, 4] = 0.8
    labels[left, 3], labels[left, 5] = 1.0, 0.9
    labels[~left, 5], labels[~left, 3] = 1.0, 0.9
    torch.manual_seed(0)
    net = ValueNet(3, 16, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = fit(net, opt, Batch(obs, labels), rng, epochs=1, batch_size=32, choice_weight=1.0)
    last = fit(net, opt, Batch(obs, labels), rng, epochs=15, batch_size=32, choice_weight=1.0)
    assert first["fit/choice_loss"] > 1.0 and last["fit/choice_loss"] < 0.3 * first["fit/choice_loss"]
    chosen = np.array([choose_action(v, 3) for v in net.values(obs)])
    assert (chosen[left] == 3).mean() > 0.95 and (chosen[~left] == 5).mean() > 0.95
    assert "fit/choice_loss" not in fit(net, opt, Batch(obs, labels), rng, epochs=1, batch_size=32)


def test_photometric_changes_colours_not_geometry() -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(64, 8, 8, 1)).astype(np.uint8)
    images = torch.from_numpy(np.concatenate([grey, grey, grey], axis=3))
    gen = torch.Generator().manual_seed(0)
    out = photometric(images, gen, 1.0)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert not torch.allclose(out, images.float())
    # On grey images every change is monotone per image (positive gains, an offset, a channel permutation,
    # grey, clamping), so the order of the pixels by brightness survives (clamping may only tie them).
    before, after = images.float().mean(3).reshape(64, -1), out.mean(3).reshape(64, -1)
    i, j = np.triu_indices(before.shape[1], 1)
    d_before, d_after = (before[:, i] - before[:, j]), (after[:, i] - after[:, j])
    assert ((d_before * d_after) >= -1e-3).all()
    # The same generator state gives the same batch; strength 0 leaves images as they are.
    assert torch.equal(photometric(images, torch.Generator().manual_seed(0), 1.0), out)
    assert torch.equal(photometric(images, gen, 0.0), images.float())


def test_coarse_depth_is_the_log_of_the_nearest_point_per_patch() -> None:
    depth = np.full((16, 16), 4.0, np.float32)
    depth[0, 0] = 0.5  # one near pixel decides its patch
    depth[15, 15] = 50.0  # beyond the far clip
    depth[8:10, 14:16] = 0.01  # nearer than the near clip
    out = coarse_depth(depth, side=8)
    assert out.shape == (8, 8) and out.dtype == np.float32
    assert out[0, 0] == pytest.approx(np.log(0.5)) and out[0, 1] == pytest.approx(np.log(4.0))
    assert out[7, 7] == pytest.approx(np.log(4.0)) and out[4, 7] == pytest.approx(np.log(0.1))
    with pytest.raises(ValueError, match="8x8 patches"):
        coarse_depth(np.ones((12, 12)), side=8)


def test_fit_with_the_auxiliary_depth_head_learns_the_depth_maps() -> None:
    # The depth map is a function of the image (left half near when the left half is bright).
    rng = np.random.default_rng(0)
    n = 128
    obs, left = _half_lit(rng, n, right_too=False)
    depth = np.full((n, DEPTH_SIDE, DEPTH_SIDE), np.log(5.0), np.float32)
    depth[left, :, :4] = np.log(0.5)
    data = Batch(obs, np.full((n, 9), 0.5, np.float32), depth)
    torch.manual_seed(0)
    net = ValueNet(3, 16, width=8, aux_depth=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = fit(net, opt, data, rng, epochs=1, batch_size=32, aux_weight=1.0)
    last = fit(net, opt, data, rng, epochs=20, batch_size=32, aux_weight=1.0)
    assert last["fit/depth_loss"] < 0.1 * first["fit/depth_loss"]
    _, pred = net.forward_all(torch.from_numpy(obs))
    assert pred.shape == (n, DEPTH_SIDE, DEPTH_SIDE)
    assert float((pred.detach().numpy() - depth).__abs__().mean()) < 0.3
    with pytest.raises(ValueError, match="aux_depth=True"):
        fit(ValueNet(3, 16, width=8), opt, data, rng, epochs=1, batch_size=32, aux_weight=1.0)
    with pytest.raises(ValueError, match="depth maps"):
        fit(net, opt, Batch(obs, data.labels), rng, epochs=1, batch_size=32, aux_weight=1.0)


def test_batches_keep_their_depth_maps_through_joins_and_checkpoints() -> None:
    a = Batch(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 9), np.float32), np.ones((2, 8, 8), np.float32))
    b = Batch.empty(16, 9).extend(a).extend(a)
    assert len(b) == 4 and b.depth.shape == (4, 8, 8)
    back = Batch.from_tensors(b.tensors())
    assert np.array_equal(back.depth, b.depth) and np.array_equal(back.labels, b.labels)
    old = Batch(a.obs, a.labels)  # labels from a checkpoint written before depth maps were kept
    assert Batch.from_tensors(old.tensors()).depth is None and Batch.empty(16, 9).extend(old).depth is None
    with pytest.raises(ValueError, match="without them"):
        a.extend(old)


def test_value_net_shape_and_size_check() -> None:
    net = ValueNet(5, 32, width=4)
    out = net.values(np.zeros((2, 32, 32, 3), np.uint8))
    assert out.shape == (2, 25) and ((out > 0) & (out < 1)).all()
    with pytest.raises(ValueError, match="divisible by 16"):
        ValueNet(3, 40)


def test_new_ground_counts_a_circle_once() -> None:
    from robot.flight.mc import new_ground_m

    line = np.column_stack([np.arange(0, 10.01, 0.5) + 0.25, np.full(21, 0.25)])
    assert new_ground_m(line) == pytest.approx(10.0)
    t = np.arange(200) * np.radians(33.7)
    circle = np.column_stack([np.cos(t), np.sin(t)]) * 0.87 + 5
    assert new_ground_m(circle) < 10.0, "200 steps round one small circle cover little new ground"


def test_summary_statistics_by_hand() -> None:
    flights = [Flight(1.0, "wall", 0, np.zeros((1, 2))), Flight(2.0, "furniture", 1, np.zeros((1, 2))),
               Flight(3.0, None, 2, np.zeros((1, 2)))]
    s = summarise(flights, 2.5)
    assert s["distance_m"] == 2.0 and s["distance_se"] == pytest.approx(1 / np.sqrt(3))
    assert s["beyond_2.5m"] == pytest.approx(1 / 3)
    assert s["collisions/wall"] == s["collisions/furniture"] == s["collisions/none"] == pytest.approx(1 / 3)


def test_ray_distance_and_the_ray_heuristic(pillar) -> None:
    from robot.flight.controllers import ray_heuristic, rollout_steps

    root = pillar.snapshot()
    assert pillar.ray_distance(root) == pytest.approx(2.0, abs=1e-3)
    assert pillar.ray_distance(root, 90.0) == pytest.approx(10.0)
    assert ray_heuristic(pillar, root, safe_m=1.0) == 4, "2 m free ahead is safe enough at safe_m 1"
    assert ray_heuristic(pillar, root, safe_m=3.0) in (3, 5), "too close at safe_m 3: turn"
    assert rollout_steps(pillar, root, 20, safe_m=1.0) == 20
