"""The method contract: what every hashing method (built-in or plugin) implements.

A method is a class with a ``meta`` class attribute (:class:`MethodMeta`), hyper-parameters
as ``__init__`` keyword arguments with defaults and no logic (scikit-learn style; the first
one is always ``bits``), learned state in attributes ending in ``_``, and

* ``fit(data: TrainingData, ctx: RunContext) -> self``
* ``encode(inputs) -> codes``: shape ``(n, bits)``, dtype int8, values in {-1, +1}, never 0.

Asymmetric methods (ADSH, Lin:V and every "-D" variant) subclass :class:`AsymmetricHasher`
and also return the codes they learned for the training points directly through
``database_codes()``. When a protocol trains on the full database, the runner takes the
database codes from there and never re-encodes the database.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from hashbench.errors import CodeContractError, NotFittedError

T = TypeVar("T")

Family = Literal["shallow", "deep", "data-independent"]
InputKind = Literal["features", "images"]


@dataclass(frozen=True)
class MethodMeta:
    """What the registry and the report know about a method.

    ``name`` is the canonical, unique id used on the command line (lower case). ``title``
    is the display name in tables (e.g. "ITQ"). ``citation`` names the paper the
    implementation follows; ids are unique per paper ("dsh" is Liu et al. 2016).
    """

    name: str
    title: str
    citation: str
    family: Family
    input: InputKind = "features"
    supervised: bool = False
    asymmetric: bool = False
    multilabel: bool = True
    learns_database: bool = False
    full_mode_title: str | None = None
    """True for methods that learn the database codes even when trained on a sampled set
    (ADSH eq. 3): the runner then passes the database's inputs and labels in
    ``TrainingData.database_*`` and takes the database codes from ``database_codes()``."""

    def display_name(self, train_mode: str) -> str:
        """The name in reports: ``title``, or for the full training mode ``full_mode_title``
        when set (ADSH, Lin:V: database learning is the method itself), else ``title-D``;
        then the sampled run of such a method is ``title (sampled)``."""
        if train_mode == "full":
            return self.full_mode_title or f"{self.title}-D"
        # the sampled run must not share the full run's name (they are never averaged)
        return f"{self.title} (sampled)" if self.full_mode_title == self.title else self.title


@dataclass
class TrainingData:
    """The training set handed to ``fit``.

    ``inputs`` is a float32 feature matrix ``(n, d)`` for feature methods (images
    arrive the same way for image methods, as an indexable dataset). ``labels`` is the
    multi-hot label matrix ``(n, L)`` of 0/1 (single-label data is one-hot);
    unsupervised methods ignore it. ``indices`` are the rows of the full dataset.
    ``is_database`` is True when the training set *is* the database (protocol
    ``train = "full"``), so that ``database_codes()`` rows align with the database.

    ``database_inputs`` / ``database_labels`` / ``database_indices`` are set only for
    methods with ``meta.learns_database`` trained on a sampled set; ``database_codes()``
    then returns one row per database item, in this order.
    """

    inputs: Any
    labels: np.ndarray
    indices: np.ndarray
    is_database: bool = False
    database_inputs: Any = None
    database_labels: np.ndarray | None = None
    database_indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)


def _plain_iter(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    return iter(iterable)


@dataclass
class RunContext:
    """What the runner gives a method during ``fit``.

    Methods never import mlflow: per-iteration curves go through ``log_metric`` (for
    example ``ctx.log_metric("loss", value, step=it)``) and long loops through
    ``progress(iterable, total, desc)``. ``rng`` is seeded from ``seed``; use it (and seed
    torch from ``seed``) for every random draw so a run is reproducible.

    For the report's MAP-versus-training-time figure (the ADSH paper's Fig. 3), log
    ``train_map`` and ``elapsed_seconds`` (training time so far, evaluation excluded) at
    the same step.

    ``on_epoch``, when set, is the caller's per-epoch evaluation hook: the deep methods
    (the symmetric template of ``hashbench.deep`` and ADSH) call ``on_epoch(step,
    elapsed_seconds, method)`` once per epoch (ADSH: per outer iteration), after logging
    that step, with ``method`` itself in a state where ``encode()`` (and, for an asymmetric
    method, ``database_codes()``) return the codes of the model as it is at that point, so
    the caller can compute the protocol's MAP exactly as the runner will at the end. The
    time spent in the hook is excluded from ``elapsed_seconds``; it must not change the
    method or draw from ``rng``. ``benchmarks/time_to_accuracy.py`` uses it.
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
    def fit(self, data: TrainingData, ctx: RunContext) -> Hasher:
        """Learn from ``data``; return ``self``."""

    @abstractmethod
    def encode(self, inputs: Any) -> np.ndarray:
        """Codes of shape ``(n, bits)``, int8 in {-1, +1}."""

    @property
    def input_kind(self) -> str:
        """What ``fit``/``encode`` receive: "features" or "images". Defaults to
        ``meta.input``; a method whose input depends on a hyper-parameter (ADSH's backbone)
        overrides it."""
        return self.meta.input

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
        """Current hyper-parameter values (what is logged as MLflow params)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def _check_fitted(self, attribute: str) -> None:
        if getattr(self, attribute, None) is None:
            raise NotFittedError(
                f"{self.meta.name}: call fit() before encode()/database_codes()"
            )


class AsymmetricHasher(Hasher):
    """A method that learns the database codes directly (ADSH's V, Lin:V, "-D" variants)."""

    @abstractmethod
    def database_codes(self) -> np.ndarray:
        """The codes learned for the training points, in the order of ``data.indices``."""
