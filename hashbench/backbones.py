"""Backbone networks shared by the deep hashing methods (ADSH, and later DPSH, DSH, DHN).

Every backbone maps a batch of inputs to ``bits`` real values ``F(x)`` (no output
non-linearity: each method applies its own, e.g. ADSH's tanh).

* ``"alexnet"``: torchvision's AlexNet with the last layer (``classifier[6]``, 4096 -> 1000)
  replaced by a new ``Linear(4096, bits)``. It stands in for CNN-F (Chatfield et al. 2014),
  the 5 conv + 3 fc network the ADSH paper used, which torchvision does not ship. With
  ``pretrained=True`` the ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``) are loaded
  from torchvision's cache (``$TORCH_HOME/hub/checkpoints``, default
  ``~/.cache/torch/hub/checkpoints``), downloaded there when the network allows; offline
  without the file, :class:`~hashbench.errors.DataError` says where to put it. The model
  takes images of any size as float ``(N, C, H, W)`` in [0, 1] (uint8 in [0, 255] and
  channels-last arrays are converted by :func:`to_batch`), resizes them to
  ``image_size`` (224) bilinearly, repeats a single grey channel to RGB, and normalises
  with the ImageNet mean and standard deviation inside ``forward``, so the same code runs
  on CPU and GPU.
* ``"mlp"``: for feature vectors ``(N, d)``: ``d -> hidden -> hidden -> bits`` with ReLU.
* ``"cnn"``: for small images such as the 8x8 digits ``(N, 1, 8, 8)``: two 3x3
  convolutions (32 and 64 channels, ReLU), 2x2 max-pooling, ``fc -> hidden -> bits``.

Threads (:func:`cpu_threads`): on CPU, PyTorch starts one intra-op thread per core. The
small backbones run tiny matrix products (a 64 x 256 layer, batch 64) where splitting work
across threads saves nothing, and when other processes share the cores the extra threads
wait for each other at every operation. Measured on a 2-core machine shared with other jobs
(load average 5-7): one full ADSH training on digits (MLP, 4,050 SGD steps plus the V-steps)
took 6.6-7.6 s with 1 thread and 31-153 s with torch's default of 2; on an idle machine the
two are within 10%. So the deep methods run the small backbones with **1 thread** on CPU,
and AlexNet with torch's default (all cores), where large convolutions do gain from them.
``HASHBENCH_TORCH_THREADS=k`` overrides both; the previous setting is restored when
training or encoding ends. On CUDA the setting is left alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hashbench.errors import ConfigError, DataError, DivergedError, positive_int_env

BACKBONES = ("mlp", "cnn", "alexnet")
# The hyper-parameters of a deep method that only some backbones read (build_backbone): a run
# logs the ones its backbone reads and leaves the others out (DeepHasher.applicable_params).
BACKBONE_PARAMS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden",),
    "cnn": ("hidden",),
    "alexnet": ("pretrained", "image_size"),
}
SMALL_BACKBONES = ("mlp", "cnn")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
THREADS_ENV = "HASHBENCH_TORCH_THREADS"
EVAL_QUERIES = 1000  # training points used as queries for ``train_map``
DEVICE_INPUTS_BYTES = 1 << 29  # training inputs up to 512 MiB are moved to the device at once


# ---------------------------------------------------------------- the networks


class MLP(nn.Module):
    """``d -> hidden -> hidden -> bits`` with ReLU; inputs of any shape are flattened."""

    def __init__(self, in_features: int, bits: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, bits),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions and a 2x2 max-pool, then ``fc -> hidden -> bits``.

    The images go in as they are (values in [0, 1]) unless :meth:`standardise_inputs` was
    called: then each channel is first standardised, ``(x - mean) / std``, with the statistics
    given there (kept as buffers, so encoding applies the same shift). Opt-in: the symmetric
    deep methods (``hashbench.deep``) use it; ADSH does not.
    """

    def __init__(self, input_shape: Sequence[int], bits: int, hidden: int = 256) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 64 * (height // 2) * (width // 2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, bits),
        )
        self.input_mean: torch.Tensor | None
        self.input_std: torch.Tensor | None
        self.register_buffer("input_mean", None)
        self.register_buffer("input_std", None)

    def standardise_inputs(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Standardise each input channel with ``mean`` and ``std`` (one value per channel)."""
        device = self.head[-1].weight.device
        mean_t = torch.as_tensor(np.asarray(mean, np.float32), device=device).view(1, -1, 1, 1)
        std_t = torch.as_tensor(np.asarray(std, np.float32), device=device).view(1, -1, 1, 1)
        if mean_t.shape[1] != self.features[0].in_channels or std_t.shape != mean_t.shape:
            raise ConfigError(f"standardise_inputs: need one mean and one std per channel "
                              f"({self.features[0].in_channels}), got {mean_t.shape[1]} and {std_t.shape[1]}")
        if not bool((std_t > 0).all()):
            raise ConfigError("standardise_inputs: every channel's std must be positive")
        self.input_mean, self.input_std = mean_t, std_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_mean is not None:
            x = (x - self.input_mean) / self.input_std
        return self.head(self.features(x))


def channel_stats(inputs: Any, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of images ``inputs`` (any form :func:`to_batch`
    takes), over every pixel of every image, accumulated in float64. A constant channel gets
    std 1 (it is only shifted)."""
    total = squares = None
    count = 0
    for batch in iterate_batches(inputs, batch_size):
        if batch.ndim != 4:
            raise DataError(f"channel_stats needs images (N, C, H, W), got a batch of shape "
                            f"{tuple(batch.shape)}")
        x = batch.double().transpose(0, 1).reshape(batch.shape[1], -1)
        total = x.sum(1) if total is None else total + x.sum(1)
        squares = (x * x).sum(1) if squares is None else squares + (x * x).sum(1)
        count += x.shape[1]
    if total is None or squares is None:
        raise DataError("channel_stats: no images")
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0.0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.numpy().astype(np.float32), std.numpy().astype(np.float32)


class AlexNetHash(nn.Module):
    """torchvision AlexNet with ``classifier[6]`` replaced by ``Linear(4096, bits)``.

    ``forward`` takes float images in [0, 1] of any size, resizes them to ``image_size``,
    turns one grey channel into three and applies the ImageNet normalisation.
    """

    def __init__(self, bits: int, pretrained: bool, image_size: int = 224) -> None:
        super().__init__()
        from torchvision.models import alexnet

        self.image_size = image_size
        self.model = alexnet(weights=alexnet_weights() if pretrained else None)
        self.model.classifier[6] = nn.Linear(self.model.classifier[6].in_features, bits)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        return self.model((x - self.mean) / self.std)


class TextMLP(nn.Module):
    """The text network of the cross-modal deep methods (DCMH, DDASH): ``d -> hidden (ReLU) ->
    bits``, the two layers of DCMH's ``net_structure_txt.m`` (8,192 hidden units there), every
    weight and bias drawn from ``N(0, init_std^2)`` (0.01 there; None: torch's default). The
    input is first centred by ``center`` (the training mean: DCMH's ``normZeroMean`` of the
    bag-of-words, without the query rows), kept as a buffer so that encoding applies the same
    shift.
    """

    def __init__(self, in_features: int, bits: int, hidden: int = 8192, init_std: float | None = 0.01,
                 center: np.ndarray | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, bits)
        if init_std is not None:  # None: torch's default initialisation of nn.Linear (as the MLP backbone)
            for param in self.parameters():
                nn.init.normal_(param, 0.0, init_std)
        shift = torch.zeros(in_features) if center is None else torch.as_tensor(
            np.asarray(center, np.float32).reshape(-1))
        self.register_buffer("center", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1) - self.center)))


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the cached ImageNet AlexNet weights."""
    from torchvision.models import AlexNet_Weights

    filename = AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def alexnet_weights() -> Any:
    """The ImageNet weights enum, checked to be usable: cached, or downloadable now."""
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1
    path = alexnet_weights_path()
    if path.is_file():
        return weights
    try:  # fetch into the cache now, so a failure is reported here with its remedy
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - no network, proxy, disk full, bad hash ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(
            f"ImageNet AlexNet weights are not cached at {path} and could not be downloaded "
            f"({reason}); copy {weights.url} to that path (set TORCH_HOME to move the "
            f"cache), or pass --no-pretrained (pretrained=False in Python) to use random weights"
        ) from exc
    return weights


def build_backbone(name: str, bits: int, input_shape: Sequence[int], pretrained: bool = False,
                   hidden: int = 256, image_size: int = 224) -> nn.Module:
    """The network ``F`` mapping one input of shape ``input_shape`` to ``bits`` reals.

    ``input_shape`` excludes the batch axis: ``(d,)`` for feature vectors, ``(C, H, W)``
    for images. ``pretrained`` applies to AlexNet only; asking it of the small networks is
    a :class:`ConfigError` (they have no pretrained weights), as is an input shape the
    network cannot take.
    """
    shape = tuple(int(s) for s in input_shape)
    if bits < 1:
        raise ConfigError(f"backbone {name!r}: bits must be positive, got {bits}")
    if name == "mlp":
        _no_pretrained(name, pretrained)
        return MLP(int(np.prod(shape)), bits, hidden)
    if name == "cnn":
        _no_pretrained(name, pretrained)
        if len(shape) != 3 or min(shape[1:]) < 2:
            raise ConfigError(
                f"backbone 'cnn' needs images (C, H, W) of at least 2x2, got input shape {shape}; "
                f"use backbone='mlp' for feature vectors"
            )
        return SmallCNN(shape, bits, hidden)
    if name == "alexnet":
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise ConfigError(
                f"backbone 'alexnet' needs grey or RGB images (C, H, W), got input shape {shape}; "
                f"use backbone='mlp' for feature vectors"
            )
        return AlexNetHash(bits, pretrained, image_size)
    raise ConfigError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ConfigError(
            f"backbone {name!r} has no pretrained weights; use pretrained=False "
            f"(only 'alexnet' loads ImageNet weights)"
        )


# ---------------------------------------------------------------- inputs -> batches


def as_float_array(items: Any) -> np.ndarray:
    """A batch as float32 ``(N, d)`` or ``(N, C, H, W)``.

    Feature matrices pass through. Images: uint8 is scaled to [0, 1]; channels-last
    ``(N, H, W, C)`` with C in (1, 3) becomes channels-first; ``(N, H, W)`` gains a channel.
    """
    arr = np.asarray(items)
    scale = arr.dtype == np.uint8
    arr = arr.astype(np.float32, copy=False)
    if scale:
        arr = arr / np.float32(255.0)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(arr)


def to_batch(inputs: Any, indices: Any, device: str | torch.device = "cpu") -> torch.Tensor:
    """Rows ``indices`` of ``inputs`` as a float32 tensor on ``device``.

    ``inputs`` is a numpy array (features or images) or any indexable collection of images
    (numpy arrays, PIL images or tensors, e.g. a dataset view); see :func:`as_float_array`.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if isinstance(inputs, np.ndarray):
        rows = inputs[idx]
    elif isinstance(inputs, torch.Tensor):
        rows = inputs[torch.as_tensor(idx)].cpu().numpy()
    else:
        if not len(idx):
            raise DataError("to_batch: no indices given")
        return torch.from_numpy(np.stack([_item_array(inputs[int(i)]) for i in idx])).to(device)
    return torch.from_numpy(as_float_array(rows)).to(device)


def _item_array(item: Any) -> np.ndarray:
    """One item of a collection as float32 (d,) or (C, H, W) (see :func:`as_float_array`)."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    arr = np.asarray(item)  # PIL images convert to (H, W[, C]) uint8
    return as_float_array(arr[None])[0]


def input_shape(inputs: Any) -> tuple[int, ...]:
    """The shape of one input (no batch axis) after :func:`to_batch`'s conversion."""
    if len(inputs) == 0:
        raise DataError("no inputs: the training set is empty")
    return tuple(to_batch(inputs, [0]).shape[1:])


def iterate_batches(inputs: Any, batch_size: int, device: str | torch.device = "cpu"
                    ) -> Iterator[torch.Tensor]:
    """All rows of ``inputs`` in order, ``batch_size`` at a time, as tensors on ``device``."""
    for start in range(0, len(inputs), batch_size):
        yield to_batch(inputs, np.arange(start, min(start + batch_size, len(inputs))), device)


# ---------------------------------------------------------------- threads


def threads_for(backbone: str, device: str | torch.device) -> int | None:
    """Intra-op threads to use on CPU: 1 for the small backbones, None (keep) for AlexNet.

    ``HASHBENCH_TORCH_THREADS`` overrides; on CUDA the setting only affects host-side work
    and is left alone. See the module docstring for the measurements behind this.
    """
    override = positive_int_env(THREADS_ENV)
    if override is not None:
        return override
    if torch.device(device).type != "cpu":
        return None
    return 1 if backbone in SMALL_BACKBONES else None


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` (None: unchanged), then restore."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


ENCODE_BATCH = 1024


def network_codes(model: nn.Module, inputs: Any, bits: int, backbone: str,
                  device: str | torch.device) -> np.ndarray:
    """``sign(model(x))`` for every item, in batches, without gradients (int8 {-1, +1})."""
    from hashbench.api import binarize

    chunks = []
    with torch.no_grad(), cpu_threads(threads_for(backbone, device)):
        for start in range(0, len(inputs), ENCODE_BATCH):
            idx = np.arange(start, min(start + ENCODE_BATCH, len(inputs)))
            chunks.append(model(to_batch(inputs, idx, device)).cpu().numpy())
    if not chunks:
        return np.zeros((0, bits), np.int8)
    return binarize(np.concatenate(chunks))


# ---------------------------------------------------------------- per-step training log


def eval_points(n: int, seed: int) -> np.ndarray:
    """The sorted training points (at most :data:`EVAL_QUERIES` of ``n``) used as queries for
    ``train_map``, drawn from their own random stream so that training is unchanged."""
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(n, size=min(EVAL_QUERIES, n), replace=False))


class StepLog:
    """The per-step log shared by ADSH (a step = an outer iteration) and the symmetric deep
    template (a step = an epoch): ``loss``, ``learning_rate`` and ``elapsed_seconds``
    (training time since construction, evaluation excluded), ``train_map`` every
    ``eval_every`` steps and at the last, and the caller's ``ctx.on_epoch`` hook, called with
    the network in eval mode (train mode is restored). Time spent on ``train_map`` and in the
    hook is not training time.
    """

    def __init__(self, ctx: Any, eval_every: int, steps: int) -> None:
        self.ctx, self.eval_every, self.steps = ctx, eval_every, steps
        self.start, self.eval_seconds = time.perf_counter(), 0.0

    def log(self, step: int, loss: float, rate: float, model: nn.Module, method: Any,
            train_map: Callable[[], float]) -> None:
        """Log step ``step``; the method must already give the current codes (``encode``)."""
        ctx = self.ctx
        ctx.log_metric("loss", loss, step)
        if not math.isfinite(loss):  # a diverged run is a failure, never a result
            name = method.meta.name
            raise DivergedError(f"{name} diverged at step {step}: the loss is {loss}; lower the learning "
                                f"rate (--param {name}.learning_rate=...)")
        ctx.log_metric("learning_rate", rate, step)
        elapsed = time.perf_counter() - self.start - self.eval_seconds
        ctx.log_metric("elapsed_seconds", elapsed, step)
        eval_start = time.perf_counter()
        if self.eval_every and ((step + 1) % self.eval_every == 0 or step + 1 == self.steps):
            ctx.log_metric("train_map", train_map(), step)
        if ctx.on_epoch is not None:
            model.eval()
            try:
                ctx.on_epoch(step, elapsed, method)
            finally:
                model.train()
        self.eval_seconds += time.perf_counter() - eval_start
