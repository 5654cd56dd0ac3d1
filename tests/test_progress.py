"""Progress: per-method ETA estimates (hand-worked), and a real run under a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

from hashbench.progress import Estimates, Reporter, duration


def test_estimates_prefer_this_grids_cell_then_the_store_then_this_grid():
    history = [("adsh", "digits", 12, 10.0), ("adsh", "digits", 12, 30.0), ("adsh", "digits", 24, 50.0),
               ("adsh", "cifar10", 12, 900.0), ("itq", "digits", 12, 0.0)]
    est = Estimates(history, "digits")
    assert est.of("adsh", 12) == 20.0  # median of the same method, dataset and bits
    assert est.of("adsh", 48) == 30.0  # no run at 48 bits: median over the method on the dataset
    assert est.of("itq", 12) is None  # nothing known yet (a zero duration is no estimate)
    est.record("itq", 2.0)
    est.record("lsh", 4.0)
    assert est.of("itq", 12) == 2.0 and est.of("sdh", 12) == 3.0  # this grid: the method, else all
    est.record("adsh", 4.0, bits=12)
    est.record("adsh", 8.0, bits=12)
    # this grid's own trials of the cell come first (the store's 10 and 30 s ran elsewhere) ...
    assert est.of("adsh", 12) == 6.0
    assert est.of("adsh", 24) == 50.0  # ... but only for that code length


def test_eta_sums_the_queue_and_the_running_trial():
    reporter = Reporter(quiet=True)
    reporter.estimates = Estimates([("a", "", 8, 10.0), ("b", "", 8, 100.0)])
    specs = [SimpleNamespace(method=m, bits=8, label=m) for m in ("a", "b", "b")]
    reporter.planned(specs)
    assert reporter.eta() == 210.0
    reporter.trial_started(specs[0])
    reporter._trial_start -= 4  # four seconds into the first trial
    assert abs(reporter.eta() - 206.0) < 0.5
    reporter.close()
    assert duration(206) == "3m26s" and duration(3725) == "1h02m"


def _read_pty(command: list[str], cwd, timeout: float = 300) -> str:
    main_fd, child_fd = pty.openpty()
    # a fresh pty is 0 x 0 and tqdm draws nothing in zero columns: size it like a terminal
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(command, stdin=child_fd, stdout=child_fd, stderr=child_fd, cwd=cwd,
                            env=env, close_fds=True)
    os.close(child_fd)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main_fd)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_run_under_a_terminal_shows_live_progress_and_a_summary(tmp_path):
    """One grid under a pseudo-terminal (one subprocess: the ITQ runs it skips are recorded
    in this process first): the loading line, a bar whose every state after tqdm's first
    drawing carries an ETA ("?" until LSH, which has no history, has a duration), the
    skipped trials and the end summary with the next command."""
    from hashbench.cli import main

    uri = f"sqlite:///{tmp_path}/p.db"
    assert main(["run", "--methods", "itq", "--seeds", "0,1", "--bits", "8", "--quiet", "--tracking-uri", uri]) == 0
    out = _read_pty([sys.executable, "-m", "hashbench.cli", "run", "--tracking-uri", uri, "--seeds", "0,1",
                     "--bits", "8", "--methods", "itq,lsh"], tmp_path)
    assert out.lstrip().startswith("loading methods (itq,lsh) and dataset digits")
    states = re.findall(r"\d/4 \[([^\]]*)\]", out)
    assert len(states) > 3 and all("ETA" in s for s in states[1:]), states
    assert "4/4" in out and "skipped (finished before" in out
    assert "4 trials: 2 finished, 2 skipped, 0 failed in " in out
    assert f"next: hashbench report --tracking-uri {uri}" in out


def test_dry_run_shows_run_or_skip_and_records_nothing(tmp_path, capsys):
    from hashbench.cli import main
    from hashbench.tracking import Store

    uri = f"sqlite:///{tmp_path}/d.db"
    assert main(["run", "--methods", "itq", "--bits", "8", "--quiet", "--tracking-uri", uri]) == 0
    before = len(Store(uri).trial_runs())
    capsys.readouterr()
    assert main(["run", "--methods", "itq,lsh", "--bits", "8", "--seeds", "0,1", "--dry-run", "--quiet",
                 "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert re.search(r"itq bits=8 seed=0\s+skip \(finished: run \w{8}\)", out)
    assert re.search(r"itq bits=8 seed=1\s+run\s+~\d+s", out)  # estimated from seed 0's run
    assert re.search(r"lsh bits=8 seed=0\s+run\s+\?", out)  # no earlier LSH run
    assert "3 to run, 1 to skip; estimated" in out and "+ 2 trial(s) without an earlier run" in out
    assert len(Store(uri).trial_runs()) == before
    assert len(Store(uri).client.search_runs([Store(uri).experiment_id])) == before + 1  # + the first grid
