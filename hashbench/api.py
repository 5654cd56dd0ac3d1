"""The method contract: what every hashing method (built-in or plugin) implements.

A method is a class with a ``meta`` class attribute (:class:`MethodMeta`), hyper-parameters
as ``__init__`` keyword arguments with defaults and no logic (scikit-learn style; the first
one is always ``bits``), learned state in attributes ending in ``_``, and

* ``fit(data: TrialData, ctx: RunContext) -> self``: ``data`` is the trial's view of the
  dataset (:class:`TrialData`): the training part and the database part, each with the
  modalities the method declared, its labels and its row indices. The queries are never
  visible during ``fit``.
* ``encode(inputs) -> codes``: shape ``(n, bits)``, dtype int8, values in {-1, +1}, never 0.
  A method that takes several modalities (``meta.modalities``, e.g. ``("features", "text")``)
  implements ``encode(inputs, modality)`` instead.
* ``encode_database(data, modality) -> codes``: the database's codes, one row per item of
  ``data.database``. The default encodes the database's inputs; a method that learns the
  database codes directly (ADSH's V, Lin:V, every "-D" variant, DDASH's B) or has its own
  database function (Lin:Lin) overrides it. This hook is the only place that decides where
  database codes come from: the runner always calls it.

Asymmetric methods that learn codes for the training rows subclass
:class:`AsymmetricHasher` and return them through ``database_codes()``; its
``encode_database`` hands them out when they were learned for exactly the database's rows
(the protocol's ``full`` mode) and encodes the database otherwise.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from hashbench.errors import CodeContractError, MethodDefinitionError, NotFittedError

T = TypeVar("T")

Family = Literal["shallow", "deep", "data-independent"]
Requires = Literal["cpu", "gpu-preferred", "gpu-required"]

FAMILIES = ("shallow", "deep", "data-independent")
REQUIRES = ("cpu", "gpu-preferred", "gpu-required")
MODALITIES = ("image", "features", "text")
"""Modality names: ``image`` (pixels: ``(n, C, H, W)`` / ``(n, H, W, C)`` arrays or an
indexable collection of images), ``features`` (one float32 vector per item describing its
image side: pixels for digits, SIFT bag-of-words, deep fc7 or HOG features), ``text`` (one
float32 vector per item: tags, bag-of-words, topic proportions)."""
_ID = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class MethodMeta:
    """What the registry and the report know about a method.

    ``name`` is the canonical, unique id used on the command line (lower case, ``[a-z0-9_-]``,
    starting with a letter). ``title`` is the display name in tables (e.g. "ITQ").
    ``citation`` names the paper the implementation follows; ids are unique per paper
    ("dsh" is Liu et al. 2016). ``modalities`` are the modalities the method takes (one for
    single-modal retrieval; an image side and ``text`` for cross-modal methods); a method
    whose modality depends on a hyper-parameter (ADSH's backbone) overrides the
    ``modalities`` property of its instances. ``requires`` says what hardware it needs:
    ``cpu`` (runs on the CPU), ``gpu-preferred`` (uses a GPU when the executing process sees
    one), ``gpu-required`` (refuses to run without one). ``full_mode_title``: the name of
    the method's full-database run when learning the database is the method itself (ADSH,
    Lin:V); other methods' full-database runs are the paper's "-D" variants. ``revision``
    counts changes to the method's code that change its results at the same
    hyper-parameters (bump it with such a change): it enters the run key, so runs of an
    earlier revision are not taken as finished.
    """

    name: str
    title: str
    citation: str
    family: Family
    modalities: tuple[str, ...] = ("features",)
    requires: Requires = "cpu"
    supervised: bool = False
    asymmetric: bool = False
    multilabel: bool = True
    full_mode_title: str | None = None
    revision: int = 1

    def problems(self) -> list[str]:
        """Everything wrong with this metadata (empty when it is valid)."""
        out = []
        if not isinstance(self.name, str) or not _ID.match(self.name):
            out.append(f"meta.name must be a lower-case id ([a-z][a-z0-9_-]*), got {self.name!r}")
        for key in ("title", "citation"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                out.append(f"meta.{key} must be a non-empty string")
        if self.family not in FAMILIES:
            out.append(f"meta.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if not isinstance(self.revision, int) or self.revision < 1:
            out.append(f"meta.revision must be a positive integer, got {self.revision!r}")
        if self.requires not in REQUIRES:
            out.append(f"meta.requires must be one of {', '.join(REQUIRES)}, got {self.requires!r}")
        mods = self.modalities
        if not isinstance(mods, tuple) or not mods:
            out.append(f"meta.modalities must be a non-empty tuple, got {mods!r}")
        else:
            unknown = [m for m in mods if m not in MODALITIES]
            if unknown:
                out.append(f"meta.modalities has unknown {unknown[0]!r} (known: {', '.join(MODALITIES)})")
            if len(set(mods)) != len(mods):
                out.append(f"meta.modalities repeats a modality: {mods!r}")
        return out

    def display_name(self, train_mode: str, protocol_mode: str = "sampled") -> str:
        """The name in reports: ``title``, or for the full training mode ``full_mode_title``
        when set (ADSH, Lin:V: database learning is the method itself), else ``title-D``;
        then the sampled run of such a method is ``title (sampled)``. On a protocol whose own
        training set is the database (``protocol_mode = "full"``, e.g. Wikipedia) a full run
        is no variant: its name is ``full_mode_title`` or ``title``."""
        if train_mode == "full" and protocol_mode == "full":
            return self.full_mode_title or self.title
        if train_mode == "full":
            return self.full_mode_title or f"{self.title}-D"
        # the sampled run must not share the full run's name (they are never averaged)
        return f"{self.title} (sampled)" if self.full_mode_title == self.title else self.title

    def is_variant(self, train_mode: str, protocol_mode: str = "sampled") -> bool:
        """True for a full-database run of a method whose own setting is the sampled training
        set, on a protocol that samples one: the ADSH paper's "-D" variants (Table 2)."""
        return train_mode == "full" and protocol_mode != "full" and self.full_mode_title is None


class Part:
    """One side of a trial (train, query or database): some rows of the dataset.

    ``indices`` are the rows of the full dataset, ``labels`` their multi-hot ``(n, L)``
    labels, and ``part[modality]`` their data in a modality (computed on first access and
    kept: an array slice, or a lazy view of an image collection). ``inputs`` is the data of
    the part's only modality (single-modal methods).
    """

    def __init__(self, name: str, indices: np.ndarray, labels: np.ndarray,
                 sources: Mapping[str, Any]) -> None:
        self.name = name
        self.indices = np.asarray(indices)
        self.labels = labels
        self._sources = dict(sources)
        self._cache: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"Part({self.name!r}, n={len(self)}, modalities={self.modalities})"

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def __getitem__(self, modality: str) -> Any:
        if modality not in self._sources:
            raise KeyError(f"the {self.name} part has no modality {modality!r} "
                           f"(it has: {', '.join(self.modalities) or 'none'})")
        if modality not in self._cache:
            self._cache[modality] = subset(_resolve(self._sources[modality]), self.indices)
        return self._cache[modality]

    @property
    def inputs(self) -> Any:
        """The data of the only modality of this part."""
        if len(self._sources) != 1:
            raise KeyError(f"the {self.name} part has modalities {self.modalities}; "
                           "index it by modality: part['text']")
        return self[next(iter(self._sources))]


@dataclass
class TrialData:
    """One trial's view of a dataset: training, database and (outside ``fit``) query parts.

    Built in exactly one place, :meth:`hashbench.protocol.Split.view`. ``train_mode`` is the
    protocol's ``"sampled"`` (the training set is a sample of the database) or ``"full"``
    (the training set *is* the database: same rows, same order). ``query`` is None in the
    view handed to ``fit``: methods never see the queries while training.
    """

    train: Part
    database: Part
    query: Part | None = None
    train_mode: str = "sampled"

    @property
    def train_is_database(self) -> bool:
        """True when the training rows are exactly the database rows (``full`` mode)."""
        return self.train_mode == "full" or (
            len(self.train) == len(self.database)
            and np.array_equal(self.train.indices, self.database.indices))

    def for_fit(self) -> TrialData:
        """The view without its queries (what ``fit`` receives)."""
        return TrialData(train=self.train, database=self.database, query=None,
                         train_mode=self.train_mode)


def _resolve(source: Any) -> Any:
    return source() if callable(source) and not hasattr(source, "__getitem__") else source


class IndexedView:
    """Rows ``indices`` of an indexable collection, without copying it (for image sets)."""

    def __init__(self, source: Any, indices: np.ndarray) -> None:
        self.source = source
        self.indices = np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.source[int(self.indices[i])]


def subset(inputs: Any, indices: np.ndarray) -> Any:
    """``inputs[indices]`` for arrays; a lazy :class:`IndexedView` for other collections."""
    if isinstance(inputs, np.ndarray):
        return inputs[indices]
    return IndexedView(inputs, indices)


def trial_data(modalities: Mapping[str, Any], labels: np.ndarray, train: np.ndarray,
               database: np.ndarray, query: np.ndarray | None = None,
               train_mode: str = "sampled") -> TrialData:
    """A :class:`TrialData` over arrays (tests, notebooks, plugin authors); the runner uses
    :meth:`hashbench.protocol.Split.view`."""
    labels = np.asarray(labels)

    def part(name: str, rows: np.ndarray) -> Part:
        rows = np.asarray(rows)
        return Part(name, rows, labels[rows], modalities)

    return TrialData(train=part("train", train), database=part("database", database),
                     query=None if query is None else part("query", query), train_mode=train_mode)


def _plain_iter(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    return iter(iterable)


@dataclass
class RunContext:
    """What the runner gives a method during ``fit``.

    Methods never import mlflow: per-iteration curves go through ``log_metric`` (for
    example ``ctx.log_metric("loss", value, step=it)``) and long loops through
    ``progress(iterable, total, desc)``. ``rng`` is seeded from ``seed``; use it (and seed
    torch from ``seed``) for every random draw so a run is reproducible. ``device`` is the
    torch device the executing process resolved for this trial from ``meta.requires``.

    For the report's MAP-versus-training-time figure (the ADSH paper's Fig. 3), log
    ``train_map`` and ``elapsed_seconds`` (training time so far, evaluation excluded) at
    the same step.

    ``on_epoch``, when set, is the caller's per-epoch evaluation hook: the deep methods
    (the template of ``hashbench.deep``, ADSH included) call ``on_epoch(step,
    elapsed_seconds, method)`` once per epoch (ADSH: per outer iteration), after logging
    that step, with ``method`` itself in a state where ``encode()`` (and
    ``encode_database()``) return the codes of the model as it is at that point, so the
    caller can compute the protocol's MAP exactly as the runner will at the end. The time
    spent in the hook is excluded from ``elapsed_seconds``; it must not change the method
    or draw from ``rng``. ``benchmarks/time_to_accuracy.py`` uses it.
    """

    seed: int = 0
    device: str = "cpu"
    scratch_dir: Path | None = None
    log_metric: Callable[[str, float, int], None] = lambda name, value, step: None
    progress: Callable[..., Iterator[Any]] = _plain_iter
    on_epoch: Callable[[int, float, Hasher], None] | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)


def binarize(values: Any) -> np.ndarray:
    """Map real values to codes: value > 0 -> +1, else -1 (a zero becomes -1), as int8."""
    arr = np.asarray(values)
    return np.where(arr > 0, 1, -1).astype(np.int8)


def check_codes(codes: Any, n_rows: int, bits: int, method: str, what: str) -> np.ndarray:
    """Enforce the code contract: ndarray, int8, shape (n_rows, bits), values in {-1, +1}."""
    from hashbench import registry

    who = f"method {method!r} ({registry.origin(method)})"
    if not isinstance(codes, np.ndarray):
        raise CodeContractError(f"{who} returned {what} as {type(codes).__name__}, not a numpy array")
    if codes.shape != (n_rows, bits):
        raise CodeContractError(
            f"{who} returned {what} of shape {codes.shape}, expected ({n_rows}, {bits})"
        )
    if codes.dtype != np.int8:
        raise CodeContractError(f"{who} returned {what} of dtype {codes.dtype}, expected int8")
    bad = (codes != 1) & (codes != -1)
    if bad.any():
        values = sorted(set(np.unique(codes[bad]).tolist()))[:5]
        raise CodeContractError(
            f"{who} returned {what} with values {values} outside {{-1, +1}}"
        )
    return codes


class Hasher(ABC):
    """Base class of every hashing method."""

    meta: ClassVar[MethodMeta]

    def __init__(self, bits: int = 32) -> None:
        self.bits = bits

    @abstractmethod
    def fit(self, data: TrialData, ctx: RunContext) -> Hasher:
        """Learn from ``data`` (training and database parts); return ``self``."""

    @abstractmethod
    def encode(self, inputs: Any) -> np.ndarray:
        """Codes of shape ``(n, bits)``, int8 in {-1, +1} (multi-modal methods:
        ``encode(inputs, modality)``)."""

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities ``fit``/``encode`` take. Defaults to ``meta.modalities``; a method
        whose input depends on a hyper-parameter (ADSH's backbone) overrides it."""
        return self.meta.modalities

    def encode_as(self, inputs: Any, modality: str) -> np.ndarray:
        """``encode(inputs)``, passing ``modality`` only to multi-modal methods."""
        if len(self.modalities) > 1:
            return self.encode(inputs, modality)  # type: ignore[call-arg]
        return self.encode(inputs)

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        """Codes of ``data.database`` in ``modality`` (default: the method's only one).

        The default applies ``encode`` to the database's inputs. Methods that learn the
        database codes directly, or hash the database with their own function, override it.
        """
        modality = modality or self.modalities[0]
        return self.encode_as(data.database[modality], modality)

    @classmethod
    def param_names(cls) -> list[str]:
        """The hyper-parameters: the keyword arguments of ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return [
            name
            for name, p in sig.parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def get_params(self) -> dict[str, Any]:
        """Current hyper-parameter values (every one of them goes into the run key)."""
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def applicable_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The part of a full setting ``params`` (as set, or as the store's text) that applies
        to it: what a run logs as ``hp.*`` and what the report compares between runs. All of
        them by default; a method whose parameters depend on another (a deep method's
        backbone) leaves out the ones that do not apply. The run key still hashes every
        parameter (:meth:`get_params`), so this never changes which trials count as done."""
        return dict(params)

    def _check_fitted(self, attribute: str) -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError(
                f"{self.meta.name}: call fit() before encode()/encode_database()"
            )


class AsymmetricHasher(Hasher):
    """A method that learns codes for its training rows directly (Lin:V, every "-D" variant).

    ``database_codes()`` returns them, one row per training row, and ``fit`` records which
    rows they belong to in ``learned_indices_`` (``data.train.indices`` by default; ADSH
    and Lin:V learn the database's codes even from a sampled training set and set
    ``data.database.indices``). ``encode_database`` returns the learned codes when they
    belong to exactly the database's rows, and encodes the database otherwise.
    """

    learned_indices_: np.ndarray | None = None

    @abstractmethod
    def database_codes(self) -> np.ndarray:
        """The codes learned directly, one row per entry of ``learned_indices_``."""

    def learned_for(self, data: TrialData) -> bool:
        """True when the learned codes are the codes of exactly ``data.database``'s rows."""
        rows = self.learned_indices_
        return rows is not None and np.array_equal(rows, data.database.indices)

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        if self.learned_for(data):
            return self.database_codes()
        return super().encode_database(data, modality)


def validate_meta(cls: type) -> MethodMeta:
    """The class's ``meta`` after every registration-time check; raises
    :class:`~hashbench.errors.MethodDefinitionError` naming the first problem."""
    qual = f"{cls.__module__}.{cls.__qualname__}"
    meta = getattr(cls, "meta", None)
    if not isinstance(meta, MethodMeta):
        raise MethodDefinitionError(f"{qual} needs a class attribute meta = MethodMeta(...)")
    if not (isinstance(cls, type) and issubclass(cls, Hasher)):
        raise MethodDefinitionError(f"{qual} must subclass hashbench.api.Hasher")
    problems = meta.problems()
    if "bits" not in cls.param_names():
        problems.append("__init__ must take bits")
    own_database = issubclass(cls, AsymmetricHasher) or cls.encode_database is not Hasher.encode_database
    if meta.asymmetric != own_database:
        problems.append("meta.asymmetric must be True exactly for methods with their own database "
                        "codes (AsymmetricHasher subclasses, or an encode_database override)")
    if problems:
        raise MethodDefinitionError(f"{qual} ({meta.name!r}): " + "; ".join(problems))
    return meta

