"""The evaluator's entry point: :func:`evaluate`.

CONTRACT
--------
``evaluate(query_codes, database_codes, query_labels, database_labels, conventions, *,
chunk_size=None, n_jobs=1, map_only=False) -> EvaluationResult``

- Codes: (n, bits) arrays (numpy, or torch tensors on any device) with values in {-1, +1}.
- Labels: multi-hot (n, L) 0/1 rows, or 1-D class indices (see :func:`to_multihot`).
- Relevant: the query and the item share at least one label.
- Ranking: Hamming distance, ties broken by database index (stable order).

Scalar metrics (``EvaluationResult.metrics``), query averages unless stated:

=============================  =============================================================
``map``                        MAP over the whole database, or MAP@K when
                               ``conventions.map_topk = K`` (then also ``map@K``)
``map@K``                      MAP@K when ``map_topk = K`` (same value as ``map``), and for
                               each K of ``conventions.map_ks``
``p@K``                        precision at K for each K in ``conventions.precision_ks``
                               (relevant in the top K / K, K capped at n_database)
``p_r<r>``, ``r_r<r>``         precision / recall within Hamming radius r (empty ball: 0)
``tie_aware_map``              expected AP over random orderings within ties (whole database)
``map_best``, ``map_worst``    AP with relevant items first / last within ties (whole database)
``n_queries_zero_relevant``    queries without any relevant database item (a count)
``distinct_db_codes``          distinct database codes (a count), and
``distinct_db_codes_fraction`` that count / n_database
``bit_balance_min``/``_mean``  per bit ``2 min(frac +1, frac -1)`` over the database codes
``tie_fraction``               mean over queries of the fraction of database items whose
                               distance to the query is shared by at least one other item
=============================  =============================================================

Tie-aware, best and worst MAP are always whole-database numbers, also when ``map_topk`` is
set (the expectation of MAP@K with a random cut inside a tie group has no simple closed form).

Curves (``EvaluationResult.curves``, pandas DataFrames, query averages):
``precision_at_k`` (columns k, precision, recall; k on :func:`~.metrics.curve_ks` up to
``min(curve_max_k, n_database)``) and ``pr_curve`` (columns radius, precision, recall for radius
0..bits; a query whose ball is empty counts precision 0 at that radius).

Flags (``EvaluationResult.flags``), empty when healthy: ``collapsed`` when the database has
fewer than ``min(max(4, n_classes // 2 + 1), n_database)`` distinct codes, ``constant_bits``
when a bit never changes over the database (see :mod:`~.stats`), ``no_relevant`` when no query
has a relevant item.

With ``drop_zero_relevant`` the queries without relevant items leave every query average;
if that leaves no query, the averages are NaN. ``tie_fraction`` is a statistic of the codes and
always averages over all queries.

Queries that repeat both code and labels (common with short trained codes) are ranked once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hashbench.errors import DataError
from hashbench.evaluation import metrics as M
from hashbench.evaluation.conventions import Conventions
from hashbench.evaluation.inputs import as_codes, as_label_pair
from hashbench.evaluation.ranking import Codes, Labels, TorchDistances, rank_statistics
from hashbench.evaluation.stats import code_statistics


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: scalar metrics by name (see the module docstring).
        curves: ``"precision_at_k"`` and ``"pr_curve"`` DataFrames (empty dict with ``map_only``).
        flags: health warnings by name, e.g. ``{"collapsed": "database has 3 distinct codes ..."}``.
        per_query: per-query arrays (``"ap"``: the AP behind ``map``, ``"n_relevant"``, and with
            the full metric set ``"tie_aware_ap"``); not logged, for analysis and tests.
        seconds: wall-clock seconds the evaluation took.
    """

    metrics: dict[str, float]
    curves: dict[str, pd.DataFrame]
    flags: dict[str, str]
    per_query: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def _is_cuda_tensor(x: Any) -> bool:
    device = getattr(x, "device", None)
    return type(x).__module__.startswith("torch") and getattr(device, "type", "") == "cuda"


def evaluate(query_codes: Any, database_codes: Any, query_labels: Any, database_labels: Any,
             conventions: Conventions = Conventions(), *, chunk_size: int | None = None,
             n_jobs: int = 1, map_only: bool = False) -> EvaluationResult:
    """Score a Hamming ranking of the database for every query.

    Args:
        query_codes, database_codes: (n, bits) codes in {-1, +1}.
        query_labels, database_labels: multi-hot rows or class indices.
        conventions: the declared evaluation conventions.
        chunk_size: queries per chunk (a unit of work for a thread; on CUDA, the distance rows
            copied from the device at once: default about 32 MiB).
        n_jobs: worker threads over query chunks.
        map_only: compute only ``map`` (and ``map@K``) and ``n_queries_zero_relevant``.

    Raises:
        DataError: codes or labels that are malformed or whose shapes do not match.
    """
    t0 = time.perf_counter()
    cuda = _is_cuda_tensor(query_codes) and _is_cuda_tensor(database_codes)
    q_codes = as_codes(query_codes, "query codes")
    db_codes = as_codes(database_codes, "database codes")
    if q_codes.shape[1] != db_codes.shape[1]:
        raise DataError(f"query codes have {q_codes.shape[1]} bits but database codes have "
                        f"{db_codes.shape[1]}")
    q_labels, db_labels = as_label_pair(query_labels, database_labels)
    for what, codes, labels in (("query", q_codes, q_labels), ("database", db_codes, db_labels)):
        if codes.shape[0] != labels.shape[0]:
            raise DataError(f"{what} codes have {codes.shape[0]} rows but {what} labels have "
                            f"{labels.shape[0]}")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise DataError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    n_queries, bits = q_codes.shape
    if bits > 32767:
        raise DataError(f"codes have {bits} bits; the evaluator supports at most 32767")
    n_database = db_codes.shape[0]
    c = conventions
    map_k = n_database if c.map_topk is None else min(c.map_topk, n_database)
    grid = M.curve_ks(min(c.curve_max_k, n_database))
    scalar_ks = [min(k, n_database) for k in c.precision_ks]
    ks = [] if map_only else sorted(set(grid.tolist()) | set(scalar_ks))

    # Queries with the same code and the same labels have the same ranking: rank each once.
    first, inverse = _distinct_queries(q_codes, q_labels)
    if cuda:
        import torch

        rows = torch.as_tensor(first, device=query_codes.device)
        codes: Codes | TorchDistances = TorchDistances(query_codes[rows], database_codes)
    else:
        codes = Codes(q_codes[first], db_codes)
    stats = rank_statistics(codes, Labels(q_labels[first], db_labels), len(first), n_database,
                            ks=ks, map_k=map_k, want_hist=not map_only,
                            chunk_size=chunk_size, n_jobs=n_jobs).take(inverse)

    zero = stats.n_relevant == 0
    keep = ~zero if c.drop_zero_relevant else np.ones(n_queries, bool)

    def mean(values: np.ndarray) -> float:
        v = values[keep]
        return float(np.mean(v, axis=0)) if v.shape[0] else float("nan")

    if c.map_topk is None:
        ap = M.average_precision(stats.precision_sum, stats.n_relevant)
    else:
        ap = M.average_precision_at_k(stats.precision_sum, stats.found_at_map_k, stats.n_relevant,
                                      map_k, c.mapk_normalisation)
    metrics: dict[str, float] = {"map": mean(ap)}
    if c.map_topk is not None:
        metrics[c.map_name] = metrics["map"]
    for k in c.map_ks:  # each further MAP@K: one more ranking pass that keeps only the top-K sums
        k_eff = min(k, n_database)
        extra = rank_statistics(codes, Labels(q_labels[first], db_labels), len(first), n_database,
                                ks=[], map_k=k_eff, want_hist=False, chunk_size=chunk_size,
                                n_jobs=n_jobs).take(inverse)
        metrics[f"map@{k}"] = mean(M.average_precision_at_k(
            extra.precision_sum, extra.found_at_map_k, extra.n_relevant, k_eff, c.mapk_normalisation))
    metrics["n_queries_zero_relevant"] = float(np.count_nonzero(zero))
    per_query = {"ap": ap, "n_relevant": stats.n_relevant}
    flags: dict[str, str] = {}
    if zero.all():
        flags["no_relevant"] = f"none of the {n_queries} queries has a relevant database item"
    curves: dict[str, pd.DataFrame] = {}

    if not map_only:
        assert stats.hist_total is not None and stats.hist_rel is not None
        ks_arr = np.asarray(ks)
        precision, recall = M.precision_recall_at_k(stats.found, ks_arr, stats.n_relevant, n_database)
        for k, k_eff in zip(c.precision_ks, scalar_ks, strict=True):
            metrics[f"p@{k}"] = mean(precision[:, int(np.searchsorted(ks_arr, k_eff))])
        p_r, r_r = M.radius_precision_recall(stats.hist_total, stats.hist_rel, c.radius)
        p_name, r_name = c.radius_names
        metrics[p_name], metrics[r_name] = mean(p_r), mean(r_r)
        tie_ap = M.tie_aware_average_precision(stats.hist_total, stats.hist_rel)
        metrics["tie_aware_map"] = mean(tie_ap)
        metrics["map_best"] = mean(M.best_case_average_precision(stats.hist_total, stats.hist_rel))
        metrics["map_worst"] = mean(M.worst_case_average_precision(stats.hist_total, stats.hist_rel))
        metrics["tie_fraction"] = float(np.mean(M.tie_fraction(stats.hist_total)))
        per_query["tie_aware_ap"] = tie_ap
        code_metrics, code_flags = code_statistics(db_codes, db_labels.shape[1])
        metrics.update(code_metrics)
        flags.update(code_flags)

        in_grid = np.searchsorted(ks_arr, grid)
        curves["precision_at_k"] = pd.DataFrame({
            "k": grid, "precision": _column_means(precision[:, in_grid], keep),
            "recall": _column_means(recall[:, in_grid], keep)})
        radii = np.arange(bits + 1)
        pr_p, pr_r = M.radius_precision_recall(stats.hist_total, stats.hist_rel, radii)
        curves["pr_curve"] = pd.DataFrame({"radius": radii, "precision": _column_means(pr_p, keep),
                                           "recall": _column_means(pr_r, keep)})

    return EvaluationResult(metrics=metrics, curves=curves, flags=flags, per_query=per_query,
                            seconds=time.perf_counter() - t0)


def _distinct_queries(codes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first query of each distinct (code, labels) pair, and the map back."""
    rows = np.concatenate([np.packbits(codes > 0, axis=1), np.packbits(labels > 0, axis=1)], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # rank the distinct queries in their original order
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(order.size)
    return first[order], rank_of[inverse.ravel()]


def _column_means(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    v = values[keep]
    return v.mean(axis=0) if v.shape[0] else np.full(values.shape[1], np.nan)
