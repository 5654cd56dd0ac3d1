"""The scale-out executors on real components: a spawn process pool and a local Ray cluster
running digits grids against real SQLite stores, a worker process killed mid-trial, and the
driver stopped with Ctrl-C and SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hashbench import registry
from hashbench.cli import main
from hashbench.errors import UsageError
from hashbench.executors import GridReporter, ProcessExecutor, RayExecutor
from hashbench.progress import Estimates, Reporter
from hashbench.protocol import get_protocol
from hashbench.runner import EXECUTORS, Outcome, RunConfig, TrialSpec, run_grid
from hashbench.tracking import KIND_TAG, Store

HASHBENCH = [sys.executable, "-m", "hashbench.cli"]


def _config(tmp_path, name, **kw):
    base = dict(methods=[registry.get("itq"), registry.get("lsh")], protocol=get_protocol("digits"),
                bits=[8, 16], seeds=[0], tracking_uri=f"sqlite:///{tmp_path}/{name}.db")
    base.update(kw)
    return RunConfig(**base)


def _runs(uri, kind=None):
    store = Store(uri, create=False)
    query = f"tags.`{KIND_TAG}` = '{kind}'" if kind else ""
    return store.client.search_runs([store.experiment_id], filter_string=query)


def _maps(summary):
    return {o.trial.run_key: o.metrics["map"] for o in summary.outcomes if o.status == "FINISHED"}


def _same_records_as_local(tmp_path, executor, name):
    local = run_grid(_config(tmp_path, "local"), Reporter(quiet=True))
    other = run_grid(_config(tmp_path, name), GridReporter(quiet=True), executor=executor)
    assert other.count("FINISHED") == 4 and _maps(other) == _maps(local)  # same run keys, same MAPs
    uri = f"sqlite:///{tmp_path}/{name}.db"
    (parent,) = _runs(uri, "grid")
    trials = _runs(uri, "trial")
    assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert parent.data.tags["hashbench.n_finished"] == "4" and parent.info.status == "FINISHED"
    again = run_grid(_config(tmp_path, name), GridReporter(quiet=True), executor=executor)
    assert again.count("SKIPPED") == 4 and len(_runs(uri, "grid")) == 1  # nothing submitted


def test_process_pool_records_what_the_local_executor_records(tmp_path):
    log_dir = tmp_path / "logs"
    _same_records_as_local(tmp_path, ProcessExecutor(jobs=2, log_dir=log_dir), "process")
    logs = list(log_dir.glob("worker-*.log"))
    assert 1 <= len(logs) <= 2  # one log per worker process, nothing on the driver's stdout


def test_ray_executor_records_what_the_local_executor_records(tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'hashbench[ray]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _same_records_as_local(tmp_path, RayExecutor(allow_local_store=True), "ray")
        # the next grid's ETA comes from the store's earlier runs (the local executor's estimator)
        uri = f"sqlite:///{tmp_path}/ray.db"
        (earlier,) = _trial_seconds(uri, method="lsh", bits=8)
        reporter = EtaLog()
        one = _config(tmp_path, "ray", methods=[registry.get("lsh")], seeds=[1], bits=[8])
        assert run_grid(one, reporter, executor=RayExecutor(allow_local_store=True)).count("FINISHED") == 1
        assert reporter.etas[0] == pytest.approx(earlier)  # before the task took its slot
    finally:
        ray.shutdown()


def test_executors_are_registered_and_local_stores_are_checked(tmp_path, capsys):
    assert set(EXECUTORS) == {"local", "process", "ray"}
    assert isinstance(EXECUTORS["process"](jobs=2), ProcessExecutor)
    sqlite = f"sqlite:///{tmp_path}/s.db"
    ProcessExecutor().check_store(sqlite)  # one machine, one path: fine
    RayExecutor().check_store("http://127.0.0.1:5000")
    RayExecutor(allow_local_store=True).check_store(sqlite)
    with pytest.raises(UsageError, match="local store.*--allow-local-store"):
        RayExecutor().check_store(sqlite)
    # the CLI refuses before anything is recorded (and before Ray is imported)
    assert main(["run", "--methods", "lsh", "--bits", "8", "--executor", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MLflow tracking server" in err
    assert not (tmp_path / "results").exists()
    assert main(["run", "--methods", "lsh", "--bits", "8", "--jobs", "2", "--quiet"]) == 2


# ---------------------------------------------------------------- progress


class EtaLog(GridReporter):
    """A GridReporter that keeps the ETA it computed each time the executor reported its slots."""

    def __init__(self):
        super().__init__(quiet=True)
        self.etas = []

    def running(self, count, queued=0, slots=None):
        super().running(count, queued, slots)
        self.etas.append(self.eta())


def _trial_seconds(uri, **params):
    """Durations (MLflow end - start) of the store's FINISHED trial runs with these params."""
    return [(r.info.end_time - r.info.start_time) / 1000 for r in _runs(uri, "trial")
            if r.info.status == "FINISHED" and all(r.data.params[k] == str(v) for k, v in params.items())]


def test_the_pooled_eta_is_a_list_schedule_of_the_per_method_estimates():
    # the local executor's estimator: the median of earlier runs of the method on the dataset,
    # same bits first (itq: 10 s at 8 bits, 30 s at 16; lsh: 4 s)
    history = [("itq", "digits", 8, 10.0), ("itq", "digits", 16, 30.0), ("lsh", "digits", 8, 4.0),
               ("itq", "cifar10", 8, 999.0)]
    a, b, c, d, e = (TrialSpec("itq", 8, 0, run_key="a"), TrialSpec("itq", 16, 0, run_key="b"),
                     TrialSpec("lsh", 8, 0, run_key="c"), TrialSpec("lsh", 8, 1, run_key="d"),
                     TrialSpec("itq", 8, 1, run_key="e"))
    now = [0.0]
    stream = io.StringIO()
    reporter = GridReporter(stream=stream, interactive=False, clock=lambda: now[0])
    reporter.total = 5
    reporter.planned([a, b, c, d, e])
    reporter.estimates = Estimates(history, "digits")
    reporter.running(0, 0, slots=2)
    assert reporter.eta() == 30  # slots end at 10 and 30; c, d, e follow on the first: 14, 18, 28
    for spec in (a, b):  # a process pool submits as many as it has slots
        reporter.submitted(spec)
    now[0] = 6.0
    assert reporter.eta() == 24  # a: 4 s left, b: 24; c, d, e after a: 8, 12, 22
    now[0] = 10.0
    reporter.trial_done(1, Outcome(a, "FINISHED", metrics={"map": 0.5}, seconds=10.0))
    assert "ETA 20s" in stream.getvalue().splitlines()[-1]  # b: 20 s left; c, d, e: 4, 8, 18
    reporter.submitted(c)
    now[0] = 12.0
    assert reporter.eta() == 18  # b: 18 left, c: 2; d after c: 6, e after d: 16

    # a cluster takes every task at once: only the first `slots` of them run; the others wait
    now[0] = 0.0
    ray_like = GridReporter(quiet=True, clock=lambda: now[0])
    ray_like.estimates = Estimates(history, "digits")
    ray_like.planned([a, b, c])
    ray_like.running(0, 0, slots=1)
    for spec in (a, b, c):
        ray_like.submitted(spec)
    now[0] = 5.0
    assert ray_like.eta() == 5 + 30 + 4
    now[0] = 10.0
    ray_like.trial_done(1, Outcome(a, "FINISHED", seconds=10.0))  # b takes the slot now
    now[0] = 12.0
    assert ray_like.eta() == 28 + 4

    # no earlier run and nothing finished: no ETA; then this grid's mean for every method
    fresh = GridReporter(quiet=True, clock=lambda: now[0])
    fresh.total = 3
    fresh.planned([a, b, c])
    fresh.running(0, 0, slots=1)
    fresh.submitted(a)
    assert fresh.eta() is None and "ETA" not in fresh._counts()
    fresh.trial_done(1, Outcome(a, "FINISHED", seconds=6.0))
    assert fresh.eta() == 12  # b and c at itq's mean so far, 6 s each


# ---------------------------------------------------------------- faults

NAPPER = """
import os, pathlib, time
import numpy as np
from hashbench.api import Hasher, MethodMeta, binarize

class Napper(Hasher):
    meta = MethodMeta(name="napper", title="Napper", citation="test", family="shallow")

    def __init__(self, bits=32, seconds=1.0, folder="."):
        self.bits, self.seconds, self.folder = bits, seconds, folder

    def fit(self, data, ctx):  # tells the test which process runs it, then naps
        pathlib.Path(self.folder, f"napping-{self.bits}").write_text(str(os.getpid()))
        time.sleep(self.seconds)
        return self

    def encode(self, inputs):
        return binarize(np.arange(len(inputs) * self.bits).reshape(len(inputs), self.bits) % 3 - 1.0)
"""


@pytest.fixture
def napper(tmp_path, monkeypatch):
    """A plugin method that naps in fit, installed by entry point for this process and for the
    worker processes it starts (they inherit sys.path and PYTHONPATH)."""
    site = tmp_path / "plugins"
    info = site / "napper_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: napper-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hashbench.methods]\nnapper = napper_mod:Napper\n")
    (site / "napper_mod.py").write_text(textwrap.dedent(NAPPER))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    import napper_mod

    registry.register(napper_mod.Napper)
    yield site
    registry.unregister("napper")
    sys.modules.pop("napper_mod", None)


def _nap_config(tmp_path, bits, seconds):
    return _config(tmp_path, "faults", methods=[registry.get("napper")], bits=bits,
                   params={"napper": {"seconds": seconds, "folder": str(tmp_path)}})


def _wait_for(paths, alive=lambda: True, timeout=120):
    deadline = time.time() + timeout
    while not all(p.exists() for p in paths):
        assert alive(), "the driver stopped before the trials started"
        assert time.time() < deadline, "the trials never started"
        time.sleep(0.1)
    time.sleep(0.3)  # the pid is written: the worker is inside fit


def _in_background(action):
    failures = []

    def run():
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


def _statuses(uri):
    return sorted((int(r.data.params["bits"]), r.info.status, r.data.tags.get("hashbench.error", ""))
                  for r in _runs(uri, "trial"))


def test_a_killed_worker_is_retried_then_failed_and_a_rerun_finishes_exactly_that_trial(tmp_path, napper):
    marker = tmp_path / "napping-8"

    def kill_twice():  # the first attempt and its retry
        for _ in range(2):
            _wait_for([marker])
            pid = int(marker.read_text())
            marker.unlink()
            os.kill(pid, signal.SIGKILL)

    thread, failures = _in_background(kill_twice)
    summary = run_grid(_nap_config(tmp_path, [8, 16], 1.5), GridReporter(quiet=True),
                       executor=ProcessExecutor(jobs=1, max_retries=1))
    thread.join(5)
    assert not failures
    (lost,) = summary.failed
    assert lost.trial.bits == 8 and lost.error.startswith("worker lost") and summary.count("FINISHED") == 1
    uri = f"sqlite:///{tmp_path}/faults.db"
    statuses = _statuses(uri)  # the retry closed its predecessor's run; the driver closed the retry's
    assert [(b, s) for b, s, _ in statuses] == [(8, "FAILED"), (8, "FAILED"), (16, "FINISHED")]
    assert all(e.startswith("worker lost") for b, _, e in statuses if b == 8)

    (finished,) = _trial_seconds(uri, method="napper")
    reporter = EtaLog()
    rerun = run_grid(_nap_config(tmp_path, [8, 16], 1.5), reporter, executor=ProcessExecutor(jobs=1))
    assert (rerun.count("FINISHED"), rerun.count("SKIPPED")) == (1, 1)
    # the pool's ETA: the store's earlier napper run (16 bits) for the one trial left, as local's
    assert reporter.etas[0] == pytest.approx(finished)
    assert [s for _, s, _ in _statuses(uri)] == ["FAILED", "FAILED", "FINISHED", "FINISHED"]  # none RUNNING


def test_ctrl_c_in_the_driver_kills_every_running_trial_and_the_parent(tmp_path, napper):
    def interrupt():
        _wait_for([tmp_path / "napping-8", tmp_path / "napping-16"])
        os.kill(os.getpid(), signal.SIGINT)

    thread, failures = _in_background(interrupt)
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_grid(_nap_config(tmp_path, [8, 16, 24], 120), GridReporter(quiet=True),
                 executor=ProcessExecutor(jobs=2))
    thread.join(5)
    assert not failures and time.time() - started < 100  # the 120 s naps were interrupted
    uri = f"sqlite:///{tmp_path}/faults.db"
    reason = "interrupted (Ctrl-C)"
    assert _statuses(uri) == [(8, "KILLED", reason), (16, "KILLED", reason)]  # 24 never started
    (parent,) = _runs(uri, "grid")
    assert parent.info.status == "KILLED"


def test_sigterm_stops_the_cli_with_143_and_kills_the_running_trial(tmp_path, napper):
    command = HASHBENCH + ["run", "--methods", "napper", "--bits", "8,16", "--param", "napper.seconds=120",
                           "--param", f"napper.folder={tmp_path}", "--executor", "process", "--jobs", "1"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for([tmp_path / "napping-8"], alive=lambda: proc.poll() is None)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out == ""  # worker output and MLflow's "View run" lines stay off the driver's stdout
    uri = f"sqlite:///{tmp_path}/results/mlflow.db"
    assert _statuses(uri) == [(8, "KILLED", "interrupted (SIGTERM)")]
    assert _runs(uri, "grid")[0].info.status == "KILLED"
