"""The store's lifecycle under interrupts: creation is atomic, a non-database file is named."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from hashbench.cli import main
from hashbench.tracking import Store

CLI = [sys.executable, "-m", "hashbench.cli"]


@pytest.mark.parametrize(("sig", "after"), [(signal.SIGINT, 0.0), (signal.SIGTERM, 1.0)],
                         ids=["SIGINT-at-once", "SIGTERM-after-1s"])
def test_ctrl_c_while_the_store_is_created_never_breaks_it(tmp_path, sig, after):
    """The signal arrives while MLflow builds the schema (no template yet, so the migrations
    run for seconds): the store is absent or complete, never half-built, and a rerun works."""
    run = CLI + ["run", "--methods", "lsh", "--bits", "12", "--quiet"]
    env = {**os.environ, "HASHBENCH_CACHE": str(tmp_path / "empty-cache")}
    proc = subprocess.Popen(run, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    creating = tmp_path / "results" / ".mlflow.db.creating"
    deadline = time.monotonic() + 120
    while not creating.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the store was never being created"
        time.sleep(0.01)
    time.sleep(after)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    db = tmp_path / "results" / "mlflow.db"
    assert not list((tmp_path / "results").glob(".*creating*"))
    if db.exists():  # complete, or absent: never half-built
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "experiments", "alembic_version"} <= tables
    again = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    records = Store(f"sqlite:///{db}").trial_records()
    assert "RUNNING" not in {r.status for r in records} and "FINISHED" in {r.status for r in records}


def _schema(db: Path) -> tuple[set, list]:
    with closing(sqlite3.connect(db)) as conn:
        return ({r for r in conn.execute("SELECT type, name, sql FROM sqlite_master")},
                conn.execute("SELECT * FROM alembic_version").fetchall())


def test_a_new_store_starts_as_a_copy_of_the_machines_template(tmp_path, monkeypatch):
    """The first store is built by MLflow's migrations and kept as the template; the next one is
    a copy with the same schema and migration head, and MLflow gives it its own Default
    experiment (artifact root under the folder it is opened from)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HASHBENCH_CACHE", str(cache))
    first = Store(f"sqlite:///{tmp_path}/first.db")
    (template,) = (cache / "stores").glob("empty-mlflow-*.db")
    with closing(sqlite3.connect(template)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    second = Store(f"sqlite:///{tmp_path}/second.db")
    assert _schema(tmp_path / "second.db") == _schema(tmp_path / "first.db")
    default = second.client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location.startswith(str(elsewhere))
    assert first.client.get_experiment("0").artifact_location.startswith(str(tmp_path / "mlruns"))
    run = second.start_run("r", {"hashbench.kind": "trial"})
    run.end("FINISHED")
    assert [r.status for r in second.trial_records()] == ["FINISHED"]
    template.write_bytes(b"not a database")  # a damaged template is ignored and rebuilt
    Store(f"sqlite:///{tmp_path}/third.db")
    tables = [{row[1] for row in _schema(tmp_path / name)[0] if row[0] == "table"} for name in ("first.db", "third.db")]
    assert tables[0] == tables[1] and _schema(tmp_path / "third.db")[1] == _schema(tmp_path / "first.db")[1]
    assert template.read_bytes().startswith(b"SQLite format 3")


def test_a_file_that_is_no_store_is_named_in_one_line(tmp_path, capsys):
    notes = tmp_path / "notes.db"
    notes.write_text("not a database")
    assert main(["report", "--tracking-uri", f"sqlite:///{notes}"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {notes} is not an MLflow store (not an SQLite database); give another --tracking-uri"
