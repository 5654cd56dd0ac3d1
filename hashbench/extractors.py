"""Feature extractors: the ``features`` modality of an image dataset, for shallow methods.

Three declared choices (:data:`EXTRACTORS`):

- ``alexnet-fc7``: the paper's setting, 4,096-d fc7 activations of torchvision's ImageNet
  AlexNet (:mod:`hashbench.features`); needs the ImageNet weights (cached or downloadable).
- ``hog``: histograms of oriented gradients (Dalal & Triggs 2005) by
  :func:`skimage.feature.hog`; no weights, fully offline.
- ``pixels-pca``: raw pixels scaled to [0, 1], projected on their leading principal
  components (not whitened, see below); no weights, fully offline.

Both offline extractors work on the images at a *working size*: the first image's size when
neither side exceeds a limit (HOG: :data:`MAX_SIDE` = 64 pixels; pixels-pca:
:data:`PCA_MAX_SIDE` = 32), else that limit square; every image of another size is resized
to it (bilinear). Fashion-MNIST (28 x 28 grey) and CIFAR-10 (32 x 32 colour)
are used as they are. Grey images keep one channel; RGB images three (an
:class:`~hashbench.datasets.images.ImageFiles` collection always yields RGB).

**HOG parameters** (:data:`HOG_PARAMS`): 9 unsigned orientation bins, cells of 4 x 4 pixels,
blocks of 2 x 2 cells with L2-Hys normalisation, no square-root gamma compression. Small
cells suit 28-32 pixel images (8 x 8 cells, the usual choice for pedestrians at 64 x 128,
would leave 3 x 3 cells on Fashion-MNIST). For colour images scikit-image takes, at each
pixel, the gradient of the channel with the largest magnitude. Dimensions: 28 x 28 ->
7 x 7 cells -> 6 x 6 blocks x 2 x 2 x 9 = 1,296; 32 x 32 -> 7 x 7 blocks -> 1,764.

**Pixels-PCA parameters** (:data:`PCA_PARAMS`): x = pixels / 255 flattened (H, W, C order);
mean mu and covariance C = (X - mu)^T (X - mu) / (m - 1) of a fitting sample of
m = min(n, 10,000) items drawn without replacement with ``numpy.random.default_rng(0)``;
eigen-decomposition C = V diag(lambda) V^T (from the SVD of the centred sample when
m < d: the same eigenpairs); features z = (x - mu) V_k with k = min(256, d, m - 1)
leading components (each eigenvector's sign is fixed so that its largest-magnitude entry is
positive). The fitting sample is drawn from all items, queries included: PCA is
unsupervised preprocessing, and fitting it on the whole unlabelled collection is how such
preprocessing is usually done; no label is used.

The components are **not whitened**: dividing each by its standard deviation gives the
many low-variance (mostly noise) directions the same weight as the few informative ones,
and variance-driven methods then hash noise. Measured on Fashion-MNIST (protocol
``fashion-mnist``, ITQ, seed 0, MAP at 12 / 32 bits): whitened 256-d 0.108 / 0.125 (chance
is 0.10); this projection 0.448 / 0.469, about raw 784-d pixels' 0.451 / 0.475 (HOG: 0.477 /
0.514).

Every result is cached as ``.npy`` under ``$HASHBENCH_CACHE`` (default
``~/.cache/hashbench``)``/features``, keyed by the dataset name, the exact image collection
(its ``identity()``, or a SHA-256 of the pixel array), the extractor and its parameters
(:func:`describe`); a second call loads the file. Images are processed in chunks of
:data:`CHUNK` items, so memory stays bounded for image files; ``progress`` is called like
``progress(iterable, total=..., desc=...)`` and returns an iterator (``tqdm``'s signature).

Use::

    from hashbench import extractors
    feats = extractors.extract(dataset, "hog", progress=tqdm, log=print)   # (n, d) float32
    tag = extractors.describe("hog")                                       # recorded with runs
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from hashbench.errors import DataError, UsageError

EXTRACTORS = ("alexnet-fc7", "hog", "pixels-pca")
OFFLINE = ("hog", "pixels-pca")
VERSION = 1  # bump when an extractor's output changes for the same parameters
MAX_SIDE = 64  # HOG
PCA_MAX_SIDE = 32  # pixels-pca: d <= 3,072, so the d x d scatter stays at 75 MB
CHUNK = 1024
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (4, 4), "cells_per_block": (2, 2),
              "block_norm": "L2-Hys", "transform_sqrt": False}
PCA_PARAMS = {"max_dim": 256, "fit_items": 10_000, "fit_seed": 0}


def _plain(iterable: Iterable[Any], total: int | None = None, desc: str = "") -> Iterator[Any]:
    return iter(iterable)


def _quiet(message: str) -> None:
    pass


def _check_name(name: str) -> None:
    if name not in EXTRACTORS:
        from hashbench.registry import suggest

        raise UsageError(f"unknown feature extractor {name!r}{suggest(name, list(EXTRACTORS))} "
                         f"(known: {', '.join(EXTRACTORS)})")


def describe(name: str, pretrained: bool = True, image_size: int | None = None) -> str:
    """The extractor and its parameters in one line (the ``features.extractor`` tag text and
    part of the cache key). ``pretrained`` and ``image_size`` apply to ``alexnet-fc7`` only."""
    _check_name(name)
    size = "side <= {0} as is, else resized to {0}x{0}"
    if name == "hog":
        p = HOG_PARAMS
        return (f"hog v{VERSION} (scikit-image; {p['orientations']} orientations, cells "
                f"{p['pixels_per_cell'][0]}x{p['pixels_per_cell'][1]} px, blocks "
                f"{p['cells_per_block'][0]}x{p['cells_per_block'][1]} cells, {p['block_norm']}, "
                f"transform_sqrt={p['transform_sqrt']}; colour: strongest-gradient channel; "
                f"{size.format(MAX_SIDE)})")
    if name == "pixels-pca":
        p = PCA_PARAMS
        return (f"pixels-pca v{VERSION} (pixels/255 projected on the top min({p['max_dim']}, d) "
                f"principal components, not whitened, fitted on min(n, {p['fit_items']}) items "
                f"drawn with seed {p['fit_seed']}; {size.format(PCA_MAX_SIDE)})")
    from hashbench import features

    return (f"{features.BACKBONE} ({features.weights_tag(pretrained)}, "
            f"{features.transform_tag(image_size or features.DEFAULT_SIZE)})")


# ---------------------------------------------------------------- image access


def _array_layout(array: np.ndarray) -> np.ndarray:
    """An image array as (n, H, W, C): accepts (n, H, W), (n, C, H, W) and (n, H, W, C)."""
    if array.ndim == 3:
        return array[..., None]
    if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        return array.transpose(0, 2, 3, 1)
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array
    raise DataError(f"cannot read images from an array of shape {array.shape}; expected (n, H, W), "
                    f"(n, C, H, W) or (n, H, W, C) with C = 1 or 3")


def _raw_array(images: Any) -> np.ndarray | None:
    if isinstance(images, np.ndarray):
        return _array_layout(images)
    array = getattr(images, "array", None)  # ArrayImages
    if isinstance(array, np.ndarray):
        return _array_layout(array)
    return None


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if np.issubdtype(pixels.dtype, np.floating):  # images in [0, 1]
        return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W, C) uint8 image resized to ``size`` = (H, W), bilinear."""
    if pixels.shape[:2] == size:
        return pixels
    from PIL import Image

    mode_img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    out = np.asarray(mode_img.resize((size[1], size[0]), Image.BILINEAR))
    return out[..., None] if out.ndim == 2 else out


def _one(images: Any, i: int) -> np.ndarray:
    item = images[int(i)]
    pixels = np.asarray(item)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    elif pixels.ndim == 3 and pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
        pixels = pixels.transpose(1, 2, 0)
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
        raise DataError(f"image {i} has shape {pixels.shape}; expected (H, W), (H, W, 1|3) or (1|3, H, W)")
    return _as_uint8(pixels)


def working_size(images: Any, max_side: int = MAX_SIDE) -> tuple[int, int, int]:
    """(H, W, C) every image is brought to: the first image's, or ``max_side`` square when
    a side of the first image is larger."""
    if len(images) == 0:
        raise DataError("no images to extract features from")
    array = _raw_array(images)
    first = array[0] if array is not None else _one(images, 0)
    h, w, c = first.shape
    if max(h, w) > max_side:
        h = w = max_side
    return h, w, c


def _chunk(images: Any, indices: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (b, H, W, C) pixels of ``images[indices]`` at the working ``shape``."""
    array = _raw_array(images)
    if array is not None:
        block = _as_uint8(np.asarray(array[indices]))
        if block.shape[1:] == shape:
            return block
        return np.stack([_resize(img, shape[:2]) for img in block])
    out = np.empty((len(indices),) + shape, dtype=np.uint8)
    for row, i in enumerate(indices):
        pixels = _resize(_one(images, int(i)), shape[:2])
        if pixels.shape[-1] != shape[2]:  # grey among colour or the reverse
            pixels = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels.mean(
                axis=-1, keepdims=True).astype(np.uint8)
        out[row] = pixels
    return out


def _chunks(n: int, progress: Callable[..., Iterator[Any]], desc: str) -> Iterator[np.ndarray]:
    starts = range(0, n, CHUNK)
    for start in progress(starts, total=len(starts), desc=desc):
        yield np.arange(start, min(start + CHUNK, n))


# ---------------------------------------------------------------- extractors


def hog_features(images: Any, progress: Callable[..., Iterator[Any]] = _plain,
                 params: dict[str, Any] | None = None) -> np.ndarray:
    """HOG descriptors (n, d) float32 of every image, parameters :data:`HOG_PARAMS` (or
    ``params``: scikit-image's ``hog`` keywords, for studies outside the declared extractor)."""
    from skimage.feature import hog

    shape = working_size(images)
    colour = shape[2] == 3

    options = HOG_PARAMS if params is None else params

    def one(img: np.ndarray) -> np.ndarray:
        img = img.astype(np.float32) / 255.0
        if colour:
            return hog(img, channel_axis=-1, **options)
        return hog(img[..., 0], **options)

    dim = one(np.zeros(shape, dtype=np.uint8)).size
    out = np.empty((len(images), dim), dtype=np.float32)
    for idx in _chunks(len(images), progress, "hog features"):
        block = _chunk(images, idx, shape)
        for row, img in zip(idx, block, strict=True):
            out[row] = one(img)
    return out


def pixels_pca_features(images: Any, progress: Callable[..., Iterator[Any]] = _plain) -> np.ndarray:
    """Pixels projected on their top principal components (n, k) float32, parameters
    :data:`PCA_PARAMS` (module docstring)."""
    shape = working_size(images, PCA_MAX_SIDE)
    n, d = len(images), int(np.prod(shape))
    m = min(n, PCA_PARAMS["fit_items"])
    if m < 2:
        raise DataError(f"pixels-pca needs at least 2 images, got {n}")
    fit = np.sort(np.random.default_rng(PCA_PARAMS["fit_seed"]).choice(n, size=m, replace=False))
    k = min(PCA_PARAMS["max_dim"], d, m - 1)
    blocks = progress(range(0, m, CHUNK), total=-(-m // CHUNK), desc="pixels-pca fit")
    if m >= d:  # mean and d x d scatter, accumulated chunk by chunk (float64)
        total = np.zeros(d)
        scatter = np.zeros((d, d))
        for start in blocks:
            x = _chunk(images, fit[start:start + CHUNK], shape).reshape(-1, d) / 255.0
            total += x.sum(axis=0)
            scatter += x.T @ x
        mean = total / m
        eigvals, eigvecs = np.linalg.eigh((scatter - m * np.outer(mean, mean)) / (m - 1))
        vecs = eigvecs[:, np.argsort(eigvals)[::-1][:k]]
    else:  # fewer items than pixels: the same eigenpairs from the SVD of the m x d sample
        x = np.concatenate([_chunk(images, fit[start:start + CHUNK], shape).reshape(-1, d) / 255.0
                            for start in blocks])
        mean = x.mean(axis=0)
        vecs = np.linalg.svd(x - mean, full_matrices=False)[2][:k].T
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(k)])
    vecs = vecs * np.where(signs == 0, 1.0, signs)
    out = np.empty((n, k), dtype=np.float32)
    for idx in _chunks(n, progress, "pixels-pca features"):
        x = _chunk(images, idx, shape).reshape(-1, d) / 255.0
        out[idx] = (x - mean) @ vecs
    return out


class _PilImages:
    """A pixel array seen as RGB PIL images (what :mod:`hashbench.features` transforms)."""

    def __init__(self, array: np.ndarray, ident: str) -> None:
        self.array = array
        self.ident = ident

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):  # -> PIL.Image.Image
        from PIL import Image

        img = _as_uint8(self.array[int(i)])
        return Image.fromarray(np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img)

    def identity(self) -> str:
        return self.ident


class _ImageView:
    """The attributes of a dataset that :func:`hashbench.features.extract_features` reads."""

    def __init__(self, name: str, images: Any) -> None:
        self.name = name
        self.images = images

    def __len__(self) -> int:
        return len(self.images)


# ---------------------------------------------------------------- cache and entry point


def images_identity(images: Any) -> str:
    """A digest that changes when the image collection changes."""
    if hasattr(images, "identity"):
        return str(images.identity())
    if isinstance(images, np.ndarray):
        h = hashlib.sha256(f"{images.shape}|{images.dtype}".encode())
        h.update(np.ascontiguousarray(images).tobytes())
        return h.hexdigest()
    raise DataError(f"cannot identify the image collection {type(images).__name__} for the feature "
                    f"cache (give it an identity() method)")


def cache_path(dataset: Any, name: str) -> Any:
    """Where the ``name`` features of ``dataset`` are cached."""
    from hashbench.features import cache_root

    key = hashlib.sha256("|".join([dataset.name, images_identity(dataset.images), describe(name)])
                         .encode()).hexdigest()[:20]
    return cache_root() / "features" / f"{dataset.name}-{name}-{key}.npy"


def extract(dataset: Any, name: str, progress: Callable[..., Iterator[Any]] | None = None,
            log: Callable[[str], None] | None = None, **options: Any) -> np.ndarray:
    """Features (n, d) float32 of every image of ``dataset`` by extractor ``name``, cached.

    ``options`` go to :func:`hashbench.features.extract_features` for ``alexnet-fc7``
    (``pretrained``, ``image_size``, ``device``, ``batch_size``); the offline extractors take
    none (their parameters are fixed and declared, see :func:`describe`).
    """
    _check_name(name)
    progress = progress or _plain
    log = log or _quiet
    images = dataset.images
    if images is None:
        raise DataError(f"dataset {dataset.name!r} has no images to extract {name} features from")
    if name == "alexnet-fc7":
        from hashbench import features

        view = dataset
        array = _raw_array(images)
        if array is not None and not hasattr(images, "identity"):  # raw arrays: PIL view
            view = _ImageView(dataset.name, _PilImages(array, images_identity(images)))
        return features.extract_features(view, progress=progress, log=log, **options)
    if options:
        raise UsageError(f"feature extractor {name!r} takes no options (got {', '.join(options)})")
    from hashbench.features import read_cache, write_cache

    path = cache_path(dataset, name)
    cached = read_cache(path, (len(images), None), log, f"{name} features")
    if cached is not None:
        return cached
    compute = hog_features if name == "hog" else pixels_pca_features
    return write_cache(path, compute(images, progress), log, f"{name} features")
