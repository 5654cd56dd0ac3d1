"""scikit-learn's bundled digits: 1,797 8x8 grey images of the digits 0-9 (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset


def _digits_file() -> Path | None:
    """scikit-learn's ``datasets/data/digits.csv.gz``, found without importing scikit-learn
    (its import costs 1-3 s in every CLI process); None if this version keeps it elsewhere."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(pixels 0-16 as float64, digit ids): the bundled file read as scikit-learn's
    ``load_digits`` reads it (64 pixel columns, then the digit), or through it."""
    path = _digits_file()
    if path is None:
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def load_digits(root: Path | None = None) -> Dataset:
    """Features are the 64 pixel intensities scaled to [0, 1]; images are (n, 1, 8, 8)."""
    data, target = _digits_arrays()
    pixels = (data / 16.0).astype(np.float32)
    labels = np.eye(10, dtype=np.uint8)[target]
    return Dataset(
        name="digits",
        labels=labels,
        features=pixels,
        images=pixels.reshape(-1, 1, 8, 8),
        class_names=[str(d) for d in range(10)],
        description="scikit-learn load_digits: 1,797 8x8 images, 10 classes, bundled",
    )
