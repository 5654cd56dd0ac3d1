"""Wall time of one grid under ``--executor local`` and the scale-out executors, in one process.

Runs the same ``hashbench run`` command (``hashbench.cli.main`` in this process) once per
executor, each into a fresh MLflow experiment created before its clock starts, and prints per
executor: the wall time, its ratio to the local executor's (the baseline, run first in the same
process), the time of a rerun (every trial skipped, nothing submitted), how many trials
FINISHED, how many of them have the local run's MAP for the same run key (they must all), and
the peak resident memory of this process and every process it started (pool workers, Ray's
processes), summed and sampled every 0.1 s with psutil.

Before the clocks start, one small local grid warms the caches that every executor would
otherwise pay for only once (numba's compiled kernels on disk, the page cache of the imports).

On a shared machine the load drifts between two long runs, so ``--groups`` interleaves them:
the methods are split into groups (``;`` between groups), and each group runs under
``local`` and under ``process`` back to back, in the order local-process, process-local,
local-process, ... (so a drift favours neither). Each run then reports its mean 1-minute
load average (sampled every 2 s) and the CPU the rest of the machine used meanwhile (all
CPUs' busy time from /proc/stat minus that of this process and its descendants, in cores);
the ratio is that of the summed wall times. Together the groups must be the grid (``--methods``
is then ignored).

    nice -n 10 .venv/bin/python benchmarks/executor_speed.py \\
        --groups "linlin;linv;dpsh,lsh,sdh;dhn,fasth,adsh,dsh,cosdish,lfh,kadgh,itq"

    nice -n 10 .venv/bin/python benchmarks/executor_speed.py                       # digits, --methods all
    .venv/bin/python benchmarks/executor_speed.py --methods itq,lsh,sdh --seeds 0,1,2 \\
        --executors local,process,ray --tracking-uri http://127.0.0.1:5000        # the issue-19 grid

Needs psutil (``pip install -e ".[bench]"``) for the memory column; ``ray`` for ``--executors ...,ray``.
With a ``sqlite:`` store (the default: a temporary file) the Ray executor runs with
``--allow-local-store`` (one machine, one path).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


class PeakMemory:
    """Largest summed RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.1) -> None:
        import psutil

        self._psutil, self._every = psutil, every
        self._me = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _total(self) -> int:
        total = 0
        for process in [self._me, *self._me.children(recursive=True)]:
            with contextlib.suppress(self._psutil.Error):
                total += process.memory_info().rss
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(self._every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Load:
    """While a run lasts: the mean 1-minute load average (sampled every ``every`` s) and the
    CPU cores used by everything else on the machine (busy time of all CPUs minus that of this
    process and its descendants, the exited ones included once their parent reaped them)."""

    def __init__(self, every: float = 2.0) -> None:
        import psutil

        self._psutil, self._every = psutil, every
        self._me = psutil.Process()
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) \
            - getattr(times, "guest_nice", 0.0)  # guest time is in user time already

    def _ours(self) -> float:
        total = 0.0
        for process in [self._me, *self._me.children(recursive=True)]:
            with contextlib.suppress(self._psutil.Error):
                t = process.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            self._samples.append(os.getloadavg()[0])

    def __enter__(self) -> Load:
        self._start = (time.perf_counter(), self._busy(), self._ours())
        self._samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall, busy, ours = (b - a for a, b in zip(self._start, (time.perf_counter(), self._busy(),
                                                                 self._ours()), strict=True))
        self.load = sum(self._samples) / len(self._samples)
        self.ours = ours / wall
        self.others = max(0.0, busy - ours) / wall


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """The CLI's stderr (progress) kept for the failure message; its stdout must stay empty."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield err
    if out.getvalue():
        raise SystemExit(f"stdout was not empty: {out.getvalue()[:300]!r}")


def hashbench(argv: list[str]) -> str:
    """Run the CLI; exit 1 (some trial FAILED) is counted by the caller, anything else stops."""
    from hashbench.cli import main

    with captured() as err:
        code = main(argv)
    if code not in (0, 1):
        raise SystemExit(f"hashbench {' '.join(argv)} exited {code}:\n{err.getvalue()[-2000:]}")
    return err.getvalue()


def maps(uri: str, experiment: str) -> tuple[int, int, dict[str, float]]:
    """(FINISHED trials, FAILED trials, MAP by run key of the FINISHED ones)."""
    from hashbench.tracking import Store

    records = Store(uri, experiment, create=False).trial_records()
    finished = [r for r in records if r.status == "FINISHED"]
    failed = sum(r.status == "FAILED" for r in records)
    return len(finished), failed, {r.run_key: r.metrics["map"] for r in finished}


def interleaved(args: argparse.Namespace, uri: str, tag: str, grid: list[str]) -> None:
    """``--groups``: local and process back to back per group of methods, alternating orders."""
    from hashbench.runner import usable_cpus
    from hashbench.tracking import Store

    groups = [g.strip() for g in args.groups.split(";") if g.strip()]
    rows = []  # (group, executor, finished, failed, wall s, load, others' cores, our cores, peak MiB)
    found: dict[str, dict[str, float]] = {"local": {}, "process": {}}
    for i, group in enumerate(groups):
        order = ["local", "process"] if i % 2 == 0 else ["process", "local"]
        for name in order:
            experiment = f"{name}-{i}-{tag}"
            Store(uri, experiment)  # created (and migrated) before the clock starts
            command = [*grid, "--methods", group, "--experiment", experiment, "--executor", name]
            if name == "process":
                command += ["--jobs", str(args.jobs)]
            with PeakMemory() as memory, Load() as load:
                started = time.perf_counter()
                hashbench(command)
                seconds = time.perf_counter() - started
            n_finished, n_failed, maps_ = maps(uri, experiment)
            found[name].update(maps_)
            rows.append((group, name, n_finished, n_failed, seconds, load.load, load.others, load.ours,
                         memory.peak / 2**20))
            print(f"  {group} {name}: {seconds:.1f} s, load {load.load:.1f}, others {load.others:.2f} "
                  f"cores", file=sys.stderr, flush=True)

    same = sum(found["process"].get(key) == value for key, value in found["local"].items())
    shown = f"--dataset {args.dataset} --seeds {args.seeds}" + (f" --bits {args.bits}" if args.bits else "")
    print(f"hashbench run {shown}, the methods in {len(groups)} groups, local and process --jobs "
          f"{args.jobs} interleaved (store {uri.split(':')[0]}); {usable_cpus()} usable CPUs")
    print(f"{'methods':<44} {'executor':<8} {'trials':>6} {'failed':>6} {'wall s':>8} {'ratio':>6} "
          f"{'load':>5} {'others':>6} {'ours':>5} {'peak MiB':>8}")
    for i, (group, name, n, failed, seconds, load, others, ours, peak) in enumerate(rows):
        ratio = ""
        if i % 2:  # the group's second run: local / process of the pair
            pair = {r[1]: r[4] for r in rows[i - 1:i + 1]}
            ratio = f"{pair['local'] / pair['process']:.2f}x"
        print(f"{group[:44]:<44} {name:<8} {n:>6} {failed:>6} {seconds:>8.1f} {ratio:>6} {load:>5.1f} "
              f"{others:>6.2f} {ours:>5.2f} {peak:>8.0f}")
    for name in ("local", "process"):
        mine = [r for r in rows if r[1] == name]
        wall = sum(r[4] for r in mine)
        load = sum(r[5] * r[4] for r in mine) / wall  # time-weighted
        others = sum(r[6] * r[4] for r in mine) / wall
        print(f"{'all groups':<44} {name:<8} {sum(r[2] for r in mine):>6} {sum(r[3] for r in mine):>6} "
              f"{wall:>8.1f} {'':>6} {load:>5.1f} {others:>6.2f}")
    local = sum(r[4] for r in rows if r[1] == "local")
    process = sum(r[4] for r in rows if r[1] == "process")
    print(f"local / process --jobs {args.jobs}: {local / process:.2f}x; MAP equal for "
          f"{same}/{len(found['local'])} run keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="all", help="as hashbench run --methods (default: all)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--bits", help="code lengths (default: the protocol's)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--executors", default="local,process",
                        help="local first (the baseline), then any of process, ray (default: local,process)")
    parser.add_argument("--jobs", type=int, default=2, help="--jobs of the process executor (default: 2)")
    parser.add_argument("--groups", help="method groups ('a,b;c;d,e'): local and process interleaved "
                                         "per group (see above); --executors and --methods are ignored")
    parser.add_argument("--tracking-uri", help="store of every run (default: a temporary SQLite file); "
                                               "each executor gets its own experiment")
    args = parser.parse_args()
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    if executors[:1] != ["local"]:
        raise SystemExit("--executors must start with local (the baseline)")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    folder = Path(tempfile.mkdtemp(prefix="hashbench-executor-speed-"))
    uri = args.tracking_uri or f"sqlite:///{folder}/mlflow.db"
    tag = uuid.uuid4().hex[:8]
    grid = ["run", "--dataset", args.dataset, "--seeds", args.seeds, "--tracking-uri", uri, "--quiet"]
    if args.bits:
        grid += ["--bits", args.bits]

    from hashbench.runner import usable_cpus
    from hashbench.tracking import Store

    hashbench(["run", "--methods", "lsh", "--bits", "8", "--dataset", args.dataset, "--tracking-uri", uri,
               "--experiment", f"warm-up-{tag}", "--quiet"])
    if args.groups:
        interleaved(args, uri, tag, grid)
        return
    grid += ["--methods", args.methods]
    rows, baseline, baseline_maps = [], None, {}
    for name in executors:
        experiment = f"{name}-{tag}"
        Store(uri, experiment)  # created (and migrated) before the clock starts
        command = [*grid, "--experiment", experiment, "--executor", name]
        if name == "process":
            command += ["--jobs", str(args.jobs)]
        if name == "ray" and uri.startswith(("sqlite:", "file:")):
            command += ["--allow-local-store"]
        with PeakMemory() as memory:
            started = time.perf_counter()
            hashbench(command)
            seconds = time.perf_counter() - started
        n_finished, n_failed, found = maps(uri, experiment)
        started = time.perf_counter()  # the rerun: FAILED trials run again, FINISHED ones are skipped
        rerun = hashbench(command)
        rerun_seconds = time.perf_counter() - started
        if n_failed == 0 and " 0 finished" not in rerun:
            raise SystemExit(f"the rerun of {name} ran trials again:\n{rerun[-1000:]}")
        if name == "local":
            baseline, baseline_maps = seconds, found
        same = sum(found.get(key) == value for key, value in baseline_maps.items())
        label = f"process --jobs {args.jobs}" if name == "process" else name
        rows.append((label, n_finished, n_failed, seconds, baseline / seconds, rerun_seconds,
                     f"{same}/{len(baseline_maps)}", memory.peak / 2**20))
        print(f"  {label}: {seconds:.1f} s", file=sys.stderr, flush=True)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    shown = f"--methods {args.methods} --dataset {args.dataset} --seeds {args.seeds}"
    shown += f" --bits {args.bits}" if args.bits else ""
    print(f"hashbench run {shown} (store {uri.split(':')[0]}); {usable_cpus()} usable CPUs, "
          f"load average {load} at the end")
    print(f"{'executor':<18} {'finished':>8} {'failed':>6} {'wall s':>8} {'speed-up':>8} {'rerun s':>8} "
          f"{'same MAP':>9} {'peak RSS MiB':>12}")
    for label, n, failed, seconds, ratio, rerun_seconds, same, peak in rows:
        print(f"{label:<18} {n:>8} {failed:>6} {seconds:>8.1f} {ratio:>7.2f}x {rerun_seconds:>8.1f} "
              f"{same:>9} {peak:>12.0f}")


if __name__ == "__main__":
    main()
