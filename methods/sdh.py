"""SDH: supervised discrete hashing (Shen, Shen, Liu & Shen, CVPR 2015).

Not the deep method with the same initials. SDH learns binary codes ``B`` that a linear
classifier ``W`` maps to the labels and that a kernel hash function ``F(x) = P^T phi(x)``
reproduces (paper eq. 6, L2 loss)::

    min_{B, W, P}  ||Y - B W||^2 + lambda ||W||^2 + nu ||B - phi(X) P||^2,   B in {-1, +1}^(n x c)

``phi(x)`` are RBF features over m anchors, ``exp(-||x - a_j||^2 / (2 sigma^2))``, plus a bias
column of ones. The alternation (section 3):

* F-step (eq. 7): ``P = (phi^T phi + delta I)^{-1} phi^T B`` (the authors' code adds the ridge
  ``delta = 1e-2``, Fmap.lambda);
* G-step (eq. 8): ``W = (B^T B + lambda I)^{-1} B^T Y``;
* B-step (eqs. 10-14): ``min_B ||B W||^2 - 2 tr(B^T Q)`` with ``Q = Y W^T + nu phi(X) P``, by
  discrete cyclic coordinate descent (DCC): for each bit k, with ``B'``, ``W'`` the other
  bits' columns and rows, ``z = sign(q_k - B' W' w_k^T)`` (eq. 14) is the exact minimiser over
  that bit, because ``||z w_k||^2 = n ||w_k||^2`` does not depend on z. Sweeps over the bits
  repeat until B stops changing, at most 10 per B-step.

Order as in the authors' code: random ``B``, G-step, F-step, then 5 times (B-step, G-step,
F-step). Each step exactly minimises
``J = ||Y - BW||^2 + lambda ||W||^2 + nu (||B - phi P||^2 + delta ||P||^2)`` over its block, so
``J`` (logged per outer iteration as ``objective``) never increases.

Demo settings (authors' code): rows L2-normalised, 1,000 random training points as anchors
(all of them when there are fewer), sigma = 0.4 for normalised data, nu = 1e-5, delta = 1e-2,
lambda = 1, labels ``Y`` as a 0/1 (multi-hot) matrix. Hash function ``h(x) = sign(phi(x) P)``.
Trained on the full database this is SDH-D: the database codes are the learned ``B``.
Everything is n x m at most (m anchors); no n x n matrix is formed. The authors' code can
also leave the outer loop early on a 1e-5 tolerance (the hash function fitting the codes
almost exactly, which needs far more anchors than points); we always run the 5 outer
iterations.

Equation numbers are quoted from the CVPR paper, which is not in ``../shared/papers``: check
them against the PDF. The DCC rule is tested against brute force.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_limits

from hashbench.api import AsymmetricHasher, MethodMeta, RunContext, TrialData, binarize
from hashbench.errors import ConfigError
from hashbench.registry import register

_CHUNK_ROWS = 4096


def l2_normalise(x: Any) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    return x / np.where(norms > 0, norms, 1.0)[:, None]


def rbf_features(x: np.ndarray, anchors: np.ndarray, sigma: float) -> np.ndarray:
    """``[exp(-||x - a_j||^2 / (2 sigma^2))_j, 1]``, float64 (n, m + 1), in row chunks."""
    out = np.empty((len(x), len(anchors) + 1))
    out[:, -1] = 1.0
    anchor_sq = np.einsum("ij,ij->i", anchors, anchors, dtype=np.float64)
    for start in range(0, len(x), _CHUNK_ROWS):
        chunk = x[start:start + _CHUNK_ROWS]
        sq = (np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)[:, None] + anchor_sq[None, :]
              - 2.0 * (chunk @ anchors.T).astype(np.float64))
        out[start:start + len(chunk), :-1] = np.exp(-np.maximum(sq, 0.0) / (2.0 * sigma**2))
    return out


def ridge_solve(a: np.ndarray, b: np.ndarray, ridge: float) -> np.ndarray:
    """``(A^T A + ridge I)^{-1} A^T B``."""
    gram = a.T @ a
    gram[np.diag_indices_from(gram)] += ridge
    return np.linalg.solve(gram, a.T @ b)


class RidgeSolver:
    """``B -> (A^T A + ridge I)^{-1} A^T B`` for a fixed ``A``: the F-step's Cholesky factor is
    computed once and reused by every outer iteration."""

    def __init__(self, a: np.ndarray, ridge: float) -> None:
        gram = a.T @ a
        gram[np.diag_indices_from(gram)] += ridge
        self.a = a
        self.factor = cho_factor(gram)

    def __call__(self, b: np.ndarray) -> np.ndarray:
        return cho_solve(self.factor, self.a.T @ b)


def dcc_bit(b: np.ndarray, w: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Eq. 14 for bit k: ``sign(q_k - B' W' w_k^T)`` (the other bits fixed; 0 -> -1)."""
    others = np.delete(b, k, axis=1) @ (np.delete(w, k, axis=0) @ w[k])
    return np.where(q[:, k] - others > 0, 1.0, -1.0)


def dcc(b: np.ndarray, w: np.ndarray, q: np.ndarray, max_sweeps: int = 10) -> tuple[np.ndarray, int]:
    """Discrete cyclic coordinate descent for ``min_B ||B W||^2 - 2 tr(B^T Q)`` (eq. 14).

    ``b`` (n x c, +1/-1 floats) is the start; returns the codes and the sweeps run. A sweep
    that changes no bit ends the descent (the authors' code stops when
    ``||B - B0|| < 1e-6 ||B0||``, i.e. when nothing changed).
    """
    b = b.copy()
    wwt = w @ w.T  # c x c: B' W' w_k^T = B (W W^T)[:, k] - b_k (W W^T)[k, k]
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        previous = b.copy()
        for k in range(b.shape[1]):  # dcc_bit, with W W^T computed once
            others = b @ wwt[:, k] - b[:, k] * wwt[k, k]
            b[:, k] = np.where(q[:, k] - others > 0, 1.0, -1.0)
        if np.array_equal(b, previous):
            break
    return b, sweeps


def sdh_objective(y: np.ndarray, b: np.ndarray, w: np.ndarray, phi: np.ndarray, p: np.ndarray,
                  lam: float, nu: float, delta: float) -> float:
    """``J = ||Y - BW||^2 + lambda ||W||^2 + nu (||B - phi P||^2 + delta ||P||^2)``."""
    return float(np.square(y - b @ w).sum() + lam * np.square(w).sum()
                 + nu * (np.square(b - phi @ p).sum() + delta * np.square(p).sum()))


@register
class SDH(AsymmetricHasher):
    meta = MethodMeta(
        name="sdh",
        title="SDH",
        citation="Shen, Shen, Liu & Shen, Supervised discrete hashing, CVPR 2015",
        family="shallow",
        supervised=True,
        asymmetric=True,
    )
    param_rules = {"n_anchors": ">=1", "sigma": ">0", "nu": ">=0", "delta": ">=0", "lambda_g": ">=0",
                   "n_outer": ">=1", "dcc_sweeps": ">=1"}

    def __init__(self, bits: int = 32, n_anchors: int = 1000, sigma: float = 0.4, nu: float = 1e-5,
                 delta: float = 1e-2, lambda_g: float = 1.0, n_outer: int = 5,
                 dcc_sweeps: int = 10) -> None:
        self.bits = bits
        self.n_anchors = n_anchors
        self.sigma = sigma
        self.nu = nu
        self.delta = delta
        self.lambda_g = lambda_g
        self.n_outer = n_outer
        self.dcc_sweeps = dcc_sweeps

    def _validate(self) -> None:
        if self.bits < 1:
            raise ConfigError(f"sdh: bits must be positive, got {self.bits}")
        if self.n_anchors < 1:
            raise ConfigError(f"sdh: n_anchors must be positive, got {self.n_anchors}")
        if self.sigma <= 0:
            raise ConfigError(f"sdh: sigma must be positive, got {self.sigma}")

    def fit(self, data: TrialData, ctx: RunContext) -> SDH:
        self._validate()
        x = l2_normalise(data.train.inputs)
        y = np.asarray(data.train.labels, dtype=np.float64)
        n = len(x)
        anchors = x[np.sort(ctx.rng.choice(n, size=min(self.n_anchors, n), replace=False))]
        phi = rbf_features(x, anchors, self.sigma)
        b = binarize(ctx.rng.standard_normal((n, self.bits))).astype(np.float64)
        f_step = RidgeSolver(phi, self.delta)
        w = ridge_solve(b, y, self.lambda_g)  # G-step
        p = f_step(b)  # F-step
        self.objective_ = [sdh_objective(y, b, w, phi, p, self.lambda_g, self.nu, self.delta)]
        # n x c work from here on (the Cholesky factor above keeps its threads): one BLAS
        # thread is as fast and avoids oversubscription stalls on shared cores.
        with threadpool_limits(1, user_api="blas"):
            for it in ctx.progress(range(self.n_outer), total=self.n_outer, desc="sdh"):
                q = y @ w.T + self.nu * (phi @ p)
                b, sweeps = dcc(b, w, q, self.dcc_sweeps)  # B-step
                w = ridge_solve(b, y, self.lambda_g)  # G-step
                p = f_step(b)  # F-step
                self.objective_.append(sdh_objective(y, b, w, phi, p, self.lambda_g, self.nu, self.delta))
                ctx.log_metric("objective", self.objective_[-1], it)
                ctx.log_metric("dcc_sweeps", float(sweeps), it)
        self.anchors_ = anchors
        self.projection_ = p
        self.codes_ = b.astype(np.int8)
        self.learned_indices_ = np.asarray(data.train.indices)
        return self

    def encode(self, inputs: Any) -> np.ndarray:
        self._check_fitted("projection_")
        return binarize(rbf_features(l2_normalise(inputs), self.anchors_, self.sigma) @ self.projection_)

    def database_codes(self) -> np.ndarray:
        self._check_fitted("codes_")
        return self.codes_
