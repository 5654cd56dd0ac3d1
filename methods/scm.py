"""SCM-Seq: semantic correlation maximisation, sequential variant (Zhang & Li, AAAI 2014).

A thin wrapper of :class:`~hashbench.methods._crossmodal.SCM` (the sequential bit-by-bit
eigenproblems on the label-similarity residual, the fallback to CCA directions and the
authors' ``trainSCM_seq.m`` constants are in its docstring). Supervised by the labels'
cosine similarity; one linear hash function per view, the image side being the ``features``
modality. Deterministic: ``ctx.rng`` is not used.
"""

from __future__ import annotations

from hashbench.api import MethodMeta
from hashbench.registry import register

from ._crossmodal import SCM as SCMCore
from ._crossmodal import CrossModalMethod


@register
class SCM(CrossModalMethod):
    meta = MethodMeta(
        name="scm",
        title="SCM-Seq",
        citation="Zhang & Li, Large-scale supervised multimodal hashing with semantic correlation "
        "maximization, AAAI 2014, pp. 2177-2183",
        family="shallow",
        modalities=("features", "text"),
        supervised=True,
        requires="cpu",
    )

    def __init__(self, bits: int = 32, lam: float = 1e-6) -> None:
        self.bits = bits
        self.lam = lam

    def _core(self) -> SCMCore:
        return SCMCore(bits=self.bits, lam=self.lam)
