"""Lin:Lin and Lin:V (Neyshabur et al. 2013): loss pieces, the hinge step, learning, contracts."""

from __future__ import annotations

import numpy as np
import pytest
from hashbench.methods._neyshabur import (
    LabelGroups,
    NeyshaburConfig,
    PairStatistics,
    best_threshold,
    hinge_sgd,
    pair_loss,
    share_label,
)
from hashbench.methods.linlin import LinLin
from hashbench.methods.linv import LinV

from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.errors import DataError
from hashbench.testing import training_view

FAST = {"max_epochs": 3, "sgd_epochs": 3, "sgd_batches": 30}


def test_pair_loss_weights_and_margin():
    y = np.array([4.0, -4.0])
    sim = pair_loss(np.array([True, True]), y, 0.0, 0.7, 0.5)
    dis = pair_loss(np.array([False, False]), y, 0.0, 0.7, 0.5)
    assert sim[0] < sim[1] and dis[1] < dis[0]  # right side of the threshold costs less
    assert sim[0] == pytest.approx(0.7 * np.log1p(np.exp(-4.0)) ** 0.5)
    assert dis[1] == pytest.approx(0.3 * np.log1p(np.exp(-4.0)) ** 0.5)


def test_threshold_search_is_exact_on_the_sample():
    rng = np.random.default_rng(0)
    bits = 6
    y = rng.choice(np.arange(-bits, bits + 1, 2), size=500)
    similar = rng.random(500) < 0.3 + 0.1 * (y > 0)
    counts = np.zeros((2, bits + 1), int)
    np.add.at(counts, (similar.astype(int), (y + bits) // 2), 1)
    theta, loss = best_threshold(counts, bits, 0.7, 0.5)
    direct = {t: pair_loss(similar, y, t, 0.7, 0.5).mean() for t in range(-bits - 1, bits + 2, 2)}
    assert loss == pytest.approx(min(direct.values()))
    assert direct[theta] == pytest.approx(loss)


def test_pair_statistics_track_inner_products():
    rng = np.random.default_rng(1)
    labels = np.eye(3, dtype=bool)[rng.integers(0, 3, 40)]
    stats = PairStatistics(labels, labels, n_pairs=500, rng=rng, same_set=True)
    assert (stats.rows != stats.cols).all()
    codes_q = np.where(rng.random((40, 5)) < 0.5, 1, -1).astype(np.int8)
    codes_d = np.where(rng.random((40, 5)) < 0.5, 1, -1).astype(np.int8)
    stats.reset(codes_q, codes_d)
    direct = (codes_q[stats.rows].astype(int) * codes_d[stats.cols]).sum(1)
    assert np.array_equal(stats.y, direct)
    assert np.array_equal(stats.similar, (labels[stats.rows] & labels[stats.cols]).any(1))


def test_label_groups_match_label_products_for_multilabel_data():
    rng = np.random.default_rng(2)
    lq = rng.random((30, 5)) < 0.3
    ld = rng.random((50, 5)) < 0.3
    groups = LabelGroups(lq, ld)
    rows, cols = rng.integers(0, 30, 12), rng.integers(0, 50, 20)
    assert np.array_equal(groups.block(rows, cols), share_label(lq[rows], ld[cols]))


def test_hinge_sgd_separates_a_weighted_problem():
    rng = np.random.default_rng(3)
    x = np.hstack([rng.normal(size=(300, 4)), np.ones((300, 1))]).astype(np.float32)
    truth = np.array([1.0, -2.0, 0.5, 0.0, 0.3], np.float32)
    targets = np.where(x @ truth > 0, 1.0, -1.0)
    w = hinge_sgd(targets, x, rng.random(300) + 0.5, np.zeros(5, np.float32),
                  NeyshaburConfig(), rng)
    assert np.mean(np.sign(x @ w) == targets) > 0.95


@pytest.fixture(scope="module")
def digits_split():
    data = load("digits")
    order = np.random.default_rng(0).permutation(len(data))
    return data, order[:250], order[250:650]


def _train(data, idx, db_idx=None):
    x = data.inputs("features")
    database = None if db_idx is None else (x[db_idx], data.labels[db_idx])
    return training_view(x[idx], data.labels[idx], database=database)


def _separation(q, db, lq, ld):
    same = (lq @ ld.T) > 0
    dist = (q.shape[1] - q.astype(int) @ db.T.astype(int)) / 2
    return dist[~same].mean() - dist[same].mean()


@pytest.mark.parametrize("cls", [LinLin, LinV], ids=["linlin", "linv"])
def test_loss_decreases_and_codes_are_balanced(cls, digits_split):
    data, train_idx, _ = digits_split
    train = _train(data, train_idx)
    logged = []
    method = cls(bits=8, **FAST).fit(
        train, RunContext(seed=0, log_metric=lambda n, v, s: logged.append((n, v))))
    history = method.loss_history_
    assert history[-1] < 0.6 * history[0]
    assert all(b <= a + 1e-3 + 1e-12 for a, b in zip(history, history[1:]))  # acceptance rule
    assert [v for n, v in logged if n == "loss"] == history
    q, db = method.encode(train.train.inputs), method.database_codes()
    assert db.shape == (len(train_idx), 8)
    for codes in (q, db):
        assert np.abs(codes.mean(axis=0)).max() < 0.9
    assert _separation(q, db, train.train.labels, train.train.labels) > 1.5


def test_linlin_database_codes_use_the_database_function(digits_split):
    data, train_idx, db_idx = digits_split
    train = _train(data, train_idx, db_idx)
    method = LinLin(bits=6, **FAST).fit(train, RunContext(seed=1))
    db = method.encode_database(train)
    assert db.shape == (len(db_idx), 6)
    assert np.array_equal(db, method.database_function(train.database.inputs))
    assert not np.array_equal(db, method.encode(train.database.inputs))  # two functions
    # trained on the database itself, the codes computed during fit are handed out
    full = _train(data, db_idx)
    method = LinLin(bits=6, **FAST).fit(full, RunContext(seed=1))
    assert np.array_equal(method.encode_database(full), method.database_function(full.database.inputs))


def test_linv_learns_a_code_word_for_every_database_item(digits_split):
    data, train_idx, db_idx = digits_split
    train = _train(data, train_idx, db_idx)
    method = LinV(bits=8, **FAST).fit(train, RunContext(seed=2))
    db = method.encode_database(train)
    assert db.shape == (len(db_idx), 8)
    assert np.array_equal(db, method.database_codes())
    # the learned code words separate the database's classes from the training queries
    q = method.encode(train.train.inputs)
    assert _separation(q, db, train.train.labels, data.labels[db_idx]) > 1.5
    # and a database it did not learn is refused (Lin:V has no database function)
    other = _train(data, train_idx, db_idx[:-5])
    with pytest.raises(DataError, match="no database hash function"):
        method.encode_database(other)


def test_bad_loss_parameters_are_refused(digits_split):
    from hashbench.errors import ConfigError

    data, train_idx, _ = digits_split
    with pytest.raises(ConfigError, match="beta"):
        LinV(bits=4, beta=1.5).fit(_train(data, train_idx), RunContext(seed=0))
