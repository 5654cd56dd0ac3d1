"""scikit-learn's bundled digits: 1,797 8x8 grey images of the digits 0-9 (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset


def load_digits(root: Path | None = None) -> Dataset:
    """Features are the 64 pixel intensities scaled to [0, 1]; images are (n, 1, 8, 8)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    pixels = (bunch.data / 16.0).astype(np.float32)
    labels = np.eye(10, dtype=np.uint8)[bunch.target]
    return Dataset(
        name="digits",
        labels=labels,
        features=pixels,
        images=pixels.reshape(-1, 1, 8, 8),
        class_names=[str(d) for d in range(10)],
        description="scikit-learn load_digits: 1,797 8x8 images, 10 classes, bundled",
    )
