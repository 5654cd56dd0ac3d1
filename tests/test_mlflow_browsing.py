"""What a person browsing the store in the MLflow UI sees: a classic ML experiment, runs with
user/source/git commit from MLflow's context providers, a description with the MAP, and the
curves as CSV/JSON artifacts and figures with their real x axis."""

from __future__ import annotations

import io

import pandas as pd

from hashbench.cli import main
from hashbench.tracking import Store


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
