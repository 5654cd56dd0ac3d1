"""Conformance checks for a hashing method: what every registered method must satisfy.

Plugin authors run them on their own class, from the shell or from Python::

    hashbench check mymethod            # every check, one line each; exit 1 on a failure
    from hashbench.conformance import check_method
    check_method(MyHasher)              # raises ConformanceError listing every failed check

The test suite (``tests/test_conformance.py``) runs every check over every registered
method. Every check raises a real exception (:class:`~hashbench.errors.ConformanceError`, or
:class:`~hashbench.errors.CodeContractError` for bad codes), never an ``assert`` statement,
so ``python -O`` cannot switch them off. Checks use small samples of the bundled digits
data, so they need no download: 64-d ``features``, 8x8 ``image`` arrays, and for methods
that take ``text`` a two-view stand-in (image side: the left half of each digit, ``text``:
the right half). A method may shrink its own cost for these checks with a class attribute
``conformance_params`` (e.g. fewer epochs); bits default to 8.

``EXPECTED_FAILURES`` lists (method, check) pairs that are documented exceptions, with the
reason; :func:`run_checks` reports them as expected instead of failed, and reports a listed
check that passes as a failure (the table must be kept true).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from hashbench.api import (
    AsymmetricHasher,
    Hasher,
    RunContext,
    TrialData,
    check_codes,
    trial_data,
    validate_meta,
)
from hashbench.errors import CodeContractError, ConformanceError, HashbenchError, NotFittedError

EXPECTED_FAILURES: dict[tuple[str, str], str] = {}
"""(method id, check name) -> why the method is allowed to fail that check."""


@cache
def _digits() -> tuple[dict[str, np.ndarray], np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = (bunch.data / 16.0).astype(np.float32)
    images = pixels.reshape(-1, 1, 8, 8)
    labels = np.eye(10, dtype=np.uint8)[bunch.target]
    return {"features": pixels, "image": images}, labels


def modalities_for(method: Hasher) -> dict[str, np.ndarray]:
    """The conformance sample's data in every modality ``method`` takes."""
    data, _ = _digits()
    mods = method.modalities
    if "text" not in mods:
        return {m: data[m] for m in mods}
    images = data["image"]
    left = images[:, :, :, :4].reshape(len(images), -1)
    right = images[:, :, :, 4:].reshape(len(images), -1)
    out = {"text": np.ascontiguousarray(right)}
    for m in mods:
        if m == "features":
            out[m] = np.ascontiguousarray(left)
        elif m == "image":
            out[m] = np.ascontiguousarray(images[:, :, :, :4])
    return out


def sample_for(method: Hasher, full: bool = False, n_train: int = 200, n_database: int = 300,
               n_query: int = 40) -> TrialData:
    """A :class:`TrialData` with queries: ``full`` (the training set is the database) or
    sampled (``n_train`` training rows, a separate database of ``n_database`` rows)."""
    _, labels = _digits()
    order = np.random.default_rng(12345).permutation(len(labels))
    if full:
        train = database = order[:n_train]
        query = order[n_train:n_train + n_query]
    else:
        train = order[:n_train // 2]
        database = order[n_train // 2:n_train // 2 + n_database]
        query = order[n_train // 2 + n_database:n_train // 2 + n_database + n_query]
    return trial_data(modalities_for(method), labels, train, database, query,
                      train_mode="full" if full else "sampled")


def make(cls: type[Hasher], bits: int = 8) -> Hasher:
    params = dict(getattr(cls, "conformance_params", {}))
    params["bits"] = bits
    return cls(**params)


def _fail(cls: type[Hasher], text: str) -> ConformanceError:
    name = getattr(getattr(cls, "meta", None), "name", cls.__qualname__)
    return ConformanceError(f"{name}: {text}")


def _fit(cls: type[Hasher], method: Hasher, data: TrialData, seed: int = 0) -> Hasher:
    try:
        fitted = method.fit(data.for_fit(), RunContext(seed=seed))
    except NotFittedError as exc:
        raise _fail(cls, f"fit() raised NotFittedError ({exc}): a method must not encode before "
                         "its own fit has set its state") from exc
    if fitted is not method:
        raise _fail(cls, "fit() must return self")
    return method


def _query_codes(cls: type[Hasher], method: Hasher, data: TrialData, modality: str,
                 rows: slice = slice(None)) -> np.ndarray:
    if data.query is None:
        raise ValueError("the conformance sample has no queries")
    inputs = data.query[modality][rows]
    n = len(inputs)
    try:
        codes = method.encode_as(inputs, modality)
    except AttributeError as exc:
        raise _fail(cls, f"encode() raised AttributeError ({exc}); a fitted method must encode "
                         "(and an unfitted one raise NotFittedError through _check_fitted)") from exc
    return check_codes(codes, n, method.bits, cls.meta.name, f"{modality} query codes")


def check_meta(cls: type[Hasher]) -> None:
    """meta is complete and consistent (the registration checks); ``bits`` is a
    hyper-parameter."""
    try:
        validate_meta(cls)
    except HashbenchError as exc:
        raise ConformanceError(str(exc)) from exc


def check_not_fitted(cls: type[Hasher]) -> None:
    """encode and encode_database before fit raise NotFittedError."""
    method = make(cls)
    data = sample_for(method)
    modality = method.modalities[0]
    for what, call in (("encode()", lambda: method.encode_as(data.query[modality], modality)),
                       ("encode_database()", lambda: method.encode_database(data, modality))):
        try:
            call()
        except NotFittedError:
            continue
        except Exception as exc:  # noqa: BLE001 - reported as the breach it is
            raise _fail(cls, f"{what} before fit() must raise NotFittedError "
                             f"(use self._check_fitted), got {type(exc).__name__}: {exc}") from exc
        raise _fail(cls, f"{what} before fit() must raise NotFittedError (use self._check_fitted)")


def check_codes_contract(cls: type[Hasher], bits: int = 8) -> None:
    """fit returns self; encode gives an int8 (n, bits) array in {-1, +1} in every modality,
    row-independent; encode_database gives one row per database item."""
    method = make(cls, bits)
    data = sample_for(method)
    _fit(cls, method, data)
    for modality in method.modalities:
        codes = _query_codes(cls, method, data, modality)
        head = _query_codes(cls, method, data, modality, slice(0, 5))
        if not np.array_equal(head, codes[:5]):
            raise _fail(cls, f"encoding 5 {modality} rows differs from encoding them inside a batch")
        check_codes(method.encode_database(data, modality), len(data.database), bits,
                    cls.meta.name, f"{modality} database codes")


def check_deterministic(cls: type[Hasher]) -> None:
    """Two fits with the same seed give identical query and database codes."""
    runs = []
    for _ in range(2):
        method = make(cls)
        data = sample_for(method)
        _fit(cls, method, data, seed=7)
        modality = method.modalities[0]
        runs.append((method.encode_as(data.query[modality], modality),
                     method.encode_database(data, modality)))
    if not (np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])):
        raise _fail(cls, "two fits with seed 7 gave different codes: draw every random number from "
                         "ctx.rng (and seed torch from ctx.seed), never from global or unseeded generators")


def check_database(cls: type[Hasher], bits: int = 8) -> None:
    """Trained on the full database, encode_database gives one row per database item; for an
    AsymmetricHasher those are its learned database_codes()."""
    method = make(cls, bits)
    data = sample_for(method, full=True)
    _fit(cls, method, data)
    for modality in method.modalities:
        codes = check_codes(method.encode_database(data, modality), len(data.database), bits,
                            cls.meta.name, f"{modality} database codes (full mode)")
        if isinstance(method, AsymmetricHasher):
            learned = check_codes(method.database_codes(), len(data.database), bits, cls.meta.name,
                                  "database_codes() (full mode)")
            if not np.array_equal(codes, learned):
                raise _fail(cls, "in the full mode encode_database() must return the learned "
                                 "database_codes()")


CHECKS: dict[str, Callable[[type[Hasher]], None]] = {
    "meta": check_meta,
    "not_fitted": check_not_fitted,
    "codes_contract": check_codes_contract,
    "deterministic": check_deterministic,
    "database": check_database,
}


@dataclass
class CheckResult:
    check: str
    status: str  # "passed", "FAILED", "expected failure", "skipped"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "expected failure", "skipped")


def run_checks(cls: type[Hasher]) -> list[CheckResult]:
    """Every check on ``cls``, each to the end: one result per check (nothing stops early)."""
    name = getattr(getattr(cls, "meta", None), "name", "")
    results = []
    for check, function in CHECKS.items():
        if check != "meta" and results and results[0].check == "meta" and not results[0].ok:
            results.append(CheckResult(check, "skipped", "metadata is invalid"))
            continue
        expected = EXPECTED_FAILURES.get((name, check))
        try:
            function(cls)
        except (ConformanceError, CodeContractError, NotFittedError) as exc:
            status = "expected failure" if expected else "FAILED"
            results.append(CheckResult(check, status, f"{exc}" + (f" ({expected})" if expected else "")))
            continue
        except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported as such
            results.append(CheckResult(check, "FAILED", f"{name}: raised {type(exc).__name__}: {exc}"))
            continue
        if expected:
            results.append(CheckResult(check, "FAILED", f"{name}: listed in EXPECTED_FAILURES "
                                                        f"({expected}) but passed; update the table"))
        else:
            results.append(CheckResult(check, "passed"))
    return results


def check_method(cls: type[Hasher]) -> list[CheckResult]:
    """Run every conformance check on ``cls``; raise :class:`ConformanceError` listing every
    failed check (after running all of them)."""
    results = run_checks(cls)
    failed = [r for r in results if not r.ok]
    if failed:
        raise ConformanceError(f"{len(failed)} of {len(results)} conformance checks failed: "
                               + "; ".join(f"[{r.check}] {r.message}" for r in failed))
    return results


def render(cls: type[Hasher] | Any, results: list[CheckResult]) -> str:
    """One line per check, for ``hashbench check``."""
    width = max(len(r.check) for r in results)
    lines = [f"conformance of {getattr(cls.meta, 'name', cls)} ({cls.__module__}.{cls.__qualname__}):"]
    for r in results:
        lines.append(f"  {r.check:<{width}}  {r.status}" + (f": {r.message}" if r.message else ""))
    n_failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - n_failed} of {len(results)} checks ok" if n_failed == 0
                 else f"{n_failed} of {len(results)} checks FAILED")
    return "\n".join(lines)
