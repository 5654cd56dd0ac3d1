"""Hamming ranking: per-query statistics of the stable ranking, without sorting.

The ranking of the database for a query sorts items by Hamming distance and breaks ties by
database index (a stable sort). Everything the metrics need follows from, per query:

- ``hist_total[q, d]`` / ``hist_rel[q, d]``: how many database items (relevant items) lie at
  Hamming distance ``d``, for ``d = 0..bits``. Radius metrics, PR curves, tie statistics and
  tie-aware AP need only these.
- the ranks of the relevant items: the j-th relevant item (1-based) at rank ``p_j`` has
  precision ``j / p_j``; AP, MAP@K, P@K and R@K are sums and counts over them, up to the
  largest rank ``need`` any metric looks at.

Distances take only ``bits + 1`` values, so no sort is needed. With ``P_d`` / ``Q_d`` the items /
relevant items at distances below d, an item at distance d with ``a`` items and ``b`` relevant
items before it (smaller index) at the same distance has rank ``P_d + a + 1``; if relevant, it
is the ``(Q_d + b + 1)``-th relevant item. One pass over the database in index order counts
``a`` and ``b`` per bucket (two counts packed in one int64 counter) and records them for the
relevant items; once the pass is over, the bucket sizes give ``P_d`` and ``Q_d`` and every
relevant item's rank and precision follow in O(1). The work is O(n_database) per query with a
few machine instructions per item: distances are XOR + popcount of codes packed into 64-bit
words, relevance is the AND of label sets packed into 64-bit words (class ids and multi-hot
labels alike). The loops are compiled with numba (:mod:`._kernels`).

Codes on a CUDA device: the distances of a chunk of queries come from a float32 matrix product
on the device (:class:`TorchDistances`); the pass above then runs on the CPU over those rows.

Memory: per worker, O(n_database) scratch (about 12 bytes per database item), plus one chunk of
distance rows on the CUDA path (chunk x n_database bytes, at most about 32 MiB). Nothing of size
queries x database is ever built. Chunks of queries are processed by ``n_jobs`` threads (the
compiled loops release the GIL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashbench.evaluation import _kernels
from hashbench.evaluation.search import as_words

# CUDA path: bytes of distance rows copied from the device per chunk.
_CHUNK_BUDGET_BYTES = 32 * 2**20
# CPU path: queries per chunk (chunks are the unit of work handed to the threads).
_CPU_CHUNK = 64


@dataclass
class RankStats:
    """Per-query statistics of the stable Hamming ranking (arrays of length n_queries).

    Attributes:
        n_relevant: R, the number of relevant database items.
        precision_sum: sum over the relevant items within the first ``map_k`` ranks of
            (number of relevant items up to and including it) / (its rank).
        found_at_map_k: number of relevant items within the first ``map_k`` ranks.
        found: (n_queries, len(ks)) number of relevant items within the first ``ks[i]`` ranks.
        hist_total, hist_rel: (n_queries, bits + 1) items / relevant items at each distance,
            or ``None`` when not requested.
    """

    n_relevant: np.ndarray
    precision_sum: np.ndarray
    found_at_map_k: np.ndarray
    found: np.ndarray
    hist_total: np.ndarray | None
    hist_rel: np.ndarray | None

    def take(self, rows: np.ndarray) -> RankStats:
        """The statistics of the queries ``rows`` (e.g. to expand de-duplicated queries)."""
        return RankStats(self.n_relevant[rows], self.precision_sum[rows], self.found_at_map_k[rows],
                         self.found[rows], None if self.hist_total is None else self.hist_total[rows],
                         None if self.hist_rel is None else self.hist_rel[rows])


def pack_words(bits_01: np.ndarray) -> np.ndarray:
    """Rows of booleans (n, m) as (n, max(1, ceil(m / 64))) uint64 words; bit i of a row in word
    i // 64 (:func:`~.search.as_words` of the little-endian packed bytes).

    Pad bits are 0 on every row, so they add nothing to a distance or an intersection.
    """
    rows = np.asarray(bits_01, dtype=bool)
    packed = np.packbits(rows, axis=1, bitorder="little")
    return as_words(packed if packed.shape[1] else np.zeros((rows.shape[0], 1), np.uint8))


class Labels:
    """Label sets of both sides packed into 64-bit words; relevance = a non-empty intersection.

    Gives the same answer as ``query_labels @ database_labels.T > 0`` for class ids (one-hot
    rows) and multi-hot rows alike.
    """

    def __init__(self, query_labels: np.ndarray, database_labels: np.ndarray) -> None:
        self.query_words = pack_words(query_labels > 0)
        self.database_words_t = np.ascontiguousarray(pack_words(database_labels > 0).T)


class Codes:
    """{-1, +1} codes of both sides packed into 64-bit words (bit set for +1), for the CPU path."""

    def __init__(self, query_codes: np.ndarray, database_codes: np.ndarray) -> None:
        self.bits = query_codes.shape[1]
        self.query_words = pack_words(query_codes > 0)
        self.database_words_t = np.ascontiguousarray(pack_words(database_codes > 0).T)

    def distances(self, query: int) -> np.ndarray:
        """Distances of one query to every database item (uint16); for tests and tools."""
        out = np.empty(self.database_words_t.shape[1], np.uint16)
        _kernels.distance_row(self.query_words[query], self.database_words_t, out)
        return out


class TorchDistances:
    """Hamming distances computed with torch on the codes' device (used for CUDA tensors)."""

    def __init__(self, query_codes: Any, database_codes: Any) -> None:
        import torch

        bits = int(query_codes.shape[1])
        self.bits = bits
        device = query_codes.device
        q = query_codes.to(device=device, dtype=torch.float32)
        self.query_aug = torch.cat([q * -0.5, torch.full((q.shape[0], 1), bits / 2, device=device)], dim=1)
        x = database_codes.to(device=device, dtype=torch.float32)
        self.db_aug = torch.cat([x.T, torch.ones((1, x.shape[0]), device=device)], dim=0).contiguous()

    def fill(self, start: int, stop: int, out: np.ndarray) -> None:
        """Write distances of queries ``start:stop`` to every database item into ``out``."""
        import torch

        d = torch.matmul(self.query_aug[start:stop], self.db_aug).round_()
        d = d.to(torch.uint8 if out.dtype == np.uint8 else torch.int32)
        out[...] = d.cpu().numpy()


def distance_dtype(bits: int) -> type:
    """Smallest unsigned integer type that holds distances 0..bits."""
    return np.uint8 if bits <= 255 else np.uint16


def auto_chunk_size(n_queries: int, n_database: int, n_jobs: int, cuda: bool) -> int:
    """Queries per chunk: CUDA chunks of distance rows stay near 32 MiB; CPU chunks are small
    units of work, at most an equal share per worker."""
    by_work = max(1, math.ceil(n_queries / max(1, n_jobs)))
    if not cuda:
        return int(min(_CPU_CHUNK, by_work))
    by_memory = max(1, _CHUNK_BUDGET_BYTES // max(1, n_database))
    return int(min(by_memory, by_work, 1024))


def rank_statistics(codes: Codes | TorchDistances, labels: Labels, n_queries: int, n_database: int, *,
                    ks: Sequence[int], map_k: int, want_hist: bool, chunk_size: int | None = None,
                    n_jobs: int = 1) -> RankStats:
    """Compute :class:`RankStats` for all queries.

    Args:
        codes: packed codes (CPU) or a device distance source (CUDA).
        ks: ranks at which to count relevant items found (each in 1..n_database).
        map_k: rank up to which precisions are summed (``n_database`` for whole-database AP).
        want_hist: also return the per-distance histograms.
    """
    bits = codes.bits
    n_buckets = bits + 1
    ks_arr = np.asarray(sorted(set(int(k) for k in ks)), dtype=np.int64)
    if ks_arr.size and (ks_arr[0] < 1 or ks_arr[-1] > n_database):
        raise ValueError("every k must lie in 1..n_database")
    if not 1 <= map_k <= n_database:
        raise ValueError("map_k must lie in 1..n_database")
    if n_database >= 2**32:
        raise ValueError("the ranking pass counts items in 32-bit halves of a counter: at most "
                         f"2**32 - 1 database items, got {n_database}")
    need = int(max(map_k, ks_arr[-1] if ks_arr.size else 1))
    n_jobs = max(1, int(n_jobs))
    cuda = isinstance(codes, TorchDistances)
    if chunk_size is None:
        chunk_size = auto_chunk_size(n_queries, n_database, n_jobs, cuda)
    chunk_size = max(1, int(chunk_size))

    hist_shape = (n_queries, n_buckets) if want_hist else (0, n_buckets)
    stats = RankStats(
        n_relevant=np.zeros(n_queries, np.int64),
        precision_sum=np.zeros(n_queries, np.float64),
        found_at_map_k=np.zeros(n_queries, np.int64),
        found=np.zeros((n_queries, ks_arr.size), np.int64),
        hist_total=np.zeros(hist_shape, np.int64),
        hist_rel=np.zeros(hist_shape, np.int64),
    )
    outputs = (stats.n_relevant, stats.precision_sum, stats.found_at_map_k, stats.found,
               stats.hist_total, stats.hist_rel)
    shared = (labels.query_words, labels.database_words_t, map_k, need, ks_arr, want_hist)

    def run(group: Sequence[tuple[int, int]]) -> None:
        args = (*shared, *outputs, *_kernels.scratch(n_database, n_buckets,
                                                      int(ks_arr[-1]) if ks_arr.size else 0))
        if cuda:
            rows = np.empty((min(chunk_size, n_queries), n_database), distance_dtype(bits))
        else:
            dist = np.empty(n_database, np.uint16)
        for start, stop in group:
            if cuda:
                block = rows[:stop - start]
                codes.fill(start, stop, block)
                _kernels.rank_distance_rows(start, block, *args)
            else:
                _kernels.rank_codes(start, stop, codes.query_words, codes.database_words_t, dist, *args)

    chunks = [(s, min(s + chunk_size, n_queries)) for s in range(0, n_queries, chunk_size)]
    if n_jobs == 1 or len(chunks) <= 1:
        run(chunks)
    else:
        groups = [g for g in (chunks[i::n_jobs] for i in range(n_jobs)) if g]
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            for f in [pool.submit(run, g) for g in groups]:
                f.result()
    if not want_hist:
        stats.hist_total = stats.hist_rel = None
    return stats
