"""LSH: sign random projections (Charikar, STOC 2002), the data-independent floor.

h(x) = sign(W^T (x - mu)), W with i.i.d. N(0, 1) entries drawn from the run's seed and mu
the training mean (centring as in the LSH baseline of Gong & Lazebnik's ITQ experiments).
"""

from __future__ import annotations

import numpy as np

from hashbench.api import Hasher, MethodMeta, RunContext, TrialData, binarize
from hashbench.registry import register


@register
class LSH(Hasher):
    meta = MethodMeta(
        name="lsh",
        title="LSH",
        citation="Charikar, Similarity estimation techniques from rounding algorithms, STOC 2002",
        family="data-independent",
        supervised=False,
    )

    def __init__(self, bits: int = 32) -> None:
        self.bits = bits

    def fit(self, data: TrialData, ctx: RunContext) -> LSH:
        x = np.asarray(data.train.inputs, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        self.projection_ = ctx.rng.standard_normal((x.shape[1], self.bits))
        return self

    def encode(self, inputs: np.ndarray) -> np.ndarray:
        self._check_fitted("projection_")
        x = np.asarray(inputs, dtype=np.float64)
        return binarize((x - self.mean_) @ self.projection_)
