"""FastH: the graph-cut step is exact, block descent never raises the BQP, the method learns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hashbench.methods._neyshabur import LabelGroups
from hashbench.methods.fasth import (
    FastH,
    PairProblem,
    block_energy,
    block_graph_cut,
    make_blocks,
    pair_coefficients,
    solve_block,
)

from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.testing import training_view

pytest.importorskip("maxflow")


def brute_force(unary, pairwise):
    best, best_z = np.inf, None
    for bits in itertools.product((-1, 1), repeat=len(unary)):
        z = np.array(bits)
        e = block_energy(z, unary, pairwise)
        if e < best:
            best, best_z = e, z
    return best, best_z


def random_submodular(rng, m):
    pairwise = -rng.exponential(size=(m, m)) * (rng.random((m, m)) < 0.7)
    pairwise = np.triu(pairwise, 1)
    pairwise = pairwise + pairwise.T
    unary = rng.normal(scale=2.0, size=m)
    return unary, pairwise


@pytest.mark.parametrize("seed", range(8))
def test_graph_cut_is_optimal_on_tiny_problems(seed):
    rng = np.random.default_rng(seed)
    unary, pairwise = random_submodular(rng, m=int(rng.integers(2, 11)))
    z = solve_block(unary, pairwise)
    assert set(np.unique(z)) <= {-1, 1}
    best, _ = brute_force(unary, pairwise)
    assert block_energy(z, unary, pairwise) == pytest.approx(best, abs=1e-9)


def test_graph_cut_refuses_a_non_submodular_pair():
    with pytest.raises(ValueError, match="submodular"):
        solve_block(np.zeros(2), np.array([[0.0, 1.0], [1.0, 0.0]]))


def test_pair_coefficients_make_class_blocks_submodular():
    for bits in (1, 2, 7, 32):
        dissimilar, similar = pair_coefficients(bits)
        assert (similar < 0).all() and (dissimilar >= 0).all()


def tiny_problem(seed, n=12, classes=3, earlier_bits=3):
    rng = np.random.default_rng(seed)
    labels = np.eye(classes, dtype=np.uint8)[rng.integers(0, classes, n)]
    codes = np.where(rng.random((n, earlier_bits)) < 0.5, 1, -1).astype(np.int8)
    return PairProblem(codes, LabelGroups(labels > 0, labels > 0), earlier_bits + 1), labels


def total_energy(problem, z):
    a = problem.rows(np.arange(len(z)))
    return 0.5 * float(z @ a @ z)


@pytest.mark.parametrize("seed", range(3))
def test_block_descent_is_block_optimal_and_never_increases_energy(seed):
    problem, labels = tiny_problem(seed)
    rng = np.random.default_rng(seed)
    blocks = make_blocks(labels, max_block=100, rng=rng)
    z = np.ones(len(labels), dtype=np.int8)
    energies = [total_energy(problem, z)]
    for block in blocks:  # one sweep, block by block
        z = block_graph_cut(problem, [block], z, sweeps=1, rng=rng)
        energies.append(total_energy(problem, z))
    assert all(b <= a + 1e-9 for a, b in zip(energies, energies[1:]))
    # after the sweep, no block can be improved by brute force given the others
    for block in blocks:
        a = problem.rows(block)
        unary = a @ z - a[:, block] @ z[block]
        best, _ = brute_force(unary, a[:, block])
        assert block_energy(z[block], unary, a[:, block]) <= best + 1e-6


def test_single_block_graph_cut_finds_the_global_minimum():
    # every point similar (one class): the whole BQP is submodular, one cut solves it
    rng = np.random.default_rng(5)
    n = 10
    labels = np.ones((n, 1), dtype=np.uint8)
    codes = np.where(rng.random((n, 2)) < 0.5, 1, -1).astype(np.int8)
    problem = PairProblem(codes, LabelGroups(labels > 0, labels > 0), 3)
    z = block_graph_cut(problem, make_blocks(labels, 100, rng), np.ones(n, np.int8), 1, rng)
    a = problem.rows(np.arange(n))
    best, _ = brute_force(np.zeros(n), a)
    assert block_energy(z, np.zeros(n), a) == pytest.approx(best, abs=1e-6)


def test_blocks_cover_points_and_are_pairwise_similar():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=np.uint8)
    blocks = make_blocks(labels, max_block=2, rng=np.random.default_rng(0))
    covered = np.zeros(len(labels), bool)
    for block in blocks:
        covered[block] = True
        assert len(block) <= 2
        sub = labels[block].astype(int)
        assert len(block) == 1 or ((sub @ sub.T) > 0).all()
    assert covered.all()


@pytest.fixture(scope="module")
def digits_fit():
    data = load("digits")
    order = np.random.default_rng(0).permutation(len(data))[:300]
    train = training_view(data.inputs("features")[order], data.labels[order])
    logged = []
    method = FastH(bits=8, n_rounds=30).fit(
        train, RunContext(seed=0, log_metric=lambda n, v, s: logged.append((n, v, s))))
    return method, train, logged


def test_fasth_learns_balanced_codes_that_fit_the_labels(digits_fit):
    method, train, logged = digits_fit
    codes = method.encode(train.train.inputs)
    assert np.array_equal(codes, method.train_codes_)
    assert np.abs(codes.mean(axis=0)).max() < 0.8  # no constant bit
    same = (train.train.labels @ train.train.labels.T) > 0
    dist = (codes.shape[1] - codes.astype(int) @ codes.T.astype(int)) / 2
    assert dist[same].mean() + 2.0 < dist[~same].mean()
    history = method.history_
    assert all(h["tree_agreement"] > 0.8 for h in history)
    # the inferred bits and the trees' bits both beat the all-equal start; the loss drops
    assert history[-1]["loss"] < history[0]["loss"]
    assert {name for name, _, _ in logged} >= {"loss", "step1_loss", "bqp_energy"}


def test_fasth_loss_is_below_random_codes(digits_fit):
    method, train, _ = digits_fit
    labels = train.train.labels > 0
    groups = LabelGroups(labels, labels)
    rng = np.random.default_rng(1)
    bits = method.bits
    random_codes = np.where(rng.random((len(labels), bits - 1)) < 0.5, 1, -1).astype(np.int8)
    random_loss = PairProblem(random_codes, groups, bits).summary(
        np.where(rng.random(len(labels)) < 0.5, 1, -1).astype(np.int8))["loss"]
    assert method.history_[-1]["loss"] < 0.5 * random_loss
