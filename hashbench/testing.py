"""Helpers for testing hashing methods (ours and plugins') on the bundled digits data."""

from __future__ import annotations

from typing import Any

import numpy as np

from hashbench.api import Hasher, RunContext, TrialData, trial_data
from hashbench.datasets import load
from hashbench.evaluation import Conventions, EvaluationResult, evaluate
from hashbench.protocol import get_protocol, materialise
from hashbench.runner import fit_and_encode


def digits_map(method: Hasher, seed: int = 0, mode: str = "sampled") -> float:
    """MAP of ``method`` under the ``digits`` protocol (training mode ``mode``), exactly as
    ``hashbench run`` computes it, without touching any MLflow store."""
    data = load("digits")
    split = materialise(get_protocol("digits").with_train_mode(mode), data.labels)
    query, database, _ = fit_and_encode(method, data, split, RunContext(seed=seed))
    result = evaluate(query, database, data.labels[split.query], data.labels[split.database],
                      Conventions(), map_only=True)
    return result.metrics["map"]


def digits_holdout(method: Hasher, split_seed: int, ctx: RunContext | None = None) -> EvaluationResult:
    """Fit ``method`` on 500 random digits and evaluate 100 held-out queries against the
    other 1,197 (encoded with the method); a quick learning check without a protocol."""
    data = load("digits")
    idx = np.random.default_rng(split_seed).permutation(len(data))
    train, queries, database = idx[:500], idx[500:600], idx[600:]
    view = trial_data({"features": data.features}, data.labels, train, database)
    method.fit(view, ctx or RunContext(seed=0))
    return evaluate(method.encode(data.features[queries]), method.encode_database(view),
                    data.labels[queries], data.labels[database])


def training_view(inputs: Any, labels: np.ndarray, database: tuple[Any, np.ndarray] | None = None,
                  modality: str = "features") -> TrialData:
    """A :class:`~hashbench.api.TrialData` for fitting on arrays (tests, notebooks).

    Without ``database`` the training set is the database (the protocol's full mode, rows
    0..n-1). With ``database=(inputs, labels)`` the database is a separate set of rows (the
    sampled mode: training rows 0..n-1, database rows n..n+m-1 of the stacked arrays)."""
    labels = np.asarray(labels)
    n = len(labels)
    if database is None:
        rows = np.arange(n)
        return trial_data({modality: inputs}, labels, rows, rows, train_mode="full")
    db_inputs, db_labels = database
    stacked = np.concatenate([np.asarray(inputs), np.asarray(db_inputs)])
    all_labels = np.concatenate([labels, np.asarray(db_labels)])
    return trial_data({modality: stacked}, all_labels, np.arange(n), np.arange(n, len(all_labels)))
