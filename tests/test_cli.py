"""End-to-end CLI runs on the bundled digits data against a real SQLite MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hashbench import registry
from hashbench.api import Hasher, MethodMeta, binarize
from hashbench.cli import main
from hashbench.report import collect
from hashbench.tracking import Store

HASHBENCH = [sys.executable, "-m", "hashbench.cli"]


def _trials(uri: str) -> list[dict]:
    frame = collect(Store(uri, create=False))
    return frame.to_dict("records") if not frame.empty else []


def test_run_records_skips_and_reports(tmp_path, capsys):
    args = ["run", "--methods", "itq,lsh", "--bits", "12,24", "--seeds", "0,1", "--quiet"]
    assert main(args) == 0
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    runs = _trials(uri)
    assert len(runs) == 8 and {r["status"] for r in runs} == {"FINISHED"}
    first = {r["run_id"] for r in runs}
    run = runs[0]
    for name in ("map", "train_seconds", "encode_query_seconds", "encode_database_seconds",
                 "evaluate_seconds", "p_at_100"):
        assert f"metric.{name}" in run, name
    assert run["protocol"] == "digits" and run["dataset"] == "digits"
    assert run["train_mode"] == "sampled" and len(run["split_sha256"]) == 64
    assert "map_topk=all" in run["conventions"]

    # second run: every trial skipped, nothing retrained
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "8 skipped" in err and "0 finished" in err
    assert {r["run_id"] for r in _trials(uri)} == first

    # --force reruns one method; the report still shows one entry per run key
    assert main(["run", "--methods", "lsh", "--bits", "12", "--seeds", "0", "--force",
                 "--quiet"]) == 0
    assert len(_trials(uri)) == 9

    capsys.readouterr()
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "| ITQ |" in out and "| LSH |" in out and "12 bits" in out and "(2)" in out
    assert (tmp_path / "results" / "report.md").read_text().startswith("# hashbench report")
    import pandas as pd
    csv = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert len(csv) == 9 and "metric.map" in csv.columns


def test_itq_beats_lsh_on_digits(tmp_path):
    assert main(["run", "--methods", "itq,lsh", "--bits", "12,24,32,48", "--seeds", "0,1",
                 "--quiet"]) == 0
    frame = collect(Store(None, create=False))
    means = frame.groupby(["method", "bits"])["metric.map"].mean()
    for bits in (12, 24, 32, 48):
        assert means[("itq", bits)] > means[("lsh", bits)], bits
        assert 0.5 < means[("itq", bits)] < 0.8


@pytest.mark.parametrize("argv, needle", [
    (["run", "--methods", "itqq"], "did you mean 'itq'"),
    (["run", "--methods", "itq", "--bits", "0"], "below the minimum"),
    (["run", "--methods", "itq", "--bits", "abc"], "'abc' is not an integer"),
    (["run", "--methods", "itq", "--bits", "12,,24"], "empty entry"),
    (["run", "--methods", "itq", "--protocol", "digts"], "did you mean 'digits'"),
    (["run", "--methods", "itq", "--dataset", "cifar"], "no protocol for dataset"),
    (["run", "--methods", "itq", "--param", "itq.n_iters=3"], "did you mean 'n_iter'"),
    (["run", "--methods", "itq", "--param", "nope"], "METHOD.NAME=VALUE"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "results" / "mlflow.db").exists()


class ShapeBreaker(Hasher):
    meta = MethodMeta(name="shapebreaker", title="ShapeBreaker", citation="test",
                      family="shallow")

    def __init__(self, bits=32):
        self.bits = bits

    def fit(self, data, ctx):
        self.fitted_ = True
        return self

    def encode(self, inputs):
        return binarize(np.ones((len(inputs), self.bits + 1)))


def test_bad_plugin_trial_fails_others_finish(tmp_path, capsys):
    assert main(["run", "--methods", "lsh", "--bits", "8", "--quiet"]) == 0
    registry.register(ShapeBreaker)
    try:
        code = main(["run", "--methods", "shapebreaker,itq", "--bits", "8", "--quiet"])
    finally:
        registry.unregister("shapebreaker")
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED shapebreaker bits=8 seed=0" in err
    runs = {r["method"]: r for r in _trials(f"sqlite:///{tmp_path}/results/mlflow.db")}
    assert runs["shapebreaker"]["status"] == "FAILED"
    assert "shapebreaker" in runs["shapebreaker"]["error"]
    assert "shape (100, 9), expected (100, 8)" in runs["shapebreaker"]["error"]
    assert runs["itq"]["status"] == "FINISHED" and runs["lsh"]["status"] == "FINISHED"
    # the report flags the failure
    capsys.readouterr()
    main(["report"])
    assert "failed" in capsys.readouterr().out


def test_train_mode_full_names_the_d_variant(tmp_path, capsys):
    assert main(["run", "--methods", "itq", "--bits", "8", "--train-mode", "full",
                 "--quiet"]) == 0
    capsys.readouterr()
    main(["report"])
    assert "| ITQ-D |" in capsys.readouterr().out


def test_help_explains_every_option(capsys):
    for command in ("run", "report", "list"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--methods", "--bits", "--seeds", "--force", "--tracking-uri",
                   "--train-mode", "--param", "--metric", "--out"):
        assert option in out


def test_list_shows_methods_protocols_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "itq" in out and "Gong & Lazebnik" in out and "digits" in out


def test_ctrl_c_marks_trial_killed_and_exits_130(tmp_path, gate_env):
    plugin, gate = gate_env
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | plugin
    proc = subprocess.Popen(HASHBENCH + ["run", "--methods", "lsh,gate", "--bits", "8"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not Path(f"{gate}.waiting").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    status = {r["method"]: r["status"] for r in _trials(f"sqlite:///{tmp_path}/results/mlflow.db")}
    assert status == {"lsh": "FINISHED", "gate": "KILLED"}


def test_two_processes_create_the_store_together(tmp_path):
    uri = f"sqlite:///{tmp_path}/fresh/store.db"
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(HASHBENCH + ["run", "--methods", m, "--bits", "8,16", "--tracking-uri",
                                      uri, "--quiet"], cwd=tmp_path, env=env,
                         stderr=subprocess.PIPE, text=True)
        for m in ("itq", "lsh")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = _trials(uri)
    assert sorted((r["method"], r["bits"]) for r in runs) == [
        ("itq", 8), ("itq", 16), ("lsh", 8), ("lsh", 16)]
    assert {r["status"] for r in runs} == {"FINISHED"}


def test_evaluate_codes_made_elsewhere(tmp_path, capsys):
    import json

    from scipy.io import savemat

    from hashbench.evaluation import Conventions, evaluate

    rng = np.random.default_rng(0)
    q = np.where(rng.random((30, 12)) > 0.5, 1, -1).astype(np.int8)
    d = np.where(rng.random((300, 12)) > 0.5, 1, -1).astype(np.int8)
    ql, dl = rng.integers(0, 4, 30), rng.integers(0, 4, 300)
    np.save(tmp_path / "q.npy", q)
    np.save(tmp_path / "d01.npy", (d > 0).astype(np.uint8))             # {0,1} alphabet
    savemat(tmp_path / "dl.mat", {"labels": dl})
    np.save(tmp_path / "ql.npy", ql)
    np.save(tmp_path / "packed.npy", np.packbits(d > 0, axis=1))
    args = ["evaluate", "--query-codes", str(tmp_path / "q.npy"), "--query-labels", str(tmp_path / "ql.npy"),
            "--database-labels", str(tmp_path / "dl.mat"), "--topk", "100", "--json"]
    assert main(args + ["--database-codes", str(tmp_path / "d01.npy")]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate(q, d, ql, dl, Conventions(map_topk=100, precision_ks=(100, 1000, 5000))).metrics
    assert got["metrics"]["map@100"] == pytest.approx(want["map@100"], abs=1e-12)
    assert got["conventions"]["eval.map_topk"] == "100"
    assert main(args + ["--database-codes", str(tmp_path / "packed.npy"), "--bits", "12"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["map"] == pytest.approx(want["map"], abs=1e-12)
    # packed bytes without --bits, and a label file of the wrong length, are named
    assert main(args + ["--database-codes", str(tmp_path / "packed.npy")]) != 0
    assert "packed.npy" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", ql[:10])
    bad = [a if a != str(tmp_path / "ql.npy") else str(tmp_path / "short.npy") for a in args]
    assert main(bad + ["--database-codes", str(tmp_path / "d01.npy")]) == 2
    err = capsys.readouterr().err
    assert "short.npy: 10 label rows but the query codes have 30 rows" in err
