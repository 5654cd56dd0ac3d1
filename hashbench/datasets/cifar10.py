"""CIFAR-10 through torchvision: 60,000 32x32 colour images, 10 classes.

The data root holds torchvision's layout, ``<root>/cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta`` (the "python
version" archive). Missing files are downloaded into the root where the network allows
(``download`` option: ``auto`` (default), ``yes``, ``no``). Files that do not match the
official MD5 checksums still load (for tests and re-packed copies) but are recorded as
``dataset.verified = false`` and warned about.

Index order: the 50,000 training images, then the 10,000 test images (partitions
``train`` and ``test``); the ADSH protocol ignores the official split and samples queries
from all 60,000.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.datasets.images import ArrayImages
from hashbench.errors import DataError

LAYOUT = "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"
WHERE = ("put the extracted python-version archive there, or point --data-root (or HASHBENCH_DATA) "
         "at the folder that holds cifar-10-batches-py/")


def _torchvision_class():
    from torchvision.datasets import CIFAR10

    class LenientCIFAR10(CIFAR10):
        """torchvision's reader; accepts files that fail the MD5 check, and says so."""

        verified = True

        def _check_integrity(self) -> bool:
            if super()._check_integrity():
                return True
            base = Path(self.root) / self.base_folder
            names = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            if all((base / n).is_file() for n in names):
                self.verified = False
                return True
            return False

        def _load_meta(self) -> None:
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as handle:
                data = pickle.load(handle, encoding="latin1")
            self.classes = data[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return LenientCIFAR10


def _open(cls, root: Path, train: bool, download: bool, option: str = "auto"):
    try:
        return cls(str(root), train=train, download=download)
    except RuntimeError:  # torchvision's "not found or corrupted" (its advice names its own option)
        allow = "; or allow the download with --data-option download=auto" if option == "no" else ""
        raise DataError(f"CIFAR-10 not found or incomplete in {root} (expected {LAYOUT}); {WHERE}{allow}") \
            from None
    except KeyError as exc:
        raise DataError(_missing_key(root / "cifar-10-batches-py", str(exc.args[0]) if exc.args else "?",
                                     train)) from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"corrupt CIFAR-10 file under {root / 'cifar-10-batches-py'}: {exc}") from None
    except OSError as exc:  # download failed: no network
        raise DataError(
            f"CIFAR-10 is not in {root} (expected {LAYOUT}) and the download failed "
            f"({' '.join(str(exc).split())}); {WHERE}"
        ) from None


_KEYS = {"data": "data", "labels": "labels", "fine_labels": "labels", "label_names": "label_names"}


def _missing_key(base: Path, key: str, train: bool) -> str:
    """Which batch file lacks ``key`` and which keys it has (e.g. Python 3 bytes keys b'data')."""
    wanted = _KEYS.get(key, key)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if wanted == "label_names":
        names = ["batches.meta"]
    for name in names:
        try:
            with open(base / name, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")
        except Exception:  # noqa: BLE001 - any unreadable file is reported by the generic message
            continue
        if isinstance(entry, dict) and wanted not in entry:
            found = ", ".join(repr(k) for k in list(entry)[:8]) or "none"
            hint = ""
            if wanted.encode() in entry:
                hint = ("; its keys are bytes (pickled from a dict loaded with encoding='bytes'): "
                        "re-save it with str keys")
            return f"corrupt CIFAR-10 file {base / name}: no key {wanted!r} (found keys: {found}){hint}"
    return f"corrupt CIFAR-10 file under {base}: missing key {wanted!r}"


def load_cifar10(root: Path | None = None, download: str = "auto") -> Dataset:
    root = (root or Path("data")).resolve()
    if download not in ("auto", "yes", "no"):
        raise DataError(f"cifar10: download must be auto, yes or no, got {download!r}")
    cls = _torchvision_class()
    base = root / "cifar-10-batches-py"
    want_download = download == "yes" or (download == "auto" and not base.is_dir())
    existed = root.exists()
    try:
        parts = [_open(cls, root, train, want_download, download) for train in (True, False)]
    except DataError:
        if not existed and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # a failed download leaves no empty data folder behind
        raise
    images = np.concatenate([np.asarray(p.data, dtype=np.uint8) for p in parts])
    targets = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(targets):
        raise DataError(f"corrupt CIFAR-10 under {base}: images {images.shape}, labels {targets.shape}")
    if targets.min() < 0 or targets.max() >= 10:
        raise DataError(f"corrupt CIFAR-10 under {base}: labels outside 0..9")
    verified = all(p.verified for p in parts)
    if not verified:
        warnings.warn(f"CIFAR-10 files under {base} do not match the official MD5 checksums",
                      stacklevel=2)
    n_train = len(parts[0].data)
    return Dataset(
        name="cifar10",
        labels=np.eye(10, dtype=np.uint8)[targets],
        images=ArrayImages(images),
        class_names=list(parts[0].classes),
        description=f"CIFAR-10 ({len(images)} images, torchvision reader) from {base}",
        partitions={"train": np.arange(n_train), "test": np.arange(n_train, len(images))},
        provenance={"source": str(base), "verified": str(verified).lower()},
    )
