"""Helpers for testing hashing methods (ours and plugins') on the bundled digits data."""

from __future__ import annotations

from hashbench.api import Hasher, RunContext
from hashbench.datasets import load
from hashbench.evaluation import Conventions, evaluate
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
