"""LFH: the minorise-maximise step, the objective, PCA initialisation, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
from hashbench.methods.itq import ITQ
from hashbench.methods.lfh import (
    LFH,
    lfh_gradient,
    lfh_step,
    principal_directions,
    sampled_log_posterior,
    similarity_block,
)
from threadpoolctl import threadpool_limits

from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.errors import ConfigError
from hashbench.oos import LinearProjection, Standardiser
from hashbench.testing import digits_map, training_view


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small problems: BLAS threads only add contention (badly so on a busy machine)."""
    with threadpool_limits(1):
        yield


def _toy(n=60, c=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.eye(classes, dtype=np.uint8)[rng.integers(0, classes, n)]
    return rng.standard_normal((n, c)) * 2.0, labels, rng


def test_step_never_lowers_the_sampled_objective_of_rows_outside_omega():
    for seed in range(5):
        u, labels, rng = _toy(seed=seed)
        for _ in range(10):
            omega = rng.choice(len(u), size=6, replace=False)
            s = similarity_block(labels, omega)
            new = lfh_step(u, omega, s, beta=5.0)
            rest = np.setdiff1d(np.arange(len(u)), omega)
            before = sampled_log_posterior(u[rest], u[omega], s[rest], 5.0)
            after = sampled_log_posterior(new[rest], u[omega], s[rest], 5.0)
            assert (after >= before - 1e-9).all()
            assert after.sum() > before.sum()
            u = new


def test_gradient_matches_finite_differences():
    u, labels, rng = _toy(n=10, c=3)
    omega = np.array([1, 4, 7])
    s = similarity_block(labels, omega)
    grad = lfh_gradient(u, u[omega], s, beta=2.0)
    eps = 1e-6
    for i in (0, 2, 9):
        for k in range(3):
            bumped = u[i].copy()
            bumped[k] += eps
            up = sampled_log_posterior(bumped[None], u[omega], s[i:i + 1], 2.0)[0]
            bumped[k] -= 2 * eps
            down = sampled_log_posterior(bumped[None], u[omega], s[i:i + 1], 2.0)[0]
            assert abs((up - down) / (2 * eps) - grad[i, k]) < 1e-5 * max(1.0, abs(grad[i, k]))


def test_similarity_block_is_shared_label():
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(similarity_block(labels, np.array([1, 3])),
                                  [[0, 1], [1, 1], [1, 0], [1, 1]])


def test_training_lowers_the_sampled_objective_and_logs_each_iteration():
    data = load("digits")
    train = training_view(data.features[:300], data.labels[:300])
    logged = []
    ctx = RunContext(seed=0, log_metric=lambda name, value, step: logged.append((name, step)))
    lfh = LFH(bits=16, tree_rounds=5).fit(train, ctx)
    assert logged == [("sampled_neg_log_posterior", step) for step in range(50)] + [
        ("tree_feature_fraction", 0), ("tree_bagging_fraction", 0)]  # the trees' resolved fractions
    # (issue 14)
    before, after = np.array(lfh.sampled_objective_).T
    assert (after <= before + 1e-12).all()  # every step is a minorise-maximise step
    assert after[-10:].mean() < 0.5 * before[0]  # and training improves the fit overall
    np.testing.assert_array_equal(lfh.database_codes(), np.where(lfh.latent_ > 0, 1, -1))


def test_randomised_pca_matches_exact_pca():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((1100, 5)))[0]
    x = (rng.standard_normal((300, 5)) * [20, 15, 10, 8, 6]) @ basis.T
    x = (x + 0.1 * rng.standard_normal(x.shape) + 3.0).astype(np.float32)
    mean, randomised = principal_directions(x, 5, rng)  # d > 1024: randomised path
    centred = x - x.mean(axis=0)
    exact = np.linalg.svd(centred.astype(np.float64), full_matrices=False)[2][:5].T
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    cosines = np.linalg.svd(exact.T @ randomised, compute_uv=False)
    assert cosines.min() > 0.999


def test_linear_extension_regresses_latent_factors_with_scaled_ridge():
    data = load("digits")
    train = training_view(data.features[:200], data.labels[:200])
    lfh = LFH(bits=8, n_iter=5, extension="linear", ridge=2.0).fit(train, RunContext(seed=1))
    assert isinstance(lfh.extension_, LinearProjection)
    x = Standardiser().fit(train.train.inputs).transform(train.train.inputs).astype(np.float64)
    expected = np.linalg.solve(x.T @ x + 2.0 * 200 / 64 * np.eye(64), x.T @ lfh.latent_)
    # X^T X is accumulated from float32 chunk products: agree to float32 accuracy
    np.testing.assert_allclose(lfh.extension_.weights_, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params, message", [
    ({"bits": 120}, "120 bits"),  # more bits than the 100 training points (revision 2 allows > d)
    ({"extension": "svm"}, "extension"),
    ({"n_columns": 0}, "n_columns"),
    ({"beta": 0.0}, "beta"),
])
def test_impossible_settings_are_config_errors(params, message):
    data = load("digits")
    train = training_view(data.features[:100], data.labels[:100])
    with pytest.raises(ConfigError, match=message):
        LFH(**params).fit(train, RunContext())


def test_lfh_clearly_beats_itq_on_digits():
    seeds = (0, 1)
    lfh = np.mean([digits_map(LFH(bits=32, tree_rounds=50), s) for s in seeds])
    itq = np.mean([digits_map(ITQ(bits=32), s) for s in seeds])
    assert lfh > 0.85 and lfh > itq + 0.15
