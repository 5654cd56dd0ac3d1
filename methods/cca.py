"""CCA and CCA-ITQ: unsupervised cross-modal hashing on canonical correlation directions.

Two ids, one core (:class:`~hashbench.methods._crossmodal.CCAHash`, whose docstring has the
algorithm and the choices not fixed by the papers):

* ``cca``: the top-c canonical directions of the two views (Hotelling 1936) with a
  relative ridge, codes ``sgn`` of each view's centred projection: the "CCA" baseline of the
  cross-modal hashing tables (SCM, SePH, DCMH, DLFH papers).
* ``cca-itq``: the same directions scaled by their correlations and one ITQ rotation
  (Gong, Lazebnik, Gordo & Perronnin, TPAMI 2013) learned on both views stacked, from a random
  orthogonal start drawn from ``ctx.rng``.

Two ids rather than one with a ``rotation`` hyper-parameter: the report names rows by the
method's title, so "CCA" and "CCA-ITQ" stay separate rows (the papers report them as separate
baselines), and each id carries only the hyper-parameters that change its codes (``cca`` has
no rotation, so no ``n_iter`` and no ``scale_power``, which only matter for the rotation).

Both are unsupervised (labels are ignored) and need ``bits <= min(d_features, d_text)``: CCA has
no more directions than the smaller view has dimensions (10 for Wikipedia's LDA text).
"""

from __future__ import annotations

from hashbench.api import MethodMeta
from hashbench.registry import register

from ._crossmodal import CCAHash, CrossModalMethod


@register
class CCA(CrossModalMethod):
    meta = MethodMeta(
        name="cca",
        title="CCA",
        citation="Hotelling, Relations between two sets of variates, Biometrika 28(3/4):321-377, 1936 "
        "(as a cross-modal hashing baseline: sign of the canonical projections)",
        family="shallow",
        modalities=("features", "text"),
        supervised=False,
        requires="cpu",
    )

    def __init__(self, bits: int = 32, reg: float = 1e-4) -> None:
        self.bits = bits
        self.reg = reg

    def _core(self) -> CCAHash:
        return CCAHash(bits=self.bits, rotation="none", reg=self.reg)


@register
class CCAITQ(CrossModalMethod):
    meta = MethodMeta(
        name="cca-itq",
        title="CCA-ITQ",
        citation="Gong, Lazebnik, Gordo & Perronnin, Iterative quantization: a Procrustean approach to "
        "learning binary codes for large-scale image retrieval, IEEE TPAMI 35(12):2916-2929, 2013",
        family="shallow",
        modalities=("features", "text"),
        supervised=False,
        requires="cpu",
    )

    def __init__(self, bits: int = 32, reg: float = 1e-4, scale_power: float = 1.0, n_iter: int = 50) -> None:
        self.bits = bits
        self.reg = reg
        self.scale_power = scale_power
        self.n_iter = n_iter

    def _core(self) -> CCAHash:
        return CCAHash(bits=self.bits, rotation="itq", reg=self.reg, scale_power=self.scale_power,
                       n_iter=self.n_iter)
