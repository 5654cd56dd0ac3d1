"""Offline feature extractors (HOG, PCA of pixels), their cache, the delegation to
AlexNet fc7, and the fail-fast when the ImageNet weights cannot be had."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hashbench import extractors, features
from hashbench.datasets import Dataset, load
from hashbench.errors import DataError, UsageError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def grey_dataset(n=60, seed=0, name="tiny-grey"):
    """Fashion-MNIST's shape: uint8 (n, 1, 28, 28); the class sets the brightness of a band."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % 3
    images = rng.integers(0, 40, (n, 1, 28, 28)).astype(np.uint8)
    for c in range(3):
        images[classes == c, 0, 8 * c:8 * c + 8, :] += 150
    return Dataset(name=name, labels=np.eye(3, dtype=np.uint8)[classes], images=images)


def colour_folder(root, n_per_class=4, size=(32, 32)):
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 255, size[::-1] + (3,)).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def test_hog_on_grey_arrays_shape_determinism_and_cache(cache):
    data = grey_dataset()
    logs = []
    feats = extractors.extract(data, "hog", log=logs.append)
    # 28x28, 4x4-pixel cells -> 7x7 cells -> 6x6 blocks of 2x2 cells x 9 orientations
    assert feats.shape == (60, 6 * 6 * 2 * 2 * 9) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    assert any("cached hog features" in m for m in logs)
    (path,) = (cache / "features").glob("tiny-grey-hog-*.npy")
    stamp = path.stat().st_mtime_ns
    again = extractors.extract(data, "hog", log=logs.append)
    assert any("using cached hog features" in m for m in logs)
    assert path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again, feats)
    path.unlink()  # recomputed: the same numbers
    np.testing.assert_array_equal(extractors.extract(data, "hog"), feats)
    # the same images in (n, H, W, C) layout give the same descriptors
    hwc = Dataset(name="tiny-grey-hwc", labels=data.labels, images=data.images.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(extractors.extract(hwc, "hog"), feats)


def test_pixels_pca_is_decorrelated_by_decreasing_variance_and_deterministic():
    data = grey_dataset()
    feats = extractors.extract(data, "pixels-pca")
    # min(256, 784, m - 1) components with m = 60 fitting items
    assert feats.shape == (60, 59) and feats.dtype == np.float32
    cov = np.cov(feats.T.astype(np.float64))
    assert np.all(np.diff(np.diag(cov)) <= 1e-6)  # not whitened: variances keep their order
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-4 * cov[0, 0]
    np.testing.assert_array_equal(extractors.pixels_pca_features(data.images), feats)
    # the features carry the class: nearest neighbours mostly share it
    labels = data.labels.argmax(1)
    dist = ((feats[:, None, :8] - feats[None, :, :8]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).mean() > 0.8


@pytest.mark.parametrize("side", [6, 28])  # d = 36 <= m = 60 (scatter route), d = 784 > m (SVD route)
def test_pixels_pca_matches_a_direct_computation(side):
    rng = np.random.default_rng(side)
    images = rng.integers(0, 255, (60, side, side)).astype(np.uint8)
    data = Dataset(name=f"direct{side}", labels=np.eye(2, dtype=np.uint8)[np.arange(60) % 2], images=images)
    x = images.reshape(60, -1) / 255.0
    centred = x - x.mean(0)
    k = min(256, side * side, 59)
    vecs = np.linalg.svd(centred, full_matrices=False)[2][:k].T
    vecs = vecs * np.sign(vecs[np.abs(vecs).argmax(0), np.arange(k)])
    np.testing.assert_allclose(extractors.extract(data, "pixels-pca"), centred @ vecs, rtol=1e-4, atol=1e-4)


def test_colour_image_files_and_resizing(tmp_path):
    data = load("imagefolder", None, path=str(colour_folder(tmp_path / "imgs")))
    hog = extractors.extract(data, "hog")
    assert hog.shape == (8, 7 * 7 * 2 * 2 * 9)  # 32x32 -> 8x8 cells -> 7x7 blocks
    pca = extractors.extract(data, "pixels-pca")
    assert pca.shape == (8, 7)
    # images of other sizes are resized to the first image's; big ones to 64x64
    big = load("imagefolder", None, path=str(colour_folder(tmp_path / "big", 2, size=(100, 80))))
    assert extractors.working_size(big.images) == (64, 64, 3)
    assert extractors.extract(big, "hog").shape == (4, 15 * 15 * 2 * 2 * 9)
    Image.new("RGB", (20, 20)).save(tmp_path / "imgs" / "a" / "9.png")
    mixed = load("imagefolder", None, path=str(tmp_path / "imgs"))
    assert extractors.extract(mixed, "hog").shape == (9, hog.shape[1])


def test_cache_key_follows_the_images_and_the_extractor(cache):
    a, b = grey_dataset(seed=0), grey_dataset(seed=1)
    assert extractors.cache_path(a, "hog") != extractors.cache_path(b, "hog")
    assert extractors.cache_path(a, "hog") != extractors.cache_path(a, "pixels-pca")
    assert extractors.cache_path(a, "hog") == extractors.cache_path(grey_dataset(seed=0), "hog")


def test_names_description_and_bad_input():
    assert extractors.EXTRACTORS == ("alexnet-fc7", "hog", "pixels-pca")
    hog = extractors.describe("hog")
    assert "9 orientations" in hog and "4x4" in hog and "L2-Hys" in hog
    pca = extractors.describe("pixels-pca")
    assert "min(256, d)" in pca and "not whitened" in pca and "seed 0" in pca
    assert extractors.describe("alexnet-fc7", pretrained=False).startswith("alexnet-fc7 (random-init")
    with pytest.raises(UsageError, match="did you mean 'hog'"):
        extractors.extract(grey_dataset(), "hogg")
    with pytest.raises(UsageError, match="takes no options"):
        extractors.extract(grey_dataset(), "hog", pretrained=False)
    no_images = Dataset(name="vectors", labels=np.eye(2, dtype=np.uint8), features=np.zeros((2, 3)))
    with pytest.raises(DataError, match="no images"):
        extractors.extract(no_images, "hog")
    odd = Dataset(name="odd", labels=np.eye(2, dtype=np.uint8), images=np.zeros((2, 5, 6, 7), np.uint8))
    with pytest.raises(DataError, match="cannot read images"):
        extractors.extract(odd, "hog")


def test_progress_is_called_per_chunk():
    seen = []

    def progress(iterable, total=None, desc=""):
        seen.append((desc, total))
        return iter(iterable)

    extractors.extract(grey_dataset(), "pixels-pca", progress=progress)
    assert ("pixels-pca fit", 1) in seen and ("pixels-pca features", 1) in seen


def test_alexnet_fc7_delegates_for_pixel_arrays(cache):
    data = grey_dataset(n=3)
    feats = extractors.extract(data, "alexnet-fc7", pretrained=False, image_size=64)
    assert feats.shape == (3, 4096) and feats.dtype == np.float32
    assert list((cache / "features").glob("tiny-grey-alexnet-fc7-*.npy"))


def test_missing_weights_fail_once_and_name_the_offline_extractors(tmp_path, monkeypatch):
    import torch

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(features, "_WEIGHT_FAILURES", {})
    for _ in range(3):
        with pytest.raises(DataError, match="--features hog or --features pixels-pca") as info:
            features.alexnet_fc7(pretrained=True)
        assert "--no-pretrained" in str(info.value) and "\n" not in str(info.value)
    assert len(calls) == 1  # remembered: no second download attempt
    # another weights location is tried afresh
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch2"))
    with pytest.raises(DataError):
        features.alexnet_fc7(pretrained=True)
    assert len(calls) == 2
