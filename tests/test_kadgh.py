"""KADGH: exact discrete steps, a non-increasing objective, KADGH-D codes, single-label only."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hashbench.methods.kadgh import KADGH, Affinity, class_ids, objective

from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.errors import DataError
from hashbench.testing import training_view


def dense_affinity(pc, ac, rho, shift=0.0):
    return np.where(pc[:, None] == ac[None, :], 1.0, -rho) - shift


def test_affinity_products_match_the_dense_matrix():
    rng = np.random.default_rng(0)
    pc, ac = rng.integers(0, 4, 30), rng.integers(0, 4, 7)
    aff = Affinity(pc, ac, 4, rho=0.5, shift=0.3)
    a = dense_affinity(pc, ac, 0.5, 0.3)
    z = rng.normal(size=(7, 3))
    b = rng.normal(size=(30, 3))
    assert np.allclose(aff.times(z), a @ z)
    assert np.allclose(aff.transpose_times(b), a.T @ b)
    assert aff.squared_norm() == pytest.approx(np.sum(a ** 2))


def test_offset_step_is_the_exact_minimiser():
    rng = np.random.default_rng(3)
    pc, ac = rng.integers(0, 3, 25), rng.integers(0, 3, 8)
    r = 5
    b = np.where(rng.random((25, r)) < 0.5, 1, -1)
    z = np.where(rng.random((8, r)) < 0.5, 1, -1)
    aff = Affinity(pc, ac, 3)
    best = aff.best_shift(b, z)
    a = dense_affinity(pc, ac, 1.0)
    grid = np.linspace(best - 1, best + 1, 201)
    errors = [np.sum((r * (a - d) - b @ z.T) ** 2) for d in grid]
    assert grid[int(np.argmin(errors))] == pytest.approx(best, abs=0.01)


def test_objective_matches_its_definition():
    rng = np.random.default_rng(1)
    n, m, r = 20, 6, 4
    pc, ac = rng.integers(0, 3, n), rng.integers(0, 3, m)
    aff = Affinity(pc, ac, 3, rho=0.5)
    b = np.where(rng.random((n, r)) < 0.5, 1, -1)
    z = np.where(rng.random((m, r)) < 0.5, 1, -1)
    phi_w, w = rng.normal(size=(n, r)), rng.normal(size=(5, r))
    a = dense_affinity(pc, ac, 0.5)
    direct = (np.sum((r * a - b @ z.T) ** 2) / (r * m) + 0.3 * np.sum((b - phi_w) ** 2)
              + 0.2 * np.sum(w ** 2))
    assert objective(aff, b, z, phi_w, w, 0.3, 0.2) == pytest.approx(direct)


def test_z_and_b_column_updates_are_exact_minimisers():
    rng = np.random.default_rng(2)
    n, m, r = 7, 6, 3
    pc, ac = rng.integers(0, 2, n), rng.integers(0, 2, m)
    aff = Affinity(pc, ac, 2, rho=0.5)
    method = KADGH(bits=r, mu=0.7, nu=0.1)
    b = np.where(rng.random((n, r)) < 0.5, 1, -1).astype(np.int8)
    z = np.where(rng.random((m, r)) < 0.5, 1, -1).astype(np.int8)
    phi_w, w = rng.normal(size=(n, r)), np.zeros((1, r))

    def j(b_, z_):
        return objective(aff, b_, z_, phi_w, w, method.mu, method.nu)

    new_z = method._z_step(aff, b, z)
    # the sweep's last column is optimal given the others: check it by brute force
    best = min(j(b, np.column_stack([new_z[:, :-1], np.array(col)]))
               for col in itertools.product((-1, 1), repeat=m))
    assert j(b, new_z) == pytest.approx(best)
    assert j(b, new_z) <= j(b, z) + 1e-9
    new_b = method._b_step(aff, b, new_z, phi_w)
    best = min(j(np.column_stack([new_b[:, :-1], np.array(col)]), new_z)
               for col in itertools.product((-1, 1), repeat=n))
    assert j(new_b, new_z) == pytest.approx(best)
    assert j(new_b, new_z) <= j(b, new_z) + 1e-9


@pytest.fixture(scope="module")
def digits_train():
    data = load("digits")
    order = np.random.default_rng(0).permutation(len(data))
    return data, order[:400], order[400:500]


def test_kadgh_objective_never_increases_and_codes_are_useful(digits_train):
    data, train_idx, query_idx = digits_train
    x = data.inputs("features")
    train = training_view(x[train_idx], data.labels[train_idx])
    method = KADGH(bits=16, n_anchors=200, n_iter=8).fit(train, RunContext(seed=0))
    obj = method.objective_
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(obj, obj[1:]))
    db = method.database_codes()  # KADGH-D: the learned codes B
    assert db.shape == (400, 16) and db.dtype == np.int8
    assert np.abs(db.mean(axis=0)).max() < 0.9
    q = method.encode(x[query_idx])
    same = (data.labels[query_idx] @ data.labels[train_idx].T) > 0
    dist = (16 - q.astype(int) @ db.T.astype(int)) / 2
    assert dist[same].mean() + 3.0 < dist[~same].mean()


def test_kadgh_refuses_multilabel_data(digits_train):
    data, train_idx, _ = digits_train
    labels = data.labels[train_idx].copy()
    labels[0, (np.argmax(labels[0]) + 1) % labels.shape[1]] = 1
    train = training_view(data.inputs("features")[train_idx], labels)
    with pytest.raises(DataError, match="single-label"):
        KADGH(bits=8).fit(train, RunContext(seed=0))
    assert KADGH.meta.multilabel is False
    with pytest.raises(DataError, match="single-label"):
        class_ids(np.zeros((3, 2)))
