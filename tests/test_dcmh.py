"""DCMH: the batch gradient against the authors' hand-written one (process_DCMH.m), the release's
settings, symmetric database codes, learning on the bundled two-view digits, the -D name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hashbench.methods.dcmh import e_sign, pair_batch_loss

from hashbench import registry
from hashbench.api import RunContext
from hashbench.backbones import TextMLP
from hashbench.conformance import sample_for
from hashbench.evaluation import evaluate
from hashbench.runner import run_trial_data


def test_batch_gradient_is_the_release_formula():
    """d loss / d G_b = 1/2 F^T (sigmoid(theta) - S_b) + 2 gamma (G_b - B_b) + 2 eta G 1 (column
    form in the release; rows here), G 1 summed over the buffer with the fresh batch."""
    rng = np.random.default_rng(0)
    n, c, b, k = 12, 5, 4, 3
    labels = torch.from_numpy((rng.random((n, k)) < 0.4).astype(np.float32))
    Fbuf = torch.from_numpy(rng.standard_normal((n, c)))
    Gbuf = torch.from_numpy(rng.standard_normal((n, c)))
    B = e_sign(Fbuf + Gbuf)
    rows = torch.tensor([1, 4, 7, 10])
    out = torch.from_numpy(rng.standard_normal((b, c))).requires_grad_(True)
    gamma, eta = 1.3, 0.7
    pair_batch_loss(out, rows, Fbuf, Gbuf, B, labels, gamma, eta).backward()
    G = Gbuf.clone()
    G[rows] = out.detach()
    S = ((labels @ labels.T) > 0).double()
    theta = 0.5 * Fbuf @ G[rows].T                              # (n, b)
    expected = (0.5 * (torch.sigmoid(theta) - S[:, rows]).T @ Fbuf
                + 2 * gamma * (G[rows] - B[rows]) + 2 * eta * G.sum(0))
    torch.testing.assert_close(out.grad, expected)


def test_e_sign_keeps_zero():
    np.testing.assert_array_equal(e_sign(torch.tensor([-2.0, 0.0, 3.0])).numpy(), [-1.0, 0.0, 1.0])


def test_release_settings():
    cls = registry.get("dcmh")
    method = cls()
    assert (method.gamma, method.eta, method.batch_size, method.epochs) == (1.0, 1.0, 128, 500)
    assert method.momentum == 0.0 and method.weight_decay == 5e-4
    # the release's schedule shape: logspace over 1.5 decades (-1.5 -> -3 there)
    rates = method.learning_rates(method.epochs)
    assert rates[0] / rates[-1] == pytest.approx(10 ** 1.5)
    assert method.text_hidden == 8192 and method.text_init_std == 0.01
    assert cls.meta.modalities == ("features", "text") and not cls.meta.asymmetric
    assert cls.meta.display_name("full") == "DCMH-D" and cls(backbone="cnn").modalities == ("image", "text")
    net = TextMLP(30, 16, hidden=8192, init_std=0.01)
    assert net.fc1.out_features == 8192 and float(net.fc1.weight.detach().std()) == pytest.approx(0.01, rel=0.05)


@pytest.fixture(scope="module")
def fitted():
    method = registry.get("dcmh")(bits=16, epochs=40, text_hidden=512, hidden=64)
    data = sample_for(method, full=False, n_train=1200, n_database=400, n_query=100)
    codes, _ = run_trial_data(method, data, RunContext(seed=0))
    return method, data, {t.name: pair for t, pair in codes.items()}


def test_symmetric_database_codes_come_from_the_database_modality(fitted):
    method, data, codes = fitted
    np.testing.assert_array_equal(codes["i2t"][1], method.encode(data.database["text"], "text"))
    np.testing.assert_array_equal(codes["t2i"][1], method.encode(data.database["features"], "features"))


def test_learns_both_directions_on_two_view_digits(fitted):
    method, data, codes = fitted
    for task, (q, d) in codes.items():
        value = evaluate(q, d, data.query.labels, data.database.labels).metrics["map"]
        assert value > 0.2, (task, value)                       # chance is about 0.1
    assert method.losses_[-1] < method.losses_[0]


def test_balance_term_of_the_curvature_hand_worked_and_the_hessian():
    """With no likelihood (an all-zero other buffer) and gamma = 0 the bound is the balance
    term's, ``2 eta b (1 + ||h||^2) / n`` (h = the batch mean of the output layer's inputs;
    revision 2's whole bound): the largest Hessian eigenvalue of the batch's balance term."""
    from hashbench.methods.dcmh import output_layer_curvature

    def balance_only(h: torch.Tensor, n: int, eta: float) -> float:
        zeros = torch.zeros(n, 2, dtype=h.dtype)
        return output_layer_curvature(h, torch.zeros(len(h), 2, dtype=h.dtype), zeros, n, 0.0, eta)

    h = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)        # mean (2, 3): ||h||^2 = 13
    assert balance_only(h, n=10, eta=0.5) == pytest.approx(2 / (10 / (0.5 * 2 * 14)))
    rng = np.random.default_rng(1)
    n, b, k, c, eta = 20, 5, 3, 2, 0.7
    h = torch.from_numpy(rng.random((b, k)))
    rest = torch.from_numpy(rng.standard_normal(c))                      # the buffer's other rows

    def balance(flat: torch.Tensor) -> torch.Tensor:                     # the output layer (W, w0)
        W, w0 = flat[:c * k].reshape(c, k), flat[c * k:]
        return eta * ((rest + (h @ W.T + w0).sum(0)) ** 2).sum() / (b * n)

    hessian = torch.autograd.functional.hessian(balance, torch.zeros(c * k + c, dtype=torch.float64))
    largest = float(torch.linalg.eigvalsh(hessian).max())
    assert balance_only(h, n, eta) == pytest.approx(largest)


def _output_layer_hessian(h, W, w0, rows, other, own, B, labels, gamma, eta):
    """The exact Hessian of one batch's loss (divided by b n) in the output layer (W, w0)."""
    c, k = W.shape
    n, b = len(own), len(rows)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        out = h @ flat[:c * k].reshape(c, k).T + flat[c * k:]
        return pair_batch_loss(out, rows, other, own, B, labels, gamma, eta) / (b * n)

    flat = torch.cat([W.reshape(-1), w0])
    return torch.autograd.functional.hessian(loss, flat), h @ W.T + w0


def _batch_problem(seed: int, n: int = 14, b: int = 4, k: int = 3, c: int = 3, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy((rng.random((n, 4)) < 0.4).astype(np.float64))
    other = torch.from_numpy(scale * rng.standard_normal((n, c)))
    own = torch.from_numpy(rng.standard_normal((n, c)))
    B = e_sign(other + own)
    rows = torch.from_numpy(rng.choice(n, b, replace=False))
    h = torch.from_numpy(rng.random((b, k)))
    W = torch.from_numpy(rng.standard_normal((c, k)))
    w0 = torch.from_numpy(rng.standard_normal(c))
    return h, W, w0, rows, other, own, B, labels


@pytest.mark.parametrize("seed", range(6))
def test_output_layer_curvature_bounds_the_exact_hessian(seed):
    """Revision 3's step bound: at any point, the largest eigenvalue of the exact Hessian of the
    batch loss (likelihood, quantisation and balance) in the output layer is at most the bound."""
    from hashbench.methods.dcmh import output_layer_curvature, top_eigenvalue

    h, W, w0, rows, other, own, B, labels = _batch_problem(seed, scale=0.3 + seed)
    gamma, eta = (1.0, 1.0) if seed % 2 else (0.4, 2.5)
    hessian, out = _output_layer_hessian(h, W, w0, rows, other, own, B, labels, gamma, eta)
    largest = float(torch.linalg.eigvalsh(hessian).max())
    bound = output_layer_curvature(h, out, other, len(own), gamma, eta)
    assert largest <= bound * (1 + 1e-9)
    assert bound < 4 * largest                              # and not vacuous
    # the caller may pass lambda_max(other^T other) and the row norms, computed once per turn
    assert output_layer_curvature(h, out, other, len(own), gamma, eta, top_eigenvalue(other),
                                  (other ** 2).sum(1)) == pytest.approx(bound)


def test_output_layer_curvature_is_exact_for_the_likelihood_at_zero_outputs():
    """With W = 0, w0 = 0 every theta is 0, sigmoid' = 1/4 everywhere, and the likelihood's
    Hessian is 1/(16 b n) A^T A (x) O^T O: its largest eigenvalue is the bound, exactly."""
    from hashbench.methods.dcmh import output_layer_curvature

    h, W, w0, rows, other, own, B, labels = _batch_problem(7, scale=2.0)
    hessian, out = _output_layer_hessian(h, torch.zeros_like(W), torch.zeros_like(w0), rows, other,
                                         own, B, labels, gamma=0.0, eta=0.0)
    largest = float(torch.linalg.eigvalsh(hessian).max())
    a = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
    by_hand = (float(torch.linalg.eigvalsh(a.T @ a)[-1]) * float(torch.linalg.eigvalsh(other.T @ other)[-1])
               / (16 * len(h) * len(own)))
    assert largest == pytest.approx(by_hand)
    assert output_layer_curvature(h, out, other, len(own), 0.0, 0.0) == pytest.approx(by_hand)


def test_output_layer_curvature_uses_the_trace_once_theta_saturates():
    """Large outputs saturate sigmoid'(theta): the trace term takes over and the bound falls far
    below the sigmoid' <= 1/4 bound, still above the exact eigenvalue."""
    from hashbench.methods.dcmh import output_layer_curvature

    h, W, w0, rows, other, own, B, labels = _batch_problem(3, scale=3.0)
    hessian, out = _output_layer_hessian(h, 30 * W, 30 * w0, rows, other, own, B, labels, 0.0, 0.0)
    largest = float(torch.linalg.eigvalsh(hessian).max())
    a = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
    quarter = (float(torch.linalg.eigvalsh(a.T @ a)[-1]) * float(torch.linalg.eigvalsh(other.T @ other)[-1])
               / (16 * len(h) * len(own)))
    bound = output_layer_curvature(h, out, other, len(own), 0.0, 0.0)
    assert largest <= bound < quarter / 10


def test_registered_rates_stay_finite_on_a_small_training_set():
    """The registered rates on 200 pairs (32-d views, 64 bits): the former guard, n / (2 eta b) on
    the output bias only, let the 8,192-unit text network's balance term diverge (loss nan in the
    fourth epoch); the per-step bound with the output layer's weights keeps every loss finite."""
    method = registry.get("dcmh")(bits=64, epochs=4)
    data = sample_for(method, full=True, n_train=200, n_query=10)
    method.fit(data.for_fit(), RunContext(seed=0))
    assert np.isfinite(method.losses_).all() and len(method.losses_) == 4
    assert max(method.losses_) < 2 * method.losses_[0]          # 0.77 -> 1.0 here; the former rule: nan
