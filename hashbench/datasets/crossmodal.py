"""Cross-modal (image-text) datasets: MIRFLICKR-25K, NUS-WIDE TC-21/TC-10, IAPR TC-12, Wikipedia,
and a bundled two-view set (split digits).

Every loader returns a :class:`~hashbench.datasets.base.Dataset` with multi-hot labels and
some of the modalities ``image`` (raw pixels, read lazily), ``features`` (image-side vectors:
SIFT bag-of-words, VGG/CNN-F features) and ``text`` (tag bag-of-words, LDA, TF-IDF).
Layouts under the data root (``--data-root`` or ``HASHBENCH_DATA``):

* ``mirflickr/``: ``FLICKR-25K.mat`` (DCMH's MATLAB v7.3 file with pixel ``images``, ``YAll``,
  ``LAll``; or DADH's classic .mat where ``images`` holds 4,096-d features; or DLFH's
  pre-split ``XTest``/``XDatabase``... file), else the separate files
  ``mirflickr25k-iall.mat`` (HDF5 ``IAll`` pixels), ``mirflickr25k-yall.mat`` (``YAll``),
  ``mirflickr25k-lall.mat`` (``LAll``) and, when present, ``mirflickr25k-iall-vgg.mat``
  (``XAll``, VGG features). Published: 20,015 pairs, 24 labels, 1,386-d tags.
* ``nuswide-tc21/``: ``NUS-WIDE-TC21.mat`` (DADH: ``image`` features, ``text``, ``label``), else
  ``nus-wide-tc21-{iall,yall,lall}.mat`` (+ ``-xall-vgg.mat`` / ``-xall.mat`` features).
  Published: 195,834 pairs, 21 labels, 1,000-d text. ``nuswide-tc10/``: the same with ``tc10``
  (10 labels, 1,000-d text).
* ``iapr/``: ``iapr-tc12.mat`` (DLFH/UCCH, pre-split: ``XTest``/``XDatabase`` hand-crafted and
  ``VTest``/``VDatabase`` VGG image features, ``YTest``/``YDatabase`` text, ``testL``/
  ``databaseL`` labels); database rows first, then test rows, as partitions ``database`` and
  ``query``. Published: 20,000 pairs, 255 labels, 2,912-d text.
* ``wikipedia/``: ``raw_features.mat`` (``I_tr``/``I_te`` 128-d SIFT bag-of-words, ``T_tr``/``T_te``
  10-d LDA, ``T_tfidf_tr``/``T_tfidf_te`` 1,000-d TF-IDF) with ``trainset_txt_img_cat.list`` and
  ``testset_txt_img_cat.list`` (``text-id<TAB>image-id<TAB>category 1..10`` per pair, in row
  order); partitions ``train`` (2,173) and ``test`` (693).

Any variable is read from a MATLAB v7.3 (HDF5, needs h5py) or a classic .mat file (scipy), in
either orientation: v7.3 files store MATLAB arrays transposed, and distributed copies differ,
so each matrix is oriented at load time by the item count its variables share (the published
sizes and the storage convention break ties) and the orientation found is recorded in
``provenance["orientation"]``. Pixels are never read whole: ``image`` is a :class:`MatImages`
that reads one image at a time in (n, H, W, C) order. Datasets with pixels but no image
features get the cached AlexNet fc7 extractor of the single-modal track, like any image set.

Bad input (missing or wrong variables, a v7.3 file without h5py, item counts that disagree, a
matrix that cannot be oriented, labels other than 0/1, all-zero text rows) raises a
:class:`DataFileError`: one line that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.errors import DataError

ROOT_HINT = "pass --data-root DIR or set HASHBENCH_DATA"
EMPTY_TEXT = ("error", "keep", "drop")
BLOCK_VALUES = 1 << 24  # values per block when reading a large HDF5 matrix


class DataFileError(DataError):
    """A cross-modal data file that is missing or malformed (exit code 2, as for other bad input)."""

    exit_code = 2


# ---------------------------------------------------------------- .mat files (classic or v7.3)


def _is_hdf5(head: bytes) -> bool:
    return head.startswith(b"MATLAB 7.3") or any(
        head[o:o + 8] == b"\x89HDF\r\n\x1a\n" for o in (0, 512)
    )


def _h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise DataFileError(f"{path} is a MATLAB v7.3 (HDF5) file and h5py is not installed: "
                            "pip install h5py") from None
    return h5py


class MatFile:
    """Variable shapes and arrays of a classic (scipy) or v7.3 (h5py) .mat file.

    ``shapes`` are as the reader returns them; ``matlab_h5`` is True for a v7.3 file written
    by MATLAB, whose arrays h5py returns with their axes reversed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                head = handle.read(1024)
        except OSError as exc:
            raise DataFileError(f"cannot read {path}: {exc}") from None
        self.hdf5 = _is_hdf5(head)
        self.matlab_h5 = self.hdf5 and head.startswith(b"MATLAB")
        self._cache: dict[str, np.ndarray] = {}
        if self.hdf5:
            h5py = _h5py(path)
            try:
                with h5py.File(path, "r") as f:
                    self.shapes = {k: tuple(v.shape) for k, v in f.items()
                                   if isinstance(v, h5py.Dataset) and not k.startswith("#")}
                    self.dtypes = {k: f[k].dtype for k in self.shapes}
            except OSError as exc:
                raise DataFileError(f"cannot read {path} as HDF5 (MATLAB v7.3): {exc}") from None
        else:
            from scipy.io import whosmat

            try:
                self.shapes = {name: tuple(shape) for name, shape, _ in whosmat(str(path))}
            except Exception as exc:  # noqa: BLE001 - scipy raises many kinds on non-.mat files
                raise DataFileError(f"{path} is not a readable .mat file ({type(exc).__name__}: "
                                    f"{exc})") from None
            self.dtypes = {}

    @property
    def kind(self) -> str:
        if not self.hdf5:
            return "classic .mat"
        return "MATLAB v7.3" if self.matlab_h5 else "HDF5"

    def view(self, key: str) -> tuple[int, ...]:
        """The shape in the writer's convention (MATLAB's for a v7.3 file)."""
        shape = self.shapes[key]
        return shape[::-1] if self.matlab_h5 else shape

    def read(self, key: str) -> np.ndarray:
        """The whole array as the reader returns it (no transposition)."""
        if key not in self._cache:
            try:
                if self.hdf5:
                    h5py = _h5py(self.path)
                    with h5py.File(self.path, "r") as f:
                        value = f[key][()]
                else:
                    from scipy.io import loadmat

                    value = loadmat(str(self.path), variable_names=[key])[key]
            except DataFileError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise DataFileError(f"cannot read {key} from {self.path}: {type(exc).__name__}: "
                                    f"{exc}") from None
            self._cache[key] = np.asarray(value)
        return self._cache[key]

    def forget(self, key: str) -> None:
        self._cache.pop(key, None)


class MatImages:
    """Pixels of a .mat variable, read one image at a time, in (n, H, W, C) order.

    ``source`` is ``(path, key)`` of an HDF5 dataset (opened on first access, in each process)
    or an in-memory array; ``order`` gives the stored axes of n, H, W and C; ``rows`` selects
    items. Items are RGB PIL images like the other image collections; :meth:`pixels` returns
    uint8 arrays.
    """

    def __init__(self, source: tuple[Path, str] | np.ndarray, order: Sequence[int],
                 stored_shape: Sequence[int], rows: np.ndarray | None = None) -> None:
        self.source = source
        self.order = tuple(int(a) for a in order)
        self.stored_shape = tuple(int(s) for s in stored_shape)
        n = self.stored_shape[self.order[0]]
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        self._handle: Any = None
        self._pid = -1
        rest = [a for a in range(4) if a != self.order[0]]
        self._inner = tuple(rest.index(a) for a in self.order[1:])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows),) + tuple(self.stored_shape[a] for a in self.order[1:])  # type: ignore

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1
        return state

    def _array(self) -> Any:
        if isinstance(self.source, np.ndarray):
            return self.source
        if self._handle is None or self._pid != os.getpid():
            path, key = self.source
            h5py = _h5py(path)
            try:
                self._handle = h5py.File(path, "r")[key]
            except (OSError, KeyError) as exc:
                raise DataFileError(f"cannot read {key} from {path}: {exc}") from None
            self._pid = os.getpid()
        return self._handle

    def pixel(self, i: int) -> np.ndarray:
        """Item ``i`` as a uint8 (H, W, C) array."""
        index: list[Any] = [slice(None)] * 4
        index[self.order[0]] = int(self.rows[int(i)])
        try:
            block = np.asarray(self._array()[tuple(index)])
        except OSError as exc:
            raise DataFileError(f"cannot read image {i} from {self.where}: {exc}") from None
        return np.ascontiguousarray(block.transpose(self._inner))

    def pixels(self, indices: Sequence[int]) -> np.ndarray:
        """Items ``indices`` as a uint8 (k, H, W, C) array."""
        return np.stack([self.pixel(i) for i in indices]) if len(indices) else \
            np.zeros((0,) + self.shape[1:], dtype=np.uint8)

    def __getitem__(self, i: int):  # -> PIL.Image.Image
        from PIL import Image

        img = self.pixel(i)
        return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("RGB")

    def subset(self, rows: np.ndarray) -> MatImages:
        return MatImages(self.source, self.order, self.stored_shape, self.rows[np.asarray(rows)])

    @property
    def where(self) -> str:
        return "an in-memory array" if isinstance(self.source, np.ndarray) else \
            f"{self.source[1]} in {self.source[0]}"

    def identity(self) -> str:
        """Shape, file size and a spread of images: changes when the data does (cache keys)."""
        h = hashlib.sha256(repr((self.shape, self.stored_shape, self.order)).encode())
        if not isinstance(self.source, np.ndarray):
            h.update(str(Path(self.source[0]).stat().st_size).encode())
        h.update(self.rows.tobytes())
        for i in np.unique(np.linspace(0, len(self) - 1, num=min(16, len(self))).astype(int)):
            h.update(self.pixel(i).tobytes())
        return h.hexdigest()

    def find_problems(self, progress: Any = None, limit: int | None = None) -> list[str]:
        """Images that cannot be read or are blank (every pixel the same)."""
        n = len(self) if limit is None else min(limit, len(self))
        iterator = progress(range(n), total=n, desc="checking images") if progress else range(n)
        problems, blank = [], []
        for i in iterator:
            try:
                img = self.pixel(i)
            except DataError as exc:
                problems.append(str(exc))
                continue
            if img.size and img.min() == img.max():
                blank.append(i)
        if blank:
            problems.append(f"{len(blank)} images are blank (one value everywhere; first rows: "
                            f"{blank[:5]})")
        return problems


# ---------------------------------------------------------------- variables and orientation


@dataclass
class _Var:
    role: str        # image | features | text | labels
    mat: MatFile
    key: str

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mat.shapes[self.key]


def _shape(shape: Sequence[int]) -> str:
    return " x ".join(str(s) for s in shape)


def _item_count(variables: list[_Var], expected: dict[str, int | None], what: str) -> int:
    """The item count all ``variables`` share on one axis (published sizes, then the storage
    convention, break ties)."""
    candidates = [set(v.shape) for v in variables]
    common = set.intersection(*candidates)
    listing = ", ".join(f"{v.key} {_shape(v.shape)} ({v.mat.path.name})" for v in variables)
    if not common:
        # name the odd one out when all the others agree
        for odd in variables:
            others = [set(v.shape) for v in variables if v is not odd]
            shared = set.intersection(*others) if others else set()
            if len(shared) == 1:
                n = shared.pop()
                return _fail_count(odd, n, [v for v in variables if v is not odd])
        raise DataFileError(f"{what}: the variables disagree on the number of items: {listing}")
    if len(common) == 1:
        return common.pop()
    if expected.get("n") in common:
        return int(expected["n"])  # type: ignore[arg-type]
    fits = [c for c in sorted(common) if _fits_expected(variables, c, expected)]
    if len(fits) == 1:
        return fits[0]
    conventional = [c for c in sorted(common) if all(v.mat.view(v.key)[_n_axis_pref(v)] == c
                                                     for v in variables)]
    if len(conventional) == 1:
        return conventional[0]
    raise DataFileError(f"{what}: cannot resolve the orientation: {listing} all fit "
                        f"{' or '.join(map(str, sorted(common)))} items")


def _n_axis_pref(v: _Var) -> int:
    """The axis (in the writer's view) that holds items by convention."""
    return -1 if len(v.shape) == 4 and v.mat.matlab_h5 else 0


def _fits_expected(variables: list[_Var], n: int, expected: dict[str, int | None]) -> bool:
    checked = False
    for v in variables:
        want = expected.get(v.role)
        if want and len(v.shape) == 2:
            other = list(v.shape)
            other.remove(n)
            if other[0] != want:
                return False
            checked = True
    return checked


def _fail_count(odd: _Var, n: int, others: list[_Var]) -> int:
    names = "/".join(v.key for v in others)
    if odd.role == "labels":
        raise DataFileError(f"{odd.mat.path}: the label matrix {odd.key} is {_shape(odd.shape)} but "
                            f"{names} have {n} items: cannot orient it (expected {n} x L or L x {n})")
    raise DataFileError(f"{odd.mat.path}: {odd.key} is {_shape(odd.shape)}, which does not match the "
                        f"{n} items of {names}")


def _orient_matrix(v: _Var, n: int) -> tuple[bool, str]:
    """(transpose the array as read?, a description of the orientation found)."""
    a, b = v.shape
    transpose = v.mat.matlab_h5 if a == b == n else b == n  # square: the storage convention decides
    d = a if transpose else b
    where = f"MATLAB {_shape(v.mat.view(v.key))} ({v.mat.kind}, read as {_shape(v.shape)})" \
        if v.mat.matlab_h5 else f"{_shape(v.shape)} ({v.mat.kind})"
    return transpose, f"{v.key}: {where} -> {'transposed' if transpose else 'as read'}, {n} x {d}"


def _orient_images(v: _Var, n: int) -> tuple[list[int], str]:
    """Stored axes of (n, H, W, C) and a description."""
    view = list(v.mat.view(v.key))
    stored = list(v.shape)
    n_axes = [i for i, s in enumerate(view) if s == n]
    if not n_axes:
        raise DataFileError(f"{v.mat.path}: {v.key} is {_shape(stored)}: no axis holds the {n} items")
    n_view = n_axes[-1] if (v.mat.matlab_h5 and len(n_axes) > 1 and n_axes[-1] == 3) else n_axes[0]
    rest = [i for i in range(4) if i != n_view]
    if view[rest[2]] in (1, 3):
        h, w, c = rest
    elif view[rest[0]] in (1, 3):
        c, h, w = rest
    else:
        raise DataFileError(f"{v.mat.path}: {v.key} is {_shape(stored)}: no colour axis of size 3 "
                            "(expected n x H x W x 3 or a MATLAB H x W x 3 x n array)")
    to_stored = (lambda i: 3 - i) if v.mat.matlab_h5 else (lambda i: i)
    order = [to_stored(a) for a in (n_view, h, w, c)]
    where = f"MATLAB {_shape(view)}" if v.mat.matlab_h5 else f"{_shape(stored)} as stored"
    return order, (f"{v.key}: {where} -> (n, H, W, C) = "
                   f"({n}, {view[h]}, {view[w]}, {view[c]}), read lazily")


def _dense(v: _Var, transpose: bool) -> np.ndarray:
    value = v.mat.read(v.key)
    v.mat.forget(v.key)
    if not np.issubdtype(value.dtype, np.number) and value.dtype != bool:
        raise DataFileError(f"{v.mat.path}: {v.key} is not numeric ({value.dtype})")
    return value.T if transpose else value


def _labels(v: _Var, transpose: bool) -> np.ndarray:
    value = _dense(v, transpose)
    if not np.isin(value, (0, 1)).all():
        bad = np.unique(value[~np.isin(value, (0, 1))])[:5].tolist()
        raise DataFileError(f"{v.mat.path}: the label matrix {v.key} must hold 0/1, found {bad}")
    return np.ascontiguousarray(value, dtype=np.uint8)


def _float32(v: _Var, transpose: bool) -> np.ndarray:
    """The matrix as float32 (n, d); HDF5 variables are read in blocks of items, so that a
    large float64 matrix never sits in memory twice."""
    if not v.mat.hdf5:
        return np.ascontiguousarray(_dense(v, transpose), dtype=np.float32)
    h5py = _h5py(v.mat.path)
    try:
        with h5py.File(v.mat.path, "r") as f:
            ds = f[v.key]
            if not np.issubdtype(ds.dtype, np.number) and ds.dtype != bool:
                raise DataFileError(f"{v.mat.path}: {v.key} is not numeric ({ds.dtype})")
            a, b = ds.shape
            n, d = (b, a) if transpose else (a, b)
            out = np.empty((n, d), dtype=np.float32)
            step = max(1, BLOCK_VALUES // max(d, 1))
            for start in range(0, n, step):
                stop = min(n, start + step)
                out[start:stop] = ds[:, start:stop].T if transpose else ds[start:stop]
    except OSError as exc:
        raise DataFileError(f"cannot read {v.key} from {v.mat.path}: {exc}") from None
    return out


def _vectors(v: _Var, transpose: bool, what: str) -> np.ndarray:
    value = _float32(v, transpose)
    bad = np.flatnonzero(~np.isfinite(value).all(axis=1))
    if len(bad):
        raise DataFileError(f"{v.mat.path}: {len(bad)} {what} rows of {v.key} contain NaN or inf "
                            f"(first rows: {bad[:5].tolist()})")
    return value


def _feature_provider(v: _Var, transpose: bool) -> Any:
    def read() -> np.ndarray:
        return _vectors(v, transpose, "feature")
    return read


def _zero_rows(text: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~text.any(axis=1))


# ---------------------------------------------------------------- assembling a dataset


ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "image": ("IAll", "images", "image", "I"),
    "features": ("XAll", "VAll", "images", "image", "X", "V"),
    "text": ("YAll", "text", "tags", "Y", "T"),
    "labels": ("LAll", "label", "labels", "L"),
}


def _find(mats: list[MatFile], role: str) -> _Var | None:
    ndim = 4 if role == "image" else 2
    for key in ROLE_KEYS[role]:
        for mat in mats:
            if key in mat.shapes and len(mat.shapes[key]) == ndim:
                return _Var(role, mat, key)
    return None


def _published(expected: dict[str, int | None], n: int, n_labels: int, text_dim: int) -> str:
    pairs = [("pairs", expected.get("n"), n), ("labels", expected.get("labels"), n_labels),
             ("-d text", expected.get("text"), text_dim)]
    want = ", ".join(f"{w:,}{' ' if not k.startswith('-') else ''}{k}" for k, w, _ in pairs if w)
    if not want:
        return "no published size to compare"
    diff = [f"{got:,}{' ' if not k.startswith('-') else ''}{k}" for k, w, got in pairs if w and w != got]
    return f"matches the published {want}" if not diff else \
        f"differs from the published {want}: found {', '.join(diff)}"


@dataclass
class _Parts:
    labels: np.ndarray
    text: np.ndarray
    images: MatImages | None
    features: Any           # ndarray, provider, or None
    orientation: list[str]
    keys: dict[str, str]    # role -> "key (file)"
    text_where: str = ""    # "key in path", for messages


def _read_parts(what: str, mats: list[MatFile], expected: dict[str, int | None]) -> _Parts:
    """Find, orient and read the variables of a merged file or of the separate files."""
    found = {role: _find(mats, role) for role in ROLE_KEYS}
    files = ", ".join(str(m.path) for m in mats)
    for role in ("text", "labels"):
        if found.get(role) is None:
            names = "/".join(ROLE_KEYS[role][:3])
            present = ", ".join(k for m in mats for k in m.shapes) or "none"
            raise DataFileError(f"{files}: no {role} variable ({names}) found (variables: {present})")
    if found.get("image") is None and found.get("features") is None:
        present = ", ".join(k for m in mats for k in m.shapes) or "none"
        raise DataFileError(f"{files}: neither pixels (IAll/images, 4-D) nor image features "
                            f"(XAll/images, 2-D) found (variables: {present})")
    variables = [v for v in found.values() if v is not None]
    n = _item_count(variables, expected, what)
    return _assemble(variables, n)


def _assemble(variables: list[_Var], n: int) -> _Parts:
    by_role = {v.role: v for v in variables}
    orientation, keys = [], {}
    images = features = None
    for role in ("image", "features", "text", "labels"):
        v = by_role.get(role)
        if v is None:
            continue
        keys[role] = f"{v.key} ({v.mat.path.name})"
        if role == "image":
            order, desc = _orient_images(v, n)
            dtype = v.mat.dtypes.get(v.key) if v.mat.hdf5 else v.mat.read(v.key).dtype
            if dtype != np.uint8:
                raise DataFileError(f"{v.mat.path}: {v.key} must hold uint8 pixels, found {dtype}")
            source = (v.mat.path, v.key) if v.mat.hdf5 else v.mat.read(v.key)
            images = MatImages(source, order, v.shape)
            orientation.append(desc)
            continue
        transpose, desc = _orient_matrix(v, n)
        orientation.append(desc)
        if role == "labels":
            labels = _labels(v, transpose)
        elif role == "text":
            text = _vectors(v, transpose, "text")
        else:
            features = _feature_provider(v, transpose)
    text_var = by_role["text"]
    return _Parts(labels, text, images, features, orientation, keys,
                  f"{text_var.key} in {text_var.mat.path}")


def _empty_text(parts: _Parts, policy: str, where: str) -> np.ndarray:
    """Rows to keep under the empty-text ``policy`` (error, keep, drop)."""
    zero = _zero_rows(parts.text)
    keep = np.ones(len(parts.text), dtype=bool)
    if len(zero) and policy == "error":
        raise DataFileError(f"{where}: {len(zero)} text rows are all zero (first rows: "
                            f"{zero[:5].tolist()}); pass --data-option empty_text=keep or "
                            "empty_text=drop to load them anyway")
    if policy == "drop":
        keep[zero] = False
    return keep


def _check_option(name: str, value: str, allowed: Sequence[str], option: str) -> str:
    if value not in allowed:
        raise DataFileError(f"{name}: {option} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _folder(root: Path | None, name: str) -> Path:
    return (root or Path("data")).resolve() / name


def _given_files(files: str, folder: Path) -> list[Path]:
    out = []
    for item in (f.strip() for f in files.split(",") if f.strip()):
        p = Path(item).expanduser()
        out.append(p if p.is_absolute() or p.exists() else folder / p)
    for p in out:
        if not p.is_file():
            raise DataFileError(f"file not found: {p} (from --data-option files=...)")
    return out


def _digest(paths: Sequence[Path]) -> str:
    """A cheap fingerprint: names, sizes and the first MiB of each file."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{p.stat().st_size}".encode())
        with open(p, "rb") as handle:
            h.update(handle.read(1 << 20))
    return h.hexdigest()[:16]


def _finish(name: str, parts: _Parts, keep: np.ndarray, paths: list[Path], fmt: str,
            expected: dict[str, int | None], description: str,
            partitions: dict[str, np.ndarray] | None = None, class_names: Sequence[str] = (),
            extra: dict[str, str] | None = None) -> Dataset:
    rows = np.flatnonzero(keep)
    dropped = len(keep) - len(rows)
    labels, text = parts.labels[rows], parts.text[rows]
    images = parts.images.subset(rows) if parts.images is not None and dropped else parts.images
    if partitions and dropped:
        new_index = np.full(len(keep), -1)
        new_index[rows] = np.arange(len(rows))
        partitions = {k: new_index[v][new_index[v] >= 0] for k, v in partitions.items()}
    provenance = {
        "source": ",".join(str(p) for p in paths), "sha256": _digest(paths), "format": fmt,
        "orientation": "; ".join(parts.orientation),
        "variables": ", ".join(f"{r}={k}" for r, k in parts.keys.items()),
        "published_sizes": _published(expected, len(labels), labels.shape[1], text.shape[1]),
        "empty_text_rows": str(len(_zero_rows(parts.text))),
        "empty_text_dropped": str(dropped),
        **(extra or {}),
    }
    ds = Dataset(name=name, labels=labels, modalities={"text": text}, images=images,
                 class_names=list(class_names) or [f"label{i}" for i in range(labels.shape[1])],
                 description=description.replace("{n}", str(len(labels)))
                 .replace("{L}", str(labels.shape[1])).replace("{d}", str(text.shape[1])),
                 partitions=partitions, provenance=provenance)
    if parts.features is not None:
        read = parts.features
        ds.provide("features", (lambda: read()[rows]) if dropped else read,
                   tags={"dataset.features": parts.keys["features"]})
    return ds


# ---------------------------------------------------------------- MIRFLICKR-25K and NUS-WIDE


_EXPECTED: dict[str, dict[str, int | None]] = {
    "mirflickr": {"n": 20015, "labels": 24, "text": 1386},
    "nuswide-tc21": {"n": 195834, "labels": 21, "text": 1000},
    "nuswide-tc10": {"n": None, "labels": 10, "text": 1000},
    "iapr": {"n": 20000, "labels": 255, "text": 2912},
    "wikipedia": {"n": 2866, "labels": 10, "text": None},
}

PRESPLIT = {"features": (("VDatabase", "VTest"), ("XDatabase", "XTest")),
            "text": (("YDatabase", "YTest"),), "labels": (("databaseL", "testL"),)}


def _load_pairs(name: str, root: Path | None, folder_name: str, merged: Sequence[str],
                separate: Sequence[str], optional: Sequence[str], title: str,
                files: str | None, variant: str, empty_text: str) -> Dataset:
    _check_option(name, variant, ("auto", "merged", "separate"), "variant")
    _check_option(name, empty_text, EMPTY_TEXT, "empty_text")
    folder = _folder(root, folder_name)
    if files:
        paths = _given_files(files, folder)
    else:
        merged_found = [folder / f for f in merged if (folder / f).is_file()]
        separate_found = [folder / f for f in (*separate, *optional) if (folder / f).is_file()]
        if variant in ("auto", "merged") and merged_found:
            paths = merged_found[:1]
        elif variant in ("auto", "separate") and all((folder / f).is_file() for f in separate[1:]) \
                and separate_found:
            paths = separate_found
        else:
            alt = f" (or {' / '.join(merged[1:])})" if len(merged) > 1 else ""
            want = {"merged": f"the merged file {merged[0]}{alt}",
                    "separate": f"the separate files {' + '.join(separate)} [+ {' / '.join(optional)}]"}
            layouts = [want[k] for k in ("merged", "separate") if variant in ("auto", k)]
            raise DataFileError(f"{name}: no data in {folder}: expected {', or '.join(layouts)}; "
                                f"{ROOT_HINT}, or pass --data-option files=A.mat,B.mat")
    mats = [MatFile(p) for p in paths]
    if any(all(k in m.shapes for k in ("YDatabase", "YTest")) for m in mats):
        return _presplit(name, mats, title, _EXPECTED[name], empty_text, "auto")
    expected = _EXPECTED[name]
    parts = _read_parts(f"{name} ({', '.join(str(p) for p in paths)})", mats, expected)
    keep = _empty_text(parts, empty_text, parts.text_where)
    if len(paths) == 1:
        fmt = ("DCMH merged v7.3, pixels" if parts.images is not None and mats[0].hdf5
               else "DADH merged, image features" if parts.images is None
               else f"merged {mats[0].kind}, pixels")
    else:
        fmt = "separate files (" + ", ".join(f"{m.path.name}: {m.kind}" for m in mats) + ")"
    image_side = "pixels" + (" + image features" if parts.features is not None else "") \
        if parts.images is not None else "image features"
    return _finish(name, parts, keep, paths, fmt, expected,
                   f"{title}: {{n}} image-text pairs, {{L}} labels, {{d}}-d text, {image_side} "
                   f"({fmt})")


def load_mirflickr(root: Path | None = None, files: str | None = None, variant: str = "auto",
                   empty_text: str = "error") -> Dataset:
    """MIRFLICKR-25K (cleaned: 20,015 pairs, 24 labels, 1,386-d tags) from ``<root>/mirflickr/``.

    Options: ``variant`` = ``auto`` (``FLICKR-25K.mat`` when present, else the separate files),
    ``merged`` or ``separate``; ``files=A.mat,B.mat`` reads the given files instead (variables
    are found by name: ``IAll``/``images`` pixels, ``XAll``/``images`` features, ``YAll``,
    ``LAll``); ``empty_text`` = ``error`` (default), ``keep`` or ``drop`` for all-zero tag rows.
    """
    return _load_pairs("mirflickr", root, "mirflickr", ["FLICKR-25K.mat", "flickr-25k.mat"],
                       ["mirflickr25k-iall.mat", "mirflickr25k-yall.mat", "mirflickr25k-lall.mat"],
                       ["mirflickr25k-iall-vgg.mat"], "MIRFLICKR-25K", files, variant, empty_text)


def load_nuswide_tc21(root: Path | None = None, files: str | None = None, variant: str = "auto",
                      empty_text: str = "error") -> Dataset:
    """NUS-WIDE TC-21 (195,834 pairs, 21 concepts, 1,000-d tags) from ``<root>/nuswide-tc21/``:
    DADH's ``NUS-WIDE-TC21.mat`` or ``nus-wide-tc21-{iall,yall,lall}.mat`` (+ ``-xall-vgg.mat`` /
    ``-xall.mat`` image features). Options as for ``mirflickr``."""
    return _load_pairs("nuswide-tc21", root, "nuswide-tc21", ["NUS-WIDE-TC21.mat"],
                       ["nus-wide-tc21-iall.mat", "nus-wide-tc21-yall.mat", "nus-wide-tc21-lall.mat"],
                       ["nus-wide-tc21-xall-vgg.mat", "nus-wide-tc21-xall.mat"],
                       "NUS-WIDE TC-21", files, variant, empty_text)


def load_nuswide_tc10(root: Path | None = None, files: str | None = None, variant: str = "auto",
                      empty_text: str = "error") -> Dataset:
    """NUS-WIDE TC-10 (10 concepts, 1,000-d tags; about 186,577 pairs) from ``<root>/nuswide-tc10/``:
    ``nus-wide-tc10-{iall,yall,lall}.mat`` (``YAll`` as v7.3 or classic) + ``-xall-vgg.mat``
    features when present. Options as for ``mirflickr``."""
    return _load_pairs("nuswide-tc10", root, "nuswide-tc10", ["NUS-WIDE-TC10.mat"],
                       ["nus-wide-tc10-iall.mat", "nus-wide-tc10-yall.mat", "nus-wide-tc10-lall.mat"],
                       ["nus-wide-tc10-xall-vgg.mat"], "NUS-WIDE TC-10", files, variant, empty_text)


# ---------------------------------------------------------------- pre-split files (IAPR TC-12)


def _presplit(name: str, mats: list[MatFile], title: str, expected: dict[str, int | None],
              empty_text: str, features: str) -> Dataset:
    mat = next(m for m in mats if all(k in m.shapes for k in ("YDatabase", "YTest")))
    feature_choice = features
    pairs = {"vgg": PRESPLIT["features"][0], "handcrafted": PRESPLIT["features"][1]}
    if feature_choice == "auto":
        feature_keys = next((p for p in PRESPLIT["features"] if all(k in mat.shapes for k in p)), None)
    else:
        feature_keys = pairs[feature_choice]
        if not all(k in mat.shapes for k in feature_keys):
            raise DataFileError(f"{mat.path}: features={feature_choice} needs {' and '.join(feature_keys)} "
                                f"(variables: {', '.join(mat.shapes)})")
    needed = {"text": PRESPLIT["text"][0], "labels": PRESPLIT["labels"][0]}
    if feature_keys is None:
        raise DataFileError(f"{mat.path}: no image features (VDatabase/VTest or XDatabase/XTest) "
                            f"(variables: {', '.join(mat.shapes)})")
    needed["features"] = feature_keys
    missing = [k for keys in needed.values() for k in keys if k not in mat.shapes]
    if missing:
        raise DataFileError(f"{mat.path}: missing variable(s) {', '.join(missing)} of the pre-split "
                            f"layout (variables: {', '.join(mat.shapes)})")
    blocks = []
    for j, part in enumerate(("database", "query")):
        variables = []
        for role, keys in needed.items():
            if len(mat.shapes[keys[j]]) != 2:
                raise DataFileError(f"{mat.path}: {keys[j]} is {_shape(mat.shapes[keys[j]])}, "
                                    "expected a matrix")
            variables.append(_Var(role, mat, keys[j]))
        n = _item_count(variables, {k: v for k, v in expected.items() if k != "n"}, f"{mat.path} ({part})")
        blocks.append(_assemble(variables, n))
    db, q = blocks
    for role, a, b in (("labels", db.labels, q.labels), ("text", db.text, q.text)):
        if a.shape[1] != b.shape[1]:
            raise DataFileError(f"{mat.path}: database and test {role} differ in width "
                                f"({a.shape[1]} vs {b.shape[1]})")
    read_db, read_q = db.features, q.features

    def features_all() -> np.ndarray:
        a, b = read_db(), read_q()
        if a.shape[1] != b.shape[1]:
            raise DataFileError(f"{mat.path}: {feature_keys[0]} and {feature_keys[1]} differ in width "
                                f"({a.shape[1]} vs {b.shape[1]})")
        return np.concatenate([a, b])

    n_db = len(db.labels)
    parts = _Parts(np.concatenate([db.labels, q.labels]), np.concatenate([db.text, q.text]), None,
                   features_all, db.orientation + q.orientation,
                   {"features": f"{feature_keys[0]}+{feature_keys[1]} ({mat.path.name})",
                    "text": f"YDatabase+YTest ({mat.path.name})",
                    "labels": f"databaseL+testL ({mat.path.name})"},
                   f"YDatabase/YTest in {mat.path}")
    keep = _empty_text(parts, empty_text, parts.text_where)
    total = len(parts.labels)
    partitions = {"database": np.arange(n_db), "query": np.arange(n_db, total)}
    kind = "VGG" if feature_keys[0].startswith("V") else "hand-crafted"
    return _finish(name, parts, keep, [mat.path], f"pre-split {mat.kind} (DLFH/UCCH)", expected,
                   f"{title}: {{n}} image-text pairs ({n_db} database + {total - n_db} query, as "
                   f"given), {{L}} labels, {{d}}-d text, {kind} image features",
                   partitions=partitions, extra={"features": kind})


def load_iapr(root: Path | None = None, file: str | None = None, features: str = "auto",
              empty_text: str = "error") -> Dataset:
    """IAPR TC-12 (20,000 pairs, 255 labels, 2,912-d text) from DLFH/UCCH's pre-split
    ``<root>/iapr/iapr-tc12.mat`` (or ``iapr-tc12-rand.mat``); partitions ``database`` and
    ``query`` as given in the file. Options: ``file=PATH``; ``features`` = ``auto`` (VGG
    ``VDatabase``/``VTest`` when present, else ``XDatabase``/``XTest``), ``vgg`` or
    ``handcrafted``; ``empty_text`` = ``error`` (default), ``keep`` or ``drop``."""
    _check_option("iapr", features, ("auto", "vgg", "handcrafted"), "features")
    _check_option("iapr", empty_text, EMPTY_TEXT, "empty_text")
    folder = _folder(root, "iapr")
    if file:
        paths = _given_files(file, folder)[:1]
    else:
        paths = [folder / f for f in ("iapr-tc12.mat", "iapr-tc12-rand.mat") if (folder / f).is_file()][:1]
        if not paths:
            raise DataFileError(f"iapr: no data in {folder}: expected iapr-tc12.mat (pre-split: XTest/"
                                f"XDatabase, VTest/VDatabase, YTest/YDatabase, testL/databaseL); "
                                f"{ROOT_HINT}, or pass --data-option file=PATH")
    mat = MatFile(paths[0])
    if not all(k in mat.shapes for k in ("YDatabase", "YTest")):
        raise DataFileError(f"{mat.path}: not the pre-split IAPR TC-12 layout: no YDatabase/YTest "
                            f"(variables: {', '.join(mat.shapes) or 'none'})")
    return _presplit("iapr", [mat], "IAPR TC-12", _EXPECTED["iapr"], empty_text, features)


# ---------------------------------------------------------------- Wikipedia


WIKI_CLASSES = ["art", "biology", "geography", "history", "literature", "media", "music",
                "royalty", "sport", "warfare"]
WIKI_LISTS = ("trainset_txt_img_cat.list", "testset_txt_img_cat.list")
WIKI_TEXT = {"lda": ("T_tr", "T_te"), "tfidf": ("T_tfidf_tr", "T_tfidf_te")}


def _read_wiki_list(path: Path) -> np.ndarray:
    """Categories (1..10) of a ``text-id<TAB>image-id<TAB>category`` list, in line order."""
    if not path.is_file():
        raise DataFileError(f"wikipedia: list file not found: {path} (expected one pair per line: "
                            f"text-id<TAB>image-id<TAB>category 1..10); {ROOT_HINT}")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"cannot read {path}: {exc}") from None
    cats = []
    for i, line in enumerate(lines, 1):
        cols = line.split()
        if len(cols) != 3:
            raise DataFileError(f"{path}, line {i}: {len(cols)} fields, expected text-id, image-id, category")
        try:
            cat = int(cols[2])
        except ValueError:
            cat = 0
        if not 1 <= cat <= len(WIKI_CLASSES):
            raise DataFileError(f"{path}, line {i}: category {cols[2]!r} is not an integer 1..10")
        cats.append(cat - 1)
    return np.asarray(cats, dtype=np.int64)


def load_wikipedia(root: Path | None = None, text: str = "lda", empty_text: str = "error") -> Dataset:
    """Wikipedia image-text (Rasiwasia et al. 2010: 2,173 train + 693 test pairs, 10 classes)
    from ``<root>/wikipedia/``: ``raw_features.mat`` and the two ``.list`` files. ``features``:
    128-d SIFT bag-of-visual-words; ``text``: ``lda`` (10-d topics, default) or ``tfidf``
    (1,000-d). Partitions ``train`` and ``test`` as given."""
    _check_option("wikipedia", text, tuple(WIKI_TEXT), "text")
    _check_option("wikipedia", empty_text, EMPTY_TEXT, "empty_text")
    folder = _folder(root, "wikipedia")
    mat_path = folder / "raw_features.mat"
    if not mat_path.is_file():
        raise DataFileError(f"wikipedia: {mat_path} not found (expected raw_features.mat with I_tr/I_te, "
                            f"T_tr/T_te, T_tfidf_tr/T_tfidf_te and the lists {' and '.join(WIKI_LISTS)}); "
                            f"{ROOT_HINT}")
    cats = [_read_wiki_list(folder / name) for name in WIKI_LISTS]
    mat = MatFile(mat_path)
    keys = {"features": ("I_tr", "I_te"), "text": WIKI_TEXT[text]}
    missing = [k for pair in keys.values() for k in pair if k not in mat.shapes]
    if missing:
        raise DataFileError(f"{mat_path}: missing variable(s) {', '.join(missing)} "
                            f"(variables: {', '.join(mat.shapes) or 'none'})")
    blocks, orientation = [], []
    for j, (part, labels) in enumerate(zip(("train", "test"), cats, strict=True)):
        got = {}
        for role, pair in keys.items():
            v = _Var(role, mat, pair[j])
            if len(v.shape) != 2 or len(labels) not in v.shape:
                raise DataFileError(f"{mat_path}: {v.key} is {_shape(v.shape)} but {WIKI_LISTS[j]} lists "
                                    f"{len(labels)} {part} pairs")
            transpose, desc = _orient_matrix(v, len(labels))
            orientation.append(desc)
            got[role] = _vectors(v, transpose, role)
        blocks.append(got)
    for role in keys:
        if blocks[0][role].shape[1] != blocks[1][role].shape[1]:
            raise DataFileError(f"{mat_path}: {keys[role][0]} and {keys[role][1]} differ in width")
    labels = np.eye(len(WIKI_CLASSES), dtype=np.uint8)[np.concatenate(cats)]
    n_train = len(cats[0])
    image = np.concatenate([b["features"] for b in blocks])
    parts = _Parts(labels, np.concatenate([b["text"] for b in blocks]), None, lambda: image,
                   orientation, {"features": "I_tr+I_te", "text": "+".join(keys["text"]),
                                 "labels": "+".join(WIKI_LISTS)}, f"{'/'.join(keys['text'])} in {mat_path}")
    keep = _empty_text(parts, empty_text, parts.text_where)
    partitions = {"train": np.arange(n_train), "test": np.arange(n_train, len(labels))}
    text_desc = "10-d LDA topics" if text == "lda" else f"{parts.text.shape[1]}-d TF-IDF"
    return _finish("wikipedia", parts, keep, [mat_path] + [folder / f for f in WIKI_LISTS],
                   f"{mat.kind} + lists", _EXPECTED["wikipedia"],
                   f"Wikipedia image-text (Rasiwasia et al. 2010): {{n}} pairs ({n_train} train + "
                   f"{len(labels) - n_train} test), {{L}} classes, 128-d SIFT bag-of-words images, "
                   f"{text_desc} text", partitions=partitions, class_names=WIKI_CLASSES,
                   extra={"text": text})


# ---------------------------------------------------------------- split digits (two views)


def load_digits_2view(root: Path | None = None) -> Dataset:
    """scikit-learn's digits as a two-view set (no download): ``features`` = the left half of
    each 8x8 image (columns 0-3), ``text`` = the right half (columns 4-7), 32 values each
    scaled to [0, 1]. The "text" view is image pixels, NOT text: the "split digits" two-view
    benchmark of the deep CCA literature, a stand-in that exercises cross-modal code paths."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    pixels = (bunch.data / 16.0).astype(np.float32).reshape(-1, 8, 8)
    left = np.ascontiguousarray(pixels[:, :, :4]).reshape(len(pixels), 32)
    right = np.ascontiguousarray(pixels[:, :, 4:]).reshape(len(pixels), 32)
    return Dataset(
        name="digits-2view",
        labels=np.eye(10, dtype=np.uint8)[bunch.target],
        features=left,
        modalities={"text": right},
        class_names=[str(d) for d in range(10)],
        description="split digits (two views, NOT image-text): scikit-learn's 1,797 8x8 digits; "
                    "features = left half (columns 0-3), 'text' = right half (columns 4-7) of the "
                    "same image, 32 values each in [0, 1]; bundled",
        provenance={"source": "sklearn.datasets.load_digits",
                    "views": "features=left image half (columns 0-3); text=right image half "
                             "(columns 4-7), not text"},
    )
