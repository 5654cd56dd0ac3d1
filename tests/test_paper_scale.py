"""Fast paths of issue 14 (paper-scale speed): trees on principal components, the XGBoost
multi-output backend, early stopping. Agreement checks only; timings live in
benchmarks/paper_cost.py."""

from __future__ import annotations

import numpy as np
import pytest

from hashbench.errors import ConfigError
from hashbench.oos import BoostedTrees, PrincipalProjection, auto_bagging_fraction, auto_feature_fraction


def _problem(n: int = 600, d: int = 40, bits: int = 6, seed: int = 0):
    """Codes from ``bits`` fixed random hyperplanes (the same for every ``seed``)."""
    mix = np.random.default_rng(100).standard_normal((d, bits))
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    codes = np.where(x @ mix > 0, 1, -1).astype(np.int8)
    return x, codes


def test_principal_projection_recovers_a_low_rank_subspace():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((30, 3)))[0]
    x = (rng.standard_normal((500, 3)) * [5.0, 3.0, 2.0]) @ basis.T + 0.01 * rng.standard_normal((500, 30))
    proj = PrincipalProjection(3).fit(x.astype(np.float32), seed=0)
    # the fitted directions span the same subspace: projecting the basis keeps its norm
    overlap = np.linalg.norm(proj.components_.T @ basis, axis=0)
    assert np.all(overlap > 0.99)
    z = proj.transform(x)
    assert z.shape == (500, 3) and z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-3


def test_default_trees_use_the_raw_features():
    x, codes = _problem()
    trees = BoostedTrees(n_rounds=20).fit(x, codes)
    assert trees.projection_ is None
    assert trees.rounds_ == [20] * codes.shape[1]


def _low_rank(n: int, seed: int, d: int = 40, rank: int = 8, bits: int = 6):
    """Features with ``rank`` informative directions (as deep features mostly are) plus small
    noise; codes from hyperplanes in that subspace."""
    fixed = np.random.default_rng(100)
    lift, mix = fixed.standard_normal((rank, d)), fixed.standard_normal((rank, bits))
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, rank))
    x = (latent @ lift + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
    return x, np.where(latent @ mix > 0, 1, -1).astype(np.int8)


def test_pca_trees_fit_the_codes_and_agree_with_raw_trees():
    x, codes = _low_rank(600, seed=0)
    raw = BoostedTrees(n_rounds=60).fit(x, codes, seed=3)
    pca = BoostedTrees(n_rounds=60, pca_dims=20).fit(x, codes, seed=3)
    assert pca.projection_ is not None and pca.projection_.components_.shape == (40, 20)
    held_out, truth = _low_rank(400, seed=9)
    assert np.mean(pca.predict(x) == codes) > 0.95
    # generalisation to the true codes of new points: no worse than trees on the raw inputs
    assert np.mean(pca.predict(held_out) == truth) > np.mean(raw.predict(held_out) == truth) - 0.05


def test_fit_bit_with_pca_keeps_one_projection_for_all_bits():
    x, codes = _problem()
    trees = BoostedTrees(n_rounds=20, pca_dims=10)
    trees.fit_bit(x, codes[:, 0], seed=0)
    first = trees.projection_
    out = trees.fit_bit(x, codes[:, 1], seed=1)
    assert trees.projection_ is first
    trees.release()
    assert out.shape == (len(x),) and set(np.unique(out)) <= {-1, 1}
    assert trees.decision_function(x).shape == (len(x), 2)


def test_early_stopping_keeps_the_best_round_and_fits():
    x, codes = _problem()
    trees = BoostedTrees(n_rounds=300, learning_rate=0.3, early_stopping_rounds=5).fit(x, codes)
    assert all(1 <= r <= 300 for r in trees.rounds_)
    assert min(trees.rounds_) < 300
    assert np.mean(trees.predict(x) == codes) > 0.9


def test_multi_output_trees_agree_with_per_bit_trees():
    pytest.importorskip("xgboost")
    x, codes = _problem()
    codes[:, 2] = 1  # a constant bit keeps its constant
    per_bit = BoostedTrees(n_rounds=80).fit(x, codes, seed=0)
    multi = BoostedTrees(n_rounds=80, backend="xgboost-multi", device="cpu").fit(x, codes, seed=0)
    held_out, truth = _problem(n=400, seed=9)
    truth[:, 2] = 1
    assert np.mean(multi.predict(x) == codes) > 0.93
    assert np.all(multi.predict(held_out)[:, 2] == 1)
    accuracy = np.mean(multi.predict(held_out) == truth)
    assert accuracy > np.mean(per_bit.predict(held_out) == truth) - 0.05


def test_multi_output_backend_refuses_per_bit_use():
    x, codes = _problem()
    with pytest.raises(ConfigError):
        BoostedTrees(backend="xgboost-multi").fit_bit(x, codes[:, 0])
    with pytest.raises(ConfigError):
        BoostedTrees(backend="nope").fit(x, codes)


def test_bagging_is_seeded_and_checked():
    x, codes = _problem()
    first = BoostedTrees(n_rounds=20, bagging_fraction=0.5).fit(x, codes, seed=4).decision_function(x)
    again = BoostedTrees(n_rounds=20, bagging_fraction=0.5).fit(x, codes, seed=4).decision_function(x)
    full = BoostedTrees(n_rounds=20).fit(x, codes, seed=4).decision_function(x)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, full)
    assert np.mean(np.where(first > 0, 1, -1) == codes) > 0.9
    with pytest.raises(ConfigError):
        BoostedTrees(bagging_fraction=0.0).fit(x, codes)


def test_auto_bagging_keeps_small_sets_whole_and_samples_large_ones():
    assert auto_bagging_fraction(400) == 1.0
    assert auto_bagging_fraction(5000) == 1.0
    assert auto_bagging_fraction(59000) == pytest.approx(5000 / 59000)  # CIFAR-10's database
    x, codes = _problem()  # 600 rows: the auto setting is the reference setting
    auto = BoostedTrees(n_rounds=20, bagging_fraction=None).fit(x, codes, seed=3)
    whole = BoostedTrees(n_rounds=20).fit(x, codes, seed=3)
    assert auto.bagging_fraction_ == 1.0
    np.testing.assert_array_equal(auto.decision_function(x), whole.decision_function(x))
    big, big_codes = _problem(n=8000, seed=1)
    sampled = BoostedTrees(n_rounds=20, bagging_fraction=None).fit(big, big_codes, seed=3)
    assert sampled.bagging_fraction_ == pytest.approx(5000 / 8000)
    reference = BoostedTrees(n_rounds=20).fit(big, big_codes, seed=3)
    assert not np.array_equal(sampled.decision_function(x), reference.decision_function(x))
    # on held-out rows, about as accurate as trees that see every row each round
    accuracy = np.mean(sampled.predict(x) == codes)
    assert accuracy > 0.75
    assert accuracy > np.mean(reference.predict(x) == codes) - 0.02


def test_boosting_threads_follow_the_cells_a_tree_reads():
    trees = BoostedTrees()
    wide = np.empty((5000, 4096), dtype=np.float32)
    trees.feature_fraction_, trees.bagging_fraction_ = 1.0, 1.0
    assert trees._threads(trees._boosting_cells(wide)) == 2  # 20 million cells
    trees.feature_fraction_ = 0.1  # 410 features: 2 million cells, one thread
    assert trees._boosting_cells(wide) == 2_048_000
    assert trees._threads(trees._boosting_cells(wide)) == 1
    database = np.empty((59000, 4096), dtype=np.float32)
    assert trees._threads(trees._boosting_cells(database)) == 2
    trees.bagging_fraction_ = auto_bagging_fraction(59000)  # about 5,000 rows per tree again
    assert trees._threads(trees._boosting_cells(database)) == 1
    assert BoostedTrees(n_jobs=3)._threads(10**9) == 3


def test_auto_feature_fraction_keeps_low_dimensional_inputs_whole():
    assert auto_feature_fraction(16) == 1.0
    assert auto_feature_fraction(256) == 1.0
    assert auto_feature_fraction(1296) == pytest.approx(256 / 1296)
    assert auto_feature_fraction(2560) == 0.1
    assert auto_feature_fraction(4096) == 0.0625  # fc7: 256 features per tree
    x, codes = _problem()  # 40 dims: the auto setting is the reference setting
    auto = BoostedTrees(n_rounds=20, feature_fraction=None).fit(x, codes, seed=2)
    whole = BoostedTrees(n_rounds=20).fit(x, codes, seed=2)
    assert auto.feature_fraction_ == 1.0
    np.testing.assert_array_equal(auto.decision_function(x), whole.decision_function(x))


def test_auto_feature_fraction_samples_wide_inputs_and_still_fits():
    x, codes = _low_rank(400, seed=0, d=3000, bits=3)
    trees = BoostedTrees(n_rounds=30, feature_fraction=None)
    out = trees.fit_bit(x, codes[:, 0], seed=1)  # FastH's bit-by-bit path too
    trees.release()
    assert trees.feature_fraction_ == pytest.approx(256 / 3000)
    assert np.mean(out == codes[:, 0]) > 0.9
    fitted = BoostedTrees(n_rounds=30, feature_fraction=None).fit(x, codes, seed=1)
    assert np.mean(fitted.predict(x) == codes) > 0.9
    with pytest.raises(ConfigError):
        BoostedTrees(feature_fraction=0.0).fit(x, codes)


@pytest.mark.parametrize("name", ["lfh", "cosdish", "fasth"])
def test_tree_methods_default_to_the_fast_tree_settings_and_log_them(name):
    from hashbench import registry
    from hashbench.api import RunContext
    from hashbench.testing import training_view

    cls = registry.get(name)
    defaults = cls().get_params()
    assert defaults["tree_feature_fraction"] is None
    assert defaults["tree_max_bin"] == 63  # issue 14: LFH rev. 4, COSDISH rev. 3, FastH rev. 3
    if name != "fasth":  # FastH trains on sampled sets only: no bagging option
        assert defaults["tree_bagging_fraction"] == 1.0
    rng = np.random.default_rng(0)
    labels = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 90)]
    x = (labels @ rng.standard_normal((3, 64)) + 0.5 * rng.standard_normal((90, 64))).astype(np.float32)
    data = training_view(x, labels)
    logged = {}
    rounds = {"fasth": {"n_rounds": 5}}.get(name, {"tree_rounds": 5})
    method = cls(bits=4, **rounds)
    method.fit(data, RunContext(seed=0, log_metric=lambda k, v, s: logged.setdefault(k, v)))
    assert logged["tree_feature_fraction"] == 1.0  # 64 dims: every feature
    if name != "fasth":
        assert logged["tree_bagging_fraction"] == 1.0  # 90 rows: every row


def test_cosdish_trees_keep_a_tenth_of_wide_inputs():
    """LFH and FastH trees take 256 features at any width; COSDISH's keep a floor of a tenth
    (at 4,096 dims 256 features per tree lost 0.009 MAP on its validation)."""
    from hashbench.methods.cosdish import COSDISH
    from hashbench.methods.lfh import LFH

    assert auto_feature_fraction(4096, floor=0.1) == 0.1
    assert auto_feature_fraction(1296, floor=0.1) == pytest.approx(256 / 1296)
    assert COSDISH(bits=4)._extension(100, 4096).feature_floor == 0.1
    assert LFH(bits=4)._extension(100, 4096).feature_floor == 0.0
    trees = BoostedTrees(feature_fraction=None, feature_floor=0.1)
    trees._resolve_fraction(np.empty((10, 4096), dtype=np.float32))
    assert trees.feature_fraction_ == 0.1
