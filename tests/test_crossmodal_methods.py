"""The registered cross-modal methods (cca, cca-itq, cmfh, scm, seph, dlfh) through the real
runner path on the bundled two-view digits (``digits-2view``: left image half as ``features``,
right half as ``text``), and a CLI run recording I->T and T->I MAP in the store."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hashbench import registry
from hashbench.api import RunContext
from hashbench.datasets import load
from hashbench.evaluation import evaluate
from hashbench.protocol import builtin_protocols, get_protocol, materialise
from hashbench.runner import run_trial_data

METHODS = ["cca", "cca-itq", "cmfh", "scm", "seph", "dlfh"]
SUPERVISED = ["scm", "seph", "dlfh"]
BITS = 16


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def two_view():
    return load("digits-2view")


def _view(dataset, method, mode="sampled"):
    protocol = get_protocol("digits")          # 10 queries + 50 training items per class
    if mode != "sampled":
        protocol = protocol.with_train_mode(mode)
    split = materialise(protocol, dataset.labels)
    return split.view(dataset, method.modalities)


@pytest.fixture(scope="module")
def results(two_view):
    """{method: (view, {task name: (query codes, database codes)}, {task name: MAP})}, seed 0."""
    out = {}
    with threadpool_limits(1):
        for name in METHODS:
            method = registry.get(name)(bits=BITS)
            view = _view(two_view, method)
            codes, timings = run_trial_data(method, view, RunContext(seed=0))
            assert timings["train_seconds"] >= 0
            by_name = {task.name: pair for task, pair in codes.items()}
            maps = {task: evaluate(q, d, view.query.labels, view.database.labels).metrics["map"]
                    for task, (q, d) in by_name.items()}
            out[name] = (view, by_name, maps)
    return out


@pytest.mark.parametrize("name", METHODS)
def test_registered_with_both_modalities(name):
    cls = registry.get(name)
    assert cls.meta.modalities == ("features", "text")
    assert cls.meta.family == "shallow" and cls.meta.requires == "cpu"
    assert cls.meta.supervised == (name in SUPERVISED)
    assert cls.param_names()[0] == "bits"


@pytest.mark.parametrize("name", METHODS)
def test_runner_gives_both_tasks_with_uncollapsed_codes(results, name):
    view, codes, maps = results[name]
    assert sorted(codes) == ["i2t", "t2i"]
    for task, (query, database) in codes.items():
        assert query.shape == (len(view.query), BITS) and query.dtype == np.int8
        assert database.shape == (len(view.database), BITS) and database.dtype == np.int8
        assert len(np.unique(database, axis=0)) >= 40, f"{name} {task}: database codes collapsed"
        assert len(np.unique(query, axis=0)) >= 10, f"{name} {task}: query codes collapsed"
        assert maps[task] > 0.15, (name, task, maps[task])   # chance is about 0.1


@pytest.mark.parametrize("name", SUPERVISED)
def test_supervised_methods_beat_cca_in_both_directions(results, name):
    cca = results["cca"][2]
    maps = results[name][2]
    for task in ("i2t", "t2i"):
        assert maps[task] > cca[task] + 0.1, (name, task, maps[task], cca[task])


def test_symmetric_database_codes_are_the_database_modality_hashed(results):
    """I->T ranks the text side's codes of the database, T->I the features side's."""
    view, codes, _ = results["scm"]
    method = registry.get("scm")(bits=BITS).fit(view.for_fit(), RunContext(seed=0))
    np.testing.assert_array_equal(codes["i2t"][1], method.encode(view.database["text"], "text"))
    np.testing.assert_array_equal(codes["t2i"][1], method.encode(view.database["features"], "features"))


def test_dlfh_full_mode_ranks_against_the_learned_codes_of_the_other_side(two_view):
    """As DLFH_algo.m: trained on the database, I->T uses the learned text codes V and T->I
    the learned image codes U; a sampled training set hashes the database instead."""
    method = registry.get("dlfh")(bits=BITS)
    view = _view(two_view, method, mode="full")
    assert view.train_is_database
    codes, _ = run_trial_data(method, view, RunContext(seed=0))
    by_name = {task.name: pair for task, pair in codes.items()}
    core = method.model_
    np.testing.assert_array_equal(method.learned_indices_, view.database.indices)
    np.testing.assert_array_equal(by_name["i2t"][1], core.text_codes_)
    np.testing.assert_array_equal(by_name["t2i"][1], core.image_codes_)
    assert not np.array_equal(core.text_codes_, core.image_codes_)
    assert method.meta.display_name("full") == "DLFH"
    for q, d in by_name.values():
        assert evaluate(q, d, view.query.labels, view.database.labels).metrics["map"] > 0.3

    sampled = registry.get("dlfh")(bits=BITS)
    sview = _view(two_view, sampled)
    sampled.fit(sview.for_fit(), RunContext(seed=0))
    np.testing.assert_array_equal(sampled.encode_database(sview, "text"),
                                  sampled.encode(sview.database["text"], "text"))


def test_unknown_modality_is_a_config_error(results):
    from hashbench.errors import ConfigError

    view = results["cca"][0]
    method = registry.get("cca")(bits=BITS).fit(view.for_fit(), RunContext(seed=0))
    with pytest.raises(ConfigError, match="modality"):
        method.encode(view.database["text"], "image")


@pytest.mark.skipif("digits-2view" not in builtin_protocols(), reason="no digits-2view protocol yet")
def test_cli_run_records_both_directions_in_the_store(tmp_path):
    from hashbench.cli import main
    from hashbench.tracking import Store

    args = ["run", "--methods", "cca,scm", "--dataset", "digits-2view", "--bits", "16", "--seeds", "0",
            "--quiet"]
    assert main(args) == 0
    records = Store(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", create=False).trial_records()
    assert sorted(r.method for r in records) == ["cca", "scm"]
    for record in records:
        assert record.status == "FINISHED" and record.bits == 16
        assert record.modalities == "features,text"
        for key in ("i2t.map", "t2i.map"):
            assert 0.1 < record.metrics[key] <= 1.0, (record.method, key, record.metrics)
    by_method = {r.method: r.metrics for r in records}
    assert by_method["scm"]["i2t.map"] > by_method["cca"]["i2t.map"]
    assert by_method["scm"]["t2i.map"] > by_method["cca"]["t2i.map"]
