"""Compiled (numba) inner loops of the Hamming ranking; see :mod:`hashbench.evaluation.ranking`.

Everything here works on one query at a time and on plain arrays:

- codes and label sets are packed into 64-bit words; the database side is stored transposed,
  ``(n_words, n_database)``, so that each word plane is read contiguously;
- a per-bucket counter packs two counts into one int64: items at that distance seen so far
  (low 32 bits) and relevant items among them (high 32 bits), so that one load and one store
  per database item keep both;
- one pass over the database in index order gives every relevant item its position inside
  its distance bucket (the counter's value when the item is reached) without sorting;
  the ranks follow once the bucket sizes are known.

All functions release the GIL (``nogil``) so that worker threads run them in parallel, and
are compiled once and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_LOW32 = (1 << 32) - 1
_REL_ONE = 1 << 32  # one relevant item in a packed bucket counter


@intrinsic
def popcount64(typingctx, x):  # noqa: ARG001 (numba's intrinsic signature)
    """Number of set bits of a uint64 (LLVM's ``ctpop``: one instruction on x86-64)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)

    return sig, codegen


@njit(nogil=True, cache=True)
def distance_row(query_words, database_words_t, out):
    """``out[i] = popcount(query XOR item i)`` summed over the words (``out``: (n,) uint16)."""
    n_words, n = database_words_t.shape
    x = query_words[0]
    plane = database_words_t[0]
    for i in range(n):
        out[i] = popcount64(x ^ plane[i])
    for w in range(1, n_words):
        x = query_words[w]
        plane = database_words_t[w]
        for i in range(n):
            out[i] += popcount64(x ^ plane[i])


@njit(nogil=True, cache=True)
def scan_row(dist, query_labels, database_labels_t, counts, before, bucket):
    """One pass over the database in index order.

    Fills ``counts[d]`` (packed: items at distance d | relevant items at distance d << 32) and,
    for the k-th relevant item (k = 0, 1, ...), ``before[k]``: the packed counter of its bucket
    just before it (items and relevant items at the same distance with a smaller index) and
    ``bucket[k]``: its distance. Returns the number of relevant items. Relevance = the label
    sets intersect (a query without labels has no relevant item). The stores are unconditional
    (the slot is overwritten when the item is not relevant): no branch to mispredict.
    """
    counts[:] = 0
    n_label_words, n = database_labels_t.shape
    # Only the words in which the query has labels matter; a query's few labels usually sit in
    # one word (or none), and then one word plane decides relevance.
    n_active = 0
    active = 0
    for w in range(n_label_words):
        if query_labels[w] != 0:
            n_active += 1
            active = w
    k = 0
    if n_active <= 1:
        m = query_labels[active]
        labels = database_labels_t[active]
        for i in range(n):
            d = dist[i]
            r = np.int64((m & labels[i]) != 0)
            c = counts[d]
            before[k] = c
            bucket[k] = d
            counts[d] = c + 1 + (r << 32)
            k += r
    else:
        for i in range(n):
            d = dist[i]
            hit = np.uint64(0)
            for w in range(n_label_words):
                hit |= query_labels[w] & database_labels_t[w, i]
            r = np.int64(hit != 0)
            c = counts[d]
            before[k] = c
            bucket[k] = d
            counts[d] = c + 1 + (r << 32)
            k += r
    return k


@njit(nogil=True, cache=True)
def finish_row(q, counts, before, bucket, k, map_k, need, ks, want_hist, hits, start_items,
               start_relevant, n_relevant, precision_sum, found_at_map_k, found, hist_total, hist_rel):
    """Per-query statistics from :func:`scan_row`'s output (written at row ``q``).

    A relevant item in bucket d whose packed counter before it was ``c`` has rank
    ``1 + P_d + (c & low32)`` and is the ``1 + Q_d + (c >> 32)``-th relevant item, with
    ``P_d`` / ``Q_d`` the items / relevant items at smaller distances. Only ranks up to
    ``need`` are looked at; the precision sum covers ranks up to ``map_k``; ``found[q, t]``
    counts relevant items at ranks <= ``ks[t]`` (ks sorted, at most ``need``).
    """
    n_buckets = counts.shape[0]
    items = 0
    relevant = 0
    for d in range(n_buckets):
        t = counts[d] & _LOW32
        r = counts[d] >> 32
        start_items[d] = items
        start_relevant[d] = relevant
        if want_hist:
            hist_total[q, d] = t
            hist_rel[q, d] = r
        items += t
        relevant += r
    n_relevant[q] = relevant
    k_max = ks[-1] if ks.size else 0
    hits[:k_max + 1] = 0
    total = 0.0
    n_found = 0
    for j in range(k):
        d = bucket[j]
        c = before[j]
        rank = start_items[d] + (c & _LOW32) + 1
        if rank > need:
            continue
        if rank <= map_k:
            total += (start_relevant[d] + (c >> 32) + 1) / rank
            n_found += 1
        if rank <= k_max:
            hits[rank] += 1
    precision_sum[q] = total
    found_at_map_k[q] = n_found
    acc = 0
    t = 0
    for rank in range(1, k_max + 1):
        acc += hits[rank]
        while t < ks.size and ks[t] == rank:
            found[q, t] = acc
            t += 1


def scratch(n_database, n_buckets, k_max):
    """Per-worker scratch of :func:`rank_row` (counts, before, bucket, hits, start_items,
    start_relevant), allocated by the caller with numpy so that memory tracing sees it:
    about 10 bytes per database item."""
    return (np.zeros(n_buckets, np.int64), np.empty(n_database + 1, np.int64),
            np.empty(n_database + 1, np.uint16), np.zeros(k_max + 1, np.int64),
            np.empty(n_buckets, np.int64), np.empty(n_buckets, np.int64))


@njit(nogil=True, cache=True)
def rank_row(q, dist, query_labels, database_labels_t, map_k, need, ks, want_hist, n_relevant,
             precision_sum, found_at_map_k, found, hist_total, hist_rel, counts, before, bucket, hits,
             start_items, start_relevant):
    """Statistics of query ``q`` from its distances to every database item: :func:`scan_row`
    then :func:`finish_row`."""
    k = scan_row(dist, query_labels[q], database_labels_t, counts, before, bucket)
    finish_row(q, counts, before, bucket, k, map_k, need, ks, want_hist, hits, start_items,
               start_relevant, n_relevant, precision_sum, found_at_map_k, found, hist_total, hist_rel)


@njit(nogil=True, cache=True)
def rank_codes(start, stop, query_words, database_words_t, dist, *args):
    """Statistics of queries ``start:stop`` from packed codes (distances computed here into the
    (n,) uint16 scratch ``dist``); ``args`` are :func:`rank_row`'s arguments after ``dist``."""
    for q in range(start, stop):
        distance_row(query_words[q], database_words_t, dist)
        rank_row(q, dist, *args)


@njit(nogil=True, cache=True)
def rank_distance_rows(start, dist_rows, *args):
    """Statistics of queries ``start:start + len(dist_rows)`` from precomputed distance rows;
    ``args`` are :func:`rank_row`'s arguments after ``dist``."""
    for j in range(dist_rows.shape[0]):
        rank_row(start + j, dist_rows[j], *args)
