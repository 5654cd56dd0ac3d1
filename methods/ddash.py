"""DDASH: discriminative deep asymmetric supervised hashing (Qiang, Wan, Liu, Xiang & Meng, KBS 2020),
as a documented reconstruction.

The paper's full text, equations and code are not available (``../shared/CROSSMODAL.md`` §1.1-1.2:
only the abstract). This is the reconstruction of CROSSMODAL.md §1.4, in which every term has a
published precedent with public code; every choice the abstract leaves open is a
hyper-parameter, not a constant. What the abstract fixes, and how it is met:

* deep hash functions for the **queries** only, one network per modality: the image network
  ``U = tanh(f(x))`` (the suite's backbones: ``backbone = "mlp"`` on feature vectors, "cnn" /
  "alexnet" on images) and the text network ``G = tanh(g(y))`` (DCMH's ``d -> text_hidden ->
  c`` MLP, 8,192 hidden units by default; :class:`hashbench.backbones.TextMLP`);
* the **database codes are learned directly** (B, n x c), by **discrete optimisation**, and
  used as the database codes of both I->T and T->I (as DCHUC evaluates, ``rB = V`` for both,
  and ADSH single-modally): ``encode_database`` always returns B and refuses a database it was
  not learned for, like ADSH. Training on the whole database is the method's point (the
  registered default is the protocol's full mode, as for ADSH; ``full_mode_title="DDASH"``);
* a **code-to-label mapping** W (c x K), ``B W ~ L``, with a closed-form ridge update;
* a **graded similarity** (level of similarity between instances) as supervision.

Objective (norms Frobenius; S the m x n similarity block between the sampled queries Omega and
the database; U, G the relaxed network outputs on Omega; L the database labels, L_Omega the
labels of Omega)::

    J = sum_{O in (U, G)} ||O B^T - c S||^2                  ADSH's asymmetric term, one per query modality
      + gamma sum_{O in (U, G)} ||B_Omega - O||^2           ADSH eq. (5) / DCHUC quantisation (full mode only)
      + alpha ||B W - L||^2 + ridge ||W||^2                 DCHUC / DADH label term, ridge on W
      + beta sum_{O in (U, G)} ||O W - L_Omega||^2           optional: DCHUC's regression of network outputs

Two settings, as ADSH: in the protocol's full mode (the training set *is* the database,
ADSH's eq. (5)) Omega is drawn from the database and the gamma term ties B_Omega to the network
outputs; with a separate sampled training set (ADSH's eq. (3)) Omega is drawn from the
training set, B is learned for every database item and there is no gamma term.

One outer iteration (``outer_iters`` = T_out of them, ADSH's 50):

1. draw a fresh Omega of ``m = min(num_samples, #query pool)`` points (ADSH's 2,000) from
   ``ctx.rng`` and its m x n block S, by label groups (:class:`GradedSimilarityBlock`, built on
   ADSH's :class:`~hashbench.methods.adsh.SimilarityBlock`: never an n x n, not even an m x n
   matrix);
2. ``inner_epochs`` (T_in, ADSH's 3) times: one epoch of mini-batch SGD over Omega for the
   image network, then one for the text network (each with B, W and the other network fixed;
   autograd gives the §1.4 step-2 gradient ``[2 sum_j (u^T b_j - c S_ij) b_j + 2 gamma (u_i - b_i)
   + 2 beta (u^T W - l_i) W^T] (1 - u^2)``); then the B-step and the W-step below (ADSH runs its
   V-step after every network epoch; so does this);
3. **B-step** (:func:`update_database_codes`; ADSH eq. (10) extended with both modalities and
   the label term, §1.4 step 4): one sweep over the bits k = 1..c of
   ``B_k = -sign(2 B_{-k} (U_{-k}^T U_k + G_{-k}^T G_k + alpha W_{-k} w_k^T) + Q_k)``,
   ``Q = -2c S^T (U + G) - 2 gamma (U_bar + G_bar) - 2 alpha L W^T``. Each column update is the
   exact minimiser of J over that column, so J never increases. It runs as ADSH's blocked
   :func:`~hashbench.methods.adsh.update_codes` on the stacked matrix ``[U; G; sqrt(alpha) W^T]``,
   whose Gram matrix is ``U^T U + G^T G + alpha W W^T``;
4. **W-step** (:func:`update_label_map`, §1.4 step 5): ``W = (alpha sum B^T B + beta (U^T U + G^T G)
   + ridge I)^-1 (alpha sum B^T L + beta (U + G)^T L_Omega)``, the exact minimiser of J over W.

Choices the paper leaves open (hyper-parameters, defaults with their precedent):

* ``similarity``: ``"graded-cosine"`` (default) ``S = 2 cos(l_i, l_j) - 1`` (cosine of the label
  vectors mapped to [-1, 1]: github AlokaHarryG/MultiModalSearch DJSAH.m); ``"jaccard"``
  ``S = 2 |l_i and l_j| / |l_i or l_j| - 1`` (MLSPH's Jaccard grade, rescaled); ``"binary"``
  ``S = +1`` when a label is shared, else -1; ``"adsh"``: the binary relation with ADSH's
  ``-r`` balancing always on. Every kind lies in [-1, 1], so the target ``c S`` of an inner
  product of two codes in {-1, +1}^c is reachable (CROSSMODAL.md §1.4, "for the inner-product
  target to be reachable"). On single-label data (Wikipedia, digits) cosine and Jaccard grades
  are 0 or 1, so every kind is the binary relation there and only ``balance`` changes S;
* ``balance`` (default True): ADSH's rescaling of the negative targets by ``r = (sum of the
  positive entries) / (sum of |negative entries|)`` over the sampled block, recomputed for
  every Omega; for the binary relation this is exactly ADSH's ``r = #similar / #dissimilar``
  (when r > 1 the positive entries are divided by r instead, keeping S in [-1, 1]);
* ``gamma = 200`` (ADSH and DCHUC); ``alpha = 1`` (DCHUC's weight of ``||V W - L||``, its
  ``beta``); ``ridge = 50`` (DCHUC's ``eta``); ``beta = 0`` (DCHUC's ``alpha = 50`` on the
  network outputs: off by default, the abstract maps *hash codes* to labels);
* ``shared_codes`` (default True, DCHUC's unified codes): one B for both modalities. With
  False, each query modality gets its own database codes, ``B_img`` fitted to the image
  network and ``B_txt`` to the text network (W shared), and I->T ranks ``B_img`` (it pairs with
  image queries), T->I ``B_txt``; ``database_codes()`` then returns ``B_img``;
* initialisation: B = 0 (ADSH), W ~ N(0, 0.01^2) (DCHUC), both networks from ``ctx.seed``; the
  text network with torch's default initialisation (``text_init_std = None``, as the image MLP):
  DCMH's N(0, 0.01^2) (``text_init_std = 0.01``) left the text side near its zero saddle for
  most of a short run (digits-2view, 16 bits, 8 outer iterations: T->I MAP 0.23 against 0.70);
* optimisation: ADSH's (plain SGD, batch 64, rate log-spaced over the T_out * T_in epochs,
  ``learning_rate = 0.5 -> 5e-3`` as this suite's ADSH, the batch loss divided by
  ``batch * n * c``), weight decay 5e-4 (ADSH and DCHUC).

Which choices mattered (Wikipedia, 32 bits, 20 outer iterations, 3 seeds, test MAP I->T / T->I;
an ablation, nothing was tuned on it): ``balance`` is essential, without it the binary
single-label S is mostly -1 and the codes collapse (0.237 / 0.237 for every seed, against
0.242 / 0.705 with it); ``beta = 50`` changed little (0.239 / 0.715); per-modality codes
(``shared_codes = False``) 0.250 / 0.716. ``similarity`` cannot matter on single-label data.

Logged per outer iteration: ``loss`` (J after the W-step, divided by m * n), ``learning_rate``,
``elapsed_seconds``; ``ctx.on_epoch`` is called with the method, whose ``encode`` and
``encode_database`` then give the current codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from hashbench.api import AsymmetricHasher, MethodMeta, RunContext, TrialData
from hashbench.backbones import DEVICE_INPUTS_BYTES, StepLog, to_batch
from hashbench.deep import CrossModalDeepHasher, DeepHasher
from hashbench.errors import ConfigError, DataError
from hashbench.labels import group_labels
from hashbench.registry import register

from .adsh import SimilarityBlock, code_matrix, update_codes

SIMILARITIES = ("graded-cosine", "jaccard", "binary", "adsh")


# ---------------------------------------------------------------- graded similarity by label groups


def group_similarity(kind: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The similarity of every pair of label vectors, in [-1, 1] (float64, ``len(rows) x len(cols)``).

    ``graded-cosine``: ``2 cos - 1``; ``jaccard``: ``2 |a and b| / |a or b| - 1``; ``binary`` and
    ``adsh``: +1 when a label is shared, else -1. An empty label vector shares nothing (-1).
    """
    a = (np.asarray(rows) > 0).astype(np.float64)
    b = (np.asarray(cols) > 0).astype(np.float64)
    inter = a @ b.T
    if kind == "graded-cosine":
        norms = np.sqrt(a.sum(1))[:, None] * np.sqrt(b.sum(1))[None, :]
        grade = np.divide(inter, norms, out=np.zeros_like(inter), where=norms > 0)
    elif kind == "jaccard":
        union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
        grade = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    elif kind in ("binary", "adsh"):
        grade = (inter > 0).astype(np.float64)
    else:
        raise ConfigError(f"ddash: similarity must be one of {', '.join(SIMILARITIES)}, got {kind!r}")
    return 2.0 * np.minimum(grade, 1.0) - 1.0


class GradedSimilarityBlock(SimilarityBlock):
    """The m x n block S between query rows and database rows for any :data:`SIMILARITIES` kind.

    Rows with the same label vector have the same similarities, so S is kept as a group-level
    table ``P`` (query groups x database groups, float64) and ADSH's ``t_matmul`` / ``matmul``
    give ``S^T U`` and ``S V`` from segment sums. With ``balance`` (always for ``"adsh"``) the
    negative entries are multiplied by ``r = sum(S > 0) / sum(|S < 0|)`` over the m x n block;
    when ``r > 1`` (more positive than negative mass) the positive entries are divided by r
    instead, so that S stays in [-1, 1] (``"adsh"`` keeps ADSH's literal ``-r``).
    """

    def __init__(self, group_labels_: np.ndarray, query_groups: np.ndarray, db_groups: np.ndarray,
                 kind: str = "graded-cosine", balance: bool = True,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        present, q_inv = np.unique(query_groups, return_inverse=True)
        self.m, self.n = len(query_groups), len(db_groups)
        self.n_groups = len(group_labels_)
        values = group_similarity(kind, group_labels_[present], group_labels_)  # (Gq, G)
        q_counts = np.bincount(q_inv, minlength=len(present)).astype(np.float64)
        d_counts = np.bincount(db_groups, minlength=self.n_groups).astype(np.float64)
        positive = float(q_counts @ np.maximum(values, 0.0) @ d_counts)
        negative = float(q_counts @ np.maximum(-values, 0.0) @ d_counts)
        self.r = positive / negative if (balance or kind == "adsh") and negative > 0 else 1.0
        if kind != "adsh" and self.r > 1.0:  # more positive mass: scale the positives down instead
            values = np.where(values > 0, values / self.r, values)
        elif self.r != 1.0:  # ADSH's rule: the negative targets become -r (for "adsh" even when r > 1)
            values = np.where(values < 0, values * self.r, values)
        self.P = torch.from_numpy(values).to(self.device)
        self.q_inv = torch.from_numpy(q_inv.astype(np.int64)).to(self.device)
        self.db_ids = torch.from_numpy(np.asarray(db_groups, np.int64)).to(self.device)
        self.row_sq_norms = torch.from_numpy((values ** 2) @ d_counts).to(self.device)[self.q_inv]

    def _values(self, cols: slice) -> torch.Tensor:
        return self.P[:, cols]

    def dense(self) -> torch.Tensor:
        """The explicit m x n float64 block (tests only)."""
        return self.P[self.q_inv][:, self.db_ids]


# ---------------------------------------------------------------- the B-step and the W-step


def label_code_matrix(block: SimilarityBlock, outputs: list[torch.Tensor], omega_db: torch.Tensor | None,
                      gamma: float, labels: torch.Tensor, W: torch.Tensor, alpha: float) -> torch.Tensor:
    """``Q = -2c S^T sum(O) - 2 gamma sum(O_bar) - 2 alpha L W^T`` (n x c, float64)."""
    total = outputs[0].to(torch.float64)
    for out in outputs[1:]:
        total = total + out.to(torch.float64)
    Q = code_matrix(block, total, omega_db, gamma)
    if alpha:
        Q = Q - (2.0 * alpha) * (labels.to(torch.float64) @ W.T.to(torch.float64))
    return Q


def update_database_codes(B: torch.Tensor, outputs: list[torch.Tensor], Q: torch.Tensor,
                          W: torch.Tensor, alpha: float) -> torch.Tensor:
    """One sweep of the column-wise discrete rule over the bits, in place on B (n x c, float64):
    ``B_k = -sign(2 B_{-k} (sum_O O_{-k}^T O_k + alpha W_{-k} w_k^T) + Q_k)`` (CROSSMODAL.md §1.4
    step 4), through ADSH's :func:`~hashbench.methods.adsh.update_codes` on the stacked
    ``[O_1; O_2; sqrt(alpha) W^T]`` (its Gram matrix is ``sum O^T O + alpha W W^T``)."""
    parts = [o.to(torch.float64) for o in outputs]
    if alpha:
        parts.append(math.sqrt(alpha) * W.T.to(torch.float64))
    return update_codes(B, torch.cat(parts, dim=0), Q)


def update_label_map(codes: list[torch.Tensor], labels: torch.Tensor, outputs: list[torch.Tensor],
                     omega_labels: torch.Tensor, alpha: float, beta: float, ridge: float) -> torch.Tensor:
    """The exact minimiser over W of ``alpha sum_B ||B W - L||^2 + beta sum_O ||O W - L_Omega||^2 +
    ridge ||W||^2``: ``(alpha sum B^T B + beta sum O^T O + ridge I)^-1 (alpha sum B^T L + beta sum
    O^T L_Omega)`` (pseudo-inverse when that matrix is singular, as DCHUC's ``pinv``)."""
    c = codes[0].shape[1]
    dev = codes[0].device
    lab = labels.to(torch.float64)
    A = ridge * torch.eye(c, dtype=torch.float64, device=dev)
    rhs = torch.zeros(c, lab.shape[1], dtype=torch.float64, device=dev)
    for B in codes:
        B = B.to(torch.float64)
        A = A + alpha * (B.T @ B)
        rhs = rhs + alpha * (B.T @ lab)
    if beta:
        lo = omega_labels.to(torch.float64)
        for out in outputs:
            out = out.to(torch.float64)
            A = A + beta * (out.T @ out)
            rhs = rhs + beta * (out.T @ lo)
    if ridge > 0:
        return torch.linalg.solve(A, rhs)
    return torch.linalg.pinv(A) @ rhs


def objective(codes: list[torch.Tensor], outputs: list[list[torch.Tensor]], block: SimilarityBlock,
              omega_db: torch.Tensor | None, labels: torch.Tensor, omega_labels: torch.Tensor,
              W: torch.Tensor, gamma: float, alpha: float, beta: float, ridge: float) -> float:
    """J (the module docstring) without building S; ``outputs[i]`` are the network outputs paired
    with ``codes[i]`` ([U, G] with one shared B; [U] and [G] with per-modality codes)."""
    W = W.to(torch.float64)
    lab, lo = labels.to(torch.float64), omega_labels.to(torch.float64)
    value = ridge * (W ** 2).sum()
    for B, outs in zip(codes, outputs, strict=True):
        B = B.to(torch.float64)
        c = B.shape[1]
        gram, sb = B.T @ B, block.matmul(B)
        for out in outs:
            out = out.to(torch.float64)
            value = value + ((out @ gram) * out).sum() - 2.0 * c * (out * sb).sum()
            value = value + (c * c) * block.row_sq_norms.sum()
            if omega_db is not None:
                value = value + gamma * ((B[omega_db] - out) ** 2).sum()
        value = value + alpha * ((B @ W - lab) ** 2).sum()
    if beta:
        for outs in outputs:
            for out in outs:
                value = value + beta * ((out.to(torch.float64) @ W - lo) ** 2).sum()
    return float(value)


def objective_dense(codes: list[torch.Tensor], outputs: list[list[torch.Tensor]], S: torch.Tensor,
                    omega_db: torch.Tensor | None, labels: torch.Tensor, omega_labels: torch.Tensor,
                    W: torch.Tensor, gamma: float, alpha: float, beta: float, ridge: float) -> float:
    """J with an explicit S (m x n): the literal reference for tests."""
    W, S = W.to(torch.float64), S.to(torch.float64)
    lab, lo = labels.to(torch.float64), omega_labels.to(torch.float64)
    value = ridge * (W ** 2).sum()
    for B, outs in zip(codes, outputs, strict=True):
        B = B.to(torch.float64)
        for out in outs:
            out = out.to(torch.float64)
            value = value + ((out @ B.T - B.shape[1] * S) ** 2).sum()
            if omega_db is not None:
                value = value + gamma * ((B[omega_db] - out) ** 2).sum()
            value = value + beta * ((out @ W - lo) ** 2).sum()
        value = value + alpha * ((B @ W - lab) ** 2).sum()
    return float(value)


# ---------------------------------------------------------------- the method


@dataclass
class _Problem:
    image_inputs: Any
    text_inputs: np.ndarray
    n_query: int
    n_database: int
    group_labels: np.ndarray
    query_groups: np.ndarray
    db_groups: np.ndarray
    query_labels: np.ndarray
    db_labels: np.ndarray
    query_is_database: bool


@register
@dataclass(eq=False)
class DDASH(CrossModalDeepHasher, AsymmetricHasher):
    meta = MethodMeta(
        name="ddash",
        title="DDASH",
        citation="Qiang, Wan, Liu, Xiang & Meng, Discriminative deep asymmetric supervised hashing for "
                 "cross-modal retrieval, Knowledge-Based Systems 2020 (reconstruction: paper not "
                 "available; terms from ADSH, DCHUC, DADH, see CROSSMODAL.md 1.4)",
        family="deep",
        modalities=("features", "text"),
        requires="gpu-preferred",
        supervised=True,
        asymmetric=True,
        full_mode_title="DDASH",  # learning the database codes is the method, not a "-D" variant
    )
    conformance_params = {"outer_iters": 3, "inner_epochs": 1, "num_samples": 100, "text_hidden": 64,
                          "hidden": 32}

    bits: int = 32
    similarity: str = "graded-cosine"
    balance: bool = True
    gamma: float = 200.0
    alpha: float = 1.0
    beta: float = 0.0
    ridge: float = 50.0
    shared_codes: bool = True
    outer_iters: int = 50
    inner_epochs: int = 3
    num_samples: int = 2000
    batch_size: int = 64
    learning_rate: float = 0.5
    learning_rate_end: float = 5e-3
    momentum: float = 0.0
    text_init_std: float | None = None

    positive_fields: ClassVar[tuple[str, ...]] = CrossModalDeepHasher.positive_fields + (
        "outer_iters", "inner_epochs", "num_samples", "learning_rate_end")
    non_negative_fields: ClassVar[tuple[str, ...]] = DeepHasher.non_negative_fields + (
        "gamma", "alpha", "beta", "ridge")

    def validate(self) -> None:
        super().validate()
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"ddash: similarity must be one of {', '.join(SIMILARITIES)}, "
                              f"got {self.similarity!r}")

    def _problem(self, data: TrialData) -> _Problem:
        """ADSH's eq. (5) analogue when the training set is the database (Omega drawn from it, gamma
        term); eq. (3)'s otherwise: Omega from the training set, B for every database item."""
        train = data.train
        images = train[self.image_modality]
        text = np.asarray(train["text"], np.float32).reshape(len(train), -1)
        labels = self.checked_labels("ddash", images, train.labels)
        separate = not data.train_is_database
        db_labels = np.asarray(data.database.labels) if separate else labels
        if db_labels.shape[1] != labels.shape[1]:
            raise DataError(f"ddash: database labels have {db_labels.shape[1]} classes, "
                            f"training labels {labels.shape[1]}")
        groups, (q_ids, d_ids) = group_labels(labels, db_labels)
        return _Problem(image_inputs=images, text_inputs=text, n_query=len(labels),
                        n_database=len(db_labels), group_labels=groups, query_groups=q_ids,
                        db_groups=d_ids, query_labels=labels, db_labels=db_labels,
                        query_is_database=not separate)

    # ------------------------------------------------------------ training

    def fit(self, data: TrialData, ctx: RunContext) -> DDASH:
        self.validate()
        problem = self._problem(data)
        self.learned_indices_ = np.asarray(data.database.indices)  # B's rows (also for on_epoch)
        with self.seeded_network(problem.image_inputs, ctx) as (model, device):
            text_net = self.text_network(problem.text_inputs, device)
            self.text_model_ = text_net
            codes = self._train(model, text_net, problem, ctx, device)
        text_net.eval()
        self._keep(codes)
        return self

    def _keep(self, codes: list[torch.Tensor]) -> None:
        self.codes_ = [B.cpu().numpy().astype(np.int8) for B in codes]

    def _train(self, model: torch.nn.Module, text_net: torch.nn.Module, problem: _Problem,
               ctx: RunContext, device: torch.device) -> list[torch.Tensor]:
        c, n = self.bits, problem.n_database
        m = min(self.num_samples, problem.n_query)
        gamma = float(self.gamma) if problem.query_is_database else 0.0
        alpha, beta, ridge = float(self.alpha), float(self.beta), float(self.ridge)
        n_codes = 1 if self.shared_codes else 2
        codes = [torch.zeros(c, n, dtype=torch.float64, device=device).T for _ in range(n_codes)]
        labels = torch.from_numpy((problem.db_labels > 0).astype(np.float64)).to(device)
        query_labels = torch.from_numpy((problem.query_labels > 0).astype(np.float64)).to(device)
        W = torch.from_numpy(ctx.rng.normal(0.0, 0.01, (c, labels.shape[1]))).to(device)
        text_all = torch.from_numpy(problem.text_inputs)
        nets = [model, text_net]
        optimizers = [self.optimizer(model), self.optimizer(text_net)]
        rates = self.learning_rates(self.outer_iters * self.inner_epochs)
        self.losses_: list[float] = []
        log = StepLog(ctx, 0, self.outer_iters)
        epoch = 0
        for it in ctx.progress(range(self.outer_iters), total=self.outer_iters, desc="ddash"):
            omega = np.sort(ctx.rng.choice(problem.n_query, size=m, replace=False))
            block = GradedSimilarityBlock(problem.group_labels, problem.query_groups[omega],
                                          problem.db_groups, self.similarity, self.balance, device)
            omega_db = torch.from_numpy(omega).to(device) if problem.query_is_database else None
            omega_labels = query_labels[torch.from_numpy(omega).to(device)]
            inputs = [_on_device(to_batch(problem.image_inputs, omega), device),
                      text_all[torch.from_numpy(omega)].to(device)]
            outs = [torch.zeros(m, c, dtype=torch.float64, device=device) for _ in range(2)]
            # the database codes each network is fitted to: one shared B, or B_img and B_txt
            paired = [codes[0], codes[0]] if self.shared_codes else [codes[0], codes[1]]
            for net in nets:
                net.train()
            for _ in range(self.inner_epochs):
                for opt in optimizers:
                    for group in opt.param_groups:
                        group["lr"] = float(rates[epoch])
                for net, opt, x, out, B in zip(nets, optimizers, inputs, outs, paired, strict=True):
                    self._network_epoch(net, opt, x, out, B, block, omega_db, gamma, W, omega_labels,
                                        beta, ctx)
                groups = [outs] if self.shared_codes else [[outs[0]], [outs[1]]]
                for B, group_outs in zip(codes, groups, strict=True):
                    Q = label_code_matrix(block, group_outs, omega_db, gamma, labels, W, alpha)
                    update_database_codes(B, group_outs, Q, W, alpha)
                W = update_label_map(codes, labels, outs, omega_labels, alpha, beta, ridge)
                epoch += 1
            groups = [outs] if self.shared_codes else [[outs[0]], [outs[1]]]
            loss = objective(codes, groups, block, omega_db, labels, omega_labels, W, gamma, alpha,
                             beta, ridge) / (m * n)
            self.losses_.append(loss)
            self.W_ = W
            if ctx.on_epoch is not None:  # encode() and encode_database() give the current codes
                self.model_ = model
                self._keep(codes)
            log.log(it, loss, float(rates[epoch - 1]), model, self, lambda: float("nan"))
        return codes

    def _network_epoch(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, x_omega: torch.Tensor,
                       out: torch.Tensor, B: torch.Tensor, block: SimilarityBlock,
                       omega_db: torch.Tensor | None, gamma: float, W: torch.Tensor,
                       omega_labels: torch.Tensor, beta: float, ctx: RunContext) -> None:
        """One pass of mini-batch SGD over Omega for one network (B, W fixed); records tanh(net(x))
        in ``out``. The per-point asymmetric term is expanded as in ADSH:
        ``sum_j (u^T b_j - c S_ij)^2 = u^T (B^T B) u - 2c u^T (S B)_i + c^2 sum_j S_ij^2``."""
        c, n, m = self.bits, B.shape[0], out.shape[0]
        gram = B.T @ B
        sb = block.matmul(B)
        const = (c * c) * block.row_sq_norms
        b_omega = B[omega_db] if omega_db is not None else None
        order = torch.from_numpy(ctx.rng.permutation(m)).to(out.device)
        for s in range(0, m, self.batch_size):
            batch = order[s:s + self.batch_size]
            x = x_omega[batch.to(x_omega.device)].to(out.device, non_blocking=True)
            u = torch.tanh(net(x)).to(torch.float64)
            loss = ((u @ gram) * u).sum() - 2.0 * c * (u * sb[batch]).sum() + const[batch].sum()
            if b_omega is not None:
                loss = loss + gamma * ((b_omega[batch] - u) ** 2).sum()
            if beta:
                loss = loss + beta * ((u @ W - omega_labels[batch]) ** 2).sum()
            loss = loss / (len(batch) * n * c)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            out[batch] = u.detach()

    # ------------------------------------------------------------ codes

    def database_codes(self) -> np.ndarray:
        """The learned B (with per-modality codes: ``B_img``, the codes paired with image queries)."""
        self._check_fitted("codes_")
        return self.codes_[0].copy()

    def encode_database(self, data: TrialData, modality: str | None = None) -> np.ndarray:
        """Always the learned codes, for both tasks: B (shared), or with per-modality codes the
        ones paired with the query side (``B_img`` when the database side is text, I->T;
        ``B_txt`` for T->I). They must have been learned for exactly ``data.database``'s rows."""
        self._check_fitted("codes_")
        if not self.learned_for(data):
            raise DataError("ddash: the learned database codes B belong to other rows than this "
                            "database; fit DDASH on this database (it never encodes the database "
                            "with its networks)")
        modality = modality or "text"
        if len(self.codes_) == 1 or modality == "text":
            return self.codes_[0].copy()
        return self.codes_[1].copy()


def _on_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on the device when it is small enough (ADSH's rule), else on the host."""
    return x.to(device) if x.numel() * x.element_size() <= DEVICE_INPUTS_BYTES else x
