"""Compiled prediction for the boosted-tree out-of-sample extension (issue 14).

LightGBM's ``Booster.predict`` on a dense float32 matrix copies every row's features into its
own buffer once per model: at CIFAR-10 size (59,000 x 4,096 database items) and 48 bits, that
is 48 passes over 966 MB for 200 depth-4 trees per bit, about a minute on one core, while the
trees themselves read at most 4 features of a row each. :class:`Forest` holds all bits'
trees as flat arrays (read from the model text LightGBM saves, whose thresholds and leaf
values are written to full double precision) and one compiled kernel walks every tree for a
row while the row sits in cache.

The decision rule is LightGBM's numerical split (``Tree::NumericalDecision``): the feature
value is read as a double; NaN becomes 0 unless the split's missing type is NaN; a value
counted as missing (missing type Zero and ``|v| <= 1e-35f``, or type NaN and NaN) goes to the
split's default side; otherwise ``v <= threshold`` goes left. Leaf values are summed per bit
in tree order in double precision, as ``Booster.predict(raw_score=True)`` does, so the raw
scores are the same numbers (tested bit for bit against LightGBM, NaN and zeros included).
Categorical splits and linear trees are not used by hashbench and are refused.

Public API: ``Forest.from_models(models)`` (a list with one LightGBM booster per bit, or a
float for a constant bit) and ``Forest.scores(x, threads)`` -> ``(n, bits)`` float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float, compared as a double)


@dataclass
class Forest:
    """Every bit's trees as flat arrays. Internal node ``j``: ``feature[j]``,
    ``threshold[j]``, ``missing[j]`` (0 None, 1 Zero, 2 NaN), ``default_left[j]``; children
    ``left[j]`` / ``right[j]``: a node index if >= 0, else ``~leaf`` into ``leaf_value``. Tree
    ``t`` starts at ``roots[t]`` (``~leaf`` for a one-leaf tree) and adds to bit
    ``tree_bit[t]``; ``constant[b]`` is the score of a bit without trees (NaN where it has)."""

    feature: np.ndarray
    threshold: np.ndarray
    missing: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf_value: np.ndarray
    roots: np.ndarray
    tree_bit: np.ndarray
    constant: np.ndarray

    @classmethod
    def from_models(cls, models: list[Any]) -> Forest:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (
            "feature", "threshold", "missing", "default_left", "left", "right", "leaf_value")}
        roots: list[int] = []
        tree_bit: list[int] = []
        constant = np.full(len(models), np.nan)
        n_nodes = n_leaves = 0
        for bit, model in enumerate(models):
            if isinstance(model, float):
                constant[bit] = model
                continue
            iteration = getattr(model, "best_iteration", 0) or None
            for tree in _trees(model.model_to_string(num_iteration=iteration)):
                leaves = np.array(tree["leaf_value"].split(), dtype=np.float64)
                if int(tree["num_leaves"]) == 1:
                    roots.append(~n_leaves)
                else:
                    if int(tree.get("num_cat", "0")) or int(tree.get("is_linear", "0")):
                        raise ValueError("compiled trees support numerical splits only")
                    dtype = np.array(tree["decision_type"].split(), dtype=np.int64)
                    if np.any(dtype & 1):
                        raise ValueError("compiled trees support numerical splits only")

                    parts["feature"].append(np.array(tree["split_feature"].split(), dtype=np.int64))
                    parts["threshold"].append(np.array(tree["threshold"].split(), dtype=np.float64))
                    parts["missing"].append((dtype >> 2) & 3)
                    parts["default_left"].append((dtype & 2) > 0)
                    parts["left"].append(_shift(tree["left_child"], n_nodes, n_leaves))
                    parts["right"].append(_shift(tree["right_child"], n_nodes, n_leaves))
                    roots.append(n_nodes)
                    n_nodes += len(dtype)
                parts["leaf_value"].append(leaves)
                tree_bit.append(bit)
                n_leaves += len(leaves)
        empty = {"feature": np.int64, "threshold": np.float64, "missing": np.int64,
                 "default_left": np.bool_, "left": np.int64, "right": np.int64,
                 "leaf_value": np.float64}
        arrays = {k: (np.concatenate(v).astype(empty[k]) if v else np.empty(0, empty[k]))
                  for k, v in parts.items()}
        return cls(**arrays, roots=np.array(roots, dtype=np.int64),
                   tree_bit=np.array(tree_bit, dtype=np.int64), constant=constant)

    def scores(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """Raw scores ``(n, bits)``: per bit, the sum of its trees' leaves (LightGBM's
        ``raw_score``), or its constant."""
        import numba

        x = np.ascontiguousarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        out = np.zeros((len(x), len(self.constant)), dtype=np.float64)
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            _forest_scores(x, self.roots, self.tree_bit, self.feature, self.threshold,
                           self.missing, self.default_left, self.left, self.right,
                           self.leaf_value, _ZERO, out)
        finally:
            numba.set_num_threads(previous)
        fixed = ~np.isnan(self.constant)
        out[:, fixed] = self.constant[fixed]
        return out


def _shift(children: str, n_nodes: int, n_leaves: int) -> np.ndarray:
    """A tree's child indices in the flat arrays: nodes after ``n_nodes``, leaves (``~leaf``)
    after ``n_leaves``."""
    c = np.array(children.split(), dtype=np.int64)
    return np.where(c >= 0, c + n_nodes, ~(~c + n_leaves))


def _trees(text: str) -> list[dict[str, str]]:
    """The ``key=value`` fields of every ``Tree=`` block of a LightGBM model text."""
    trees: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
        elif line.startswith("end of trees"):
            break
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return trees


@njit(cache=True, nogil=True, parallel=True)
def _forest_scores(x, roots, tree_bit, feature, threshold, missing, default_left, left, right,
                   leaf_value, zero, out):
    for i in prange(x.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while node >= 0:
                value = np.float64(x[i, feature[node]])
                kind = missing[node]
                if np.isnan(value) and kind != 2:
                    value = 0.0
                if (kind == 1 and -zero <= value <= zero) or (kind == 2 and np.isnan(value)):
                    node = left[node] if default_left[node] else right[node]
                elif value <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            out[i, tree_bit[t]] += leaf_value[~node]
