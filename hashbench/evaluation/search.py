"""Exact Hamming top-k search over packed codes.

``hamming_topk`` returns, for every query, the k database items nearest in Hamming distance,
ordered by distance with ties broken by database index: exactly the first k items of the
evaluator's stable ranking. Codes are packed bytes (:func:`~hashbench.evaluation.io.pack_codes`);
distances are XOR + popcount over 64-bit words, so the database never needs to be unpacked
(1,000,000 48-bit codes take 8 MB).

Selection without a full sort: the k-th smallest distance ``t`` is found by bisection over
``count(distance <= t)``, then only the items with distance ``<= t`` are sorted (a stable
counting sort of uint8 keys), which is O(n) per query.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from hashbench.errors import DataError

_CHUNK_BUDGET_BYTES = 32 * 2**20


def as_words(packed: Any, what: str = "packed codes") -> np.ndarray:
    """Packed uint8 codes (n, n_bytes) as (n, ceil(n_bytes / 8)) uint64 words (zero padded)."""
    p = np.asarray(packed)
    if p.ndim != 2 or p.dtype != np.uint8:
        raise DataError(f"{what} must be a 2-D uint8 array, got dtype {p.dtype} and shape {p.shape}")
    n, n_bytes = p.shape
    n_words = -(-n_bytes // 8)
    padded = np.zeros((n, n_words * 8), np.uint8)
    padded[:, :n_bytes] = p
    return padded.view(np.uint64)


def hamming_distances(query_words: np.ndarray, database_words: np.ndarray, out: np.ndarray | None = None,
                      scratch: np.ndarray | None = None) -> np.ndarray:
    """Hamming distances (n_queries, n_database) between word-packed codes (uint8 up to 3 words)."""
    nq, nw = query_words.shape
    nd = database_words.shape[0]
    if out is None:
        out = np.empty((nq, nd), np.uint8 if nw <= 3 else np.uint16)
    if scratch is None:
        scratch = np.empty((nq, nd), np.uint64)
    for w in range(nw):
        np.bitwise_xor(query_words[:, w, None], database_words[None, :, w], out=scratch)
        if w == 0:
            np.bitwise_count(scratch, out=out)
        else:
            out += np.bitwise_count(scratch)
    return out


def kth_distance(distance_row: np.ndarray, k: int, max_distance: int) -> int:
    """Smallest t with at least k entries of ``distance_row`` <= t (bisection over counts)."""
    lo, hi = 0, max_distance
    while lo < hi:
        mid = (lo + hi) // 2
        if np.count_nonzero(distance_row <= mid) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def stable_topk_row(distance_row: np.ndarray, k: int, max_distance: int) -> np.ndarray:
    """Indices of the k smallest distances, ordered by (distance, index)."""
    if k >= distance_row.size:
        return np.argsort(distance_row, kind="stable")
    t = kth_distance(distance_row, k, max_distance)
    idx = np.flatnonzero(distance_row <= t)
    order = np.argsort(distance_row[idx], kind="stable")
    return idx[order[:k]]


def hamming_topk(query_packed: Any, database_packed: Any, k: int, *, bits: int | None = None,
                 chunk_size: int | None = None, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database items for every query, ties broken by database index.

    Args:
        query_packed, database_packed: packed codes (uint8, same number of bytes per code).
        k: neighbours per query (capped at the database size).
        bits: code length (only bounds the distance; default 8 * bytes per code).
        chunk_size: queries per chunk (default: about 32 MiB of scratch per worker).
        n_jobs: worker threads over query chunks.

    Returns:
        ``(indices, distances)``, both of shape (n_queries, k'), k' = min(k, n_database).
    """
    q = as_words(query_packed, "query codes")
    d = np.ascontiguousarray(as_words(database_packed, "database codes"))
    if np.asarray(query_packed).shape[1] != np.asarray(database_packed).shape[1]:
        raise DataError("query and database codes have different numbers of bytes per code")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    nq, nd = q.shape[0], d.shape[0]
    k = int(min(k, nd))
    max_distance = int(bits) if bits is not None else 8 * np.asarray(query_packed).shape[1]
    if chunk_size is None:
        chunk_size = max(1, min(256, _CHUNK_BUDGET_BYTES // (9 * nd)))
    indices = np.empty((nq, k), np.int64)
    dist_dtype = np.uint8 if q.shape[1] <= 3 else np.uint16  # 3 words = 192 bits <= 255
    dists = np.empty((nq, k), dist_dtype)
    chunks = [(s, min(s + chunk_size, nq)) for s in range(0, nq, chunk_size)]

    def work(group: list[tuple[int, int]]) -> None:
        out = np.empty((chunk_size, nd), dist_dtype)
        scratch = np.empty((chunk_size, nd), np.uint64)
        for s, e in group:
            dist = hamming_distances(q[s:e], d, out[:e - s], scratch[:e - s])
            for j in range(e - s):
                top = stable_topk_row(dist[j], k, max_distance)
                indices[s + j] = top
                dists[s + j] = dist[j, top]

    n_jobs = max(1, int(n_jobs))
    if n_jobs == 1 or len(chunks) == 1:
        work(chunks)
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for f in [pool.submit(work, chunks[i::n_jobs]) for i in range(n_jobs)]:
                f.result()
    return indices, dists
