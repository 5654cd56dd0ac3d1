"""CMFH: collective matrix factorisation hashing (Ding, Guo & Zhou, CVPR 2014), unsupervised.

A thin wrapper of :class:`~hashbench.methods._crossmodal.CMFH` (objective, update order,
initialisation and the deviations from the authors' ``solveCMFH.m`` are in its docstring):
both views are factorised into one latent code matrix, and each view gets a linear hash
function regressed onto it; the image side is the ``features`` modality. Queries and database
items are hashed with their own view's function (the unified codes of the training pairs are
not used as database codes).
"""

from __future__ import annotations

from hashbench.api import MethodMeta
from hashbench.registry import register

from ._crossmodal import CMFH as CMFHCore
from ._crossmodal import CrossModalMethod


@register
class CMFH(CrossModalMethod):
    meta = MethodMeta(
        name="cmfh",
        title="CMFH",
        citation="Ding, Guo & Zhou, Collective matrix factorization hashing for multimodal data, "
        "CVPR 2014, pp. 2083-2090",
        family="shallow",
        modalities=("features", "text"),
        supervised=False,
        requires="cpu",
    )

    def __init__(self, bits: int = 32, lam: float = 0.5, mu: float = 100.0, gamma: float = 0.001,
                 n_iter: int = 25) -> None:
        self.bits = bits
        self.lam = lam
        self.mu = mu
        self.gamma = gamma
        self.n_iter = n_iter

    def _core(self) -> CMFHCore:
        return CMFHCore(bits=self.bits, lam=self.lam, mu=self.mu, gamma=self.gamma, n_iter=self.n_iter)
