"""The runner: plan the grid methods x bits x seeds under one protocol and run it.

For every trial it builds the method, fits it on the protocol's training set, encodes the
queries and the database (taking ``database_codes()`` from asymmetric methods trained on
the full database), checks the code contract, evaluates, and records everything in MLflow.

* A trial whose run key already FINISHED in the store is skipped (``force`` reruns it).
* A trial that raises is recorded FAILED with its traceback; the grid goes on.
* Ctrl-C marks the running trial KILLED and re-raises (the CLI exits 130).
* Every phase is timed: ``train_seconds``, ``encode_query_seconds``,
  ``encode_database_seconds``, ``evaluate_seconds``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import hashbench
from hashbench import registry
from hashbench.api import AsymmetricHasher, Hasher, RunContext, TrainingData, check_codes
from hashbench.datasets import Dataset
from hashbench.datasets import load as load_dataset
from hashbench.datasets.base import subset
from hashbench.errors import CodeContractError, ConfigError, HashbenchError
from hashbench.evaluation import Conventions, evaluate, pack_codes
from hashbench.progress import Reporter
from hashbench.protocol import Protocol, Split, materialise
from hashbench.tracking import KIND_TAG, RUN_KEY_TAG, RunRecorder, Store


@dataclass(frozen=True)
class Trial:
    method: type[Hasher]
    bits: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method.meta.name} bits={self.bits} seed={self.seed}"


@dataclass
class Outcome:
    trial: Trial
    status: str  # FINISHED, SKIPPED, FAILED, KILLED
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    flags: dict[str, str] = field(default_factory=dict)


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


@dataclass
class Summary:
    outcomes: list[Outcome]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "FAILED"]


# ---------------------------------------------------------------- helpers


def build_method(cls: type[Hasher], bits: int, params: dict[str, Any]) -> Hasher:
    """Instantiate ``cls`` with ``bits`` and overrides, naming any unknown parameter."""
    known = cls.param_names()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"method {cls.meta.name!r} has no parameter {unknown[0]!r}"
            f"{registry.suggest(unknown[0], known)} (parameters: {', '.join(known)})"
        )
    return cls(**{**params, "bits": bits})


def run_key(trial: Trial, method: Hasher, protocol: Protocol, split: Split,
            conventions: Conventions, data_tags: dict[str, str] | None = None) -> str:
    """SHA-256 of everything that determines a trial's result (not the device)."""
    payload = {
        "method": trial.method.meta.name,
        "params": method.get_params(),
        "protocol": protocol.name,
        "protocol_overrides": list(protocol.overrides),
        "dataset": protocol.dataset,
        "data": data_tags or {},
        "split": split.sha256,
        "train_mode": split.train_mode,
        "seed": trial.seed,
        "conventions": conventions.as_tags(),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def git_sha() -> str:
    """The commit of the hashbench source tree ("-dirty" with local changes), or "unknown"."""
    where = Path(hashbench.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty.strip() else sha


def resolve_device(requested: str, methods: list[type[Hasher]]) -> str:
    """``auto`` means CUDA when available (checked only if a deep method is in the grid)."""
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {requested!r}")
    deep = any(m.meta.family == "deep" for m in methods)
    if requested == "cpu" or (requested == "auto" and not deep):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if requested == "auto" else requested
    if requested == "auto":
        return "cpu"
    raise ConfigError(f"--device {requested} was asked for but torch sees no CUDA device")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


# ---------------------------------------------------------------- the grid


class GridRunner:
    """Runs one :class:`RunConfig`; see the module docstring for the rules."""

    def __init__(self, config: RunConfig, reporter: Reporter) -> None:
        self.config = config
        self.reporter = reporter
        self.protocol = config.protocol
        self.conventions = Conventions(
            map_topk=self.protocol.map_topk,
            precision_ks=self.protocol.precision_ks,
            radius=self.protocol.radius,
        )
        self.parent: RunRecorder | None = None

    def plan(self) -> list[Trial]:
        return [
            Trial(m, b, s, self._params_for(m))
            for m in self.config.methods
            for b in self.config.bits
            for s in self.config.seeds
        ]

    def _params_for(self, cls: type[Hasher]) -> dict[str, Any]:
        params = dict(self.config.params.get(cls.meta.name, {}))
        if not self.config.pretrained and "pretrained" in cls.param_names():
            params.setdefault("pretrained", False)
        return params

    def run(self) -> Summary:
        trials = self.plan()
        for trial in trials:  # reject bad parameters before anything is recorded
            build_method(trial.method, trial.bits, trial.params)
        self.device = resolve_device(self.config.device, self.config.methods)
        self.store = Store(self.config.tracking_uri, self.config.experiment)
        self.dataset = load_dataset(self.protocol.dataset, self.config.data_root,
                                    **self.config.data_options)
        self.split = materialise(self.protocol, self.dataset.labels, self.dataset.partitions,
                                 self.dataset.class_names)
        trials = self._compatible(trials)
        self.data_tags = {f"dataset.{k}": v for k, v in self.dataset.provenance.items()}
        if self.dataset.features is None and self.dataset.images is not None:
            self._attach_feature_extraction()
        if self.protocol.overrides:
            self.data_tags["hashbench.protocol_overrides"] = json.dumps(dict(self.protocol.overrides))
        if self.split.n_dropped_unlabelled:
            self.data_tags["dataset.dropped_unlabelled"] = str(self.split.n_dropped_unlabelled)
        self.base_tags = {
            **self.data_tags,
            KIND_TAG: "trial",
            "hashbench.version": hashbench.__version__,
            "hashbench.git_sha": git_sha(),
            "hashbench.split_sha256": self.split.sha256,
            "hashbench.eval_split_sha256": self.split.eval_sha256,
            "hashbench.eval_description": self.conventions.describe(),
            "hashbench.protocol": self.protocol.name,
            "hashbench.device": self.device,
            **self.conventions.as_tags(),
        }
        outcomes: list[Outcome] = []
        self.reporter.start(len(trials), self.protocol, self.split, self.store.uri)
        try:
            for i, trial in enumerate(trials, 1):
                outcome = self._run_one(trial)
                outcomes.append(outcome)
                self.reporter.trial_done(i, outcome)
        except KeyboardInterrupt:
            if self.parent is not None:
                self.parent.end("KILLED")
            raise
        finally:
            self.reporter.close()
        summary = Summary(outcomes)
        if self.parent is not None:
            self.parent.set_tags({f"hashbench.n_{s.lower()}": summary.count(s)
                                  for s in ("FINISHED", "SKIPPED", "FAILED")})
            self.parent.end("FINISHED")
        return summary

    def _attach_feature_extraction(self) -> None:
        """Shallow methods on image datasets get cached AlexNet fc7 features, on first use."""
        from hashbench import features

        pretrained, size = self.config.pretrained, self.config.feature_image_size
        self.data_tags["features.extractor"] = (
            f"{features.BACKBONE} ({features.weights_tag(pretrained)}, {features.transform_tag(size)}; "
            "torchvision AlexNet as the stand-in for CNN-F)"
        )
        dataset, reporter, device = self.dataset, self.reporter, self.device
        self.dataset.feature_source = lambda: features.extract_features(
            dataset, pretrained=pretrained, device=device, progress=reporter.progress,
            log=reporter.message, image_size=size,
        )

    def _compatible(self, trials: list[Trial]) -> list[Trial]:
        """Single-label methods on multi-label data: refused when asked for by name,
        left out with a message under ``--methods all`` (the paper's N/A cells)."""
        if not self.dataset.multilabel:
            return trials
        single = sorted({t.method.meta.name for t in trials if not t.method.meta.multilabel})
        if not single:
            return trials
        if not self.config.skip_incompatible:
            raise ConfigError(
                f"method(s) {', '.join(single)} support single-label data only and dataset "
                f"{self.dataset.name!r} is multi-label; leave them out of --methods"
            )
        self.reporter.message(f"left out (single-label methods, multi-label data): {', '.join(single)}")
        return [t for t in trials if t.method.meta.multilabel]

    def _ensure_parent(self) -> RunRecorder:
        if self.parent is None:
            tags = {**self.base_tags, KIND_TAG: "grid", "hashbench.command": self.config.command}
            name = f"{self.protocol.name}: {','.join(m.meta.name for m in self.config.methods)}"
            self.parent = self.store.start_run(name, tags)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "split.npz"
                self.split.save(path)
                self.parent.log_artifact(path)
            self.parent.log_json(_protocol_dict(self.protocol), "protocol.json")
        return self.parent

    def _run_one(self, trial: Trial) -> Outcome:
        method = build_method(trial.method, trial.bits, trial.params)
        key = run_key(trial, method, self.protocol, self.split, self.conventions, self.data_tags)
        if not self.config.force:
            existing = self.store.finished_run(key)
            if existing is not None:
                return Outcome(trial, "SKIPPED", existing)
        parent = self._ensure_parent()
        meta = trial.method.meta
        recorder = self.store.start_run(
            f"{meta.name}-{trial.bits}b-s{trial.seed}",
            {**self.base_tags, RUN_KEY_TAG: key,
             "hashbench.method_origin": registry.origin(meta.name),
             "hashbench.method_title": meta.title,
             "hashbench.display_name": meta.display_name(self.split.train_mode),
             "hashbench.learns_database": str(meta.learns_database).lower()},
            parent_id=parent.run_id,
        )
        self.reporter.trial_started(trial)
        try:
            recorder.log_params({
                "method": meta.name, "protocol": self.protocol.name,
                "dataset": self.protocol.dataset, "bits": trial.bits, "seed": trial.seed,
                "train_mode": self.split.train_mode,
                **{f"hp.{k}": v for k, v in method.get_params().items() if k != "bits"},
            })
            recorder.log_json(self._config_dict(trial, method, key), "config.json")
            metrics, flags = self._execute(trial, method, recorder)
        except KeyboardInterrupt:
            recorder.set_tags({"hashbench.error": "interrupted (Ctrl-C)"})
            recorder.end("KILLED")
            raise
        except Exception as exc:  # noqa: BLE001 - a failing trial must not stop the grid
            message = _one_line(exc)
            recorder.set_tags({"hashbench.error": message})
            recorder.log_text(traceback.format_exc(), "traceback.txt")
            recorder.end("FAILED")
            return Outcome(trial, "FAILED", recorder.run_id, error=message)
        recorder.end("FINISHED")
        return Outcome(trial, "FINISHED", recorder.run_id, metrics, flags=flags)

    def _execute(self, trial: Trial, method: Hasher,
                 recorder: RunRecorder) -> tuple[dict[str, float], dict[str, str]]:
        dataset, split = self.dataset, self.split
        recorder.set_tags({"hashbench.input": method.input_kind})
        _seed_everything(trial.seed)
        with tempfile.TemporaryDirectory(prefix="hashbench-") as scratch:
            ctx = RunContext(seed=trial.seed, device=self.device, scratch_dir=Path(scratch),
                             log_metric=recorder.log_metric, progress=self.reporter.progress)
            query_codes, db_codes, timings = fit_and_encode(method, dataset, split, ctx)
            t0 = time.perf_counter()
            result = evaluate(query_codes, db_codes, dataset.labels[split.query],
                              dataset.labels[split.database], self.conventions, n_jobs=_usable_cpus())
            timings["evaluate_seconds"] = time.perf_counter() - t0

            metrics = {**result.metrics, **timings}
            recorder.log_metrics(metrics)
            tags = {f"hashbench.flag.{k}": v for k, v in result.flags.items()}
            if tags:
                recorder.set_tags(tags)
            folder = Path(scratch) / "artifacts"
            folder.mkdir()
            np.savez_compressed(folder / "codes.npz", bits=trial.bits,
                                query=pack_codes(query_codes), database=pack_codes(db_codes))
            for name, frame in result.curves.items():
                frame.to_csv(folder / f"{name}.csv", index=False)
                log_curve(recorder, name, frame)
            for path in sorted(folder.iterdir()):
                recorder.log_artifact(path)
        return metrics, dict(result.flags)

    def _config_dict(self, trial: Trial, method: Hasher, key: str) -> dict[str, Any]:
        return {
            "run_key": key,
            "method": {"name": trial.method.meta.name, "params": method.get_params(),
                       "meta": trial.method.meta.__dict__},
            "protocol": _protocol_dict(self.protocol),
            "split_sha256": self.split.sha256,
            "seed": trial.seed,
            "device": self.device,
            "conventions": self.conventions.as_tags(),
            "hashbench_version": hashbench.__version__,
            "sizes": {"query": len(self.split.query), "database": len(self.split.database),
                      "train": len(self.split.train)},
        }


def fit_and_encode(method: Hasher, dataset: Dataset, split: Split,
                   ctx: RunContext) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Fit on the split's training set, encode queries and database; check and time it all.

    Database codes come from ``database_codes()`` when an asymmetric method trained on the
    full database (or learns the database codes anyway, ``meta.learns_database``), else
    from ``encode`` on the database. Returns (query codes, database codes, timings).
    """
    meta = method.meta
    if not meta.multilabel and dataset.multilabel:
        raise HashbenchError(f"method {meta.name!r} supports single-label data only")
    inputs = dataset.inputs(method.input_kind)
    full = split.train_mode == "full"
    data = TrainingData(inputs=subset(inputs, split.train), labels=dataset.labels[split.train],
                        indices=split.train, is_database=full)
    if meta.learns_database and not full:
        data.database_inputs = subset(inputs, split.database)
        data.database_labels = dataset.labels[split.database]
        data.database_indices = split.database
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    fitted = method.fit(data, ctx)
    timings["train_seconds"] = time.perf_counter() - t0
    if fitted is not method:
        raise CodeContractError(f"method {meta.name!r}: fit() must return self")

    t0 = time.perf_counter()
    query_codes = method.encode(subset(inputs, split.query))
    timings["encode_query_seconds"] = time.perf_counter() - t0
    query_codes = check_codes(query_codes, len(split.query), method.bits, meta.name, "query codes")

    t0 = time.perf_counter()
    if isinstance(method, AsymmetricHasher) and (full or meta.learns_database):
        db_codes, what = method.database_codes(), "database_codes()"
    else:
        db_codes, what = method.encode(subset(inputs, split.database)), "database codes"
    timings["encode_database_seconds"] = time.perf_counter() - t0
    db_codes = check_codes(db_codes, len(split.database), method.bits, meta.name, what)
    return query_codes, db_codes, timings


def log_curve(recorder: RunRecorder, name: str, frame: Any) -> None:
    """A curve as metric histories, so the store alone holds it: the first column is the
    step (K or the radius), every other column a metric ``curve.<name>.<column>``."""
    step_column, *value_columns = list(frame.columns)
    for column in value_columns:
        for step, value in zip(frame[step_column], frame[column], strict=True):
            recorder.log_metric(f"curve.{name}.{column}", float(value), int(step))
    recorder.flush()


def _protocol_dict(protocol: Protocol) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in protocol.__dict__.items()}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    prefix = "" if isinstance(exc, HashbenchError) else f"{type(exc).__name__}: "
    return prefix + text


def _usable_cpus() -> int:
    """CPUs this process may run on (the evaluator's threads; results do not depend on it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
