"""The fault suite (issue 16): bad input and faults against the real CLI in subprocesses and a
real SQLite store. Every case checks the exit code, a one-line message (no traceback), that
nothing is left RUNNING and, where the store exists, ``PRAGMA integrity_check`` and that a
rerun runs exactly the trials that did not finish.

Elsewhere: Ctrl-C while the store is created (test_store_lifecycle), SIGTERM / SIGHUP mid-trial
and a SIGKILLed run (test_signals), Ctrl-C mid-trial and a plugin returning bad codes
(test_cli), two and four concurrent runs (test_claims), bad --param values (test_params)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pytest

CLI = [sys.executable, "-m", "hashbench.cli"]
RUN = ["run", "--quiet"]


def hashbench(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HASHBENCH_DATA")}
    env.update(kw.pop("env", {}))
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, **kw)


def one_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The process exited ``code`` with exactly one line on stderr, an error naming ``fragments``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def store_state(db: Path) -> Counter:
    """Trial statuses of a store, after checking its integrity."""
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                            "WHERE t.key = 'hashbench.kind' AND t.value = 'trial'").fetchall()
        grids = conn.execute("SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                             "WHERE t.key = 'hashbench.kind' AND t.value = 'grid'").fetchall()
    assert "RUNNING" not in {g for (g,) in grids}
    return Counter(s for (s,) in rows)


def finished_keys(db: Path) -> Counter:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                            "WHERE t.key = 'hashbench.run_key' AND r.status = 'FINISHED'").fetchall()
    return Counter(k for (k,) in rows)


# ---------------------------------------------------------------- bad input: one line, nothing recorded


def _data_files(folder: Path) -> None:
    rng = np.random.default_rng(0)
    feats, classes = rng.standard_normal((60, 4)), np.arange(60) % 3
    np.savez(folder / "empty.npz", features=feats, labels=np.zeros(0, dtype=int))
    np.savez(folder / "rows.npz", features=feats, labels=classes[:50])
    nan = feats.copy()
    nan[[2, 9]] = np.nan
    np.savez(folder / "nan.npz", features=nan, labels=classes)
    (folder / "corrupt.npz").write_bytes(b"this is no archive")
    (folder / "notes.db").write_text("not a database")
    with closing(sqlite3.connect(folder / "other.db")) as conn:
        conn.execute("CREATE TABLE mine (x)")
        conn.commit()
    (folder / "folder.db").mkdir()
    np.save(folder / "codes.npy", np.ones((5, 8)))
    np.save(folder / "labels.npy", np.arange(5))


FEATURES = ["--methods", "lsh", "--bits", "8", "--dataset", "features", "--data-option"]
# case -> (arguments, exit code, fragments of the one-line message)
BAD_INPUT = {
    "unknown method": (RUN + ["--methods", "itqq"], 2, ["'itqq'", "did you mean 'itq'"]),
    "unknown dataset": (RUN + ["--methods", "lsh", "--dataset", "digitz"], 2, ["did you mean 'digits'"]),
    "unknown protocol": (RUN + ["--methods", "lsh", "--protocol", "adsh2018-cifar"], 2,
                         ["did you mean 'adsh2018-cifar10'"]),
    "unknown param": (RUN + ["--methods", "itq", "--param", "itq.n_itr=5"], 2, ["did you mean 'n_iter'"]),
    "unknown data option": (RUN + FEATURES + ["pat=x.npz"], 2, ["no option 'pat'", "did you mean 'path'"]),
    "bits 0": (RUN + ["--methods", "lsh", "--bits", "0"], 2, ["--bits", "below the minimum of 1"]),
    "seeds not integers": (RUN + ["--methods", "lsh", "--seeds", "0,x"], 2, ["--seeds", "'x' is not an integer"]),
    "param out of range": (RUN + ["--methods", "itq", "--param", "itq.n_iter=-5"], 2, ["itq.n_iter", "-5"]),
    "param of the wrong type": (RUN + ["--methods", "itq", "--param", "itq.n_iter=abc"], 2,
                                ["itq.n_iter", "'abc'"]),
    "bits as a param": (RUN + ["--methods", "itq", "--param", "itq.bits=8"], 2, ["--bits"]),
    "too many bits": (RUN + ["--methods", "lsh", "--bits", "100000"], 2, ["100000"]),
    "missing data file": (RUN + FEATURES + ["path=nope.npz"], 1, ["feature file not found: nope.npz"]),
    "corrupt data file": (RUN + FEATURES + ["path=corrupt.npz"], 1,
                          ["corrupt.npz", "not a valid .npz archive"]),
    "empty labels": (RUN + FEATURES + ["path=empty.npz"], 1, ["empty.npz", "labels array is empty"]),
    "mismatched rows": (RUN + FEATURES + ["path=rows.npz"], 1, ["rows.npz", "60 feature rows but 50 label rows"]),
    "NaN features": (RUN + FEATURES + ["path=nan.npz"], 1, ["nan.npz", "2 feature rows contain NaN"]),
    "empty labels (data check)": (["data", "check", "features", "--data-option", "path=empty.npz"], 1,
                                  ["empty.npz", "labels array is empty"]),
    "CIFAR-10 absent, download=no": (RUN + ["--methods", "lsh", "--dataset", "cifar10", "--data-option",
                                            "download=no"], 1,
                                     ["CIFAR-10 not found", "--data-root", "HASHBENCH_DATA", "download=auto"]),
    "corrupt code file (evaluate)": (["evaluate", "--query-codes", "corrupt.npz", "--database-codes", "codes.npy",
                                      "--query-labels", "labels.npy", "--database-labels", "labels.npy"], 1,
                                     ["corrupt.npz", "not a valid .npz file"]),
    "evaluate --topk 0": (["evaluate", "--query-codes", "codes.npy", "--database-codes", "codes.npy",
                           "--query-labels", "labels.npy", "--database-labels", "labels.npy", "--topk", "0"], 2,
                          ["--topk must be a positive integer, got 0"]),
    "non-database store (run)": (RUN + ["--methods", "lsh", "--tracking-uri", "notes.db"], 2,
                                 ["notes.db is not an MLflow store"]),
    "non-database store (report)": (["report", "--tracking-uri", "notes.db"], 2, ["notes.db is not an MLflow store"]),
    "a folder as the store": (["report", "--tracking-uri", "folder.db"], 1, ["folder.db is a folder"]),
    "another program's SQLite file (run)": (RUN + ["--methods", "lsh", "--tracking-uri", "other.db"], 2,
                                            ["other.db is not an MLflow store (an SQLite database of something else)"]),
    "another program's SQLite file (report)": (["report", "--tracking-uri", "other.db"], 2,
                                               ["other.db is not an MLflow store"]),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every bad-input case, each in its own folder and process, four at a time."""
    root = tmp_path_factory.mktemp("bad-input")

    def one(item):
        name, (args, _, _) = item
        folder = root / name.replace(" ", "_").replace(",", "").replace("=", "")
        folder.mkdir()
        _data_files(folder)
        return name, (hashbench(args, folder), folder)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, BAD_INPUT.items()))


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_records_nothing(bad_input_results, case):
    proc, folder = bad_input_results[case]
    _, code, fragments = BAD_INPUT[case]
    one_line(proc, code, *fragments)
    assert "Traceback" not in proc.stderr
    assert not (folder / "results").exists() and not (folder / "data").exists()
    assert (folder / "notes.db").read_text() == "not a database"  # files in the way are never written
    with closing(sqlite3.connect(folder / "other.db")) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["mine"]


def test_results_is_a_file(tmp_path):
    (tmp_path / "results").write_text("my notes")
    for args in (RUN + ["--methods", "lsh", "--bits", "8"], ["report"]):
        one_line(hashbench(args, tmp_path), 1, f"{tmp_path / 'results'} is a file, not a folder")
    assert (tmp_path / "results").read_text() == "my notes"


# ---------------------------------------------------------------- plugins


RAISER = """
from hashbench.api import Hasher, MethodMeta


class Raiser(Hasher):
    meta = MethodMeta(name="raiser", title="Raiser", citation="test", family="shallow")

    def __init__(self, bits=32):
        self.bits = bits

    def fit(self, data, ctx):
        raise RuntimeError("the plugin gave up")

    def encode(self, inputs):
        raise AssertionError("never reached")
"""


def test_a_raising_plugin_fails_its_trial_and_the_rest_finish(tmp_path, plugin_env):
    env = plugin_env("raiser", RAISER, "Raiser")
    args = RUN + ["--methods", "raiser,lsh", "--bits", "8", "--seeds", "0,1"]
    proc = hashbench(args, tmp_path, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "FAILED raiser bits=8 seed=0: RuntimeError: the plugin gave up" in proc.stderr
    db = tmp_path / "results" / "mlflow.db"
    assert store_state(db) == {"FAILED": 2, "FINISHED": 2}
    rerun = hashbench(args, tmp_path, env=env)  # only the failed trials run again
    assert rerun.returncode == 1 and "2 finished, 2 skipped, 2 failed" not in rerun.stderr
    assert "0 finished, 2 skipped, 2 failed" in rerun.stderr
    assert store_state(db) == {"FAILED": 4, "FINISHED": 2}


# ---------------------------------------------------------------- signals between trials


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_while_a_grid_of_short_trials_runs(tmp_path, sig):
    """Sent once the first trial finished (between trials or inside one): the store is intact, no
    run is left RUNNING, and the rerun runs exactly the trials that had not finished."""
    args = RUN + ["--methods", "lsh", "--bits", "8,16", "--seeds", "0,1,2"]
    db = tmp_path / "results" / "mlflow.db"
    proc = subprocess.Popen(CLI + args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (db.exists() and finished_keys(db)):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no trial finished"
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the grid finished before the signal arrived")
    assert proc.returncode == 128 + sig if sig != signal.SIGINT else proc.returncode == 130, err
    assert "Traceback" not in err and "rerun the same command to finish the rest" in err
    before = store_state(db)
    assert set(before) <= {"FINISHED", "KILLED"}
    done = before["FINISHED"]
    rerun = hashbench(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - done} finished, {done} skipped, 0 failed" in rerun.stderr
    keys = finished_keys(db)
    assert len(keys) == 6 and set(keys.values()) == {1}


# ---------------------------------------------------------------- store faults


@contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """``folder`` made read-only: by permissions, or for root (who ignores them) by a read-only
    bind mount of it on itself. Yields the error text a write meets."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield "permission denied"
        finally:
            for path in paths:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    for step in (["mount", "--bind", str(folder), str(folder)],
                 ["mount", "-o", "remount,bind,ro", str(folder)]):
        made = subprocess.run(step, capture_output=True, text=True)
        if made.returncode != 0:
            if step[1] != "--bind":
                subprocess.run(["umount", str(folder)])
            pytest.skip(f"running as root, which ignores permissions, and cannot bind-mount read-only: "
                        f"{made.stderr.strip()}")
    try:
        yield "read-only file system"
    finally:
        if subprocess.run(["umount", str(folder)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_read_only_store_is_reported_and_never_written(tmp_path):
    args = RUN + ["--methods", "lsh", "--bits", "8"]
    assert hashbench(args, tmp_path).returncode == 0
    results, db = tmp_path / "results", tmp_path / "results" / "mlflow.db"
    before = db.read_bytes()
    with read_only(results) as problem:
        report = hashbench(["report", "--no-figures", "--out", str(tmp_path / "out")], tmp_path)
        assert report.returncode == 0, report.stderr
        assert "LSH" in report.stdout and (tmp_path / "out" / "report.md").exists()
        default_out = hashbench(["report", "--no-figures"], tmp_path)  # the tables, then one line
        assert "LSH" in default_out.stdout
        one_line(default_out, 1, str(results), problem)
        run = hashbench(args + ["--methods", "itq"], tmp_path)
        one_line(run, 1, "cannot write the MLflow store", problem, "`hashbench report` can still read it")
    assert db.read_bytes() == before and store_state(db) == {"FINISHED": 1}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: an unreadable store needs a non-root user")
def test_an_unreadable_store_is_one_line(tmp_path):
    assert hashbench(RUN + ["--methods", "lsh", "--bits", "8"], tmp_path).returncode == 0
    db = tmp_path / "results" / "mlflow.db"
    db.chmod(0)
    try:
        for args in (["report"], RUN + ["--methods", "lsh", "--bits", "8"]):
            one_line(hashbench(args, tmp_path), 1, f"cannot read the MLflow store {db}: permission denied")
    finally:
        db.chmod(0o644)
    assert store_state(db) == {"FINISHED": 1}


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root with the right to mount), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a disk-full filesystem needs root to mount a size-limited tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


def _fill(folder: Path, leave_kib: int) -> Path:
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave_kib * 1024))
    return filler


def test_a_full_disk_before_the_first_trial_and_mid_grid(tmp_path, small_disk):
    db = small_disk / "s.db"
    uri = ["--tracking-uri", f"sqlite:///{db}"]
    # before the store exists: nothing is left behind
    filler = _fill(small_disk, 64)
    one_line(hashbench(RUN + ["--methods", "lsh", "--bits", "8"] + uri, tmp_path), 1,
             f"cannot write the MLflow store {db}", "disk is full")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "s.db.lock"]
    filler.unlink()
    # mid-grid: one trial recorded, then the disk fills up
    assert hashbench(RUN + ["--methods", "lsh", "--bits", "8"] + uri, tmp_path).returncode == 0
    filler = _fill(small_disk, 40)
    grid = RUN + ["--methods", "lsh,itq", "--bits", "8,16", "--seeds", "0,1"] + uri
    one_line(hashbench(grid, tmp_path), 1, f"cannot write the MLflow store {db}", "disk is full")
    filler.unlink()
    done = store_state(db)["FINISHED"]  # the grid itself ended (FAILED), never RUNNING
    rerun = hashbench(grid, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{8 - done} finished, {done} skipped, 0 failed" in rerun.stderr
    state = store_state(db)
    assert state["FINISHED"] == 8 and set(state) <= {"FINISHED", "FAILED", "KILLED"}
    assert set(finished_keys(db).values()) == {1}
