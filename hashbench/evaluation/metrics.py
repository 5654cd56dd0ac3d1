"""Retrieval metrics as pure functions of per-query ranking statistics.

Notation, per query: the database is ranked by Hamming distance with ties broken by database
index; ``p_1 < p_2 < ... < p_R`` are the 1-based ranks of the R relevant items;
``n_d`` / ``r_d`` are the numbers of items / relevant items at Hamming distance ``d``;
``N`` is the database size. All functions are vectorised over queries.

- AP (whole database):   ``AP = (1/R) * sum_{j=1..R} j / p_j``;  ``AP = 0`` when ``R = 0``.
- AP@K:                  ``S_K = sum_{j: p_j <= K} j / p_j``, ``F_K = #{j: p_j <= K}``;
  ``"found"``: ``AP@K = S_K / F_K`` (0 when ``F_K = 0``);
  ``"min_k_r"``: ``AP@K = S_K / min(K, R)`` (0 when ``R = 0``). K is capped at N.
- P@K = ``F_K / K`` and R@K = ``F_K / R`` (0 when ``R = 0``), K capped at N.
- Within Hamming radius r: ``C_r = sum_{d<=r} n_d``, ``G_r = sum_{d<=r} r_d``;
  precision ``G_r / C_r`` (0 when the ball is empty, ``C_r = 0``), recall ``G_r / R``
  (0 when ``R = 0``).
- Tie-aware AP (He, Liu, Wang & Sclaroff, CVPR 2018, "Hashing as tie-aware learning to
  rank"): the expected AP when the items of each tie group (equal distance) are ordered
  uniformly at random. Bucket d with ``n = n_d`` items, ``r = r_d`` relevant, ``P`` items and
  ``Q`` relevant items at smaller distances: a relevant item at within-bucket position t
  (uniform on 1..n) has rank ``P + t`` and expected relevant-rank ``Q + 1 + (t-1)(r-1)/(n-1)``
  (the other r-1 relevant items fill the n-1 other slots uniformly), so its expected
  contribution, summed over the r relevant items, is
  ``E_d = (r/n) * sum_{t=1..n} (a + b t) / (P + t)`` with ``b = (r-1)/(n-1)`` (0 if n = 1),
  ``a = Q + 1 - b``; that is ``E_d = r b + (r/n)(a - b P)(H(P+n) - H(P))`` with H the harmonic
  numbers. Tie-aware AP = ``(1/R) sum_d E_d``.
- Best / worst case AP over the orderings within ties: relevant items first / last inside
  every bucket: ``sum_{j=1..r} (Q + j)/(P + j)`` and ``sum_{j=1..r} (Q + j)/(P + n - r + j)``,
  i.e. ``r + (Q - P')(H(P'+r) - H(P'))`` with ``P' = P`` (best) or ``P + n - r`` (worst).
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def average_precision(precision_sum: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Whole-database AP per query: ``precision_sum / R`` (0 when R = 0)."""
    return _safe_divide(precision_sum, n_relevant)


def average_precision_at_k(precision_sum: np.ndarray, found: np.ndarray, n_relevant: np.ndarray,
                           k: int, normalisation: str = "found") -> np.ndarray:
    """AP@K per query from ``S_K`` (precision_sum), ``F_K`` (found) and R.

    ``normalisation="found"`` divides by ``F_K``; ``"min_k_r"`` by ``min(K, R)``.
    """
    if normalisation == "found":
        return _safe_divide(precision_sum, found)
    if normalisation == "min_k_r":
        return _safe_divide(precision_sum, np.minimum(k, n_relevant))
    raise ValueError(f"unknown normalisation {normalisation!r}")


def precision_recall_at_k(found: np.ndarray, k: int | np.ndarray, n_relevant: np.ndarray,
                          n_database: int) -> tuple[np.ndarray, np.ndarray]:
    """P@K = F_K / min(K, N) and R@K = F_K / R (0 when R = 0), per query."""
    k_eff = np.minimum(np.asarray(k), n_database)
    precision = _safe_divide(found, k_eff)
    recall = _safe_divide(found, np.asarray(n_relevant)[..., None] if np.ndim(found) == 2 else n_relevant)
    return precision, recall


def radius_precision_recall(hist_total: np.ndarray, hist_rel: np.ndarray,
                            radius: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the Hamming ball of the given radius (or radii), per query.

    Returns arrays of shape (n_queries,) for a scalar radius, (n_queries, len(radius)) for an
    array of radii. An empty ball has precision 0; a query with R = 0 has recall 0.
    """
    cum_total = np.cumsum(hist_total, axis=1)
    cum_rel = np.cumsum(hist_rel, axis=1)
    r = np.minimum(np.asarray(radius), hist_total.shape[1] - 1)
    inside, inside_rel = cum_total[:, r], cum_rel[:, r]
    n_relevant = cum_rel[:, -1]
    if np.ndim(r):
        n_relevant = n_relevant[:, None]
    return _safe_divide(inside_rel, inside), _safe_divide(inside_rel, n_relevant)


def _bucket_offsets(hist_total: np.ndarray, hist_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items and relevant items at smaller distances than each bucket (P and Q)."""
    before = np.cumsum(hist_total, axis=1) - hist_total
    before_rel = np.cumsum(hist_rel, axis=1) - hist_rel
    return before.astype(np.float64), before_rel.astype(np.float64)


def _harmonic_difference(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """H(hi) - H(lo) = sum_{m=lo+1..hi} 1/m, via the digamma function."""
    return digamma(hi + 1.0) - digamma(lo + 1.0)


def tie_aware_average_precision(hist_total: np.ndarray, hist_rel: np.ndarray) -> np.ndarray:
    """Expected AP over uniformly random orderings within ties (closed form; see module doc)."""
    n = hist_total.astype(np.float64)
    r = hist_rel.astype(np.float64)
    before, before_rel = _bucket_offsets(hist_total, hist_rel)
    b = _safe_divide(r - 1.0, n - 1.0)
    b[n <= 1] = 0.0
    a = before_rel + 1.0 - b
    contrib = r * b + _safe_divide(r, n) * (a - b * before) * _harmonic_difference(before, before + n)
    contrib[r == 0] = 0.0
    return _safe_divide(contrib.sum(axis=1), r.sum(axis=1))


def best_case_average_precision(hist_total: np.ndarray, hist_rel: np.ndarray) -> np.ndarray:
    """AP when the relevant items come first inside every tie group."""
    return _extreme_case(hist_total, hist_rel, relevant_first=True)


def worst_case_average_precision(hist_total: np.ndarray, hist_rel: np.ndarray) -> np.ndarray:
    """AP when the relevant items come last inside every tie group."""
    return _extreme_case(hist_total, hist_rel, relevant_first=False)


def _extreme_case(hist_total: np.ndarray, hist_rel: np.ndarray, relevant_first: bool) -> np.ndarray:
    r = hist_rel.astype(np.float64)
    before, before_rel = _bucket_offsets(hist_total, hist_rel)
    start = before if relevant_first else before + hist_total - r
    # sum_{j=1..r} (Q + j) / (start + j) = r + (Q - start) * (H(start + r) - H(start))
    contrib = r + (before_rel - start) * _harmonic_difference(start, start + r)
    contrib[r == 0] = 0.0
    return _safe_divide(contrib.sum(axis=1), r.sum(axis=1))


def tie_fraction(hist_total: np.ndarray) -> np.ndarray:
    """Per query: the fraction of database items whose distance to the query equals the
    distance of at least one other database item, ``sum_{d: n_d >= 2} n_d / N``."""
    tied = np.where(hist_total >= 2, hist_total, 0).sum(axis=1)
    return tied / hist_total.sum(axis=1)


def curve_ks(max_k: int) -> np.ndarray:
    """The P@K / R@K curve grid: 1, 5, 10, 20, 50, then every 100 up to ``max_k`` (included)."""
    ks = {k for k in (1, 5, 10, 20, 50) if k <= max_k}
    ks.update(range(100, max_k + 1, 100))
    ks.add(max_k)
    return np.asarray(sorted(ks), dtype=np.int64)
