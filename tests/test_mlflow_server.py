"""hashbench against a real MLflow tracking server backed by a real PostgreSQL, both started
by the test: a server cluster made with ``initdb`` in a temporary directory (as ``nobody``
when the tests run as root: PostgreSQL refuses to run as root), then ``mlflow server
--backend-store-uri postgresql+psycopg2://... --artifacts-destination DIR`` on a free port.
Skipped, with the reason, when PostgreSQL's binaries (Debian: ``apt-get install postgresql``)
or psycopg2 are missing."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from hashbench.cli import main
from hashbench.tracking import Store


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))  # Debian keeps them off PATH
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    return ["runuser", "-u", "nobody", "--", *command]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer in {timeout} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_server():
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; Debian: apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install -e '.[test]')")
    root = Path(tempfile.mkdtemp(prefix="hashbench-pg-"))  # under /tmp: reachable by nobody
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    data, pg_log = root / "data", root / "postgres.log"
    pg_port, port = _free_port(), _free_port()
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "hashbench",
                                    "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(pg_log), "-w", "-o",
                                    f"-p {pg_port} -k {root} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    server = None
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "hashbench",
                        "mlflow"], check=True, capture_output=True)
        log = root / "mlflow.log"
        env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1",
             "--backend-store-uri", f"postgresql+psycopg2://hashbench@127.0.0.1:{pg_port}/mlflow",
             "--artifacts-destination", str(root / "artifacts")],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)  # noqa: SIM115
        uri = f"http://127.0.0.1:{port}"
        _wait_http(f"{uri}/health", server, log)
        yield uri
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _finished(uri: str, experiment: str = "hashbench") -> dict[str, float]:
    records = Store(uri, experiment, create=False).trial_records()
    assert all(r.status == "FINISHED" for r in records)
    return {r.run_key: r.metrics["map"] for r in records}


def test_process_pool_against_a_postgresql_backed_server(mlflow_server, tmp_path, capsys):
    grid = ["run", "--methods", "itq,lsh", "--bits", "8,16", "--seeds", "0"]
    assert main([*grid, "--quiet"]) == 0  # the local executor into the default SQLite file
    local = _finished(f"sqlite:///{tmp_path}/results/mlflow.db")
    capsys.readouterr()

    remote = [*grid, "--executor", "process", "--jobs", "2", "--tracking-uri", mlflow_server]
    assert main(remote) == 0
    out, err = capsys.readouterr()
    assert out == "" and "View run" not in err  # progress on stderr only; no MLflow URL lines
    assert "4 finished" in err and "running" in err and "remaining" in err
    assert _finished(mlflow_server) == local  # same run keys, same MAPs

    assert main(remote) == 0  # everything finished: planned and skipped, nothing submitted
    err = capsys.readouterr().err
    assert "4 skipped" in err and "worker process" not in err  # no pool started

    assert main(["report", "--tracking-uri", mlflow_server, "--no-figures", "--out", str(tmp_path / "r1")]) == 0
    served = capsys.readouterr().out
    assert main(["report", "--no-figures", "--out", str(tmp_path / "r2")]) == 0
    assert capsys.readouterr().out == served and "| ITQ |" in served  # the same table from both stores

    # artifacts went through the server to its --artifacts-destination
    run = Store(mlflow_server, create=False).trial_runs()[0]
    names = {a.path for a in Store(mlflow_server, create=False).client.list_artifacts(run.info.run_id)}
    assert {"config.json", "codes.npz"} <= names


def test_ray_and_the_sequential_cli_against_a_postgresql_backed_server(mlflow_server, capsys, monkeypatch):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'hashbench[ray]')")
    grid = ["run", "--methods", "itq,lsh", "--bits", "8,16", "--seeds", "0", "--tracking-uri", mlflow_server]
    # MLflow writes "View run ... at http://..." to stdout when a run on a server ends, unless told
    # not to: the CLI tells it, for the in-process executor too
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    assert main([*grid, "--experiment", "sequential"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "View run" not in err and "4 finished" in err
    sequential = _finished(mlflow_server, "sequential")

    ray_grid = [*grid, "--experiment", "ray", "--executor", "ray"]  # a local Ray started for the run
    assert main(ray_grid) == 0
    out, err = capsys.readouterr()
    assert out == "" and "View run" not in err and "ray: " in err and "4 finished" in err
    assert _finished(mlflow_server, "ray") == sequential  # same run keys, same MAPs

    assert main([*ray_grid, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "4 skipped" in err and "ray: " not in err  # planned and skipped: no Ray started, no task
    assert len(Store(mlflow_server, "ray", create=False).trial_records()) == 4
