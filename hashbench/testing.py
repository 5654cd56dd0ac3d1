"""Helpers for testing hashing methods (ours and plugins') on the bundled digits data."""

from __future__ import annotations

import numpy as np

from hashbench.api import Hasher, RunContext, TrainingData
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
    method.fit(TrainingData(data.features[train], data.labels[train], train), ctx or RunContext(seed=0))
    return evaluate(method.encode(data.features[queries]), method.encode(data.features[database]),
                    data.labels[queries], data.labels[database])
