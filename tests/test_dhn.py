"""DHN (Zhu et al. 2016): the balanced pairwise cross-entropy and the log-cosh quantisation on a
hand-computed case, stability, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hashbench.methods.dhn import DHN, dhn_loss

from hashbench.deep import Batch
from hashbench.errors import ConfigError
from hashbench.testing import digits_holdout


def _nll(theta, s):
    return math.log(1.0 + math.exp(theta)) - s * theta


def test_loss_on_a_hand_computed_case():
    z = torch.tensor([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.0]], dtype=torch.float64)
    sim = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float64)
    alpha = 2.0  # alpha / c = 1: theta = z_i^T z_j
    # inner products: (0,1) = 0, (0,2) = -0.25, (1,2) = -0.25
    # 6 ordered pairs, 2 similar: similar pairs weigh 6 / 2 = 3, dissimilar ones 1
    cross_entropy = 2 * (3 * _nll(0.0, 1) + _nll(-0.25, 0) + _nll(-0.25, 0))
    # sum_k log cosh(|z_ik| - 1): five entries at |z| = 0.5, one at 0
    quantization = 5 * math.log(math.cosh(-0.5)) + math.log(math.cosh(-1.0))
    for lam in (0.0, 0.7):
        expected = (cross_entropy + lam * quantization) / 6
        assert float(dhn_loss(z, sim, alpha, lam)) == pytest.approx(expected, rel=1e-12)


def test_inner_product_is_scaled_by_alpha_over_the_code_length():
    z = torch.full((2, 4), 0.5, dtype=torch.float64)
    sim = torch.eye(2, dtype=torch.float64)  # the pair is dissimilar: no weighting
    # theta = (10 / 4) * (4 * 0.25) = 2.5
    assert float(dhn_loss(z, sim, 10.0, 0.0)) == pytest.approx(_nll(2.5, 0), rel=1e-12)


def test_no_overflow_for_large_inner_products():
    z = torch.tensor([[1.0] * 8, [1.0] * 8, [-1.0] * 8], dtype=torch.float64, requires_grad=True)
    sim = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    loss = dhn_loss(z, sim, 1e4, 1.0)  # theta = +-1e4
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    # (0,1) dissimilar at theta = 1e4 costs 1e4 (both orders); (0,2), (1,2) cost ~0
    assert float(loss.detach()) == pytest.approx(2 * 1e4 / 6, rel=1e-9)


def test_outputs_are_tanh_and_the_method_passes_its_hyper_parameters():
    rng = np.random.default_rng(0)
    raw = torch.from_numpy(rng.standard_normal((5, 6)) * 3)
    method = DHN(bits=6, alpha=4.0, quantization=0.3)
    z = method.activation(raw)
    torch.testing.assert_close(z, torch.tanh(raw))
    labels = torch.from_numpy(np.eye(2)[[0, 1, 0, 0, 1]])
    batch = Batch(outputs=z, labels=labels, index=torch.arange(5), train_labels=labels,
                  memory=None, epoch=0)
    sim = (labels @ labels.T > 0).double()
    assert float(method.batch_loss(batch)) == pytest.approx(float(dhn_loss(z, sim, 4.0, 0.3)))
    with pytest.raises(ConfigError):
        DHN(alpha=0.0).validate()
    with pytest.raises(ConfigError):
        DHN(quantization=-1.0).validate()


def test_training_learns_on_digits():
    method = DHN(bits=24, epochs=150)
    result = digits_holdout(method, split_seed=2)
    assert method.losses_[-1] < 0.5 * method.losses_[0]
    assert result.metrics["map"] > 0.85  # ITQ: about 0.6 on digits
    assert "collapsed" not in result.flags
