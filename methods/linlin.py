"""Lin:Lin: asymmetric binary hashing with two linear hash functions (Neyshabur et al., NIPS 2013).

Queries get ``f(x) = sign(W_q [x; 1])`` and database items ``g(x) = sign(W_d [x; 1])``: two
*different* linear threshold functions whose code inner product ``<f(x), g(x')>`` is fitted
to the pairwise similarity (share a label). The paper's point (its theory and experiments)
is that two maps reach a given accuracy with fewer bits than one.

Training (the paper's optimisation section; the authors' ``LIN_LIN.m`` / ``updateW.m``): the
weighted logistic loss ``beta * log(1 + e^{-(y - theta)})^conv`` on similar pairs and
``(1 - beta) * log(1 + e^{(y - theta)})^conv`` on dissimilar ones (beta = 0.7, conv = 0.5),
the threshold theta re-tuned on sampled pairs, and the bits learned one at a time: for each
bit, alternating weighted-hinge SGD steps for ``w_q`` and ``w_d`` on random 1,000 x 1,000
blocks of training pairs. The full derivation is in ``methods/_neyshabur.py``.

How hashbench runs it: the database has its own function, so Lin:Lin overrides the
contract's ``encode_database`` hook: the database codes are ``g(x)`` of the database items
(computed in ``fit`` for the training rows; for any other database, applied to its inputs).
Lin:Lin learns from the training set only and reads the database's inputs, never its labels:
its database codes are never learned directly (that is Lin:V), so its full-database run is
the "-D" variant ``Lin:Lin-D``. ``database_function(x)`` applies ``g`` to any items.

Speed (issue 14): compiled kernels (``kernels="numba"``, recorded with the run), and with
features of more dims than a block has rows the hinge SGD runs through the training set's
Gram matrix (``methods/_neyshabur.py``): at CIFAR-10 size (5,000 x 4,096, 48 bits, one
thread) a trial takes 118 s instead of 475 s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashbench.api import MethodMeta, TrialData
from hashbench.registry import register

from ._neyshabur import NeyshaburHasher, _project


@register
class LinLin(NeyshaburHasher):
    meta = MethodMeta(
        name="linlin",
        title="Lin:Lin",
        citation="Neyshabur, Yadollahpour, Makarychev, Salakhutdinov & Srebro, The power of "
        "asymmetry in binary hashing, NIPS 2013",
        family="shallow",
        supervised=True,
        asymmetric=True,
    )
    conformance_params = {"max_epochs": 2, "sgd_epochs": 2, "sgd_batches": 20,
                          "n_pairs": 20_000}
    _database = "linear"

    def database_function(self, inputs: Any) -> np.ndarray:
        """Database codes ``sign(W_d [x; 1])`` of any items."""
        self._check_fitted("db_weights_")
        return _project(self._features(inputs), self.db_weights_)

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        """``g`` of the database: the codes computed during ``fit`` when the database is the
        training set, else ``g`` applied to the database's inputs (never the query function)."""
        if self.learned_for(data):
            return self.database_codes()
        return self.database_function(data.database.inputs)
