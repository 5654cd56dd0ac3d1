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
together on a store that does not exist yet both succeed. ``report`` opens an existing
store without the lock, so it reads a store in a folder it cannot write to.

**Claims.** A trial starts through :meth:`Store.claim`: under the store's lock it looks for
runs of the trial's run key and starts its own RUNNING run only when none FINISHED (unless
``force``) and none is RUNNING in a live process; otherwise it returns the :class:`Holder`
and the trial is skipped. The RUNNING run is the claim: it records host and pid, and a
heartbeat tag renewed every minute while the trial runs (:class:`Heartbeat`). A claim is
stale, closed KILLED and taken over, when its process is gone (same host, dead pid) or, for
another host, when its heartbeat is older than the lease (``HASHBENCH_LEASE_SECONDS``,
default 600). The lock is a file beside a SQLite store (every process using the file shares
it); for other stores it is a file in this machine's cache, so two drivers on different
machines against one server are not serialised by it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hashbench.errors import Interrupted, StoreError, UsageError, os_error_line, positive_int_env

T = TypeVar("T")

DEFAULT_EXPERIMENT = "hashbench"

# ---------------------------------------------------------------- the store schema
# Every name hashbench writes to or reads from MLflow is defined here, once. The runner
# writes through TrialRecord / GridRecord and the report reads through TrialRecord.from_run;
# nothing else spells a tag, param or artifact name. The README's store table lists them.

KIND_TAG = "hashbench.kind"                  # "grid" (parent run) or "trial" (child run)
PARENT_TAG = "mlflow.parentRunId"
RUN_KEY_TAG = "hashbench.run_key"
VERSION_TAG = "hashbench.version"
GIT_SHA_TAG = "hashbench.git_sha"
SPLIT_TAG = "hashbench.split_sha256"
EVAL_SPLIT_TAG = "hashbench.eval_split_sha256"
EVAL_DESCRIPTION_TAG = "hashbench.eval_description"
PROTOCOL_TAG = "hashbench.protocol"
PROTOCOL_OVERRIDES_TAG = "hashbench.protocol_overrides"
DEVICE_TAG = "hashbench.device"
METHOD_ORIGIN_TAG = "hashbench.method_origin"
METHOD_TITLE_TAG = "hashbench.method_title"
METHOD_SHA_TAG = "hashbench.method_sha256"  # SHA-256 of the method's source file
METHOD_REVISION_TAG = "hashbench.method_revision"  # MethodMeta.revision (absent in older stores)
DISPLAY_NAME_TAG = "hashbench.display_name"
VARIANT_TAG = "hashbench.variant"            # "D" for the paper's "-D" variants, else ""
TRAIN_MODE_SOURCE_TAG = "hashbench.train_mode_source"  # "protocol" or "--train-mode"
HOST_TAG = "hashbench.host"                  # where the trial's process ran, and its pid:
PID_TAG = "hashbench.pid"                    # a later run closes it if that process is gone
HEARTBEAT_TAG = "hashbench.heartbeat"        # unix seconds, renewed while a trial runs (its lease)
MODALITIES_TAG = "hashbench.modalities"
COMMAND_TAG = "hashbench.command"
NOTE_TAG = "mlflow.note.content"             # the run's (or experiment's) description in the MLflow UI
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3: a classic ML experiment, not a GenAI one
EXPERIMENT_KIND = "custom_model_development"
EXPERIMENT_NOTE = ("hashbench trials: one parent run per `hashbench run`, one child run per trial "
                   "(method, protocol, bits, seed). Compare methods: select runs, Compare; "
                   "curves are artifacts under curves/.")
ERROR_TAG = "hashbench.error"
FLAG_PREFIX = "hashbench.flag."
CONVENTION_PREFIX = "eval."
DATA_PREFIXES = ("dataset.", "features.")
COUNT_TAG = "hashbench.n_{status}"           # on the parent: trials per outcome
LEGACY_LEARNS_DATABASE_TAG = "hashbench.learns_database"  # read from stores before core v2
LEGACY_INPUT_TAG = "hashbench.input"

HP_PREFIX = "hp."
PARAMS = ("method", "protocol", "dataset", "bits", "seed", "train_mode")

TIMING_METRICS = ("train_seconds", "encode_query_seconds", "encode_database_seconds",
                  "evaluate_seconds")

CONFIG_ARTIFACT = "config.json"
CODES_ARTIFACT = "codes.npz"
TRACEBACK_ARTIFACT = "traceback.txt"
SPLIT_ARTIFACT = "split.npz"
PROTOCOL_ARTIFACT = "protocol.json"


@dataclass
class TrialRecord:
    """One trial as the store holds it: the fields the runner writes when the trial starts
    (:meth:`to_mlflow`) and everything the report reads back (:meth:`from_run`).

    ``data_tags`` are the dataset's provenance (``dataset.*``), the feature extractor
    (``features.*``) and the protocol overrides; ``conventions`` the evaluation conventions
    (``eval.*``). Stores written before these names were gathered here read back the same
    (``variant`` is derived from the old ``hashbench.learns_database`` tag).
    """

    method: str
    protocol: str
    dataset: str
    bits: int
    seed: int
    train_mode: str
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    run_key: str = ""
    title: str = ""
    display: str = ""
    variant: bool = False
    train_mode_source: str = ""
    host: str = ""
    pid: int = 0
    modalities: str = ""
    method_origin: str = ""
    method_sha256: str = ""
    method_revision: int = 0  # MethodMeta.revision; 0 = not recorded (stores before the tag)
    version: str = ""
    git_sha: str = ""
    split_sha256: str = ""
    eval_split_sha256: str = ""
    eval_description: str = ""
    device: str = ""
    conventions: dict[str, str] = field(default_factory=dict)
    data_tags: dict[str, str] = field(default_factory=dict)
    # filled in by the store
    run_id: str = ""
    status: str = ""
    start_time: int | None = None
    end_time: int | None = None
    error: str = ""
    flags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        """The MLflow params: the trial's coordinates and ``hp.<name>`` per hyper-parameter."""
        return {"method": self.method, "protocol": self.protocol, "dataset": self.dataset,
                "bits": self.bits, "seed": self.seed, "train_mode": self.train_mode,
                **{f"{HP_PREFIX}{k}": v for k, v in self.hyper_parameters.items() if k != "bits"}}

    def tags(self) -> dict[str, str]:
        """The MLflow tags written when the trial starts."""
        return {
            **self.data_tags,
            KIND_TAG: "trial",
            VERSION_TAG: self.version,
            GIT_SHA_TAG: self.git_sha,
            SPLIT_TAG: self.split_sha256,
            EVAL_SPLIT_TAG: self.eval_split_sha256,
            EVAL_DESCRIPTION_TAG: self.eval_description,
            PROTOCOL_TAG: self.protocol,
            DEVICE_TAG: self.device,
            **self.conventions,
            RUN_KEY_TAG: self.run_key,
            METHOD_ORIGIN_TAG: self.method_origin,
            METHOD_SHA_TAG: self.method_sha256,
            METHOD_REVISION_TAG: str(self.method_revision),
            METHOD_TITLE_TAG: self.title,
            DISPLAY_NAME_TAG: self.display,
            VARIANT_TAG: "D" if self.variant else "",
            TRAIN_MODE_SOURCE_TAG: self.train_mode_source,
            HOST_TAG: self.host,
            PID_TAG: str(self.pid),
            MODALITIES_TAG: self.modalities,
            NOTE_TAG: (f"{self.display or self.title or self.method} on {self.dataset} "
                       f"(protocol {self.protocol}), {self.bits} bits, seed {self.seed}, "
                       f"{self.train_mode} training set"),
        }

    def to_mlflow(self) -> tuple[dict[str, Any], dict[str, str]]:
        """``(params, tags)`` for a new trial run."""
        return self.params(), self.tags()

    @property
    def run_name(self) -> str:
        return f"{self.method}-{self.bits}b-s{self.seed}"

    @staticmethod
    def flag_tags(flags: dict[str, Any]) -> dict[str, str]:
        return {f"{FLAG_PREFIX}{k}": str(v) for k, v in flags.items()}

    @classmethod
    def from_run(cls, run: Any) -> TrialRecord:
        """Read one MLflow trial run back (any status, any hashbench version)."""
        p, t = dict(run.data.params), dict(run.data.tags)
        train_mode = p.get("train_mode", "")
        title = t.get(METHOD_TITLE_TAG, p.get("method", ""))
        if VARIANT_TAG in t:
            variant = t[VARIANT_TAG] == "D"
        else:  # before core v2: methods that learned the database were never "-D" variants
            variant = train_mode == "full" and t.get(LEGACY_LEARNS_DATABASE_TAG, "false") != "true"
        return cls(
            method=p.get("method", ""),
            protocol=p.get("protocol", t.get(PROTOCOL_TAG, "")),
            dataset=p.get("dataset", ""),
            bits=int(p["bits"]) if "bits" in p else -1,
            seed=int(p["seed"]) if "seed" in p else -1,
            train_mode=train_mode,
            hyper_parameters={k[len(HP_PREFIX):]: v for k, v in p.items() if k.startswith(HP_PREFIX)},
            run_key=t.get(RUN_KEY_TAG, run.info.run_id),
            title=title,
            display=t.get(DISPLAY_NAME_TAG) or (f"{title}-D" if train_mode == "full" else title),
            variant=variant,
            train_mode_source=t.get(TRAIN_MODE_SOURCE_TAG, ""),
            host=t.get(HOST_TAG, ""),
            pid=int(t.get(PID_TAG) or 0),
            modalities=t.get(MODALITIES_TAG, t.get(LEGACY_INPUT_TAG, "")),
            method_origin=t.get(METHOD_ORIGIN_TAG, ""),
            method_sha256=t.get(METHOD_SHA_TAG, ""),
            method_revision=int(t.get(METHOD_REVISION_TAG) or 0),
            version=t.get(VERSION_TAG, ""),
            git_sha=t.get(GIT_SHA_TAG, ""),
            split_sha256=t.get(SPLIT_TAG, ""),
            eval_split_sha256=t.get(EVAL_SPLIT_TAG, t.get(SPLIT_TAG, "")),
            eval_description=t.get(EVAL_DESCRIPTION_TAG, ""),
            device=t.get(DEVICE_TAG, ""),
            conventions={k: v for k, v in t.items() if k.startswith(CONVENTION_PREFIX)},
            data_tags={k: v for k, v in t.items()
                       if k.startswith(DATA_PREFIXES) or k == PROTOCOL_OVERRIDES_TAG},
            run_id=run.info.run_id,
            status=run.info.status,
            start_time=run.info.start_time,
            end_time=run.info.end_time,
            error=t.get(ERROR_TAG, ""),
            flags={k[len(FLAG_PREFIX):]: v for k, v in t.items() if k.startswith(FLAG_PREFIX)},
            metrics=dict(run.data.metrics),
        )


@dataclass
class GridRecord:
    """The parent run of one ``hashbench run``: shared tags, the command, the split and the
    protocol as artifacts, and at the end the count of trials per outcome."""

    name: str
    command: str
    base_tags: dict[str, str]
    host: str = ""
    pid: int = 0

    def tags(self) -> dict[str, str]:
        own = {HOST_TAG: self.host, PID_TAG: str(self.pid)} if self.pid else {}
        return {**self.base_tags, KIND_TAG: "grid", COMMAND_TAG: self.command, **own}

    @staticmethod
    def count_tags(counts: dict[str, int]) -> dict[str, int]:
        return {COUNT_TAG.format(status=s.lower()): n for s, n in counts.items()}


# MLflow and alembic are chatty at INFO when a store is created.
for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# MLflow logs every database error with its traceback before raising it; hashbench turns the
# ones a user can fix (a full disk, a read-only store) into one line, and the rest propagate.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


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


LEASE_ENV = "HASHBENCH_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 600
HEARTBEAT_SECONDS = 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _store_template() -> Path:
    """Where this machine keeps an empty, fully migrated store of the installed MLflow version."""
    from mlflow.version import VERSION

    from hashbench.features import cache_root

    return cache_root() / "stores" / f"empty-mlflow-{VERSION}.db"


def _read_template(template: Path) -> bytes | None:
    """The template's bytes, or None when there is none (or it cannot be read: then the store
    is built from scratch, as without a template)."""
    try:
        data = template.read_bytes()
    except OSError:
        return None
    return data if data.startswith(b"SQLite format 3\0") else None


def _save_template(store: Path, template: Path) -> None:
    """Keep a copy of the new, empty ``store`` as the template, without its Default experiment
    (MLflow adds that on first open, with the new store's own artifact root and time). Best
    effort: a cache that cannot be written only means the next store is built from scratch."""
    import sqlite3

    part = template.with_name(f"{template.name}.{os.getpid()}.part")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(store.read_bytes())
        with contextlib.closing(sqlite3.connect(part)) as conn:
            conn.execute("DELETE FROM experiments WHERE experiment_id = 0")
            conn.commit()
        os.replace(part, template)
    except (OSError, sqlite3.Error):
        pass
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _create_sqlite_store(path: Path) -> None:
    """Build a new SQLite store atomically: the schema is created and migrated in a file
    beside ``path`` with the interrupt signals held back, then renamed to ``path``. A Ctrl-C
    or SIGTERM during creation is delivered afterwards, so the store is either absent or
    complete (never half-migrated); a leftover temporary file is removed on the next try.

    MLflow builds a new SQLite schema by replaying every migration (2-10 s). The first store
    built on a machine is kept as a template under ``$HASHBENCH_CACHE/stores/`` (one per MLflow
    version), and later stores start as a copy of it: the same tables and migration head, and
    MLflow adds the Default experiment on first open as it would in a store it built itself."""
    import signal

    from mlflow.tracking import MlflowClient

    tmp = path.with_name(f".{path.name}.creating")
    template = _store_template()
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        tmp.unlink(missing_ok=True)
        data = _read_template(template)
        if data is not None:
            tmp.write_bytes(data)
        else:
            # MLflow builds the schema and replays its migrations on first contact
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
            _dispose_engines(f"sqlite:///{tmp}")
            _save_template(tmp, template)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _dispose_engines(uri: str) -> None:
    """Close MLflow's cached SQLAlchemy engine of ``uri`` (its file is about to be renamed)."""
    try:
        from mlflow.store.db import utils as db_utils

        engines = getattr(db_utils, "_engine_cache", None) or {}
        for key in [k for k in engines if uri in str(k)]:
            engines.pop(key).dispose()
    except Exception:  # noqa: BLE001 - a cache layout of another MLflow version: nothing to close
        pass


def _store_error(uri: str, path: Path | None, exc: Exception) -> UsageError:
    """One line for a store that cannot be opened, with the way out."""
    text = " ".join(str(exc).split())
    if path is not None and any(s in text for s in ("alembic", "duplicate column", "already exists")):
        return UsageError(f"the MLflow store {path} was left half-created by an interrupted first run; "
                          f"if it holds no runs, remove it (rm {path}) and run again")
    if path is not None and ("file is not a database" in text or "not a database" in text):
        return UsageError(f"{path} is not an MLflow store (not an SQLite database); "
                          "give another --tracking-uri")
    return UsageError(f"cannot open the MLflow store {uri}: {type(exc).__name__}: {text[:200]}")


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _check_store_path(path: Path, create: bool) -> None:
    """One line, before MLflow sees it, for a SQLite store path that cannot work: a folder
    where the file should be, a file where a folder should be, a file it may not read."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"cannot use the MLflow store {path}: {parent} is a file, not a folder; "
                                 "move it or give --tracking-uri")
            break
    if path.exists():
        if not path.is_file():
            raise StoreError(f"{path} is a folder, not an MLflow store file; give another --tracking-uri")
        if not os.access(path, os.R_OK):
            raise StoreError(f"cannot read the MLflow store {path}: permission denied")
        kind = _sqlite_kind(path)
        if kind == "mlflow" or (create and kind == "blank"):
            return  # an MLflow store, or an empty file that `run` makes one
        if kind == "blank":
            raise UsageError(f"no MLflow store at {path} (the file is empty); run `hashbench run` first")
        what = "an SQLite database of something else" if kind == "other" else "not an SQLite database"
        raise UsageError(f"{path} is not an MLflow store ({what}); give another --tracking-uri")
    if not create:
        raise UsageError(f"no MLflow store at {path}; run `hashbench run` first")


def _sqlite_kind(path: Path) -> str:
    """What an existing file is, read without writing: ``mlflow`` (a store, complete or not),
    ``blank`` (empty, or SQLite without tables), ``other`` (SQLite with other tables) or
    ``foreign`` (not SQLite). MLflow itself would write its tables into any of them."""
    import sqlite3

    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        return "blank"
    if head != b"SQLite format 3\0":
        return "foreign"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return "foreign"
    if not tables:
        return "blank"
    return "mlflow" if {"alembic_version", "experiments"} & tables else "other"


def _lock_path(uri: str) -> Path:
    """The lock file of a store: beside a SQLite file, else in this machine's cache."""
    path = _sqlite_path(uri)
    if path is not None:
        return path.with_name(path.name + ".lock")
    import hashlib

    from hashbench.features import cache_root

    return cache_root() / "locks" / f"store-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock for one store (creation, claims); see :func:`_lock_path`."""
    from filelock import FileLock

    path = _lock_path(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        lock.acquire()
    except OSError as exc:
        raise StoreError(_folder_problem(path.parent, exc)) from None
    try:
        yield
    finally:
        lock.release()


def _folder_problem(folder: Path, exc: OSError) -> str:
    """One line for a store folder that cannot be created or written."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                return (f"cannot create the MLflow store under {folder}: {parent} is a file, not a folder; "
                        "move it or give --tracking-uri")
            break
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write the MLflow store in {folder} ({os_error_line(exc, 'no write access to')}); "
                "`hashbench report` can still read it; give --tracking-uri to record elsewhere")
    return os_error_line(exc, f"cannot write the MLflow store in {folder}:")


_FULL = ("database or disk is full", "no space left", "disk quota")
_READ_ONLY = ("readonly database", "read-only", "unable to open database file")


def _write_problem(exc: Exception, uri: str = "") -> StoreError | None:
    """A store write that failed for a reason retrying cannot fix, as one line (or None)."""
    text = " ".join(str(exc).split()).lower()
    store = f"the MLflow store {_sqlite_path(uri) or uri}" if uri else "the MLflow store"
    rerun = "free space and rerun (the trials that did not finish run again)"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StoreError(os_error_line(exc, f"cannot write {store} or its artifacts:") + f"; {rerun}")
    if any(s in text for s in _FULL):
        return StoreError(f"cannot write {store}: the disk is full; {rerun}")
    if "disk i/o error" in text:
        return StoreError(f"cannot write {store}: disk I/O error (a full disk or a failing device); {rerun}")
    if any(s in text for s in _READ_ONLY):
        return StoreError(f"cannot write {store}: it is read-only here (no write access to its file or "
                          "folder); `hashbench report` can still read it; give --tracking-uri to record "
                          "elsewhere")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(os_error_line(exc, f"cannot write the artifacts of {store}:"))
    return None


class _Interrupts:
    """Interrupts (Ctrl-C, SIGTERM, SIGHUP) held back while the main thread is inside a store
    call: an exception raised in the middle of one can leave its SQLite connection holding a
    read lock, and the write that then marks the trial KILLED waits for that lock forever (the
    same process holds both). :func:`on_interrupt` is the CLI's handler for the three signals."""

    depth = 0
    pending: BaseException | None = None


def on_interrupt(signum: int, frame: Any) -> None:
    """Raise the interrupt (KeyboardInterrupt for SIGINT, else :class:`Interrupted`), or hold it
    until the store call in progress returns; a second signal while one is held acts at once."""
    import signal

    exc = (KeyboardInterrupt() if signum == signal.SIGINT
           else Interrupted(signum, signal.Signals(signum).name))
    if _Interrupts.depth and _Interrupts.pending is None:
        _Interrupts.pending = exc
        return
    _Interrupts.pending = None
    raise exc


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold back interrupts for the span of a store call, or of the writes that record an
    interrupted trial as KILLED; one that arrived meanwhile is raised at the end (see
    :func:`on_interrupt`; main thread only: the handler runs there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Interrupts.depth += 1
    try:
        yield
    finally:
        _Interrupts.depth -= 1
        if not _Interrupts.depth and _Interrupts.pending is not None:
            held, _Interrupts.pending = _Interrupts.pending, None
            raise held


def _retry(call: Callable[[], T], attempts: int = 8, uri: str = "") -> T:
    """Retry a store call that failed because SQLite was locked by another process; a full
    disk or a read-only store is a :class:`~hashbench.errors.StoreError` at once. An interrupt
    that arrives during the call is raised when it returns (see :class:`_Interrupts`)."""
    for attempt in range(attempts):
        try:
            with interrupts_held():
                return call()
        except Exception as exc:  # noqa: BLE001 - mlflow wraps driver errors variously
            problem = _write_problem(exc, uri)
            if problem is not None:
                raise problem from None
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def lease_seconds() -> int:
    """How long a claim of another host lives without a heartbeat (``HASHBENCH_LEASE_SECONDS``)."""
    return positive_int_env(LEASE_ENV) or DEFAULT_LEASE_SECONDS


def stale_reason(run: Any, now: float | None = None) -> str | None:
    """Why a RUNNING run's claim is stale, or None while its process may still be running it.

    On this host the pid decides (alive or gone). A run of another host (or without a pid)
    is stale when its last heartbeat (or, before heartbeats, its start) is older than the
    lease."""
    tags = run.data.tags
    host, pid = tags.get(HOST_TAG, ""), int(tags.get(PID_TAG) or 0)
    if pid and host == socket.gethostname():
        return None if _alive(pid) else f"process {pid} on {host} is gone"
    try:
        beat = float(tags.get(HEARTBEAT_TAG) or 0)
    except ValueError:
        beat = 0.0
    beat = beat or (run.info.start_time or 0) / 1000
    age = (now or time.time()) - beat
    if age <= lease_seconds():
        return None
    who = f"process {pid} on {host}" if host else "its process"
    return f"no heartbeat from {who} for {age:.0f} s (lease {lease_seconds()} s)"


@dataclass(frozen=True)
class Holder:
    """Who holds a run key when a trial tries to claim it: a FINISHED run, or a RUNNING one
    whose process is alive (or whose lease is fresh)."""

    run_id: str
    status: str
    host: str = ""
    pid: int = 0

    def describe(self) -> str:
        if self.status == "FINISHED":
            return f"finished by another run meanwhile: run {self.run_id[:12]}"
        return f"running in process {self.pid} on {self.host}: run {self.run_id[:12]}"


class Heartbeat:
    """Renews a RUNNING run's ``hashbench.heartbeat`` tag every ``interval`` seconds in a daemon
    thread, so that other hosts can tell a live claim from an abandoned one (the lease)."""

    def __init__(self, recorder: RunRecorder, interval: float = HEARTBEAT_SECONDS) -> None:
        self.recorder, self.interval = recorder, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="hashbench-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                self.recorder.set_tags({HEARTBEAT_TAG: f"{time.time():.0f}"})


class Store:
    """A handle on one MLflow store and experiment."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 create: bool = True) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.experiment_name = experiment
        path = _sqlite_path(self.uri)
        if path is not None:
            _check_store_path(path, create)
        # creating takes the lock; reading does not, so a read-only folder can be reported on
        with _store_lock(self.uri) if create and path is not None else contextlib.nullcontext():
            if path is not None and create and (not path.exists() or _sqlite_kind(path) == "blank"):
                try:  # an empty file is replaced by the new store, which is built beside it
                    _create_sqlite_store(path)
                except OSError as exc:
                    problem = _write_problem(exc, self.uri) or StoreError(_folder_problem(path.parent, exc))
                    raise problem from None
                except Exception as exc:  # noqa: BLE001 - sqlalchemy/alembic raise many kinds
                    problem = _write_problem(exc, self.uri)
                    if problem is None:
                        raise
                    raise problem from None
            try:
                self.client = MlflowClient(tracking_uri=self.uri)
                exp = self.client.get_experiment_by_name(experiment)
            except Exception as exc:  # noqa: BLE001 - sqlalchemy/alembic raise many kinds
                raise _store_error(self.uri, path, exc) from None
            if exp is None:
                if not create:
                    raise UsageError(f"experiment {experiment!r} not found in {self.uri}")
                artifacts = None
                if path is not None:
                    artifacts = (path.parent / "mlartifacts").as_uri()
                self.experiment_id = _retry(lambda: self.client.create_experiment(
                    experiment, artifact_location=artifacts,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: EXPERIMENT_NOTE}), uri=self.uri)
            else:
                self.experiment_id = exp.experiment_id
                if create and EXPERIMENT_KIND_TAG not in exp.tags:  # stores made before the tag
                    _retry(lambda: self.client.set_experiment_tag(
                        self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND), uri=self.uri)

    # ------------------------------------------------------------------ queries

    def finished_keys(self) -> dict[str, str]:
        """Run key -> run id of every FINISHED trial (the newest run per key), in one pass."""
        keys: dict[str, str] = {}
        for run in reversed(self.trial_runs("FINISHED")):  # oldest first: the newest wins
            key = run.data.tags.get(RUN_KEY_TAG)
            if key:
                keys[key] = run.info.run_id
        return keys

    def trial_runs(self, status: str | None = None) -> list[Any]:
        """Every trial run of the experiment (all statuses, or one), newest first."""
        runs: list[Any] = []
        token = None
        query = f"tags.`{KIND_TAG}` = 'trial'"
        if status:
            query += f" and attributes.status = '{status}'"
        while True:
            page = _retry(lambda token=token: self.client.search_runs(
                [self.experiment_id],
                filter_string=query,
                max_results=1000,
                page_token=token,
            ))
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def runs_of_key(self, run_key: str) -> list[Any]:
        """Every run (any status) recorded under ``run_key``, newest first."""
        query = f"tags.`{RUN_KEY_TAG}` = '{run_key}'"
        return _retry(lambda: self.client.search_runs([self.experiment_id], filter_string=query,
                                                      max_results=1000))

    def close_abandoned(self, run_keys: set[str]) -> list[str]:
        """Close as KILLED the RUNNING trials of ``run_keys`` whose claim is stale
        (:func:`stale_reason`: on this host a pid that no longer runs, after a SIGKILL or a power
        cut; on another host no heartbeat for longer than the lease). Returns their run ids."""
        return self._close_stale_runs(run for run in self.trial_runs("RUNNING")
                                      if run.data.tags.get(RUN_KEY_TAG) in run_keys)

    def close_abandoned_grids(self) -> list[str]:
        """Close as KILLED the RUNNING grid (parent) runs of this host whose process is gone (a
        SIGKILL, or a full disk that left nothing writable). Returns their run ids."""
        query = f"tags.`{KIND_TAG}` = 'grid' and attributes.status = 'RUNNING'"
        runs = _retry(lambda: self.client.search_runs([self.experiment_id], filter_string=query,
                                                      max_results=1000))
        host = socket.gethostname()
        return self._close_stale_runs(run for run in runs if run.data.tags.get(HOST_TAG) == host
                                      and int(run.data.tags.get(PID_TAG) or 0))

    def _close_stale_runs(self, runs: Iterable[Any]) -> list[str]:
        """Close as KILLED those of ``runs`` whose claim :func:`stale_reason` finds stale."""
        closed = []
        for run in runs:
            reason = stale_reason(run)
            if reason is not None:
                self._close_stale(run.info.run_id, reason)
                closed.append(run.info.run_id)
        return closed

    def _close_stale(self, run_id: str, reason: str) -> None:
        recorder = RunRecorder(self.client, run_id, self.uri)
        recorder.set_tags({ERROR_TAG: f"{reason}; closed as KILLED by a later run"})
        recorder.end("KILLED")

    def claim(self, name: str, tags: dict[str, str], run_key: str, parent_id: str | None = None,
              force: bool = False) -> RunRecorder | Holder:
        """Start the RUNNING run of a trial unless another process holds its run key.

        Under the store's lock (so that check and start are one step for every process that
        shares the lock): a FINISHED run of the key (ignored with ``force``) or a RUNNING run
        whose claim is live wins, and its :class:`Holder` is returned; a stale RUNNING run is
        closed KILLED first. Otherwise the trial's run starts, with host, pid (in ``tags``) and
        a first heartbeat, and its recorder is returned."""
        with _store_lock(self.uri):
            for run in self.runs_of_key(run_key):
                status = run.info.status
                if status not in ("FINISHED", "RUNNING") or (status == "FINISHED" and force):
                    continue
                reason = stale_reason(run) if status == "RUNNING" else None
                if reason is not None:
                    self._close_stale(run.info.run_id, reason)
                    continue
                return Holder(run.info.run_id, status, run.data.tags.get(HOST_TAG, ""),
                              int(run.data.tags.get(PID_TAG) or 0))
            return self.start_run(name, {**tags, HEARTBEAT_TAG: f"{time.time():.0f}"}, parent_id)

    def trial_records(self) -> list[TrialRecord]:
        """Every trial run of the experiment as a :class:`TrialRecord`, newest first."""
        return [TrialRecord.from_run(run) for run in self.trial_runs()]

    # ------------------------------------------------------------------ writes

    def start_run(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> RunRecorder:
        tags = {**_context_tags(), **tags}  # MLflow's own user / source / git commit, then ours
        if tags.get(GIT_SHA_TAG) and "mlflow.source.git.commit" not in tags:
            tags["mlflow.source.git.commit"] = tags[GIT_SHA_TAG].removesuffix("-dirty")
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = _retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=name),
                     uri=self.uri)
        recorder = RunRecorder(self.client, run.info.run_id, self.uri)
        recorder.note = tags.get(NOTE_TAG, "")
        return recorder


@functools.cache
def _context_tags() -> dict[str, str]:
    """The tags ``mlflow.start_run`` would set from MLflow's run context providers (user,
    source name and type, git commit of the source), resolved once per process."""
    from mlflow.tracking.context.registry import resolve_tags

    try:
        return dict(resolve_tags())
    except Exception:  # noqa: BLE001 - a context provider failing must not stop a run
        return {}


class RunRecorder:
    """Writes to one run; per-iteration metrics are buffered and sent in batches."""

    def __init__(self, client: Any, run_id: str, uri: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.uri = uri  # for messages: which store could not be written
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self.note = ""  # the run description; end() adds the MAP when one was logged
        self._map: float | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk),
                   uri=self.uri)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            _retry(lambda: self.client.log_batch(self.run_id, tags=items), uri=self.uri)

    def log_metric(self, name: str, value: float, step: int = 0) -> None:
        """Buffered: flushed every 500 values or 10 seconds, and at the end of the run."""
        from mlflow.entities import Metric

        self._buffer.append(Metric(metric_key(name), float(value), int(time.time() * 1000), step))
        if name == "map":
            self._map = float(value)
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
            _retry(lambda chunk=buffer[i:i + 1000]: self.client.log_batch(self.run_id, metrics=chunk),
                   uri=self.uri)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(local_path), artifact_path), uri=self.uri)

    def log_text(self, text: str, name: str) -> None:
        _retry(lambda: self.client.log_text(self.run_id, text, name), uri=self.uri)

    def log_json(self, obj: Any, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), name)

    def log_curve_artifacts(self, name: str, frame: Any) -> None:
        """A curve as ``curves/<name>.csv`` and ``.json`` and an MLflow figure
        ``curves/<name>.png`` with its real x axis (K, or recall over the Hamming radii): the
        metric histories of the same curve show MLflow's "Step" instead."""
        self.log_text(frame.to_csv(index=False), f"curves/{name}.csv")
        self.log_text(frame.to_json(orient="records"), f"curves/{name}.json")
        image = CURVE_PLOTS.image(name, frame)
        _retry(lambda: self.client.log_image(self.run_id, image, artifact_file=f"curves/{name}.png"),
               uri=self.uri)

    def end(self, status: str = "FINISHED") -> None:
        """Flush and close the run with FINISHED, FAILED or KILLED (the description gains the
        MAP of a finished trial)."""
        try:
            self.flush()
            if self.note and self._map is not None and status == "FINISHED":
                self.set_tags({NOTE_TAG: f"{self.note}: MAP {self._map:.4f}"})
        finally:
            _retry(lambda: self.client.set_terminated(self.run_id, status=status), uri=self.uri)


class CurvePlots:
    """A trial's curves as small PNG images with their real x axis: precision against recall
    over the Hamming radii, else every column against the first (K); precision and recall on
    a fixed [0, 1] axis, K from 0 to its largest value.

    Drawing the axes, ticks, labels, title and legend is nearly all of a figure's cost (text
    layout), and with fixed limits they depend only on the curve's name, columns and largest K.
    So they are drawn once per process and kept (matplotlib's blitting: ``copy_from_bbox``),
    and each trial restores that background, draws its lines on it and encodes the PNG
    (``benchmarks/curve_figures.py``: about a tenth of drawing a new figure per curve)."""

    MAX_KEPT = 32

    def __init__(self) -> None:
        self._kept: dict[tuple[Any, ...], tuple[Any, Any, list[Any], Any]] = {}
        self._lock = threading.Lock()

    def image(self, name: str, frame: Any) -> Any:
        """The curve ``frame`` (first column the x axis) as a ``PIL.Image``."""
        from PIL import Image

        step, *values = [str(c) for c in frame.columns]
        pr = step == "radius" and {"precision", "recall"} <= set(values)
        pairs = [("recall", "precision")] if pr else [(step, column) for column in values]
        top = frame[step].max()
        key = (name, step, tuple(values), 1.0 if pr else float(top), int(top) if pr else 0)
        with self._lock:
            canvas, ax, lines, background = self._kept.get(key) or self._background(key, pr)
            canvas.restore_region(background)
            for line, (x, y) in zip(lines, pairs, strict=True):
                line.set_data(frame[x].to_numpy(), frame[y].to_numpy())
                ax.draw_artist(line)
            width, height = canvas.get_width_height()
            return Image.frombuffer("RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1)

    def _background(self, key: tuple[Any, ...], pr: bool) -> tuple[Any, Any, list[Any], Any]:
        """Draw and keep the figure of ``key`` (name, x column, y columns, x limit, top radius)
        without its lines."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        name, step, values, xmax, radius = key
        fig = Figure(figsize=(4.5, 3.2))  # fixed margins: a layout engine doubles the cost
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0.14, 0.14, 0.82, 0.76))
        if pr:
            lines = [ax.plot([], [], marker="o", markersize=3, animated=True)[0]]
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_xlim(0, 1.02)
            ax.set_title(f"precision-recall, Hamming radius 0..{radius}", fontsize=9)
        else:
            lines = [ax.plot([], [], label=column, animated=True)[0] for column in values]
            ax.set_xlabel(step)
            ax.set_xlim(0, xmax)
            ax.legend(frameon=False, loc="center right")  # drawn before the lines: no "best" place
            ax.set_title(name)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        canvas.draw()
        kept = (canvas, ax, lines, canvas.copy_from_bbox(fig.bbox))
        if len(self._kept) >= self.MAX_KEPT:
            self._kept.pop(next(iter(self._kept)))
        self._kept[key] = kept
        return kept


CURVE_PLOTS = CurvePlots()


def param_text(value: Any) -> str:
    """A param as the store writes it: text as it is, anything else as JSON (True -> "true")."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 6000 else text[:5990] + "...(cut)"


def metric_history(store: Store, run_id: str, name: str) -> list[tuple[int, float]]:
    """All (step, value) pairs of a metric of one run, ordered by step."""
    history = _retry(lambda: store.client.get_metric_history(run_id, metric_key(name)))
    return sorted((m.step, m.value) for m in history)
