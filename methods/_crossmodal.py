"""Shallow cross-modal (image <-> text) hashing baselines: CCA(-ITQ), CMFH, SCM-Seq, SePH, DLFH.

Private module (leading underscore: the registry does not load it). Each class is a numpy-only
algorithm core behind one small interface; the registered methods (``methods/cca.py``,
``cmfh.py``, ``scm.py``, ``seph.py``, ``dlfh.py``) wrap them through :class:`CrossModalMethod`::

    model = SCM(bits=32).fit(image, text, labels, rng)    # (n, d_i), (n, d_t), (n, L) multi-hot
    codes = model.encode(x, "image")                      # int8 (m, bits) in {-1, +1}

Conventions shared by every class:

- Hyper-parameters are ``__init__`` keyword arguments with the authors' defaults and no logic;
  learned state ends in ``_``; ``encode`` before ``fit`` raises ``NotFittedError``.
- Every random draw comes from the ``rng`` passed to ``fit`` (same seed, same codes).
- A code bit is +1 where the real-valued projection is > 0, else -1 (a zero becomes -1).
- No n x n matrix over the training set is ever built: label similarities are used through
  factorisations (``S = 2 L~ L~^T - 1``), sampled column blocks (DLFH) or row blocks over a
  bounded sample (SePH).

Sources: the equations and constants below were checked against the authors' public code where
it could be read (CMFH ``solveCMFH.m``; SCM ``trainSCM_seq.m``; SePH ``minKLD.m`` and a driver
calling it; DLFH ``DLFH_demo.m``, ``DLFH.m``, ``DLFH_algo.m``, the Python demo); the papers
themselves were not available, so no paper equation numbers are quoted. Each docstring says
which is which.

Notation: ``X`` (n, d_x) image features, ``Y`` (n, d_y) text features, ``L`` (n, K) labels,
``c`` = bits, ``L~`` the rows of ``L`` scaled to unit length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.special import expit

from hashbench.api import Hasher, RunContext, TrialData
from hashbench.errors import ConfigError, NotFittedError

MODALITIES = ("image", "text")
CORE_MODALITY = {"features": "image", "text": "text"}
"""The contract's modality -> the cores' side: ``features`` (image feature vectors) is "image"."""


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def binarize(values: np.ndarray) -> np.ndarray:
    """Real values -> int8 codes: value > 0 -> +1, else -1 (zero -> -1)."""
    return np.where(np.asarray(values) > 0, 1, -1).astype(np.int8)


def unit_rows(labels: np.ndarray) -> np.ndarray:
    """Label rows scaled to unit Euclidean length (all-zero rows stay zero), float64."""
    lab = (np.asarray(labels) > 0).astype(np.float64)
    norms = np.sqrt(lab.sum(axis=1, keepdims=True))
    norms[norms == 0] = 1.0
    return lab / norms


def share_label_block(labels: np.ndarray, rows: np.ndarray | slice, cols: np.ndarray | slice) -> np.ndarray:
    """``S[rows, cols]`` with S_ij = 1 where items i and j share at least one label, else 0."""
    lab = (np.asarray(labels) > 0).astype(np.float32)
    return (lab[rows] @ lab[cols].T > 0).astype(np.float64)


def cca_directions(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k pairs of the generalised eigenproblem of (regularised) CCA.

    Maximise ``wx^T Cxy wy`` subject to ``wx^T Cxx wx = wy^T Cyy wy = 1`` (and orthogonality to
    the previous pairs in those metrics). With Cholesky factors ``Cxx = Gx Gx^T``,
    ``Cyy = Gy Gy^T`` and the SVD ``Gx^-1 Cxy Gy^-T = U diag(rho) V^T``, the solution is
    ``Wx = Gx^-T U[:, :k]``, ``Wy = Gy^-T V[:, :k]``; ``rho`` (descending) are the canonical
    correlations when the C's are covariances. ``rho^2`` are the eigenvalues of
    ``Cxx^-1 Cxy Cyy^-1 Cyx``. Returns (Wx (d_x, k), Wy (d_y, k), rho (k,)).
    """
    gx = np.linalg.cholesky(cxx)
    gy = np.linalg.cholesky(cyy)
    m = solve_triangular(gy, solve_triangular(gx, cxy, lower=True).T, lower=True).T
    u, rho, vt = np.linalg.svd(m, full_matrices=False)
    wx = solve_triangular(gx.T, u[:, :k], lower=False)
    wy = solve_triangular(gy.T, vt[:k].T, lower=False)
    return wx, wy, rho[:k]


def mean_squared_distance(x: np.ndarray) -> float:
    """Mean of ``||x_i - x_j||^2`` over all ordered pairs (i = j included): ``2 (E||x||^2 - ||Ex||^2)``.

    The RBF bandwidth of SePH's kernel features (the authors' wrapper takes the mean of the full
    n x n squared-distance matrix; this is the same number without building it).
    """
    x = np.asarray(x, dtype=np.float64)
    return float(2.0 * (np.mean(np.sum(x * x, axis=1)) - np.sum(x.mean(axis=0) ** 2)))


def rbf_features(x: np.ndarray, anchors: np.ndarray, sigma2: float) -> np.ndarray:
    """``phi(x)_a = exp(-||x - a||^2 / (2 sigma2))`` for every anchor a: (n, m)."""
    d2 = (np.sum(x * x, axis=1)[:, None] + np.sum(anchors * anchors, axis=1)[None, :]
          - 2.0 * x @ anchors.T)
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * sigma2))


def kmeans_centres(x: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 20) -> np.ndarray:
    """Lloyd's k-means from k distinct random points; an emptied cluster keeps its old centre."""
    centres = x[np.sort(rng.choice(x.shape[0], size=k, replace=False))].copy()
    sq = np.sum(x * x, axis=1)
    for _ in range(n_iter):
        d2 = sq[:, None] + np.sum(centres * centres, axis=1)[None, :] - 2.0 * x @ centres.T
        assign = np.argmin(d2, axis=1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def _as_matrix(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array (n, d), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{what} contains NaN or infinite values")
    return arr


class _CrossModalHasher:
    """Input checks, fitted-state checks and the ``encode`` dispatch shared by all five cores."""

    name = "crossmodal"
    _fitted_attribute = ""

    def _check_inputs(self, image: Any, text: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = _as_matrix(image, "image")
        y = _as_matrix(text, "text")
        lab = np.asarray(labels)
        if lab.ndim == 1:
            raise ConfigError(f"{self.name}: labels must be multi-hot (n, L), got shape {lab.shape}")
        if not (x.shape[0] == y.shape[0] == lab.shape[0]):
            raise ConfigError(f"{self.name}: image, text and labels have {x.shape[0]}, {y.shape[0]} "
                              f"and {lab.shape[0]} rows; they must be paired row by row")
        if not isinstance(self.bits, int | np.integer) or self.bits < 1:
            raise ConfigError(f"{self.name}: bits must be a positive integer, got {self.bits!r}")
        return x, y, (lab > 0).astype(np.float64)

    def _check_fitted(self) -> None:
        if getattr(self, self._fitted_attribute, None) is None:
            raise NotFittedError(f"{self.name}: call fit() before encode()")

    def encode(self, x: np.ndarray, modality: str) -> np.ndarray:
        """Codes (n, bits) int8 in {-1, +1} for the rows of ``x`` from ``modality`` ("image"/"text")."""
        self._check_fitted()
        if modality not in MODALITIES:
            raise ConfigError(f"{self.name}: modality must be 'image' or 'text', got {modality!r}")
        arr = _as_matrix(x, modality)
        return binarize(self._project(arr, modality))

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class CrossModalMethod(Hasher):
    """The method-contract side of the five cores: a registered subclass sets ``meta`` (with
    ``modalities=("features", "text")``), takes the core's hyper-parameters in ``__init__`` and
    builds the configured core in ``_core()``. ``fit`` trains it on the training part's
    ``features`` (image side) and ``text`` with its labels, drawing from ``ctx.rng``;
    ``encode(inputs, modality)`` hashes ``features`` with the core's image function and ``text``
    with its text function. Database codes come from the default ``encode_database``: the
    database's inputs in the database modality, hashed (symmetric use)."""

    model_: _CrossModalHasher | None = None

    def _core(self) -> _CrossModalHasher:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, data: TrialData, ctx: RunContext) -> CrossModalMethod:
        train = data.train
        self.model_ = self._core().fit(train["features"], train["text"], train.labels, ctx.rng)
        return self

    def encode(self, inputs: Any, modality: str) -> np.ndarray:  # type: ignore[override]
        self._check_fitted("model_")
        if modality not in CORE_MODALITY:
            raise ConfigError(f"{self.meta.name}: modality must be one of {', '.join(CORE_MODALITY)}, "
                              f"got {modality!r}")
        assert self.model_ is not None
        return self.model_.encode(inputs, CORE_MODALITY[modality])


# ---------------------------------------------------------------------------------------------
# CCA / CCA-ITQ
# ---------------------------------------------------------------------------------------------

def itq_rotation(v: np.ndarray, rotation: np.ndarray, n_iter: int) -> tuple[np.ndarray, list[float]]:
    """ITQ (Gong & Lazebnik, CVPR 2011, eq. 2 and sec. 2.3): minimise ``Q(B, R) = ||B - V R||_F^2``.

    Alternation from ``rotation``: fix R, ``B = sgn(V R)``; fix B, orthogonal Procrustes: with the
    SVD ``V^T B = U S W^T``, ``R = U W^T`` maximises ``tr(B^T V R)``. Both steps are exact
    minimisers, so the loss (recorded after each R step) never increases.
    """
    losses = []
    for _ in range(n_iter):
        codes = np.where(v @ rotation > 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ codes)
        rotation = u @ wt
        losses.append(float(np.sum((codes - v @ rotation) ** 2)))
    return rotation, losses


class CCAHash(_CrossModalHasher):
    """CCA hashing, optionally with an ITQ rotation (CCA-ITQ of Gong, Lazebnik, Gordo & Perronnin,
    TPAMI 2013, used cross-modally: one rotation shared by both views).

    1. Centre each view on its training mean; covariances ``Cxx = X^T X / n + r_x I``,
       ``Cyy = Y^T Y / n + r_y I``, ``Cxy = X^T Y / n`` with the ridge ``r = reg * tr(C) / d``
       (relative, so it does not depend on the feature scale; our choice: the ridge size is not
       given in the papers).
    2. The top-c CCA pairs (:func:`cca_directions`): ``max wx^T Cxy wy`` s.t. unit variance.
    3. Each projected view ``V_x = X Wx diag(rho^p)``, ``V_y = Y Wy diag(rho^p)``; ``p = scale_power``
       (Gong et al. weight the CCA directions by their eigenvalues; p = 1 here; it only matters
       for the rotation).
    4. ``rotation="none"``: codes ``sgn(V)``. ``rotation="itq"``: one orthogonal R for both
       views, learned by ITQ (:func:`itq_rotation`, 50 iterations as in ITQ) on the stacked
       ``[V_x; V_y]`` (2n, c), from a random orthogonal start drawn from ``rng``; codes
       ``sgn(V R)``. ``quantization_losses_`` records ``||B - V R||^2`` per iteration.

    Unsupervised: ``labels`` are ignored. ``bits`` must not exceed ``min(d_x, d_y)``.
    """

    name = "cca"
    _fitted_attribute = "wx_"

    def __init__(self, bits: int = 32, rotation: str = "itq", reg: float = 1e-4, scale_power: float = 1.0,
                 n_iter: int = 50) -> None:
        self.bits = bits
        self.rotation = rotation
        self.reg = reg
        self.scale_power = scale_power
        self.n_iter = n_iter

    def fit(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray,
            rng: np.random.Generator) -> CCAHash:
        x, y, _ = self._check_inputs(image, text, labels)
        if self.rotation not in ("none", "itq"):
            raise ConfigError(f"cca: rotation must be 'none' or 'itq', got {self.rotation!r}")
        if self.bits > min(x.shape[1], y.shape[1]):
            raise ConfigError(f"cca: {self.bits} bits need at least {self.bits} dimensions in each view "
                              f"(image {x.shape[1]}, text {y.shape[1]})")
        n = x.shape[0]
        self.mean_x_, self.mean_y_ = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - self.mean_x_, y - self.mean_y_
        cxx, cyy, cxy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
        cxx += self.reg * np.trace(cxx) / cxx.shape[0] * np.eye(cxx.shape[0])
        cyy += self.reg * np.trace(cyy) / cyy.shape[0] * np.eye(cyy.shape[0])
        wx, wy, rho = cca_directions(cxx, cyy, cxy, self.bits)
        self.correlations_ = rho
        scale = np.maximum(rho, 0.0) ** self.scale_power
        rotation = np.eye(self.bits)
        self.quantization_losses_: list[float] = []
        if self.rotation == "itq":
            stacked = np.vstack([xc @ wx * scale, yc @ wy * scale])
            start, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
            rotation, self.quantization_losses_ = itq_rotation(stacked, start, self.n_iter)
        self.rotation_ = rotation
        self.wy_ = wy * scale[None, :] @ rotation
        self.wx_ = wx * scale[None, :] @ rotation
        return self

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        if modality == "image":
            return (x - self.mean_x_) @ self.wx_
        return (x - self.mean_y_) @ self.wy_


# ---------------------------------------------------------------------------------------------
# CMFH
# ---------------------------------------------------------------------------------------------

class CMFH(_CrossModalHasher):
    """CMFH: collective matrix factorisation hashing (Ding, Guo & Zhou, CVPR 2014), unsupervised.

    Rows are samples: ``X1`` (n, d1) image, ``X2`` (n, d2) text, both centred on the training
    mean; ``V`` (n, c) the unified latent factors, ``U_t`` (c, d_t) bases, ``P_t`` (d_t, c) hash
    projections. The objective (as stated in the header of the authors' ``solveCMFH.m``)::

        O = lam ||X1 - V U1||^2 + (1 - lam) ||X2 - V U2||^2
            + mu (||V - X1 P1||^2 + ||V - X2 P2||^2)
            + gamma (||U1||^2 + ||U2||^2 + ||P1||^2 + ||P2||^2 + ||V||^2)

    Alternating closed-form updates, in the authors' order (U, then V, then P), each the exact
    minimiser of O over its block, so O never increases (``objective_`` records it per iteration,
    with squared norms)::

        U1 = (V^T V + gamma/lam I)^-1 V^T X1              U2: the same with (1 - lam), X2
        V  = (lam X1 U1^T + (1-lam) X2 U2^T + mu (X1 P1 + X2 P2))
             (lam U1 U1^T + (1-lam) U2 U2^T + (2 mu + gamma) I)^-1
        P_t = (X_t^T X_t + gamma/mu I)^-1 X_t^T V

    Codes: ``h_t(x) = sgn((x - mean_t) P_t)`` for both views (the training items' unified codes
    would be ``sgn(V)``; the interface encodes each modality with its own hash function).

    Deviation from the authors' CVPR code: its U update uses ridge ``gamma`` instead of
    ``gamma/lam`` and its P update ``gamma`` instead of ``gamma/mu``, which are not the
    minimisers of the objective it prints (so it can increase); we use the exact minimisers,
    as the authors' later TKDE code does for P. Its stopping rule (decrease < 0.01 of a
    non-squared-norm objective) is replaced by a fixed ``n_iter`` (25, the TKDE code's count).
    Initialisation as in the code: V, P1, P2 uniform on [0, 1) (from ``rng``).
    Defaults ``lam = 0.5, mu = 100, gamma = 0.001``: the values of the OCMFH authors' code
    (Wang et al., SIGIR 2020), which runs CMFH for its first batch.
    """

    name = "cmfh"
    _fitted_attribute = "p1_"

    def __init__(self, bits: int = 32, lam: float = 0.5, mu: float = 100.0, gamma: float = 0.001,
                 n_iter: int = 25) -> None:
        self.bits = bits
        self.lam = lam
        self.mu = mu
        self.gamma = gamma
        self.n_iter = n_iter

    def objective(self, x1: np.ndarray, x2: np.ndarray, v: np.ndarray, u1: np.ndarray, u2: np.ndarray,
                  p1: np.ndarray, p2: np.ndarray) -> float:
        """The CMFH objective O (class docstring) with squared Frobenius norms."""
        def sq(a: np.ndarray) -> float:
            return float(np.sum(a * a))
        return (self.lam * sq(x1 - v @ u1) + (1 - self.lam) * sq(x2 - v @ u2)
                + self.mu * (sq(v - x1 @ p1) + sq(v - x2 @ p2))
                + self.gamma * (sq(u1) + sq(u2) + sq(p1) + sq(p2) + sq(v)))

    def fit(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> CMFH:
        x1, x2, _ = self._check_inputs(image, text, labels)
        if not 0.0 < self.lam < 1.0:
            raise ConfigError(f"cmfh: lam must be in (0, 1), got {self.lam}")
        if self.mu <= 0 or self.gamma <= 0:
            raise ConfigError("cmfh: mu and gamma must be positive")
        self.mean1_, self.mean2_ = x1.mean(axis=0), x2.mean(axis=0)
        x1, x2 = x1 - self.mean1_, x2 - self.mean2_
        c, lam, mu, gamma = self.bits, self.lam, self.mu, self.gamma
        eye = np.eye(c)
        v = rng.random((x1.shape[0], c))
        p1 = rng.random((x1.shape[1], c))
        p2 = rng.random((x2.shape[1], c))
        # P_t = (X^T X + gamma/mu I)^-1 X^T V: factor once, the Gram matrices do not change.
        g1 = cho_factor(x1.T @ x1 + gamma / mu * np.eye(x1.shape[1]))
        g2 = cho_factor(x2.T @ x2 + gamma / mu * np.eye(x2.shape[1]))
        self.objective_: list[float] = []
        for _ in range(self.n_iter):
            vtv = v.T @ v
            u1 = np.linalg.solve(vtv + gamma / lam * eye, v.T @ x1)
            u2 = np.linalg.solve(vtv + gamma / (1 - lam) * eye, v.T @ x2)
            rhs = lam * x1 @ u1.T + (1 - lam) * x2 @ u2.T + mu * (x1 @ p1 + x2 @ p2)
            lhs = lam * u1 @ u1.T + (1 - lam) * u2 @ u2.T + (2 * mu + gamma) * eye
            v = np.linalg.solve(lhs, rhs.T).T          # lhs is symmetric
            p1 = cho_solve(g1, x1.T @ v)
            p2 = cho_solve(g2, x2.T @ v)
            self.objective_.append(self.objective(x1, x2, v, u1, u2, p1, p2))
        self.u1_, self.u2_, self.p1_, self.p2_ = u1, u2, p1, p2
        self.train_codes_ = binarize(v)
        return self

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        if modality == "image":
            return (x - self.mean1_) @ self.p1_
        return (x - self.mean2_) @ self.p2_


# ---------------------------------------------------------------------------------------------
# SCM-Seq
# ---------------------------------------------------------------------------------------------

class SCM(_CrossModalHasher):
    """SCM-Seq: semantic correlation maximisation, sequential variant (Zhang & Li, AAAI 2014).

    Semantic similarity ``S = 2 L~ L~^T - 1 1^T`` (cosine of label vectors mapped to [-1, 1]).
    Hash functions ``h_x(x) = sgn(x wx)``, ``h_y(y) = sgn(y wy)`` on features
    centred by the training mean. SCM maximises the agreement of ``sgn(X Wx) sgn(Y Wy)^T`` with
    ``c S``; SCM-Seq learns one bit at a time: with the residual
    ``R_t = c S - sum_{k<t} b_x^k b_y^k^T``, bit t solves the generalised eigenproblem

        max wx^T X^T R_t Y wy   s.t.  wx^T (X^T X + lam I) wx = wy^T (Y^T Y + lam I) wy = 1

    (:func:`cca_directions` with k = 1), then ``b_x^t = sgn(X wx)``, ``b_y^t = sgn(Y wy)``.
    S is never built: ``X^T S Y = 2 (X^T L~)(Y^T L~)^T - (X^T 1)(Y^T 1)^T`` and each residual
    step subtracts the rank-one ``(X^T b_x)(Y^T b_y)^T``, so memory is O(d_x d_y) and time
    O(n d (d + K)) plus c small eigenproblems.

    As in the authors' ``trainSCM_seq.m``: ``lam = 1e-6`` (absolute ridge), labels binarised
    and row-normalised, and when a bit's eigenvalue exceeds the previous one (the residual
    stopped decreasing) the remaining bits take the plain CCA directions (computed with the same
    ridge). Where CCA has no direction left (``bits > min(d_x, d_y)``) the sequential solution is
    kept instead; the authors' code does not handle that case. ``eigenvalues_`` records each
    bit's eigenvalue and ``n_sequential_`` how many bits came from the sequential step.
    Deterministic: ``rng`` is not used.
    """

    name = "scm"
    _fitted_attribute = "wx_"

    def __init__(self, bits: int = 32, lam: float = 1e-6) -> None:
        self.bits = bits
        self.lam = lam

    def fit(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> SCM:
        x, y, lab = self._check_inputs(image, text, labels)
        self.mean_x_, self.mean_y_ = x.mean(axis=0), y.mean(axis=0)
        x, y = x - self.mean_x_, y - self.mean_y_
        dx, dy, c = x.shape[1], y.shape[1], self.bits
        lt = unit_rows(lab)
        cxx = x.T @ x + self.lam * np.eye(dx)
        cyy = y.T @ y + self.lam * np.eye(dy)
        n_cca = min(c, dx, dy)
        cca_x, cca_y, _ = cca_directions(cxx, cyy, x.T @ y, n_cca)
        cxy = c * (2.0 * (x.T @ lt) @ (y.T @ lt).T - np.outer(x.sum(axis=0), y.sum(axis=0)))
        wx, wy = np.zeros((dx, c)), np.zeros((dy, c))
        eigenvalues, last, n_seq = [], np.inf, c
        for t in range(c):
            ux, uy, ev = cca_directions(cxx, cyy, cxy, 1)
            if ev[0] > last and t < n_cca:
                n_seq = t
                wx[:, t:n_cca], wy[:, t:n_cca] = cca_x[:, t:], cca_y[:, t:]
                break
            last = ev[0]
            eigenvalues.append(float(ev[0]))
            wx[:, t], wy[:, t] = ux[:, 0], uy[:, 0]
            bx, by = np.where(x @ ux[:, 0] > 0, 1.0, -1.0), np.where(y @ uy[:, 0] > 0, 1.0, -1.0)
            cxy -= np.outer(x.T @ bx, y.T @ by)
        self.eigenvalues_ = np.array(eigenvalues)
        self.n_sequential_ = n_seq
        self.wx_, self.wy_ = wx, wy
        return self

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        if modality == "image":
            return (x - self.mean_x_) @ self.wx_
        return (x - self.mean_y_) @ self.wy_


# ---------------------------------------------------------------------------------------------
# SePH
# ---------------------------------------------------------------------------------------------

def seph_cost_and_gradient(h: np.ndarray, lt: np.ndarray, alpha: float,
                           block: int = 512) -> tuple[float, np.ndarray]:
    """SePH's objective (CVPR 2015) and its gradient, by row blocks (no n x n matrix).

    ``p_ij = a_ij / sum_{k != l} a_kl`` with ``a_ij = l~_i^T l~_j`` (cosine of label vectors),
    ``p_ii = 0``; ``q_ij = num_ij / Z`` with ``num_ij = 1 / (1 + ||h_i - h_j||^2 / 4)`` (a
    Student-t on the relaxed Hamming distance ``||h_i - h_j||^2 / 4``), ``num_ii = 0``,
    ``Z = sum num``. Cost ``KL(P || Q) + alpha ||(|H| - 1)||^2``; gradient (the authors'
    ``minKLD.m``, whose constants it matches)::

        dC/dh_i = sum_j (p_ij - q_ij) num_ij (h_i - h_j) + 2 alpha (|h_i| - 1) sgn(h_i)

    computed in one pass as ``sum_j p num (h_i - h_j) - (1/Z) sum_j num^2 (h_i - h_j)``.
    """
    n = h.shape[0]
    col = lt.sum(axis=0)
    a_total = float(col @ col - np.sum(lt * lt))           # sum_{i != j} a_ij
    sq = np.sum(h * h, axis=1)
    grad_p = np.zeros_like(h)
    grad_q = np.zeros_like(h)
    z = 0.0
    p_log_num = 0.0
    p_log_p = 0.0
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = slice(start, stop)
        num = 1.0 / (1.0 + 0.25 * np.maximum(sq[rows, None] + sq[None, :] - 2.0 * h[rows] @ h.T, 0.0))
        p = lt[rows] @ lt.T / a_total
        idx = np.arange(start, stop)
        num[idx - start, idx] = 0.0
        p[idx - start, idx] = 0.0
        z += float(num.sum())
        positive = p > 0
        p_log_num += float(np.sum(p[positive] * np.log(num[positive])))
        p_log_p += float(np.sum(p[positive] * np.log(p[positive])))
        w = p * num
        grad_p[rows] = w.sum(axis=1)[:, None] * h[rows] - w @ h
        w = num * num
        grad_q[rows] = w.sum(axis=1)[:, None] * h[rows] - w @ h
    quant = np.abs(h) - 1.0
    cost = p_log_p - p_log_num + np.log(z) + alpha * float(np.sum(quant * quant))
    grad = grad_p - grad_q / z + 2.0 * alpha * quant * np.sign(h)
    return cost, grad


def kernel_logistic_regression(k: np.ndarray, k0: np.ndarray, targets: np.ndarray, c: float,
                               n_iter: int = 100, tol: float = 1e-6) -> tuple[np.ndarray, list[float]]:
    """One L2-penalised kernel logistic regression per column of ``targets`` (+-1), jointly.

    Minimises, for every bit b, ``sum_i log(1 + exp(-t_ib k_i^T w_b)) + c w_b^T K0 w_b`` (the SePH
    code's ``LogisticLoss`` with ``penalizedKernelL2``, C = 0.01), where ``k_i`` are the kernel
    features of training item i against the anchors and ``K0`` the anchor Gram matrix. The
    authors use minFunc (L-BFGS) per bit; here a majorise-minimise Newton step with the fixed
    curvature bound ``K^T K / 4 + 2 c K0`` (the logistic loss has curvature <= 1/4), one
    Cholesky factor for all bits: the objective never increases. Returns (W (m, bits), costs).
    """
    m = k.shape[1]
    bound = 0.25 * k.T @ k + 2.0 * c * k0
    bound += 1e-8 * np.trace(bound) / m * np.eye(m)
    factor = cho_factor(bound)
    w = np.zeros((m, targets.shape[1]))
    costs = []
    for _ in range(n_iter):
        margin = targets * (k @ w)
        cost = float(np.sum(np.logaddexp(0.0, -margin)) + c * np.sum(w * (k0 @ w)))
        costs.append(cost)
        if len(costs) > 1 and costs[-2] - cost <= tol * abs(costs[-2]):
            break
        grad = k.T @ (-targets * expit(-margin)) + 2.0 * c * k0 @ w
        w = w - cho_solve(factor, grad)
    return w, costs


class SePH(_CrossModalHasher):
    """SePH: semantics-preserving hashing (Lin, Ding, Hu & Wang, CVPR 2015).

    Step 1, codes of the training items: minimise
    ``KL(P || Q) + alpha' ||(|H| - 1)||^2`` over the relaxed codes ``H`` (n_s, c), P from the
    labels (cosine affinities, normalised to a distribution), Q from the relaxed Hamming
    distances (:func:`seph_cost_and_gradient`). Optimiser as in the authors' ``minKLD.m`` (a
    t-SNE style descent): start ``1e-4 * N(0, 1)``, 100 iterations, step 500, momentum 0.5,
    per-entry gains (+0.2 when the gradient changes sign relative to the last increment, else
    x0.8, floor 0.01), ``H`` re-centred to zero column mean after each step, and the iterate with
    the smallest objective is kept (``objective_`` records it per iteration). Codes ``B = sgn(H)``.
    ``alpha' = alpha / (c n_s)`` with ``alpha = 0.01``, as the authors' driver passes it.

    Training subset: the KL term couples every pair, so at most ``n_samples`` (5000, the
    authors' driver) training items are drawn from ``rng`` and used; nothing n x n is stored
    (row blocks), the time is O(n_s^2 c) per iteration.

    Step 2, hash functions: per view, RBF kernel features against ``n_anchors``
    (500) anchors, ``exp(-||x - a||^2 / (2 s))`` with ``s`` the mean squared distance between the
    sampled training items (the authors' driver uses that mean as the kernel parameter; the
    factor 2 is our reading of its kernel helper), features centred on the training mean first;
    anchors ``"random"`` (SePH_rnd) or ``"kmeans"`` (SePH_km: k-means centres; 20 Lloyd iterations
    here, the authors' driver runs MATLAB's kmeans for up to 100). One kernel
    logistic regression per bit (:func:`kernel_logistic_regression`, C = 0.01, no bias, as
    the driver). Codes ``sgn(k(x) w)``.

    Not implemented: SePH's probabilistic fusion of both views' predictions into one code for
    items that have both (the interface encodes one modality at a time, which is the paper's
    setting for queries and its single-view database variant).
    """

    name = "seph"
    _fitted_attribute = "w_image_"

    def __init__(self, bits: int = 32, alpha: float = 0.01, n_samples: int = 5000, n_anchors: int = 500,
                 anchors: str = "random", klr_c: float = 0.01, n_iter: int = 100,
                 learning_rate: float = 500.0, momentum: float = 0.5) -> None:
        self.bits = bits
        self.alpha = alpha
        self.n_samples = n_samples
        self.n_anchors = n_anchors
        self.anchors = anchors
        self.klr_c = klr_c
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.momentum = momentum

    def _learn_codes(self, lt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c = lt.shape[0], self.bits
        alpha = self.alpha / (c * n)
        h = 1e-4 * rng.standard_normal((n, c))
        increments = np.zeros_like(h)
        gains = np.ones_like(h)
        best_cost, best_h = np.inf, h
        self.objective_: list[float] = []
        for _ in range(self.n_iter):
            cost, grad = seph_cost_and_gradient(h, lt, alpha)
            self.objective_.append(cost)
            if cost < best_cost:
                best_cost, best_h = cost, h.copy()
            same = np.sign(grad) == np.sign(increments)
            gains = np.where(same, gains * 0.8, gains + 0.2)
            gains = np.maximum(gains, 0.01)
            increments = self.momentum * increments - self.learning_rate * gains * grad
            h = h + increments
            h = h - h.mean(axis=0)
        cost, _ = seph_cost_and_gradient(h, lt, alpha)
        if cost < best_cost:
            best_h = h
        return best_h

    def _hash_function(self, x: np.ndarray, codes: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        mean = x.mean(axis=0)
        xc = x - mean
        m = min(self.n_anchors, xc.shape[0])
        if self.anchors == "kmeans":
            anchors = kmeans_centres(xc, m, rng)
        else:
            anchors = xc[np.sort(rng.choice(xc.shape[0], size=m, replace=False))]
        sigma2 = max(mean_squared_distance(xc), 1e-12)
        k = rbf_features(xc, anchors, sigma2)
        k0 = rbf_features(anchors, anchors, sigma2)
        w, _ = kernel_logistic_regression(k, k0, codes.astype(np.float64), self.klr_c)
        return mean, anchors, sigma2, w

    def fit(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> SePH:
        x, y, lab = self._check_inputs(image, text, labels)
        if self.anchors not in ("random", "kmeans"):
            raise ConfigError(f"seph: anchors must be 'random' or 'kmeans', got {self.anchors!r}")
        n = x.shape[0]
        if n > self.n_samples:
            idx = np.sort(rng.choice(n, size=self.n_samples, replace=False))
            x, y, lab = x[idx], y[idx], lab[idx]
        self.n_train_used_ = x.shape[0]
        h = self._learn_codes(unit_rows(lab), rng)
        self.train_codes_ = binarize(h)
        self.mean_image_, self.anchors_image_, self.sigma2_image_, w_image = self._hash_function(
            x, self.train_codes_, rng)
        self.mean_text_, self.anchors_text_, self.sigma2_text_, self.w_text_ = self._hash_function(
            y, self.train_codes_, rng)
        self.w_image_ = w_image
        return self

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        if modality == "image":
            return rbf_features(x - self.mean_image_, self.anchors_image_, self.sigma2_image_) @ self.w_image_
        return rbf_features(x - self.mean_text_, self.anchors_text_, self.sigma2_text_) @ self.w_text_


# ---------------------------------------------------------------------------------------------
# DLFH
# ---------------------------------------------------------------------------------------------

def dlfh_log_likelihood(u: np.ndarray, v: np.ndarray, labels: np.ndarray, lam: float,
                        block: int = 1024) -> float:
    """DLFH's log-likelihood ``sum_ij [s_ij theta_ij - log(1 + e^theta_ij)]``,
    ``theta_ij = (lam / c) u_i^T v_j``, over all image-text pairs, by row blocks."""
    c = u.shape[1]
    total = 0.0
    for start in range(0, u.shape[0], block):
        rows = slice(start, min(u.shape[0], start + block))
        theta = (lam / c) * u[rows] @ v.T
        s = share_label_block(labels, rows, slice(None))
        total += float(np.sum(s * theta - np.logaddexp(0.0, theta)))
    return total


def dlfh_update_codes(codes: np.ndarray, others: np.ndarray, s_block: np.ndarray, lam: float) -> np.ndarray:
    """One sweep of DLFH's discrete column updates of ``codes`` (n, c) against ``others`` (m, c).

    ``s_block`` (n, m) are the similarities between the rows of ``codes`` and ``others`` (all of
    the other modality for the full method, a sampled set of m for the stochastic one). With
    ``theta = (lam / c) codes others^T`` the log-likelihood as a function of column k is concave
    with curvature >= -(lam/c)^2 m / 4 per entry (``a (1 - a) <= 1/4``), so it is minorised by
    ``L(u) >= L(u0) + g^T (u - u0) - (m lam^2 / 8c^2) ||u - u0||^2``. Over u in {-1, +1}^n the
    minoriser is maximised by::

        u_k = sgn(g + (m lam^2 / 4c^2) u_k0),   g = (lam / c) (S - sigmoid(theta)) others[:, k]

    so the likelihood never decreases. A zero keeps the old bit. ``theta`` is updated by a
    rank-one correction after each column. Returns the new codes (a copy).
    """
    codes = codes.copy()
    n, c = codes.shape
    m = others.shape[0]
    scale = lam / c
    theta = scale * codes @ others.T
    for k in range(c):
        old = codes[:, k].copy()
        g = scale * (s_block - expit(theta)) @ others[:, k]
        h = g + (m * lam * lam / (4.0 * c * c)) * old
        new = np.where(h > 0, 1.0, np.where(h < 0, -1.0, old))
        changed = new != old
        if np.any(changed):
            theta[changed] += scale * np.outer(new[changed] - old[changed], others[:, k])
            codes[:, k] = new
    return codes


_DLFH_FULL_MAX = 4096


class DLFH(_CrossModalHasher):
    """DLFH: discrete latent factor hashing (Jiang & Li, TIP 2019; code jiangqy/DLFH-TIP2019).

    Model: image codes ``U`` and text codes ``V`` in {-1, +1}^{n x c},
    ``theta_ij = (lam / c) u_i^T v_j``, ``p(s_ij = 1) = sigmoid(theta_ij)`` where ``s_ij = 1`` iff
    image i and text j share a label; maximise the log-likelihood
    ``sum_ij [s_ij theta_ij - log(1 + e^theta_ij)]`` (:func:`dlfh_log_likelihood`) directly over
    the binary codes by alternating discrete column updates of U and V
    (:func:`dlfh_update_codes`, each a minorise-maximise step).

    ``num_samples=None``: the full method, every column of S (built by row blocks; O(n^2 c^2)
    time per sweep, meant for small n; ``log_likelihood_`` records the objective after every
    iteration and never decreases). ``num_samples=m`` (default ``m = bits``, as the authors'
    demo sets ``param.num_samples = param.bit``): the stochastic variant, each sweep of U uses
    the m-column block ``S[:, Omega]`` for a fresh random Omega (from ``rng``) and ``V[Omega]``,
    and the sweep of V the block ``S[Omega', :]^T`` with ``U[Omega']``; only n x m blocks of S
    exist. Defaults from the authors' MATLAB demo (``DLFH_demo.m``, used for all the paper's
    experiments): ``lam = 8``, 30 iterations, ``gamma = 1e-6``. Initial codes: random signs
    from ``rng``, as the authors' ``DLFH.m``. Two differences from ``DLFH.m``: it samples one
    column set per iteration for both sweeps (here a fresh one for each), and a column update
    with ``h = 0`` gives +1 there (here the old bit is kept).

    Out-of-sample extension as in the authors' code (``DLFH_algo.m`` / ``linear_hash``):
    ridge regression of the learned codes on the raw features, ``W = (X^T X + gamma I)^-1 X^T U``
    (no centring, no bias), codes ``sgn(x W)``. ``extension="kernel"`` (the paper's KDLFH) first
    maps each view to RBF features against ``n_anchors`` random training anchors (bandwidth as
    in SePH: the mean squared distance); the authors' kernel demo file is empty, so that
    variant's details are ours.
    """

    name = "dlfh"
    _fitted_attribute = "w_image_"

    def __init__(self, bits: int = 32, lam: float = 8.0, n_iter: int = 30,
                 num_samples: int | None | str = "bits", gamma: float = 1e-6, extension: str = "linear",
                 n_anchors: int = 500) -> None:
        self.bits = bits
        self.lam = lam
        self.n_iter = n_iter
        self.num_samples = num_samples
        self.gamma = gamma
        self.extension = extension
        self.n_anchors = n_anchors

    def _features(self, x: np.ndarray, modality: str) -> np.ndarray:
        if self.extension == "linear":
            return x
        anchors, sigma2 = self.kernel_[modality]
        return rbf_features(x, anchors, sigma2)

    def fit(self, image: np.ndarray, text: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> DLFH:
        x, y, lab = self._check_inputs(image, text, labels)
        if self.extension not in ("linear", "kernel"):
            raise ConfigError(f"dlfh: extension must be 'linear' or 'kernel', got {self.extension!r}")
        n, c = x.shape[0], self.bits
        m = c if self.num_samples == "bits" else self.num_samples
        if m is not None and (not isinstance(m, int | np.integer) or m < 1):
            raise ConfigError(f"dlfh: num_samples must be None, 'bits' or a positive int, got {m!r}")
        u = np.where(rng.random((n, c)) < 0.5, -1.0, 1.0)
        v = np.where(rng.random((n, c)) < 0.5, -1.0, 1.0)
        full = m is None or m >= n
        if full and n > _DLFH_FULL_MAX:
            raise ConfigError(f"dlfh: the full method (num_samples=None) uses the n x n similarity; n = {n} "
                              f"> {_DLFH_FULL_MAX}, use num_samples")
        s = share_label_block(lab, slice(None), slice(None)) if full else None
        self.log_likelihood_: list[float] = []
        for _ in range(self.n_iter):
            if s is not None:
                u = dlfh_update_codes(u, v, s, self.lam)
                v = dlfh_update_codes(v, u, s.T, self.lam)
                self.log_likelihood_.append(dlfh_log_likelihood(u, v, lab, self.lam))
            else:
                omega = rng.choice(n, size=m, replace=False)
                u = dlfh_update_codes(u, v[omega], share_label_block(lab, slice(None), omega), self.lam)
                omega = rng.choice(n, size=m, replace=False)
                v = dlfh_update_codes(v, u[omega], share_label_block(lab, slice(None), omega), self.lam)
        self.image_codes_, self.text_codes_ = binarize(u), binarize(v)
        self.kernel_: dict[str, tuple[np.ndarray, float]] = {}
        if self.extension == "kernel":
            for name, feats in (("image", x), ("text", y)):
                a = feats[np.sort(rng.choice(n, size=min(self.n_anchors, n), replace=False))]
                self.kernel_[name] = (a, max(mean_squared_distance(feats), 1e-12))
        fx, fy = self._features(x, "image"), self._features(y, "text")
        self.w_image_ = np.linalg.solve(fx.T @ fx + self.gamma * np.eye(fx.shape[1]), fx.T @ u)
        self.w_text_ = np.linalg.solve(fy.T @ fy + self.gamma * np.eye(fy.shape[1]), fy.T @ v)
        return self

    def _project(self, x: np.ndarray, modality: str) -> np.ndarray:
        w = self.w_image_ if modality == "image" else self.w_text_
        return self._features(x, modality) @ w
