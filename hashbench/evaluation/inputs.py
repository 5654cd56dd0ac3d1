"""Validation of the evaluator's inputs: codes in {-1, +1} and multi-hot labels.

Every problem a user (or a plugin) can cause is raised as :class:`~hashbench.errors.DataError`
with a one-line message that names the array and the problem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashbench.errors import DataError


def as_numpy(array: Any) -> np.ndarray:
    """``array`` as a numpy array; torch tensors (any device) are copied to the CPU."""
    if type(array).__module__.startswith("torch"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def as_codes(array: Any, what: str = "codes") -> np.ndarray:
    """Validate binary codes and return them as a C-contiguous int8 array of shape (n, bits).

    Any integer or floating-point array (or torch tensor) whose values are all -1 or +1 is
    accepted; anything else (0, NaN, 2, booleans, strings, a 1-D array) raises ``DataError``.
    """
    a = as_numpy(array)
    if a.ndim != 2:
        raise DataError(f"{what} must be a 2-D array of shape (n, bits), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{what} are empty (shape {a.shape})")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{what} must be numbers in {{-1, +1}}, got dtype {a.dtype}")
    if a.dtype == np.int8:
        ok = np.abs(a) == 1  # int8 cannot hold NaN, and abs(-128) stays -128 (not 1)
    else:
        ok = (a == 1) | (a == -1)
    if not ok.all():
        bad = a[~ok].ravel()[0].item()
        raise DataError(f"{what} must contain only -1 and +1, found {bad!r} "
                        "(binarise with value > 0 -> +1, else -1)")
    return np.ascontiguousarray(a, dtype=np.int8)


def to_multihot(labels: Any, n_classes: int | None = None) -> np.ndarray:
    """Labels as a multi-hot int8 array of shape (n, n_classes).

    A 1-D array holds one class index per item (0-based, integers >= 0): it becomes one-hot
    rows with ``n_classes`` columns (default: largest index + 1). A 2-D array is taken to be
    multi-hot already; its values must be 0/1 (or booleans), and it must have ``n_classes``
    columns when ``n_classes`` is given. Anything else raises ``DataError``.
    """
    a = as_numpy(labels)
    if n_classes is not None and (isinstance(n_classes, bool) or int(n_classes) != n_classes
                                  or n_classes < 1):
        raise DataError(f"n_classes must be a positive integer, got {n_classes!r}")
    if a.ndim == 1:
        return _one_hot(a, n_classes)
    if a.ndim != 2:
        raise DataError(f"labels must be class indices (1-D) or multi-hot rows (2-D), got shape {a.shape}")
    if a.shape[1] == 0:
        raise DataError(f"multi-hot labels have no columns (shape {a.shape})")
    if n_classes is not None and a.shape[1] != n_classes:
        raise DataError(f"multi-hot labels have {a.shape[1]} columns, expected {n_classes}")
    if a.dtype == np.bool_:
        return a.astype(np.int8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"multi-hot labels must be 0/1 numbers, got dtype {a.dtype}")
    ok = (a == 0) | (a == 1)
    if not ok.all():
        bad = a[~ok].ravel()[0].item()
        raise DataError(f"multi-hot labels must contain only 0 and 1, found {bad!r}")
    return np.ascontiguousarray(a, dtype=np.int8)


def _one_hot(indices: np.ndarray, n_classes: int | None) -> np.ndarray:
    if indices.size == 0:
        raise DataError("class-index labels are empty")
    if indices.dtype == np.bool_ or not (np.issubdtype(indices.dtype, np.integer)
                                         or np.issubdtype(indices.dtype, np.floating)):
        raise DataError(f"class indices must be integers, got dtype {indices.dtype}")
    if np.issubdtype(indices.dtype, np.floating):
        if not np.all(np.isfinite(indices)) or not np.all(indices == np.round(indices)):
            raise DataError("class indices must be whole numbers")
    idx = indices.astype(np.int64)
    if idx.min() < 0:
        raise DataError(f"class indices must be >= 0, found {idx.min()}")
    n = int(idx.max()) + 1 if n_classes is None else int(n_classes)
    if idx.max() >= n:
        raise DataError(f"class index {idx.max()} is out of range for {n} classes")
    out = np.zeros((idx.size, n), dtype=np.int8)
    out[np.arange(idx.size), idx] = 1
    return out


def as_label_pair(query_labels: Any, database_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Query and database labels as multi-hot arrays with the same number of columns.

    Class indices (1-D) on both sides share ``n_classes = max index + 1`` over both sides;
    a 1-D side next to a 2-D side takes the 2-D side's column count.
    """
    q, d = as_numpy(query_labels), as_numpy(database_labels)
    if q.ndim == 2 and d.ndim == 1:
        return to_multihot(q), to_multihot(d, q.shape[1])
    if d.ndim == 2 and q.ndim == 1:
        return to_multihot(q, d.shape[1]), to_multihot(d)
    qm, dm = to_multihot(q), to_multihot(d)
    if q.ndim == 1 and d.ndim == 1 and qm.shape[1] != dm.shape[1]:  # widen to the larger class count
        width = max(qm.shape[1], dm.shape[1])
        qm, dm = (np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in (qm, dm))
    if qm.shape[1] != dm.shape[1]:
        raise DataError(f"query labels have {qm.shape[1]} classes but database labels have {dm.shape[1]}")
    return qm, dm
