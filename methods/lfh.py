"""LFH: latent factor hashing (Zhang, Zhang, Li & Guo, SIGIR 2014), stochastic version.

Model (paper section 3). With real latent factors ``U`` (n x c) and ``Theta_ij = u_i^T u_j / 2``
(eq. 1), the pairwise labels ``s_ij`` (1 = the points share a label, 0 = not) follow
``p(s_ij | U) = a_ij^s_ij (1 - a_ij)^(1 - s_ij)``, ``a_ij = sigmoid(Theta_ij)`` (eqs. 2-3),
with a Gaussian prior ``N(0, beta I)`` on each column of ``U`` (eq. 4). LFH maximises the log
posterior (eq. 6)::

    L(U) = sum_{s_ij in S} [s_ij Theta_ij - log(1 + exp(Theta_ij))] - ||U||_F^2 / (2 beta)

Optimisation (section 3.2): each row ``u_i`` is updated by maximising a quadratic minoriser
of ``L`` built from the gradient and the lower bound ``H_i`` of the Hessian (eqs. 7-10,
``a (1 - a) <= 1/4``): ``u_i <- u_i - H_i^{-1} dL/du_i``. The stochastic version (section
3.3, the one the authors' demo runs, ``learnImpl='stochastic'``) samples ``|Omega|`` = c
columns of ``S`` per iteration and uses the symmetric ("aligned") block: rows ``i`` and
columns ``j in Omega``, each pair counted in both orders, so for every row::

    g_i = sum_{j in Omega} (s_ij - a_ij) u_j - u_i / beta
    H   = -(1/8) U_Omega^T U_Omega - I / beta            (the same for all rows)
    U  <- U - G H^{-1}                                  (all rows at once)

The update of a row outside Omega is exact minorise-maximise on its sampled objective
``L_i = sum_{j in Omega} 2 [s_ij Theta_ij - log(1 + e^Theta_ij)] - ||u_i||^2 / (2 beta)``
with ``U_Omega`` held fixed, so ``L_i`` never decreases; this is the surrogate that
``sampled_log_posterior`` computes and the tests check. (Rows inside Omega are updated with
the same formula, dropping their extra terms, as in the stochastic algorithm.) Per iteration
the negative of that surrogate, per sampled entry, after the update is logged as
``sampled_neg_log_posterior`` and kept with its value before the update in
``sampled_objective_``. The full objective is not monotone under column sampling: each step
fits a fresh sample of only c columns.

Settings of the authors' demo: features standardised per dimension (``normZeroMean``,
``normEqualVariance``), ``U`` initialised by PCA (projections on the top-c principal
directions), ``|Omega| = c`` (we sample 4 c, see revision 2 below), 50 iterations,
``beta = 30`` divided by the code length inside (``beta / c`` is the prior variance used),
``lambda = 1`` multiplied by ``N / D`` inside (the ridge of the linear out-of-sample
regression, paper section 3.5, ``W = (X^T X + lambda I)^{-1} X^T U``).
Training codes are ``sign(U)``. (We read the ``D`` of ``N / D`` as the feature dimension.)

Revision 2 (issue 15), two deviations from the authors' demo, both measured:

* ``|Omega| = 4 c`` sampled columns by default instead of c (``n_columns=bits`` restores the
  demo). Cause of the collapse seen with many classes: the step above gives
  ``U_new = (U U_Omega^T / 8 + S_Omega - A_Omega) U_Omega (-H)^{-1}``, so every row of
  ``U_new`` lies in the row space of the c x c matrix ``U_Omega``: the rank of ``U`` never
  grows, and directions in which the square ``U_Omega`` is ill-conditioned (a random square
  matrix nearly always has a tiny singular value) shrink by ``lambda / (lambda + 1/beta)``
  with ``lambda`` near 0 at every iteration. Within a few iterations ``U`` falls to the
  rank that the last few samples needed (about the number of classes present in c columns).
  On a letter-like set (26 classes, 16-d, 100 training points per class) 12-bit revision-1
  codes had 3-7 distinct values with up to 10 of 12 bits constant (MAP 0.11-0.24 over 5
  seeds, ITQ 0.50-0.54); the same happens at 48 bits with |Omega| = 48 > 26 classes (15-20
  distinct codes, up to 12 constant bits), so it is the square block, not only the class
  count. With ``4 c`` columns ``U_Omega^T U_Omega`` is well conditioned (smallest singular
  value of a 4c x c Gaussian matrix about half its largest): 12 bits 19-26 distinct codes,
  MAP 0.65-0.90; 24-48 bits 26 or more, MAP 0.96-0.99; digits 12 bits 0.956-0.965 over 5
  seeds (was 0.64-0.90). ``2 c`` still collapsed some 12-bit runs, ``8 c`` was no better.
  The cost per iteration is O(n |Omega| c), still linear in n.
* More bits than the rank of the features (e.g. 24-48 bits on 16-d features): PCA gives
  only ``rank(X)`` non-trivial columns and, since the update never raises the rank of U, a
  zero column would stay zero; the missing columns start as seeded Gaussian noise at the
  scale of the principal ones (U are free latent factors, so any start is admissible).
  Revision 1 refused such settings.

Out-of-sample extension: as in the ADSH paper's experiments, one boosted-tree classifier per
bit fitted to the training codes (:class:`hashbench.oos.BoostedTrees`, FastH's 200 rounds of
depth-4 trees); ``extension="linear"`` gives the authors' own linear regression to ``U``.
Trained on the full database (protocol ``train = "full"``) this is LFH-D: the database codes
are the learned ``sign(U)``.

Trees (issue 14): :class:`hashbench.oos.BoostedTrees`, set by the ``tree_*`` parameters. Since
revision 3 each tree sees :func:`hashbench.oos.auto_feature_fraction` of the inputs by default
(logged as the metric ``tree_feature_fraction``; ``tree_feature_fraction=1.0`` is the reference).
Since revision 4 the trees use 63 histogram bins per feature (``tree_max_bin=63``; 255 is the
reference). Since revision 5 the auto fraction is 256 features per tree at every width (it was
a tenth above 2,560 dims; the same below). Row bagging for the "-D" fits on a whole database
is an option, off by default (``tree_bagging_fraction``: a share of the rows per round, or ``None`` for
:func:`hashbench.oos.auto_bagging_fraction`, ``min(1, 5,000 / n)``; the share used is logged as
the metric ``tree_bagging_fraction``). The other speed options are off; ``hashbench/oos.py``
(:class:`~hashbench.oos.BoostedTrees`) has the measurements.

Equation and section numbers are quoted from the SIGIR paper, which is not in
``../shared/papers``: check them against the PDF before citing them elsewhere. The update
rules themselves are derived above and tested (gradient against finite differences, the
minorise-maximise property).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_limits

from hashbench.api import MethodMeta, RunContext, binarize
from hashbench.errors import ConfigError
from hashbench.labels import share_label
from hashbench.oos import EXTENSIONS, BoostedTrees, LinearProjection, TwoStepHasher, gram_matrix
from hashbench.registry import register

_EXACT_PCA_MAX_DIM = 1024
COLUMNS_PER_BIT = 4  # default |Omega| = 4 c (revision 2; the authors' code samples c columns)
_RANK_TOLERANCE = 1e-6  # principal columns below this fraction of the largest count as empty


def similarity_block(labels: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``S[:, columns]``: 1.0 where two points share at least one label, else 0.0 (n x |Omega|)."""
    return share_label(labels, np.asarray(labels)[columns]).astype(np.float64)


def sampled_log_posterior(u_rows: np.ndarray, u_omega: np.ndarray, s_rows: np.ndarray,
                          beta: float) -> np.ndarray:
    """Per-row sampled objective ``L_i`` (module docstring) for the rows ``u_rows``."""
    theta = 0.5 * u_rows @ u_omega.T
    likelihood = 2.0 * (s_rows * theta - np.logaddexp(0.0, theta)).sum(axis=1)
    return likelihood - np.square(u_rows).sum(axis=1) / (2.0 * beta)


def lfh_gradient(u: np.ndarray, u_omega: np.ndarray, s_block: np.ndarray, beta: float) -> np.ndarray:
    """Rows ``g_i = sum_{j in Omega} (s_ij - a_ij) u_j - u_i / beta``: the gradient of ``L_i``."""
    a = expit(0.5 * u @ u_omega.T)
    return (s_block - a) @ u_omega - u / beta


def lfh_step(u: np.ndarray, omega: np.ndarray, s_block: np.ndarray, beta: float) -> np.ndarray:
    """One stochastic LFH update of every row of ``U`` from the sampled columns ``omega``:
    ``U <- U - G H^{-1}`` with ``H = -(1/8) U_Omega^T U_Omega - I / beta``."""
    u_omega = u[omega]
    grad = lfh_gradient(u, u_omega, s_block, beta)
    neg_h = u_omega.T @ u_omega / 8.0 + np.eye(u.shape[1]) / beta  # -H, positive definite
    return u + np.linalg.solve(neg_h, grad.T).T


def principal_directions(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-``k`` principal directions (d x k) of ``x``.

    Exact (eigenvectors of the covariance) up to 1,024 dimensions; above that a randomised
    range finder with 4 power iterations (Halko, Martinsson & Tropp 2011), which needs only
    products with ``x`` and never a d x d matrix or a centred copy of ``x``.
    """
    n, d = x.shape
    mean = np.asarray(x, dtype=np.float64).mean(axis=0) if n * d <= 2**24 else _chunked_mean(x)
    if d <= _EXACT_PCA_MAX_DIM:
        cov = gram_matrix(x) - n * np.outer(mean, mean)
        with threadpool_limits(1, user_api="blas"):  # <= 1024 x 1024: threads do not pay
            eigvals, eigvecs = np.linalg.eigh(cov)
        return mean, eigvecs[:, np.argsort(eigvals)[::-1][:k]]
    x32, mean32 = np.asarray(x, dtype=np.float32), mean.astype(np.float32)

    def times(v: np.ndarray) -> np.ndarray:  # (x - mean) @ v
        v = v.astype(np.float32)
        return x32 @ v - mean32 @ v

    def times_t(v: np.ndarray) -> np.ndarray:  # (x - mean)^T @ v
        v = v.astype(np.float32)
        return x32.T @ v - np.outer(mean32, v.sum(axis=0))

    basis = np.linalg.qr(times(rng.standard_normal((d, k + 10))).astype(np.float64))[0]
    for _ in range(4):
        basis = np.linalg.qr(times_t(basis).astype(np.float64))[0]
        basis = np.linalg.qr(times(basis).astype(np.float64))[0]
    _, _, vt = np.linalg.svd(times_t(basis).astype(np.float64).T, full_matrices=False)
    return mean, vt[:k].T


def default_columns(bits: int, n: int) -> int:
    """``|Omega|`` when ``n_columns`` is not given: ``COLUMNS_PER_BIT`` x bits, at most n."""
    return min(COLUMNS_PER_BIT * bits, n)


def initial_factors(x: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """``U`` at the start: the projections of ``x`` on its top principal directions, one column
    per bit; columns beyond the rank of ``x`` (more bits than feature dimensions, or constant
    dimensions) are seeded Gaussian noise at the scale of the principal columns (module
    docstring: the update never raises the rank of ``U``, so a zero column stays useless)."""
    n, d = x.shape
    k = min(bits, d, n)
    mean, directions = principal_directions(x, k, rng)
    u = (x @ directions.astype(x.dtype)).astype(np.float64) - mean @ directions
    spread = np.sqrt(np.square(u).mean(axis=0))
    useful = spread > _RANK_TOLERANCE * max(float(spread.max(initial=0.0)), 1e-300)
    u = u[:, useful]
    if u.shape[1] == bits:
        return u
    scale = float(np.sqrt(np.square(u).mean())) if u.size else 1.0
    return np.hstack([u, scale * rng.standard_normal((n, bits - u.shape[1]))])


def _chunked_mean(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), 8192):
        total += np.asarray(x[start:start + 8192], dtype=np.float64).sum(axis=0)
    return total / len(x)


@register
class LFH(TwoStepHasher):
    meta = MethodMeta(
        name="lfh",
        title="LFH",
        citation="Zhang, Zhang, Li & Guo, Supervised hashing with latent factor models, SIGIR 2014",
        family="shallow",
        supervised=True,
        asymmetric=True,
        revision=5,  # 3: trees sample features (tree_feature_fraction=None, issue 14);
        # 4: 63 histogram bins (tree_max_bin=63, issue 14); 5: 256 features per tree above
        # 2,560 dims (was a tenth; issue 14)
    )
    param_rules = {"n_iter": ">=1", "beta": ">0", "ridge": ">=0", "n_columns": ">=1",
                   "tree_rounds": ">=1", "tree_depth": ">=1", "tree_learning_rate": ">0",
                   "tree_feature_fraction": "(0,1]", "tree_pca_dims": ">=1", "extension": ("trees", "linear"),
                   "tree_backend": ("lightgbm", "xgboost-multi"),
                   "tree_bagging_fraction": "(0,1]", "tree_max_bin": ">=2"}
    conformance_params = {"tree_rounds": 10}

    def __init__(self, bits: int = 32, n_iter: int = 50, beta: float = 30.0, ridge: float = 1.0,
                 n_columns: int | None = None, extension: str = "trees", tree_rounds: int = 200,
                 tree_depth: int = 4, tree_learning_rate: float = 0.1,
                 tree_feature_fraction: float | None = None,
                 tree_pca_dims: int | None = None, tree_backend: str = "lightgbm",
                 tree_bagging_fraction: float | None = 1.0, tree_max_bin: int = 63) -> None:
        self.bits = bits
        self.n_iter = n_iter
        self.beta = beta
        self.ridge = ridge
        self.n_columns = n_columns
        self.extension = extension
        self.tree_rounds = tree_rounds
        self.tree_depth = tree_depth
        self.tree_learning_rate = tree_learning_rate
        self.tree_feature_fraction = tree_feature_fraction
        self.tree_pca_dims = tree_pca_dims
        self.tree_backend = tree_backend
        self.tree_bagging_fraction = tree_bagging_fraction
        self.tree_max_bin = tree_max_bin

    def _validate(self, n: int, d: int) -> int:
        if self.extension not in EXTENSIONS:
            raise ConfigError(f"lfh: extension must be one of {', '.join(EXTENSIONS)}, "
                              f"got {self.extension!r}")
        if self.tree_feature_fraction is not None and not 0.0 < self.tree_feature_fraction <= 1.0:
            raise ConfigError(f"lfh: tree_feature_fraction must be in (0, 1] or None (auto), "
                              f"got {self.tree_feature_fraction}")
        if self.bits < 1 or self.bits > n:
            raise ConfigError(f"lfh: {self.bits} bits need at least {self.bits} training points "
                              f"(have {n})")
        columns = default_columns(self.bits, n) if self.n_columns is None else self.n_columns
        if not 1 <= columns <= n:
            raise ConfigError(f"lfh: n_columns must be between 1 and the {n} training points, "
                              f"got {columns}")
        if self.beta <= 0:
            raise ConfigError(f"lfh: beta must be positive, got {self.beta}")
        return columns

    def _learn_codes(self, x: np.ndarray, labels: np.ndarray, ctx: RunContext) -> np.ndarray:
        n, d = x.shape
        columns = self._validate(n, d)
        beta = self.beta / self.bits  # the authors' code divides beta by the code length
        u = initial_factors(x, self.bits, ctx.rng)
        self.sampled_objective_ = []  # (before, after) per iteration, per sampled entry
        # n x |Omega| x c products: one BLAS thread is as fast and avoids oversubscription
        # stalls when other processes share the cores (the PCA above keeps its threads).
        with threadpool_limits(1, user_api="blas"):
            for it in ctx.progress(range(self.n_iter), total=self.n_iter, desc="lfh"):
                omega = ctx.rng.choice(n, size=columns, replace=False)
                s_block = similarity_block(labels, omega)
                new_u = lfh_step(u, omega, s_block, beta)
                outside = np.ones(n, dtype=bool)
                outside[omega] = False
                entries = max(int(outside.sum()) * columns, 1)
                before, after = (
                    -sampled_log_posterior(v[outside], u[omega], s_block[outside], beta).sum() / entries
                    for v in (u, new_u)
                )
                ctx.log_metric("sampled_neg_log_posterior", float(after), it)
                self.sampled_objective_.append((float(before), float(after)))
                u = new_u
        self.latent_ = u
        return binarize(u)

    def _regression_targets(self, codes: np.ndarray) -> np.ndarray:
        return self.latent_  # the LFH paper regresses on U (section 3.5)

    def _extension(self, n: int, d: int) -> BoostedTrees | LinearProjection:
        if self.extension == "linear":
            return LinearProjection(ridge=self.ridge * n / d)  # lambda * N / D, as in the code
        return BoostedTrees(n_rounds=self.tree_rounds, max_depth=self.tree_depth,
                            learning_rate=self.tree_learning_rate,
                            feature_fraction=self.tree_feature_fraction,
                            pca_dims=self.tree_pca_dims, backend=self.tree_backend,
                            bagging_fraction=self.tree_bagging_fraction, max_bin=self.tree_max_bin)
