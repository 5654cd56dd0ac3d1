"""Protocols: declared, versioned experiment settings, and the splits they produce.

A protocol is a TOML file in the package's ``protocols`` folder (the repo's
``protocols/``), or any path given on the command line. Example::

    name = "digits"
    dataset = "digits"
    description = "..."
    seed = 0                     # the split is a function of the protocol and this seed

    [labels]
    unlabelled = "refuse"        # items with no label: "refuse" (error) or "drop" (counted)

    [query]
    per_class = 10               # drawn class by class, never the same item twice
    pool = "all"                 # or a dataset partition, e.g. "val" for MS-COCO
    top_classes = 0              # > 0: sample only over the N most frequent classes
    # or, instead of per_class (the cross-modal protocols):
    # count = 2000               # N items drawn at random from the pool, or "all" of it
    # order = "random"           # "first": the first N items of the pool (a fixed-order split)

    [database]
    from = "rest"                # every (labelled) item that is not a query, or a partition

    [train]
    mode = "sampled"             # "sampled": per_class items per class from the database;
    per_class = 50               # "full": the whole database
    top_classes = 0
    # count = 10000              # or N items drawn at random from the database
    full = ["adsh", "linv"]      # methods whose own setting learns the whole database
    variants = ["lfh", "sdh"]    # full-database "-D" runs added by `hashbench run --variants`

    [evaluation]
    map_topk = "all"             # or an integer K for MAP@K
    map_ks = [50, 500]           # optional: MAP@K metrics beside it (cross-modal papers)
    tasks = ["i2t", "t2i"]       # cross-modal tasks evaluated; also "i2i", "t2t" on request
    precision_ks = [100]
    radius = 2

    [bits]
    default = [12, 24, 32, 48]

Materialising a protocol on a dataset (:func:`materialise`) gives a :class:`Split`: the
query, database and training index arrays and a SHA-256 over them. Two numbers are
comparable only when their split hashes match.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hashbench.api import Part, TrialData
from hashbench.errors import ConfigError, DataError, UsageError

TRAIN_MODES = ("sampled", "full")


@dataclass(frozen=True)
class Protocol:
    """A validated protocol file (see the module docstring for the TOML layout)."""

    name: str
    dataset: str
    description: str
    seed: int
    query_per_class: int | None
    train_mode: str
    train_per_class: int | None
    map_topk: int | None
    precision_ks: tuple[int, ...]
    radius: int
    default_bits: tuple[int, ...]
    source: str = ""
    unlabelled: str = "refuse"
    query_pool: str = "all"
    query_top_classes: int = 0
    database_from: str = "rest"
    train_top_classes: int = 0
    query_count: int | None = None  # -1: the whole pool
    query_order: str = "random"
    train_count: int | None = None
    map_ks: tuple[int, ...] = ()
    tasks: tuple[str, ...] = ("i2t", "t2i")
    declared_train_mode: str = ""  # the file's train.mode, kept when --train-mode overrides it
    train_full: tuple[str, ...] = ()  # methods trained on the whole database by this protocol
    variants: tuple[str, ...] = ()    # methods whose "-D" run --variants adds
    train_mode_forced: bool = False   # --train-mode overrode the per-method regimes
    overrides: tuple[tuple[str, str], ...] = ()
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def with_overrides(self, overrides: dict[str, Any]) -> Protocol:
        """The protocol with dotted fields replaced, e.g. {"query.per_class": 5}.

        The result is validated like a file; the overrides are kept in ``overrides`` (and
        recorded with every run). Changing counts changes the split, hence its hash.
        """
        if not overrides:
            return self
        data = copy.deepcopy(self.raw)
        for key, value in overrides.items():
            section, _, name = key.rpartition(".")
            if key not in _KNOWN.get(section, set()) and name not in _KNOWN.get(section, set()):
                fields = sorted(f"{sec}.{f}" if sec else f for sec, fs in _KNOWN.items()
                                for f in fs if f not in _KNOWN)
                from hashbench.registry import suggest

                raise UsageError(f"protocol has no field {key!r}{suggest(key, fields)}")
            (data.setdefault(section, {}) if section else data)[name] = value
        proto = parse_protocol(data, f"{self.source} with overrides")
        merged = dict(self.overrides)
        merged.update({k: json.dumps(v) for k, v in overrides.items()})
        return dataclasses.replace(proto, source=self.source,
                                   overrides=tuple(sorted(merged.items())))

    def mode_for(self, method: str) -> str:
        """The training mode of ``method`` under this protocol: ``full`` for the methods the
        protocol trains on the whole database (``train.full``, e.g. ADSH and Lin:V in the
        ADSH paper), else the protocol's mode."""
        return "full" if method in self.train_full else self.train_mode

    def with_train_mode(self, mode: str | None) -> Protocol:
        """The same protocol with every method trained in ``mode`` (``--train-mode``: an explicit
        override of the per-method regimes, recorded with the runs); None changes nothing."""
        if mode is None:
            return self
        return dataclasses.replace(self.in_mode(mode), train_full=(), train_mode_forced=True)

    def in_mode(self, mode: str) -> Protocol:
        """The protocol whose split trains in ``mode`` (what :func:`materialise` draws)."""
        if mode == self.train_mode:
            return self
        if mode not in TRAIN_MODES:
            raise UsageError(f"train mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
        if mode == "sampled" and self.train_per_class is None and self.train_count is None:
            raise UsageError(f"protocol {self.name!r} declares no train.per_class or train.count "
                             "to sample with")
        return dataclasses.replace(self, train_mode=mode)


@dataclass(frozen=True)
class Split:
    """Index arrays into the dataset; ``sha256`` identifies the split exactly."""

    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    train_mode: str
    sha256: str
    n_dropped_unlabelled: int = 0

    @property
    def eval_sha256(self) -> str:
        """SHA-256 of the query and database arrays only: what makes evaluations comparable
        (sampled and full training runs of one protocol share it)."""
        return split_hash(self.query, self.database, np.empty(0, np.int64), "eval")

    def save(self, path: Path) -> None:
        np.savez_compressed(path, query=self.query, database=self.database, train=self.train)

    def view(self, dataset: Any, modalities: tuple[str, ...] | None = None) -> TrialData:
        """The trial's :class:`~hashbench.api.TrialData` over ``dataset``: the one place the
        split is applied. Each part holds its rows, their labels and the ``modalities`` asked
        for (default: every modality of the dataset), read lazily from the dataset (a
        feature provider runs on first access)."""
        names = tuple(modalities) if modalities is not None else dataset.modality_names
        missing = [m for m in names if not dataset.has(m)]
        if missing:
            provides = ", ".join(dataset.modality_names) or "nothing"
            raise DataError(f"dataset {dataset.name!r} provides no {missing[0]} "
                            f"(it provides: {provides})")
        sources = {m: (lambda m=m: dataset.modality(m)) for m in names}

        def part(name: str, rows: np.ndarray) -> Part:
            return Part(name, rows, dataset.labels[rows], sources)

        database = part("database", self.database)
        same = self.train is self.database or np.array_equal(self.train, self.database)
        train = database if same else part("train", self.train)  # full mode: one copy of the rows
        return TrialData(train=train, database=database, query=part("query", self.query),
                         train_mode=self.train_mode)


# ---------------------------------------------------------------- loading and validation


def _field(table: dict[str, Any], key: str, where: str, kind: type, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing required field {key!r}")
        return default
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: field {key!r} must be an integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{where}: field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _positive(value: int, key: str, where: str) -> int:
    if value <= 0:
        raise ConfigError(f"{where}: field {key!r} must be positive, got {value}")
    return value


def _int_list(value: Any, key: str, where: str, allow_empty: bool = False) -> tuple[int, ...]:
    if not isinstance(value, list) or not (value or allow_empty):
        raise ConfigError(f"{where}: field {key!r} must be a non-empty list of integers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{where}: field {key!r} must hold positive integers, got {v!r}")
    return tuple(value)


_KNOWN = {
    "": {"name", "dataset", "description", "seed", "labels", "query", "database", "train",
         "evaluation", "bits"},
    "labels": {"unlabelled"},
    "query": {"per_class", "pool", "top_classes", "count", "order"},
    "database": {"from"},
    "train": {"mode", "per_class", "top_classes", "count", "full", "variants"},
    "evaluation": {"map_topk", "map_ks", "precision_ks", "radius", "tasks"},
    "bits": {"default"},
}


def parse_protocol(data: dict[str, Any], where: str) -> Protocol:
    """Validate a parsed TOML table; errors name the file and the field."""
    for section, allowed in _KNOWN.items():
        table = data if section == "" else data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key in table:
            if key not in allowed and not (section == "" and key in _KNOWN):
                prefix = f"{section}." if section else ""
                raise ConfigError(f"{where}: unknown field {prefix}{key!r}")
    query = data.get("query", {})
    train = data.get("train", {})
    evaluation = data.get("evaluation", {})
    database = data.get("database", {})
    unlabelled = _field(data.get("labels", {}), "unlabelled", f"{where} [labels]", str, "refuse")
    if unlabelled not in ("refuse", "drop"):
        raise ConfigError(
            f"{where}: field 'labels.unlabelled' must be \"refuse\" or \"drop\", got {unlabelled!r}"
        )
    top = {}
    for name, table in (("query", query), ("train", train)):
        top[name] = _field(table, "top_classes", f"{where} [{name}]", int, 0)
        if top[name] < 0:
            raise ConfigError(f"{where}: field '{name}.top_classes' must be >= 0, got {top[name]}")
    mode = _field(train, "mode", f"{where} [train]", str)
    if mode not in TRAIN_MODES:
        raise ConfigError(
            f"{where}: field 'train.mode' must be one of {', '.join(TRAIN_MODES)}, got {mode!r}"
        )
    train_per_class = _field(train, "per_class", f"{where} [train]", int, None)
    train_count = _field(train, "count", f"{where} [train]", int, None)
    if train_per_class is not None and train_count is not None:
        raise ConfigError(f"{where}: give train.per_class or train.count, not both")
    if train_per_class is not None:
        _positive(train_per_class, "train.per_class", where)
    elif train_count is not None:
        _positive(train_count, "train.count", where)
    elif mode == "sampled":
        raise ConfigError(f"{where}: train.mode = \"sampled\" needs field 'train.per_class' or 'train.count'")
    query_per_class = _field(query, "per_class", f"{where} [query]", int, None)
    raw_count = query.get("count")
    if (query_per_class is None) == (raw_count is None):
        raise ConfigError(f"{where}: give exactly one of query.per_class and query.count")
    if query_per_class is not None:
        _positive(query_per_class, "query.per_class", where)
    query_count = None
    if raw_count == "all":
        query_count = -1
    elif raw_count is not None:
        if not isinstance(raw_count, int) or isinstance(raw_count, bool) or raw_count < 1:
            raise ConfigError(f"{where}: field 'query.count' must be a positive integer or \"all\", "
                              f"got {raw_count!r}")
        query_count = raw_count
    query_order = _field(query, "order", f"{where} [query]", str, "random")
    if query_order not in ("random", "first"):
        raise ConfigError(f"{where}: field 'query.order' must be \"random\" or \"first\", "
                          f"got {query_order!r}")
    if query_order == "first" and query_count is None:
        raise ConfigError(f"{where}: query.order = \"first\" needs query.count")
    topk = evaluation.get("map_topk", "all")
    if topk == "all":
        map_topk = None
    elif isinstance(topk, int) and not isinstance(topk, bool) and topk > 0:
        map_topk = topk
    else:
        raise ConfigError(
            f"{where}: field 'evaluation.map_topk' must be \"all\" or a positive integer, "
            f"got {topk!r}"
        )
    radius = _field(evaluation, "radius", f"{where} [evaluation]", int, 2)
    if radius < 0:
        raise ConfigError(f"{where}: field 'evaluation.radius' must be >= 0, got {radius}")
    return Protocol(
        name=_field(data, "name", where, str),
        dataset=_field(data, "dataset", where, str),
        description=_field(data, "description", where, str, ""),
        seed=_field(data, "seed", where, int, 0),
        query_per_class=query_per_class,
        train_mode=mode,
        declared_train_mode=mode,
        train_full=_names(train.get("full", []), "train.full", where),
        variants=_names(train.get("variants", []), "train.variants", where),
        train_per_class=train_per_class,
        map_topk=map_topk,
        precision_ks=_int_list(
            evaluation.get("precision_ks", [100]), "evaluation.precision_ks", where
        ),
        radius=radius,
        default_bits=_int_list(
            data.get("bits", {}).get("default", [12, 24, 32, 48]), "bits.default", where
        ),
        source=where,
        unlabelled=unlabelled,
        query_pool=_field(query, "pool", f"{where} [query]", str, "all"),
        query_top_classes=top["query"],
        database_from=_field(database, "from", f"{where} [database]", str, "rest"),
        train_top_classes=top["train"],
        query_count=query_count,
        query_order=query_order,
        train_count=train_count,
        map_ks=_int_list(evaluation.get("map_ks", []), "evaluation.map_ks", where, allow_empty=True),
        tasks=_tasks(evaluation.get("tasks", ["i2t", "t2i"]), where),
        raw=copy.deepcopy(data),
    )


CROSS_MODAL_TASKS = ("i2t", "t2i", "i2i", "t2t")


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    """A list of method ids (checked against the registry when a grid is planned)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: field {key!r} must be a list of method ids")
    return tuple(v.strip().lower() for v in value)


def _tasks(value: Any, where: str) -> tuple[str, ...]:
    """``evaluation.tasks``: the cross-modal retrieval tasks to evaluate (methods with an image
    and a text side; single-modal methods have one task whatever this says)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: field 'evaluation.tasks' must be a non-empty list of task names")
    for v in value:
        if v not in CROSS_MODAL_TASKS:
            from hashbench.registry import suggest

            known = ", ".join(CROSS_MODAL_TASKS)
            raise ConfigError(f"{where}: unknown task {v!r} in evaluation.tasks"
                              f"{suggest(v, list(CROSS_MODAL_TASKS))} (known: {known})")
    return tuple(value)


def load_protocol_file(path: str | Path) -> Protocol:
    """Read and validate one protocol file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read protocol file {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_protocol(data, str(path))


def builtin_protocols() -> dict[str, Protocol]:
    """Every protocol shipped in ``hashbench.protocols``, by name."""
    found: dict[str, Protocol] = {}
    folder = resources.files("hashbench.protocols")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            proto = parse_protocol(data, f"protocols/{entry.name}")
            found[proto.name] = proto
    return found


def get_protocol(name_or_path: str) -> Protocol:
    """A built-in protocol by name, or a protocol file by path."""
    from hashbench.registry import suggest

    if name_or_path.endswith(".toml") or Path(name_or_path).is_file():
        return load_protocol_file(name_or_path)
    protocols = builtin_protocols()
    if name_or_path in protocols:
        return protocols[name_or_path]
    raise UsageError(
        f"unknown protocol {name_or_path!r}{suggest(name_or_path, list(protocols))} "
        f"(known: {', '.join(protocols)})"
    )


def protocol_for_dataset(dataset: str) -> Protocol:
    """The default protocol of a dataset: the one named like it, else the only one for it."""
    protocols = builtin_protocols()
    if dataset in protocols:
        return protocols[dataset]
    matching = [p for p in protocols.values() if p.dataset == dataset]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        from hashbench.datasets import available
        from hashbench.registry import suggest

        raise UsageError(
            f"no protocol for dataset {dataset!r}{suggest(dataset, available())} "
            f"(datasets with protocols: {', '.join(sorted({p.dataset for p in protocols.values()}))})"
        )
    names = ", ".join(p.name for p in matching)
    raise UsageError(f"dataset {dataset!r} has several protocols ({names}); pick one with --protocol")


# ---------------------------------------------------------------- materialisation


def _per_class_sample(
    labels: np.ndarray, pool: np.ndarray, per_class: int, classes: np.ndarray,
    rng: np.random.Generator, what: str, class_names: list[str] | None = None,
) -> np.ndarray:
    """``per_class`` items of each class in ``classes`` from ``pool``, class by class.

    For multi-label data an item drawn for one class is not drawn again for a later class,
    so the sample holds exactly ``per_class * len(classes)`` distinct items.
    """
    available = np.zeros(len(labels), dtype=bool)
    available[pool] = True
    chosen = []
    for c in classes:
        candidates = np.flatnonzero(available & (labels[:, c] > 0))
        if len(candidates) < per_class:
            name = f"{c} ({class_names[c]})" if class_names and c < len(class_names) else str(c)
            raise DataError(
                f"{what}: class {name} has only {len(candidates)} items left, "
                f"{per_class} are needed"
            )
        pick = rng.choice(candidates, size=per_class, replace=False)
        available[pick] = False
        chosen.append(np.sort(pick))
    return np.concatenate(chosen).astype(np.int64)


def _count_sample(pool: np.ndarray, count: int, order: str, rng: np.random.Generator,
                  what: str) -> np.ndarray:
    """``count`` items of ``pool`` (-1: all of it): drawn at random (seeded, returned in index
    order), or the first ``count`` of the pool (``order = "first"``, a fixed-order split)."""
    pool = np.asarray(pool, dtype=np.int64)
    if count == -1:
        return pool
    if count > len(pool):
        raise DataError(f"{what}: {count} asked for but the pool holds only {len(pool)} items")
    if order == "first":
        return pool[:count]
    return np.sort(rng.choice(pool, size=count, replace=False))


def split_hash(query: np.ndarray, database: np.ndarray, train: np.ndarray, mode: str) -> str:
    """SHA-256 over the three index arrays (int64, little-endian) and the training mode."""
    h = hashlib.sha256()
    for tag, arr in (("query", query), ("database", database), ("train", train)):
        h.update(f"{tag}:{len(arr)}:".encode())
        h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
    h.update(f"mode:{mode}".encode())
    return h.hexdigest()


def _classes(labels: np.ndarray, top: int) -> np.ndarray:
    """All classes, or the ``top`` most frequent (ties by class index), in index order."""
    if top <= 0 or top >= labels.shape[1]:
        return np.arange(labels.shape[1])
    counts = labels.sum(axis=0)
    order = np.lexsort((np.arange(len(counts)), -counts))
    return np.sort(order[:top])


def _partition(partitions: dict[str, np.ndarray] | None, name: str, what: str) -> np.ndarray:
    if not partitions or name not in partitions:
        known = ", ".join(sorted(partitions or {})) or "none"
        raise DataError(f"{what} asks for partition {name!r}; the dataset has: {known}")
    return np.asarray(partitions[name], dtype=np.int64)


def materialise(protocol: Protocol, labels: np.ndarray,
                partitions: dict[str, np.ndarray] | None = None,
                class_names: list[str] | None = None) -> Split:
    """Draw the split of ``protocol`` on a dataset with these multi-hot ``labels``.

    Deterministic in (protocol, labels, partitions): the generators are seeded with
    ``protocol.seed``. Items with no label are refused or dropped (``labels.unlabelled``).
    Queries: ``query.per_class`` per class from the query pool (the whole dataset or a
    partition such as MS-COCO's validation images), over all classes or the
    ``query.top_classes`` most frequent ones (counted over the whole labelled dataset).
    Database: every labelled item that is not a query ("rest"), or a partition. Training
    set: ``train.per_class`` per class from the database ("sampled") or the whole
    database ("full"). Query and database are disjoint; this is checked.
    """
    labels = np.asarray(labels)
    name = f"protocol {protocol.name!r}"
    labelled = labels.any(axis=1)
    n_unlabelled = int((~labelled).sum())
    if n_unlabelled and protocol.unlabelled == "refuse":
        raise DataError(
            f"{name}: {n_unlabelled} items have no label (first rows: "
            f"{np.flatnonzero(~labelled)[:5].tolist()}); set labels.unlabelled = \"drop\" to drop them"
        )
    everything = np.flatnonzero(labelled)
    query_pool = everything if protocol.query_pool == "all" else np.intersect1d(
        _partition(partitions, protocol.query_pool, f"{name} query.pool"), everything)
    rng = np.random.default_rng(protocol.seed)
    if protocol.query_count is not None:
        query = _count_sample(query_pool, protocol.query_count, protocol.query_order, rng, f"{name} queries")
    else:
        query = _per_class_sample(labels, query_pool, protocol.query_per_class or 0,
                                  _classes(labels[everything], protocol.query_top_classes), rng,
                                  f"{name} queries", class_names)
    if protocol.database_from == "rest":
        is_query = np.zeros(len(labels), dtype=bool)
        is_query[query] = True
        database = everything[~is_query[everything]].astype(np.int64)
    else:
        database = np.intersect1d(
            _partition(partitions, protocol.database_from, f"{name} database.from"), everything)
        if np.intersect1d(database, query).size:
            raise DataError(f"{name}: query pool and database partition overlap")
    if protocol.train_mode == "full":
        train = database
    else:
        # the sampled training set is drawn with its own stream so that "full" and
        # "sampled" runs of one protocol share the same queries and database
        train_rng = np.random.default_rng([protocol.seed, 1])
        if protocol.train_count is not None:
            train = _count_sample(database, protocol.train_count, "random", train_rng,
                                  f"{name} training set")
        else:
            train = _per_class_sample(labels, database, protocol.train_per_class or 0,
                                      _classes(labels[everything], protocol.train_top_classes),
                                      train_rng, f"{name} training set", class_names)
    return Split(query, database, train, protocol.train_mode,
                 split_hash(query, database, train, protocol.train_mode), n_unlabelled)
