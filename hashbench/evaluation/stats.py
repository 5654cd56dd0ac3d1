"""Health statistics of a set of binary codes, and the flags derived from them.

A method that collapses (maps most of the database to a handful of codes) still gets a MAP
number, and with ties broken by database index that number can look respectable. These
statistics make such runs visible.
"""

from __future__ import annotations

import numpy as np


def distinct_codes(codes: np.ndarray) -> int:
    """Number of distinct rows of a {-1, +1} code matrix."""
    packed = np.packbits(codes > 0, axis=1)
    if packed.shape[1] <= 8:  # up to 64 bits: one integer per code
        width = np.zeros((packed.shape[0], 8), np.uint8)
        width[:, 8 - packed.shape[1]:] = packed
        return int(np.unique(width.view(">u8").ravel()).size)
    return int(np.unique(packed, axis=0).shape[0])


def bit_balance(codes: np.ndarray) -> np.ndarray:
    """Per bit: ``2 * min(fraction of +1, fraction of -1)``; 1 = perfectly balanced, 0 = constant."""
    plus = np.count_nonzero(codes > 0, axis=0) / codes.shape[0]
    return 2.0 * np.minimum(plus, 1.0 - plus)


def collapse_threshold(n_database: int, n_classes: int) -> int:
    """Fewer distinct database codes than this flags the run as ``collapsed``.

    ``min(max(4, n_classes // 2 + 1), n_database)``: a run with all-equal codes or only 3
    codes always trips it (on a database of at least 4 items); a supervised run needs about
    one code per class to separate the classes, so a working run has well over half as many
    codes as classes (10 classes: at least 6 codes). A tiny database never trips it on its
    own: with ``n_database`` items all distinct, the count equals the threshold.
    """
    return int(min(max(4, n_classes // 2 + 1), n_database))


def code_statistics(database_codes: np.ndarray, n_classes: int) -> tuple[dict[str, float], dict[str, str]]:
    """Scalar code statistics of the database codes and the health flags they raise.

    Metrics: ``distinct_db_codes``, ``distinct_db_codes_fraction`` (distinct / n_database),
    ``bit_balance_min``, ``bit_balance_mean``. Flags: ``collapsed`` (see
    :func:`collapse_threshold`) and ``constant_bits`` (some bit is the same for every item).
    """
    n_database, bits = database_codes.shape
    distinct = distinct_codes(database_codes)
    balance = bit_balance(database_codes)
    metrics = {
        "distinct_db_codes": float(distinct),
        "distinct_db_codes_fraction": distinct / n_database,
        "bit_balance_min": float(balance.min()),
        "bit_balance_mean": float(balance.mean()),
    }
    flags: dict[str, str] = {}
    threshold = collapse_threshold(n_database, n_classes)
    if distinct < threshold:
        flags["collapsed"] = (f"database has {distinct} distinct codes for {n_database} items "
                              f"(fewer than {threshold})")
    constant = int(np.count_nonzero(balance == 0))
    if constant:
        flags["constant_bits"] = f"{constant} of {bits} bits are constant over the database"
    return metrics, flags
