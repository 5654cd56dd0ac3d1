"""MLflow tracking: the only module of hashbench that imports mlflow.

Store layout (stable names, documented in the README so other tools can query the store):

* one experiment (default ``hashbench``), one **parent run** per ``hashbench run``
  (tag ``hashbench.kind = "grid"``), one **child run** per trial (tag
  ``hashbench.kind = "trial"``, ``mlflow.parentRunId`` pointing at the parent);
* trial params: ``method``, ``protocol``, ``dataset``, ``bits``, ``seed``, ``train_mode``,
  and every hyper-parameter as ``hp.<name>``;
* trial metrics: ``map``, ``train_seconds``, ``encode_query_seconds``,
  ``encode_database_seconds``, ``evaluate_seconds`` and the evaluator's metrics. MLflow
  forbids ``@`` in names, so ``p@100`` is stored as ``p_at_100`` and ``map@5000`` as
  ``map_at_5000`` (:func:`metric_key`). Per-iteration curves logged by methods keep their
  name with a step (e.g. ``quantization_loss``);
* tags: ``hashbench.run_key``, ``hashbench.version``, ``hashbench.git_sha``,
  ``hashbench.split_sha256``, ``hashbench.device``, ``hashbench.method_origin`` and the
  evaluation conventions ``eval.*``;
* artifacts: ``config.json`` (resolved configuration), ``codes.npz`` (packed codes),
  curves as CSV, ``traceback.txt`` for failed trials; the parent holds ``split.npz``.

The default store is ``sqlite:///<cwd>/results/mlflow.db`` (absolute, so ``run`` and
``report`` agree); ``--tracking-uri`` and ``MLFLOW_TRACKING_URI`` override it. The store
is created once, under a file lock, before any run starts, so that two processes started
together on a store that does not exist yet both succeed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hashbench.errors import UsageError

T = TypeVar("T")

DEFAULT_EXPERIMENT = "hashbench"
RUN_KEY_TAG = "hashbench.run_key"
KIND_TAG = "hashbench.kind"
PARENT_TAG = "mlflow.parentRunId"

# MLflow and alembic are chatty at INFO when a store is created.
for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def metric_key(name: str) -> str:
    """The MLflow name of a metric: ``@`` becomes ``_at_`` (``p@100`` -> ``p_at_100``)."""
    return name.replace("@", "_at_")


def default_store_path(cwd: Path | None = None) -> Path:
    return (cwd or Path.cwd()).resolve() / "results" / "mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` > ``$MLFLOW_TRACKING_URI`` > the SQLite file ``results/mlflow.db``.

    A plain path ending in ``.db`` or ``.sqlite`` is taken as a SQLite file; relative
    SQLite paths are made absolute against the current directory.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return f"sqlite:///{default_store_path()}"
    if "://" not in uri:
        if uri.endswith((".db", ".sqlite")):
            return f"sqlite:///{Path(uri).resolve()}"
        raise UsageError(
            f"tracking URI {uri!r} has no scheme; use e.g. sqlite:///path/to/mlflow.db "
            "or a path ending in .db"
        )
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store (no-op for other stores)."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _retry(call: Callable[[], T], attempts: int = 8) -> T:
    """Retry a store call that failed because SQLite was locked by another process."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - mlflow wraps driver errors variously
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class Store:
    """A handle on one MLflow store and experiment."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 create: bool = True) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.experiment_name = experiment
        path = _sqlite_path(self.uri)
        if not create and path is not None and not path.exists():
            raise UsageError(f"no MLflow store at {path}; run `hashbench run` first")
        with _store_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                if not create:
                    raise UsageError(f"experiment {experiment!r} not found in {self.uri}")
                artifacts = None
                if path is not None:
                    artifacts = (path.parent / "mlartifacts").as_uri()
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifacts
                )
            else:
                self.experiment_id = exp.experiment_id

    # ------------------------------------------------------------------ queries

    def finished_run(self, run_key: str) -> str | None:
        """The id of a FINISHED trial with this run key, if any."""
        runs = _retry(lambda: self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'",
            max_results=1,
        ))
        return runs[0].info.run_id if runs else None

    def trial_runs(self) -> list[Any]:
        """Every trial run of the experiment (all statuses), newest first."""
        runs: list[Any] = []
        token = None
        while True:
            page = _retry(lambda token=token: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{KIND_TAG}` = 'trial'",
                max_results=1000,
                page_token=token,
            ))
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # ------------------------------------------------------------------ writes

    def start_run(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> RunRecorder:
        tags = dict(tags)
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = _retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=name))
        return RunRecorder(self.client, run.info.run_id)


class RunRecorder:
    """Writes to one run; per-iteration metrics are buffered and sent in batches."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            _retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_metric(self, name: str, value: float, step: int = 0) -> None:
        """Buffered: flushed every 500 values or 10 seconds, and at the end of the run."""
        from mlflow.entities import Metric

        self._buffer.append(Metric(metric_key(name), float(value), int(time.time() * 1000), step))
        if len(self._buffer) >= 500 or time.monotonic() - self._last_flush > 10:
            self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        for name, value in metrics.items():
            self.log_metric(name, value, step)
        self.flush()

    def flush(self) -> None:
        buffer, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        for i in range(0, len(buffer), 1000):
            _retry(lambda chunk=buffer[i:i + 1000]: self.client.log_batch(self.run_id, metrics=chunk))

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(local_path), artifact_path))

    def log_text(self, text: str, name: str) -> None:
        _retry(lambda: self.client.log_text(self.run_id, text, name))

    def log_json(self, obj: Any, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), name)

    def end(self, status: str = "FINISHED") -> None:
        """Flush and close the run with FINISHED, FAILED or KILLED."""
        try:
            self.flush()
        finally:
            _retry(lambda: self.client.set_terminated(self.run_id, status=status))


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 6000 else text[:5990] + "...(cut)"


def run_record(run: Any) -> dict[str, Any]:
    """A plain dict of one run: id, status, start/end times, params, metrics, tags."""
    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
    }


def metric_history(store: Store, run_id: str, name: str) -> list[tuple[int, float]]:
    """All (step, value) pairs of a metric of one run, ordered by step."""
    history = _retry(lambda: store.client.get_metric_history(run_id, metric_key(name)))
    return sorted((m.step, m.value) for m in history)
