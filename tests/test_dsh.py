"""DSH (Liu et al. 2016): the contrastive loss on a hand-computed case, the margin, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hashbench.methods.dsh import DSH, dsh_loss

from hashbench.deep import Batch
from hashbench.errors import ConfigError
from hashbench.testing import digits_holdout


def test_loss_on_a_hand_computed_case():
    b = torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    sim = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.float64)
    # pairs (0,1): dissimilar, ||.||^2 = 4  -> 1/2 max(4 - 4, 0) = 0
    #       (0,2): similar,    ||.||^2 = 0.5 -> 1/2 * 0.5 = 0.25
    #       (1,2): dissimilar, ||.||^2 = 2.5 -> 1/2 (4 - 2.5) = 0.75
    # || |b| - 1 ||_1 per row: 0, 0, 1 -> alpha (0 + 1 + 1) over the pairs
    alpha, margin = 0.01, 4.0
    expected = (0.0 + 0.25 + 0.75 + alpha * 2.0) / 3
    assert float(dsh_loss(b, sim, margin, alpha)) == pytest.approx(expected, rel=1e-12)
    # a wider margin reaches the first pair too: 1/2 (6 - 4) = 1 and 1/2 (6 - 2.5) = 1.75
    assert float(dsh_loss(b, sim, 6.0, 0.0)) == pytest.approx((1.0 + 0.25 + 1.75) / 3, rel=1e-12)


def test_gradient_of_the_regulariser_is_alpha_sign_of_the_distance_to_one():
    b = torch.tensor([[0.5, -2.0], [1.5, -0.25]], dtype=torch.float64, requires_grad=True)
    sim = torch.ones(2, 2, dtype=torch.float64)
    # one similar pair: 1/2 ||b0 - b1||^2 + alpha (r0 + r1); d/db0 = (b0 - b1) + alpha sgn(|b0|-1) sgn(b0)
    dsh_loss(b, sim, 4.0, 0.1).backward()
    diff = torch.tensor([[-1.0, -1.75], [1.0, 1.75]], dtype=torch.float64)
    reg = 0.1 * torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(b.grad, diff + reg)


def test_margin_defaults_to_twice_the_code_length():
    rng = np.random.default_rng(0)
    u = torch.from_numpy(rng.standard_normal((6, 12)))
    labels = torch.from_numpy(np.eye(3)[[0, 1, 2, 0, 1, 2]])
    batch = Batch(outputs=u, labels=labels, index=torch.arange(6), train_labels=labels,
                  memory=None, epoch=0)
    sim = (labels @ labels.T > 0).double()
    assert float(DSH(bits=12).batch_loss(batch)) == pytest.approx(float(dsh_loss(u, sim, 24.0, 0.01)))
    assert float(DSH(bits=12, margin=5.0, alpha=0.0).batch_loss(batch)) == pytest.approx(
        float(dsh_loss(u, sim, 5.0, 0.0)))
    with pytest.raises(ConfigError):
        DSH(margin=0.0).validate()
    with pytest.raises(ConfigError):
        DSH(alpha=-1.0).validate()


def test_training_learns_on_digits():
    method = DSH(bits=24, epochs=150)
    result = digits_holdout(method, split_seed=1)
    assert method.losses_[-1] < 0.5 * method.losses_[0]
    assert result.metrics["map"] > 0.85  # ITQ: about 0.6 on digits
    assert "collapsed" not in result.flags
