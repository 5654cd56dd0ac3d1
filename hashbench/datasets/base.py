"""The dataset record and the loader table."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hashbench.api import MODALITIES, IndexedView, subset  # noqa: F401 - re-exported
from hashbench.errors import DataError, UsageError

VECTOR_MODALITIES = ("features", "text")


class Dataset:
    """A labelled collection of ``n`` items, indexed 0..n-1, with named modalities.

    ``modalities`` maps a name from :data:`MODALITIES` to the items' data in that modality:
    an array, an indexable collection, or a zero-argument callable that computes it on first
    use (a *provider*, e.g. cached deep features of the images: :func:`Dataset.provide`).
    ``features=`` and ``images=`` are shorthands for ``modalities["features"]`` and
    ``modalities["image"]``. ``labels`` is multi-hot uint8 ``(n, L)``. ``partitions`` names
    index subsets that protocols can draw from (MS-COCO's ``train``/``val``). ``provenance``
    says where the data came from; it is recorded with every run as ``dataset.*`` tags (a
    provider adds its own tags, e.g. the feature extractor, through :meth:`provide`).

    Vector modalities are checked when first read: float32, one row per item, finite.
    """

    def __init__(self, name: str, labels: np.ndarray, features: Any = None, images: Any = None,
                 class_names: Iterable[str] = (), description: str = "",
                 partitions: dict[str, np.ndarray] | None = None,
                 provenance: dict[str, str] | None = None,
                 modalities: dict[str, Any] | None = None,
                 verify: Callable[[], list[str]] | None = None) -> None:
        self.name = name
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise DataError(f"{name}: labels must be a (n, L) multi-hot matrix")
        if labels.size == 0:
            where = f" ({provenance['source']})" if provenance and provenance.get("source") else ""
            raise DataError(f"{name}{where}: the labels are empty (shape {labels.shape}); "
                            "every item needs a label row")
        self.labels = (labels > 0).astype(np.uint8)
        self.class_names = list(class_names)
        self.description = description
        self.partitions = dict(partitions or {})
        self.provenance = dict(provenance or {})
        self.verify = verify  # the loader's own file check (counts, checksums) for `data check`
        self._sources: dict[str, Any] = {}
        self._provider_tags: dict[str, dict[str, str]] = {}
        given = dict(modalities or {})
        for key, value in (("features", features), ("image", images)):
            if value is not None:
                given[key] = value
        for key, value in given.items():
            if value is not None:
                self._set(key, value)

    def _set(self, name: str, value: Any) -> None:
        if name not in MODALITIES:
            from hashbench.registry import suggest

            raise DataError(f"{self.name}: unknown modality {name!r}{suggest(name, list(MODALITIES))} "
                            f"(known: {', '.join(MODALITIES)})")
        if callable(value) and not hasattr(value, "__getitem__"):  # computed on first use
            value = _Provider(value)
        self._sources[name] = value

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, n={len(self)}, modalities={self.modality_names})"

    @property
    def n_classes(self) -> int:
        return self.labels.shape[1]

    @property
    def multilabel(self) -> bool:
        return bool((self.labels.sum(axis=1) > 1).any())

    # ------------------------------------------------------------ modalities

    @property
    def modality_names(self) -> tuple[str, ...]:
        """The modalities this dataset provides (computed ones included), in canonical order."""
        return tuple(m for m in MODALITIES if m in self._sources)

    def has(self, name: str) -> bool:
        return name in self._sources

    def is_loaded(self, name: str) -> bool:
        """True when ``name`` is present and not a provider still to be run."""
        return name in self._sources and not isinstance(self._sources[name], _Provider)

    def provide(self, name: str, provider: Callable[[], Any], tags: dict[str, str] | None = None) -> None:
        """Register ``provider`` to compute modality ``name`` on first use (replacing nothing
        that is already present); ``tags`` describe it (recorded with every run)."""
        if name in self._sources:
            return
        self._set(name, _Provider(provider))
        self._provider_tags[name] = dict(tags or {})

    @property
    def tags(self) -> dict[str, str]:
        """``dataset.*`` provenance tags plus the tags of every registered provider."""
        out = {f"dataset.{k}": v for k, v in self.provenance.items()}
        for tags in self._provider_tags.values():
            out.update(tags)
        return out

    def modality(self, name: str) -> Any:
        """The items' data in modality ``name`` (computed by its provider on first use)."""
        if name not in self._sources:
            provides = ", ".join(self.modality_names) or "nothing"
            raise DataError(f"dataset {self.name!r} provides no {name} (it provides: {provides})")
        value = self._sources[name]
        if isinstance(value, _Provider):
            value = value()
        if name in VECTOR_MODALITIES:
            value = self._checked_vectors(value, name)
        self._sources[name] = value
        return value

    def inputs(self, kind: str) -> Any:
        """Alias of :meth:`modality` (``"images"`` is accepted for ``"image"``)."""
        return self.modality("image" if kind == "images" else kind)

    @property
    def features(self) -> Any:
        """The ``features`` modality when it is present and computed, else None."""
        return self._sources["features"] if self.is_loaded("features") else None

    @property
    def images(self) -> Any:
        """The ``image`` modality when present, else None."""
        return self._sources.get("image")

    def _checked_vectors(self, values: Any, name: str) -> np.ndarray:
        source = self.provenance.get("source")
        where = f"{self.name} ({source})" if source else self.name
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or len(values) != len(self.labels):
            raise DataError(
                f"{where}: {name} have shape {values.shape}, expected ({len(self.labels)}, d)"
            )
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise DataError(
                f"{where}: {len(rows)} {name.rstrip('s')} rows contain NaN or inf "
                f"(first rows: {rows[:5].tolist()}); remove or impute them"
            )
        return values


class _Provider:
    """A modality computed on first use."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def __call__(self) -> Any:
        return self.make()


Loader = Callable[..., Dataset]
_LOADERS: dict[str, str | Loader] = {
    "digits": "hashbench.datasets.digits:load_digits",
    "cifar10": "hashbench.datasets.cifar10:load_cifar10",
    "nuswide": "hashbench.datasets.listfile:load_nuswide",
    "coco": "hashbench.datasets.listfile:load_coco",
    "features": "hashbench.datasets.features_file:load_features_file",
    "fashion-mnist": "hashbench.datasets.fashion_mnist:load_fashion_mnist",
    "imagefolder": "hashbench.datasets.imagefolder:load_imagefolder",
    "mirflickr": "hashbench.datasets.crossmodal:load_mirflickr",
    "nuswide-tc21": "hashbench.datasets.crossmodal:load_nuswide_tc21",
    "nuswide-tc10": "hashbench.datasets.crossmodal:load_nuswide_tc10",
    "iapr": "hashbench.datasets.crossmodal:load_iapr",
    "wikipedia": "hashbench.datasets.crossmodal:load_wikipedia",
    "digits-2view": "hashbench.datasets.crossmodal:load_digits_2view",
}


def register_loader(name: str, loader: str | Loader) -> None:
    """Add a loader: a callable ``(root: Path | None, **options) -> Dataset`` or "module:attr"."""
    _LOADERS[name] = loader


def available() -> list[str]:
    return sorted(_LOADERS)


def load(name: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load dataset ``name``; unknown names raise a UsageError with suggestions."""
    from hashbench.registry import suggest

    if name not in _LOADERS:
        raise UsageError(
            f"unknown dataset {name!r}{suggest(name, available())} (known: {', '.join(available())})"
        )
    loader = _LOADERS[name]
    if isinstance(loader, str):
        module, attr = loader.split(":")
        loader = getattr(importlib.import_module(module), attr)
    import inspect

    params = inspect.signature(loader).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [k for k in params if k != "root"]
    for key in options:
        if not takes_any and key not in accepted:
            raise UsageError(
                f"dataset {name!r} has no option {key!r}{suggest(key, accepted)}"
                f" (options: {', '.join(accepted) or 'none'})"
            )
    return loader(Path(root) if root else None, **options)
