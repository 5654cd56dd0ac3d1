"""DPSH: the loss on a hand-computed case, the paper's gradient (the factor 2), training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hashbench.methods.dpsh import DPSH, dpsh_loss

from hashbench.api import RunContext
from hashbench.deep import Batch, log_one_plus_exp
from hashbench.errors import ConfigError
from hashbench.testing import digits_holdout


def _softplus(x):
    return math.log(1.0 + math.exp(x))


def test_log_one_plus_exp_is_stable_at_the_extremes():
    x = torch.tensor([-1000.0, -30.0, -1.0, 0.0, 2.0, 30.0, 1000.0], dtype=torch.float64)
    got = log_one_plus_exp(x)
    assert torch.isfinite(got).all()
    expected = [0.0, math.exp(-30.0), _softplus(-1.0), math.log(2.0), _softplus(2.0), 30.0, 1000.0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-300)


def test_loss_on_a_hand_computed_case():
    # two points, two bits; point 0 and 1 share no label
    u = torch.tensor([[1.0, 0.5], [-1.0, 2.0]], dtype=torch.float64)
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # theta = 0.5 u_i^T u_j: [[0.625, 0], [0, 2.5]]
    likelihood = (_softplus(0.625) - 0.625) + _softplus(0.0) + _softplus(0.0) + (_softplus(2.5) - 2.5)
    # b = sign(u) = [[1, 1], [-1, 1]]: ||b - u||^2 = 0.25 + 1
    quantization = 0.25 + 1.0
    eta, n = 10.0, 2
    got = dpsh_loss(u, u, sim, eta, n)
    assert float(got) == pytest.approx((2 * likelihood + eta * quantization) / n, rel=1e-12)
    one_sided = dpsh_loss(u, u, sim, eta, n, both_sides=False)
    assert float(one_sided) == pytest.approx((likelihood + eta * quantization) / n, rel=1e-12)


def _case(seed, n=7, c=5, n_classes=3):
    rng = np.random.default_rng(seed)
    labels = np.eye(n_classes)[rng.integers(0, n_classes, n)]
    sim = torch.from_numpy((labels @ labels.T > 0).astype(np.float64))
    u = torch.from_numpy(rng.standard_normal((n, c)) * 1.5)
    return u, sim


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_is_the_papers_with_the_factor_2(seed):
    """Autograd on the batch loss (memory fixed) equals the paper's gradient:
    dL/du_i = sum_j (sigmoid(theta_ij) - s_ij) u_j + 2 eta (u_i - b_i), here divided by n,
    which is the gradient of the whole objective over all pairs. The one-sided form (the
    authors' demo) gets only half of the likelihood part."""
    u, sim = _case(seed)
    n, eta = len(u), 10.0
    theta = 0.5 * u @ u.T
    b = torch.where(u > 0, 1.0, -1.0).double()
    likelihood_grad = (torch.sigmoid(theta) - sim) @ u
    quantization_grad = 2 * eta * (u - b)
    paper = (likelihood_grad + quantization_grad) / n

    batch = u.clone().requires_grad_(True)
    dpsh_loss(batch, u, sim, eta, n).backward()
    torch.testing.assert_close(batch.grad, paper, rtol=1e-12, atol=1e-12)

    # the whole objective, differentiated through both sides of every pair
    whole = u.clone().requires_grad_(True)
    th = 0.5 * whole @ whole.T
    objective = (log_one_plus_exp(th) - sim * th).sum() + eta * ((b - whole) ** 2).sum()
    (objective / n).backward()
    torch.testing.assert_close(batch.grad, whole.grad, rtol=1e-12, atol=1e-12)

    one_sided = u.clone().requires_grad_(True)
    dpsh_loss(one_sided, u, sim, eta, n, both_sides=False).backward()
    torch.testing.assert_close(one_sided.grad, (likelihood_grad / 2 + quantization_grad) / n,
                               rtol=1e-12, atol=1e-12)
    assert not torch.allclose(one_sided.grad, batch.grad)


def test_mini_batch_pairs_with_every_training_point_through_the_memory():
    u, sim = _case(2, n=6)
    labels = torch.from_numpy(np.eye(6))  # any labels: the method derives sim from them
    labels[:, 0] = 1.0  # everybody shares label 0: all similar
    method = DPSH(bits=5, eta=3.0)
    index = torch.tensor([1, 4])
    batch = Batch(outputs=u[index], labels=labels[index], index=index, train_labels=labels,
                  memory=u, epoch=0)
    expected = dpsh_loss(u[index], u, torch.ones(2, 6, dtype=torch.float64), 3.0, 6)
    torch.testing.assert_close(method.batch_loss(batch), expected)
    with pytest.raises(ConfigError):
        DPSH(eta=-1.0).validate()


def test_output_layer_starts_scaled_and_the_rest_as_built():
    from hashbench.backbones import build_backbone

    torch.manual_seed(0)
    plain = build_backbone("mlp", 12, (64,))
    torch.manual_seed(0)
    scaled = build_backbone("mlp", 12, (64,))
    method = DPSH(bits=12)
    assert method.resolved_output_scale() == 10.0
    assert DPSH(bits=12, backbone="alexnet").resolved_output_scale() == 1.0
    assert DPSH(bits=12, output_scale=3.0).resolved_output_scale() == 3.0
    method.initialise(scaled)
    x = torch.rand(5, 64)
    hidden = plain.net[:-1](x)
    torch.testing.assert_close(scaled.net[:-1](x), hidden)  # only the output layer changes
    torch.testing.assert_close(scaled(x), 10.0 * plain(x))
    with pytest.raises(ConfigError):
        DPSH(output_scale=0.0).validate()


def test_training_learns_on_digits():
    logged = []
    ctx = RunContext(seed=0, log_metric=lambda n, v, s: logged.append((n, v, s)))
    result = digits_holdout(DPSH(bits=32, epochs=400), split_seed=0, ctx=ctx)
    losses = [v for n, v, _ in logged if n == "loss"]
    assert len(losses) == 400 and losses[-1] < 0.5 * losses[0]
    assert result.metrics["map"] > 0.8  # ITQ: about 0.6 on digits
    assert "collapsed" not in result.flags
