"""The runner: plan the grid methods x bits x seeds under one protocol, then execute it.

``hashbench run`` is two steps:

1. **Plan** (:func:`plan_grid`, in the driver process): check every method and parameter,
   load the dataset, draw the split, compute every trial's run key, skip the keys that
   already FINISHED in the store (one query, unless ``force``), and open the parent run
   once, up front. The result is a :class:`Plan`: a picklable :class:`TrialContext` shared
   by all trials and one picklable :class:`TrialSpec` per trial still to run.
2. **Execute** (an :class:`Executor`): run the specs. Each trial runs in a
   :class:`TrialWorker`, which loads the dataset once per process, resolves the device for
   the trial from the method's ``meta.requires`` and what *its* process sees, records its
   own child run under the parent id, and returns a small :class:`Outcome`. A trial starts
   by claiming its run key in the store (:meth:`~hashbench.tracking.Store.claim`): when
   another process has finished it meanwhile or is running it, the trial is SKIPPED, so two
   ``hashbench run`` on one store never train a trial twice, whatever their executors. The built-in
   :class:`LocalExecutor` runs the trials in-process, one by one; executors for process
   pools and clusters implement the same interface.

Inside a trial (:func:`run_trial_data`): build the :class:`~hashbench.api.TrialData` view
(``split.view``), fit, encode the queries and take the database codes from the method's
``encode_database`` hook (the method decides; the runner never infers it), check the code
contract, evaluate every retrieval task, and record everything.

* A trial that raises is recorded FAILED with its traceback; the grid goes on.
* Ctrl-C marks the running trial KILLED, ends the parent KILLED and re-raises (exit 130).
* Every phase is timed: ``train_seconds``, ``encode_query_seconds``,
  ``encode_database_seconds``, ``evaluate_seconds``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import hashbench
from hashbench import registry
from hashbench.api import Hasher, RunContext, TrialData, check_codes
from hashbench.datasets import Dataset
from hashbench.datasets import load as load_dataset
from hashbench.errors import (
    CodeContractError,
    ConfigError,
    HashbenchError,
    StoreError,
    interruption_name,
)
from hashbench.evaluation import Conventions, evaluate, pack_codes
from hashbench.params import check_names, check_params
from hashbench.progress import Reporter
from hashbench.protocol import CROSS_MODAL_TASKS, Protocol, Split, materialise
from hashbench.tracking import (
    CODES_ARTIFACT,
    CONFIG_ARTIFACT,
    DEVICE_TAG,
    ERROR_TAG,
    EVAL_DESCRIPTION_TAG,
    EVAL_SPLIT_TAG,
    GIT_SHA_TAG,
    NOTE_TAG,
    PARENT_TAG,
    PROTOCOL_ARTIFACT,
    PROTOCOL_OVERRIDES_TAG,
    PROTOCOL_TAG,
    SPLIT_ARTIFACT,
    SPLIT_TAG,
    TRACEBACK_ARTIFACT,
    VERSION_TAG,
    GridRecord,
    Heartbeat,
    Holder,
    RunRecorder,
    Store,
    TrialRecord,
    interrupts_held,
)

# ---------------------------------------------------------------- descriptions


@dataclass(frozen=True)
class TrialSpec:
    """One trial, as a picklable description: the method's registry id, its bits, seed,
    hyper-parameter overrides and the run key computed by the planner."""

    method: str
    bits: int
    seed: int
    params: tuple[tuple[str, Any], ...] = ()
    run_key: str = ""
    train_mode: str = ""  # "sampled" or "full" (the protocol's regime for the method); "" = the split's

    @property
    def label(self) -> str:
        # "full" names the regime, not the report's "-D" (which depends on the protocol's own mode)
        mode = " full" if self.train_mode == "full" else ""
        return f"{self.method}{mode} bits={self.bits} seed={self.seed}"

    @property
    def method_class(self) -> type[Hasher]:
        return registry.get(self.method)

    def build(self) -> Hasher:
        return build_method(self.method_class, self.bits, dict(self.params))


@dataclass
class Outcome:
    trial: TrialSpec
    status: str  # FINISHED, SKIPPED, FAILED, KILLED
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    flags: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class RunConfig:
    methods: list[type[Hasher]]
    protocol: Protocol
    bits: list[int]
    seeds: list[int]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    force: bool = False
    device: str = "auto"
    data_root: Path | None = None
    tracking_uri: str | None = None
    experiment: str = "hashbench"
    command: str = ""
    data_options: dict[str, str] = field(default_factory=dict)
    pretrained: bool = True
    feature_image_size: int = 224
    skip_incompatible: bool = False
    features: str = "alexnet-fc7"
    variants: bool = False  # add the protocol's "-D" runs (train.variants) of the chosen methods
    dry_run: bool = False  # plan only (hashbench run --dry-run): nothing is trained or recorded


@dataclass(frozen=True)
class FeatureOptions:
    """How image datasets get their ``features`` modality: ``extractor`` is one of
    ``hashbench.extractors.EXTRACTORS`` (AlexNet fc7, the paper's default; HOG and PCA'd
    pixels need no weights), cached on disk and recorded as the ``features.extractor`` tag."""

    pretrained: bool = True
    image_size: int = 224
    device: str = "auto"
    extractor: str = "alexnet-fc7"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one grid shares; picklable, so a worker process or a cluster
    node can rebuild everything it needs from it (it holds names and index arrays, not the
    dataset)."""

    protocol: Protocol
    split: Split  # the protocol's own mode; ``splits`` holds one per training mode in the grid
    conventions: Conventions
    dataset: str
    data_root: str | None
    data_options: dict[str, str]
    features: FeatureOptions
    device: str
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    base_tags: dict[str, str]
    data_tags: dict[str, str]
    splits: dict[str, Split] = field(default_factory=dict)
    force: bool = False  # --force: a FINISHED run of the key does not hold the trial's claim

    def split_for(self, spec: TrialSpec) -> Split:
        return self.splits.get(spec.train_mode) or self.split


@dataclass
class Plan:
    """The planner's result: the shared context, the trials to run and the ones skipped."""

    context: TrialContext
    pending: list[TrialSpec]
    skipped: list[Outcome]
    dataset: Dataset | None = None  # the driver's copy, reused by in-process executors
    store: Store | None = None
    parent: RunRecorder | None = None

    @property
    def total(self) -> int:
        return len(self.pending) + len(self.skipped)


@dataclass
class Summary:
    outcomes: list[Outcome]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "FAILED"]


@dataclass(frozen=True)
class Task:
    """One retrieval task: queries in one modality against the database in another.

    Single-modal methods have one task with no name (metrics ``map``, ...); a method with an
    image side and a text side has ``i2t`` and ``t2i`` (metrics ``i2t.map``, ``t2i.map``)."""

    name: str
    query: str
    database: str

    @property
    def prefix(self) -> str:
        return f"{self.name}." if self.name else ""


def tasks_for(modalities: tuple[str, ...], wanted: tuple[str, ...] = ("i2t", "t2i")) -> list[Task]:
    """The retrieval tasks of a method taking ``modalities``: its one modality against itself,
    or for an image side and a text side the ``wanted`` tasks among I->T, T->I (the
    default), I->I and T->T (a protocol's ``evaluation.tasks``)."""
    if len(modalities) == 1:
        return [Task("", modalities[0], modalities[0])]
    if len(modalities) == 2:
        short = {m: "t" if m == "text" else "i" for m in modalities}
        if sorted(short.values()) != ["i", "t"]:
            raise ConfigError(f"two modalities need an image side and a text side, got {modalities}")
        side = {v: k for k, v in short.items()}
        return [Task(name, side[name[0]], side[name[2]]) for name in CROSS_MODAL_TASKS if name in wanted]
    raise ConfigError(f"methods take one or two modalities, got {modalities}")


# ---------------------------------------------------------------- helpers


def build_method(cls: type[Hasher], bits: int, params: dict[str, Any]) -> Hasher:
    """Instantiate ``cls`` with ``bits`` and overrides, naming any unknown parameter."""
    check_names(cls, params)
    return cls(**{**params, "bits": bits})


def run_key(method: Hasher, seed: int, protocol: Protocol, split: Split,
            conventions: Conventions, data_tags: dict[str, str] | None = None) -> str:
    """SHA-256 of everything that determines a trial's result (not the device)."""
    payload = {
        "method": method.meta.name,
        "params": method.get_params(),
        "protocol": protocol.name,
        "protocol_overrides": list(protocol.overrides),
        "dataset": protocol.dataset,
        "data": data_tags or {},
        "split": split.sha256,
        "train_mode": split.train_mode,
        "seed": seed,
        "conventions": conventions.as_tags(),
    }
    if method.meta.revision > 1:  # revision 1 keeps the keys of runs recorded before revisions
        payload["revision"] = method.meta.revision
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


WATCHED_UNTRACKED = ("methods", "protocols")


def git_sha(where: Path | None = None) -> str:
    """The commit of the hashbench source tree (or of ``where``), or "unknown".

    "-dirty" is appended when tracked files differ from the commit, or when untracked files
    exist under ``methods/`` or ``protocols/`` (a new method or protocol file that a run
    used but no commit holds)."""
    where = where or Path(hashbench.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=5).stdout
        untracked = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "--", *WATCHED_UNTRACKED],
            cwd=where, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty.strip() or untracked.strip() else sha


def method_source_sha256(cls: type) -> str:
    """SHA-256 of the file that defines ``cls`` (in-tree methods and plugins alike), or ""."""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:
        return ""
    if not path or not os.path.isfile(path):
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


DEVICES = ("auto", "cpu", "cuda")


def check_device_request(requested: str) -> str:
    if requested not in DEVICES and not requested.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {requested!r}")
    return requested


def resolve_device(requested: str, requires: str) -> str:
    """The device of one trial, decided in the process that runs it.

    ``--device cpu`` is CPU; methods that need no GPU (``requires = "cpu"``) run on the CPU
    under ``auto``; otherwise CUDA when this process sees a device (``auto`` falls back to
    the CPU, unless the method is ``gpu-required``; an explicit ``cuda`` never falls back).
    """
    check_device_request(requested)
    if requested == "cpu":
        if requires == "gpu-required":
            raise ConfigError("this method requires a GPU but --device cpu was given")
        return "cpu"
    if requested == "auto" and requires == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if requested == "auto" else requested
    if requested == "auto" and requires != "gpu-required":
        return "cpu"
    wanted = "the method requires a GPU" if requested == "auto" else f"--device {requested} was asked for"
    raise ConfigError(f"{wanted} but torch sees no CUDA device in this process")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


CPUS_ENV = "HASHBENCH_CPUS"  # a worker's CPU allowance, set by hashbench.executors.limit_threads


def usable_cpus() -> int:
    """CPUs this process may run on (the evaluator's threads; results do not depend on it):
    ``$HASHBENCH_CPUS`` when an executor gave this worker a share, else the affinity mask."""
    if os.environ.get(CPUS_ENV, "").isdigit() and int(os.environ[CPUS_ENV]) > 0:
        return int(os.environ[CPUS_ENV])
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- the planner


def prepare_dataset(dataset: Dataset, options: FeatureOptions, reporter: Reporter) -> Dataset:
    """Per-process preparation: image datasets get their ``features`` provider (the chosen
    extractor, run or read from the cache on first use)."""
    from hashbench import extractors, features

    if options.extractor == "alexnet-fc7":
        features.provide_features(dataset, pretrained=options.pretrained, image_size=options.image_size,
                                  device=options.device, progress=reporter.progress, log=reporter.message)
    elif dataset.has("image") and not dataset.has("features"):
        name = options.extractor
        dataset.provide("features", lambda: extractors.extract(dataset, name, reporter.progress,
                                                               reporter.message),
                        {"features.extractor": extractors.describe(name)})
    return dataset


def _compatible(methods: list[type[Hasher]], dataset: Dataset, skip: bool,
                reporter: Reporter) -> list[type[Hasher]]:
    """Methods the dataset cannot serve (single-label methods on multi-label data, methods
    taking a modality the dataset lacks, e.g. text on an image set): refused when asked for by
    name, left out with a message under ``--methods all`` (the paper's N/A cells)."""
    reasons = {
        "single-label methods, multi-label data": [
            m for m in methods if dataset.multilabel and not m.meta.multilabel],
        f"methods needing modalities {dataset.name!r} lacks": [
            m for m in methods if not all(dataset.has(x) for x in m.meta.modalities)],
    }
    left_out: set[str] = set()
    for why, which in reasons.items():
        names = sorted(m.meta.name for m in which)
        if not names:
            continue
        if not skip:
            if why.startswith("single"):
                raise ConfigError(
                    f"method(s) {', '.join(names)} support single-label data only and dataset "
                    f"{dataset.name!r} is multi-label; leave them out of --methods")
            missing = sorted({x for m in which for x in m.meta.modalities if not dataset.has(x)})
            raise ConfigError(
                f"method(s) {', '.join(names)} take {', '.join(missing)}, which dataset "
                f"{dataset.name!r} does not provide (it provides: {', '.join(dataset.modality_names)})")
        reporter.message(f"left out ({why}): {', '.join(names)}")
        left_out.update(names)
    return [m for m in methods if m.meta.name not in left_out]


def _params_for(config: RunConfig, cls: type[Hasher]) -> dict[str, Any]:
    params = dict(config.params.get(cls.meta.name, {}))
    if not config.pretrained and "pretrained" in cls.param_names():
        params.setdefault("pretrained", False)
    return params


def _modes(config: RunConfig) -> dict[str, list[str]]:
    """Method id -> the training modes it runs in: the protocol's regime for it (``train.full``
    puts ADSH and Lin:V on the whole database under the ADSH paper's protocols), plus "full"
    for the protocol's ``train.variants`` with ``variants`` (the paper's Table 2 "-D" runs)."""
    protocol = config.protocol
    known = {m.meta.name for m in config.methods}
    for listed, field_name in ((protocol.train_full, "train.full"), (protocol.variants, "train.variants")):
        for name in listed:
            if name not in known and not registry.is_known(name):
                every = sorted(known | set(registry.available()))
                raise ConfigError(f"protocol {protocol.name!r}: {field_name} names unknown method "
                                  f"{name!r}{registry.suggest(name, every)}")
    modes = {}
    for cls in config.methods:
        name = cls.meta.name
        own = protocol.mode_for(name)
        modes[name] = [own]
        if config.variants and not protocol.train_mode_forced and name in protocol.variants and own != "full":
            modes[name].append("full")
    return modes


def plan_grid(config: RunConfig, reporter: Reporter) -> Plan:
    """Plan ``config`` (see the module docstring); opens the parent run when anything is left
    to run."""
    protocol = config.protocol
    modes = _modes(config)
    specs = [(m, mode, b, s, _params_for(config, m))
             for m in config.methods for mode in modes[m.meta.name]
             for b in config.bits for s in config.seeds]
    for cls, _, bits, _, params in specs:  # reject bad parameters before anything is recorded
        build_method(cls, bits, params)
        check_params(cls, params, bits)
    check_device_request(config.device)
    dataset = load_dataset(protocol.dataset, config.data_root, **config.data_options)
    for name in dataset.modality_names:  # loaded vectors checked once (NaN, shape), not in every trial
        if dataset.is_loaded(name):
            dataset.modality(name)
    store = Store(config.tracking_uri, config.experiment)  # after the data: a failed load records nothing
    splits = {mode: materialise(protocol.in_mode(mode), dataset.labels, dataset.partitions,
                                dataset.class_names)
              for mode in sorted({mode for _, mode, *_ in specs} | {protocol.train_mode})}
    split = splits[protocol.train_mode]
    from hashbench.extractors import EXTRACTORS

    if config.features not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {config.features!r}"
                          f"{registry.suggest(config.features, list(EXTRACTORS))} "
                          f"(known: {', '.join(EXTRACTORS)})")
    feature_options = FeatureOptions(config.pretrained, config.feature_image_size,
                                     "cpu" if config.device == "cpu" else "auto", config.features)
    prepare_dataset(dataset, feature_options, reporter)
    kept = {m.meta.name for m in _compatible(config.methods, dataset, config.skip_incompatible, reporter)}
    conventions = Conventions(map_topk=protocol.map_topk, precision_ks=protocol.precision_ks,
                              radius=protocol.radius, map_ks=protocol.map_ks)
    data_tags = dataset.tags
    if protocol.overrides:
        data_tags[PROTOCOL_OVERRIDES_TAG] = json.dumps(dict(protocol.overrides))
    if split.n_dropped_unlabelled:
        data_tags["dataset.dropped_unlabelled"] = str(split.n_dropped_unlabelled)
    base_tags = {
        **data_tags,
        VERSION_TAG: hashbench.__version__,
        GIT_SHA_TAG: git_sha(),
        SPLIT_TAG: split.sha256,
        EVAL_SPLIT_TAG: split.eval_sha256,
        EVAL_DESCRIPTION_TAG: conventions.describe(),
        PROTOCOL_TAG: protocol.name,
        **conventions.as_tags(),
    }
    finished = {} if config.force else store.finished_keys()
    pending, skipped = [], []
    for cls, mode, bits, seed, params in specs:
        if cls.meta.name not in kept:
            continue
        key = run_key(build_method(cls, bits, params), seed, protocol, splits[mode], conventions, data_tags)
        spec = TrialSpec(cls.meta.name, bits, seed, tuple(sorted(params.items())), key, mode)
        if key in finished:
            skipped.append(Outcome(spec, "SKIPPED", finished[key]))
        else:
            pending.append(spec)
    closed = [] if config.dry_run else store.close_abandoned({s.run_key for s in pending})
    if not config.dry_run:
        store.close_abandoned_grids()
    if closed:
        reporter.message(f"closed {len(closed)} RUNNING trial(s) of this grid whose process is gone "
                         "(marked KILLED); they run again now")
    parent = None
    if pending and not config.dry_run:
        grid = GridRecord(name=f"{protocol.name}: {','.join(m.meta.name for m in config.methods)}",
                          command=config.command, base_tags=base_tags,
                          host=socket.gethostname(), pid=os.getpid())
        try:
            with interrupts_held():  # an interrupt meanwhile is raised once the grid can be closed
                parent = store.start_run(grid.name, grid.tags())
            with tempfile.TemporaryDirectory() as tmp:
                for mode, each in splits.items():  # split.npz: the protocol's own; split-<mode>.npz: others
                    name = SPLIT_ARTIFACT if mode == protocol.train_mode else f"split-{mode}.npz"
                    each.save(Path(tmp) / name)
                    parent.log_artifact(Path(tmp) / name)
            parent.log_json(_protocol_dict(protocol), PROTOCOL_ARTIFACT)
        except BaseException as exc:  # interrupted or the store failed: the grid is not left RUNNING
            if parent is not None:
                with contextlib.suppress(Exception):
                    parent.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
    context = TrialContext(
        protocol=protocol, split=split, conventions=conventions, dataset=protocol.dataset,
        data_root=str(config.data_root) if config.data_root else None,
        data_options=dict(config.data_options), features=feature_options, device=config.device,
        tracking_uri=store.uri, experiment=config.experiment,
        parent_run_id=parent.run_id if parent else None, base_tags=base_tags, data_tags=data_tags,
        splits=splits, force=config.force,
    )
    return Plan(context, pending, skipped, dataset=dataset, store=store, parent=parent)


# ---------------------------------------------------------------- executing trials


class TrialWorker:
    """Runs trials of one grid in one process, each recorded as a child of the parent run.

    The dataset is loaded (and prepared) once per worker and reused for every trial it runs;
    an in-process executor hands over the driver's copy.
    """

    def __init__(self, context: TrialContext, reporter: Reporter | None = None,
                 dataset: Dataset | None = None, store: Store | None = None) -> None:
        self.context = context
        self.reporter = reporter or Reporter(quiet=True)
        self._dataset = dataset
        self._store = store

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            ctx = self.context
            dataset = load_dataset(ctx.dataset, Path(ctx.data_root) if ctx.data_root else None,
                                   **ctx.data_options)
            self._dataset = prepare_dataset(dataset, ctx.features, self.reporter)
        return self._dataset

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.context.tracking_uri, self.context.experiment)
        return self._store

    def run(self, spec: TrialSpec) -> Outcome:
        """Claim the trial's run key, run the trial and record it; Ctrl-C marks it KILLED and
        re-raises. A trial another process finished meanwhile or is running is SKIPPED."""
        ctx = self.context
        split = ctx.split_for(spec)
        started = time.perf_counter()
        cls = spec.method_class
        method = spec.build()
        meta = cls.meta
        try:
            device = resolve_device(ctx.device, meta.requires)
        except ConfigError as exc:
            device, device_error = "none", exc
        else:
            device_error = None
        record = TrialRecord(
            method=meta.name, protocol=ctx.protocol.name, dataset=ctx.protocol.dataset,
            bits=spec.bits, seed=spec.seed, train_mode=split.train_mode,
            hyper_parameters=cls.applicable_params(method.get_params()), run_key=spec.run_key,
            title=meta.title,
            display=meta.display_name(split.train_mode, ctx.protocol.declared_train_mode),
            variant=meta.is_variant(split.train_mode, ctx.protocol.declared_train_mode),
            train_mode_source="--train-mode" if ctx.protocol.train_mode_forced else "protocol",
            modalities=",".join(method.modalities),
            method_origin=registry.origin(meta.name), method_sha256=method_source_sha256(cls),
            method_revision=meta.revision,
            version=ctx.base_tags[VERSION_TAG], git_sha=ctx.base_tags[GIT_SHA_TAG],
            split_sha256=split.sha256, eval_split_sha256=split.eval_sha256,
            eval_description=ctx.base_tags[EVAL_DESCRIPTION_TAG], device=device,
            host=socket.gethostname(), pid=os.getpid(),
            conventions=ctx.conventions.as_tags(), data_tags=ctx.data_tags,
        )
        params, tags = record.to_mlflow()
        recorder: RunRecorder | None = None
        try:
            with interrupts_held():  # an interrupt while claiming is raised once the claim is in hand
                claim = self.store.claim(record.run_name, tags, spec.run_key, ctx.parent_run_id, ctx.force)
                recorder = claim if isinstance(claim, RunRecorder) else None
            if isinstance(claim, Holder):
                return Outcome(spec, "SKIPPED", claim.run_id, error=claim.describe(),
                               seconds=time.perf_counter() - started)
            self.reporter.trial_started(spec)
            with Heartbeat(recorder):
                recorder.log_params(params)
                recorder.log_json(self._config_dict(spec, method, device), CONFIG_ARTIFACT)
                if device_error is not None:
                    raise device_error
                metrics, flags = self._execute(spec, method, device, recorder)
        except KeyboardInterrupt as exc:
            if recorder is not None:
                with interrupts_held():  # a second signal must not stop the trial's KILLED record
                    recorder.set_tags({ERROR_TAG: interruption_name(exc)})
                    recorder.end("KILLED")
                exc.killed_trial = spec.label  # type: ignore[attr-defined] - for the CLI's message
            raise
        except StoreError as exc:  # the store cannot be written (a full disk): stop the grid
            if recorder is not None:
                with contextlib.suppress(Exception):
                    recorder.set_tags({ERROR_TAG: _one_line(exc)})
                    recorder.end("FAILED")
            raise
        except Exception as exc:  # noqa: BLE001 - a failing trial must not stop the grid
            if recorder is None:  # the claim itself failed: nothing of this trial was recorded
                raise
            message = _one_line(exc)
            recorder.set_tags({ERROR_TAG: message})
            recorder.log_text(traceback.format_exc(), TRACEBACK_ARTIFACT)
            recorder.end("FAILED")
            return Outcome(spec, "FAILED", recorder.run_id, error=message,
                           seconds=time.perf_counter() - started)
        recorder.end("FINISHED")
        return Outcome(spec, "FINISHED", recorder.run_id, metrics, flags=flags,
                       seconds=time.perf_counter() - started)

    def _execute(self, spec: TrialSpec, method: Hasher, device: str,
                 recorder: RunRecorder) -> tuple[dict[str, float], dict[str, str]]:
        ctx = self.context
        _seed_everything(spec.seed)
        data = ctx.split_for(spec).view(self.dataset, method.modalities)
        for modality in method.modalities:  # providers (feature extraction) run here, not in fit's time
            self.dataset.modality(modality)
        with tempfile.TemporaryDirectory(prefix="hashbench-") as scratch:
            run_ctx = RunContext(seed=spec.seed, device=device, scratch_dir=Path(scratch),
                                 log_metric=recorder.log_metric, progress=self.reporter.progress)
            codes, timings = run_trial_data(method, data, run_ctx, ctx.protocol.tasks)
            t0 = time.perf_counter()
            results = {task: evaluate(q, d, data.query.labels, data.database.labels, ctx.conventions,
                                      n_jobs=usable_cpus())
                       for task, (q, d) in codes.items()}
            timings["evaluate_seconds"] = time.perf_counter() - t0

            metrics = {f"{task.prefix}{k}": v for task, r in results.items() for k, v in r.metrics.items()}
            metrics.update(timings)
            recorder.log_metrics(metrics)
            flags = {f"{task.prefix}{k}": v for task, r in results.items() for k, v in r.flags.items()}
            if flags:
                recorder.set_tags(TrialRecord.flag_tags(flags))
            folder = Path(scratch) / "artifacts"
            folder.mkdir()
            packed = {"bits": spec.bits}
            for task, (q, d) in codes.items():
                packed[f"{task.prefix}query"] = pack_codes(q)
                packed[f"{task.prefix}database"] = pack_codes(d)
            np.savez_compressed(folder / CODES_ARTIFACT, **packed)
            for task, result in results.items():
                for name, frame in result.curves.items():
                    frame.to_csv(folder / f"{task.prefix}{name}.csv", index=False)
                    log_curve(recorder, f"{task.prefix}{name}", frame)
            for path in sorted(folder.iterdir()):
                recorder.log_artifact(path)
        return metrics, flags

    def _config_dict(self, spec: TrialSpec, method: Hasher, device: str) -> dict[str, Any]:
        ctx = self.context
        split = ctx.split_for(spec)
        meta = dict(method.meta.__dict__)
        return {
            "run_key": spec.run_key,
            "method": {"name": spec.method, "params": method.get_params(), "meta": meta},
            "protocol": _protocol_dict(ctx.protocol),
            "split_sha256": split.sha256,
            "seed": spec.seed,
            "device": device,
            "conventions": ctx.conventions.as_tags(),
            "hashbench_version": hashbench.__version__,
            "sizes": {"query": len(split.query), "database": len(split.database),
                      "train": len(split.train)},
        }


class Executor(ABC):
    """Runs a plan's pending trials and yields their outcomes as they finish.

    Contract for implementations (the scale-out executors follow it): a trial is the
    picklable ``(plan.context, spec)``; whoever runs it builds a :class:`TrialWorker` from
    the context (loading the dataset once per process), calls ``worker.run(spec)``, which
    resolves the device in that process and records the child run under
    ``context.parent_run_id``, and sends back only the :class:`Outcome`.
    """

    name = "executor"

    @abstractmethod
    def execute(self, plan: Plan, reporter: Reporter) -> Iterator[Outcome]:
        """Yield one outcome per pending trial of ``plan``."""


class LocalExecutor(Executor):
    """In this process, one trial after the other (the default)."""

    name = "local"

    def execute(self, plan: Plan, reporter: Reporter) -> Iterator[Outcome]:
        worker = TrialWorker(plan.context, reporter, dataset=plan.dataset, store=plan.store)
        for spec in plan.pending:
            yield worker.run(spec)


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,  # the scale-out executors live in hashbench.executors (Ray imported there)
    "process": lambda **options: _scale_out("ProcessExecutor", **options),
    "ray": lambda **options: _scale_out("RayExecutor", **options),
}


def _scale_out(name: str, **options: Any) -> Executor:
    from hashbench import executors

    return getattr(executors, name)(**options)


def run_grid(config: RunConfig, reporter: Reporter, executor: Executor | None = None) -> Summary:
    """Plan ``config``, then execute it with ``executor`` (default: in-process)."""
    started = time.monotonic()
    try:
        plan = plan_grid(config, reporter)
    except KeyboardInterrupt as exc:
        exc.before_trials = True  # type: ignore[attr-defined] - for the CLI's message
        raise
    executor = executor or LocalExecutor()
    outcomes: list[Outcome] = []
    index = 0
    try:
        reporter.start(plan.total, plan.context.protocol, plan.context.split, plan.context.tracking_uri)
        reporter.planned(plan.pending, plan.store, plan.context.protocol.dataset)  # the ETA's queue
        for outcome in plan.skipped:
            index += 1
            outcomes.append(outcome)
            reporter.trial_done(index, outcome)
        for outcome in executor.execute(plan, reporter):
            index += 1
            outcomes.append(outcome)
            reporter.trial_done(index, outcome)
    except KeyboardInterrupt:
        if plan.parent is not None:
            end_grid(plan, outcomes, time.monotonic() - started, "KILLED")
        raise
    except Exception:  # the store itself failed (a full disk) or a bug: never leave the grid RUNNING
        if plan.parent is not None:
            with contextlib.suppress(Exception):  # the store may refuse this write too
                end_grid(plan, outcomes, time.monotonic() - started, "FAILED")
        raise
    finally:
        reporter.close()
    if plan.parent is not None:
        end_grid(plan, outcomes, time.monotonic() - started, "FINISHED")
    return Summary(outcomes)


def grid_metrics(plan: Plan, outcomes: list[Outcome], seconds: float,
                 status: str = "FINISHED") -> dict[str, float]:
    """The parent run's summary, for the MLflow UI's grid row: trials per outcome
    (``trials_planned``, ``trials_finished``, ``trials_skipped``, ``trials_failed``,
    ``trials_killed``), ``wall_seconds`` (planning included), and per method and code length
    the mean MAP over the seeds this grid finished, ``map/<method>_<bits>b`` (``i2t.map/...``
    for cross-modal tasks; ``<method>-full`` for runs on the whole database). A grid that
    ends KILLED or FAILED counts the KILLED trial runs under it in the store."""
    summary = Summary(outcomes)
    counts = {s: summary.count(s) for s in ("FINISHED", "SKIPPED", "FAILED")}
    killed = 0
    if status != "FINISHED" and plan.store is not None and plan.parent is not None:
        parent_id = plan.parent.run_id
        killed = sum(r.data.tags.get(PARENT_TAG) == parent_id for r in plan.store.trial_runs("KILLED"))
    metrics: dict[str, float] = {
        "trials_planned": plan.total, "trials_finished": counts["FINISHED"],
        "trials_skipped": counts["SKIPPED"], "trials_failed": counts["FAILED"],
        "trials_killed": killed, "wall_seconds": round(seconds, 3),
    }
    metrics.update({f"{name}/{method}_{bits}b": value
                    for (name, method, bits), value in sorted(_mean_maps(outcomes).items())})
    return metrics


def _mean_maps(outcomes: list[Outcome]) -> dict[tuple[str, str, int], float]:
    """(metric, method, bits) -> the mean MAP over the finished seeds: ``map`` or a cross-modal
    task's ``i2t.map``...; the method is ``<method>-full`` for runs on the whole database."""
    maps: dict[tuple[str, str, int], list[float]] = {}
    for outcome in outcomes:
        if outcome.status != "FINISHED":
            continue
        spec = outcome.trial
        method = f"{spec.method}-full" if spec.train_mode == "full" else spec.method
        for name, value in outcome.metrics.items():
            if name == "map" or name.endswith(".map"):
                maps.setdefault((name, method, spec.bits), []).append(float(value))
    return {key: float(np.mean(values)) for key, values in maps.items()}


def end_grid(plan: Plan, outcomes: list[Outcome], seconds: float, status: str) -> None:
    """Close the parent run with ``status`` (FINISHED, KILLED or FAILED) after writing its
    summary: :func:`grid_metrics`, the ``hashbench.n_*`` count tags and a description. A
    summary the store refuses never keeps an interrupted or failed grid RUNNING."""
    parent = plan.parent
    assert parent is not None
    try:
        metrics = grid_metrics(plan, outcomes, seconds, status)
        counts = {s: int(metrics[f"trials_{s.lower()}"]) for s in ("FINISHED", "SKIPPED", "FAILED", "KILLED")}
        parent.set_tags({**GridRecord.count_tags(counts),
                         NOTE_TAG: _grid_note(plan, counts, seconds, status, _mean_maps(outcomes))})
        parent.log_metrics(metrics)
    except Exception:
        with contextlib.suppress(Exception):
            parent.end("FAILED" if status == "FINISHED" else status)
        if status == "FINISHED":
            raise
        return
    parent.end(status)


def _grid_note(plan: Plan, counts: dict[str, int], seconds: float, status: str,
               maps: dict[tuple[str, str, int], float]) -> str:
    """The parent run's description: what ran, how it ended, and the best mean MAP per length."""
    from hashbench.progress import duration

    done = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    text = (f"{plan.context.protocol.name} grid, {plan.total} trial{'s' * (plan.total != 1)} "
            f"({done or 'none run'}) in {duration(seconds)}")
    if status != "FINISHED":
        text += f"; ended {status}"
    best: dict[int, tuple[float, str]] = {}
    for (name, method, bits), value in maps.items():
        if name == "map":
            best[bits] = max(best.get(bits, (-1.0, "")), (value, method))
    if best:
        text += ". Best mean MAP: " + "; ".join(f"{b} bits {m} {v:.4f}" for b, (v, m) in sorted(best.items()))
    return text


class GridRunner:
    """``run_grid`` for one :class:`RunConfig` (kept for callers of the first API)."""

    def __init__(self, config: RunConfig, reporter: Reporter, executor: Executor | None = None) -> None:
        self.config, self.reporter, self.executor = config, reporter, executor

    def run(self) -> Summary:
        return run_grid(self.config, self.reporter, self.executor)


# ---------------------------------------------------------------- one trial's data


def run_trial_data(method: Hasher, data: TrialData, ctx: RunContext,
                   tasks: tuple[str, ...] = ("i2t", "t2i"),
                   ) -> tuple[dict[Task, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """Fit on ``data`` (without its queries), encode the queries and the database for every
    retrieval task of the method; check the code contract and time each phase.

    Database codes always come from ``method.encode_database(data, modality)``.
    Returns ({task: (query codes, database codes)}, timings).
    """
    meta = method.meta
    if not meta.multilabel and bool((data.database.labels.sum(axis=1) > 1).any()):
        raise HashbenchError(f"method {meta.name!r} supports single-label data only")
    if data.query is None:
        raise ValueError("run_trial_data needs the query part of the view")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    fitted = method.fit(data.for_fit(), ctx)
    timings["train_seconds"] = time.perf_counter() - t0
    if fitted is not method:
        raise CodeContractError(f"method {meta.name!r}: fit() must return self")
    timings["encode_query_seconds"] = timings["encode_database_seconds"] = 0.0
    codes = {}
    for task in tasks_for(method.modalities, tasks):
        t0 = time.perf_counter()
        query = method.encode_as(data.query[task.query], task.query)
        timings["encode_query_seconds"] += time.perf_counter() - t0
        query = check_codes(query, len(data.query), method.bits, meta.name, f"{task.prefix}query codes")
        t0 = time.perf_counter()
        database = method.encode_database(data, task.database)
        timings["encode_database_seconds"] += time.perf_counter() - t0
        database = check_codes(database, len(data.database), method.bits, meta.name,
                               f"{task.prefix}database codes")
        codes[task] = (query, database)
    return codes, timings


def fit_and_encode(method: Hasher, dataset: Dataset, split: Split,
                   ctx: RunContext) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """A single-modal trial without a store: (query codes, database codes, timings)."""
    codes, timings = run_trial_data(method, split.view(dataset, method.modalities), ctx)
    if len(codes) != 1:
        raise ConfigError(f"method {method.meta.name!r} has {len(codes)} retrieval tasks; "
                          "use run_trial_data")
    (query, database), = codes.values()
    return query, database, timings


def log_curve(recorder: RunRecorder, name: str, frame: Any) -> None:
    """A curve as metric histories, so the store alone holds it: the first column is the
    step (K or the radius), every other column a metric ``curve.<name>.<column>``."""
    step_column, *value_columns = list(frame.columns)
    for column in value_columns:
        for step, value in zip(frame[step_column], frame[column], strict=True):
            recorder.log_metric(f"curve.{name}.{column}", float(value), int(step))
    recorder.flush()
    recorder.log_curve_artifacts(name, frame)  # CSV/JSON and an MLflow figure with the real x axis


def _protocol_dict(protocol: Protocol) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in protocol.__dict__.items()}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    prefix = "" if isinstance(exc, HashbenchError) else f"{type(exc).__name__}: "
    return prefix + text


__all__ = ["DEVICE_TAG", "EXECUTORS", "Executor", "FeatureOptions", "GridRunner", "LocalExecutor",
           "Outcome", "Plan", "RunConfig", "Summary", "Task", "TrialContext", "TrialSpec", "TrialWorker",
           "build_method", "fit_and_encode", "git_sha", "plan_grid", "resolve_device", "run_grid",
           "run_key", "run_trial_data", "tasks_for"]
