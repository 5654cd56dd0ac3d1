"""ITQ against an independent transcription of the authors' ITQ.m (Gong & Lazebnik).

The reference below follows ITQ.m step by step (``for iter = 0:n_iter``: binarise with
``Z >= 0 -> +1``, ``C = UX' * V``, ``[UB, sigma, UA] = svd(C)``, ``R = UA * UB'``), starting
from the same rotation hashbench draws (the QR factor of ``ctx.rng``'s Gaussian matrix; ITQ.m
takes the SVD factor instead, a different start) and from hashbench's own PCA projection
(eigenvector signs are arbitrary, so the projection is shared, not recomputed).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hashbench.methods.itq import ITQ, quantization_loss

from hashbench.api import RunContext


def gong_itq(v: np.ndarray, rotation: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray, list]:
    """ITQ.m's loop: returns the final rotation, codes sign(V R) (>= 0 -> +1) and the loss
    ||B - V R||^2 after each update."""
    r = rotation
    losses = []
    for _ in range(n_iter + 1):  # for iter = 0:n_iter
        z = v @ r
        ux = -np.ones_like(z)
        ux[z >= 0] = 1
        c = ux.T @ v
        ub, _, ua_t = np.linalg.svd(c)  # C = UB * sigma * UA'
        r = ua_t.T @ ub.T  # R = UA * UB'
        losses.append(float(np.sum((ux - v @ r) ** 2)))
    codes = np.where(v @ r >= 0, 1, -1).astype(np.int8)
    return r, codes, losses


def _training_data(x: np.ndarray):
    # what ITQ.fit reads: ``data.train.inputs`` (TrialData) or ``data.inputs`` (TrainingData)
    return SimpleNamespace(inputs=x, train=SimpleNamespace(inputs=x))


@pytest.fixture(scope="module")
def fitted():
    # isotropic Gaussian data: ITQ is still flipping ~50 bits per update after 50 updates,
    # so one update more or less shows in the rotation and the codes
    x = np.random.default_rng(0).standard_normal((1000, 32))
    seed, bits = 7, 32
    itq = ITQ(bits=bits, n_iter=50).fit(_training_data(x), RunContext(seed=seed))
    v = (x - itq.mean_) @ itq.pca_
    start, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((bits, bits)))
    return x, itq, v, start


def test_codes_and_rotation_equal_the_reference_bit_for_bit(fitted):
    x, itq, v, start = fitted
    rotation, codes, losses = gong_itq(v, start, 50)
    np.testing.assert_allclose(itq.rotation_, rotation, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(itq.encode(x), codes)
    assert len(itq.losses_) == 51
    np.testing.assert_allclose(itq.losses_, losses, rtol=1e-12)


def test_one_update_less_would_not_match(fitted):
    # guards the comparison above: 50 updates (the former loop) give other codes on this input
    x, itq, v, start = fitted
    rotation, codes, _ = gong_itq(v, start, 49)
    assert np.abs(itq.rotation_ - rotation).max() > 1e-4
    agree = (itq.encode(x) == codes).mean()
    assert 0.99 < agree < 1.0


def test_quantisation_loss_decreases_monotonically(fitted):
    x, itq, v, _ = fitted
    losses = np.asarray(itq.losses_)
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < losses[0]
    # the logged loss is the loss of the final rotation against the last codes
    last_codes = np.where(v @ itq.rotation_ > 0, 1.0, -1.0)
    assert quantization_loss(last_codes, v @ itq.rotation_) <= losses[-1] + 1e-9


def test_n_iter_zero_is_one_procrustes_update():
    x = np.random.default_rng(1).standard_normal((200, 8))
    itq = ITQ(bits=8, n_iter=0).fit(_training_data(x), RunContext(seed=0))
    assert len(itq.losses_) == 1
