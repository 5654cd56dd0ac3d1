"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 70,000 28x28 grey images, 10 classes.

The four gzipped IDX files of the official release (the raw format torchvision's
``FashionMNIST`` reads), found in the data root or, when the root is not given or holds
none of them, where Debian's package ``dataset-fashion-mnist`` installs them
(``/usr/share/datasets/fashion-mnist/``; ``apt-get install dataset-fashion-mnist``)::

    train-images-idx3-ubyte.gz   60,000 x 28 x 28 uint8 (IDX magic 2051)
    train-labels-idx1-ubyte.gz   60,000 uint8 class ids 0..9 (IDX magic 2049)
    t10k-images-idx3-ubyte.gz    10,000 x 28 x 28
    t10k-labels-idx1-ubyte.gz    10,000

Index order: the 60,000 training images, then the 10,000 test images (partitions ``train``
and ``test``). The dataset carries the ``image`` modality only, a uint8 array
``(70000, 1, 28, 28)``; shallow methods get their feature vectors from a feature extractor
(:mod:`hashbench.extractors`).

:func:`check_files` verifies the counts and each file's checksum: the MD5 of the gzipped
file against Debian's record (``/var/lib/dpkg/info/dataset-fashion-mnist.md5sums`` when the
package is installed, else the values below) or the upstream download's, and, for a copy
that was re-compressed, the SHA-256 of the uncompressed IDX bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.errors import DataError

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
DPKG_MD5SUMS = Path("/var/lib/dpkg/info/dataset-fashion-mnist.md5sums")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot")

# file -> (IDX magic, number of items)
FILES = {
    "train-images-idx3-ubyte.gz": (2051, 60_000),
    "train-labels-idx1-ubyte.gz": (2049, 60_000),
    "t10k-images-idx3-ubyte.gz": (2051, 10_000),
    "t10k-labels-idx1-ubyte.gz": (2049, 10_000),
}
IMAGE_SIDE = 28

# MD5 of the gzipped files: Debian's package (0.0~git20200523.55506a9-1) and the upstream
# download (as listed by torchvision); SHA-256 of the uncompressed IDX bytes (the same for both).
DEBIAN_MD5 = {
    "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
    "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
    "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
    "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
}
UPSTREAM_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
RAW_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """The array in a gzipped (``.gz``) or plain IDX file.

    IDX layout: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then
    one big-endian int32 per dimension and the values in C order. Anything else (bad magic,
    fewer bytes than the header promises, a broken gzip stream) is a :class:`DataError`
    naming the file.
    """
    raw = _read_bytes(path)
    return _parse_idx(raw, path)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"Fashion-MNIST file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"corrupt Fashion-MNIST file {path}: {exc}") from None


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"corrupt Fashion-MNIST file {path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt Fashion-MNIST file {path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"corrupt Fashion-MNIST file {path}: IDX header {shape} needs {expected} bytes of data, "
            f"the file has {len(raw) - header} (truncated or padded)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def resolve_root(root: Path | None) -> Path:
    """``root`` when it holds at least one of the four files, else Debian's folder."""
    if root is not None:
        root = Path(root)
        for candidate in (root, root / "fashion-mnist"):
            if any((candidate / name).is_file() for name in FILES):
                return candidate
    return DEBIAN_ROOT


def _missing_error(root: Path, missing: list[str], given: Path | None) -> DataError:
    where = f"{root}" if given is None else f"{root} (nor in --data-root {given})"
    return DataError(
        f"Fashion-MNIST files missing in {where}: {', '.join(missing)}; install them with "
        f"'{INSTALL_HINT}' (into {DEBIAN_ROOT}) or point --data-root at a folder holding the four "
        f"gzipped IDX files"
    )


def _read_checked(path: Path, magic: int) -> np.ndarray:
    raw = _read_bytes(path)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        what = "images" if magic == 2051 else "labels"
        raise DataError(f"corrupt Fashion-MNIST file {path}: IDX magic {found}, expected {magic} ({what})")
    return _parse_idx(raw, path)


def _load_part(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    images = _read_checked(images_path, 2051)
    labels = _read_checked(labels_path, 2049)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"corrupt Fashion-MNIST file {images_path}: images of shape {images.shape}, "
                        f"expected (n, 28, 28)")
    if labels.ndim != 1 or len(labels) != len(images):
        count = labels.shape[0] if labels.ndim == 1 else labels.shape
        raise DataError(f"corrupt Fashion-MNIST files in {root}: {len(images)} images in "
                        f"{images_path.name} but {count} labels in {labels_path.name}")
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise DataError(f"corrupt Fashion-MNIST file {labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels


def load_fashion_mnist(root: Path | None = None) -> Dataset:
    """Fashion-MNIST from ``root`` (the four ``.gz`` IDX files, directly or in
    ``root/fashion-mnist/``) or, when ``root`` is None or holds none of them, from Debian's
    ``/usr/share/datasets/fashion-mnist/``."""
    folder = resolve_root(root)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise _missing_error(folder, missing, None if root is None or folder != DEBIAN_ROOT else root)
    train_images, train_labels = _load_part(folder, "train")
    test_images, test_labels = _load_part(folder, "t10k")
    images = np.concatenate([train_images, test_images])[:, None, :, :]
    targets = np.concatenate([train_labels, test_labels]).astype(np.int64)
    n_train = len(train_images)
    return Dataset(
        name="fashion-mnist",
        labels=np.eye(len(CLASS_NAMES), dtype=np.uint8)[targets],
        images=np.ascontiguousarray(images),  # the "image" modality
        class_names=CLASS_NAMES,
        description=f"Fashion-MNIST ({len(images)} 28x28 grey images, 10 classes) from {folder}",
        partitions={"train": np.arange(n_train), "test": np.arange(n_train, len(images))},
        provenance={"source": str(folder), "files": ",".join(FILES),
                    "verified": str(not checksum_problems(folder)).lower()},
        verify=lambda: check_files(folder),
    )


def _recorded_md5() -> dict[str, str]:
    """Debian's MD5 of each file, from dpkg's record when the package is installed."""
    recorded = dict(DEBIAN_MD5)
    try:
        lines = DPKG_MD5SUMS.read_text().splitlines()
    except OSError:
        return recorded
    for line in lines:
        digest, _, rel = line.strip().partition("  ")
        if rel.startswith("usr/share/datasets/fashion-mnist/") and Path(rel).name in FILES:
            recorded[Path(rel).name] = digest
    return recorded


def check_files(root: Path | None = None) -> list[str]:
    """Problems with the Fashion-MNIST files under ``root`` (resolved as by the loader).

    Checks that the four files exist and parse, that they hold 60,000 + 10,000 images of
    28x28 with labels covering the 10 classes, and each file's checksum: the gzipped file's
    MD5 equals Debian's record (dpkg's, when installed) or the upstream download's, or else
    the uncompressed bytes' SHA-256 equals the known one (a re-compressed copy). An empty
    list means the files are the official ones.
    """
    folder = resolve_root(root)
    problems: list[str] = []
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        return [str(_missing_error(folder, missing, None if root is None or folder != DEBIAN_ROOT else root))]
    problems += checksum_problems(folder)
    for prefix, n_expected in (("train", 60_000), ("t10k", 10_000)):
        try:
            images, labels = _load_part(folder, prefix)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if len(images) != n_expected:
            problems.append(f"{folder}/{prefix}-*: {len(images)} images, expected {n_expected}")
        n_classes = len(np.unique(labels))
        if n_classes != len(CLASS_NAMES):
            problems.append(f"{folder}/{prefix}-labels-idx1-ubyte.gz: {n_classes} classes, expected 10")
    return problems


def checksum_problems(folder: Path) -> list[str]:
    """One line per file under ``folder`` whose checksum matches no known release."""
    problems = []
    recorded = _recorded_md5()
    for name in FILES:
        path = folder / name
        gz_md5 = hashlib.md5(path.read_bytes()).hexdigest()
        if gz_md5 in (recorded[name], UPSTREAM_MD5[name]):
            continue
        try:
            raw_sha = hashlib.sha256(_read_bytes(path)).hexdigest()
        except DataError as exc:
            problems.append(str(exc))
            continue
        if raw_sha != RAW_SHA256[name]:
            problems.append(f"{path}: checksum mismatch (MD5 {gz_md5}, expected {recorded[name]} as "
                            f"recorded by Debian's package)")
    return problems
