"""Compiled (numba) pair sums of FastH's step 1 (``methods/fasth.py``, issue 14).

Every quantity of step 1 is a sum over pairs of a coefficient that depends only on the pair's
Hamming distance ``d_ij`` on the earlier bits and on whether the two points share a label:
``a_ij = coef[group_i, group_j, d_ij]``. The kernels read the earlier bits packed into 64-bit
words (``d_ij`` = popcount of the XOR) and the label groups, so no slab of ``a`` is formed
except the block x block one that the graph cut needs; the numpy path of ``PairProblem``
forms ``a`` in 1,024-row (summaries) or block-row (unaries) slabs of all n columns.

Sums are accumulated in float64 (the numpy path sums float32 slabs): results agree to float
tolerance. Outer loops run on all numba threads; compiled once, cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hashbench.evaluation._kernels import popcount64


@njit(cache=True, nogil=True)
def _distance(words, i, j):
    d = 0
    for w in range(words.shape[1]):
        d += np.int64(popcount64(words[i, w] ^ words[j, w]))
    return d


@njit(cache=True, nogil=True, parallel=True)
def block_unary(words, block, in_block, z, group, coef, out):
    """``out[a] = sum_{j not in block} a_{block[a], j} z_j`` (``in_block``: (n,) bool)."""
    n = words.shape[0]
    for a in prange(block.shape[0]):
        i = block[a]
        gi = group[i]
        acc = 0.0
        for j in range(n):
            if not in_block[j]:
                acc += coef[gi, group[j], _distance(words, i, j)] * z[j]
        out[a] = acc


@njit(cache=True, nogil=True, parallel=True)
def block_pairs(words, block, group, coef, out):
    """``out[a, b] = a_{block[a], block[b]}``, zero diagonal (``out``: (m, m) float64)."""
    m = block.shape[0]
    for a in prange(m):
        i = block[a]
        for b in range(m):
            j = block[b]
            out[a, b] = 0.0 if i == j else coef[group[i], group[j], _distance(words, i, j)]


@njit(cache=True, nogil=True, parallel=True)
def pair_summary(words, z, group, coef, loss, energy_rows, loss_rows, weights):
    """Per row i: ``energy_rows[i] = 1/2 z_i sum_j a_ij z_j``, ``loss_rows[i] = sum_{j != i}
    l_ij(d_ij + [z_i != z_j])`` and ``weights[i] = sum_j |a_ij|``; ``loss`` (groups, groups,
    bits + 1) indexed by the r-bit distance."""
    n = words.shape[0]
    for i in prange(n):
        gi = group[i]
        e = 0.0
        lo = 0.0
        w = 0.0
        for j in range(n):
            if j == i:
                continue
            gj = group[j]
            d = _distance(words, i, j)
            c = coef[gi, gj, d]
            e += c * z[j]
            w += abs(c)
            lo += loss[gi, gj, d + (1 if z[i] != z[j] else 0)]
        energy_rows[i] = 0.5 * z[i] * e
        loss_rows[i] = lo
        weights[i] = w
