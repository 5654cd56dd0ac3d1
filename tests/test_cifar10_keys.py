"""CIFAR-10 batches with the wrong keys: the error names the missing key and the keys found."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hashbench.datasets import load
from hashbench.errors import DataError


def write_batches(root, key=lambda k: k):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(range(10))
        batch = {key("data"): rng.integers(0, 255, (10, 3072)).astype(np.uint8), key("labels"): labels}
        with open(base / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(base / "batches.meta", "wb") as handle:
        pickle.dump({key("label_names"): [f"c{i}" for i in range(10)]}, handle)
    return base


def test_python3_bytes_keys_name_the_missing_key(tmp_path):
    base = write_batches(tmp_path, key=str.encode)  # b"data", b"labels" as written by Python 3
    with pytest.raises(DataError) as info:
        load("cifar10", tmp_path, download="no")
    message = str(info.value)
    assert "\n" not in message
    assert str(base / "data_batch_1") in message
    assert "no key 'data'" in message and "b'data'" in message and "b'labels'" in message
    assert "bytes" in message


def test_missing_labels_key(tmp_path):
    base = write_batches(tmp_path)
    with open(base / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((10, 3072), np.uint8), "targets": list(range(10))}, handle)
    with pytest.raises(DataError, match=r"test_batch: no key 'labels' \(found keys: 'data', 'targets'\)"):
        load("cifar10", tmp_path, download="no")
