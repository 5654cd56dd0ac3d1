"""Conformance checks for a hashing method: what every registered method must satisfy.

Plugin authors can run them on their own class::

    from hashbench.conformance import check_method
    check_method(MyHasher)          # raises AssertionError / CodeContractError on a breach

The test suite (``tests/test_conformance.py``) runs every check over every registered
method. Checks use a small sample of the bundled digits data (64-d features, 8x8 images),
so they need no download. A method may shrink its own cost for these checks with a class
attribute ``conformance_params`` (e.g. fewer epochs); bits default to 8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashbench.api import AsymmetricHasher, Hasher, RunContext, TrainingData, check_codes
from hashbench.errors import NotFittedError


@dataclass
class Sample:
    """Training and query inputs for a method's input kind."""

    train: TrainingData
    queries: Any


def sample_for(cls: type[Hasher] | Hasher, n_train: int = 200, n_query: int = 40,
               is_database: bool = False) -> Sample:
    from hashbench.datasets import load

    data = load("digits")
    rng = np.random.default_rng(12345)
    order = rng.permutation(len(data))
    train_idx, query_idx = order[:n_train], order[n_train:n_train + n_query]
    kind = cls.input_kind if isinstance(cls, Hasher) else make(cls).input_kind
    inputs = data.inputs(kind)
    return Sample(
        TrainingData(inputs=inputs[train_idx], labels=data.labels[train_idx],
                     indices=train_idx, is_database=is_database),
        inputs[query_idx],
    )


def make(cls: type[Hasher], bits: int = 8) -> Hasher:
    params = dict(getattr(cls, "conformance_params", {}))
    params["bits"] = bits
    return cls(**params)


def check_meta(cls: type[Hasher]) -> None:
    """meta is complete and consistent; ``bits`` is a hyper-parameter."""
    m = cls.meta
    assert m.name == m.name.lower() and m.name.strip() and " " not in m.name, (
        f"{cls.__qualname__}: meta.name must be a lower-case id without spaces, got {m.name!r}"
    )
    assert m.title and m.citation, f"{m.name}: meta.title and meta.citation are required"
    assert m.family in ("shallow", "deep", "data-independent"), f"{m.name}: bad family {m.family!r}"
    assert m.input in ("features", "images"), f"{m.name}: bad input {m.input!r}"
    assert "bits" in cls.param_names(), f"{m.name}: __init__ must take bits"
    assert m.asymmetric == issubclass(cls, AsymmetricHasher), (
        f"{m.name}: meta.asymmetric must be True exactly for AsymmetricHasher subclasses"
    )
    assert m.asymmetric or not m.learns_database, f"{m.name}: learns_database needs asymmetric"


def check_not_fitted(cls: type[Hasher]) -> None:
    """encode (and database_codes) before fit raise NotFittedError."""
    method = make(cls)
    sample = sample_for(cls)
    try:
        method.encode(sample.queries)
    except NotFittedError:
        pass
    else:
        raise AssertionError(f"{cls.meta.name}: encode() before fit() must raise NotFittedError")
    if isinstance(method, AsymmetricHasher):
        try:
            method.database_codes()
        except NotFittedError:
            pass
        else:
            raise AssertionError(
                f"{cls.meta.name}: database_codes() before fit() must raise NotFittedError"
            )


def check_codes_contract(cls: type[Hasher], bits: int = 8) -> None:
    """fit returns self; encode gives an int8 (n, bits) array in {-1, +1}, row-independent."""
    method = make(cls, bits)
    sample = sample_for(cls)
    fitted = method.fit(sample.train, RunContext(seed=0))
    assert fitted is method, f"{cls.meta.name}: fit() must return self"
    n = len(sample.queries)
    codes = check_codes(method.encode(sample.queries), n, bits, cls.meta.name, "query codes")
    head = check_codes(method.encode(sample.queries[:5]), 5, bits, cls.meta.name, "query codes")
    assert np.array_equal(head, codes[:5]), (
        f"{cls.meta.name}: encoding 5 rows differs from encoding them inside a batch"
    )


def check_deterministic(cls: type[Hasher]) -> None:
    """Two fits with the same seed give identical codes."""
    sample = sample_for(cls)
    runs = []
    for _ in range(2):
        method = make(cls).fit(sample.train, RunContext(seed=7))
        runs.append(method.encode(sample.queries))
    assert np.array_equal(runs[0], runs[1]), (
        f"{cls.meta.name}: two fits with seed 7 gave different codes"
    )


def check_asymmetric(cls: type[Hasher], bits: int = 8) -> None:
    """database_codes() rows align with the training set when it is the database."""
    method = make(cls, bits)
    if not isinstance(method, AsymmetricHasher):
        return
    sample = sample_for(cls, is_database=True)
    method.fit(sample.train, RunContext(seed=0))
    check_codes(method.database_codes(), len(sample.train), bits, cls.meta.name,
                "database_codes()")
    if cls.meta.learns_database:
        # trained on a sampled set with a separate database: one row per database item
        method = make(cls, bits)
        sample = sample_for(cls, n_train=100)
        database = sample_for(cls, n_train=300, n_query=0)
        sample.train.database_inputs = database.train.inputs
        sample.train.database_labels = database.train.labels
        sample.train.database_indices = database.train.indices
        method.fit(sample.train, RunContext(seed=0))
        check_codes(method.database_codes(), 300, bits, cls.meta.name,
                    "database_codes() with a separate database")


CHECKS: dict[str, Callable[[type[Hasher]], None]] = {
    "meta": check_meta,
    "not_fitted": check_not_fitted,
    "codes_contract": check_codes_contract,
    "deterministic": check_deterministic,
    "asymmetric": check_asymmetric,
}


def check_method(cls: type[Hasher]) -> None:
    """Run every conformance check on ``cls``."""
    for check in CHECKS.values():
        check(cls)
