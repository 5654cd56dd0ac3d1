"""COSDISH: column sampling based discrete supervised hashing (Kang, Li & Zhou, AAAI 2016).

Objective (paper eq. 1): ``min_B ||c S - B B^T||_F^2`` over ``B`` in {-1, +1}^(n x c), with
``S`` the pairwise similarity. Each outer iteration samples ``|Omega|`` columns of ``S``
(``Omega``: random training points, ``Gamma``: the rest) and minimises the sampled part
(eq. 3)::

    F(B_Omega, B_Gamma) = ||c S^Gamma - B_Gamma B_Omega^T||_F^2 + ||c S^Omega - B_Omega B_Omega^T||_F^2

with ``S^Gamma = S[Gamma, Omega]``, ``S^Omega = S[Omega, Omega]``, by alternating (eqs. 4-12):

* ``B_Gamma`` step (eq. 5): ``B_Gamma = sign(S^Gamma B_Omega)``; an entry whose argument is
  (numerically) zero keeps its previous value, as ``ex_sign`` in the authors' code;
* ``B_Omega`` step, bit by bit (eqs. 7-8): for bit k, with the residuals of the bits before it,
  ``R^Omega = c S^Omega - sum_{t<k} b_t b_t^T`` and ``R^Gamma = c S^Gamma - sum_{t<k}
  B_Gamma[:, t] b_t^T``, solve the binary quadratic program
  ``min_b b^T Q b + p^T b`` with ``Q = -2 R^Omega`` (zero diagonal) and
  ``p = -2 (R^Gamma)^T B_Gamma[:, k]``, under the balance constraint that half of ``b`` is +1
  (section "Update B_Omega": the BQP is turned into a balanced two-cluster problem).
  :func:`balanced_bqp` solves it by swap descent from three balanced starts (the previous
  bit, a linearisation at it, and a spectral relaxation): repeatedly exchange the +1/-1 pair
  that lowers the objective most, until no exchange helps, and keep the best (every returned
  solution is balanced and 1-swap optimal). The authors solve the equivalent clustering form
  with their own routine; this is our solver for the same sub-problem.

As in the authors' code: features standardised per dimension, ``B`` initialised at random,
``|Omega| = c`` (the code length), 10 outer x 3 alternating iterations, similarity targets
+1 for similar pairs and ``-r`` for dissimilar ones with ``r = #similar / #dissimilar`` over
the sampled block (the residual uses only bits ``t < k``, as in the code and eq. 8).

Out-of-sample extension: boosted trees per bit (the ADSH paper's setting,
:class:`hashbench.oos.BoostedTrees`), or ``extension="linear"``: the authors' code's
``W = (X^T X + I)^{-1} X^T B``, ``h(x) = sign(x W)``. Trained on the full database this is
COSDISH-D: the database codes are the learned ``B``. Only n x |Omega| blocks of ``S`` are
ever formed.

Trees (issue 14): :class:`hashbench.oos.BoostedTrees`, set by the ``tree_*`` parameters. Since
revision 2 each tree sees :func:`hashbench.oos.auto_feature_fraction` of the inputs by default
(logged as the metric ``tree_feature_fraction``; ``tree_feature_fraction=1.0`` is the reference).
Since revision 3 the trees use 63 histogram bins per feature (``tree_max_bin=63``; 255 is the
reference). The auto fraction keeps a floor of a tenth of the features
(:data:`COSDISH_FRACTION_FLOOR`; LFH and FastH take 256 features per tree at every width): at
4,096 dims 256 features per tree lost 0.009 MAP (``hashbench/oos.py``). Row bagging for the
"-D" fits on a whole database is an option, off by default (``tree_bagging_fraction``: a share
of the rows per round, or ``None`` for :func:`hashbench.oos.auto_bagging_fraction`,
``min(1, 5,000 / n)``; the share used is logged as the metric ``tree_bagging_fraction``). The
other speed options are off; ``hashbench/oos.py`` (:class:`~hashbench.oos.BoostedTrees`) has
the measurements.

The alternation is not a descent method on eq. 3 (the Omega step rebuilds the bits greedily on
the residual of the bits before them; the Gamma step drops the ``||B_Gamma B_Omega^T||^2``
term, exact only when ``B_Omega^T B_Omega = |Omega| I``): the sampled objective of each outer
iteration, before and after, is logged (``sampled_objective_before`` / ``_after``, and per
alternation ``sampled_objective``) and kept in ``objective_``. Equation numbers are quoted from
the AAAI paper, which is not in ``../shared/papers``: check them against the PDF.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from hashbench.api import MethodMeta, RunContext, binarize
from hashbench.errors import ConfigError
from hashbench.labels import balanced_targets, share_label
from hashbench.oos import EXTENSIONS, BoostedTrees, LinearProjection, TwoStepHasher
from hashbench.registry import register

# The tree extension's per-tree feature fraction never drops under a tenth for COSDISH (issue 14:
# 410 of 4,096 features; hashbench.oos.auto_feature_fraction)
COSDISH_FRACTION_FLOOR = 0.1

# ``ex_sign`` of the authors' code: |S^Gamma B_Omega| below this keeps the previous bit.
_TIE = 1e-5


def bqp_objective(q: np.ndarray, p: np.ndarray, b: np.ndarray) -> float:
    """``b^T Q b + p^T b``."""
    b = np.asarray(b, dtype=np.float64)
    return float(b @ q @ b + p @ b)


def _top_half(score: np.ndarray) -> np.ndarray:
    """+1 on the ``m // 2`` largest scores (ties by position), -1 elsewhere."""
    b = -np.ones(len(score))
    b[np.argsort(-score, kind="stable")[: len(score) // 2]] = 1.0
    return b


def _swap_descent(q: np.ndarray, p: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exchange +1/-1 pairs while one lowers ``b^T Q b + p^T b`` (Q symmetric, zero diagonal).

    Swapping ``b_i = +1`` and ``b_j = -1`` changes the objective by
    ``-2 g_i + 2 g_j - 8 Q_ij`` with ``g = 2 Q b + p``.
    """
    b = b.copy()
    g = 2.0 * q @ b + p
    tol = 1e-12 * (np.abs(q).sum() + np.abs(p).sum() + 1.0)
    for _ in range(len(b) ** 2):
        pos, neg = np.flatnonzero(b > 0), np.flatnonzero(b < 0)
        if not len(pos) or not len(neg):
            break
        delta = 2.0 * (g[neg][None, :] - g[pos][:, None]) - 8.0 * q[np.ix_(pos, neg)]
        best = int(np.argmin(delta))
        if delta.flat[best] >= -tol:
            break
        i, j = pos[best // len(neg)], neg[best % len(neg)]
        b[i], b[j] = -1.0, 1.0
        g += 4.0 * (q[:, j] - q[:, i])
    return b


def _spectral_direction(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Relaxation: homogenise (b -> [b; 1], ``Q' = [[Q, p/2], [p^T/2, 0]]``) and take the
    eigenvector of the smallest eigenvalue of ``Q'``, signed so that its last entry is >= 0."""
    m = len(p)
    homogeneous = np.zeros((m + 1, m + 1))
    homogeneous[:m, :m] = q
    homogeneous[:m, m] = homogeneous[m, :m] = p / 2.0
    vector = np.linalg.eigh(homogeneous)[1][:, 0]
    return vector[:m] * (1.0 if vector[m] >= 0 else -1.0)


def balanced_bqp(q: np.ndarray, p: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """``argmin b^T Q b + p^T b`` over b in {-1, +1}^m with exactly ``m // 2`` entries +1.

    Swap descent (see :func:`_swap_descent`) from up to three balanced starts: the balanced
    rounding of the negative gradient at ``start`` (at 0 without a start), of the spectral
    relaxation (:func:`_spectral_direction`), and ``start`` itself made balanced (its +1s
    kept where possible); the best local optimum is returned as float +1/-1. Deterministic.
    """
    q = np.asarray(q, dtype=np.float64)
    q = (q + q.T) / 2.0
    np.fill_diagonal(q, 0.0)  # b_i^2 = 1: the diagonal is a constant
    p = np.asarray(p, dtype=np.float64)
    current = np.zeros(len(p)) if start is None else np.asarray(start, dtype=np.float64)
    descent = -(2.0 * q @ current + p)
    scale = np.abs(descent).max() + 1e-300
    starts = [_top_half(descent), _top_half(_spectral_direction(q, p))]
    if start is not None:
        starts.append(_top_half(current + 0.5 * descent / scale))
    solutions = [_swap_descent(q, p, b) for b in starts]
    values = [bqp_objective(q, p, b) for b in solutions]
    return solutions[int(np.argmin(values))]


def sampled_objective(b: np.ndarray, omega: np.ndarray, target: np.ndarray, bits: int) -> float:
    """``||c S[:, Omega] - B B_Omega^T||_F^2 / (n |Omega|)``: eq. 3 over the sampled block."""
    b = np.asarray(b, dtype=np.float64)
    residual = bits * target - b @ b[omega].T
    return float(np.square(residual).mean())


def similarity_targets(labels: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Sampled block ``S[:, Omega]`` with +1 for pairs that share a label, ``-r`` otherwise."""
    return balanced_targets(share_label(labels, np.asarray(labels)[omega]))


def update_omega(b_omega: np.ndarray, b_gamma: np.ndarray, t_omega: np.ndarray,
                 t_gamma: np.ndarray) -> np.ndarray:
    """The ``B_Omega`` step: each bit from its balanced BQP (eq. 8), bits in order."""
    m, c = b_omega.shape
    b_omega = b_omega.copy()
    gamma_targets = t_gamma.T @ b_gamma  # (S^Gamma)^T B_Gamma, m x c
    gamma_gram = b_gamma.T @ b_gamma  # B_Gamma^T B_Gamma, c x c
    for k in range(c):
        done = b_omega[:, :k]
        q = -2.0 * (c * t_omega - done @ done.T)
        p = -2.0 * (c * gamma_targets[:, k] - done @ gamma_gram[:k, k])
        b_omega[:, k] = balanced_bqp(q, p, start=b_omega[:, k])
    return b_omega


def update_gamma(b_omega: np.ndarray, b_gamma: np.ndarray, t_gamma: np.ndarray) -> np.ndarray:
    """The ``B_Gamma`` step (eq. 5): ``sign(S^Gamma B_Omega)``, ties keep the previous bit."""
    scores = t_gamma @ b_omega
    return np.where(np.abs(scores) < _TIE, b_gamma, np.where(scores > 0, 1.0, -1.0))


@register
class COSDISH(TwoStepHasher):
    meta = MethodMeta(
        name="cosdish",
        title="COSDISH",
        citation="Kang, Li & Zhou, Column sampling based discrete supervised hashing, AAAI 2016",
        family="shallow",
        supervised=True,
        asymmetric=True,
        revision=3,  # 2: trees sample features (tree_feature_fraction=None, issue 14);
        # 3: 63 histogram bins (tree_max_bin=63, issue 14)
    )
    param_rules = {"n_outer": ">=1", "n_alternations": ">=1", "n_columns": ">=1", "ridge": ">=0",
                   "tree_rounds": ">=1", "tree_depth": ">=1", "tree_learning_rate": ">0",
                   "tree_feature_fraction": "(0,1]", "tree_pca_dims": ">=1", "extension": ("trees", "linear"),
                   "tree_backend": ("lightgbm", "xgboost-multi"),
                   "tree_bagging_fraction": "(0,1]", "tree_max_bin": ">=2"}
    conformance_params = {"tree_rounds": 10}

    def __init__(self, bits: int = 32, n_outer: int = 10, n_alternations: int = 3,
                 n_columns: int | None = None, ridge: float = 1.0, extension: str = "trees",
                 tree_rounds: int = 200, tree_depth: int = 4,
                 tree_learning_rate: float = 0.1, tree_feature_fraction: float | None = None,
                 tree_pca_dims: int | None = None, tree_backend: str = "lightgbm",
                 tree_bagging_fraction: float | None = 1.0, tree_max_bin: int = 63) -> None:
        self.bits = bits
        self.n_outer = n_outer
        self.n_alternations = n_alternations
        self.n_columns = n_columns
        self.ridge = ridge
        self.extension = extension
        self.tree_rounds = tree_rounds
        self.tree_depth = tree_depth
        self.tree_learning_rate = tree_learning_rate
        self.tree_feature_fraction = tree_feature_fraction
        self.tree_pca_dims = tree_pca_dims
        self.tree_backend = tree_backend
        self.tree_bagging_fraction = tree_bagging_fraction
        self.tree_max_bin = tree_max_bin

    def _validate(self, n: int) -> int:
        if self.extension not in EXTENSIONS:
            raise ConfigError(f"cosdish: extension must be one of {', '.join(EXTENSIONS)}, "
                              f"got {self.extension!r}")
        if self.tree_feature_fraction is not None and not 0.0 < self.tree_feature_fraction <= 1.0:
            raise ConfigError(f"cosdish: tree_feature_fraction must be in (0, 1] or None (auto), "
                              f"got {self.tree_feature_fraction}")
        if self.bits < 1:
            raise ConfigError(f"cosdish: bits must be positive, got {self.bits}")
        columns = self.bits if self.n_columns is None else self.n_columns
        if not 2 <= columns < n:
            raise ConfigError(f"cosdish: |Omega| = {columns} sampled columns need at least "
                              f"{columns + 1} training points and 2 columns (have {n} points)")
        return columns

    def _learn_codes(self, x: np.ndarray, labels: np.ndarray, ctx: RunContext) -> np.ndarray:
        n = len(x)
        columns = self._validate(n)
        b = binarize(ctx.rng.standard_normal((n, self.bits))).astype(np.float64)
        self.objective_ = []
        step = 0
        # n x |Omega| x c products and |Omega|-sized BQPs: one BLAS thread is as fast and
        # avoids oversubscription stalls when other processes share the cores.
        with threadpool_limits(1, user_api="blas"):
            for it in ctx.progress(range(self.n_outer), total=self.n_outer, desc="cosdish"):
                omega = ctx.rng.choice(n, size=columns, replace=False)
                gamma = np.ones(n, dtype=bool)
                gamma[omega] = False
                target = similarity_targets(labels, omega)
                t_omega, t_gamma = target[omega], target[gamma]
                before = sampled_objective(b, omega, target, self.bits)
                for _ in range(self.n_alternations):
                    b[omega] = update_omega(b[omega], b[gamma], t_omega, t_gamma)
                    b[gamma] = update_gamma(b[omega], b[gamma], t_gamma)
                    value = sampled_objective(b, omega, target, self.bits)
                    ctx.log_metric("sampled_objective", value, step)
                    step += 1
                ctx.log_metric("sampled_objective_before", before, it)
                ctx.log_metric("sampled_objective_after", value, it)
                self.objective_.append((before, value))
        return b.astype(np.int8)

    def _extension(self, n: int, d: int) -> BoostedTrees | LinearProjection:
        if self.extension == "linear":
            return LinearProjection(ridge=self.ridge)
        return BoostedTrees(n_rounds=self.tree_rounds, max_depth=self.tree_depth,
                            learning_rate=self.tree_learning_rate,
                            feature_fraction=self.tree_feature_fraction,
                            pca_dims=self.tree_pca_dims, backend=self.tree_backend,
                            bagging_fraction=self.tree_bagging_fraction, max_bin=self.tree_max_bin,
                            feature_floor=COSDISH_FRACTION_FLOOR)
