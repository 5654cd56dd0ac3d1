"""ITQ: iterative quantisation (Gong & Lazebnik, CVPR 2011; Gong et al., TPAMI 2013).

1. Centre the training features and project them on the top-c principal directions:
   V = (X - mu) W_pca, shape (n, c).
2. Start from a random orthogonal rotation R (QR of a Gaussian matrix).
3. Run ``n_iter + 1`` (51) alternations, as the authors' ITQ.m does with ``n_iter = 50``
   (its loop is ``for iter = 0:n_iter``), minimising the quantisation loss
   Q(B, R) = ||B - V R||_F^2 (paper eq. 2):
   - fix R: B = sgn(V R);
   - fix B: orthogonal Procrustes. ||B - VR||^2 = const - 2 tr(R B^T V); with the SVD
     B^T V = U S W^T the maximiser of tr(R U S W^T) is R = W U^T (paper section 2.3).
   Both steps are exact minimisers, so Q never increases. (Ports that use U W^T instead
   apply the transpose of this rotation and lose that guarantee; the test suite checks
   monotonicity.)
4. Codes: h(x) = sgn((x - mu) W_pca R).

``n_iter`` keeps the meaning of the authors' argument (``ITQ(V, 50)``) rather than counting
updates, so that with the same start rotation the codes equal theirs bit for bit
(``tests/test_itq_reference.py``). Two differences from ITQ.m remain: it takes the start
rotation from the left singular vectors of the Gaussian matrix, here its QR factor Q
(another random orthogonal start from the same draw, so codes are compared from the same
start); and it maps a projection of exactly 0 to +1, here -1 (the project-wide convention;
exact zeros do not occur on real-valued features).

The quantisation loss of every iteration is logged as ``quantization_loss``.
"""

from __future__ import annotations

import numpy as np

from hashbench.api import Hasher, MethodMeta, RunContext, TrialData, binarize
from hashbench.errors import ConfigError
from hashbench.registry import register


def principal_directions(centred: np.ndarray, k: int) -> np.ndarray:
    """The top-k principal directions (d, k) of centred data, largest variance first.

    Exact either way: eigenvectors of the d x d scatter matrix when n >= d, right singular
    vectors of the n x d data when n < d (4,096-d deep features with few training points).
    """
    n, d = centred.shape
    if n >= d:
        eigvals, eigvecs = np.linalg.eigh(centred.T @ centred)
        return eigvecs[:, np.argsort(eigvals)[::-1][:k]]
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k].T


def quantization_loss(codes: np.ndarray, projected: np.ndarray) -> float:
    """||B - V R||_F^2 for codes B and rotated projections V R."""
    return float(np.sum((codes - projected) ** 2))


@register
class ITQ(Hasher):
    meta = MethodMeta(
        name="itq",
        title="ITQ",
        citation="Gong & Lazebnik, Iterative quantization: a Procrustean approach to "
        "learning binary codes, CVPR 2011",
        family="shallow",
        revision=2,  # 2: n_iter + 1 Procrustes updates, as ITQ.m (revision 1 ran n_iter)
        supervised=False,
    )
    param_rules = {"n_iter": ">=0"}

    def __init__(self, bits: int = 32, n_iter: int = 50) -> None:
        self.bits = bits
        self.n_iter = n_iter

    def fit(self, data: TrialData, ctx: RunContext) -> ITQ:
        x = np.asarray(data.train.inputs, dtype=np.float64)
        if self.bits > min(x.shape):
            raise ConfigError(
                f"itq: {self.bits} bits need at least {self.bits} feature dimensions and "
                f"training points (have {x.shape[1]} dims, {x.shape[0]} points)"
            )
        self.mean_ = x.mean(axis=0)
        centred = x - self.mean_
        self.pca_ = principal_directions(centred, self.bits)
        v = centred @ self.pca_
        rotation, _ = np.linalg.qr(ctx.rng.standard_normal((self.bits, self.bits)))
        self.losses_ = []
        for it in range(self.n_iter + 1):  # ITQ.m: for iter = 0:n_iter
            codes = binarize(v @ rotation).astype(np.float64)
            u, _, wt = np.linalg.svd(codes.T @ v)
            rotation = wt.T @ u.T
            loss = quantization_loss(codes, v @ rotation)
            self.losses_.append(loss)
            ctx.log_metric("quantization_loss", loss, it)
        self.rotation_ = rotation
        return self

    def encode(self, inputs: np.ndarray) -> np.ndarray:
        self._check_fitted("rotation_")
        x = np.asarray(inputs, dtype=np.float64)
        return binarize((x - self.mean_) @ self.pca_ @ self.rotation_)
