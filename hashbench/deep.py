"""The deep hashing template: :class:`DeepHasher` (shared by every deep method: ADSH, DPSH,
DSH, DHN, and the cross-modal deep methods) and :class:`SymmetricDeepHasher` (DPSH, DSH, DHN).

:class:`DeepHasher` holds what every deep method does the same way: the shared
hyper-parameters (batch size, the log-spaced rate schedule, momentum, weight decay, backbone,
pretrained weights, hidden width, image size, ``eval_every``) and their validation, the
input modality chosen by the backbone, the device check, the seeded and thread-limited
network construction (:meth:`DeepHasher.seeded_network`), the optional ``initialise`` hook,
``train_map`` and encoding ``sign(F(x))``. The rest of this docstring describes the
symmetric template.

A symmetric deep method learns one network ``F(x; Theta)`` and codes every item, query or
database, as ``sign(F(x))`` (value > 0 -> +1, else -1). The three baselines of the ADSH
paper differ only in the loss they put on a mini-batch of network outputs, so the rest
lives here, once:

* device, seeding, threads: torch is seeded from ``ctx.seed`` inside a forked RNG state (the
  caller's global state is left as it was), mini-batch orders come from ``ctx.rng``, and on
  CPU the small backbones run with one torch thread (``hashbench.backbones``). Two fits with
  the same seed give identical codes on CPU.
* the network: one of the backbones shared with ADSH (``hashbench.backbones``): "mlp" for
  feature vectors (the default), "cnn" for small images, "alexnet" (ImageNet weights by
  default, the torchvision stand-in for CNN-F) for images, trained end to end.
* input standardisation for the small CNN: each image channel is standardised with the
  training images' per-channel mean and std before the first convolution (kept in the
  network, so queries and database are encoded the same way). The authors' pipelines
  all subtract a mean image or the ImageNet mean (DSH's Caffe, DHN's and DPSH's AlexNet /
  CNN-F inputs; AlexNet here applies the ImageNet normalisation itself). Without it the
  images enter in [0, 1] (mean about 0.48 on CIFAR-10), every ReLU feature of the CNN has a
  large mean shared by all images, and the outputs at the start are mostly one direction
  common to every image (on CIFAR-10, 12 bits: per-bit mean over images 0.046 against a
  spread of 0.009, 8 of 12 bits constant over 500 images). The pair losses must first remove
  that shared part; their gradient for it adds up coherently over a mini-batch, so steps
  large enough to learn overshoot, the ReLUs die and every image gets one code (the CIFAR-10
  collapses of DPSH, DSH and DHN recorded in ``results/cifar10-jpeg/README.md``), and
  smaller ones do not leave the shared code within a CPU budget (DHN's balanced loss has
  almost no gradient for it). ADSH keeps its raw inputs (its calibration was done on them).
* the loop: ``epochs`` passes over the training set in mini-batches of ``batch_size``
  (128, as the ADSH paper ran its deep baselines), plain SGD with ``momentum`` and
  ``weight_decay`` (5e-4 in the paper), the rate log-spaced from ``learning_rate`` to
  ``learning_rate_end`` over the epochs (constant when ``learning_rate_end`` is None). A
  last mini-batch of a single point joins the one before it, so that every batch holds at
  least one pair.
* logging through the :class:`~hashbench.api.RunContext`, once per epoch (step = epoch):
  ``loss`` (the mean of the mini-batch losses over the epoch's points), ``learning_rate``,
  ``elapsed_seconds`` (training time so far, evaluation excluded) and, with
  ``eval_every = k > 0``, every k epochs and at the last, ``train_map``: the MAP of up to
  1,000 fixed training points used as queries against the codes ``sign(F(x))`` of the whole
  training set. In the full training mode that is the database, as for ADSH's
  ``train_map``; in the sampled mode it is the sampled training set (a symmetric method
  never sees the rest of the database during ``fit``). The report's MAP-versus-time figure
  (the ADSH paper's Fig. 3) reads ``train_map`` with ``elapsed_seconds``. When
  ``ctx.on_epoch`` is set it is called after each epoch with the method itself, whose
  ``encode`` then gives the codes of the current network (the caller's protocol MAP); its
  time is excluded from ``elapsed_seconds`` too.

A method subclasses :class:`SymmetricDeepHasher` and supplies

* ``meta`` (``family="deep"``, ``supervised=True``, ``asymmetric=False``);
* its own hyper-parameters as annotated class attributes with defaults (the class is a
  dataclass: every field becomes an ``__init__`` keyword argument after the shared ones,
  and a shared default such as ``learning_rate`` can be redeclared);
* ``batch_loss(batch: Batch) -> Tensor``: the scalar loss of one mini-batch, from
  ``batch.outputs`` (with autograd) and the labels;
* optionally ``activation(raw)`` (the output non-linearity, identity by default; DHN uses
  tanh), ``initialise(model)`` (a change to the freshly built network; DPSH scales its
  output layer) and ``uses_memory = True`` when the loss needs the latest outputs of every
  training point (DPSH's pairs between the batch and the whole training set).

``methods/dsh.py`` is the shortest example.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from hashbench.api import Hasher, RunContext, TrialData
from hashbench.backbones import (
    BACKBONE_PARAMS,
    DEVICE_INPUTS_BYTES,
    StepLog,
    build_backbone,
    channel_stats,
    cpu_threads,
    eval_points,
    input_shape,
    network_codes,
    threads_for,
    to_batch,
)
from hashbench.errors import ConfigError, DataError
from hashbench.labels import share_label


@dataclass
class Batch:
    """What a method's loss sees for one mini-batch of ``B`` training points.

    ``outputs``: ``(B, c)`` network outputs after ``activation`` (float32, with autograd).
    ``labels``: ``(B, L)`` multi-hot labels (float32 0/1). ``index``: ``(B,)`` their rows in
    the training set. ``train_labels``: ``(n, L)`` labels of the whole training set.
    ``memory``: for methods with ``uses_memory``, the ``(n, c)`` latest outputs of every
    training point (no gradient; zeros for points not seen yet), with this batch's rows
    already set to the current outputs; None otherwise. ``epoch``: 0-based.
    """

    outputs: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    train_labels: torch.Tensor
    memory: torch.Tensor | None
    epoch: int

    @property
    def n_train(self) -> int:
        return int(self.train_labels.shape[0])


def similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """Pairwise similarity ``s_ij = 1`` when items i and j share a label, else 0 (float)."""
    return share_label(labels_a, labels_b).float()


def log_one_plus_exp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` without overflow or underflow.

    Mathematically ``max(x, 0) + log(1 + e^-|x|)``. torch's softplus computes ``log1p(e^x)``
    for x <= 20 and returns x above (the difference, ``log(1 + e^-x) < e^-20``, is below
    float32 resolution there), in one fused kernel: about 4x faster than the composed
    formula on DPSH's (B, n) blocks.
    """
    return F.softplus(x)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each mini-batch over n points; a last batch of one point joins
    the batch before it (pair losses need two points)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        (start, _), last = bounds[-2], bounds.pop()
        bounds[-1] = (start, last[1])
    return bounds


def learning_rates(start: float, end: float | None, epochs: int) -> np.ndarray:
    """One rate per epoch: ``logspace(log10 start, log10 end, epochs)`` (the ADSH and DPSH
    authors' schedule shape), constant without ``end``."""
    if end is None:
        return np.full(max(epochs, 1), float(start))
    return np.logspace(np.log10(start), np.log10(end), max(epochs, 1))


@dataclass(eq=False)
class DeepHasher(Hasher):
    """What every deep method shares (see the module docstring). Subclasses are dataclasses
    that add their own fields (and may redeclare a shared default) and list the fields that
    must be positive / non-negative in ``positive_fields`` / ``non_negative_fields``."""

    bits: int = 32
    batch_size: int = 128
    learning_rate: float = 0.01
    learning_rate_end: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    backbone: str = "mlp"
    pretrained: bool | None = None
    hidden: int = 256
    image_size: int = 224
    eval_every: int = 0

    positive_fields: ClassVar[tuple[str, ...]] = ("bits", "batch_size", "learning_rate", "hidden",
                                                  "image_size")
    non_negative_fields: ClassVar[tuple[str, ...]] = ("momentum", "weight_decay", "eval_every")
    param_rules: ClassVar[dict[str, Any]] = {"backbone": ("mlp", "cnn", "alexnet")}

    def validate(self) -> None:
        """Check the hyper-parameters named in ``positive_fields`` / ``non_negative_fields``
        (and ``learning_rate_end`` when set)."""
        name = self.meta.name
        positive = list(self.positive_fields)
        if self.learning_rate_end is not None:
            positive.append("learning_rate_end")
        for key in positive:
            value = getattr(self, key)
            if not value > 0:
                raise ConfigError(f"{name}: {key} must be positive, got {value!r}")
        for key in self.non_negative_fields:
            value = getattr(self, key)
            if not value >= 0:
                raise ConfigError(f"{name}: {key} must be >= 0, got {value!r}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The MLP trains on feature vectors; the CNN and AlexNet on images, end to end."""
        return ("features",) if self.backbone == "mlp" else ("image",)

    @classmethod
    def applicable_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter but those only other backbones read (``BACKBONE_PARAMS``): no
        ``pretrained`` or ``image_size`` for the MLP, no ``hidden`` for AlexNet."""
        backbone = str(params.get("backbone", cls.backbone))
        others = {name for names in BACKBONE_PARAMS.values() for name in names}
        unused = others - set(BACKBONE_PARAMS.get(backbone, others))
        return {k: v for k, v in params.items() if k not in unused}

    def _pretrained(self) -> bool:
        if self.pretrained is None:
            return self.backbone == "alexnet"
        return bool(self.pretrained)

    def _device(self, ctx: RunContext) -> torch.device:
        device = torch.device(ctx.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{self.meta.name}: device 'cuda' was asked for but torch sees "
                              f"no CUDA device")
        return device

    def initialise(self, model: torch.nn.Module) -> None:
        """Adjust the freshly built network before training (nothing here; DPSH scales its
        output layer). Runs inside the seeded torch RNG state of ``fit``."""

    def learning_rates(self, epochs: int) -> np.ndarray:
        return learning_rates(self.learning_rate, self.learning_rate_end, epochs)

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """Plain SGD with ``momentum`` and ``weight_decay`` (rates are set per epoch)."""
        return torch.optim.SGD(model.parameters(), lr=self.learning_rate, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    @contextmanager
    def seeded_network(self, inputs: Any, ctx: RunContext) -> Iterator[tuple[torch.nn.Module, torch.device]]:
        """Build the backbone for ``inputs`` on the trial's device and train inside this block:
        torch seeded from ``ctx.seed`` in a forked RNG state (the caller's global state is
        left as it was), CPU threads limited for the small backbones
        (``hashbench.backbones``), ``initialise`` applied. On leaving it the network is in
        eval mode and kept as ``model_``; ``device_`` is the device."""
        device = self._device(ctx)
        self.device_ = device
        fork = [device] if device.type == "cuda" else []
        with cpu_threads(threads_for(self.backbone, device)), torch.random.fork_rng(devices=fork):
            torch.manual_seed(ctx.seed)
            model = build_backbone(self.backbone, self.bits, input_shape(inputs),
                                   pretrained=self._pretrained(), hidden=self.hidden,
                                   image_size=self.image_size).to(device)
            self.initialise(model)
            yield model, device
        model.eval()
        self.model_ = model

    def _map_against(self, model: torch.nn.Module, query_inputs: Any, query_labels: np.ndarray,
                     db_codes: np.ndarray, db_labels: np.ndarray) -> float:
        """``train_map``: MAP of ``sign(F(query_inputs))`` against ``db_codes``, with the
        network briefly in eval mode."""
        from hashbench.evaluation import evaluate  # lazily: only when eval_every > 0

        was_training = model.training
        model.eval()
        codes = self._forward_codes(model, query_inputs)
        model.train(was_training)
        return float(evaluate(codes, db_codes, query_labels, db_labels).metrics["map"])

    def _forward_codes(self, model: torch.nn.Module, inputs: Any) -> np.ndarray:
        return network_codes(model, inputs, self.bits, self.backbone, self.device_)

    def encode(self, inputs: Any) -> np.ndarray:
        """Codes ``sign(F(x))`` (value > 0 -> +1, else -1)."""
        self._check_fitted("model_")
        return self._forward_codes(self.model_, inputs)

    @staticmethod
    def checked_labels(name: str, inputs: Any, labels: Any) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 2 or len(labels) != len(inputs):
            raise DataError(f"{name}: labels of shape {labels.shape} do not match "
                            f"{len(inputs)} training inputs (expected (n, L) multi-hot)")
        return labels


@dataclass(eq=False)
class SymmetricDeepHasher(DeepHasher):
    """Template for symmetric deep hashing: codes ``sign(F(x))`` for queries and database.

    Subclasses add their loss hyper-parameters as dataclass fields and implement
    :meth:`batch_loss` (see the module docstring).
    """

    bits: int = 32
    epochs: int = 100

    uses_memory: ClassVar[bool] = False
    positive_fields: ClassVar[tuple[str, ...]] = DeepHasher.positive_fields + ("epochs",)

    # ------------------------------------------------------------ what a method supplies

    @abstractmethod
    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """The scalar loss of one mini-batch (autograd gives the gradient)."""

    def activation(self, raw: torch.Tensor) -> torch.Tensor:
        """The output non-linearity applied to ``F(x)`` before the loss (identity here).

        Codes are ``sign(F(x))``; an activation must keep the sign (tanh does)."""
        return raw

    # ------------------------------------------------------------ training

    def fit(self, data: TrialData, ctx: RunContext) -> SymmetricDeepHasher:
        self.validate()
        inputs = data.train.inputs
        labels = self.checked_labels(self.meta.name, inputs, data.train.labels)
        if len(labels) < 2:
            raise DataError(f"{self.meta.name}: needs at least 2 training points, got {len(labels)}")
        with self.seeded_network(inputs, ctx) as (model, device):
            self.standardise_inputs(model, inputs)
            self._train(model, inputs, labels, ctx, device)
        return self

    def standardise_inputs(self, model: torch.nn.Module, inputs: Any) -> None:
        """The small CNN sees each image channel standardised with the training images'
        per-channel mean and std (``SmallCNN.standardise_inputs``; see the module docstring);
        the MLP and AlexNet (which applies the ImageNet normalisation itself) are left as they
        are. Draws nothing from any random stream."""
        if self.backbone != "cnn":
            return
        mean, std = channel_stats(inputs)
        model.standardise_inputs(mean, std)

    def _train(self, model: torch.nn.Module, inputs: Any, labels: np.ndarray, ctx: RunContext,
               device: torch.device) -> None:
        n = len(labels)
        x_all = self._inputs_on_device(inputs, device)
        train_labels = torch.from_numpy((labels > 0).astype(np.float32)).to(device)
        memory = torch.zeros(n, self.bits, device=device) if self.uses_memory else None
        optimizer = self.optimizer(model)
        rates = self.learning_rates(self.epochs)
        eval_idx = eval_points(n, ctx.seed) if self.eval_every else None
        bounds = batch_bounds(n, self.batch_size)
        self.losses_: list[float] = []
        log = StepLog(ctx, self.eval_every, self.epochs)
        for epoch in ctx.progress(range(self.epochs), total=self.epochs, desc=self.meta.name):
            for group in optimizer.param_groups:
                group["lr"] = float(rates[epoch])
            order = torch.from_numpy(ctx.rng.permutation(n))
            loss = self._epoch(model, optimizer, inputs, x_all, train_labels, memory,
                               [order[lo:hi] for lo, hi in bounds], epoch, device)
            self.losses_.append(loss)
            self.model_ = model  # encode() gives the current codes to ctx.on_epoch
            log.log(epoch, loss, float(rates[epoch]), model, self,
                    lambda: self._train_map(model, inputs, labels, eval_idx))

    def _epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: Any,
               x_all: torch.Tensor | None, train_labels: torch.Tensor, memory: torch.Tensor | None,
               batches: list[torch.Tensor], epoch: int, device: torch.device) -> float:
        """One pass of SGD over the mini-batches (index tensors); returns the mean loss per point."""
        model.train()
        total = torch.zeros((), device=device)
        for rows in batches:
            index = rows.to(device)
            x = x_all[index] if x_all is not None else to_batch(inputs, rows.numpy(), device)
            outputs = self.activation(model(x))
            if memory is not None:
                memory[index] = outputs.detach()
            loss = self.batch_loss(Batch(outputs=outputs, labels=train_labels[index], index=index,
                                         train_labels=train_labels, memory=memory, epoch=epoch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(rows)
        return float(total) / len(train_labels)

    def _inputs_on_device(self, inputs: Any, device: torch.device) -> torch.Tensor | None:
        """All training inputs as one tensor on the device when they are an array that fits."""
        if not isinstance(inputs, np.ndarray):
            return None
        if inputs.size * 4 > DEVICE_INPUTS_BYTES:  # as float32
            return None
        return to_batch(inputs, np.arange(len(inputs)), device)

    def _train_map(self, model: torch.nn.Module, inputs: Any, labels: np.ndarray,
                   eval_idx: np.ndarray) -> float:
        """MAP of the training points ``eval_idx`` as queries against the whole training set."""
        was_training = model.training
        model.eval()
        codes = self._forward_codes(model, inputs)
        model.train(was_training)
        from hashbench.evaluation import evaluate

        return float(evaluate(codes[eval_idx], codes, labels[eval_idx], labels).metrics["map"])


@dataclass(eq=False)
class CrossModalDeepHasher(DeepHasher):
    """What the cross-modal deep methods (DCMH, DDASH) share on top of :class:`DeepHasher`:
    two networks, the image side's backbone (``backbone``: "mlp" on feature vectors, "cnn" /
    "alexnet" on images) and a text network (:class:`~hashbench.backbones.TextMLP`, DCMH's
    ``d -> text_hidden -> bits``, input centred on the training mean when ``text_center``,
    weights and biases ``N(0, text_init_std^2)``, DCMH's 0.01, or torch's default with None),
    and ``encode(inputs, modality)`` dispatching to them. The image network is built by
    :meth:`DeepHasher.seeded_network` (kept as ``model_``), the text network by
    :meth:`text_network` inside that block, so both draw from the seeded torch state (kept as
    ``text_model_``)."""

    text_hidden: int = 8192
    text_center: bool = True
    text_init_std: float | None = 0.01

    positive_fields: ClassVar[tuple[str, ...]] = DeepHasher.positive_fields + ("text_hidden",)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The image side (feature vectors for the MLP, images for the CNN and AlexNet), then text."""
        return super().modalities + ("text",)

    @property
    def image_modality(self) -> str:
        return self.modalities[0]

    def text_network(self, text: np.ndarray, device: torch.device) -> torch.nn.Module:
        """DCMH's text network for the training text ``text`` (n, d); call it inside
        :meth:`seeded_network` so that its initialisation is seeded."""
        from hashbench.backbones import TextMLP

        text = np.asarray(text, np.float32).reshape(len(text), -1)
        center = text.mean(axis=0) if self.text_center else None
        return TextMLP(text.shape[1], self.bits, self.text_hidden, init_std=self.text_init_std,
                       center=center).to(device)

    def encode(self, inputs: Any, modality: str | None = None) -> np.ndarray:  # type: ignore[override]
        """Codes ``sign(net(x))`` of ``inputs`` in ``modality`` (the image side by default)."""
        self._check_fitted("model_")
        modality = modality or self.image_modality
        if modality == "text":
            self._check_fitted("text_model_")
            return network_codes(self.text_model_, inputs, self.bits, "mlp", self.device_)
        if modality != self.image_modality:
            raise ConfigError(f"{self.meta.name}: modality must be one of "
                              f"{', '.join(self.modalities)}, got {modality!r}")
        return self._forward_codes(self.model_, inputs)
