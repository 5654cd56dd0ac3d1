"""NUS-WIDE and MS-COCO from the list files of the ADSH/DPSH/DeepHash codebases.

Two layouts are read:

* one file per list, a line per image: the image path, then one 0/1 column per label
  (``images/0001.jpg 0 1 0 ... 1``), as in the DeepHash/HashNet ``database.txt``;
* paths and labels in two aligned files (``database_img.txt`` + ``database_label.txt``),
  as in the DPSH/ADSH releases: pass ``images=`` and ``labels=``.

Paths may be absolute or relative to the image root (default: the dataset's folder under
the data root). Published lists carry their authors' absolute paths: ``prefix_from`` and
``prefix_to`` rewrite a leading prefix (``prefix_from=/home/author/nus/ prefix_to=``).

``nuswide``: the 21 most frequent concepts (195,834 images in the usual lists). Default
files: every one of ``database.txt`` and ``test.txt`` present in ``<root>/nuswide/``
(concatenated; a path listed twice is kept once, and the count is reported).
``coco``: 80 categories; the training-image list is the database pool (partition
``train``, default ``<root>/coco/train.txt``) and the validation-image list the query
pool (partition ``val``, default ``<root>/coco/val.txt``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.datasets.images import ImageFiles
from hashbench.errors import DataError

ONE_FILE = "a text file with one image per line: the image path followed by {n} 0/1 label columns"


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"list file not found: {path} (expected {ONE_FILE.format(n='L')})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read list file {path}: {exc}") from None
    return [line for line in text.splitlines() if line.strip()]


def _parse_labels(rows: list[list[str]], path: Path, n_labels: int, first_line: int = 1) -> np.ndarray:
    labels = np.zeros((len(rows), n_labels), dtype=np.uint8)
    for i, cols in enumerate(rows):
        if len(cols) != n_labels:
            raise DataError(
                f"{path}, line {i + first_line}: {len(cols)} label columns, expected {n_labels}"
            )
        try:
            values = [int(float(c)) for c in cols]
        except ValueError:
            raise DataError(f"{path}, line {i + first_line}: labels must be 0/1 numbers") from None
        if any(v not in (0, 1) for v in values):
            raise DataError(f"{path}, line {i + first_line}: labels must be 0 or 1, got {values}")
        labels[i] = values
    return labels


def read_list(path: Path, n_labels: int) -> tuple[list[str], np.ndarray]:
    """(paths, labels) from a one-file list: ``path l1 ... lL`` per line."""
    lines = _read_lines(path)
    paths, label_rows = [], []
    for line in lines:
        cols = line.split()
        paths.append(cols[0])
        label_rows.append(cols[1:])
    return paths, _parse_labels(label_rows, path, n_labels)


def read_pair(images: Path, labels: Path, n_labels: int) -> tuple[list[str], np.ndarray]:
    """(paths, labels) from a paths file and an aligned label file."""
    paths = [line.split()[0] for line in _read_lines(images)]
    label_rows = [line.split() for line in _read_lines(labels)]
    if len(paths) != len(label_rows):
        raise DataError(f"{images} lists {len(paths)} images but {labels} has {len(label_rows)} label rows")
    return paths, _parse_labels(label_rows, labels, n_labels)


def _resolve(name: str, folder: Path) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or path.exists() else folder / path


def _files(option: str | None, folder: Path, defaults: list[str]) -> list[Path]:
    if option:
        return [_resolve(p, folder) for p in option.split(",")]
    found = [folder / name for name in defaults if (folder / name).is_file()]
    if not found:
        raise DataError(
            f"no list file in {folder}: expected {' or '.join(defaults)} ({ONE_FILE.format(n='L')}), "
            "or pass --data-option lists=FILE"
        )
    return found


def _rewrite(paths: list[str], image_root: Path, prefix_from: str | None, prefix_to: str) -> list[str]:
    out = []
    for p in paths:
        if prefix_from and p.startswith(prefix_from):
            p = prefix_to + p[len(prefix_from):]
        q = Path(p)
        out.append(str(q if q.is_absolute() else image_root / q))
    return out


def load_lists(
    name: str, root: Path | None, n_labels: int, folder_name: str, defaults: list[str],
    lists: str | None = None, images: str | None = None, labels: str | None = None,
    image_root: str | None = None, prefix_from: str | None = None, prefix_to: str = "",
) -> tuple[list[list[str]], list[np.ndarray], Path, list[Path]]:
    """Read one or more lists; returns per-list paths and labels, the image root, the files."""
    folder = (root or Path("data")).resolve() / folder_name
    if not folder.is_dir() and not (lists or images):
        raise DataError(
            f"{name}: data folder {folder} not found; expected there {' or '.join(defaults)} "
            f"({ONE_FILE.format(n=n_labels)}); set --data-root or HASHBENCH_DATA"
        )
    img_root = Path(image_root).resolve() if image_root else folder
    all_paths, all_labels, files = [], [], []
    if images or labels:
        if not (images and labels):
            raise DataError(f"{name}: the two-file layout needs both images=FILE and labels=FILE")
        img_files, lab_files = _files(images, folder, []), _files(labels, folder, [])
        if len(img_files) != len(lab_files):
            raise DataError(f"{name}: {len(img_files)} image lists but {len(lab_files)} label files")
        for a, b in zip(img_files, lab_files, strict=True):
            p, lab = read_pair(a, b, n_labels)
            all_paths.append(_rewrite(p, img_root, prefix_from, prefix_to))
            all_labels.append(lab)
            files += [a, b]
    else:
        for f in _files(lists, folder, defaults):
            p, lab = read_list(f, n_labels)
            all_paths.append(_rewrite(p, img_root, prefix_from, prefix_to))
            all_labels.append(lab)
            files.append(f)
    return all_paths, all_labels, img_root, files


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def load_nuswide(root: Path | None = None, lists: str | None = None, images: str | None = None,
                 labels: str | None = None, image_root: str | None = None,
                 prefix_from: str | None = None, prefix_to: str = "") -> Dataset:
    paths_lists, label_lists, img_root, files = load_lists(
        "nuswide", root, 21, "nuswide", ["database.txt", "test.txt"], lists=lists, images=images,
        labels=labels, image_root=image_root, prefix_from=prefix_from, prefix_to=prefix_to)
    paths: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    duplicates = 0
    for p_list, labels in zip(paths_lists, label_lists, strict=True):
        for p, row in zip(p_list, labels, strict=True):
            if p in seen:
                duplicates += 1
                continue
            seen.add(p)
            paths.append(p)
            rows.append(row)
    label_matrix = np.array(rows, dtype=np.uint8).reshape(-1, 21)
    return Dataset(
        name="nuswide",
        labels=label_matrix,
        images=ImageFiles(paths),
        class_names=[f"concept{i}" for i in range(21)],
        description=f"NUS-WIDE, 21 concepts, {len(paths)} images from {', '.join(map(str, files))}",
        provenance={"lists": ",".join(map(str, files)), "lists_sha256": _digest(files),
                    "image_root": str(img_root), "duplicates_removed": str(duplicates)},
    )


def load_coco(root: Path | None = None, train_list: str | None = None, val_list: str | None = None,
              image_root: str | None = None, prefix_from: str | None = None,
              prefix_to: str = "") -> Dataset:
    folder = (root or Path("data")).resolve() / "coco"
    parts: dict[str, tuple[list[str], np.ndarray]] = {}
    used: list[Path] = []
    for part, given, default in (("train", train_list, "train.txt"), ("val", val_list, "val.txt")):
        paths_lists, label_lists, img_root, files = load_lists(
            "coco", root, 80, "coco", [default], lists=given or str(folder / default),
            image_root=image_root, prefix_from=prefix_from, prefix_to=prefix_to)
        parts[part] = (paths_lists[0], label_lists[0])
        used += files
    n_train = len(parts["train"][0])
    paths = parts["train"][0] + parts["val"][0]
    labels = np.concatenate([parts["train"][1], parts["val"][1]]).reshape(-1, 80)
    return Dataset(
        name="coco",
        labels=labels,
        images=ImageFiles(paths),
        class_names=[f"category{i}" for i in range(80)],
        description=f"MS-COCO, 80 categories: {n_train} training + {len(paths) - n_train} validation images",
        partitions={"train": np.arange(n_train), "val": np.arange(n_train, len(paths))},
        provenance={"lists": ",".join(map(str, used)), "lists_sha256": _digest(used),
                    "image_root": str(img_root)},
    )
