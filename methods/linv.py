"""Lin:V: a linear query hash and directly learned database codes (Neyshabur et al., NIPS 2013).

Queries get ``f(x) = sign(W_q [x; 1])``; every database item j gets a free code word
``v_j`` in {-1, +1}^K, learned directly ("LIN:V" in the paper's experiments; the authors'
``LIN_V.m`` / ``updateWV.m``). The loss, threshold and bit-by-bit scheme are those of Lin:Lin
(``methods/_neyshabur.py`` has the derivation); for bit k the database step is exact:
``v = sign(M^T l)`` with ``l`` the block's query bits, instead of a fitted hyperplane. Each
round uses a random block of 1,000 query rows against *all* database items, so similarities
come from the labels in column chunks and no database x database matrix is ever formed.

What "the database" is (the ADSH paper's Table 2: "Lin:V ... adopt all database points for
training"): Lin:V always learns the code words of the database:

* protocol ``train = "full"`` (the training set is the database): queries are sampled from
  the database and V covers the database, as in the paper;
* protocol ``train = "sampled"``: the query function is learned from ``data.train`` (the
  sampled training set)
  and V for every database item, with similarities between the two from the labels (the
  asymmetric setting of ADSH's eq. 3). Fitted without a database, V covers the training set.

``database_codes()`` returns V and ``encode_database`` hands it out; ``encode()`` is the
query function. There is no database function: a database other than the one V was learned
for is refused (its codes would need learning).
"""

from __future__ import annotations

import numpy as np

from hashbench.api import MethodMeta, TrialData
from hashbench.errors import DataError
from hashbench.registry import register

from ._neyshabur import NeyshaburHasher


@register
class LinV(NeyshaburHasher):
    meta = MethodMeta(
        name="linv",
        title="Lin:V",
        citation="Neyshabur, Yadollahpour, Makarychev, Salakhutdinov & Srebro, The power of "
        "asymmetry in binary hashing, NIPS 2013",
        family="shallow",
        supervised=True,
        asymmetric=True,
        full_mode_title="Lin:V",
    )
    conformance_params = {"max_epochs": 2, "sgd_epochs": 2, "sgd_batches": 20,
                          "n_pairs": 20_000}
    _database = "codes"

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        """V, which must have been learned for exactly ``data.database``'s rows."""
        self._check_fitted("db_codes_")
        if not self.learned_for(data):
            raise DataError("linv: V was learned for other rows than this database and Lin:V has "
                            "no database hash function; fit it with this database")
        return self.database_codes()
