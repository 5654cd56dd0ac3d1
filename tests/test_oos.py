"""The out-of-sample component: boosted trees per bit, the linear extension, the template."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hashbench import conformance
from hashbench.api import MethodMeta, RunContext
from hashbench.errors import ConfigError, NotFittedError
from hashbench.oos import (
    BoostedTrees,
    LinearProjection,
    Standardiser,
    TwoStepHasher,
    default_threads,
    make_extension,
)
from hashbench.testing import training_view


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small problems: BLAS threads only add contention (badly so on a busy machine)."""
    with threadpool_limits(1):
        yield


def _problem(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    codes = np.stack([
        np.where(x[:, 0] > 0, 1, -1),
        np.where(x[:, 1] * x[:, 2] > 0, 1, -1),  # not linearly separable
        np.where(x[:, 3] > 0.5, 1, -1),
    ], axis=1).astype(np.int8)
    return x, codes


def test_boosted_trees_learn_codes_and_generalise():
    x, codes = _problem()
    xt, codes_t = _problem(seed=1)
    trees = BoostedTrees(n_rounds=50).fit(x, codes, seed=3)
    pred = trees.predict(xt)
    assert pred.dtype == np.int8 and pred.shape == codes_t.shape
    assert set(np.unique(pred)) <= {-1, 1}
    assert (pred == codes_t).mean(axis=0).min() > 0.85
    scores = trees.decision_function(xt)
    np.testing.assert_array_equal(np.where(scores > 0, 1, -1), pred)


def test_boosted_trees_are_deterministic_and_row_independent():
    x, codes = _problem()
    a = BoostedTrees(n_rounds=20).fit(x, codes, seed=1).decision_function(x)
    b = BoostedTrees(n_rounds=20).fit(x, codes, seed=1)
    np.testing.assert_array_equal(a, b.decision_function(x))
    np.testing.assert_array_equal(b.predict(x[:7]), b.predict(x)[:7])


def test_constant_bit_gets_a_constant_predictor():
    x, codes = _problem()
    codes[:, 1] = -1
    trees = BoostedTrees(n_rounds=5).fit(x, codes)
    assert (trees.predict(x)[:, 1] == -1).all()
    assert len(trees.models_) == 3


def test_sample_weights_change_what_is_learned():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 2)).astype(np.float32)
    truth = np.where(x[:, 0] > 0, 1, -1).astype(np.int8)
    region = x[:, 1] > 0.7
    noisy = np.where(region, -truth, truth).astype(np.int8)  # labels flipped in a region
    weight = np.where(region, 0.0, 1.0)
    plain = BoostedTrees(n_rounds=60, min_child_samples=5).fit(x, noisy[:, None])
    weighted = BoostedTrees(n_rounds=60, min_child_samples=5).fit(x, noisy[:, None],
                                                                 sample_weight=weight)
    assert (plain.predict(x)[region, 0] == noisy[region]).mean() > 0.9
    assert (weighted.predict(x)[region, 0] == truth[region]).mean() > 0.9


def test_fit_bit_appends_bits_and_returns_training_predictions():
    x, codes = _problem()
    trees = BoostedTrees(n_rounds=30)
    outputs = [trees.fit_bit(x, codes[:, k], seed=k) for k in range(3)]
    assert len(trees.models_) == 3
    np.testing.assert_array_equal(np.stack(outputs, axis=1), trees.predict(x))
    # the binned dataset is shared across the calls on the same array, and can be freed
    assert trees._train_ref() is x
    trees.release()
    assert trees._train_set is None
    np.testing.assert_array_equal(np.stack(outputs, axis=1), trees.predict(x))


def test_linear_projection_is_the_ridge_solution():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8))
    targets = rng.standard_normal((300, 4))
    lin = LinearProjection(ridge=2.5).fit(x, targets)
    expected = np.linalg.solve(x.T @ x + 2.5 * np.eye(8), x.T @ targets)
    np.testing.assert_allclose(lin.weights_, expected, rtol=1e-10)
    np.testing.assert_array_equal(lin.predict(x), np.where(x @ expected > 0, 1, -1))
    assert lin.predict(x).dtype == np.int8


def test_make_extension_and_bad_kind():
    assert isinstance(make_extension("trees", n_rounds=3), BoostedTrees)
    assert make_extension("linear", ridge=4.0).ridge == 4.0
    with pytest.raises(ConfigError, match="trees, linear"):
        make_extension("svm")


def test_standardiser_handles_constant_columns():
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0], [5.0, 5.0, 0.0]], dtype=np.float32)
    z = Standardiser().fit(x).transform(x)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z[:, 0].std(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(z[:, 1:], 0.0, atol=1e-6)


def test_thread_setting(monkeypatch):
    monkeypatch.setenv("HASHBENCH_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("HASHBENCH_THREADS", "many")
    with pytest.raises(ConfigError, match="HASHBENCH_THREADS"):
        default_threads()


class ClassPrototypes(TwoStepHasher):
    """Step 1 gives every class a random code; step 2 learns to predict it."""

    meta = MethodMeta(name="prototypes", title="P", citation="test", family="shallow",
                      supervised=True, asymmetric=True)

    def __init__(self, bits: int = 8, extension: str = "trees") -> None:
        self.bits = bits
        self.extension = extension

    def _learn_codes(self, x, labels, ctx):
        table = np.where(ctx.rng.standard_normal((labels.shape[1], self.bits)) > 0, 1, -1)
        return table[labels.argmax(axis=1)].astype(np.int8)

    def _extension(self, n, d):
        return make_extension(self.extension, **({"n_rounds": 20} if self.extension == "trees" else {}))


@pytest.mark.parametrize("extension", ["trees", "linear"])
def test_two_step_template_passes_conformance(extension):
    class Variant(ClassPrototypes):
        def __init__(self, bits: int = 8, extension: str = extension) -> None:
            super().__init__(bits, extension)

    conformance.check_method(Variant)


def test_two_step_template_keeps_training_codes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    labels = np.eye(4, dtype=np.uint8)[np.argmax(x[:, :4], axis=1)]
    method = ClassPrototypes(bits=6)
    with pytest.raises(NotFittedError):
        method.database_codes()
    method.fit(training_view(x, labels), RunContext(seed=0))
    codes = method.database_codes()
    assert codes.shape == (200, 6) and codes.dtype == np.int8
    assert (method.encode(x) == codes).mean() > 0.9
