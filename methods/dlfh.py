"""DLFH: discrete latent factor model for cross-modal hashing (Jiang & Li, IEEE TIP 2019).

A wrapper of :class:`~hashbench.methods._crossmodal.DLFH` (the likelihood, the discrete
column updates, the stochastic column sampling, the defaults of the authors' ``DLFH_demo.m``
and the ridge-regression out-of-sample extension are in its docstring). DLFH learns binary
codes directly for its training pairs: ``U`` for the image side (the ``features`` modality)
and ``V`` for the text side; the linear (or, with ``extension="kernel"``, KDLFH's RBF) hash
functions are then regressed onto them and hash the queries.

Database codes, as the authors' ``DLFH_algo.m``: it trains on the whole database and ranks
I->T with the image queries' hashed codes against the learned text codes ``V`` and T->I
against the learned image codes ``U``. So when the training rows are exactly the database
rows (the protocol's ``full`` mode, e.g. ``wikipedia``) ``encode_database(data, modality)``
returns the learned codes of that modality's side (``text`` -> ``V``, ``features`` -> ``U``);
for any other database (a sampled training set) it hashes the database with the hash
functions, like the symmetric methods. Because that full-mode run is the method's own
setting, it is reported as "DLFH" (``full_mode_title``), and a sampled run as "DLFH (sampled)".

Not an :class:`~hashbench.api.AsymmetricHasher`: that contract has one learned code matrix
(``database_codes()``) which must be the database codes of every modality, while DLFH learns
one per side. The learned codes are exposed as ``database_codes(modality)`` with their rows in
``learned_indices_``, and ``meta.asymmetric`` is True through the ``encode_database`` override.
"""

from __future__ import annotations

import numpy as np

from hashbench.api import MethodMeta, RunContext, TrialData
from hashbench.registry import register

from ._crossmodal import CORE_MODALITY, CrossModalMethod
from ._crossmodal import DLFH as DLFHCore


@register
class DLFH(CrossModalMethod):
    meta = MethodMeta(
        name="dlfh",
        title="DLFH",
        citation="Jiang & Li, Discrete latent factor model for cross-modal hashing, IEEE Transactions "
        "on Image Processing 28(7):3490-3501, 2019",
        family="shallow",
        modalities=("features", "text"),
        supervised=True,
        asymmetric=True,
        full_mode_title="DLFH",
        requires="cpu",
    )

    learned_indices_: np.ndarray | None = None

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

    def _core(self) -> DLFHCore:
        return DLFHCore(bits=self.bits, lam=self.lam, n_iter=self.n_iter, num_samples=self.num_samples,
                        gamma=self.gamma, extension=self.extension, n_anchors=self.n_anchors)

    def fit(self, data: TrialData, ctx: RunContext) -> DLFH:
        super().fit(data, ctx)
        self.learned_indices_ = np.asarray(data.train.indices)
        return self

    def database_codes(self, modality: str) -> np.ndarray:
        """The codes learned for the training rows (``learned_indices_``) on ``modality``'s
        side: ``features`` -> the image codes ``U``, ``text`` -> the text codes ``V``."""
        self._check_fitted("model_")
        side = CORE_MODALITY[modality]
        return self.model_.image_codes_ if side == "image" else self.model_.text_codes_  # type: ignore[union-attr]

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        self._check_fitted("model_")
        modality = modality or self.modalities[0]
        rows = self.learned_indices_
        if rows is not None and np.array_equal(rows, data.database.indices):
            return self.database_codes(modality)
        return super().encode_database(data, modality)
