"""imagefolder loader on tiny class-folder trees (PNG and JPEG written with PIL), their
.tar.gz, a small subset of the real CIFAR-10 JPEG copy, and the full copy (slow)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashbench.datasets import load
from hashbench.datasets.images import ImageFiles
from hashbench.errors import DataError
from hashbench.protocol import get_protocol, materialise

CIFAR_JPG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg" / "cifar10-jpg.tar.gz"
CIFAR_JPG_SHA256 = "0033c3e1509d9e60bc0de7b9c4dc746ba473f2119dc201f962581f410ec925ec"
CLASSES = ("cat", "bird", "dog")  # not in sorted order on purpose


def write_tree(root: Path, splits=(("train", 6), ("test", 2)), size=(12, 10), seed=0) -> Path:
    """``<split>/<class>/<i>.png|jpg`` (every other file a JPEG), plus a stray non-image file."""
    rng = np.random.default_rng(seed)
    for split, per_class in splits:
        for c, cls in enumerate(CLASSES):
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 50, size[::-1] + (3,)).astype(np.uint8) + 60 * c
                Image.fromarray(pixels).save(folder / f"{i:03d}.{'png' if i % 2 == 0 else 'jpg'}")
            (folder / "notes.txt").write_text("not an image")
    return root


def make_tar(tree: Path, archive: Path, top: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(tree.iterdir()):
            tar.add(child, arcname=f"{top}/{child.name}" if top else child.name)
    return archive


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_split_layout(tmp_path):
    root = write_tree(tmp_path / "imgs")
    data = load("imagefolder", None, path=str(root))
    assert len(data) == 24 and data.labels.shape == (24, 3)
    assert data.class_names == ["bird", "cat", "dog"]
    assert {k: len(v) for k, v in data.partitions.items()} == {"train": 18, "test": 6}
    images = data.images
    assert isinstance(images, ImageFiles)  # lazy: nothing decoded at load
    assert images.paths[0].endswith("train/bird/000.png") and images.paths[1].endswith("train/bird/001.jpg")
    assert images.paths[18].endswith("test/bird/000.png")
    np.testing.assert_array_equal(data.labels.argmax(1)[:18], np.repeat([0, 1, 2], 6))
    img = images[5]
    assert img.size == (12, 10) and img.mode == "RGB"
    assert data.provenance["layout"] == "train+test"
    # the data root alone names the folder too
    assert len(load("imagefolder", root)) == 24


def test_one_folder_layout_and_relative_path(tmp_path):
    write_tree(tmp_path / "imgs", splits=(("", 4),))
    data = load("imagefolder", tmp_path, path="imgs")
    assert len(data) == 12 and data.partitions == {}
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.provenance["layout"] == "one folder"


def test_tar_gz_is_extracted_once_under_the_cache(tmp_path, cache):
    archive = make_tar(write_tree(tmp_path / "imgs"), tmp_path / "imgs.tar.gz", top="cifar-like")
    data = load("imagefolder", None, path=str(archive))
    assert len(data) == 24 and set(data.partitions) == {"train", "test"}
    assert data.provenance["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    extracted = Path(data.provenance["extracted_to"])
    assert cache in extracted.parents
    assert data.images.paths[0].startswith(str(extracted))
    marker = next(extracted.glob(".hashbench-extracted"))
    stamp = marker.stat().st_mtime_ns
    again = load("imagefolder", None, path=str(archive))
    assert marker.stat().st_mtime_ns == stamp  # not extracted again
    assert again.images.identity() == data.images.identity()
    assert again.images[3].size == (12, 10)


def test_bad_trees(tmp_path):
    root = write_tree(tmp_path / "imgs")
    (root / "train" / "empty-class").mkdir()
    with pytest.raises(DataError, match="class folder .*empty-class holds no image") as info:
        load("imagefolder", None, path=str(root))
    assert "\n" not in str(info.value)
    (root / "train" / "empty-class").rmdir()
    (root / "extras").mkdir()
    with pytest.raises(DataError, match="folder 'extras' next to the split folders"):
        load("imagefolder", None, path=str(root))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    with pytest.raises(DataError, match="outside class folders"):
        load("imagefolder", None, path=str(flat))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load("imagefolder", None, path=str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="not found"):
        load("imagefolder", None, path=str(tmp_path / "missing"))
    with pytest.raises(DataError, match="path="):
        load("imagefolder", None)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot extract image archive .*broken.tar.gz"):
        load("imagefolder", None, path=str(broken))


def test_unreadable_image_is_a_data_error_on_access(tmp_path):
    root = write_tree(tmp_path / "imgs")
    (root / "train" / "cat" / "000.png").write_bytes(b"not a png")
    data = load("imagefolder", None, path=str(root))  # loads: nothing decoded yet
    index = data.images.paths.index(str((root / "train" / "cat" / "000.png").resolve()))
    with pytest.raises(DataError, match="unreadable image .*000.png"):
        data.images[index]
    assert any("000.png" in p for p in data.images.find_problems())


def test_protocols_split_the_folder(tmp_path):
    data = load("imagefolder", None, path=str(write_tree(tmp_path / "imgs", splits=(("train", 8), ("test", 3)))))
    for name in ("imagefolder", "adsh2018-cifar10"):
        proto = get_protocol(name).with_overrides({"query.per_class": 2, "train.per_class": 4})
        split = materialise(proto, data.labels, data.partitions)
        assert len(split.query) == 6 and len(split.database) == 33 - 6 and len(split.train) == 12
        assert not set(split.query) & set(split.database)
    assert get_protocol("imagefolder").dataset == "imagefolder"


def _cifar_subset(target: Path, per_class: int = 3) -> Path:
    """The first ``per_class`` test images of each class of the real CIFAR-10 JPEG copy."""
    if not CIFAR_JPG.is_file():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPG} (../shared/data is absent)")
    wanted = {f"test/{c}/{i:04d}.jpg" for c in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                   "frog", "horse", "ship", "truck") for i in range(per_class)}
    with tarfile.open(CIFAR_JPG, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name in wanted]
        tar.extractall(target, members=members, filter="data")
    return target


def test_real_cifar10_jpeg_subset(tmp_path):
    data = load("imagefolder", None, path=str(_cifar_subset(tmp_path / "cifar")))
    assert len(data) == 30 and data.class_names[0] == "airplane" and data.class_names[-1] == "truck"
    assert set(data.partitions) == {"test"}
    assert data.images[0].size == (32, 32)


@pytest.mark.slow
def test_real_cifar10_jpeg_archive():
    if not CIFAR_JPG.is_file():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR_JPG} (../shared/data is absent)")
    data = load("imagefolder", None, path=str(CIFAR_JPG))
    assert data.provenance["archive_sha256"] == CIFAR_JPG_SHA256
    assert len(data) == 60_000 and data.n_classes == 10
    assert {k: len(v) for k, v in data.partitions.items()} == {"train": 50_000, "test": 10_000}
    np.testing.assert_array_equal(data.labels.sum(0), np.full(10, 6000))
    split = materialise(get_protocol("adsh2018-cifar10"), data.labels, data.partitions)
    assert (len(split.query), len(split.database), len(split.train)) == (1000, 59_000, 5000)
