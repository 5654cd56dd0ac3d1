"""The conformance suite: every registered method, and fake plugins that break each rule."""

from __future__ import annotations

import numpy as np
import pytest

from hashbench import conformance, registry
from hashbench.api import AsymmetricHasher, Hasher, MethodMeta, binarize
from hashbench.errors import CodeContractError


@pytest.mark.parametrize("check", sorted(conformance.CHECKS))
@pytest.mark.parametrize("name", sorted(registry.available()))
def test_registered_method_conforms(name, check):
    conformance.CHECKS[check](registry.get(name))


def _meta(name, **kw):
    return MethodMeta(name=name, title=name.upper(), citation="fake", family="shallow", **kw)


class GoodFake(Hasher):
    meta = _meta("goodfake")

    def __init__(self, bits=32):
        self.bits = bits

    def fit(self, data, ctx):
        x = np.asarray(data.inputs, np.float64)
        self.w_ = ctx.rng.standard_normal((x.shape[1], self.bits))
        self.mu_ = x.mean(0)
        return self

    def encode(self, inputs):
        self._check_fitted("w_")
        return binarize((np.asarray(inputs) - self.mu_) @ self.w_)


class WrongShape(GoodFake):
    meta = _meta("wrongshape")

    def encode(self, inputs):
        return super().encode(inputs)[:, :-1]


class WrongDtype(GoodFake):
    meta = _meta("wrongdtype")

    def encode(self, inputs):
        return super().encode(inputs).astype(np.float32)


class ZerosInCodes(GoodFake):
    meta = _meta("zeros")

    def encode(self, inputs):
        codes = super().encode(inputs)
        codes[:, 0] = 0
        return codes


class ZeroOne(GoodFake):
    meta = _meta("zeroone")

    def encode(self, inputs):
        return (super().encode(inputs) > 0).astype(np.int8)


class Nondeterministic(GoodFake):
    meta = _meta("nondet")

    def fit(self, data, ctx):
        super().fit(data, ctx)
        self.w_ = np.random.default_rng().standard_normal(self.w_.shape)
        return self


class EncodesBeforeFit(Hasher):
    meta = _meta("nofitcheck")

    def __init__(self, bits=32):
        self.bits = bits

    def fit(self, data, ctx):
        return self

    def encode(self, inputs):
        return np.ones((len(inputs), self.bits), np.int8)


class FitReturnsNone(GoodFake):
    meta = _meta("fitnone")

    def fit(self, data, ctx):
        super().fit(data, ctx)


class BatchDependent(GoodFake):
    meta = _meta("batchdep")

    def encode(self, inputs):
        self._check_fitted("w_")
        x = np.asarray(inputs, np.float64)
        return binarize((x - x.mean(0)) @ self.w_)


class GoodAsym(AsymmetricHasher, GoodFake):
    meta = _meta("goodasym", asymmetric=True)

    def fit(self, data, ctx):
        GoodFake.fit(self, data, ctx)
        self.db_ = self.encode(data.inputs)
        return self

    def database_codes(self):
        self._check_fitted("db_")
        return self.db_


class AsymMisaligned(GoodAsym):
    meta = _meta("asymmisaligned", asymmetric=True)

    def database_codes(self):
        return super().database_codes()[:-3]


class AsymFlagMissing(GoodAsym):
    meta = _meta("asymflag")  # asymmetric=False on an AsymmetricHasher


BROKEN = {
    WrongShape: ("codes_contract", CodeContractError, "shape"),
    WrongDtype: ("codes_contract", CodeContractError, "dtype"),
    ZerosInCodes: ("codes_contract", CodeContractError, "outside"),
    ZeroOne: ("codes_contract", CodeContractError, "outside"),
    Nondeterministic: ("deterministic", AssertionError, "different codes"),
    EncodesBeforeFit: ("not_fitted", AssertionError, "NotFittedError"),
    FitReturnsNone: ("codes_contract", AssertionError, "return self"),
    BatchDependent: ("codes_contract", AssertionError, "inside a batch"),
    AsymMisaligned: ("asymmetric", CodeContractError, "shape"),
    AsymFlagMissing: ("meta", AssertionError, "asymmetric"),
}


@pytest.mark.parametrize("cls", list(BROKEN), ids=lambda c: c.meta.name)
def test_conformance_catches_broken_plugins(cls):
    check, error, text = BROKEN[cls]
    with pytest.raises(error, match=text):
        conformance.CHECKS[check](cls)
    # and the full suite does too
    with pytest.raises((AssertionError, CodeContractError)):
        conformance.check_method(cls)


@pytest.mark.parametrize("cls", [GoodFake, GoodAsym], ids=lambda c: c.meta.name)
def test_conformance_passes_good_fakes(cls):
    conformance.check_method(cls)
