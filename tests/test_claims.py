"""Claims on run keys: concurrent ``hashbench run`` on one store never train a trial twice, and a
claim never outlives its process (a dead pid on this host, an expired lease on another)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

from hashbench.cli import main
from hashbench.tracking import (
    ERROR_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    KIND_TAG,
    PID_TAG,
    RUN_KEY_TAG,
    Heartbeat,
    Holder,
    RunRecorder,
    Store,
)

CLI = [sys.executable, "-m", "hashbench.cli"]
GRID = ["run", "--methods", "lsh,itq", "--bits", "8,16", "--seeds", "0,1,2", "--quiet"]


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_runs_on_a_new_store_train_every_trial_once(tmp_path, n):
    procs = [subprocess.Popen(CLI + GRID, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errs
    records = Store(f"sqlite:///{tmp_path}/results/mlflow.db").trial_records()
    assert Counter(r.status for r in records) == {"FINISHED": 12}  # nothing RUNNING, nothing twice
    assert len({r.run_key for r in records}) == 12
    # every process accounts for all 12 trials: what it did not run, another had claimed or finished
    for err in errs:
        finished, skipped = _counts(err)
        assert finished + skipped == 12, err
    assert sum(_counts(err)[0] for err in errs) == 12
    again = subprocess.run(CLI + GRID, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and _counts(again.stderr) == (0, 12)


def _counts(err: str) -> tuple[int, int]:
    """(finished, skipped) from the run's closing line."""
    found = re.search(r"(\d+) finished, (\d+) skipped", err)
    assert found, err
    return int(found[1]), int(found[2])


def _trial_key(tmp_path) -> tuple[Store, str]:
    assert main(["run", "--methods", "lsh", "--bits", "8", "--quiet"]) == 0
    store = Store(f"sqlite:///{tmp_path}/results/mlflow.db")
    (record,) = store.trial_records()
    return store, record.run_key


def _holder_run(store: Store, key: str, host: str, pid: int, heartbeat: float | None) -> str:
    tags = {KIND_TAG: "trial", RUN_KEY_TAG: key, HOST_TAG: host, PID_TAG: str(pid)}
    if heartbeat is not None:
        tags[HEARTBEAT_TAG] = f"{heartbeat:.0f}"
    return store.start_run("holder", tags).run_id


def test_a_trial_running_elsewhere_is_skipped_with_who_runs_it(tmp_path, capsys):
    store, key = _trial_key(tmp_path)
    holder = _holder_run(store, key, "node-7", 4242, time.time())  # another host, fresh heartbeat
    capsys.readouterr()
    assert main(["run", "--methods", "lsh", "--bits", "8", "--force"]) == 0
    err = capsys.readouterr().err
    assert f"skipped (running in process 4242 on node-7: run {holder[:12]})" in err
    assert _counts(err) == (0, 1)
    statuses = Counter(r.status for r in store.trial_records())
    assert statuses == {"FINISHED": 1, "RUNNING": 1}  # the holder's run is left to its owner


def test_a_claim_whose_lease_expired_is_closed_and_taken_over(tmp_path):
    store, key = _trial_key(tmp_path)
    stale = _holder_run(store, key, "node-7", 4242, time.time() - 3600)
    claim = store.claim("again", {KIND_TAG: "trial", RUN_KEY_TAG: key}, key, force=True)
    assert isinstance(claim, RunRecorder)
    run = store.client.get_run(stale)
    assert run.info.status == "KILLED"
    assert run.data.tags[ERROR_TAG].startswith("no heartbeat from process 4242 on node-7 for 36")
    assert run.data.tags[ERROR_TAG].endswith("s (lease 600 s); closed as KILLED by a later run")
    assert store.client.get_run(claim.run_id).data.tags[HEARTBEAT_TAG]


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    store, key = _trial_key(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    import socket

    host = socket.gethostname()
    dead = _holder_run(store, key, host, dead_pid, time.time())  # fresh heartbeat, but the pid is gone
    live = Store(store.uri)
    claim = live.claim("again", {}, key, force=True)
    assert isinstance(claim, RunRecorder)
    assert store.client.get_run(dead).data.tags[ERROR_TAG] == (
        f"process {dead_pid} on {host} is gone; closed as KILLED by a later run")
    # and a live pid on this host holds the key, whatever its heartbeat says
    claim.end("KILLED")
    _holder_run(store, key, host, os.getpid(), time.time() - 3600)
    held = store.claim("third", {}, key, force=True)
    assert isinstance(held, Holder) and held.pid == os.getpid() and held.status == "RUNNING"


def test_a_finished_run_holds_the_key_unless_forced(tmp_path):
    store, key = _trial_key(tmp_path)
    (finished,) = store.trial_records()
    held = store.claim("again", {}, key)
    assert held == Holder(finished.run_id, "FINISHED", finished.host, finished.pid)
    assert held.describe() == f"finished by another run meanwhile: run {finished.run_id[:12]}"
    assert isinstance(store.claim("again", {}, key, force=True), RunRecorder)


def test_the_heartbeat_renews_the_lease_while_the_trial_runs(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    recorder = store.start_run("beating", {HEARTBEAT_TAG: "1"})
    with Heartbeat(recorder, interval=0.05):
        deadline = time.monotonic() + 30
        while store.client.get_run(recorder.run_id).data.tags[HEARTBEAT_TAG] == "1":
            assert time.monotonic() < deadline, "no heartbeat was written"
            time.sleep(0.05)
    assert float(store.client.get_run(recorder.run_id).data.tags[HEARTBEAT_TAG]) > time.time() - 600
