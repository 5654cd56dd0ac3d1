"""Cached deep features for shallow methods on image datasets.

The ADSH paper trains its shallow baselines on 4,096-d CNN-F fc7 features. CNN-F is not
in torchvision; the stand-in is torchvision's AlexNet with ImageNet weights
(``AlexNet_Weights.IMAGENET1K_V1``), features taken after fc7's ReLU (classifier layers
0-5), on images resized to 224x224 and normalised with the ImageNet mean and std.

Features are extracted once and cached as ``.npy`` under ``$HASHBENCH_CACHE`` (default
``~/.cache/hashbench``)/``features``, keyed by dataset, the exact image list, backbone,
weights and transform; a second run reuses the file. Pretrained weights come from
torchvision's cache (``$TORCH_HOME``); with no network and no cached file, extraction
stops with a message saying where to put the weights or to pass ``--no-pretrained``
(random weights from a fixed seed, recorded as such).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hashbench.errors import DataError

BACKBONE = "alexnet-fc7"
DEFAULT_SIZE = 224


def transform_tag(size: int = DEFAULT_SIZE) -> str:
    return f"resize{size}+imagenet-normalize"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cache_root() -> Path:
    return Path(os.environ.get("HASHBENCH_CACHE") or Path.home() / ".cache" / "hashbench")


def weights_tag(pretrained: bool) -> str:
    return "IMAGENET1K_V1" if pretrained else "random-init-seed0"


def imagenet_transform(size: int = DEFAULT_SIZE) -> Any:
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


OFFLINE_HINT = ("or extract features offline without weights with --features hog or "
                "--features pixels-pca")
_WEIGHT_FAILURES: dict[str, str] = {}  # weights path -> the error, remembered for the process


def alexnet_fc7(pretrained: bool) -> Any:
    """AlexNet truncated after fc7's ReLU (4,096 outputs), in eval mode.

    A failure to get the ImageNet weights is remembered for the process (per weights path),
    so a grid of many trials stops at once with the same message instead of retrying the
    download for every trial; the message names the offline extractors.
    """
    import torch
    from torchvision.models import alexnet

    from hashbench.backbones import alexnet_weights, alexnet_weights_path

    weights = None
    if pretrained:
        where = str(alexnet_weights_path())
        if where in _WEIGHT_FAILURES and not Path(where).is_file():
            raise DataError(_WEIGHT_FAILURES[where])
        try:
            weights = alexnet_weights()
        except DataError as exc:
            _WEIGHT_FAILURES[where] = f"{exc}; {OFFLINE_HINT}"
            raise DataError(_WEIGHT_FAILURES[where]) from None
    torch.manual_seed(0)
    model = alexnet(weights=weights)
    model.classifier = model.classifier[:6]
    return model.eval()


def cache_path(dataset: Any, pretrained: bool, size: int = DEFAULT_SIZE) -> Path:
    ident = dataset.images.identity() if hasattr(dataset.images, "identity") else str(len(dataset))
    key = hashlib.sha256(
        "|".join([dataset.name, ident, BACKBONE, weights_tag(pretrained), transform_tag(size)]).encode()
    ).hexdigest()[:20]
    return cache_root() / "features" / f"{dataset.name}-{BACKBONE}-{key}.npy"


def _plain(iterable: Iterable[Any], total: int | None = None, desc: str = "") -> Iterator[Any]:
    return iter(iterable)


def extract_features(
    dataset: Any, pretrained: bool = True, batch_size: int = 128, device: str = "cpu",
    progress: Callable[..., Iterator[Any]] = _plain, log: Callable[[str], None] = lambda s: None,
    image_size: int = DEFAULT_SIZE,
) -> np.ndarray:
    """fc7 features of every image of ``dataset`` (n, 4096) float32, cached on disk.

    ``image_size`` is the side images are resized to (224 as in the paper; smaller sizes,
    at least 64, are faster and recorded in the cache key and the run tags).
    """
    if image_size < 64:
        raise DataError(f"feature image size must be at least 64 for AlexNet, got {image_size}")
    path = cache_path(dataset, pretrained, image_size)
    cached = read_cache(path, (len(dataset), 4096), log)
    if cached is not None:
        return cached
    import torch

    model = alexnet_fc7(pretrained).to(device)
    transform = imagenet_transform(image_size)
    images = dataset.images
    out = np.empty((len(images), 4096), dtype=np.float32)
    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        for start in progress(starts, total=len(starts), desc=f"{BACKBONE} features"):
            stop = min(start + batch_size, len(images))
            batch = torch.stack([transform(images[i]) for i in range(start, stop)]).to(device)
            out[start:stop] = model(batch).float().cpu().numpy()
    return write_cache(path, out, log)


def read_cache(path: Path, shape: tuple[int, int | None], log: Callable[[str], None],
               what: str = "features") -> np.ndarray | None:
    """Cached float32 features of ``shape`` (None: any width) at ``path``, or None (absent,
    corrupt or of another shape: then they are computed again)."""
    if not path.is_file():
        return None
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        log(f"ignoring corrupt feature cache {path}")
        return None
    rows, width = shape
    if feats.ndim == 2 and len(feats) == rows and (width is None or feats.shape[1] == width) \
            and feats.dtype == np.float32:
        log(f"using cached {what} {path}")
        return feats
    return None


def write_cache(path: Path, feats: np.ndarray, log: Callable[[str], None],
                what: str = "features") -> np.ndarray:
    """Save ``feats`` at ``path`` atomically (a temporary file renamed; concurrent writers of
    the same features are harmless) and return them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)
    log(f"cached {what} in {path}")
    return feats


def extractor_tag(pretrained: bool, size: int = DEFAULT_SIZE) -> str:
    """What the ``features.extractor`` tag says about AlexNet fc7 features."""
    return (f"{BACKBONE} ({weights_tag(pretrained)}, {transform_tag(size)}; "
            "torchvision AlexNet as the stand-in for CNN-F)")


def provide_features(dataset: Any, pretrained: bool = True, image_size: int = DEFAULT_SIZE,
                     device: str = "cpu", progress: Callable[..., Iterator[Any]] = _plain,
                     log: Callable[[str], None] = lambda s: None) -> None:
    """Give an image dataset a ``features`` modality: AlexNet fc7 features, extracted (or read
    from the cache) the first time a method asks for them. Datasets that already have
    features, or have no images, are left as they are. ``device``: ``cpu``, ``cuda`` or
    ``auto`` (CUDA when the process that extracts sees one)."""
    if dataset.has("features") or not dataset.has("image"):
        return

    def extract() -> np.ndarray:
        where = device
        if device == "auto":
            import torch

            where = "cuda" if torch.cuda.is_available() else "cpu"
        return extract_features(dataset, pretrained=pretrained, device=where, progress=progress,
                                log=log, image_size=image_size)

    dataset.provide("features", extract, {"features.extractor": extractor_tag(pretrained, image_size)})
