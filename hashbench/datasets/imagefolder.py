"""Images in class folders: ``<split>/<class>/<image>`` or ``<class>/<image>``.

The common image-folder layout (torchvision's ``ImageFolder``), so that any set of labelled
images loads without a converter, e.g. the CIFAR-10 JPEG copy::

    train/airplane/0000.jpg ...   test/airplane/0000.jpg ...

- **Split layout**: the folder holds ``train/`` and/or ``test/`` (also ``val/``); each is a
  folder of class folders and becomes a partition of that name. Items are ordered train,
  val, test.
- **One folder**: the folder's subfolders are the classes; no partitions.

The class is the folder name; classes are the sorted union of the names over all splits
(one-hot labels). Within a class, files are in sorted name order. Files with an image
extension (``.jpg .jpeg .png .bmp .gif .ppm .pgm .tif .tiff .webp``, any case) are items;
other files (``.DS_Store``, notes) are skipped; hidden folders and ``__MACOSX`` are skipped.
A class folder with no image, or images outside class folders, is a :class:`DataError`.

Images are not decoded at load: the ``image`` modality is an
:class:`~hashbench.datasets.images.ImageFiles` list (RGB PIL images on access).

``path`` may also be a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of that layout (optionally
under one top folder): it is extracted once into ``$HASHBENCH_CACHE/imagefolder/<key>/``
(default cache ``~/.cache/hashbench``; key from the archive's absolute path, size and
modification time), under a file lock so that concurrent runs extract it once, and the
archive's SHA-256 is recorded as ``dataset.archive_sha256``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np

from hashbench.datasets.base import Dataset
from hashbench.datasets.images import ImageFiles
from hashbench.errors import DataError
from hashbench.features import cache_root

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                              ".webp"})
SPLITS = ("train", "val", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_DONE = ".hashbench-extracted"


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _skipped(entry: os.DirEntry) -> bool:
    return entry.name.startswith(".") or entry.name == "__MACOSX"


def _subfolders(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not _skipped(e))


def _images_in(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if e.is_file() and not _skipped(e) and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extract_archive(archive: Path) -> tuple[Path, str]:
    """The folder ``archive`` is extracted into (extracting it on first use) and its SHA-256."""
    from filelock import FileLock

    archive = archive.resolve()
    stat = archive.stat()
    key = hashlib.sha256(f"{archive}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    base = cache_root() / "imagefolder"
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    target = base / f"{stem}-{key}"
    done = target / _DONE
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f"{stem}-{key}.lock")):
        if done.is_file():
            return target, done.read_text().strip()
        digest = _sha256_file(archive)
        tmp = base / f"{stem}-{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"cannot extract image archive {archive}: {exc}") from None
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        done.write_text(digest + "\n")
    return target, digest


def _layout_root(folder: Path) -> Path:
    """``folder``, or its only subfolder when that one holds the split folders (an archive's
    top folder)."""
    subs = _subfolders(folder)
    names = {p.name for p in subs}
    if names & set(SPLITS):
        return folder
    if len(subs) == 1 and {p.name for p in _subfolders(subs[0])} & set(SPLITS) and not _images_in(folder):
        return subs[0]
    return folder


def _scan_classes(folder: Path) -> dict[str, list[str]]:
    """class name -> absolute image paths, for a folder of class folders."""
    stray = _images_in(folder)
    if stray:
        raise DataError(f"image folder {folder}: {len(stray)} images outside class folders (e.g. "
                        f"{folder / stray[0]}); expected <class>/<image>")
    classes = {}
    for sub in _subfolders(folder):
        names = _images_in(sub)
        if not names:
            raise DataError(f"image folder {folder}: class folder {sub} holds no image "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        classes[sub.name] = [str(sub / n) for n in names]
    if not classes:
        raise DataError(f"image folder {folder} holds no class folders; expected <class>/<image> or "
                        f"train/<class>/<image> and test/<class>/<image>")
    return classes


def load_imagefolder(root: Path | None = None, path: str | None = None) -> Dataset:
    """Labelled images from a class-folder tree or an archive of one.

    ``path``: the folder or archive (``.tar.gz``), absolute or relative to ``root`` (the
    data root); without it, ``root`` itself is the folder.
    """
    if path:
        location = Path(path).expanduser()
        if not location.is_absolute() and root is not None and (root / location).exists():
            location = root / location
    elif root is not None:
        location = root
    else:
        raise DataError("imagefolder: give the folder or .tar.gz with --data-option path=DIR "
                        "(or --data-root DIR)")
    if not location.exists():
        raise DataError(f"imagefolder: {location} not found (expected a folder of class folders or a "
                        f".tar.gz of one)")
    provenance = {"source": str(location.resolve())}
    if _is_archive(location):
        folder, digest = extract_archive(location)
        provenance["archive_sha256"] = digest
        provenance["extracted_to"] = str(folder)
    elif location.is_dir():
        folder = location
    else:
        raise DataError(f"imagefolder: {location} is neither a folder nor a "
                        f"{'/'.join(ARCHIVE_SUFFIXES)} archive")
    folder = _layout_root(folder.resolve())
    subs = {p.name for p in _subfolders(folder)}
    if subs & set(SPLITS):
        others = sorted(subs - set(SPLITS))
        if others:
            raise DataError(f"image folder {folder}: folder {others[0]!r} next to the split folders "
                            f"({', '.join(sorted(subs & set(SPLITS)))}); expected only train/, val/, test/")
        parts = [(name, _scan_classes(folder / name)) for name in SPLITS if name in subs]
    else:
        parts = [("", _scan_classes(folder))]
    class_names = sorted({c for _, classes in parts for c in classes})
    index = {c: i for i, c in enumerate(class_names)}
    paths: list[str] = []
    targets: list[int] = []
    partitions = {}
    for name, classes in parts:
        start = len(paths)
        for cls in sorted(classes):
            paths += classes[cls]
            targets += [index[cls]] * len(classes[cls])
        if name:
            partitions[name] = np.arange(start, len(paths))
    layout = "+".join(name for name, _ in parts) if partitions else "one folder"
    provenance["layout"] = layout
    return Dataset(
        name="imagefolder",
        labels=np.eye(len(class_names), dtype=np.uint8)[np.asarray(targets, dtype=np.int64)],
        images=ImageFiles(paths),
        class_names=class_names,
        description=f"image folder {folder} ({len(paths)} images, {len(class_names)} classes, {layout})",
        partitions=partitions,
        provenance=provenance,
    )
