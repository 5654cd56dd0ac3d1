"""Core v2: the split view, the database-codes hook, the store schema, plan then execute,
per-trial devices and provenance."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hashbench.methods.adsh import ADSH

from hashbench import registry
from hashbench.api import AsymmetricHasher, RunContext, trial_data
from hashbench.datasets import Dataset, load
from hashbench.errors import ConfigError, DataError
from hashbench.progress import Reporter
from hashbench.protocol import get_protocol, materialise
from hashbench.runner import (
    Executor,
    RunConfig,
    TrialWorker,
    git_sha,
    plan_grid,
    resolve_device,
    run_grid,
)
from hashbench.tracking import KIND_TAG, Store

# ---------------------------------------------------------------- the split view


def test_split_view_applies_the_split_once_and_reads_modalities_lazily():
    base = load("digits")
    calls = []

    def expensive():
        calls.append(1)
        return base.features * 2

    data = Dataset("lazy", base.labels, images=base.images, modalities={"features": expensive},
                   provenance={"source": "test"})
    assert data.modality_names == ("image", "features")  # canonical order
    assert not data.is_loaded("features") and data.features is None
    split = materialise(get_protocol("digits"), data.labels)
    view = split.view(data, ("features",))
    assert calls == []  # nothing computed by building the view
    assert view.train.modalities == ("features",) and view.query is not None
    np.testing.assert_array_equal(view.query.indices, split.query)
    np.testing.assert_array_equal(view.database.labels, data.labels[split.database])
    np.testing.assert_array_equal(view.train.inputs, base.features[split.train] * 2)
    np.testing.assert_array_equal(view.database["features"], base.features[split.database] * 2)
    assert calls == [1]  # computed once, on first access, and kept
    assert not view.train_is_database and view.for_fit().query is None
    with pytest.raises(KeyError, match="no modality 'text'"):
        view.train["text"]
    with pytest.raises(DataError, match="provides no text"):
        split.view(data, ("text",))
    full = materialise(get_protocol("digits").with_train_mode("full"), data.labels).view(data, ("image",))
    assert full.train is full.database and full.train_is_database  # one copy of the rows


def test_dataset_providers_add_their_tags():
    base = load("digits")
    data = Dataset("imgs", base.labels, images=base.images, provenance={"source": "x"})
    data.provide("features", lambda: base.features, {"features.extractor": "pixels"})
    assert data.tags == {"dataset.source": "x", "features.extractor": "pixels"}
    with pytest.raises(DataError, match="unknown modality 'txt'.*did you mean 'text'"):
        Dataset("bad", base.labels, modalities={"txt": base.features})


# ---------------------------------------------------------------- database codes: one hook


class _Learned(AsymmetricHasher):
    from hashbench.api import MethodMeta

    meta = MethodMeta(name="learnedfake", title="LF", citation="test", family="shallow", asymmetric=True)

    def __init__(self, bits=4):
        self.bits = bits

    def fit(self, data, ctx):
        self.codes_ = np.where(data.train.labels[:, :self.bits] > 0, 1, -1).astype(np.int8)
        self.learned_indices_ = data.train.indices
        return self

    def encode(self, inputs):
        self._check_fitted("codes_")
        return np.ones((len(inputs), self.bits), np.int8)

    def database_codes(self):
        return self.codes_


def test_encode_database_hands_out_learned_codes_only_for_their_rows():
    data = load("digits")
    full = trial_data({"features": data.features}, data.labels, np.arange(100), np.arange(100), train_mode="full")
    method = _Learned().fit(full, RunContext())
    np.testing.assert_array_equal(method.encode_database(full), method.database_codes())
    sampled = trial_data({"features": data.features}, data.labels, np.arange(100), np.arange(100, 300))
    method.fit(sampled, RunContext())
    assert (method.encode_database(sampled) == 1).all() and len(method.encode_database(sampled)) == 200


def test_adsh_never_encodes_a_database_with_its_network():
    data = load("digits")
    sampled = trial_data({"features": data.features}, data.labels, np.arange(150), np.arange(150, 500))
    model = ADSH(bits=8, outer_iters=2, inner_epochs=1, num_samples=100).fit(sampled, RunContext(seed=0))
    np.testing.assert_array_equal(model.encode_database(sampled), model.database_codes())  # eq. (3): V
    other = trial_data({"features": data.features}, data.labels, np.arange(150), np.arange(150, 400))
    with pytest.raises(DataError, match="never encode it with the network"):
        model.encode_database(other)


# ---------------------------------------------------------------- plan, then execute


def _config(tmp_path, **kw):
    base = dict(methods=[registry.get("itq"), registry.get("lsh")], protocol=get_protocol("digits"),
                bits=[8, 16], seeds=[0], tracking_uri=f"sqlite:///{tmp_path}/s.db")
    base.update(kw)
    return RunConfig(**base)


def _runs(store, kind):
    return store.client.search_runs([store.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'")


def test_plan_opens_the_parent_once_and_skips_finished_keys_without_shipping_them(tmp_path):
    config = _config(tmp_path)
    plan = plan_grid(config, Reporter(quiet=True))
    assert len(plan.pending) == 4 and not plan.skipped and plan.parent is not None
    store = plan.store
    assert len(_runs(store, "grid")) == 1 and not _runs(store, "trial")  # parent first, up front
    assert len({s.run_key for s in plan.pending}) == 4
    plan.parent.end("FINISHED")
    summary = run_grid(config, Reporter(quiet=True))
    assert summary.count("FINISHED") == 4
    again = plan_grid(config, Reporter(quiet=True))
    assert again.pending == [] and len(again.skipped) == 4 and again.parent is None
    assert {o.trial.run_key for o in again.skipped} == {s.run_key for s in plan.pending}
    assert len(_runs(store, "grid")) == 2  # the fully skipped plan opened no parent


class _Reversed(Executor):
    """An executor built on the public contract only: picklable (context, spec) pairs run by
    a TrialWorker that loads its own dataset and opens its own store."""

    name = "reversed"

    def execute(self, plan, reporter):
        for spec in reversed(plan.pending):
            context, spec = pickle.loads(pickle.dumps((plan.context, spec)))
            yield TrialWorker(context).run(spec)


def test_a_custom_executor_gets_the_same_results_and_records_under_the_parent(tmp_path):
    local = run_grid(_config(tmp_path), Reporter(quiet=True))
    other = run_grid(_config(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/o.db"), Reporter(quiet=True),
                     executor=_Reversed())
    by_key = {o.trial.run_key: o.metrics["map"] for o in local.outcomes}
    assert {o.trial.run_key: o.metrics["map"] for o in other.outcomes} == by_key
    store = Store(f"sqlite:///{tmp_path}/o.db")
    (parent,) = _runs(store, "grid")
    trials = _runs(store, "trial")
    assert len(trials) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert parent.data.tags["hashbench.n_finished"] == "4"


def test_trial_record_round_trips_through_the_store(tmp_path):
    run_grid(_config(tmp_path, bits=[8], methods=[registry.get("itq")]), Reporter(quiet=True))
    (record,) = Store(f"sqlite:///{tmp_path}/s.db").trial_records()
    assert (record.method, record.bits, record.seed, record.train_mode) == ("itq", 8, 0, "sampled")
    assert record.status == "FINISHED" and record.device == "cpu" and not record.variant
    assert record.display == "ITQ" and record.modalities == "features"
    assert record.hyper_parameters == {"n_iter": "50"}
    import hashbench.methods.itq as itq_module

    itq_file = Path(itq_module.__file__)
    assert record.method_sha256 == hashlib.sha256(itq_file.read_bytes()).hexdigest()
    params, tags = record.to_mlflow()
    assert params["hp.n_iter"] == "50" and tags["hashbench.run_key"] == record.run_key
    assert 0 < record.metrics["map"] <= 1 and "train_seconds" in record.metrics


def test_full_mode_trials_are_variants_except_database_learning_methods(tmp_path):
    cfg = _config(tmp_path, methods=[registry.get("itq"), registry.get("linv")], bits=[8],
                  protocol=get_protocol("digits").with_train_mode("full"),
                  params={"linv": {"max_epochs": 1, "sgd_epochs": 1}})
    run_grid(cfg, Reporter(quiet=True))
    records = {r.method: r for r in Store(f"sqlite:///{tmp_path}/s.db").trial_records()}
    assert records["itq"].variant and records["itq"].display == "ITQ-D"
    assert not records["linv"].variant and records["linv"].display == "Lin:V"


# ---------------------------------------------------------------- devices and provenance


def test_device_is_resolved_per_trial_from_the_methods_requirements():
    import torch

    assert resolve_device("auto", "cpu") == "cpu"
    assert resolve_device("cpu", "gpu-preferred") == "cpu"
    with pytest.raises(ConfigError, match="requires a GPU"):
        resolve_device("cpu", "gpu-required")
    with pytest.raises(ConfigError, match="--device must be"):
        resolve_device("tpu", "cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", "gpu-preferred") == expected
    assert registry.get("adsh").meta.requires == "gpu-preferred"
    assert registry.get("itq").meta.requires == "cpu"


@pytest.mark.gpu
def test_deep_trials_run_on_cuda_when_the_process_sees_one(tmp_path):
    cfg = _config(tmp_path, methods=[registry.get("adsh"), registry.get("itq")], bits=[12],
                  params={"adsh": {"outer_iters": 3}})
    run_grid(cfg, Reporter(quiet=True))
    devices = {r.method: r.device for r in Store(f"sqlite:///{tmp_path}/s.db").trial_records()}
    assert devices == {"adsh": "cuda", "itq": "cpu"}


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo), "PATH": "/usr/bin:/bin"})


def test_git_sha_is_dirty_for_untracked_method_and_protocol_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "methods").mkdir(parents=True)
    (repo / "methods" / "itq.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    clean = git_sha(repo)
    assert len(clean) == 40
    (repo / "notes.txt").write_text("scratch\n")  # untracked elsewhere: still clean
    assert git_sha(repo) == clean
    (repo / "methods" / "mine.py").write_text("y = 2\n")  # an uncommitted method file
    assert git_sha(repo) == clean + "-dirty"
    (repo / "methods" / "mine.py").unlink()
    (repo / "protocols").mkdir()
    (repo / "protocols" / "p.toml").write_text("name = 'p'\n")
    assert git_sha(repo) == clean + "-dirty"


def test_a_method_revision_enters_the_run_key_only_from_revision_2():
    from hashbench.evaluation import Conventions
    from hashbench.runner import run_key

    split = materialise(get_protocol("digits"), load("digits").labels)
    itq, lsh = registry.get("itq"), registry.get("lsh")
    assert itq.meta.revision == 2 and lsh.meta.revision == 1

    def key(cls, revision):
        method = cls(bits=8)
        method.meta = dataclasses.replace(cls.meta, revision=revision)
        return run_key(method, 0, get_protocol("digits"), split, Conventions())

    assert key(itq, 2) != key(itq, 1) != key(itq, 3)
    # revision 1 adds nothing to the payload: keys recorded before revisions existed still match
    payload = {"method": "lsh", "params": lsh(bits=8).get_params(), "protocol": "digits",
               "protocol_overrides": [], "dataset": "digits", "data": {}, "split": split.sha256,
               "train_mode": "sampled", "seed": 0, "conventions": Conventions().as_tags()}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    assert key(lsh, 1) == expected


def test_full_runs_on_a_protocol_that_trains_on_the_database_are_no_variants():
    from hashbench.api import MethodMeta

    meta = MethodMeta("m", "M", "c", "shallow")
    assert meta.display_name("full") == "M-D" and meta.is_variant("full")
    assert meta.display_name("full", "full") == "M" and not meta.is_variant("full", "full")
    own = MethodMeta("a", "A", "c", "deep", full_mode_title="A")
    assert own.display_name("full", "full") == "A" and own.display_name("sampled") == "A (sampled)"
    wiki = get_protocol("wikipedia")
    assert wiki.declared_train_mode == "full"
    assert get_protocol("digits").with_train_mode("full").declared_train_mode == "sampled"
