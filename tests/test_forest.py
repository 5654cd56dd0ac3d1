"""Issue 14: compiled tree prediction (hashbench.forest) gives LightGBM's raw scores exactly."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from hashbench.forest import Forest
from hashbench.oos import BoostedTrees


def _data(seed: int = 0, n: int = 600, d: int = 6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[rng.random((n, d)) < 0.1] = 0.0  # exact zeros (missing type Zero routes them)
    x[rng.random((n, d)) < 0.05] = np.nan
    label = ((np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + 0.3 * rng.standard_normal(n)) > 0)
    return x, label.astype(float)


@pytest.mark.parametrize("params", [
    {},                                   # NaN seen in training: missing type NaN
    {"zero_as_missing": True},            # missing type Zero
    {"use_missing": False},               # missing type None: NaN read as 0
])
def test_raw_scores_equal_lightgbm_bit_for_bit(params):
    x, label = _data()
    base = {"objective": "binary", "num_leaves": 8, "max_depth": 3, "verbose": -1,
            "min_data_in_leaf": 5, "deterministic": True, "seed": 1}
    models = [lgb.train(base | params, lgb.Dataset(x, label=label), num_boost_round=30),
              -1.0,  # a constant bit
              lgb.train(base | params | {"seed": 2}, lgb.Dataset(x, label=1 - label),
                        num_boost_round=12)]
    test = np.vstack([_data(seed=5)[0], np.full((1, x.shape[1]), np.nan), np.zeros((1, x.shape[1]))])
    forest = Forest.from_models(models)
    scores = forest.scores(test, threads=2)
    np.testing.assert_array_equal(scores[:, 0], models[0].predict(test, raw_score=True))
    np.testing.assert_array_equal(scores[:, 1], -1.0)
    np.testing.assert_array_equal(scores[:, 2], models[2].predict(test, raw_score=True))
    assert len(forest.roots) == 42 and set(forest.missing) <= {0, 1, 2}


def test_one_leaf_trees_and_the_best_iteration():
    x, label = _data(seed=3)
    flat = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 1000},
                     lgb.Dataset(x, label=label), num_boost_round=3)  # no split possible
    train = lgb.Dataset(x[:400], label=label[:400])
    valid = lgb.Dataset(x[400:], label=label[400:], reference=train)
    stopped = lgb.train({"objective": "binary", "verbose": -1, "learning_rate": 0.5, "seed": 0},
                        train, num_boost_round=200, valid_sets=[valid], keep_training_booster=True,
                        callbacks=[lgb.early_stopping(3, verbose=False)])  # keeps the later trees
    assert 0 < stopped.best_iteration < stopped.num_trees()
    scores = Forest.from_models([flat, stopped]).scores(x.astype(np.float32))
    for k, model in enumerate([flat, stopped]):  # predict uses the best iteration by default
        np.testing.assert_array_equal(scores[:, k], model.predict(x.astype(np.float32), raw_score=True))


def test_boosted_trees_codes_are_the_same_with_either_predictor():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 30)).astype(np.float32)
    codes = np.where(x[:, :4] + 0.3 * rng.standard_normal((400, 4)) > 0, 1, -1)
    codes[:, 2] = 1  # a constant bit
    trees = BoostedTrees(n_rounds=15, max_bin=63, feature_fraction=None).fit(x, codes, seed=3)
    new = rng.standard_normal((250, 30)).astype(np.float32)
    compiled = trees.decision_function(new)
    trees.predictor = "lightgbm"
    np.testing.assert_array_equal(compiled, trees.decision_function(new))
    trees.predictor = "compiled"
    assert trees._compiled() is trees._compiled()  # kept between calls
    extra = BoostedTrees(n_rounds=5).fit(x, codes[:, :1]).models_[0]
    trees.models_.append(extra)  # the models changed: rebuilt
    assert trees.decision_function(new).shape == (250, 5)


def test_categorical_splits_are_refused():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (300, 2)).astype(float)
    model = lgb.train({"objective": "binary", "verbose": -1, "min_data_per_group": 5,
                       "cat_smooth": 1}, lgb.Dataset(x, label=(x[:, 0] > 2).astype(float),
                                                     categorical_feature=[0]), num_boost_round=3)
    with pytest.raises(ValueError, match="numerical splits only"):
        Forest.from_models([model])
