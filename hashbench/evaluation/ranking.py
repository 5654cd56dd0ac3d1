"""Hamming ranking: per-query statistics of the stable ranking, computed in query chunks.

The ranking of the database for a query sorts items by Hamming distance and breaks ties by
database index (a stable sort). Everything the metrics need follows from two things per query:

- ``hist_total[q, d]`` / ``hist_rel[q, d]``: how many database items (relevant items) lie at
  Hamming distance ``d``, for ``d = 0..bits``. Radius metrics, PR curves, tie statistics and
  tie-aware AP need only these.
- ``positions``: the 1-based ranks of the relevant items in the stable ranking, in increasing
  order. The j-th relevant item (1-based) at rank ``p_j`` has precision ``j / p_j``; AP, MAP@K,
  P@K and R@K are sums and counts over these positions. Only the first ``need`` ranks are ever
  looked at, so only the items in the distance buckets that cover them are ranked.

How it is computed (and why it is fast):

- distances for a chunk of queries are XOR + popcount of codes packed into machine words
  (one uint16 for 12 bits, one uint64 for 48), in blocks of database columns that stay in cache,
  stored as uint8 (uint16 above 255 bits); CUDA tensors use a float32 matrix product instead;
- relevance for a chunk is a byte comparison (single-label data: class ids) or, per query, the
  OR of the packed item sets of its few labels (multi-label data), never a float matrix product;
- histograms come from one radix sort per query of the byte key ``d + (bits+1)*relevant``;
- the stable order is a radix (counting) argsort of the uint8 distances, O(n) per query, over
  only the items in the buckets that reach rank ``need`` (all items for whole-database MAP).

Peak memory is bounded by the chunk size (a few bytes per query x database pair in a chunk)
and never depends on the number of queries. Chunks are processed by ``n_jobs`` threads (numpy
releases the GIL inside the heavy loops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashbench.evaluation.search import kth_distance

# Per worker: bytes of chunk buffers we allow (distance, relevance and key byte planes).
_CHUNK_BUDGET_BYTES = 32 * 2**20
_BYTES_PER_PAIR = 3
# Scratch of the distance computation: one block of database columns at a time.
_DISTANCE_BLOCK_BYTES = 2**20
# Rows whose argsort runs in one call: large enough for numpy to use huge pages, small enough
# to stay in cache while the rows are read back.
_SORT_BLOCK_BYTES = 6 * 2**20


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


class Relevance:
    """Relevance (share at least one label) between query chunks and the database.

    Single-label data (every row of both sides has exactly one label) compares class ids.
    Multi-label data keeps, per label, the set of database items that carry it as a packed bit
    row; a query's relevance row is the OR of the rows of its labels (a query has few labels),
    unpacked. Both give the same answer as ``query_labels @ database_labels.T > 0``.
    """

    def __init__(self, query_labels: np.ndarray, database_labels: np.ndarray) -> None:
        n_classes = query_labels.shape[1]
        self.single = bool(np.all(query_labels.sum(axis=1) == 1)
                           and np.all(database_labels.sum(axis=1) == 1))
        if self.single:
            dtype = np.uint8 if n_classes <= 256 else np.int32
            self.query_ids = np.argmax(query_labels, axis=1).astype(dtype)
            self.db_ids = np.argmax(database_labels, axis=1).astype(dtype)
        else:
            self.n_database = database_labels.shape[0]
            # (n_labels, ceil(n_database / 8)): bit i of row l says item i carries label l
            self.items_with_label = np.packbits(database_labels.T.astype(bool), axis=1, bitorder="little")
            self.query_label_lists = [np.flatnonzero(row) for row in query_labels]

    def fill(self, start: int, stop: int, out: np.ndarray) -> None:
        """Write relevance of queries ``start:stop`` to every database item into ``out`` (bool)."""
        if self.single:
            np.equal(self.db_ids[None, :], self.query_ids[start:stop, None], out=out)
            return
        for j, q in enumerate(range(start, stop)):
            labels = self.query_label_lists[q]
            if labels.size == 0:
                out[j] = False
                continue
            rows = self.items_with_label[labels]
            packed = np.bitwise_or.reduce(rows, axis=0) if labels.size > 1 else rows[0]
            out[j] = np.unpackbits(packed, count=self.n_database, bitorder="little").view(np.bool_)


def distance_dtype(bits: int) -> type:
    """Smallest unsigned integer type that holds distances 0..bits."""
    return np.uint8 if bits <= 255 else np.uint16


def pack_words(codes: np.ndarray) -> np.ndarray:
    """{-1, +1} codes (n, bits) as (n, n_words) unsigned words, bit i of a code in word i // w.

    The word is the narrowest of uint8/16/32/64 that holds the code (several uint64 words above
    64 bits); pad bits are 0 on every code, so they never add to a distance.
    """
    bits = codes.shape[1]
    dtype = next((t for t in (np.uint8, np.uint16, np.uint32) if bits <= 8 * np.dtype(t).itemsize), np.uint64)
    word_bits = 8 * np.dtype(dtype).itemsize
    n_words = -(-bits // word_bits)
    padded = np.zeros((codes.shape[0], n_words * word_bits), np.bool_)
    padded[:, :bits] = codes > 0
    return np.packbits(padded, axis=1, bitorder="little").view(dtype)


class Distances:
    """Hamming distances between query chunks and the database, on the CPU with numpy.

    ``d(q, x) = popcount(q XOR x)`` on codes packed into machine words, in blocks of database
    columns whose XOR scratch stays in cache.
    """

    def __init__(self, query_codes: np.ndarray, database_codes: np.ndarray) -> None:
        self.bits = query_codes.shape[1]
        self.query_words = pack_words(query_codes)
        self.db_words = np.ascontiguousarray(pack_words(database_codes).T)  # (n_words, n_database)

    def fill(self, start: int, stop: int, out: np.ndarray) -> None:
        """Write distances of queries ``start:stop`` to every database item into ``out``."""
        rows = stop - start
        n = self.db_words.shape[1]
        q = self.query_words[start:stop]
        width = max(256, _DISTANCE_BLOCK_BYTES // (self.db_words.itemsize * rows))
        scratch = np.empty((rows, min(width, n)), self.db_words.dtype)
        for c0 in range(0, n, width):
            c1 = min(c0 + width, n)
            block = scratch[:, :c1 - c0]
            for w in range(q.shape[1]):
                np.bitwise_xor(q[:, w, None], self.db_words[w, None, c0:c1], out=block)
                if w == 0:
                    np.bitwise_count(block, out=out[:, c0:c1])
                else:
                    out[:, c0:c1] += np.bitwise_count(block)


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
        import torch

        d = torch.matmul(self.query_aug[start:stop], self.db_aug).round_()
        d = d.to(torch.uint8 if out.dtype == np.uint8 else torch.int32)
        out[...] = d.cpu().numpy()


def auto_chunk_size(n_queries: int, n_database: int, n_jobs: int) -> int:
    """Queries per chunk so that one worker's chunk buffers stay near 32 MiB."""
    by_memory = max(1, _CHUNK_BUDGET_BYTES // (_BYTES_PER_PAIR * n_database))
    by_work = max(1, math.ceil(n_queries / max(1, n_jobs)))
    return int(min(by_memory, by_work, 1024))


def rank_statistics(distances: Distances | TorchDistances, relevance: Relevance, n_queries: int,
                    n_database: int, *, ks: Sequence[int], map_k: int, want_hist: bool,
                    chunk_size: int | None = None, n_jobs: int = 1) -> RankStats:
    """Compute :class:`RankStats` for all queries.

    Args:
        ks: ranks at which to count relevant items found (each in 1..n_database).
        map_k: rank up to which precisions are summed (``n_database`` for whole-database AP).
        want_hist: also return the per-distance histograms.
    """
    bits = distances.bits
    n_buckets = bits + 1
    ks_arr = np.asarray(sorted(set(int(k) for k in ks)), dtype=np.int64)
    if ks_arr.size and (ks_arr[0] < 1 or ks_arr[-1] > n_database):
        raise ValueError("every k must lie in 1..n_database")
    if not 1 <= map_k <= n_database:
        raise ValueError("map_k must lie in 1..n_database")
    need = int(max(map_k, ks_arr[-1] if ks_arr.size else 1))
    n_jobs = max(1, int(n_jobs))
    if chunk_size is None:
        chunk_size = auto_chunk_size(n_queries, n_database, n_jobs)
    chunk_size = max(1, int(chunk_size))

    stats = RankStats(
        n_relevant=np.zeros(n_queries, np.int64),
        precision_sum=np.zeros(n_queries, np.float64),
        found_at_map_k=np.zeros(n_queries, np.int64),
        found=np.zeros((n_queries, ks_arr.size), np.int64),
        hist_total=np.zeros((n_queries, n_buckets), np.int64) if want_hist else None,
        hist_rel=np.zeros((n_queries, n_buckets), np.int64) if want_hist else None,
    )
    chunks = [(s, min(s + chunk_size, n_queries)) for s in range(0, n_queries, chunk_size)]
    worker = _ChunkWorker(distances, relevance, n_database, bits, ks_arr, map_k, need, want_hist,
                          min(chunk_size, n_queries), stats)
    if n_jobs == 1 or len(chunks) == 1:
        worker.run(chunks)
    else:
        groups = [chunks[i::n_jobs] for i in range(n_jobs)]
        groups = [g for g in groups if g]
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            futures = [pool.submit(worker.clone().run, g) for g in groups]
            for f in futures:
                f.result()
    return stats


class _ChunkWorker:
    """Processes chunks of queries with its own buffers; writes into the shared RankStats."""

    def __init__(self, distances: Any, relevance: Relevance, n_database: int, bits: int,
                 ks: np.ndarray, map_k: int, need: int, want_hist: bool, rows: int,
                 stats: RankStats) -> None:
        self.distances, self.relevance = distances, relevance
        self.n_database, self.bits, self.n_buckets = n_database, bits, bits + 1
        self.ks, self.map_k, self.need, self.want_hist = ks, map_k, need, want_hist
        self.rows, self.stats = rows, stats
        self.key_dtype = np.uint8 if 2 * self.n_buckets <= 256 else np.uint16
        self.rank_numbers = np.arange(1, n_database + 1, dtype=np.float64)
        self._buffers: tuple[np.ndarray, ...] | None = None

    def clone(self) -> _ChunkWorker:
        return _ChunkWorker(self.distances, self.relevance, self.n_database, self.bits, self.ks,
                            self.map_k, self.need, self.want_hist, self.rows, self.stats)

    def _buffers_for(self, rows: int) -> tuple[np.ndarray, ...]:
        if self._buffers is None:
            n = self.n_database
            dist_dtype = distance_dtype(self.bits)
            self._buffers = (np.empty((self.rows, n), dist_dtype), np.empty((self.rows, n), np.bool_),
                             np.empty((self.rows, n), self.key_dtype))
        return tuple(b[:rows] for b in self._buffers)

    def run(self, chunks: Sequence[tuple[int, int]]) -> None:
        for start, stop in chunks:
            self._chunk(start, stop)

    def _chunk(self, start: int, stop: int) -> None:
        rows = stop - start
        dist, rel, key = self._buffers_for(rows)
        self.distances.fill(start, stop, dist)
        self.relevance.fill(start, stop, rel)
        n, nb = self.n_database, self.n_buckets
        st = self.stats
        if self.need >= n:
            self._whole_rows(start, dist, rel)
            return
        if self.want_hist:
            # Histograms first: they say which distance buckets reach rank `need`.
            np.multiply(rel.view(np.uint8), key.dtype.type(nb), out=key, casting="unsafe")
            np.add(key, dist, out=key, casting="unsafe")
            sorted_keys = np.sort(key, axis=1, kind="stable")
            edges = np.arange(2 * nb + 1, dtype=np.int64)
            if 2 * nb < np.iinfo(key.dtype).max:
                edges = edges.astype(key.dtype)  # same dtype: searchsorted does not copy the row
        for j in range(rows):
            q = start + j
            d_row, r_row = dist[j], rel[j]
            if self.want_hist:
                counts = np.diff(np.searchsorted(sorted_keys[j], edges))
                h_rel = counts[nb:]
                h_tot = counts[:nb] + h_rel
                st.n_relevant[q] = int(h_rel.sum())
                st.hist_total[q] = h_tot  # type: ignore[index]
                st.hist_rel[q] = h_rel  # type: ignore[index]
                cum = np.cumsum(h_tot)
                cut = int(np.searchsorted(cum, self.need))  # first bucket whose end reaches `need`
                n_cand = int(cum[cut])
            else:  # bisection over count(distance <= t): no histogram needed
                st.n_relevant[q] = np.count_nonzero(r_row)
                cut = kth_distance(d_row, self.need, self.bits)
                n_cand = int(np.count_nonzero(d_row <= cut))
            if n_cand * 2 > n:
                order = np.argsort(d_row, kind="stable")
                positions = np.flatnonzero(np.take(r_row, order))
            else:
                idx = np.flatnonzero(d_row <= cut)
                order = np.argsort(np.take(d_row, idx), kind="stable")
                positions = np.flatnonzero(np.take(np.take(r_row, idx), order))
            self._score(q, positions)

    def _whole_rows(self, start: int, dist: np.ndarray, rel: np.ndarray) -> None:
        n, nb = self.n_database, self.n_buckets
        st = self.stats
        block = max(1, _SORT_BLOCK_BYTES // (8 * n))
        edges = np.arange(nb + 1, dtype=np.int64)
        if nb < np.iinfo(dist.dtype).max:
            edges = edges.astype(dist.dtype)  # same dtype: searchsorted does not copy the row
        for b0 in range(0, dist.shape[0], block):
            orders = np.argsort(dist[b0:b0 + block], axis=1, kind="stable")
            for i in range(orders.shape[0]):
                j = b0 + i
                q = start + j
                order = orders[i]
                positions = np.flatnonzero(np.take(rel[j], order))
                st.n_relevant[q] = positions.size
                if self.want_hist:
                    ends = np.searchsorted(np.take(dist[j], order), edges)
                    st.hist_total[q] = np.diff(ends)  # type: ignore[index]
                    st.hist_rel[q] = np.diff(np.searchsorted(positions, ends))  # type: ignore[index]
                self._score(q, positions)

    def _score(self, q: int, positions: np.ndarray) -> None:
        """Precision sum and found counts from 0-based ranks of relevant items (sorted)."""
        st = self.stats
        m = int(np.searchsorted(positions, self.map_k))  # relevant items at ranks < map_k (0-based)
        if m:
            st.precision_sum[q] = float(np.sum(self.rank_numbers[:m] / (positions[:m] + 1.0)))
        st.found_at_map_k[q] = m
        if self.ks.size:
            st.found[q] = np.searchsorted(positions, self.ks)
