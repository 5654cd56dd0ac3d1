"""ADSH: asymmetric deep supervised hashing (Jiang & Li, AAAI 2018).

A network ``F(x; Theta)`` gives the query codes ``u = sign(F(x))``; the database codes V
are learned directly (``database_codes()``), never by applying the network to the
database. Training alternates, for ``outer_iters`` (T_out) outer iterations:

1. draw a fresh sample Omega of ``m = min(num_samples, #query pool)`` query points;
   S is the ``m x n`` block of similarities between Omega and the database;
2. ``inner_epochs`` (T_in) times:
   a. one epoch of mini-batch SGD over Omega on the loss (eq. 5, or eq. 3)
      ``J = sum_{i in Omega} sum_j (u_i^T v_j - c S_ij)^2 + gamma sum_{i in Omega} ||v_i - u_i||^2``
      with ``u_i = tanh(F(x_i))``; autograd gives exactly the gradient of eq. (6);
   b. the discrete V-step: one sweep over the bits k = 1..c of eq. (10)
      ``V[:, k] = -sign(2 V_hat_k U_hat_k^T U[:, k] + Q[:, k])``,
      ``Q = -2c S^T U - 2 gamma U_bar`` (U_bar: U on the rows of Omega, 0 elsewhere).

Two training settings (paper, "Model Formulation"):

* eq. (5): the training set is the database (``data.train_is_database``, the protocol's
  ``full`` mode): Omega is sampled from the database itself, and the gamma term ties
  ``v_i`` to ``u_i`` for ``i in Omega``.
* eq. (3): a separate labelled query (training) set is given, with the database in
  ``data.database`` (the protocol's ``sampled`` mode): Omega
  is sampled from the training set, V is learned for the whole database, and there is
  no gamma term (``U_bar = 0``).

Facts from the authors' code that the paper leaves out (``../shared/METHODS.md``):

* similarity targets +1 for pairs that share a label and ``-r`` otherwise, with
  ``r = #similar / #dissimilar`` over the sampled ``m x n`` block (recomputed for every
  Omega): the target is rescaled, the squared error is not re-weighted;
* V starts at zeros; the V-step runs after every network epoch;
* ``U`` in the V-step holds the outputs ``tanh(F(x_i))`` recorded during the epoch's
  forward passes (each point of Omega is seen once per epoch), as in the authors' code;
* learning rate: plain SGD without momentum, the rate log-spaced from ``learning_rate`` to
  ``learning_rate_end`` over the ``T_out * T_in`` epochs (MatConvNet: ``logspace(-4, -6)``
  with CNN-F).

Loss scale and learning rate: the mini-batch loss is ``J`` restricted to the batch and
divided by ``batch * n * c``. The 1/n makes the step size independent of the database size;
the 1/c makes it independent of the code length (the gradient of eq. (6) grows like c: with
only 1/n, a rate that trained 12-bit codes diverged at 48 bits on digits). The schedule keeps
the authors' shape (plain SGD, two decades of log-spaced decay over the ``T_out * T_in``
epochs); its level is ours: ``learning_rate = 0.5 -> learning_rate_end = 5e-3`` for the small
MLP/CNN backbones, calibrated on digits (0.5 and 1.0 both reach MAP >= 0.99 at 12-48 bits;
0.2 falls to 0.986 at 12 bits). For the pretrained AlexNet backbone, tune from a lower start
(the authors used 1e-4 -> 1e-6 with CNN-F and their own loss scale).

Speed (never an ``n x n`` matrix, nor even the ``m x n`` block): points with identical
label vectors have identical rows of S, so the rows and columns of S are grouped by unique
label vector. With P the group-level "shares a label" matrix (``G_q x G``, G_q <= m),
``S^T U``, ``S V`` and the row norms of S come exactly (up to floating-point summation
order) from segment sums: O((m + n) c + G_q G c) instead of O(m n c). The network loss uses
the expansion ``sum_j (u^T v_j - c S_ij)^2 = u^T (V^T V) u - 2c u^T (S V)_i +
c^2 sum_j S_ij^2``, whose autograd gradient is eq. (6), at O(c^2) per point instead of
O(n c). The V-step costs O(n c^2) per sweep, vectorised over the database on the
network's device. So one outer iteration is O(m) network work plus O(n c^2): linear in n.

Network: ``backbone`` in ``hashbench.backbones`` ("mlp" for feature vectors, the default
for the registered ``features`` input; "cnn" for small images; "alexnet", the torchvision
stand-in for CNN-F, for images, ImageNet weights by default). The runner hands the method
what its backbone takes (``modalities``): with "mlp", feature vectors (the 64 pixels on
digits; on image datasets the cached AlexNet fc7 features of ``hashbench.features``); with
"cnn" or "alexnet", the images themselves, trained end to end as in the paper
(``--param adsh.backbone=alexnet``; numpy ``(N, C, H, W)`` / ``(N, H, W, C)`` arrays or an
indexable collection of images).

Logged per outer iteration: ``loss`` (the objective (5)/(3) after the V-step, divided by
``m * n``), ``elapsed_seconds`` (training time so far, evaluation excluded),
``learning_rate``, and with ``eval_every = k > 0`` every k iterations (and at the last)
``train_map``: the MAP of up to 1,000 fixed training points used as queries (codes
``sign(F(x))``) against the current V. It costs time and is off by default; the protocol's
queries are not visible inside ``fit``. A caller that has them sets ``ctx.on_epoch``
(``hashbench.api.RunContext``): it is called after every outer iteration with the method,
whose ``encode`` and ``database_codes`` then give the current query codes and V, and its
time is excluded from ``elapsed_seconds``.

Threads: on CPU the small backbones train with one torch thread (``hashbench.backbones``
explains why and how to override it).

Fashion-MNIST (real images; ``results/fashion-mnist/README.md``). On a validation split carved
from the ``fashion-mnist`` protocol's database (never its queries): 500 validation queries (50
per class) and a 10,000-image validation database drawn from it, 5,000 training images (500 per
class) sampled from that database, pixels-pca features, MLP backbone, seed 0; reference MAP
there: ITQ 0.440 / 0.495 at 12 / 48 bits, SDH 0.724 at 12 bits: ADSH learns the 10,000-image
validation database (eq. 5) with the defaults except ``outer_iters = 20``: 0.878 at 12 bits (on
HOG features 0.895 at 12 and 0.919 at 48 bits): no change needed; the Fashion-MNIST runs use
the defaults (50 outer iterations, as the paper). End to end on the 28x28 images with the small
CNN (``backbone=cnn``; 10 outer iterations, m = 1,000 to fit the CPU): 0.828 at 12 bits in 227
s of a shared CPU.

CIFAR-10 JPEG copy (``results/cifar10-jpeg/README.md``; protocol ``imagefolder``). Validation
split carved from the protocol's 59,000-image database the same way (500 queries, a 10,000-image
validation database, 5,000 sampled training images; seed 0), small CNN on the 32x32 colour
images, the default rates, ``outer_iters = 8, num_samples = 1000`` to fit a loaded 2-core CPU:
0.314 at 12 bits, 0.404 at 48 bits (ADSH full on the 10,000 validation images). On the test
split with the same settings 48 bits is under-trained: seed 0 did not learn (objective flat
over the 8 outer iterations, MAP 0.204 against 0.422 at 12 bits), seed 1 reached 0.352 (0.417
at 12 bits); the paper's 50 outer iterations are the default.

Small CNN on CIFAR-10: start at ``learning_rate = 0.1`` (``-> 1e-3``), not 0.5 (issue 15).
With 0.5 the first epochs kill the CNN's hidden layer at 48 bits on the 59,000-image database:
the objective (5) stayed at its starting value (255.4 -> 256.0 over 50 outer iterations for
seed 0, 255.4 -> 255.8 over 20 for seed 1: ``u^T v`` = 0, one code for everything, MAP 0.2025
= the one-code level). Why 48 and not 12 bits: the loss is divided by ``c``, which keeps each
output's gradient O(1), but the hidden layer receives the sum over the ``c`` outputs, so its
steps grow with the code length. On the validation split (10 outer iterations, m = 1,000,
seed 0 unless said; the share of hidden units dead on every probe image after the first
outer iteration in brackets): 48 bits at 0.1: 0.388 and 0.399 (seeds 0, 1; 16% / 29% dead);
at 0.5 after one outer iteration 36% / 60% dead, and seed 1's outputs had collapsed to a spread
of 0.002 before recovering; 12 bits: 0.5 gives 0.422, 0.1 gives 0.359. 0.1 is the CIFAR-10 CNN
setting at every code length (one schedule for all lengths, as the paper): on the test
database its 48-bit objective falls from the first outer iteration (252 -> 185 by the 18th).
The registered default stays 0.5, calibrated for the MLP on features and for digits; pass
``--param adsh.learning_rate=0.1 --param adsh.learning_rate_end=0.001`` with
``backbone=cnn`` on colour images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from hashbench.api import AsymmetricHasher, IndexedView, MethodMeta, RunContext, TrialData
from hashbench.backbones import DEVICE_INPUTS_BYTES, StepLog, eval_points, to_batch
from hashbench.deep import DeepHasher
from hashbench.errors import DataError
from hashbench.labels import group_labels, share_label
from hashbench.registry import register

_CHUNK_ENTRIES = 1 << 22  # group-similarity entries materialised at once (32 MB as float64)
_BIT_BLOCK = 16  # V-step: bits per block (one matrix product per block, see update_codes)


# ---------------------------------------------------------------- similarity by label groups


def _column_chunks(rows: int, cols: int) -> list[slice]:
    """Column ranges of a ``rows x cols`` matrix holding at most ``_CHUNK_ENTRIES`` entries each."""
    step = max(1, _CHUNK_ENTRIES // max(1, rows))
    return [slice(s, min(s + step, cols)) for s in range(0, cols, step)]


class SimilarityBlock:
    """The ``m x n`` similarity block S between query rows and database rows, by groups.

    ``S_ij = +1`` when query i and database item j share a label, else ``-r`` with
    ``r = #similar / #dissimilar`` over the block (r = 1 when nothing is dissimilar).
    Rows and columns are grouped by label vector: ``P[g, h]`` tells whether query group g
    and database group h share a label; nothing of size ``m x n`` is ever built
    (except by :meth:`dense`, for tests and the literal reference).
    """

    def __init__(self, group_labels_: np.ndarray, query_groups: np.ndarray,
                 db_groups: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        present, q_inv = np.unique(query_groups, return_inverse=True)
        self.m, self.n = len(query_groups), len(db_groups)
        self.n_groups = len(group_labels_)
        labels = group_labels_.astype(np.float32)
        query_labels = labels[present]
        share = np.empty((len(present), self.n_groups), dtype=bool)  # (Gq, G), in chunks
        for cols in _column_chunks(len(present), self.n_groups):
            share[:, cols] = share_label(query_labels, labels[cols])
        q_counts = np.bincount(q_inv, minlength=len(present)).astype(np.float64)
        d_counts = np.bincount(db_groups, minlength=self.n_groups).astype(np.float64)
        similar_per_group = share @ d_counts  # exact integers in float64
        self.n_similar = int(round(float(q_counts @ similar_per_group)))
        self.n_dissimilar = self.m * self.n - self.n_similar
        self.r = self.n_similar / self.n_dissimilar if self.n_dissimilar else 1.0
        self.P = torch.from_numpy(share).to(self.device)
        self.q_inv = torch.from_numpy(q_inv.astype(np.int64)).to(self.device)
        self.db_ids = torch.from_numpy(np.asarray(db_groups, np.int64)).to(self.device)
        # sum_j S_ij^2 for each query row: #similar_i + r^2 #dissimilar_i
        sq = similar_per_group + self.r ** 2 * (self.n - similar_per_group)
        self.row_sq_norms = torch.from_numpy(sq).to(self.device)[self.q_inv]  # (m,)

    def _values(self, cols: slice) -> torch.Tensor:
        """Group-level S for database groups ``cols``: +1 where similar, -r elsewhere."""
        block = self.P[:, cols]
        one = torch.ones((), dtype=torch.float64, device=self.device)
        return torch.where(block, one, -self.r * one)

    def _chunks(self) -> list[slice]:
        return _column_chunks(self.P.shape[0], self.n_groups)

    def t_matmul(self, U: torch.Tensor) -> torch.Tensor:
        """``S^T U`` (n x c) for U (m x c), float64, stored column-major (a view of ``(c, n)``)."""
        U = U.to(torch.float64)
        by_group = torch.zeros(self.P.shape[0], U.shape[1], dtype=torch.float64, device=self.device)
        by_group.index_add_(0, self.q_inv, U)  # sum of U over each query group
        out = torch.empty(U.shape[1], self.n_groups, dtype=torch.float64, device=self.device)
        for cols in self._chunks():
            out[:, cols] = by_group.T @ self._values(cols)
        return torch.gather(out, 1, self.db_ids.expand(U.shape[1], -1)).T

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """``S V`` (m x c) for V (n x c), float64 (fastest when V is column-major)."""
        Vt = V.to(torch.float64).T
        by_group = torch.zeros(V.shape[1], self.n_groups, dtype=torch.float64, device=self.device)
        by_group.index_add_(1, self.db_ids, Vt)  # sum of V over each database group, (c, G)
        out = torch.zeros(self.P.shape[0], V.shape[1], dtype=torch.float64, device=self.device)
        for cols in self._chunks():
            out += self._values(cols) @ by_group[:, cols].T
        return out[self.q_inv]

    def dense(self) -> torch.Tensor:
        """The explicit ``m x n`` float64 block (tests and the literal reference only)."""
        full = self.P[self.q_inv][:, self.db_ids]
        one = torch.ones((), dtype=torch.float64, device=self.device)
        return torch.where(full, one, -self.r * one)


# ---------------------------------------------------------------- the V-step (eq. 10)


def _binary_neg_sign(x: torch.Tensor) -> torch.Tensor:
    """``-sign(x)`` in {-1, +1}: +1 where x < 0, else -1 (the project's sign(0) = -1 rule)."""
    return torch.lt(x, 0).to(torch.float64).mul_(2.0).sub_(1.0)


def update_codes(V: torch.Tensor, U: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """One sweep of eq. (10) over the bits, in place on V (n x c, float64); returns V.

    With ``W = U^T U`` and its diagonal set to 0, ``V_hat_k U_hat_k^T U_k = (V W)[:, k]``
    (the deleted column meets the zero), evaluated with the columns before k already
    updated. The bits are taken in blocks of ``_BIT_BLOCK``: at the start of a block one
    matrix product gives ``(V W)[:, block]`` for the current V; inside the block, the change
    of the block's earlier columns is added back (``P_k + sum_{j<k} W[j, k] delta_j``).
    Total cost per sweep: about one ``n x c x c`` product plus O(n c _BIT_BLOCK) vector
    work, instead of c separate passes over V. Works on ``(c, n)`` layouts so that every
    column of V and Q is contiguous. Same arithmetic as eq. (10) up to floating-point
    summation order.
    """
    U = U.to(torch.float64)
    W = U.T @ U
    W.fill_diagonal_(0.0)
    Vt, Qt = V.T.contiguous(), Q.T.contiguous()  # no copy when already column-major
    c, n = Vt.shape
    delta = torch.empty(min(_BIT_BLOCK, c), n, dtype=torch.float64, device=V.device)
    for b0 in range(0, c, _BIT_BLOCK):
        b1 = min(b0 + _BIT_BLOCK, c)
        P = W[b0:b1] @ Vt                        # (V W)[:, b0:b1]^T before this block's updates
        for j, k in enumerate(range(b0, b1)):
            p = torch.addmv(P[j], delta[:j].T, W[b0:k, k]) if j else P[j]
            new = _binary_neg_sign(torch.add(Qt[k], p, alpha=2.0))  # -sign(2 V_hat U_hat^T U_k + Q_k)
            torch.sub(new, Vt[k], out=delta[j])
            Vt[k] = new
    if Vt.data_ptr() != V.data_ptr():
        V.copy_(Vt.T)
    return V


def update_codes_literal(V: torch.Tensor, U: torch.Tensor, S: torch.Tensor, U_bar: torch.Tensor,
                         gamma: float) -> torch.Tensor:
    """Eq. (10) as printed, with an explicit S (m x n): the reference for tests/benchmarks.

    ``Q = -2c S^T U - 2 gamma U_bar``; for k = 1..c, ``V_hat_k``, ``U_hat_k`` are V and U
    without column k and ``V[:, k] = -sign(2 V_hat_k U_hat_k^T U[:, k] + Q[:, k])``.
    Returns a new V.
    """
    V = V.to(torch.float64).clone()
    U = U.to(torch.float64)
    c = V.shape[1]
    Q = -2.0 * c * (S.T @ U) - 2.0 * gamma * U_bar.to(torch.float64)
    for k in range(c):
        keep = [j for j in range(c) if j != k]
        V_hat, U_hat = V[:, keep], U[:, keep]
        V[:, k] = _binary_neg_sign(2.0 * (V_hat @ (U_hat.T @ U[:, k])) + Q[:, k])
    return V


def code_matrix(block: SimilarityBlock, U: torch.Tensor, omega_db: torch.Tensor | None,
                gamma: float) -> torch.Tensor:
    """``Q = -2c S^T U - 2 gamma U_bar`` (n x c) without S; U_bar is 0 without ``omega_db``."""
    c = U.shape[1]
    Qt = block.t_matmul(U).T.mul_(-2.0 * c)  # (c, n), contiguous
    if omega_db is not None and gamma:
        Qt.index_add_(1, omega_db, U.to(torch.float64).T, alpha=-2.0 * gamma)
    return Qt.T


def objective(V: torch.Tensor, U: torch.Tensor, S: torch.Tensor, omega_db: torch.Tensor | None,
              gamma: float) -> float:
    """Eq. (7) with an explicit S: ``||U V^T - cS||^2 + gamma ||V_Omega - U||^2``.

    Without ``omega_db`` (eq. 3, separate queries) the gamma term is absent.
    """
    V, U = V.to(torch.float64), U.to(torch.float64)
    value = ((U @ V.T - V.shape[1] * S) ** 2).sum()
    if omega_db is not None:
        value = value + gamma * ((V[omega_db] - U) ** 2).sum()
    return float(value)


# ---------------------------------------------------------------- the method


@dataclass
class _Problem:
    """What one fit works on: the query pool, the database, and how they relate."""

    query_inputs: Any
    n_query: int
    n_database: int
    group_labels: np.ndarray
    query_groups: np.ndarray
    db_groups: np.ndarray
    query_is_database: bool  # eq. (5): Omega indexes the database itself
    db_labels: np.ndarray


@register
@dataclass(eq=False)
class ADSH(DeepHasher, AsymmetricHasher):
    meta = MethodMeta(
        name="adsh",
        title="ADSH",
        citation="Jiang & Li, Asymmetric deep supervised hashing, AAAI 2018",
        family="deep",
        modalities=("features",),
        requires="gpu-preferred",
        supervised=True,
        asymmetric=True,
        full_mode_title="ADSH",  # learning the database codes is the method, not a "-D" variant
    )
    conformance_params = {"outer_iters": 3, "inner_epochs": 1, "num_samples": 100}

    bits: int = 32
    gamma: float = 200.0
    outer_iters: int = 50
    inner_epochs: int = 3
    num_samples: int = 2000
    batch_size: int = 64
    learning_rate: float = 0.5
    learning_rate_end: float = 5e-3
    momentum: float = 0.0

    positive_fields: ClassVar[tuple[str, ...]] = DeepHasher.positive_fields + (
        "outer_iters", "inner_epochs", "num_samples", "learning_rate_end")
    non_negative_fields: ClassVar[tuple[str, ...]] = DeepHasher.non_negative_fields + ("gamma",)

    def _problem(self, data: TrialData) -> _Problem:
        """Eq. (5) when the training set is the database (Omega sampled from it, gamma term);
        eq. (3) otherwise: Omega from the training set, V for every database item."""
        inputs = data.train.inputs
        labels = self.checked_labels("adsh", inputs, data.train.labels)
        separate = not data.train_is_database
        db_labels = np.asarray(data.database.labels) if separate else labels
        if separate and db_labels.shape[1] != labels.shape[1]:
            raise DataError(f"adsh: database labels have {db_labels.shape[1]} classes, "
                            f"training labels {labels.shape[1]}")
        groups, (q_ids, d_ids) = group_labels(labels, db_labels)
        return _Problem(query_inputs=inputs, n_query=len(labels), n_database=len(db_labels),
                        group_labels=groups, query_groups=q_ids, db_groups=d_ids,
                        query_is_database=not separate, db_labels=db_labels)

    # ------------------------------------------------------------ training

    def fit(self, data: TrialData, ctx: RunContext) -> ADSH:
        self.validate()
        problem = self._problem(data)
        self.learned_indices_ = np.asarray(data.database.indices)  # V's rows (also for on_epoch)
        with self.seeded_network(problem.query_inputs, ctx) as (model, device):
            V = self._train(model, problem, ctx, device)
        self.codes_ = V.cpu().numpy().astype(np.int8)
        return self

    def _train(self, model: torch.nn.Module, problem: _Problem, ctx: RunContext,
               device: torch.device) -> torch.Tensor:
        c, n = self.bits, problem.n_database
        m = min(self.num_samples, problem.n_query)
        gamma = float(self.gamma) if problem.query_is_database else 0.0
        V = torch.zeros(c, n, dtype=torch.float64, device=device).T  # column-major: see update_codes
        optimizer = self.optimizer(model)
        rates = self.learning_rates(self.outer_iters * self.inner_epochs)
        eval_idx = eval_points(problem.n_query, ctx.seed) if self.eval_every else None
        self.losses_: list[float] = []
        log = StepLog(ctx, self.eval_every, self.outer_iters)
        epoch = 0
        for it in ctx.progress(range(self.outer_iters), total=self.outer_iters, desc="adsh"):
            omega = np.sort(ctx.rng.choice(problem.n_query, size=m, replace=False))
            block = SimilarityBlock(problem.group_labels, problem.query_groups[omega],
                                    problem.db_groups, device)
            omega_db = torch.from_numpy(omega).to(device) if problem.query_is_database else None
            x_omega = to_batch(problem.query_inputs, omega)  # on the host; batches move to the device
            if x_omega.numel() * x_omega.element_size() <= DEVICE_INPUTS_BYTES:
                x_omega = x_omega.to(device)
            U = torch.zeros(m, c, dtype=torch.float64, device=device)
            model.train()
            for _ in range(self.inner_epochs):
                for group in optimizer.param_groups:
                    group["lr"] = float(rates[epoch])
                self._network_epoch(model, optimizer, x_omega, U, V, block, omega_db, gamma, ctx)
                Q = code_matrix(block, U, omega_db, gamma)
                update_codes(V, U, Q)
                epoch += 1
            loss = self._objective(V, U, block, omega_db, gamma)
            self.losses_.append(loss)
            if ctx.on_epoch is not None:  # encode() and database_codes() give the current codes
                self.model_, self.codes_ = model, V.cpu().numpy().astype(np.int8)
            log.log(it, loss, float(rates[epoch - 1]), model, self,
                    lambda: self._train_map(model, problem, eval_idx, V))
        return V

    def _network_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       x_omega: torch.Tensor, U: torch.Tensor, V: torch.Tensor,
                       block: SimilarityBlock, omega_db: torch.Tensor | None, gamma: float,
                       ctx: RunContext) -> None:
        """One pass of mini-batch SGD over Omega on eq. (5)/(3); records tanh(F(x)) in U."""
        c, n, m = self.bits, V.shape[0], U.shape[0]
        gram = V.T @ V                               # sum_j v_j v_j^T
        sv = block.matmul(V)                         # (S V)_i = sum_j S_ij v_j
        const = (c * c) * block.row_sq_norms         # c^2 sum_j S_ij^2
        v_omega = V[omega_db] if omega_db is not None else None
        order = torch.from_numpy(ctx.rng.permutation(m)).to(U.device)
        for s in range(0, m, self.batch_size):
            batch = order[s:s + self.batch_size]
            x = x_omega[batch.to(x_omega.device)].to(U.device, non_blocking=True)
            u = torch.tanh(model(x)).to(torch.float64)
            # sum_j (u^T v_j - c S_ij)^2, expanded: u^T (V^T V) u - 2c u^T (S V)_i + c^2 sum_j S_ij^2
            loss = ((u @ gram) * u).sum() - 2.0 * c * (u * sv[batch]).sum() + const[batch].sum()
            if v_omega is not None:
                loss = loss + gamma * ((v_omega[batch] - u) ** 2).sum()
            loss = loss / (len(batch) * n * c)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            U[batch] = u.detach()

    def _objective(self, V: torch.Tensor, U: torch.Tensor, block: SimilarityBlock,
                   omega_db: torch.Tensor | None, gamma: float) -> float:
        """Eq. (5) (or (3)) at the current U, V, divided by m * n, without building S."""
        c = self.bits
        value = (((U @ (V.T @ V)) * U).sum() - 2.0 * c * (U * block.matmul(V)).sum()
                 + (c * c) * block.row_sq_norms.sum())
        if omega_db is not None:
            value = value + gamma * ((V[omega_db] - U) ** 2).sum()
        return float(value) / (U.shape[0] * V.shape[0])

    def _train_map(self, model: torch.nn.Module, problem: _Problem, idx: np.ndarray,
                   V: torch.Tensor) -> float:
        inputs = problem.query_inputs
        rows = inputs[idx] if isinstance(inputs, np.ndarray) else IndexedView(inputs, idx)
        query_labels = problem.group_labels[problem.query_groups[idx]]
        return self._map_against(model, rows, query_labels, V.cpu().numpy().astype(np.int8),
                                 problem.db_labels)

    # ------------------------------------------------------------ codes

    def database_codes(self) -> np.ndarray:
        """The learned V, one row per database item in database order (never F(database))."""
        self._check_fitted("codes_")
        return self.codes_.copy()

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        """Always the learned V: re-encoding the database with the network is a known bug of
        a popular code base, and impossible here. V must have been learned for exactly
        ``data.database``'s rows."""
        self._check_fitted("codes_")
        if not self.learned_for(data):
            raise DataError("adsh: the learned database codes V belong to other rows than this "
                            "database; fit ADSH on this database (never encode it with the network)")
        return self.database_codes()
