"""Compiled (numba) inner loops of the Lin:Lin / Lin:V optimiser (``methods/_neyshabur.py``).

Two hot spots of one bit update (issue 14), each with a numpy reference path in
``_neyshabur.py`` that the tests compare against:

* the weighted hinge SGD (``hinge_sgd``): 10 epochs x 100 mini-batches of 100 rows, each a
  margin test of 100 rows against ``w`` and an update of ``w`` by the violated rows. The
  kernel reads the rows in place (no gathered copies) on one thread; margins are
  accumulated in float32 like the reference's BLAS products, in another order, so they can
  differ in the last bits (tolerance, not identity). float32 lets the margin loop run 8 lanes
  wide: 158 -> 60 ms a call at 4,097 dims, 15 -> 9 ms at 1,025 (best of 5, one process);
  float64 margins were tried first;
* the products of the saving matrix ``M_ij = l(s_ij, Y_ij - 1) - l(s_ij, Y_ij + 1)`` with a
  vector, ``M v`` and ``u^T M``, computed pair by pair from the *packed* codes and the label
  groups, without forming ``M``: ``Y_ij`` (the other bits' inner product) is
  ``K - 1 - 2 popcount((q_i XOR d_j) AND mask)`` with ``mask`` every bit but the one being
  learned, and ``M_ij`` one look-up in a (query label group, database label group, ``Y``)
  table of savings. For Lin:V's 1,000 x 59,000 block this replaces two
  passes of chunked float32 matrix products, gathers and ``where`` per round.

All kernels are compiled once and cached on disk (``cache=True``) and write into arrays the
caller allocates; the two products run their outer loop on all numba threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hashbench.evaluation._kernels import popcount64


@njit(cache=True, nogil=True, fastmath=True)
def hinge_epochs(x, targets, weights, w, batches, steps, coef):
    """Weighted hinge SGD on the rows of ``x`` (see ``_neyshabur.hinge_sgd``), ``w`` in place.

    ``x`` (n, d) float32; ``targets`` (n,) float32 in {-1, +1}; ``weights`` (n,) float32,
    already divided by their mean; ``batches`` (epochs, batches, batch) int64 row draws;
    ``steps`` (epochs,) float32: the epoch's step divided by the batch size; ``coef``
    (batch,) float32 scratch. Serial: a mini-batch is ~1 ms of work, too little to share
    between threads at a barrier per batch (measured 5x slower on a busy 2-core machine).
    """
    d = x.shape[1]
    n_epochs, n_batches, batch = batches.shape
    for e in range(n_epochs):
        step = steps[e]
        for t in range(n_batches):
            for r in range(batch):
                i = batches[e, t, r]
                acc = np.float32(0.0)
                for k in range(d):
                    acc += x[i, k] * w[k]
                scaled = weights[i] * step
                coef[r] = scaled * targets[i] if targets[i] * acc < 1.0 else np.float32(0.0)
            for r in range(batch):
                cr = coef[r]
                if cr != 0.0:
                    i = batches[e, t, r]
                    for k in range(d):
                        w[k] += cr * x[i, k]


@njit(cache=True, nogil=True, fastmath=True)
def hinge_epochs_gram(margins, gram, targets, weights, batches, steps, coef, alpha):
    """:func:`hinge_epochs` through the rows' Gram matrix (issue 14): the same draws and
    updates, with ``w = w0 + x^T alpha`` kept as coefficients on the rows.

    Every update adds violated rows to ``w``, so ``w`` stays ``w0`` plus a combination of the
    ``n`` rows and a row's margin is ``x_i^T w0 + sum_j alpha_j G_ij``. ``margins`` (n,)
    float64 starts as ``x w0`` and is kept current: a violated row ``i`` with coefficient ``c``
    adds ``c G[i, :]`` to every margin (``n`` operations instead of ``2 d`` per drawn row), and
    ``alpha[i] += c``; the caller forms ``w0 + x^T alpha`` once at the end. ``gram`` (n, n)
    float32 is ``x x^T``; the other arguments as :func:`hinge_epochs`. Pays when ``n < d``
    (Lin:Lin's 1,000-row blocks of 4,097-d features).
    """
    n = gram.shape[0]
    n_epochs, n_batches, batch = batches.shape
    for e in range(n_epochs):
        step = steps[e]
        for t in range(n_batches):
            for r in range(batch):
                i = batches[e, t, r]
                scaled = weights[i] * step
                coef[r] = scaled * targets[i] if targets[i] * margins[i] < 1.0 else np.float32(0.0)
            for r in range(batch):
                cr = np.float64(coef[r])
                if cr != 0.0:
                    i = batches[e, t, r]
                    alpha[i] += cr
                    for k in range(n):
                        margins[k] += cr * gram[i, k]


@njit(cache=True, nogil=True)
def gather_square(matrix, rows, out):
    """``out[a, b] = matrix[rows[a], rows[b]]`` (the Gram matrix of a block of rows)."""
    for a in range(rows.shape[0]):
        source = matrix[rows[a]]
        for b in range(rows.shape[0]):
            out[a, b] = source[rows[b]]


@njit(cache=True, nogil=True)
def pack_codes(codes, out):
    """``out[i, w]`` bit ``b`` set iff ``codes[i, 64 w + b] > 0`` (``out``: (n, words) uint64)."""
    n, k = codes.shape
    for i in range(n):
        for word in range(out.shape[1]):
            out[i, word] = 0
        for b in range(k):
            if codes[i, b] > 0:
                out[i, b // 64] |= np.uint64(1) << np.uint64(b % 64)


@njit(cache=True, nogil=True, parallel=True)
def saving_matvec(q_words, rows, d_words, cols, mask, q_group, d_group, pair_tables, top, v, out):
    """``out[a] = sum_b M[rows[a], cols[b]] v[b]``.

    ``q_words``/``d_words``: packed codes (items, words); ``mask`` (words,): the other bits;
    ``q_group``/``d_group``: label group per item; ``pair_tables`` (query groups, database
    groups, 2K - 1) float32: the saving of a pair of these groups (similar or not) indexed by
    ``Y + K - 1``; ``top`` = 2K - 2 (the index of ``Y = K - 1``).
    """
    n_words = mask.shape[0]
    for a in prange(rows.shape[0]):
        i = rows[a]
        gi = q_group[i]
        acc = 0.0
        for b in range(cols.shape[0]):
            j = cols[b]
            pop = 0
            for word in range(n_words):
                pop += np.int64(popcount64((q_words[i, word] ^ d_words[j, word]) & mask[word]))
            acc += pair_tables[gi, d_group[j], top - 2 * pop] * v[b]
        out[a] = acc


@njit(cache=True, nogil=True, parallel=True)
def saving_rmatvec(q_words, rows, d_words, cols, mask, q_group, d_group, pair_tables, top, u, out):
    """``out[b] = sum_a u[a] M[rows[a], cols[b]]`` (arguments as :func:`saving_matvec`)."""
    n_words = mask.shape[0]
    for b in prange(cols.shape[0]):
        j = cols[b]
        gj = d_group[j]
        acc = 0.0
        for a in range(rows.shape[0]):
            i = rows[a]
            pop = 0
            for word in range(n_words):
                pop += np.int64(popcount64((q_words[i, word] ^ d_words[j, word]) & mask[word]))
            acc += u[a] * pair_tables[q_group[i], gj, top - 2 * pop]
        out[b] = acc
