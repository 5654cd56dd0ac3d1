"""What a person browsing the store in the MLflow UI sees: a classic ML experiment, runs with
user/source/git commit from MLflow's context providers, a description with the MAP, and the
curves as CSV/JSON artifacts and figures with their real x axis."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hashbench import registry, report
from hashbench.api import Hasher, MethodMeta, binarize
from hashbench.cli import main
from hashbench.tracking import CurvePlots, Store, TrialRecord


def test_runs_carry_description_source_and_curve_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/b.db"
    assert main(["run", "--methods", "lsh", "--bits", "8", "--quiet", "--tracking-uri", uri]) == 0
    store = Store(uri)
    experiment = store.client.get_experiment(store.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = store.trial_runs()
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    map_value = run.data.metrics["map"]
    assert tags["mlflow.note.content"] == (f"LSH on digits (protocol digits), 8 bits, seed 0, sampled "
                                           f"training set: MAP {map_value:.4f}")
    names = {a.path for a in store.client.list_artifacts(run.info.run_id, "curves")}
    assert names == {f"curves/{c}.{ext}" for c in ("pr_curve", "precision_at_k") for ext in ("csv", "json", "png")}
    local = store.client.download_artifacts(run.info.run_id, "curves/pr_curve.csv", str(tmp_path))
    curve = pd.read_csv(local)
    assert list(curve.columns) == ["radius", "precision", "recall"] and curve["radius"].tolist() == list(range(9))
    # the same numbers as the metric history (which MLflow's UI plots against "Step")
    history = store.client.get_metric_history(run.info.run_id, "curve.pr_curve.recall")
    assert sorted((m.step, round(m.value, 12)) for m in history) == [
        (int(r), round(v, 12)) for r, v in zip(curve["radius"], curve["recall"])]
    json_curve = store.client.download_artifacts(run.info.run_id, "curves/precision_at_k.json", str(tmp_path))
    assert len(pd.read_json(io.StringIO(open(json_curve).read()))) > 0


OLD_STORE = Path(__file__).resolve().parent / "data" / "store-0.1.0" / "mlflow.db"
IRRELEVANT_TO_MLP = {"hp.pretrained", "hp.image_size"}


def test_a_deep_trial_logs_only_the_params_its_backbone_reads(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/d.db"
    args = ["run", "--methods", "dsh", "--bits", "8", "--param", "dsh.epochs=2", "--quiet", "--tracking-uri", uri]
    assert main(args) == 0
    (run,) = Store(uri).trial_runs()
    logged = {k for k in run.data.params if k.startswith("hp.")}
    every = {f"hp.{k}" for k in registry.get("dsh").param_names() if k != "bits"}
    assert logged == every - IRRELEVANT_TO_MLP and "hp.hidden" in logged
    capsys.readouterr()
    assert main([*args[:-3], "--dry-run", "--tracking-uri", uri]) == 0  # the run key still hashes them all
    assert "0 to run, 1 to skip" in capsys.readouterr().out


def test_each_backbone_keeps_the_params_it_reads():
    dsh = registry.get("dsh")
    full = dsh(bits=8).get_params()
    assert set(full) - set(dsh.applicable_params(full)) == {"pretrained", "image_size"}
    alexnet = dsh.applicable_params({**full, "backbone": "alexnet"})
    assert set(full) - set(alexnet) == {"hidden"}
    assert dsh.applicable_params({"backbone": "cnn", "hidden": "64", "pretrained": "null"}) == {
        "backbone": "cnn", "hidden": "64"}  # the store's text reads the same way
    itq = registry.get("itq")
    assert itq.applicable_params(itq(bits=8).get_params()) == itq(bits=8).get_params()


def test_an_old_store_still_skips_its_trials_and_its_runs_share_rows_with_new_ones(tmp_path, capsys):
    """Runs recorded before irrelevant params were left out (ADSH on the MLP with
    hp.pretrained=null, hp.image_size=224) keep their run keys: a rerun skips every one, and a
    run logged the new way lands in the same table cell, not a row of its own."""
    db = tmp_path / "old.db"
    shutil.copy(OLD_STORE, db)  # a copy: opening it may migrate the schema
    uri = f"sqlite:///{db}"
    store = Store(uri)
    adsh = [r for r in store.trial_runs("FINISHED") if r.data.params["method"] == "adsh"]
    assert adsh and all(IRRELEVANT_TO_MLP <= set(r.data.params) for r in adsh)
    assert main(["run", "--methods", "adsh,lsh,sdh", "--bits", "12,24", "--seeds", "0,1", "--dry-run",
                 "--tracking-uri", uri]) == 0
    assert "0 to run, 12 to skip" in capsys.readouterr().out

    def adsh_cells():
        tables = report.build_tables(report.collect(Store(uri)), "map")
        return [t.rows for t in tables], {(t.title, row, bits): cell.n for t in tables for group in t.groups
                                          for (row, bits), cell in group.cells.items() if row.startswith("ADSH")}

    rows, before = adsh_cells()
    old = next(r for r in adsh if r.data.params["bits"] == "12" and r.data.params["train_mode"] == "sampled")
    cls = registry.get("adsh")
    params = TrialRecord(method="adsh", protocol="digits", dataset="digits", bits=12, seed=7,
                         train_mode="sampled",
                         hyper_parameters=cls.applicable_params(cls(bits=12).get_params())).params()
    assert not IRRELEVANT_TO_MLP & set(params)
    tags = {k: v for k, v in old.data.tags.items() if not k.startswith("mlflow.")}
    new = store.start_run("adsh-12b-s7", {**tags, "hashbench.run_key": "new"})
    new.log_params(params)
    new.log_metrics({"map": old.data.metrics["map"]})
    new.end("FINISHED")
    rows_after, after = adsh_cells()
    assert rows_after == rows
    grown = {key for key in before if key[1:] == ("ADSH (sampled)", 12)}
    assert len(grown) == 2  # Table 1 and Table 2 both show the sampled ADSH row
    assert after == {key: n + (key in grown) for key, n in before.items()}


class Stopper(Hasher):
    """Fails at 8 bits; at 16 bits acts as if Ctrl-C came during fit."""

    meta = MethodMeta(name="stopper", title="Stopper", citation="test", family="shallow")

    def __init__(self, bits=32):
        self.bits = bits

    def fit(self, data, ctx):
        if self.bits == 16:
            raise KeyboardInterrupt
        raise ValueError("no codes today")

    def encode(self, inputs):
        return binarize(np.ones((len(inputs), self.bits)))


def _grid(uri):
    (parent,) = [r for r in Store(uri).client.search_runs([Store(uri).experiment_id])
                 if r.data.tags.get("hashbench.kind") == "grid"]
    return parent


def test_the_grid_run_carries_counts_wall_time_and_mean_map_per_method_and_bits(tmp_path):
    uri = f"sqlite:///{tmp_path}/g.db"
    assert main(["run", "--methods", "lsh,itq", "--bits", "8", "--seeds", "0,1", "--quiet",
                 "--tracking-uri", uri]) == 0
    parent = _grid(uri)
    metrics = parent.data.metrics
    trials = Store(uri).trial_runs("FINISHED")
    for method in ("lsh", "itq"):
        maps = [r.data.metrics["map"] for r in trials if r.data.params["method"] == method]
        assert len(maps) == 2 and metrics[f"map/{method}_8b"] == pytest.approx(np.mean(maps))
    assert {k: v for k, v in metrics.items() if k.startswith("trials_")} == {
        "trials_planned": 4, "trials_finished": 4, "trials_skipped": 0, "trials_failed": 0, "trials_killed": 0}
    assert metrics["wall_seconds"] > 0 and parent.info.status == "FINISHED"
    best8 = max(("lsh", "itq"), key=lambda m: metrics[f"map/{m}_8b"])
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("digits grid, 4 trials (4 finished) in ")
    assert f"8 bits {best8} {metrics[f'map/{best8}_8b']:.4f}" in note


def test_a_grid_ended_by_ctrl_c_still_gets_its_summary(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/k.db"
    registry.register(Stopper)
    try:
        code = main(["run", "--methods", "lsh,stopper", "--bits", "8,16", "--quiet", "--tracking-uri", uri])
    finally:
        registry.unregister("stopper")
    assert code == 130
    parent = _grid(uri)
    statuses = sorted((r.data.params["method"], r.data.params["bits"], r.info.status)
                      for r in Store(uri).trial_runs())
    assert statuses == [("lsh", "16", "FINISHED"), ("lsh", "8", "FINISHED"),
                        ("stopper", "16", "KILLED"), ("stopper", "8", "FAILED")]
    metrics = parent.data.metrics
    assert parent.info.status == "KILLED"
    assert {k: v for k, v in metrics.items() if k.startswith("trials_")} == {
        "trials_planned": 4, "trials_finished": 2, "trials_skipped": 0, "trials_failed": 1, "trials_killed": 1}
    assert set(metrics) == {"map/lsh_8b", "map/lsh_16b", "wall_seconds", *(k for k in metrics if k.startswith("trials_"))}
    assert parent.data.tags["hashbench.n_killed"] == "1"
    assert parent.data.tags["mlflow.note.content"].endswith("; ended KILLED. Best mean MAP: "
                                                            f"8 bits lsh {metrics['map/lsh_8b']:.4f}; "
                                                            f"16 bits lsh {metrics['map/lsh_16b']:.4f}")


def test_curve_images_drawn_on_kept_axes_equal_fresh_ones():
    """The axes of a curve are drawn once per process and reused: a trial's image never shows
    the lines of the trial before it, and equals the image a fresh plotter draws."""
    k = np.arange(1, 51)
    first = pd.DataFrame({"k": k, "precision": 1 / np.sqrt(k), "recall": k / 50})
    second = first.assign(precision=0.5 * first["precision"])
    radius = pd.DataFrame({"radius": range(9), "precision": np.linspace(1, 0.2, 9),
                           "recall": np.linspace(0.01, 1, 9)})
    plots = CurvePlots()
    a = np.asarray(plots.image("precision_at_k", first))
    b = np.asarray(plots.image("precision_at_k", second))
    pr = np.asarray(plots.image("pr_curve", radius))
    again = np.asarray(plots.image("precision_at_k", first))
    fresh = np.asarray(CurvePlots().image("precision_at_k", first))
    assert a.shape == (320, 450, 4) and (a != b).any() and a.shape == pr.shape
    assert np.array_equal(a, again) and np.array_equal(a, fresh)
