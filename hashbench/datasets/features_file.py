"""User-supplied features: a ``.npz`` or ``.mat`` file with ``features`` and ``labels``.

``features``: float array (n, d). ``labels``: class indices (n,) (single-label) or a 0/1
multi-hot matrix (n, L). ``.mat`` files are read with scipy (MATLAB v5/v7 format; save
v7.3 files with ``-v7``). Option ``path=FILE`` (default ``<root>/features.npz``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.errors import DataError


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"feature file not found: {path} (expected .npz or .mat with arrays "
                        "'features' (n, d) and 'labels' (n,) or (n, L))")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if path.suffix == ".mat":
            from scipy.io import loadmat

            return {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7") from None
    except ValueError as exc:
        if "pickle" in str(exc):  # numpy's fallback for a file that is neither .npz nor .npy
            raise DataError(f"cannot read feature file {path}: not a valid .npz archive (damaged, "
                            "truncated or another format); write it with numpy.savez") from None
        raise DataError(f"cannot read feature file {path}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # noqa: BLE001 - numpy/scipy raise many kinds on corrupt files
        raise DataError(f"cannot read feature file {path}: {type(exc).__name__}: {exc}") from None
    raise DataError(f"feature file {path} must end in .npz or .mat")


def labels_to_multihot(labels: np.ndarray, where: str) -> np.ndarray:
    """Class indices (n,) -> one-hot; a 0/1 matrix (n, L) passes through (validated)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise DataError(f"{where}: the labels array is empty (shape {labels.shape}); every row of "
                        "features needs a class index or a 0/1 label row")
    if labels.ndim == 2 and 1 in labels.shape and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[0] == 1):
        labels = labels.reshape(-1)
        if not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)) \
                or labels.min() < 0:
            raise DataError(f"{where}: 1-D labels must be non-negative class indices")
        idx = labels.astype(np.int64)
        return np.eye(int(idx.max()) + 1, dtype=np.uint8)[idx]
    if labels.ndim != 2 or not np.isin(labels, (0, 1)).all():
        raise DataError(f"{where}: labels must be class indices (n,) or a 0/1 matrix (n, L)")
    return labels.astype(np.uint8)


def load_features_file(root: Path | None = None, path: str | None = None, features_key: str = "features",
                       labels_key: str = "labels") -> Dataset:
    """Options: ``path=FILE``; ``features_key=`` / ``labels_key=`` name the arrays when a file
    calls them otherwise (e.g. Corel5k's ``X`` and ``y``)."""
    file = Path(path).expanduser() if path else (root or Path("data")).resolve() / "features.npz"
    arrays = _read(file)
    missing = [k for k in (features_key, labels_key) if k not in arrays]
    if missing:
        raise DataError(f"{file}: missing array(s) {', '.join(missing)} (found: {', '.join(arrays)}; "
                        "name others with --data-option features_key=... labels_key=...)")
    feats = np.asarray(arrays[features_key])
    if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.number):
        raise DataError(f"{file}: {features_key!r} must be a numeric (n, d) array, got {feats.dtype} "
                        f"{feats.shape}")
    if feats.size == 0:
        raise DataError(f"{file}: {features_key!r} is empty (shape {feats.shape})")
    labels = labels_to_multihot(arrays[labels_key], str(file))
    if len(labels) != len(feats):
        raise DataError(f"{file}: {len(feats)} feature rows but {len(labels)} label rows")
    return Dataset(
        name="features",
        labels=labels,
        features=feats.astype(np.float32),
        class_names=[str(i) for i in range(labels.shape[1])],
        description=f"features from {file}: {feats.shape[0]} x {feats.shape[1]}, {labels.shape[1]} labels",
        provenance={"source": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()[:16]},
    )
