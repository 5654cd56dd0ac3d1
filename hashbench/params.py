"""Hyper-parameter checks, done once per grid before any trial starts.

A method's hyper-parameters are its ``__init__`` keyword arguments; their types come from the
defaults (``50`` is an integer, ``0.5`` a number, ``"trees"`` a string, ``True`` a flag;
``None`` accepts any value, it means "chosen by the method") and their ranges from the class
attribute ``param_rules`` (declared once, next to the defaults)::

    param_rules = {"n_iter": ">=0", "sigma": ">0", "beta": "(0,1)", "extension": ("trees", "linear")}

Rules: ``">0"``, ``">=0"``, ``">=1"``, ``"(0,1)"``, ``"(0,1]"``, or a tuple of allowed values.
Deep methods derive theirs from ``positive_fields`` / ``non_negative_fields``. ``bits`` is set
with ``--bits`` only. Every breach is a one-line :class:`~hashbench.errors.ConfigError` naming
the method, the parameter and the value (``hashbench run`` exits 2 before recording anything).
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any

from hashbench.errors import ConfigError

MAX_BITS = 32767  # the evaluator's limit (16-bit distance counters)
RANGES = {
    ">0": (lambda v: v > 0, "positive"),
    ">=0": (lambda v: v >= 0, ">= 0"),
    ">=1": (lambda v: v >= 1, ">= 1"),
    "(0,1)": (lambda v: 0 < v < 1, "in (0, 1)"),
    "(0,1]": (lambda v: 0 < v <= 1, "in (0, 1]"),
}


def _kind(default: Any) -> str | None:
    if default is None or default is inspect.Parameter.empty:
        return None
    if isinstance(default, bool):
        return "flag"
    if isinstance(default, numbers.Integral):
        return "integer"
    if isinstance(default, numbers.Real):
        return "number"
    if isinstance(default, str):
        return "string"
    return None


def _matches(kind: str, value: Any) -> bool:
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, str)


def rules_of(cls: type) -> dict[str, Any]:
    """The declared range rules of a method class (``param_rules``, plus a deep method's
    ``positive_fields`` / ``non_negative_fields``)."""
    rules: dict[str, Any] = {}
    for name in getattr(cls, "non_negative_fields", ()):
        rules[name] = ">=0"
    for name in getattr(cls, "positive_fields", ()):
        rules[name] = ">0"
    rules.update(getattr(cls, "param_rules", {}))
    return rules


def defaults_of(cls: type) -> dict[str, Any]:
    """The keyword defaults of ``cls.__init__`` (its hyper-parameters' registered values)."""
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if k != "self" and p.default is not inspect.Parameter.empty}


def check_names(cls: type, params: dict[str, Any]) -> None:
    """Every key of ``params`` is a hyper-parameter of ``cls``, else a one-line ConfigError with
    a "did you mean"."""
    known = cls.param_names()
    unknown = sorted(set(params) - set(known))
    if unknown:
        from hashbench.registry import suggest

        raise ConfigError(
            f"method {cls.meta.name!r} has no parameter {unknown[0]!r}"
            f"{suggest(unknown[0], known)} (parameters: {', '.join(known)})"
        )


def check_params(cls: type, params: dict[str, Any], bits: int | None = None) -> None:
    """Check ``params`` (``--param`` overrides of ``cls``) and ``bits`` against the method's
    declared types and ranges; raise a one-line ConfigError on the first breach."""
    name = cls.meta.name
    if "bits" in params:
        raise ConfigError(f"{name}.bits is set with --bits, not --param")
    if bits is not None and not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"--bits {bits}: code lengths must be between 1 and {MAX_BITS}")
    defaults = defaults_of(cls)
    rules = rules_of(cls)
    for key, value in params.items():
        if value is None:
            continue  # None: the method chooses (documented per method)
        kind = _kind(defaults.get(key))
        if kind and not _matches(kind, value):
            raise ConfigError(f"{name}.{key}: expected {'an' if kind == 'integer' else 'a'} {kind}, "
                              f"got {value!r}")
        rule = rules.get(key)
        if rule is None:
            continue
        if isinstance(rule, tuple):
            if value not in rule:
                from hashbench.registry import suggest

                raise ConfigError(f"{name}.{key}: {value!r} is not one of {', '.join(map(repr, rule))}"
                                  f"{suggest(str(value), [str(r) for r in rule])}")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            test, words = RANGES[rule]
            if not test(value):
                raise ConfigError(f"{name}.{key} must be {words}, got {value!r}")
