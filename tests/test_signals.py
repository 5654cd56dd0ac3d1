"""SIGTERM and SIGHUP are handled like Ctrl-C: the running trial is KILLED with the signal's
name, the grid ends KILLED, the CLI exits 128 + the signal number, and a rerun completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hashbench.tracking import Store


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_mid_trial_kills_the_trial_and_a_rerun_completes(tmp_path, sig):
    uri = f"sqlite:///{tmp_path}/s.db"
    cmd = [sys.executable, "-m", "hashbench.cli", "run", "--methods", "dpsh", "--bits", "8", "--seeds", "0",
           "--tracking-uri", uri]
    env = {**os.environ, "HASHBENCH_TORCH_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    store = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the trial runs
        time.sleep(0.5)
        if (tmp_path / "s.db").exists():
            store = store or Store(uri)
            if [r for r in store.trial_records() if r.status == "RUNNING"]:
                break
    else:
        proc.kill()
        pytest.fail("the trial never started")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    name = signal.Signals(sig).name
    assert f"interrupted ({name})" in err and "was marked KILLED" in err
    (record,) = store.trial_records()
    assert record.status == "KILLED" and record.error == f"interrupted ({name})"
    grids = store.client.search_runs([store.experiment_id], "tags.`hashbench.kind` = 'grid'")
    assert [g.info.status for g in grids] == ["KILLED"]
    rerun = subprocess.run(cmd + ["--param", "dpsh.epochs=5"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    statuses = sorted(r.status for r in store.trial_records())
    assert statuses == ["FINISHED", "KILLED"] and "RUNNING" not in statuses


def test_a_run_whose_process_was_killed_9_is_closed_by_the_next_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/s.db"
    cmd = [sys.executable, "-m", "hashbench.cli", "run", "--methods", "dpsh", "--bits", "8", "--seeds", "0",
           "--tracking-uri", uri, "--quiet", "--param", "dpsh.epochs=400"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    store, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (tmp_path / "s.db").exists():
            store = store or Store(uri)
            running = [r for r in store.trial_records() if r.status == "RUNNING"]
            if running:
                break
    else:
        proc.kill()
        pytest.fail("the trial never started")
    assert running[0].pid == proc.pid and running[0].host
    proc.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
    proc.communicate(timeout=30)
    assert [r.status for r in store.trial_records()] == ["RUNNING"]
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # same run key
    assert rerun.returncode == 0, rerun.stderr
    records = {r.status: r for r in store.trial_records()}
    assert set(records) == {"KILLED", "FINISHED"}
    assert f"process {proc.pid}" in records["KILLED"].error and "is gone" in records["KILLED"].error
