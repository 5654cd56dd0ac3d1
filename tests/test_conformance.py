"""The conformance suite: every registered method, and fake plugins that break each rule."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hashbench import conformance, registry
from hashbench.api import AsymmetricHasher, Hasher, MethodMeta, binarize, validate_meta
from hashbench.cli import main
from hashbench.errors import CodeContractError, ConformanceError, MethodDefinitionError


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
        x = np.asarray(data.train.inputs, np.float64)
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


class RawAttributeError(GoodFake):
    """Forgets ``_check_fitted``: encoding before fit escapes as an AttributeError."""

    meta = _meta("rawattr")

    def encode(self, inputs):
        return binarize((np.asarray(inputs) - self.mu_) @ self.w_)


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
        self.db_ = self.encode(data.train.inputs)
        self.learned_indices_ = data.train.indices
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


class BadMeta(GoodFake):
    meta = MethodMeta(name="BAD NAME", title="Bad", citation="", family="shallow")


class UnknownModality(GoodFake):
    meta = _meta("badmodality", modalities=("audio",))


BROKEN = {
    WrongShape: ("codes_contract", CodeContractError, "shape"),
    WrongDtype: ("codes_contract", CodeContractError, "dtype"),
    ZerosInCodes: ("codes_contract", CodeContractError, "outside"),
    ZeroOne: ("codes_contract", CodeContractError, "outside"),
    Nondeterministic: ("deterministic", ConformanceError, "different codes.*ctx.rng"),
    EncodesBeforeFit: ("not_fitted", ConformanceError, "NotFittedError"),
    RawAttributeError: ("not_fitted", ConformanceError, "got AttributeError"),
    FitReturnsNone: ("codes_contract", ConformanceError, "return self"),
    BatchDependent: ("codes_contract", ConformanceError, "inside a batch"),
    AsymMisaligned: ("database", CodeContractError, "shape"),
    AsymFlagMissing: ("meta", ConformanceError, "asymmetric"),
    BadMeta: ("meta", ConformanceError, "lower-case id.*citation"),
    UnknownModality: ("meta", ConformanceError, "unknown 'audio'"),
}


@pytest.mark.parametrize("cls", list(BROKEN), ids=lambda c: c.meta.name)
def test_conformance_catches_broken_plugins(cls):
    check, error, text = BROKEN[cls]
    with pytest.raises(error, match=text):
        conformance.CHECKS[check](cls)
    # and the full suite does too, naming the check
    with pytest.raises(ConformanceError, match=rf"\[{check}\]"):
        conformance.check_method(cls)


@pytest.mark.parametrize("cls", [GoodFake, GoodAsym], ids=lambda c: c.meta.name)
def test_conformance_passes_good_fakes(cls):
    results = conformance.check_method(cls)
    assert [r.check for r in results] == list(conformance.CHECKS)
    assert all(r.status == "passed" for r in results)


def test_check_method_lists_every_failed_check_not_only_the_first():
    class TwiceBroken(Nondeterministic):
        meta = _meta("twicebroken")

        def encode(self, inputs):
            return super().encode(inputs).astype(np.float32)

    results = conformance.run_checks(TwiceBroken)
    failed = {r.check for r in results if r.status == "FAILED"}
    assert failed == {"codes_contract", "deterministic", "database"}, results
    with pytest.raises(ConformanceError, match="3 of 5 conformance checks failed"):
        conformance.check_method(TwiceBroken)


def test_expected_failures_table_is_honoured_and_kept_true(monkeypatch):
    monkeypatch.setitem(conformance.EXPECTED_FAILURES, ("batchdep", "codes_contract"),
                        "documented: encodes relative to the batch mean")
    results = {r.check: r for r in conformance.run_checks(BatchDependent)}
    assert results["codes_contract"].status == "expected failure"
    conformance.check_method(BatchDependent)  # nothing else fails
    monkeypatch.setitem(conformance.EXPECTED_FAILURES, ("goodfake", "deterministic"), "stale entry")
    results = {r.check: r for r in conformance.run_checks(GoodFake)}
    assert results["deterministic"].status == "FAILED"
    assert "update the table" in results["deterministic"].message


def test_invalid_metadata_is_refused_at_registration():
    with pytest.raises(MethodDefinitionError, match="lower-case id") as info:
        registry.register(BadMeta)
    assert "title" not in str(info.value) and "citation" in str(info.value)
    with pytest.raises(MethodDefinitionError, match="family"):
        validate_meta(type("F", (GoodFake,), {"meta": MethodMeta("fam", "F", "c", "magic")}))
    with pytest.raises(MethodDefinitionError, match="requires"):
        validate_meta(type("G", (GoodFake,), {"meta": _meta("gpu", requires="tpu")}))
    assert "BAD NAME" not in registry.available()


def test_checks_bite_under_python_O(tmp_path):
    """``python -O`` strips assert statements; the conformance checks must still catch every
    broken fake plugin above."""
    here = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-O", "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "test_conformance.py"),
         "-k", "catches_broken_plugins or lists_every_failed"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(BROKEN) + 1} passed" in result.stdout


TWO_MODALITY_METHOD = '''
"""A two-modality plugin: one random projection per modality into a shared code space."""
import numpy as np

from hashbench.api import Hasher, MethodMeta, binarize


class PairedProjection(Hasher):
    meta = MethodMeta(name="pairedproj", title="PairedProj", citation="a test of the contract",
                      family="shallow", modalities=("features", "text"), supervised=True)

    def __init__(self, bits: int = 16) -> None:
        self.bits = bits

    def fit(self, data, ctx):
        y = np.asarray(data.train.labels, np.float64)            # both views share the labels
        target = y @ ctx.rng.standard_normal((y.shape[1], self.bits))
        self.w_ = {}
        for modality in self.meta.modalities:                     # least squares per view
            x = np.asarray(data.train[modality], np.float64)
            x = np.hstack([x, np.ones((len(x), 1))])
            self.w_[modality] = np.linalg.lstsq(x, target, rcond=None)[0]
        return self

    def encode(self, inputs, modality):
        self._check_fitted("w_")
        x = np.asarray(inputs, np.float64)
        return binarize(np.hstack([x, np.ones((len(x), 1))]) @ self.w_[modality])
'''


def test_a_two_modality_method_file_conforms_without_touching_the_core(tmp_path, monkeypatch):
    assert len(TWO_MODALITY_METHOD.strip().splitlines()) <= 30
    (tmp_path / "pairedproj.py").write_text(textwrap.dedent(TWO_MODALITY_METHOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    import pairedproj

    cls = pairedproj.PairedProjection
    results = conformance.check_method(cls)
    assert all(r.status == "passed" for r in results)
    # its retrieval tasks: features -> text and text -> features
    from hashbench.runner import run_trial_data, tasks_for

    assert [t.name for t in tasks_for(cls.meta.modalities)] == ["i2t", "t2i"]
    method = cls(bits=16)
    data = conformance.sample_for(method)
    from hashbench.api import RunContext
    from hashbench.evaluation import evaluate

    codes, timings = run_trial_data(method, data, RunContext(seed=0))
    assert sorted(t.name for t in codes) == ["i2t", "t2i"]
    for task, (query, database) in codes.items():
        assert query.shape == (len(data.query), 16) and database.shape == (len(data.database), 16)
        score = evaluate(query, database, data.query.labels, data.database.labels).metrics["map"]
        assert score > 0.2, (task, score)  # label-driven codes: twice chance (0.1) at least
    assert timings["train_seconds"] >= 0


def test_hashbench_check_command_lists_every_check(capsys):
    assert main(["check", "itq"]) == 0
    out = capsys.readouterr().out
    for check in conformance.CHECKS:
        assert f"  {check}" in out
    assert "5 of 5 checks ok" in out
    assert main(["check", "itqq"]) == 2
    assert "did you mean 'itq'" in capsys.readouterr().err


def test_the_readme_template_method_conforms(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("A template to copy", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_template.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    import readme_template

    results = conformance.check_method(readme_template.MyHasher)
    assert all(r.status == "passed" for r in results)
