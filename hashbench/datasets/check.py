"""``hashbench data check``: describe a dataset and list its problems, training nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.errors import HashbenchError


@dataclass
class CheckReport:
    name: str
    n_items: int
    label_shape: tuple[int, int]
    multilabel: bool
    label_counts: dict[str, int]
    partitions: dict[str, int]
    provenance: dict[str, str]
    feature_shape: tuple[int, ...] | None
    problems: list[str] = field(default_factory=list)
    modalities: dict[str, str] = field(default_factory=dict)
    orientation: str | None = None
    empty_text_rows: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def render(self) -> str:
        lines = [
            f"dataset {self.name}: {self.n_items} items, labels {self.label_shape[0]} x "
            f"{self.label_shape[1]} ({'multi-label' if self.multilabel else 'single-label'})",
        ]
        if self.modalities:
            lines.append("modalities: " + ", ".join(f"{k} {v}" for k, v in self.modalities.items()))
        elif self.feature_shape:
            lines.append(f"features: {self.feature_shape[0]} x {self.feature_shape[1]}")
        if self.empty_text_rows is not None:
            lines.append(f"rows with all-zero text: {self.empty_text_rows}")
        if self.orientation:
            lines.append(f"orientation found: {self.orientation}")
        if self.partitions:
            lines.append("partitions: " + ", ".join(f"{k} {v}" for k, v in self.partitions.items()))
        for key, value in self.provenance.items():
            if key != "orientation":
                lines.append(f"{key}: {value}")
        lines.append("label frequency: " + ", ".join(f"{k} {v}" for k, v in self.label_counts.items()))
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(dataset: Dataset, check_images: bool = True, progress: Any = None,
                  max_listed: int = 10) -> CheckReport:
    labels = dataset.labels
    names = dataset.class_names or [str(i) for i in range(labels.shape[1])]
    problems = []
    unlabelled = np.flatnonzero(~labels.any(axis=1))
    if len(unlabelled):
        problems.append(f"{len(unlabelled)} items have no label (first rows: {unlabelled[:5].tolist()})")
    empty = [names[c] for c in np.flatnonzero(labels.sum(axis=0) == 0)]
    if empty:
        problems.append(f"{len(empty)} classes have no item: {', '.join(empty[:10])}")
    feature_shape = None
    if dataset.features is not None:
        feats = np.asarray(dataset.features)
        feature_shape = feats.shape
        bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
        if len(bad):
            problems.append(f"{len(bad)} feature rows contain NaN or inf (first rows: {bad[:5].tolist()})")
    modalities, empty_text = _check_modalities(dataset, problems)
    if getattr(dataset, "verify", None) is not None:  # the loader's file check: counts, checksums
        problems += dataset.verify()
    if check_images and dataset.images is not None and hasattr(dataset.images, "find_problems"):
        image_problems = dataset.images.find_problems(progress=progress)
        problems += image_problems[:max_listed]
        if len(image_problems) > max_listed:
            problems.append(f"... and {len(image_problems) - max_listed} more image problems")
    return CheckReport(
        name=dataset.name,
        n_items=len(dataset),
        label_shape=tuple(labels.shape),
        multilabel=dataset.multilabel,
        label_counts={names[i]: int(c) for i, c in enumerate(labels.sum(axis=0))},
        partitions={k: len(v) for k, v in dataset.partitions.items()},
        provenance=dict(dataset.provenance),
        feature_shape=feature_shape,
        problems=problems,
        modalities=modalities,
        orientation=dataset.provenance.get("orientation"),
        empty_text_rows=empty_text,
    )


def _check_modalities(dataset: Dataset, problems: list[str]) -> tuple[dict[str, str], int | None]:
    """Shapes of the modalities of a multi-modal dataset and its rows with all-zero text.

    Only for datasets with more than one modality or a ``text`` one (single-modal image
    sets would otherwise run their feature extractor here); vector modalities a loader
    computes on first use (features read from a file) are read now.
    """
    names = dataset.modality_names
    if len(names) < 2 and "text" not in names:
        return {}, None
    shapes: dict[str, str] = {}
    empty_text = None
    for name in names:
        if name == "image":
            images = dataset.images
            shape = getattr(images, "shape", None)
            shapes[name] = " x ".join(map(str, shape)) if shape is not None else f"{len(images)} images"
            continue
        try:
            values = dataset.modality(name)
        except HashbenchError as exc:
            problems.append(f"{name}: {exc}")
            continue
        shapes[name] = f"{values.shape[0]} x {values.shape[1]}"
        zero = np.flatnonzero(~values.any(axis=1))
        if name == "text":
            empty_text = len(zero)
        if len(zero):
            what = "text" if name == "text" else f"{name} (image side)"
            problems.append(f"{len(zero)} rows have all-zero {what} (first rows: {zero[:5].tolist()})")
    return shapes, empty_text
