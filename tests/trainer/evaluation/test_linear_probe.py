import math

import numpy as np
import pytest

from trainer.evaluation.errors import EvalError
from trainer.evaluation.linear_probe import (
    ProbeConfig,
    draw_shots,
    k_match,
    make_split,
    run_probe,
    stratified_take,
)


def clusters(classes=4, per_class=20, dim=8, noise=0.05, seed=0):
    """Well separated Gaussian clusters around orthogonal unit vectors, normalised."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:classes]
    y = np.repeat(np.arange(classes), per_class)
    x = centres[y] + noise * rng.standard_normal((len(y), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"set/c{t}/{i:03d}.png" for i, t in enumerate(y)]
    return x.astype(np.float32), y, ids


def test_separable_features_reach_100_percent_from_one_shot():
    x, y, ids = clusters()
    cfg = ProbeConfig(shots=(1, 2, 4), seeds=2)
    split = make_split(x, y, ids, cfg)
    out = run_probe(split, cfg, num_classes=4, zero_shot_test=0.9)
    assert out["top1"] == 1.0 and out["full"]["n_train"] == 40
    for k in ("1", "2", "4"):
        assert out["k_shot"][k]["top1_mean"] == 1.0 and out["k_shot"][k]["top1_std"] == 0.0
        assert out["k_shot"][k]["top1"] == [1.0, 1.0]
    assert out["k_match"] == {"first": 1, "interpolated": 1.0, "bound": "at_most"}
    assert out["split"]["n_test"] == 40 and out["split"]["n_val"] == 8


def test_probe_on_random_labels_stays_near_chance():
    # the same features with shuffled labels: nothing to learn, so a probe that scores well
    # would be leaking test labels
    x, y, ids = clusters(per_class=40)
    y = np.random.default_rng(1).permutation(y)
    cfg = ProbeConfig(shots=(4,), seeds=1)
    out = run_probe(make_split(x, y, ids, cfg), cfg, 4, zero_shot_test=0.25)
    assert out["top1"] < 0.45


def test_k_match_interpolates_in_log2_k():
    shots = [1, 2, 4, 8, 16]
    means = [0.2, 0.4, 0.6, 0.8, 0.9]
    m = k_match(shots, means, 0.5)
    assert m["first"] == 4 and m["interpolated"] == pytest.approx(2**1.5) and m["bound"] is None
    assert k_match(shots, means, 0.6) == {"first": 4, "interpolated": 4.0, "bound": None}
    assert k_match(shots, means, 0.95) == {
        "first": None,
        "interpolated": None,
        "bound": "above_all",
    }
    # 0.85 lies between 8 (0.8) and 16 (0.9): halfway in log2 k
    assert k_match(shots, means, 0.85)["interpolated"] == pytest.approx(math.sqrt(8 * 16))


def test_stratified_split_is_per_class_seeded_and_order_free():
    ids = [f"s/a/{i}" for i in range(10)] + [f"s/b/{i}" for i in range(3)] + ["s/c/0"]
    targets = [0] * 10 + [1] * 3 + [2]
    rest, taken = stratified_take(ids, targets, 0.5, seed=0, at_least_one=True)
    assert len(taken) == 5 + 2 + 1  # round(1.5) = 2 of class b; the lone c image is a test image
    assert 13 in taken
    # the same ids in another order: the same images are taken
    perm = np.random.default_rng(0).permutation(len(ids))
    _, taken2 = stratified_take([ids[i] for i in perm], [targets[i] for i in perm], 0.5, 0, True)
    assert sorted(ids[perm[i]] for i in taken2) == sorted(ids[i] for i in taken)
    _, other_seed = stratified_take(ids, targets, 0.5, seed=1, at_least_one=True)
    assert set(other_seed) != set(taken)
    # without at_least_one, a class keeps at least one image and a lone image stays
    rest, taken = stratified_take(ids, targets, 0.2, seed=0, at_least_one=False)
    assert len(taken) == 2 + 1 and 13 in rest


def test_draw_shots_takes_k_per_class_or_all_of_a_short_class():
    y = np.array([0] * 5 + [1] * 2)
    idx, short = draw_shots(y, 4, seed=0)
    assert (y[idx] == 0).sum() == 4 and (y[idx] == 1).sum() == 2 and short == 1
    assert list(draw_shots(y, 4, seed=0)[0]) == list(idx)


def test_separate_probe_train_set_tests_on_every_eval_image():
    x, y, ids = clusters(per_class=6)
    tx, ty, tids = clusters(per_class=10, seed=3)
    cfg = ProbeConfig(shots=(1,), seeds=1)
    split = make_split(x, y, ids, cfg, train=(tx, ty, [f"t/{i}" for i in tids]))
    assert len(split.y_test) == 24 and len(split.y_train) + len(split.y_val) == 40
    assert run_probe(split, cfg, 4, 0.5)["top1"] == 1.0


def test_bad_probe_config_and_untrainable_split():
    with pytest.raises(EvalError, match="positive integers"):
        ProbeConfig(shots=(0, 1))
    with pytest.raises(EvalError, match="test_fraction"):
        ProbeConfig(test_fraction=1.0)
    x, y, ids = clusters(per_class=1)
    with pytest.raises(EvalError, match="single image"):
        make_split(x, y, ids, ProbeConfig())
