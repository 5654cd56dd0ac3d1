"""Reading codes and labels from files, and packing codes into bytes.

Code files (``load_codes``): ``.npy``; ``.npz`` (the array named ``codes``, else the first
array); ``.mat`` (``scipy.io.loadmat``; the variable ``codes`` or ``B``, else the first
variable whose name does not start with ``__``). Three encodings are understood:

- values in {-1, +1} (any integer or float dtype);
- values in {0, 1}: 0 becomes -1;
- packed bytes (uint8, shape (n, ceil(bits / 8))), which needs ``bits``: bit ``i`` of a code
  is bit ``7 - i % 8`` of byte ``i // 8`` (``np.packbits`` / ``np.unpackbits`` big-endian
  order, the first code bit is the most significant bit of the first byte); a 1 bit is +1.
  Trailing pad bits of the last byte are ignored.

Label files (``load_labels``): ``.npy``, ``.npz`` (``labels``, else the first array), ``.mat``
(``labels`` or ``L``, else the first variable), ``.txt`` / ``.csv`` (whitespace or comma
separated numbers). A 1-D array, or a single column, holds class indices; a 2-D array holds
multi-hot rows.

Every problem raises :class:`~hashbench.errors.DataError` naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hashbench.errors import DataError
from hashbench.evaluation.inputs import as_codes, to_multihot


def pack_codes(codes: Any) -> np.ndarray:
    """{-1, +1} codes (n, bits) as packed uint8 bytes (n, ceil(bits / 8)), big-endian bit order."""
    c = as_codes(codes)
    return np.packbits(c > 0, axis=1)


def unpack_codes(packed: Any, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: packed uint8 bytes back to int8 codes in {-1, +1}."""
    p = np.asarray(packed)
    if p.ndim != 2 or p.dtype != np.uint8:
        raise DataError(f"packed codes must be a 2-D uint8 array, got dtype {p.dtype} and shape "
                        f"{p.shape}")
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits < 1:
        raise DataError(f"bits must be a positive integer, got {bits!r}")
    n_bytes = -(-int(bits) // 8)
    if p.shape[1] != n_bytes:
        raise DataError(f"packed codes have {p.shape[1]} bytes per code, but {bits} bits need {n_bytes}")
    unpacked = np.unpackbits(p, axis=1, count=int(bits))
    return (unpacked.astype(np.int8) * 2 - 1).astype(np.int8)


def _read_array(path: Path, preferred: tuple[str, ...], kind: str) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{kind} file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{kind} file {path} is a directory")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if not names:
                    raise DataError(f"{kind} file {path} holds no arrays")
                name = next((n for n in preferred if n in names), names[0])
                return archive[name]
        if suffix == ".mat":
            import scipy.io

            data = scipy.io.loadmat(path)
            names = [n for n in data if not n.startswith("__")]
            if not names:
                raise DataError(f"{kind} file {path} holds no variables")
            name = next((n for n in preferred if n in names), names[0])
            return np.asarray(data[name])
        if suffix in (".txt", ".csv") and kind == "label":
            delimiter = "," if suffix == ".csv" else None
            return np.loadtxt(path, delimiter=delimiter, ndmin=2)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, ValueError) and "pickle" in reason:  # numpy's fallback for a non-array file
            reason = f"not a valid {suffix} file (damaged, truncated or another format)"
        raise DataError(f"cannot read {kind} file {path}: {reason}") from None
    allowed = ".npy, .npz, .mat" + (", .txt, .csv" if kind == "label" else "")
    raise DataError(f"{kind} file {path} has an unsupported extension {suffix or '(none)'!r}; use {allowed}")


def load_codes(path: str | Path, bits: int | None = None) -> np.ndarray:
    """Read binary codes from ``path`` as an int8 (n, bits) array in {-1, +1}.

    See the module docstring for the formats. ``bits`` is required for packed bytes; when
    given for unpacked codes it must match their width.
    """
    path = Path(path)
    a = _read_array(path, ("codes", "B"), "code")
    if a.ndim == 1 and a.size:
        raise DataError(f"code file {path} holds a 1-D array of shape {a.shape}; expected (n, bits)")
    if a.ndim != 2 or a.size == 0:
        raise DataError(f"code file {path} holds an array of shape {a.shape}; expected a non-empty (n, bits)")
    if a.dtype == np.bool_:
        a = a.astype(np.int8)
    if a.dtype.kind not in "iuf":
        raise DataError(f"code file {path} holds {a.dtype} values; expected numbers")
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits < 1):
        raise DataError(f"bits must be a positive integer, got {bits!r}")
    packed_width = -(-bits // 8) if bits is not None else None
    if a.dtype == np.uint8 and bits is not None and a.shape[1] == packed_width and a.shape[1] != bits:
        return unpack_codes(a, int(bits))
    plus_minus = bool(np.all((a == 1) | (a == -1)))
    zero_one = not plus_minus and bool(np.all((a == 0) | (a == 1)))
    if not (plus_minus or zero_one):
        if a.dtype == np.uint8 and bits is None:
            raise DataError(f"code file {path} looks like packed bytes (uint8 values outside {{0, 1}}); "
                            "pass the number of bits (--bits)")
        bad = a[~((a == 1) | (a == -1) | (a == 0))].ravel()
        shown = repr(bad[0].item()) if bad.size else "a mix of 0 and -1"
        raise DataError(f"code file {path} has values outside {{-1, +1}} and {{0, 1}} (found {shown})")
    if bits is not None and a.shape[1] != bits:
        raise DataError(f"code file {path} has {a.shape[1]} bits per code, expected {bits}")
    codes = np.where(a > 0, 1, -1).astype(np.int8)
    return codes


def load_labels(path: str | Path) -> np.ndarray:
    """Read labels from ``path`` as a multi-hot int8 (n, n_classes) array.

    A 1-D array or a single column holds 0-based class indices; a 2-D array multi-hot rows.
    """
    path = Path(path)
    a = _read_array(path, ("labels", "L"), "label")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2 and a.shape[0] == 1 and a.shape[1] > 1 and path.suffix == ".mat":
        a = a[0]  # MATLAB stores a vector of class indices as a 1 x n row
    try:
        return to_multihot(a)
    except DataError as exc:
        raise DataError(f"label file {path}: {exc}") from None
