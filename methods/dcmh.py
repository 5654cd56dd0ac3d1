"""DCMH: deep cross-modal hashing (Jiang & Li, CVPR 2017), as the authors' MATLAB release runs it.

Symmetric: an image network ``F = f(x)`` and a text network ``G = g(y)`` (real outputs, no
output non-linearity) give the codes of every item, query or database: ``sign(f(x))`` for
the image side, ``sign(g(y))`` for the text side (value > 0 -> +1, else -1). I->T ranks the
text codes of the database against image query codes, T->I the reverse.

Objective over the n training pairs (rows of F, G, B are items)::

    J = - sum_ij (S_ij theta_ij - log(1 + e^theta_ij))         theta_ij = 1/2 F_i^T G_j
        + gamma (||F - B||^2 + ||G - B||^2) + eta (||F^T 1||^2 + ||G^T 1||^2)

with ``S_ij = 1`` when items i and j share a label, else 0, and ``B = sign(gamma (F + G))``.

Training follows ``process_DCMH.m``, ``update_net.m`` and ``DCMH_demo.m`` of
``jiangqy/DCMH-CVPR2017`` (read for facts; the code here is ours):

* buffers F and G (n x c) start at zeros; every epoch begins with ``B = sign(gamma (F + G))``
  where ``sign(0) = 0`` (the release's ``e_sign``: in the first epoch B is all zeros);
* then the text network, then the image network, each for ``ceil(n / batch_size)``
  iterations; every iteration draws a fresh random mini-batch of ``batch_size`` distinct
  training items (a ``randperm`` prefix: batches of one epoch may overlap, as there), runs
  the network on it and writes its outputs into the buffer (G or F) before the gradient;
* the gradient for a text batch ``b`` is ``1/2 F^T (sigmoid(theta_b) - S_b) + 2 gamma
  (G_b - B_b) + 2 eta G 1`` (with F the whole image buffer and ``G 1`` the sum of the
  buffer including the fresh batch): here it is the autograd gradient of the batch loss
  ``sum_{i, j in b} [log(1 + e^theta_ij) - S_ij theta_ij] + gamma ||G_b - B_b||^2 + eta ||G
  1||^2``; the image batch is the same with the roles of F and G swapped;
* the update is plain SGD: ``w <- w - lr (grad / (batch_size * n) + 5e-4 w)`` (no
  momentum; weight decay 5e-4), i.e. the batch loss is divided by ``batch_size * n``;
* ``gamma = eta = 1``, batch 128, 500 epochs, both rates ``logspace(-1.5, -3, 500)`` (the
  shape is kept: log-spaced over 1.5 decades over ``epochs``; the level is not, see below);
* text network: bag-of-words -> 8,192 ReLU units -> c, weights and biases ``N(0, 0.01^2)``
  (``net_structure_txt.m``), input centred on the mean (``normZeroMean``; here the training
  mean, so no query row is used): :class:`hashbench.backbones.TextMLP`, ``text_hidden``;
* image network: CNN-F with fc8 replaced by ``4096 -> c`` in the release; here the suite's
  backbones (``backbone``: "mlp" on feature vectors, the default for the registered
  ``features`` input, e.g. Wikipedia's SIFT histograms or cached fc7 features; "cnn" / "alexnet"
  on images, AlexNet being the torchvision stand-in for CNN-F).

Departures (each a hyper-parameter; the release's value is one setting away):

* ``standardize = True``: the inputs of both networks (feature vectors on the image side, the
  text vectors) are z-scored per dimension with the training statistics (kept in the networks).
  The release feeds raw CNN-F images (mean image subtracted) and centred bag-of-words; with the
  suite's small inputs the release's setting does not leave the zero saddle of the likelihood
  (F = G = 0): on Wikipedia (128-d SIFT histograms of norm 0.18, 10-d LDA text) both networks'
  outputs decayed to std < 0.003 and MAP stayed at chance (0.13-0.17 on a validation split,
  100-500 epochs, rates 0.03-3); z-scored, the outputs grow and MAP rises. With "cnn" /
  "alexnet" the images are not standardised (AlexNet normalises its input itself);
* the rate level: the release's schedule shape (log-spaced over 1.5 decades, plain SGD, batch
  128, the loss divided by ``batch_size * n``) with its own start ``10^-1.5``; a separate
  ``text_learning_rate`` (the release has ``lr_txt`` beside ``lr_img``) scales the text
  network's schedule. Defaults ``3 -> 3 10^-1.5`` (image) and ``10 -> 10^-0.5`` (text), chosen
  on a validation split of Wikipedia's training pairs (300 of the 2,173 as queries, the rest as
  database; never the test pairs): at the release's level the outputs stay at the saddle.
  Every step's rate is capped at ``rate_guard`` (0.95) times ``2 / lambda``, where ``lambda``
  bounds the largest Hessian eigenvalue of the step's batch loss in the network's output layer
  (:func:`output_layer_curvature`): plain SGD on a quadratic diverges above ``2 / lambda``.
  The release's fixed schedule is kept and the step is scaled only where the loss would blow
  up, which depends on what the fixed rates cannot know: the training-set size, the energy of
  the output layer's inputs (it grows with the input dimension: the text network's 8,192 ReLU
  units over d standardised inputs with weights ``N(0, 0.01^2)`` have ``||mean h||^2`` of about
  ``0.14 d``) and the size of the other modality's outputs. History of the bound:

  - revision 1 capped at ``n / (2 eta b)``, the bound of the balance term in the output bias
    alone: on digits-2view's 500 training pairs (32-d views) the registered rates diverged
    (loss nan in epoch 2-3) in 4 of 6 trials of the 16/32/64-bit x 2-seed grid;
  - revision 2 bounded the balance term in the output layer's weights and bias
    (``n / (eta b (1 + ||mean h||^2))``, the balance term of :func:`output_layer_curvature`
    alone); it finished there (validation MAP 0.75 / 0.79 I->T / T->I
    at 32 bits on a split of digits-2view's database) but on the MIRFLICKR-scale synthetic set
    of ``benchmarks/crossmodal_time_to_accuracy.py`` (10,000 sampled pairs, 4,096-d image
    features, 1,386-d tags, 32 bits) the image network diverged in its second or third epoch:
    the likelihood term's curvature, about ``lambda_max(G^T G) / 16`` per unit of input energy,
    grows with n and with the outputs, and reached 150 times the balance term's;
  - revision 3 bounds the whole batch loss (likelihood, quantisation and balance; tested against
    the exact Hessian). On that synthetic set the registered rates now stay finite: over 15
    epochs (at a guard of 0.5) the likelihood term falls from 0.693 to 0.433 per pair and MAP
    reaches 0.640 / 0.670 (I->T / T->I; the logged loss still rises, 0.70 -> 1.76, as the
    balance term grows with the outputs: 0.003 -> 1.32). Revision 2 with the same data and
    seed: the logged loss 0.69 -> 1.85 in the third epoch alone (the curvature bound there at
    151 times the balance term's), and the benchmark's run of it ended in its second epoch
    with an infinite loss.
    The bound covers the output layer only; the hidden layers are left to the schedule.
    ``rate_guard`` was chosen on a validation split of digits-2view's database (200 of its
    items as queries, 50 per class of the rest for training; never the test queries), 64 bits,
    seed 0, I->T / T->I MAP: 0.5 gives 0.567 / 0.638, 0.75 0.662 / 0.709, 0.95 0.835 / 0.866,
    revision 2's rule 0.787 / 0.805: DCMH learns fastest near the output layer's stability
    limit, and the bound is close to the exact curvature there (within 25% over 500 epochs,
    measured by power iteration). On the synthetic set 0.95 stays finite too.
* the logged ``loss`` is the mean of the batch losses of the epoch (the release prints the
  full objective, which needs the n x n theta: never built here); batches come from ``ctx.rng``.

DCMH-D (the whole database as training set, the DDASH paper's time comparison) is
``--train-mode full``: the report names it automatically.

Cost: every batch builds only an ``n x batch_size`` block (theta and S); never n x n.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from hashbench.api import MethodMeta, RunContext, TrialData
from hashbench.backbones import DEVICE_INPUTS_BYTES, StepLog, eval_points, to_batch
from hashbench.deep import CrossModalDeepHasher, DeepHasher
from hashbench.errors import DataError
from hashbench.labels import share_label
from hashbench.registry import register


def e_sign(x: torch.Tensor) -> torch.Tensor:
    """The release's ``e_sign``: +1 where x > 0, -1 where x < 0, 0 where x == 0."""
    return torch.sign(x)


def pair_batch_loss(out: torch.Tensor, rows: torch.Tensor, other: torch.Tensor, own: torch.Tensor,
                    B: torch.Tensor, labels: torch.Tensor, gamma: float, eta: float) -> torch.Tensor:
    """DCMH's loss of one batch of one network, unnormalised (its autograd gradient is the
    release's ``dJdGb`` / ``dJdFb``).

    ``out`` (b, c): the network's outputs for training rows ``rows``; ``other`` (n, c): the
    other modality's buffer (F for a text batch); ``own`` (n, c): this modality's buffer, whose
    rows ``rows`` are replaced by ``out``; ``B`` (n, c); ``labels`` (n, L) 0/1 float.
    """
    theta = 0.5 * other @ out.T                                       # (n, b): theta_ij, j in batch
    similar = share_label(labels, labels[rows]).to(theta.dtype)       # (n, b)
    logloss = (F.softplus(theta) - similar * theta).sum()             # log(1 + e^theta) - S theta
    quant = gamma * ((out - B[rows]) ** 2).sum()
    column_sum = own.sum(0) - own[rows].sum(0) + out.sum(0)            # own^T 1 with the fresh batch
    balance = eta * (column_sum ** 2).sum()
    return logloss + quant + balance


@contextmanager
def record_last_input(net: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, the input of ``net``'s last linear layer (its output layer in every
    backbone here) in the forward pass is kept (detached) as the list's only item."""
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


def top_eigenvalue(other: torch.Tensor) -> float:
    """``lambda_max(other^T other)``: the square of the buffer's largest singular value."""
    other = other.detach().double()
    return float(torch.linalg.eigvalsh(other.T @ other)[-1])


def output_layer_curvature(last_input: torch.Tensor, out: torch.Tensor, other: torch.Tensor,
                           n: int, gamma: float, eta: float, other_top: float | None = None,
                           other_norms: torch.Tensor | None = None) -> float:
    """An upper bound of the largest eigenvalue of the Hessian of one batch's loss (divided by
    ``b n``, as :meth:`DCMH._train` steps on it) in the output layer ``out_j = W h_j + w0``.

    With ``a_j = [h_j; 1]`` (``last_input``, (b, k), and a one), ``A`` their (b, k+1) matrix and
    ``s = sum_j a_j``, the three terms of :func:`pair_batch_loss` have Hessians (per the stacked
    rows of ``(W, w0)``, Kronecker form)::

        likelihood  1/(b n) sum_j a_j a_j^T (x) M_j,   M_j = 1/4 sum_i sigmoid'(theta_ij) o_i o_i^T
        quantisation 2 gamma/(b n) A^T A (x) I
        balance     2 eta/(b n) s s^T (x) I

    (``o_i`` the rows of the other modality's buffer ``other``; ``theta_ij = 1/2 o_i^T out_j``;
    ``sigmoid' <= 1/4``). Each is positive semi-definite, so the largest eigenvalue of the sum is
    at most the sum of theirs: ``lambda_A mu / (b n) + 2 gamma lambda_A / (b n) + 2 eta ||s||^2 /
    (b n)``, where ``lambda_A = lambda_max(A^T A)`` and ``mu >= lambda_max(M_j)`` for every j: the
    smaller of ``lambda_max(other^T other) / 16`` (``sigmoid' <= 1/4``) and ``max_j 1/4 sum_i
    sigmoid'(theta_ij) ||o_i||^2`` (the trace, small once the pairs' theta saturate). The bound
    is attained when ``W = 0, w0 = 0`` and a single term is present (tests). It is local: it
    holds at the current outputs, as the step's rate is chosen from it.

    ``other`` changes only between the two networks' turns, so the caller may pass its
    ``other_top`` (:func:`top_eigenvalue`) and ``other_norms`` (the rows' squared norms), computed
    once per turn. ``A A^T = h h^T + 1`` (same spectrum as ``A^T A``) is formed in the inputs'
    precision; its (b, b) eigenvalues in double.
    """
    h = last_input.detach().flatten(1)
    size = h.shape[0]
    gram = (h @ h.T).double() + 1.0                                   # (b, b) = A A^T
    lam_a = float(torch.linalg.eigvalsh(gram)[-1])
    balance = 2.0 * eta * float(gram.sum()) / (size * n)              # ||s||^2 = 1^T (A A^T) 1
    quant = 2.0 * gamma * lam_a / (size * n)
    other = other.detach()
    theta = 0.5 * other @ out.detach().T                               # (n, b)
    slope = torch.sigmoid(theta) * torch.sigmoid(-theta)              # sigmoid'(theta)
    norms = (other ** 2).sum(1) if other_norms is None else other_norms
    trace = 0.25 * float((norms @ slope).max())
    top = top_eigenvalue(other) if other_top is None else other_top
    likelihood = lam_a * min(top / 16.0, trace) / (size * n)
    return likelihood + quant + balance


class Standardized(torch.nn.Module):
    """``net((x - mean) / std)`` with the per-dimension mean and standard deviation of the
    training inputs (kept as buffers, so encoding applies the same map)."""

    def __init__(self, net: torch.nn.Module, inputs: np.ndarray) -> None:
        super().__init__()
        x = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
        std = x.std(axis=0)
        self.net = net
        self.register_buffer("mean", torch.from_numpy(x.mean(axis=0).astype(np.float32)))
        self.register_buffer("scale", torch.from_numpy(np.where(std > 1e-8, std, 1.0).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.flatten(1) - self.mean) / self.scale)


@register
@dataclass(eq=False)
class DCMH(CrossModalDeepHasher):
    meta = MethodMeta(
        name="dcmh",
        title="DCMH",
        citation="Jiang & Li, Deep cross-modal hashing, CVPR 2017 (the authors' MATLAB release, "
                 "jiangqy/DCMH-CVPR2017)",
        family="deep",
        modalities=("features", "text"),
        requires="gpu-preferred",
        supervised=True,
        # 2: the per-step rate bound of the balance term with the output layer's weights;
        # 3: the bound covers the whole batch loss, likelihood included (output_layer_curvature)
        revision=3,
    )
    conformance_params = {"epochs": 3, "text_hidden": 64, "hidden": 32}

    bits: int = 32
    gamma: float = 1.0
    eta: float = 1.0
    epochs: int = 500
    batch_size: int = 128
    learning_rate: float = 3.0
    learning_rate_end: float = float(3.0 * 10 ** -1.5)
    momentum: float = 0.0
    text_learning_rate: float | None = 10.0
    standardize: bool = True
    rate_guard: float = 0.95

    positive_fields: ClassVar[tuple[str, ...]] = CrossModalDeepHasher.positive_fields + ("epochs",)
    non_negative_fields: ClassVar[tuple[str, ...]] = (DeepHasher.non_negative_fields
                                                      + ("gamma", "eta", "rate_guard"))

    def fit(self, data: TrialData, ctx: RunContext) -> DCMH:
        self.validate()
        train = data.train
        images = train[self.image_modality]
        text = np.asarray(train["text"], np.float32).reshape(len(train), -1)
        labels = self.checked_labels("dcmh", images, train.labels)
        if len(labels) < 2:
            raise DataError(f"dcmh: needs at least 2 training pairs, got {len(labels)}")
        with self.seeded_network(images, ctx) as (model, device):
            text_net = self.text_network(text, device)
            if self.standardize:
                text_net.center.zero_()  # the standardisation centres the text already
                text_net = Standardized(text_net, text).to(device)
                if isinstance(images, np.ndarray) and self.backbone == "mlp":
                    model = Standardized(model, images.reshape(len(images), -1)).to(device)
            self.text_model_ = text_net
            self._train(model, text_net, images, text, labels, ctx, device)
        model.eval()
        text_net.eval()
        self.model_ = model
        return self

    def _train(self, model: torch.nn.Module, text_net: torch.nn.Module, images: Any,
               text: np.ndarray, labels: np.ndarray, ctx: RunContext, device: torch.device) -> None:
        n, c = len(labels), self.bits
        x_all = None
        if isinstance(images, np.ndarray) and images.size * 4 <= DEVICE_INPUTS_BYTES:
            x_all = to_batch(images, np.arange(n), device)
        y_all = torch.from_numpy(text).to(device)
        lab = torch.from_numpy((labels > 0).astype(np.float32)).to(device)
        Fbuf = torch.zeros(n, c, device=device)
        Gbuf = torch.zeros(n, c, device=device)
        opt_img, opt_txt = self.optimizer(model), self.optimizer(text_net)
        size = min(self.batch_size, n)
        rates = self.learning_rates(self.epochs)
        text_rates = rates * (self.text_learning_rate / self.learning_rate
                              if self.text_learning_rate is not None else 1.0)
        steps = -(-n // self.batch_size)  # ceil(n / batch_size) iterations per network and epoch
        eval_idx = eval_points(n, ctx.seed) if self.eval_every else None
        self.losses_: list[float] = []
        log = StepLog(ctx, self.eval_every, self.epochs)
        model.train()
        text_net.train()
        for epoch in ctx.progress(range(self.epochs), total=self.epochs, desc="dcmh"):
            B = e_sign(self.gamma * (Fbuf + Gbuf))
            total = 0.0
            for net, opt, own, other, inputs, scheduled in (
                    (text_net, opt_txt, Gbuf, Fbuf, None, float(text_rates[epoch])),
                    (model, opt_img, Fbuf, Gbuf, images, float(rates[epoch]))):
                if self.rate_guard > 0:  # the other buffer is fixed during this network's turn
                    other_top, other_norms = top_eigenvalue(other), (other ** 2).sum(1)
                for _ in range(steps):
                    rows_np = ctx.rng.permutation(n)[:size]
                    rows = torch.from_numpy(rows_np).to(device)
                    if inputs is None:
                        x = y_all[rows]
                    else:
                        x = x_all[rows] if x_all is not None else to_batch(inputs, rows_np, device)
                    with record_last_input(net) as last_input:
                        out = net(x)
                    loss = pair_batch_loss(out, rows, other, own, B, lab, self.gamma, self.eta)
                    loss = loss / (size * n)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    rate = scheduled
                    if self.rate_guard > 0:  # the output layer's curvature bound, every step
                        curvature = output_layer_curvature(last_input[0], out, other, n, self.gamma,
                                                           self.eta, other_top, other_norms)
                        rate = min(rate, self.rate_guard * 2.0 / curvature)
                    for group in opt.param_groups:
                        group["lr"] = rate
                    opt.step()
                    own[rows] = out.detach()
                    total += float(loss.detach())
            self.losses_.append(total / (2 * steps))
            self.model_ = model  # encode() gives the current codes to ctx.on_epoch
            log.log(epoch, self.losses_[-1], float(rates[epoch]), model, self,
                    lambda: self._train_map(images, text, labels, eval_idx))

    def _train_map(self, images: Any, text: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> float:
        """I->T MAP of up to 1,000 training images against the text codes of the training set."""
        from hashbench.evaluation import evaluate

        rows = images[idx] if isinstance(images, np.ndarray) else [images[int(i)] for i in idx]
        query = self.encode(rows, self.image_modality)
        database = self.encode(text, "text")
        return float(evaluate(query, database, labels[idx], labels).metrics["map"])
