"""Fashion-MNIST loader on tiny gzipped IDX files in the exact format, plus the real set
(Debian's dataset-fashion-mnist) when it is installed (slow)."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from hashbench.datasets import fashion_mnist as fm
from hashbench.datasets import load
from hashbench.errors import DataError
from hashbench.protocol import get_protocol, materialise


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """IDX: 0x00 0x00, type 0x08 (uint8), ndim, big-endian int32 dims, then the values."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    assert magic & 0xFF == array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.tobytes()


def write_gz(path, payload: bytes) -> None:
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(payload)


def write_fashion(root, train_per_class=3, test_per_class=1, seed=0):
    """The four files; images carry their class in the mean brightness."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 40, (len(labels), 28, 28)).astype(np.uint8) + labels[:, None, None] * 20
        write_gz(root / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images, 2051))
        write_gz(root / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels, 2049))
        out[prefix] = (images, labels)
    return out


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    """No fallback to an installed package: the Debian folder and dpkg record point nowhere."""
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "no-debian")
    monkeypatch.setattr(fm, "DPKG_MD5SUMS", tmp_path / "no-dpkg.md5sums")


def test_reads_the_four_idx_files(tmp_path, no_debian):
    written = write_fashion(tmp_path / "fm")
    data = load("fashion-mnist", tmp_path / "fm")
    assert len(data) == 40 and data.labels.shape == (40, 10)
    assert data.modality_names == ("image",)  # features come from an extractor
    images = data.modality("image")
    assert images.shape == (40, 1, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:30, 0], written["train"][0])
    np.testing.assert_array_equal(images[30:, 0], written["t10k"][0])
    np.testing.assert_array_equal(data.labels.argmax(1), np.concatenate([written["train"][1],
                                                                        written["t10k"][1]]))
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert len(data.partitions["train"]) == 30 and list(data.partitions["test"]) == list(range(30, 40))
    assert data.provenance["verified"] == "false"  # not the official files
    # a data root with a fashion-mnist/ subfolder works too
    (tmp_path / "fm").rename(tmp_path / "fashion-mnist")
    assert len(load("fashion-mnist", tmp_path)) == 40


def test_missing_files_name_the_path_apt_and_data_root(tmp_path, no_debian):
    with pytest.raises(DataError) as info:
        load("fashion-mnist", tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "no-debian") in message and "empty" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message
    write_fashion(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load("fashion-mnist", tmp_path / "fm")


def test_truncated_wrong_magic_and_not_gzip(tmp_path, no_debian):
    root = tmp_path / "fm"
    write_fashion(root)
    path = root / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    write_gz(path, payload[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated") as info:
        load("fashion-mnist", root)
    assert "\n" not in str(info.value)
    write_gz(path, (2049).to_bytes(4, "big") + payload[4:])  # a labels magic on the images file
    with pytest.raises(DataError, match="IDX magic 2049, expected 2051"):
        load("fashion-mnist", root)
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="corrupt Fashion-MNIST file .*train-images"):
        load("fashion-mnist", root)


def test_labels_out_of_range_and_count_mismatch(tmp_path, no_debian):
    root = tmp_path / "fm"
    write_fashion(root)
    write_gz(root / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 2, 12, 4, 5, 6, 7, 8, 9]), 2049))
    with pytest.raises(DataError, match="label 12 outside 0..9"):
        load("fashion-mnist", root)
    write_gz(root / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.arange(9), 2049))
    with pytest.raises(DataError, match="10 images .* 9"):
        load("fashion-mnist", root)


def test_check_files_counts_and_checksums(tmp_path, no_debian, monkeypatch):
    root = tmp_path / "fm"
    write_fashion(root)
    problems = fm.check_files(root)
    assert sum("checksum mismatch" in p for p in problems) == 4
    assert any("30 images, expected 60000" in p for p in problems)
    assert any("10 images, expected 10000" in p for p in problems)
    # dpkg's record is what the gzipped files are compared with when the package is installed
    record = tmp_path / "dpkg.md5sums"
    record.write_text("".join(
        f"{hashlib.md5((root / n).read_bytes()).hexdigest()}  usr/share/datasets/fashion-mnist/{n}\n"
        for n in fm.FILES))
    monkeypatch.setattr(fm, "DPKG_MD5SUMS", record)
    assert not any("checksum" in p for p in fm.check_files(root))
    # a re-compressed copy passes on the SHA-256 of its uncompressed bytes
    monkeypatch.setattr(fm, "DPKG_MD5SUMS", tmp_path / "none")
    monkeypatch.setattr(fm, "RAW_SHA256", {
        n: hashlib.sha256(gzip.decompress((root / n).read_bytes())).hexdigest() for n in fm.FILES})
    assert not any("checksum" in p for p in fm.check_files(root))
    assert load("fashion-mnist", root).provenance["verified"] == "true"


def test_protocol_split_shape(tmp_path, no_debian):
    # 600 per class is the least the protocol needs (100 queries + 500 training per class)
    write_fashion(tmp_path / "fm", train_per_class=540, test_per_class=70)
    data = load("fashion-mnist", tmp_path / "fm")
    protocol = get_protocol("fashion-mnist")
    assert protocol.dataset == "fashion-mnist" and protocol.default_bits == (12, 24, 32, 48)
    split = materialise(protocol, data.labels, data.partitions)
    assert len(split.query) == 1000 and len(split.train) == 5000
    assert len(split.database) == len(data) - 1000
    assert not set(split.query) & set(split.database) and set(split.train) <= set(split.database)
    np.testing.assert_array_equal(data.labels[split.query].sum(0), np.full(10, 100))
    np.testing.assert_array_equal(data.labels[split.train].sum(0), np.full(10, 500))


@pytest.mark.slow
def test_real_fashion_mnist_from_the_debian_package():
    if not all((fm.DEBIAN_ROOT / n).is_file() for n in fm.FILES):
        pytest.skip(f"Fashion-MNIST is not installed in {fm.DEBIAN_ROOT} "
                    f"(apt-get install dataset-fashion-mnist)")
    data = load("fashion-mnist")
    assert len(data) == 70_000 and data.n_classes == 10
    np.testing.assert_array_equal(data.labels.sum(0), np.full(10, 7000))
    assert data.provenance["verified"] == "true"
    assert fm.check_files(None) == []
    split = materialise(get_protocol("fashion-mnist"), data.labels, data.partitions)
    assert (len(split.query), len(split.database), len(split.train)) == (1000, 69_000, 5000)


def test_data_check_runs_the_loaders_file_check(tmp_path, no_debian, monkeypatch, capsys):
    from hashbench.cli import main

    write_fashion(tmp_path)
    assert main(["data", "check", "fashion-mnist", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "train-*: 30 images, expected 60000" in out  # the loader's count check, through data check
