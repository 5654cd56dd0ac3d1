"""The dataset record and the loader table."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hashbench.errors import DataError, UsageError


@dataclass
class Dataset:
    """A labelled collection, indexed 0..n-1.

    ``features`` is float32 ``(n, d)`` (what feature methods train on); for image datasets
    it is computed on first use by ``feature_source`` (cached deep features, see
    :mod:`hashbench.features`). ``images`` is an indexable collection of images (PIL
    images or arrays; what image methods train on), or None. ``labels`` is multi-hot uint8
    ``(n, L)``. ``partitions`` names index subsets that protocols can draw from (MS-COCO's
    ``train``/``val``). ``provenance`` says where the data came from; it is recorded with
    every run as ``dataset.*`` tags.
    """

    name: str
    labels: np.ndarray
    features: np.ndarray | None = None
    images: Any = None
    class_names: list[str] = field(default_factory=list)
    description: str = ""
    partitions: dict[str, np.ndarray] = field(default_factory=dict)
    feature_source: Callable[[], np.ndarray] | None = None
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 2:
            raise DataError(f"{self.name}: labels must be a (n, L) multi-hot matrix")
        self.labels = (labels > 0).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return self.labels.shape[1]

    @property
    def multilabel(self) -> bool:
        return bool((self.labels.sum(axis=1) > 1).any())

    def _checked_features(self, feats: Any) -> np.ndarray:
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or len(feats) != len(self.labels):
            raise DataError(
                f"{self.name}: features have shape {feats.shape}, expected ({len(self.labels)}, d)"
            )
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise DataError(
                f"{self.name}: {len(rows)} feature rows contain NaN or inf "
                f"(first rows: {rows[:5].tolist()})"
            )
        return feats

    def inputs(self, kind: str) -> Any:
        """The inputs a method of ``kind`` ("features" or "images") trains on."""
        if kind == "features":
            if self.features is None and self.feature_source is not None:
                self.features = self.feature_source()
            if self.features is not None:
                self.features = self._checked_features(self.features)
            value = self.features
        else:
            value = self.images
        if value is None:
            raise DataError(f"dataset {self.name!r} provides no {kind}")
        return value


Loader = Callable[..., Dataset]
_LOADERS: dict[str, str | Loader] = {
    "digits": "hashbench.datasets.digits:load_digits",
    "cifar10": "hashbench.datasets.cifar10:load_cifar10",
    "nuswide": "hashbench.datasets.listfile:load_nuswide",
    "coco": "hashbench.datasets.listfile:load_coco",
    "features": "hashbench.datasets.features_file:load_features_file",
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
