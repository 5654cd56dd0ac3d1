"""Scale-out executors: a pool of worker processes on this machine, or tasks on a Ray cluster.

Both follow the :class:`~hashbench.runner.Executor` contract. The driver (the ``hashbench
run`` process) has already planned the grid, skipped the finished run keys and opened the
parent run; an executor here only ships ``(context, spec)`` pairs to workers and collects the
small :class:`~hashbench.runner.Outcome` each sends back.

* :class:`ProcessExecutor` (``--executor process --jobs N``): a
  :class:`concurrent.futures.ProcessPoolExecutor` of N processes forked from a "forkserver"
  (a clean process, started when the executor is built so that it imports hashbench, MLflow's
  SQL store, scikit-learn and torch once while the driver plans; "spawn" on request). Each
  process builds one :class:`~hashbench.runner.TrialWorker` in its initializer, so the
  dataset is loaded once per process, and writes its output to its own log file. Workers
  see the environment of the driver when its first process executor was built.
* :class:`RayExecutor` (``--executor ray --ray-address auto|HOST:PORT``): one Ray task per
  trial; ``ray`` is imported only here (``pip install "hashbench[ray]"``). CPU trials ask for
  ``num_cpus`` (1 by default); trials of methods that require or prefer a GPU go to a remote
  function declared with ``num_gpus=1`` and ``max_calls=1``, so every GPU trial gets a fresh
  worker process (its CUDA memory is returned when it exits). The context is put in the
  object store once; each worker process keeps its dataset across the trials it runs.

Shared behaviour (:class:`PoolExecutor`):

* **Threads.** A worker sizes its thread pools (the evaluator, LightGBM, OpenMP/BLAS, torch,
  numba) from the CPUs it was given: ``usable CPUs // jobs`` in a process pool, the CPUs Ray
  assigned to the task on a cluster (:func:`limit_threads`).
* **Features.** Before a trial, the modalities its method takes are computed under a file
  lock beside the feature cache, so one process per node extracts image features and the
  others read the cache it wrote.
* **Lost workers.** A trial whose worker process died (killed, out of memory, node lost) is
  retried up to ``max_retries`` times; the retry first closes the RUNNING run its dead
  predecessor left (same run key, same parent) as FAILED with "worker lost". When the retries
  are spent the driver closes it and reports the trial FAILED. A trial that raises is FAILED
  with its traceback, as in-process, and never retried.
* **Ctrl-C / SIGTERM / SIGHUP.** The driver cancels every queued and running task (running ones are
  interrupted and mark their runs KILLED; whatever is still RUNNING after a grace period is
  closed KILLED by the driver), then re-raises so the parent run ends KILLED; the CLI exits
  130 (Ctrl-C), 143 (SIGTERM) or 129 (SIGHUP), as in-process.
* **Stores.** Workers write to the store themselves. A ``sqlite:`` or ``file:`` store is fine
  for a process pool (one machine, one path); the Ray executor refuses it unless
  ``allow_local_store`` (every worker must share the path) and needs an MLflow server
  otherwise (:meth:`PoolExecutor.check_store`).
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from hashbench.errors import ConfigError, Interrupted, UsageError, interruption_name
from hashbench.progress import Reporter, duration
from hashbench.runner import (
    CPUS_ENV,
    EXECUTORS,
    Executor,
    Outcome,
    Plan,
    TrialContext,
    TrialSpec,
    TrialWorker,
    usable_cpus,
)
from hashbench.tracking import ERROR_TAG, PARENT_TAG, RUN_KEY_TAG, RunRecorder, Store

WORKER_LOST = "worker lost"
SUPPRESS_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"  # no "View run" lines on stdout
THREAD_ENVS = (CPUS_ENV, "HASHBENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
LOCAL_STORE_SCHEMES = ("sqlite:", "file:")
# modules the forkserver imports once, so that each pool process (and each replacement of a
# lost one) starts as a fork of a process that has them instead of importing them itself (no
# threads are running there yet; CUDA is not initialised by importing torch). Every worker
# needs them: the SQL store behind a sqlite:/postgresql: URI, the built-in methods' torch and
# scikit-learn. Only imports: the registry itself loads in each worker, so plugins installed
# after the forkserver started are still found.
FORKSERVER_PRELOAD = ("hashbench.executors", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
                      "sklearn.linear_model", "torch")


class WorkerLost(Exception):
    """The process running a trial died before sending its outcome back."""


# ---------------------------------------------------------------- worker side


def limit_threads(cpus: int) -> None:
    """Size this process's thread pools to ``cpus``: the evaluator (``HASHBENCH_CPUS``, read
    by :func:`hashbench.runner.usable_cpus`), LightGBM (``HASHBENCH_THREADS``), libraries
    loaded later (OpenMP, BLAS, numba and torch read the environment when they start), BLAS
    and OpenMP pools loaded already (threadpoolctl), and torch and numba if imported."""
    cpus = max(1, int(cpus))
    if os.environ.get(CPUS_ENV) == str(cpus):
        return
    for name in THREAD_ENVS:
        os.environ[name] = str(cpus)
    from threadpoolctl import threadpool_limits

    threadpool_limits(cpus)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(cpus)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        with contextlib.suppress(Exception):  # numba refuses more than it started with
            numba.set_num_threads(min(cpus, numba.config.NUMBA_NUM_THREADS))


def _runs_of_key(store: Store, parent_id: str | None, key: str) -> list[Any]:
    query = f"tags.`{RUN_KEY_TAG}` = '{key}'"
    if parent_id:
        query += f" and tags.`{PARENT_TAG}` = '{parent_id}'"
    return store.client.search_runs([store.experiment_id], filter_string=query, max_results=1000)


def close_open_runs(store: Store, parent_id: str | None, key: str, status: str, reason: str) -> int:
    """End every RUNNING run of ``key`` under ``parent_id`` with ``status`` and ``reason`` (the
    ``hashbench.error`` tag); returns how many there were. With ``status`` KILLED, runs that
    their worker already ended KILLED get ``reason`` as well (e.g. SIGTERM, not Ctrl-C)."""
    closed = 0
    for run in _runs_of_key(store, parent_id, key):
        recorder = RunRecorder(store.client, run.info.run_id)
        if run.info.status == "RUNNING":
            recorder.set_tags({ERROR_TAG: reason})
            recorder.end(status)
            closed += 1
        elif run.info.status == status == "KILLED":
            recorder.set_tags({ERROR_TAG: reason})
    return closed


class NodeWorker:
    """One worker process's state: a :class:`TrialWorker` for the grid (dataset loaded once,
    store opened once) and the per-trial steps around it."""

    def __init__(self, context: TrialContext, reporter: Reporter | None = None) -> None:
        self.worker = TrialWorker(context, reporter or Reporter(stream=sys.stderr, interactive=False))
        self.in_trial = False

    @property
    def context(self) -> TrialContext:
        return self.worker.context

    def run(self, spec: TrialSpec, attempt: int) -> Outcome:
        ctx = self.context
        if attempt:
            closed = close_open_runs(self.worker.store, ctx.parent_run_id, spec.run_key, "FAILED",
                                     f"{WORKER_LOST} (retried, attempt {attempt + 1})")
            print(f"retry {attempt} of {spec.label}: closed {closed} run(s) of the lost worker",
                  file=sys.stderr, flush=True)
        self.in_trial = True
        try:
            self.prepare(spec)
            return self.worker.run(spec)
        finally:
            self.in_trial = False
            sys.stdout.flush()
            sys.stderr.flush()

    def prepare(self, spec: TrialSpec) -> None:
        """Compute the modalities the trial's method takes once per node: under a file lock
        beside the feature cache, so that concurrent processes wait for one extraction and
        then read its cached file instead of extracting again."""
        dataset = self.worker.dataset
        missing = [m for m in spec.build().modalities if dataset.has(m) and not dataset.is_loaded(m)]
        if not missing:
            return
        from filelock import FileLock

        from hashbench.features import cache_root

        folder = cache_root() / "features"
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / f".{dataset.name}.lock")):
            for modality in missing:
                dataset.modality(modality)


# per-process state of a worker process (process pool or Ray worker)
_NODE: NodeWorker | None = None


def _node_for(context: TrialContext) -> NodeWorker:
    """The worker of this process for ``context``'s grid; the dataset is kept across grids
    when a new grid uses the same data (a long-lived Ray worker)."""
    global _NODE
    if _NODE is not None and _NODE.context.parent_run_id == context.parent_run_id:
        return _NODE
    old = _NODE
    _NODE = NodeWorker(context)
    if old is not None and old.worker._dataset is not None and _same_data(old.context, context):
        _NODE.worker._dataset = old.worker._dataset
    return _NODE


def _same_data(a: TrialContext, b: TrialContext) -> bool:
    return (a.dataset, a.data_root, a.data_options, a.features) == (b.dataset, b.data_root,
                                                                   b.data_options, b.features)


def _child_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM from the driver: interrupt the running trial (it marks its run KILLED), or
    leave at once when idle."""
    if _NODE is not None and _NODE.in_trial:
        raise KeyboardInterrupt
    os._exit(143)


def _init_process(context: TrialContext, cpus: int, log_dir: str) -> None:
    """Initializer of a pool process: own log file, no Ctrl-C (the driver decides), threads
    sized to its share of the CPUs, one worker for the grid."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _child_sigterm)
    os.environ.setdefault(SUPPRESS_URL_ENV, "true")
    log = open(Path(log_dir) / f"worker-{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    limit_threads(cpus)
    _node_for(context)


def _run_in_process(spec: TrialSpec, attempt: int) -> Outcome:
    assert _NODE is not None, "pool process without initializer"
    try:
        return _NODE.run(spec, attempt)
    except KeyboardInterrupt:  # SIGTERM from the driver: the run is marked KILLED; leave
        os._exit(143)


def _trial_in_ray(context: TrialContext, spec: TrialSpec, attempt: int) -> Outcome:
    import ray

    os.environ.setdefault(SUPPRESS_URL_ENV, "true")
    assigned = ray.get_runtime_context().get_assigned_resources()
    limit_threads(max(1, int(assigned.get("CPU", 1))))
    return _node_for(context).run(spec, attempt)


def _ray_cpu_trial(context: TrialContext, spec: TrialSpec, attempt: int) -> Outcome:
    return _trial_in_ray(context, spec, attempt)


def _ray_gpu_trial(context: TrialContext, spec: TrialSpec, attempt: int) -> Outcome:
    return _trial_in_ray(context, spec, attempt)


# ---------------------------------------------------------------- driver side


class GridReporter(Reporter):
    """Driver-side progress for the pooled executors: one line per finished trial (CI logs)
    with trials done / running / failed / remaining and an ETA.

    The ETA uses the local executor's per-trial estimates (:class:`hashbench.progress.Estimates`:
    the median duration of the store's earlier runs of the method on the dataset, same code
    length first, else this grid's mean) and accounts for the parallelism: the trials in
    flight keep their slots (each until its estimate runs out, counted from when it took a
    slot), the rest go, in submission order, to the first slot free (a list schedule). Without
    an estimate for some trial (no earlier run and nothing finished yet) there is no ETA."""

    def __init__(self, stream: Any = None, interactive: bool | None = None, quiet: bool = False,
                 clock: Any = time.monotonic) -> None:
        super().__init__(stream, interactive, quiet)
        self.n_running = self.n_queued = self.n_failed = self.n_ran = self.n_done = 0
        self.slots: int | None = None
        self.clock = clock
        # run key -> [method, bits, when it took a slot (None: waiting)], in submission order
        self._flight: dict[str, list[Any]] = {}

    def submitted(self, spec: TrialSpec) -> None:
        """``spec`` was handed to the backend (a pool process, or the cluster's queue)."""
        key = (spec.method, spec.bits)
        if key in self._queue:
            self._queue.remove(key)
        self._flight.pop(spec.run_key, None)  # a retry goes to the back
        self._flight[spec.run_key] = [spec.method, spec.bits, None]
        self._take_slots()

    def running(self, count: int, queued: int = 0, slots: int | None = None) -> None:
        """``count`` trials running and ``queued`` submitted but waiting for one of ``slots``."""
        if slots is not None:
            self.slots = slots
        self.n_running, self.n_queued = count, queued
        self._take_slots()
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=False)

    def _take_slots(self) -> None:
        """The first ``slots`` trials in flight are running: start their clocks."""
        now = self.clock()
        for i, entry in enumerate(self._flight.values()):
            if self.slots is not None and i >= self.slots:
                break
            if entry[2] is None:
                entry[2] = now

    def eta(self) -> float | None:
        """Seconds until the last trial ends if every trial takes its estimate (list schedule)."""
        now = self.clock()
        slots = max(1, self.slots or len(self._flight))
        busy: list[float] = []
        waiting: list[float] = []
        items = [(m, b, started) for m, b, started in self._flight.values()]
        items += [(m, b, None) for m, b in self._queue]
        for method, bits, started in items:
            guess = self.estimates.of(method, bits)
            if guess is None:
                return None
            if started is not None and len(busy) < slots:
                busy.append(max(guess - (now - started), 0.0))
            else:
                waiting.append(guess)
        free = busy + [0.0] * (slots - len(busy))
        heapq.heapify(free)
        end = max(busy, default=0.0)
        for guess in waiting:
            finish = heapq.heappop(free) + guess
            heapq.heappush(free, finish)
            end = max(end, finish)
        return end

    def _counts(self) -> str:
        remaining = self.total - self.n_done
        queued = f" (+{self.n_queued} queued)" if self.n_queued else ""
        text = (f"done {self.n_done}, running {self.n_running}{queued}, failed {self.n_failed}, "
                f"remaining {remaining}")
        eta = self.eta() if remaining else None
        if eta is not None:
            text += f", ETA {duration(eta)}"
        return text

    def trial_done(self, index: int, outcome: Any) -> None:
        self.n_done = index
        if outcome.status == "SKIPPED":
            super().trial_done(index, outcome)
            return
        self.n_ran += 1
        entry = self._flight.pop(outcome.trial.run_key, None)
        seconds = outcome.seconds or (self.clock() - entry[2] if entry and entry[2] is not None else 0.0)
        if seconds > 0:
            self.estimates.record(outcome.trial.method, seconds, getattr(outcome.trial, "bits", None))
        self._take_slots()
        width = len(str(self.total))
        head = f"[{index:>{width}}/{self.total}] {outcome.trial.label:<28}"
        if outcome.status == "FINISHED":
            m = outcome.metrics
            text = f"{head} map={m.get('map', float('nan')):.4f} train={m.get('train_seconds', 0):.2f}s"
        else:
            self.n_failed += 1
            text = f"{head} {outcome.status}: {outcome.error}"
        text += f" trial={outcome.seconds:.2f}s | {self._counts()}"
        if outcome.flags:
            text += "  FLAGGED: " + "; ".join(f"{k}: {v}" for k, v in outcome.flags.items())
        self._line(text)
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=False)
            self._bar.update(1)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}"


class PoolExecutor(Executor):
    """The driver loop shared by the process pool and Ray: submit, collect outcomes as they
    finish, retry trials whose worker was lost, cancel everything on Ctrl-C or SIGTERM.

    Subclasses provide the backend: ``_start``, ``_capacity`` (most trials in flight, or
    None), ``_submit``, ``_wait``, ``_cancel`` and ``_stop``."""

    local_store_ok = False  # a process pool on one machine may write to a SQLite file

    def __init__(self, max_retries: int = 1, allow_local_store: bool = False) -> None:
        if max_retries < 0:
            raise UsageError(f"--max-retries must be 0 or more, got {max_retries}")
        self.max_retries = max_retries
        self.allow_local_store = allow_local_store
        self._reason = ""

    def check_store(self, uri: str) -> None:
        """Refuse a store the workers may not share (call before planning: nothing recorded)."""
        if self.local_store_ok or self.allow_local_store or not uri.startswith(LOCAL_STORE_SCHEMES):
            return
        raise UsageError(
            f"--executor {self.name} records from every worker, but {uri} is a local store: use an "
            "MLflow tracking server (--tracking-uri http://HOST:5000; README 'Running on a cluster'), "
            "or pass --allow-local-store if every worker shares this path")

    # backend hooks
    def _start(self, plan: Plan, reporter: Reporter) -> None:
        raise NotImplementedError

    def _capacity(self) -> int | None:
        return None

    def _slots(self) -> int | None:
        """How many trials can run at once (for the progress line), when known."""
        return self._capacity()

    def _submit(self, spec: TrialSpec, attempt: int) -> Any:
        raise NotImplementedError

    def _wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        """(handle, Outcome | WorkerLost | exception) for the handles done within ~0.5 s."""
        raise NotImplementedError

    def _cancel(self, handles: list[Any]) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        pass

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C, SIGTERM and SIGHUP raise in the driver (remembering which: the KILLED runs'
        reason), as the CLI handles them; the previous handlers come back afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def interrupt(signum: int, frame: Any) -> None:
            exc = KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(
                signum, signal.Signals(signum).name)
            self._reason = interruption_name(exc)
            raise exc

        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, interrupt) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def execute(self, plan: Plan, reporter: Reporter) -> Iterator[Outcome]:
        if not plan.pending:  # nothing to submit: no pool, no cluster connection
            return
        os.environ.setdefault(SUPPRESS_URL_ENV, "true")
        store = plan.store or Store(plan.context.tracking_uri, plan.context.experiment)
        show = getattr(reporter, "running", None)
        submitted = getattr(reporter, "submitted", None)  # a GridReporter's ETA follows the slots

        def show_running(count: int) -> None:
            if show is not None:
                slots = self._slots()
                shown = slots or count
                show(min(count, shown), max(0, count - shown), slots)
        queue = deque((spec, 0) for spec in plan.pending)
        running: dict[Any, tuple[TrialSpec, int]] = {}
        self._reason = ""
        with self._signals():
            try:
                self._start(plan, reporter)
                show_running(0)  # the slots, before any trial takes one
                while queue or running:
                    capacity = self._capacity()
                    while queue and (capacity is None or len(running) < capacity):
                        spec, attempt = queue.popleft()
                        running[self._submit(spec, attempt)] = (spec, attempt)
                        if submitted is not None:
                            submitted(spec)
                    show_running(len(running))
                    for handle, result in self._wait(list(running)):
                        spec, attempt = running.pop(handle)
                        show_running(len(running))
                        if isinstance(result, Outcome):
                            yield result
                        elif isinstance(result, WorkerLost) and attempt < self.max_retries:
                            reporter.message(f"{spec.label}: {WORKER_LOST} ({result}); retry "
                                             f"{attempt + 1} of {self.max_retries}")
                            queue.appendleft((spec, attempt + 1))
                        else:
                            yield self._failed(store, plan, spec, result)
            except BaseException as exc:  # Ctrl-C, SIGTERM, the consumer stopping, or an error here
                if not self._reason:
                    self._reason = (interruption_name(exc) if isinstance(exc, KeyboardInterrupt)
                                    else "cancelled (the driver stopped)")
                self._shut_down(store, plan, running)
                if plan.parent is not None and not isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
                    with contextlib.suppress(Exception):  # e.g. no cluster: the grid did not run
                        plan.parent.set_tags({ERROR_TAG: _one_line(exc)})
                        plan.parent.end("FAILED")
                raise
            finally:
                self._stop()

    def _failed(self, store: Store, plan: Plan, spec: TrialSpec, error: BaseException) -> Outcome:
        """A trial lost for good (retries spent) or whose exception escaped the worker."""
        lost = isinstance(error, WorkerLost)
        message = f"{WORKER_LOST}: {error}" if lost else _one_line(error)
        if lost and self.max_retries:
            message += f" (after {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'})"
        close_open_runs(store, plan.context.parent_run_id, spec.run_key, "FAILED", message)
        return Outcome(spec, "FAILED", error=message)

    def _shut_down(self, store: Store, plan: Plan, running: dict[Any, tuple[TrialSpec, int]]) -> None:
        with contextlib.suppress(Exception):
            self._cancel(list(running))
        for spec, _ in running.values():
            with contextlib.suppress(Exception):
                close_open_runs(store, plan.context.parent_run_id, spec.run_key, "KILLED", self._reason)


class ProcessExecutor(PoolExecutor):
    """A pool of ``jobs`` worker processes on this machine (default: one per usable CPU)."""

    name = "process"
    local_store_ok = True

    def __init__(self, jobs: int | None = None, max_retries: int = 1, allow_local_store: bool = False,
                 start_method: str = "forkserver", log_dir: str | Path | None = None) -> None:
        super().__init__(max_retries, allow_local_store)
        if jobs is not None and jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {jobs}")
        if start_method not in ("spawn", "forkserver"):
            raise ConfigError(f"start method must be spawn or forkserver, got {start_method!r}")
        self.jobs = jobs
        self.start_method = start_method
        self.log_dir = Path(log_dir) if log_dir else None
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False
        if start_method == "forkserver":  # it imports FORKSERVER_PRELOAD while the driver plans
            multiprocessing.get_context("forkserver").set_forkserver_preload(list(FORKSERVER_PRELOAD))
            multiprocessing.forkserver.ensure_running()

    def _start(self, plan: Plan, reporter: Reporter) -> None:
        jobs = min(self.jobs or usable_cpus(), len(plan.pending))
        cpus = max(1, usable_cpus() // jobs)
        parent = plan.context.parent_run_id or "grid"
        log_dir = self.log_dir or Path(tempfile.gettempdir()) / f"hashbench-workers-{parent[:12]}"
        log_dir.mkdir(parents=True, exist_ok=True)
        each = " each" if jobs > 1 else ""
        reporter.message(f"{jobs} worker process{'es' if jobs > 1 else ''} ({cpus} CPU"
                         f"{'s' if cpus > 1 else ''}{each}); worker logs in {log_dir}")
        self._jobs = jobs
        self._initargs = (plan.context, cpus, str(log_dir))
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context(self.start_method)
        return ProcessPoolExecutor(self._jobs, mp_context=context, initializer=_init_process,
                                   initargs=self._initargs)

    def _capacity(self) -> int | None:
        return self._jobs  # submitted = running: a broken pool loses no queued trial

    def _submit(self, spec: TrialSpec, attempt: int) -> Future:
        assert self._pool is not None
        if self._broken:  # a worker died: the pool is unusable, start a fresh one
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool()
            self._broken = False
        return self._pool.submit(_run_in_process, spec, attempt)

    def _wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        done, _ = wait(handles, timeout=0.5, return_when=FIRST_COMPLETED)
        results = []
        for future in done:
            try:
                results.append((future, future.result()))
            except BrokenProcessPool as exc:
                self._broken = True
                results.append((future, WorkerLost(f"a pool process died: {' '.join(str(exc).split())}")))
            except Exception as exc:  # noqa: BLE001 - escaped the worker: reported, not retried
                results.append((future, exc))
        return results

    def _cancel(self, handles: list[Any]) -> None:
        for future in handles:
            future.cancel()
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for process in processes:  # running trials mark their runs KILLED, idle ones leave
            with contextlib.suppress(Exception):
                process.terminate()
        deadline = time.monotonic() + 15
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(PoolExecutor):
    """One Ray task per trial on a running cluster (``address``: ``auto``, ``HOST:PORT``), or
    on a local Ray started for this run when there is no address and Ray is not initialised."""

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 1, allow_local_store: bool = False,
                 cpus_per_trial: float = 1, num_cpus: int | None = None) -> None:
        super().__init__(max_retries, allow_local_store)
        if cpus_per_trial <= 0:
            raise UsageError(f"CPUs per trial must be positive, got {cpus_per_trial}")
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # refused before anything is recorded
            raise UsageError('--executor ray needs Ray: pip install "hashbench[ray]"')
        self.address = address
        self.cpus_per_trial = cpus_per_trial
        self.num_cpus = num_cpus
        self._owns_ray = False

    def _start(self, plan: Plan, reporter: Reporter) -> None:
        ray = import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False}  # worker output stays in their logs
            if self.address is None:  # a new local Ray for this run: "local", never a cluster found
                # through RAY_ADDRESS or the last `ray start` on this machine (possibly long gone)
                options.update(include_dashboard=False, num_cpus=self.num_cpus)
            try:
                ray.init(address=self.address or "local", **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"cannot start or reach Ray (--ray-address {self.address or 'none'}): "
                                 f"{' '.join(str(exc).split())[:300]}") from None
            self._owns_ray = True
        resources = ray.cluster_resources()
        # a trial goes to a GPU task only where one can run: with no GPU in the cluster a
        # GPU-preferring method runs on a CPU task, a GPU-requiring one fails there (recorded)
        self._gpu_trials = resources.get("GPU", 0) >= 1 and plan.context.device != "cpu"
        self._context = ray.put(plan.context)  # shipped once, shared by every task
        self._cpu_task = ray.remote(num_cpus=self.cpus_per_trial, max_retries=0)(_ray_cpu_trial)
        self._gpu_task = ray.remote(num_cpus=self.cpus_per_trial, num_gpus=1, max_calls=1,
                                    max_retries=0)(_ray_gpu_trial)
        self._ray = ray
        gpu_slots = int(resources.get("GPU", 0)) if self._gpu_trials else 0
        self._slot_count = max(1, int(resources.get("CPU", 1) // self.cpus_per_trial)) + gpu_slots
        reporter.message(f"ray: {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs "
                         f"in the cluster; {len(plan.pending)} tasks; worker logs stay on the nodes "
                         "(/tmp/ray/session_latest/logs)")

    def _slots(self) -> int | None:
        return self._slot_count  # an estimate: Ray schedules, and other jobs may hold CPUs

    def _submit(self, spec: TrialSpec, attempt: int) -> Any:
        gpu = self._gpu_trials and spec.method_class.meta.requires != "cpu"
        return (self._gpu_task if gpu else self._cpu_task).remote(self._context, spec, attempt)

    def _wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        ray = self._ray
        ready, rest = ray.wait(handles, num_returns=1, timeout=0.5)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        results = []
        for ref in ready:
            try:
                results.append((ref, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # raised in the task, outside the trial
                results.append((ref, exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause")
                                 else exc))
            except ray.exceptions.TaskCancelledError as exc:
                results.append((ref, exc))
            except ray.exceptions.RayError as exc:  # worker crashed, node died, out of memory
                results.append((ref, WorkerLost(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")))
        return results

    def _cancel(self, handles: list[Any]) -> None:
        ray = self._ray
        for ref in handles:  # queued tasks never start; running ones get KeyboardInterrupt
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)
        if handles:
            _, stuck = ray.wait(handles, num_returns=len(handles), timeout=15)
            for ref in stuck:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _stop(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError('--executor ray needs Ray: pip install "hashbench[ray]"') from None
    return ray


def from_options(name: str, **options: Any) -> Executor:
    """The executor ``name`` of :data:`hashbench.runner.EXECUTORS`, built with the options it
    takes (others, left at None, are dropped)."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")
    return EXECUTORS[name](**{k: v for k, v in options.items() if v is not None})


__all__ = ["GridReporter", "NodeWorker", "PoolExecutor", "ProcessExecutor", "RayExecutor", "WorkerLost",
           "close_open_runs", "from_options", "limit_threads"]
