"""The store's lifecycle under interrupts: creation is atomic, a non-database file is named."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from hashbench.cli import main
from hashbench.tracking import Store

CLI = [sys.executable, "-m", "hashbench.cli"]


@pytest.mark.parametrize(("sig", "delay"), [(signal.SIGINT, 1.5), (signal.SIGTERM, 3.0)],
                         ids=["SIGINT-1.5s", "SIGTERM-3s"])
def test_ctrl_c_while_the_store_is_created_never_breaks_it(tmp_path, sig, delay):
    run = CLI + ["run", "--methods", "lsh", "--bits", "12", "--quiet"]
    proc = subprocess.Popen(run, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    db = tmp_path / "results" / "mlflow.db"
    assert not list((tmp_path / "results").glob(".*creating*")) if db.parent.exists() else True
    if db.exists():  # complete, or absent: never half-built
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "experiments", "alembic_version"} <= tables
    again = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    records = Store(f"sqlite:///{db}").trial_records()
    assert "RUNNING" not in {r.status for r in records} and "FINISHED" in {r.status for r in records}


def test_a_file_that_is_no_store_is_named_in_one_line(tmp_path, capsys):
    notes = tmp_path / "notes.db"
    notes.write_text("not a database")
    assert main(["report", "--tracking-uri", f"sqlite:///{notes}"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {notes} is not an MLflow store (not an SQLite database); give another --tracking-uri"
