from __future__ import annotations

import numpy as np
import pytest
from hashbench.methods.itq import ITQ, quantization_loss
from hashbench.methods.lsh import LSH

from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.errors import ConfigError
from hashbench.testing import training_view


def _train(n=500):
    data = load("digits")
    return training_view(data.features[:n], data.labels[:n])


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_itq_quantisation_loss_never_increases(bits):
    logged = []
    ctx = RunContext(seed=3, log_metric=lambda n, v, s: logged.append((n, v, s)))
    itq = ITQ(bits=bits).fit(_train(), ctx)
    losses = np.array(itq.losses_)
    assert len(losses) == 51  # n_iter + 1 updates, as ITQ.m
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < losses[0]
    assert [s for _, _, s in logged] == list(range(51))


def test_itq_rotation_is_orthogonal_and_transpose_rotation_is_worse():
    data = _train()
    itq = ITQ(bits=16).fit(data, RunContext(seed=0))
    r = itq.rotation_
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-10)
    v = (np.asarray(data.train.inputs, np.float64) - itq.mean_) @ itq.pca_
    codes = np.where(v @ r > 0, 1.0, -1.0)
    right = quantization_loss(codes, v @ r)
    # the transposed rotation (the bug of two popular ports) fits the codes worse
    wrong = quantization_loss(np.where(v @ r.T > 0, 1.0, -1.0), v @ r.T)
    assert right < wrong


def test_itq_refuses_more_bits_than_dimensions():
    data = _train(40)
    with pytest.raises(ConfigError, match="itq"):
        ITQ(bits=48).fit(data, RunContext())


def test_lsh_depends_on_seed_and_is_balanced_after_centring():
    data = _train()
    a = LSH(bits=32).fit(data, RunContext(seed=0)).encode(data.train.inputs)
    b = LSH(bits=32).fit(data, RunContext(seed=1)).encode(data.train.inputs)
    assert not np.array_equal(a, b)
    assert abs(a.mean()) < 0.3


def test_principal_directions_agree_between_the_two_routes():
    from hashbench.methods.itq import principal_directions

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)) * np.arange(1, 13)
    x -= x.mean(0)
    wide = principal_directions(x, 5)                 # n >= d: eigh route
    few = x[:10] - x[:10].mean(0)
    narrow = principal_directions(few, 5)             # n < d: svd route
    assert wide.shape == (12, 5) and narrow.shape == (12, 5)
    svd_wide = np.linalg.svd(x, full_matrices=False)[2][:5].T
    np.testing.assert_allclose(np.abs(wide.T @ svd_wide), np.eye(5), atol=1e-8)
    variances = np.var(few @ narrow, axis=0)
    assert np.all(np.diff(variances) <= 1e-12)
