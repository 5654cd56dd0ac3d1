"""SIGTERM and SIGHUP are handled like Ctrl-C: the running trial is KILLED with the signal's
name, the grid ends KILLED, the CLI exits 128 + the signal number, and a rerun completes. A run
killed with SIGKILL (no handler runs) is closed by the next run of the same trial.

The SIGTERM case interrupts a deep trial (DPSH, torch running); the others use the ``gate``
plugin method (tests/conftest.py), whose trial waits on a file: it runs exactly as long as the
test needs, and the rerun of the very same trial (same run key) finishes at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hashbench.tracking import Store

CLI = [sys.executable, "-m", "hashbench.cli", "run", "--bits", "8", "--seeds", "0"]


def _start_and_wait_for_the_trial(cmd, tmp_path, env, uri):
    """Start ``cmd``; return the process and the store once its trial is RUNNING."""
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    store, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if (tmp_path / "s.db").exists():
            store = store or Store(uri)
            if [r for r in store.trial_records() if r.status == "RUNNING"]:
                return proc, store
        assert proc.poll() is None, proc.communicate()[1]
    proc.kill()
    pytest.fail("the trial never started")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["SIGTERM-dpsh", "SIGHUP-gate", "SIGINT-gate"])
def test_signal_mid_trial_kills_the_trial_and_a_rerun_completes(tmp_path, sig, gate_env):
    uri = f"sqlite:///{tmp_path}/s.db"
    env, gate = gate_env
    env = {**os.environ, **env, "HASHBENCH_TORCH_THREADS": "1"}
    deep = sig == signal.SIGTERM
    cmd = CLI + ["--methods", "dpsh" if deep else "gate", "--tracking-uri", uri]
    proc, store = _start_and_wait_for_the_trial(cmd, tmp_path, env, uri)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name  # a SIGINT is a Ctrl-C
    assert f"interrupted ({name})" in err and "was marked KILLED" in err
    (record,) = store.trial_records()
    assert record.status == "KILLED" and record.error == f"interrupted ({name})"
    grids = store.client.search_runs([store.experiment_id], "tags.`hashbench.kind` = 'grid'")
    assert [g.info.status for g in grids] == ["KILLED"]
    gate.touch()
    rerun = subprocess.run(cmd + (["--param", "dpsh.epochs=5"] if deep else []), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    statuses = sorted(r.status for r in store.trial_records())
    assert statuses == ["FINISHED", "KILLED"] and "RUNNING" not in statuses
    if not deep:  # the same trial: the KILLED run does not count as done
        assert "1 finished, 0 skipped" in rerun.stderr


def test_a_run_whose_process_was_killed_9_is_closed_by_the_next_run(tmp_path, gate_env):
    uri = f"sqlite:///{tmp_path}/s.db"
    env, gate = gate_env
    env = {**os.environ, **env}
    cmd = CLI + ["--methods", "gate", "--tracking-uri", uri, "--quiet"]
    proc, store = _start_and_wait_for_the_trial(cmd, tmp_path, env, uri)
    (running,) = store.trial_records()
    assert running.pid == proc.pid and running.host
    proc.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
    proc.communicate(timeout=30)
    assert [r.status for r in store.trial_records()] == ["RUNNING"]
    gate.touch()
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)  # same key
    assert rerun.returncode == 0, rerun.stderr
    records = {r.status: r for r in store.trial_records()}
    assert set(records) == {"KILLED", "FINISHED"}
    assert f"process {proc.pid}" in records["KILLED"].error and "is gone" in records["KILLED"].error
    assert records["KILLED"].run_key == records["FINISHED"].run_key


def test_an_interrupt_during_a_store_call_is_raised_when_the_call_returns():
    """A signal that lands inside a store call would leave its SQLite connection holding a read
    lock that the KILLED write of the same process then waits on forever; it is held back until
    the call returns. A second signal while one is held acts at once."""
    from hashbench.errors import Interrupted
    from hashbench.tracking import _retry, on_interrupt

    done = []

    def call(signals):
        for sig in signals:
            on_interrupt(sig, None)
        done.append(True)
        return "result"

    with pytest.raises(Interrupted) as held:
        _retry(lambda: call([signal.SIGTERM]))
    assert done == [True] and held.value.exit_code == 143
    with pytest.raises(KeyboardInterrupt):
        _retry(lambda: call([signal.SIGINT, signal.SIGINT]))  # the second one acts at once
    assert done == [True]
    assert _retry(lambda: call([])) == "result"  # nothing is left pending
    with pytest.raises(Interrupted):
        on_interrupt(signal.SIGHUP, None)  # outside a store call: at once
