"""Label relations shared by the methods and the evaluator.

Relevance and supervision in hashbench are one relation: two items are similar when they
share at least one label (multi-hot rows with a common 1; for single-label data, the same
class). Everything here works on multi-hot ``(n, L)`` matrices of 0/1 (any dtype), or on
torch tensors where noted, and never builds more than the block it is asked for.

* :func:`share_label`: the boolean block ``A @ B^T > 0`` (numpy or torch).
* :func:`group_labels`: the distinct label vectors of several matrices and each row's group
  id. Rows with the same label vector have the same similarities to everything, so the
  methods that need large similarity blocks (ADSH, Lin:*, the evaluator's query dedupe)
  work on groups instead of rows.
* :class:`LabelGroups`: ``share_label`` blocks between two labelled sets as a gather from a
  group-by-group table (the table is small for single-label data).
* :func:`balanced_targets`: a block with +1 for similar pairs and ``-r`` for the others,
  ``r = #similar / #dissimilar`` (the ADSH and COSDISH authors' rescaling).
* :func:`class_ids`: the class of each row of single-label data, refusing multi-label rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashbench.errors import DataError


def share_label(rows: Any, cols: Any) -> Any:
    """Boolean ``(len(rows), len(cols))``: item i of ``rows`` and item j of ``cols`` share at
    least one label. numpy arrays in, a numpy bool array out; torch tensors in, a torch bool
    tensor out (on their device). Computed as a float32 product, exact for 0/1 labels."""
    if not isinstance(rows, np.ndarray) and hasattr(rows, "float"):  # a torch tensor
        return (rows.float() @ cols.float().T) > 0
    return (np.asarray(rows, dtype=np.float32) @ np.asarray(cols, dtype=np.float32).T) > 0


def group_labels(*label_matrices: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct label vectors over all matrices, and each row's group id per matrix.

    Returns ``(groups (G, L) uint8, [ids_0, ids_1, ...])`` with ``groups[ids_k[i]]`` equal to
    row i of matrix k (as 0/1). Groups are in sorted order of their packed bits.
    """
    stacked = np.concatenate([np.asarray(m) > 0 for m in label_matrices], axis=0)
    packed = np.packbits(stacked, axis=1)
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    groups = stacked[first].astype(np.uint8)
    ids, start = [], 0
    for m in label_matrices:
        ids.append(inverse[start:start + len(m)].astype(np.int64))
        start += len(m)
    return groups, ids


class LabelGroups:
    """``share_label`` blocks between two labelled sets through their distinct label vectors.

    Items with the same label vector have the same similarities, so a block of the "share a
    label" matrix is a gather from the (groups x groups) table when that table is small
    (always for single-label data), and a label product otherwise.
    """

    _MAX_TABLE = 16_000_000

    def __init__(self, query_labels: np.ndarray, db_labels: np.ndarray) -> None:
        self.lq, self.ld = query_labels, db_labels
        query_groups, (self.gq,) = group_labels(query_labels)
        db_groups, (self.gd,) = group_labels(db_labels)
        small = len(query_groups) * len(db_groups) <= self._MAX_TABLE
        self.table = share_label(query_groups, db_groups) if small else None

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.table is None:
            return share_label(self.lq[rows], self.ld[cols])
        return self.table[self.gq[rows][:, None], self.gd[cols][None, :]]


def balanced_targets(similar: np.ndarray) -> np.ndarray:
    """+1 where ``similar``, ``-r`` elsewhere, ``r = #similar / #dissimilar`` over the block
    (r = 1 when nothing is dissimilar): the similarity targets of the ADSH and COSDISH
    authors' code (the target is rescaled, the squared error is not re-weighted)."""
    n_similar = int(similar.sum())
    n_dissimilar = similar.size - n_similar
    r = n_similar / n_dissimilar if n_dissimilar else 1.0
    return np.where(similar, 1.0, -r)


def class_ids(labels: np.ndarray, what: str) -> np.ndarray:
    """The class of each row of a one-hot label matrix; refuses multi-label rows, naming
    ``what`` (the method) in the one-line error."""
    labels = np.asarray(labels)
    per_row = (labels > 0).sum(axis=1)
    if (per_row != 1).any():
        bad = int(np.flatnonzero(per_row != 1)[0])
        raise DataError(
            f"{what} supports single-label data only: training item {bad} has "
            f"{int(per_row[bad])} labels; use a single-label dataset such as CIFAR-10 or digits"
        )
    return np.argmax(labels > 0, axis=1)
