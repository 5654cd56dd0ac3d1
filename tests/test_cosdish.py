"""COSDISH: the balanced BQP of the Omega step, the Gamma step, the targets, and that it learns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hashbench.methods.cosdish import (
    COSDISH,
    balanced_bqp,
    bqp_objective,
    similarity_targets,
    update_gamma,
    update_omega,
)
from hashbench.methods.itq import ITQ
from threadpoolctl import threadpool_limits

from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.errors import ConfigError
from hashbench.testing import digits_map, training_view


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small problems: BLAS threads only add contention (badly so on a busy machine)."""
    with threadpool_limits(1):
        yield


def _random_bqp(rng, m):
    a = rng.standard_normal((m, m))
    q = a + a.T
    np.fill_diagonal(q, 0.0)
    return q, 3.0 * rng.standard_normal(m)


def _balanced_vectors(m):
    for plus in itertools.combinations(range(m), m // 2):
        b = -np.ones(m)
        b[list(plus)] = 1.0
        yield b


@pytest.mark.parametrize("m", [2, 5, 8, 13, 32])
def test_balanced_bqp_returns_exactly_half_plus_ones_and_is_swap_optimal(m):
    rng = np.random.default_rng(m)
    for _ in range(5):
        q, p = _random_bqp(rng, m)
        b = balanced_bqp(q, p, start=np.where(rng.standard_normal(m) > 0, 1.0, -1.0))
        assert set(np.unique(b)) <= {-1.0, 1.0}
        assert (b > 0).sum() == m // 2
        value = bqp_objective(q, p, b)
        for i, j in itertools.product(np.flatnonzero(b > 0), np.flatnonzero(b < 0)):
            swapped = b.copy()
            swapped[i], swapped[j] = -1.0, 1.0
            assert bqp_objective(q, p, swapped) >= value - 1e-9


def test_balanced_bqp_is_never_worse_than_its_start_and_mostly_optimal():
    rng = np.random.default_rng(0)
    optimal = 0
    for _ in range(40):
        q, p = _random_bqp(rng, 8)
        start = next(_balanced_vectors(8))[rng.permutation(8)]
        b = balanced_bqp(q, p, start=start)
        best = min(bqp_objective(q, p, v) for v in _balanced_vectors(8))
        assert bqp_objective(q, p, b) <= bqp_objective(q, p, start) + 1e-9
        optimal += bqp_objective(q, p, b) <= best + 1e-9
    assert optimal >= 30


def test_targets_are_plus_one_and_minus_r_and_balance_out():
    labels = np.eye(3, dtype=np.uint8)[[0, 0, 1, 1, 2, 2, 2, 0]]
    omega = np.array([0, 4, 5])
    t = similarity_targets(labels, omega)
    similar = (labels @ labels[omega].T) > 0
    r = similar.sum() / (~similar).sum()
    np.testing.assert_allclose(t[similar], 1.0)
    np.testing.assert_allclose(t[~similar], -r)
    assert abs(t.sum()) < 1e-12  # r = #similar / #dissimilar makes the block sum to zero


def test_gamma_step_is_the_sign_and_ties_keep_the_old_bit():
    t_gamma = np.array([[1.0, -0.5], [1.0, 1.0], [-0.5, 1.0]])
    b_omega = np.array([[1.0, -1.0], [1.0, 1.0]])
    old = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    # scores: [[0.5, -1.5], [2, 0], [0.5, 1.5]]
    np.testing.assert_array_equal(update_gamma(b_omega, old, t_gamma),
                                  [[1, -1], [1, -1], [1, 1]])


def test_omega_step_balances_every_bit():
    rng = np.random.default_rng(1)
    labels = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 50)]
    omega = rng.choice(50, 10, replace=False)
    rest = np.setdiff1d(np.arange(50), omega)
    t = similarity_targets(labels, omega)
    b = np.where(rng.standard_normal((50, 6)) > 0, 1.0, -1.0)
    new = update_omega(b[omega], b[rest], t[omega], t[rest])
    np.testing.assert_array_equal((new > 0).sum(axis=0), 5)


def test_training_drives_the_sampled_objective_down_and_logs_it():
    data = load("digits")
    train = training_view(data.features[:300], data.labels[:300])
    logged = []
    ctx = RunContext(seed=0, log_metric=lambda name, value, step: logged.append((name, step)))
    cosdish = COSDISH(bits=16, tree_rounds=5).fit(train, ctx)
    before, after = np.array(cosdish.objective_).T
    assert len(before) == 10
    # not a descent method (greedy bit rebuild, relaxed Gamma step): it must still fit far
    # better than the random start on every later sampled block
    assert after.max() < 0.5 * before[0]
    assert [s for name, s in logged if name == "sampled_objective"] == list(range(30))
    codes = cosdish.database_codes()
    assert codes.shape == (300, 16) and codes.dtype == np.int8


@pytest.mark.parametrize("params, message", [({"n_columns": 1}, "Omega"), ({"bits": 0}, "bits"),
                                             ({"extension": "svm"}, "extension")])
def test_impossible_settings_are_config_errors(params, message):
    data = load("digits")
    train = training_view(data.features[:20], data.labels[:20])
    with pytest.raises(ConfigError, match=message):
        COSDISH(**params).fit(train, RunContext())
    with pytest.raises(ConfigError, match="Omega"):
        COSDISH(bits=32).fit(train, RunContext())


def test_cosdish_clearly_beats_itq_on_digits():
    seeds = (0, 1)
    cosdish = np.mean([digits_map(COSDISH(bits=24, tree_rounds=50), s) for s in seeds])
    itq = np.mean([digits_map(ITQ(bits=24), s) for s in seeds])
    assert cosdish > 0.9 and cosdish > itq + 0.2
