"""SePH: semantics-preserving hashing for cross-view retrieval (Lin, Ding, Hu & Wang, CVPR 2015).

A thin wrapper of :class:`~hashbench.methods._crossmodal.SePH` (the KL objective, the
``minKLD.m`` optimiser and its constants, the training subsample and the kernel logistic
regression hash functions are in its docstring). Step 1 learns codes for at most
``n_samples`` training pairs from their labels; step 2 fits one RBF-kernel logistic
regression per bit and view (``anchors="random"``: SePH_rnd; ``"kmeans"``: SePH_km), the
image side being the ``features`` modality. Queries and database items are hashed with their
own view's function; SePH's fusion of both views' predictions for items that have both is not
implemented (see the core).
"""

from __future__ import annotations

from hashbench.api import MethodMeta
from hashbench.registry import register

from ._crossmodal import CrossModalMethod
from ._crossmodal import SePH as SePHCore


@register
class SePH(CrossModalMethod):
    meta = MethodMeta(
        name="seph",
        title="SePH",
        citation="Lin, Ding, Hu & Wang, Semantics-preserving hashing for cross-view retrieval, "
        "CVPR 2015, pp. 3864-3872",
        family="shallow",
        modalities=("features", "text"),
        supervised=True,
        requires="cpu",
    )

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

    def _core(self) -> SePHCore:
        return SePHCore(bits=self.bits, alpha=self.alpha, n_samples=self.n_samples,
                        n_anchors=self.n_anchors, anchors=self.anchors, klr_c=self.klr_c,
                        n_iter=self.n_iter, learning_rate=self.learning_rate, momentum=self.momentum)
