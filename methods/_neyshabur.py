"""The optimiser shared by Lin:Lin and Lin:V (Neyshabur et al., NIPS 2013).

"The power of asymmetry in binary hashing" approximates a binary similarity ``s_ij`` in
{-1, +1} by the inner product ``y_ij = <f(x_i), g(x_j)>`` of two *different* K-bit codes:
a query code ``f(x) = sign(W_q [x; 1])`` and a database code ``g`` that is either linear too
(Lin:Lin, ``g(x) = sign(W_d [x; 1])``) or a free code word ``v_j`` per database item (Lin:V).
The Hamming distance is ``(K - y) / 2``, so ranking by ``y`` is ranking by Hamming distance.

Loss (the paper's optimisation section, and the authors' MATLAB release ``asymcode``)::

    L = sum_ij  w(s_ij) * [ log(1 + exp(-s_ij (y_ij - theta))) ] ** conv

a weighted logistic loss on the margin ``y - theta`` with weight ``beta`` (0.7) on similar
pairs and ``1 - beta`` on dissimilar ones, and ``conv = 0.5`` (the authors' "convexity"
exponent: a tighter, non-convex surrogate of the 0/1 loss). The threshold ``theta`` is chosen
among the ``K + 2`` odd values ``-K-1, -K+1, ..., K+1`` to minimise L over a random sample of
pairs: with the counts of sampled pairs per (similar?, y) the loss of every threshold is a
dot product, so the search is exact on the sample (the authors' ``updateD``/``findtheta``).

Bits are learned one at a time (the authors' scheme): an *epoch* visits the K bits in a
random order; for bit k, with the other K-1 bits fixed and ``Y`` their inner products on a
random block of pairs,

    M_ij = l(s_ij, Y_ij - 1) - l(s_ij, Y_ij + 1)

is the loss saved by making the new bit's product ``u_i v_j`` equal +1 rather than -1, so
the block loss is ``const - 1/2 sum_ij M_ij u_i v_j`` and the bit maximises ``u^T M v``:

* query side (both models): the desired bits ``sign(M v)`` with weights ``|M v|`` define a
  weighted classification problem; ``w_q`` is fitted to it by SGD on the weighted hinge loss
  (10 epochs x 100 batches of 100, step 2 decayed by ``(1 - (t-1)/10)`` per epoch);
* database side: Lin:Lin fits ``w_d`` the same way to ``sign(M^T l)``, ``l = sign(X w_q)``;
  Lin:V sets ``v = sign(M^T l)``, the exact maximiser given ``l``;
* the two steps alternate on fresh random blocks (``block_size`` rows, and columns for
  Lin:Lin; all database items for Lin:V) until ``u^T M v`` has not improved for 5 rounds.

The new bit is kept if the sampled loss (with its re-tuned threshold) is below the current
loss plus ``tolerance`` (0.001, the authors' acceptance rule); training stops when an epoch
has not lowered the loss by ``epsilon`` (0.001) for more than ``window`` (3) epochs, or after
``max_epochs``. The sampled loss after every bit update is logged as ``loss`` (and the
threshold as ``theta``); ``history`` keeps it.

The paper's text was not at hand to cite equation numbers; every step above follows the
authors' release (``LIN_LIN_logistic.m``, ``LIN_V_logistic.m``, ``updateW.m``, ``updateWV.m``).

Choices where the release is silent or would not run here (documented, all small):

* features are standardised (zero mean, unit variance per dimension) before the bias column
  is appended, so one SGD step size suits 64-d and 4,096-d features;
* hinge weights are divided by their mean (the authors' raw weights grow with the block
  size, which only rescales the SGD step);
* the statistics sample is drawn once per fit (``n_pairs``, 10^6 as the authors; all pairs
  when there are fewer), so that accepting or rejecting a bit compares losses on the same
  pairs; the authors draw a fresh sample at every update;
* the initial loss is the measured one (the release starts its running loss at 1);
* blocks are capped at the available rows (the release assumes at least 1,000 objects);
  when a block holds every row (and column), M does not change between the rounds of a bit
  (the other bits are fixed; the release's permutation only reorders it, and SGD samples
  rows uniformly), so it is computed once per bit;
* at most ``max_epochs`` (10) epochs; the release stops only by the window rule. On digits
  the loss is flat after 2-3 epochs and the window rule ends training at 5-8.

No ``n x n`` matrix is formed: similarities come from the labels (share at least one label)
for the sampled pairs and for each ``block x database`` slab, computed in column chunks.

Speed (issue 14): ``kernels="numba"`` (the default) runs the hinge SGD and the products
``M v`` / ``u^T M`` as compiled loops (``methods/_neyshabur_kernels.py``): the products
read the packed codes (64 bits a word) and a (label group, label group, ``Y``) table of
savings, so ``M`` is never formed, not even in chunks (the numpy path, ``kernels="numpy"``,
forms 1,000 x 16,384 float32 slabs twice per round). Same random draws and updates; sums
run in another order (float64 margins), so weights agree to float tolerance and the codes
of a bit update agree exactly in the tests (``tests/test_neyshabur_kernels.py``); whole
fits drift apart as any chaotic optimiser does under rounding, to the same loss.
Measured on synthetic CIFAR-10-shaped features (``benchmarks/paper_cost.py``: 4,096-d,
10 classes, 48 bits; a shared, busy 2-core machine, load 6-10), two bit updates:
Lin:Lin on 5,000 training points 37 s -> 20 s (hinge SGD 0.53-0.6 s -> 0.2 s a call);
Lin:V with the 59,000-item database 639 s -> 31 s (the saving products: 577 s -> 20 s).
Falls back to numpy where the label-group table is too large (``_MAX_PAIR_TABLE``).
The products also run over *distinct* database columns only (``_PackedBlock``): a column of
``M`` depends only on the item's label group and its other bits, and Lin:V's code words
settle to one per class within the first epoch (10 distinct of 10,000 on the synthetic
10-class set), so from then on a round's products read a few dozen columns instead of the
whole database. Same loss to the last digit on that set (12 bits, 3 epochs: fit
88 s -> 32 s at 10,000 x 256; ``u^T M`` is bit-identical, ``M v`` sums in another order).
Open question (issue 14, measured after the kernels were made the default): Lin:V on the
``paper_cost.py --quick`` data (2,000-item database, 256-d, 12 bits, cut to 2 epochs), seeds
0 / 1 / 2, MAP numpy 0.7642 / 0.7942 / 0.7714 against numba 0.7512 / 0.7859 / 0.7358 (mean
drop 0.019, every seed lower; 48 bits, seed 0: 0.8017 / 0.8037). Within one seed standard
deviation only loosely; whether the summation order (float64 sums of the saving products,
hence different exact zeros in ``v = sign(M^T l)``'s keep-on-tie rule) biases the fit is not
settled. With the registered 10 epochs (issue 14's third round: distinct columns, float32
margins), seeds 0 / 1 / 2: numpy 0.7370 / 0.7883 / 0.7735 (0.7662 +- 0.0264), numba 0.7494 /
0.7584 / 0.7542 (0.7540 +- 0.0045): the means differ by less than one seed standard deviation
of the reference, two seeds of three lower. ``kernels="numpy"`` is the reference.

Through the Gram matrix (issue 14, fourth round). When the blocks hold fewer rows than the
features have dims (Lin:Lin's 1,000-row blocks of 4,097-d fc7 features), the compiled hinge
SGD never reads a ``d``-dim row: every update adds violated rows to ``w``, so ``w`` stays
``w0 + x^T alpha`` over the block's rows and a row's margin is ``x_i^T w0 + (G alpha)_i`` with
``G = x x^T``. The kernel keeps all margins current (a violated row adds ``c G[i, :]``: ``n``
operations where the direct kernel spends ``2 d`` on every drawn row) and forms ``w`` once at
the end. ``G`` of the whole training set is computed once per fit by BLAS (float32; at most
``_MAX_GRAM_ROWS`` = 16,384 rows, 1 GiB; 5,000 x 4,097: about 1 s) and each block's is
gathered from it. Same draws and updates; the margins are float64 sums, which in the unit
test land closer to the numpy reference (1e-5 of the scale) than the direct kernel's float32
ones (3e-3, where rows sit on the hinge). Measured, one thread:

* CIFAR-10 size (``benchmarks/paper_cost.py``, 5,000 training points of 4,096 dims, 48 bits,
  seed 0): Lin:Lin trial 474.8 s -> 117.9 s (fit 466 -> 103 s), MAP 0.8135 -> 0.8320; in one
  profiled epoch the hinge SGD went from 110 s (1,416 calls) to 1.1 s plus 7.6 s of gathering
  block Gram matrices;
* Fashion-MNIST HOG (1,297 dims with the bias; a validation split carved from the protocol's
  database: 500 queries, a 20,000-item database, 5,000 training items), 24 bits, seeds
  0 / 1 / 2: MAP direct 0.7261 / 0.7362 / 0.7343 (0.7322 +- 0.0054), through the Gram matrix
  0.7353 / 0.7322 / 0.7336 (0.7337 +- 0.0016), fit 180 -> 115 s at load 3. Within the
  tolerance (0.005).

Below ``d`` = block rows (Fashion-MNIST's 256-d pixels-pca, digits) the direct kernel runs, as
before. Lin:V's query side uses the same path in sampled mode; with the whole database as its
training set (the paper's setting, 59,000 rows) the Gram matrix would be 13 GiB, so it keeps
the direct kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hashbench.api import AsymmetricHasher, RunContext, TrialData, binarize
from hashbench.errors import ConfigError
from hashbench.labels import LabelGroups, share_label  # noqa: F401 - used by Lin:*, FastH and tests
from hashbench.oos import Standardiser

_CHUNK = 16384
_GATHER = 2_000_000  # floats gathered at once by the hinge SGD
_MAX_PAIR_TABLE = 16_000_000  # entries of the compiled path's (group, group, Y) saving table
_MAX_GRAM_ROWS = 16_384  # training rows whose Gram matrix (float32, 1 GiB at most) is kept


@dataclass
class NeyshaburConfig:
    """Hyper-parameters of the authors' release (``LIN_LIN.m`` / ``LIN_V.m`` defaults)."""

    beta: float = 0.7
    conv: float = 0.5
    epsilon: float = 1e-3
    tolerance: float = 1e-3
    window: int = 3
    max_epochs: int = 10
    block_size: int = 1000
    n_pairs: int = 1_000_000
    sgd_batch: int = 100
    sgd_batches: int = 100
    sgd_epochs: int = 10
    sgd_step: float = 2.0
    patience: int = 5
    max_rounds: int = 50
    kernels: str = "numba"  # "numba" (compiled hot loops) or "numpy" (the reference path)


def pair_loss(similar: np.ndarray, y: np.ndarray, theta: float, beta: float,
              conv: float) -> np.ndarray:
    """``w(s) * log(1 + exp(-s (y - theta))) ** conv`` elementwise (s = +1 where similar)."""
    s = np.where(similar, 1.0, -1.0)
    weight = np.where(similar, beta, 1.0 - beta)
    return weight * np.logaddexp(0.0, -s * (np.asarray(y, dtype=np.float64) - theta)) ** conv


def best_threshold(counts: np.ndarray, bits: int, beta: float, conv: float) -> tuple[float, float]:
    """The threshold among ``-K-1, -K+1, ..., K+1`` minimising the mean sampled loss.

    ``counts[c, t]`` is the number of sampled pairs with similarity ``c`` (0 dissimilar,
    1 similar) and inner product ``y = -K + 2t``. Returns ``(theta, loss)``; ties go to the
    smallest threshold, as MATLAB's ``min``.
    """
    y = np.arange(-bits, bits + 1, 2, dtype=np.float64)
    total = counts.sum()
    best_theta, best_loss = 0.0, np.inf
    for theta in range(-bits - 1, bits + 2, 2):
        loss = (counts[0] @ pair_loss(np.zeros(y.shape, bool), y, theta, beta, conv)
                + counts[1] @ pair_loss(np.ones(y.shape, bool), y, theta, beta, conv)) / total
        if loss < best_loss:
            best_theta, best_loss = float(theta), float(loss)
    return best_theta, best_loss


def with_bias(x: np.ndarray) -> np.ndarray:
    """Append the constant feature: ``[x, 1]`` (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return np.hstack([x, np.ones((len(x), 1), dtype=np.float32)])


def hinge_sgd(targets: np.ndarray, x: np.ndarray, weights: np.ndarray, w: np.ndarray,
              cfg: NeyshaburConfig, rng: np.random.Generator,
              gram: np.ndarray | None = None) -> np.ndarray:
    """Weighted linear classification by SGD on the hinge loss (the release's ``hingeW``).

    Minimises ``sum_i weights_i * max(0, 1 - targets_i * x_i^T w)`` from ``w``: each step
    draws ``sgd_batch`` rows with replacement and moves along the mean sub-gradient
    ``-x_i targets_i weights_i`` of the violated rows; the step starts at ``sgd_step`` and
    is multiplied by ``1 - (t - 1) / sgd_epochs`` at the start of epoch ``t``.

    ``gram`` (optional, compiled path only): ``x x^T`` of these rows, float32. The compiled
    kernel then keeps the rows' margins through it instead of reading the ``d``-dim rows at
    every draw (:func:`~methods._neyshabur_kernels.hinge_epochs_gram`): the same draws and
    updates, margins summed in another order.
    """
    n = len(targets)
    mean = weights.mean()
    weights = weights / mean if mean > 0 else np.ones_like(weights)
    w = w.astype(np.float32).copy()
    if cfg.kernels == "numba":
        return _hinge_sgd_numba(targets, x, weights.astype(np.float32), w, cfg, rng, gram)
    x_signed = x * targets[:, None].astype(np.float32)  # margin of row i: x_signed_i . w
    weights = weights.astype(np.float32)
    step = cfg.sgd_step
    for t in range(1, cfg.sgd_epochs + 1):
        step *= 1.0 - (t - 1) / cfg.sgd_epochs
        batches = rng.integers(0, n, size=(cfg.sgd_batches, cfg.sgd_batch))
        scaled = weights * (step / cfg.sgd_batch)
        group = max(1, _GATHER // max(x.shape[1] * cfg.sgd_batch, 1))  # batches per gather
        for first in range(0, cfg.sgd_batches, group):
            rows = batches[first:first + group]
            for xb, wb in zip(x_signed[rows], scaled[rows], strict=True):
                violated = xb @ w < 1.0
                if violated.any():
                    w += (wb * violated) @ xb
    return w


def _hinge_sgd_numba(targets: np.ndarray, x: np.ndarray, weights: np.ndarray, w: np.ndarray,
                     cfg: NeyshaburConfig, rng: np.random.Generator,
                     gram: np.ndarray | None = None) -> np.ndarray:
    """:func:`hinge_sgd` by the compiled kernel: the same random draws, steps and updates."""
    from ._neyshabur_kernels import hinge_epochs, hinge_epochs_gram

    n = len(targets)
    steps, step = [], cfg.sgd_step
    for t in range(1, cfg.sgd_epochs + 1):
        step *= 1.0 - (t - 1) / cfg.sgd_epochs
        steps.append(step / cfg.sgd_batch)
    # one draw per epoch, in order: the same stream as the reference loop
    batches = np.stack([rng.integers(0, n, size=(cfg.sgd_batches, cfg.sgd_batch))
                        for _ in range(cfg.sgd_epochs)]) if cfg.sgd_epochs else \
        np.empty((0, cfg.sgd_batches, cfg.sgd_batch), dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    steps = np.asarray(steps, dtype=np.float32)
    coef = np.empty(cfg.sgd_batch, dtype=np.float32)
    if gram is None:
        hinge_epochs(x, targets, weights, w, batches.astype(np.int64), steps, coef)
        return w
    margins = (x @ w).astype(np.float64)
    alpha = np.zeros(len(x), dtype=np.float64)
    hinge_epochs_gram(margins, np.ascontiguousarray(gram, dtype=np.float32), targets, weights,
                      batches.astype(np.int64), steps, coef, alpha)
    return w + alpha.astype(np.float32) @ x


class PairStatistics:
    """The fixed random sample of (query, database) pairs and their inner products.

    ``counts()`` histograms the sampled pairs by (similar?, y) for the threshold search.
    Inner products are kept per pair and updated one bit at a time.
    """

    def __init__(self, query_labels: np.ndarray, db_labels: np.ndarray, n_pairs: int,
                 rng: np.random.Generator, same_set: bool) -> None:
        nq, nd = len(query_labels), len(db_labels)
        if nq * nd <= n_pairs:
            rows, cols = np.divmod(np.arange(nq * nd, dtype=np.int64), nd)
        else:
            rows = rng.integers(0, nq, size=n_pairs)
            cols = rng.integers(0, nd, size=n_pairs)
        if same_set:  # the pair of an item with itself says nothing
            keep = rows != cols
            rows, cols = rows[keep], cols[keep]
        self.rows, self.cols = rows, cols
        self.similar = np.empty(len(rows), dtype=bool)
        for start in range(0, len(rows), _CHUNK * 16):
            sl = slice(start, start + _CHUNK * 16)
            self.similar[sl] = (query_labels[rows[sl]] & db_labels[cols[sl]]).any(axis=1)
        self.y = np.zeros(len(rows), dtype=np.int16)

    def reset(self, query_codes: np.ndarray, db_codes: np.ndarray) -> None:
        self.y = np.zeros(len(self.rows), dtype=np.int16)
        for k in range(query_codes.shape[1]):
            self.y += self.bit_products(query_codes[:, k], db_codes[:, k])

    def bit_products(self, q_bit: np.ndarray, d_bit: np.ndarray) -> np.ndarray:
        return (q_bit[self.rows].astype(np.int16) * d_bit[self.cols]).astype(np.int16)

    def counts(self, y: np.ndarray, bits: int) -> np.ndarray:
        index = (y.astype(np.int64) + bits) // 2 + (bits + 1) * self.similar
        return np.bincount(index, minlength=2 * (bits + 1)).reshape(2, bits + 1)


@dataclass
class AsymmetricCodes:
    """Learned state: the query projection and the database side (``W_d`` or ``V``)."""

    query_weights: np.ndarray
    db_weights: np.ndarray | None
    db_codes: np.ndarray
    theta: float
    history: list[float] = field(default_factory=list)


class NeyshaburTrainer:
    """Greedy bit-wise training of Lin:Lin (``database="linear"``) or Lin:V (``"codes"``).

    ``xq``/``xd``: standardised features with the bias column (float32); ``xd`` is the
    database side (the same array as ``xq`` when the training set is the database).
    ``lq``/``ld``: multi-hot labels (bool).
    """

    gram: np.ndarray | None = None  # _training_gram of _gram_of, set by fit
    _gram_of: np.ndarray | None = None

    def __init__(self, bits: int, database: str, cfg: NeyshaburConfig, ctx: RunContext) -> None:
        if database not in ("linear", "codes"):
            raise ValueError(f"database must be 'linear' or 'codes', got {database!r}")
        self.bits, self.database, self.cfg, self.ctx = bits, database, cfg, ctx
        self.rng = ctx.rng

    # ------------------------------------------------------------ loss tables

    def _saving_table(self, theta: float) -> tuple[np.ndarray, np.ndarray]:
        """``M`` as a function of the other bits' product ``y`` in ``-(K-1)..K-1``."""
        k = self.bits
        y = np.arange(-k + 1, k, dtype=np.float64)  # index y + K - 1
        tables = []
        for similar in (False, True):
            flag = np.full(y.shape, similar)
            tables.append((pair_loss(flag, y - 1, theta, self.cfg.beta, self.cfg.conv)
                           - pair_loss(flag, y + 1, theta, self.cfg.beta, self.cfg.conv))
                          .astype(np.float32))
        return tables[0], tables[1]

    def _saving_block(self, rows: np.ndarray, cols: np.ndarray, qc: np.ndarray, dc: np.ndarray,
                      bit: int, tables: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """``M`` on the block ``rows x cols`` (float32), from the other bits' products."""
        q = qc[rows].astype(np.float32)
        d = dc[cols].astype(np.float32)
        y = q @ d.T - np.outer(q[:, bit], d[:, bit])
        index = y.astype(np.int32) + (self.bits - 1)
        similar = self.groups.block(rows, cols)
        return np.where(similar, tables[1][index], tables[0][index])

    # ------------------------------------------------------------ training

    def fit(self, xq: np.ndarray, lq: np.ndarray, xd: np.ndarray, ld: np.ndarray) -> AsymmetricCodes:
        cfg, rng, k = self.cfg, self.rng, self.bits
        self.lq, self.ld = lq.astype(bool), ld.astype(bool)
        self.groups = LabelGroups(self.lq, self.ld)
        same_set = xq is xd
        self.gram, self._gram_of = self._training_gram(xq), xq
        wq = rng.standard_normal((k, xq.shape[1])).astype(np.float32)
        wq[:, -1] = 0.0  # no bias at the start, as the release
        wq /= np.linalg.norm(wq, 2)
        qc = binarize(xq @ wq.T)
        wd = wq.copy() if self.database == "linear" else None
        dc = binarize(xd @ wq.T)  # Lin:V starts from the symmetric codes
        stats = PairStatistics(self.lq, self.ld, cfg.n_pairs, rng, same_set)
        stats.reset(qc, dc)
        theta, loss = best_threshold(stats.counts(stats.y, k), k, cfg.beta, cfg.conv)
        history = [loss]
        self.ctx.log_metric("loss", loss, 0)
        min_loss, min_epoch, step = loss, 0, 0
        for epoch in range(1, cfg.max_epochs + 1):
            for bit in self.ctx.progress(rng.permutation(k), total=k, desc=f"epoch {epoch}"):
                bit = int(bit)
                tables = self._saving_table(theta)
                new_wq, new_wd, new_dbit = self._update_bit(xq, xd, qc, dc, wq, wd, bit, tables)
                q_bit = binarize(xq @ new_wq)
                d_bit = binarize(xd @ new_wd) if new_wd is not None else new_dbit
                y = (stats.y - stats.bit_products(qc[:, bit], dc[:, bit])
                     + stats.bit_products(q_bit, d_bit))
                new_theta, new_loss = best_threshold(stats.counts(y, k), k, cfg.beta, cfg.conv)
                if new_loss < loss + cfg.tolerance:
                    wq[bit] = new_wq
                    qc[:, bit] = q_bit
                    dc[:, bit] = d_bit
                    if wd is not None:
                        wd[bit] = new_wd
                    stats.y, theta, loss = y, new_theta, new_loss
                step += 1
                history.append(loss)
                self.ctx.log_metric("loss", loss, step)
                self.ctx.log_metric("theta", theta, step)
                if loss <= min_loss - cfg.epsilon:
                    min_loss, min_epoch = loss, epoch
            if epoch - min_epoch > cfg.window:
                break
        return AsymmetricCodes(wq, wd, dc, theta, history)

    def _training_gram(self, x: np.ndarray) -> np.ndarray | None:
        """``x x^T`` of the query-side training rows (float32), formed once per fit, when the
        compiled hinge SGD should run through it (:func:`hinge_sgd`'s ``gram``): blocks of
        fewer rows than feature dims and at most ``_MAX_GRAM_ROWS`` rows. Else None."""
        n, d = x.shape
        if (self.cfg.kernels != "numba" or n > _MAX_GRAM_ROWS
                or min(self.cfg.block_size, n) >= d):
            return None
        return x @ x.T

    def _gram_block(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """The Gram matrix of ``x[rows]`` from the kept one (None when there is none, or
        ``x`` is not the array it was formed from)."""
        if self.gram is None or x is not self._gram_of:
            return None
        from ._neyshabur_kernels import gather_square

        out = np.empty((len(rows), len(rows)), dtype=np.float32)
        gather_square(self.gram, np.ascontiguousarray(rows, dtype=np.int64), out)
        return out

    def _update_bit(self, xq: np.ndarray, xd: np.ndarray, qc: np.ndarray, dc: np.ndarray,
                    wq: np.ndarray, wd: np.ndarray | None, bit: int,
                    tables: tuple[np.ndarray, np.ndarray],
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Alternate the query and database steps for one bit (``updateW`` / ``updateWV``)."""
        cfg, rng = self.cfg, self.rng
        nq, nd = len(xq), len(xd)
        w_q = wq[bit].copy()
        w_d = wd[bit].copy() if wd is not None else None
        v = dc[:, bit].copy()
        best, best_round = -np.inf, 0
        # When a block covers every row (and column), M is the same in every round: the
        # permutation the release draws only reorders it, and SGD samples rows uniformly.
        whole = nq <= cfg.block_size and (w_d is None or nd <= cfg.block_size)
        saving, rows, cols = None, np.arange(nq), np.arange(nd)
        packed = self._packed(qc, dc, bit, tables)
        for rnd in range(1, cfg.max_rounds + 1):
            if not whole:
                rows = rng.permutation(nq)[: cfg.block_size]
                if w_d is not None:
                    cols = rng.permutation(nd)[: min(cfg.block_size, nd)]
            if saving is None or not whole:
                if packed is not None:
                    saving = _PackedBlock(packed, rows, cols)
                elif w_d is not None:  # Lin:Lin: a block of database rows too
                    saving = _DenseBlock(self._saving_block(rows, cols, qc, dc, bit, tables))
                else:  # Lin:V: every database item, in column chunks
                    saving = _ChunkedBlock(
                        lambda c, rows=rows: self._saving_block(rows, c, qc, dc, bit, tables),
                        len(rows), nd)
            x_rows = xq[rows]  # gathered once a round (4,096-d: 16 MB per 1,000 rows)
            x_cols = xd[cols] if w_d is not None else None
            r = binarize(x_cols @ w_d) if w_d is not None else v
            mr = saving.matvec(r.astype(np.float32))
            w_q = hinge_sgd(binarize(mr), x_rows, np.abs(mr), w_q, cfg, rng,
                            self._gram_block(xq, rows))
            lq = binarize(x_rows @ w_q).astype(np.float32)
            lm = saving.rmatvec(lq)
            if w_d is not None:
                w_d = hinge_sgd(binarize(lm), x_cols, np.abs(lm), w_d, cfg, rng,
                                self._gram_block(xd, cols))
                objective = float(lm @ binarize(x_cols @ w_d))
            else:
                v = np.where(lm == 0, v, binarize(lm)).astype(np.int8)
                objective = float(np.abs(lm).sum())
            if objective > best:
                best, best_round = objective, rnd
            if rnd - best_round > cfg.patience:
                break
        return w_q, w_d, (None if w_d is not None else v)


    def _packed(self, qc: np.ndarray, dc: np.ndarray, bit: int,
                tables: tuple[np.ndarray, np.ndarray]) -> _PackedCodes | None:
        """The packed state of :class:`_PackedBlock` (None: use the numpy reference path,
        also when the label-group table is too large to hold)."""
        table = self.groups.table
        if (self.cfg.kernels != "numba" or table is None
                or table.size * (2 * self.bits - 1) > _MAX_PAIR_TABLE):
            return None
        return _PackedCodes(qc, dc, bit, self.groups, tables)


class _PackedCodes:
    """Codes packed into 64-bit words, the mask of the other bits, label groups and the
    saving tables: all that the compiled products with ``M`` read."""

    def __init__(self, qc: np.ndarray, dc: np.ndarray, bit: int, groups: LabelGroups,
                 tables: tuple[np.ndarray, np.ndarray]) -> None:
        from ._neyshabur_kernels import pack_codes

        k = qc.shape[1]
        words = (k + 63) // 64
        self.q_words = np.empty((len(qc), words), dtype=np.uint64)
        pack_codes(qc, self.q_words)
        if dc is qc:
            self.d_words = self.q_words
        else:
            self.d_words = np.empty((len(dc), words), dtype=np.uint64)
            pack_codes(dc, self.d_words)
        others = np.ones((1, k), dtype=np.int8)
        others[0, bit] = -1
        self.mask = np.empty((1, words), dtype=np.uint64)
        pack_codes(others, self.mask)
        self.mask = self.mask[0]
        self.q_group = np.ascontiguousarray(groups.gq, dtype=np.int32)
        self.d_group = np.ascontiguousarray(groups.gd, dtype=np.int32)
        similar = np.asarray(groups.table, dtype=bool)[:, :, None]
        self.pair_tables = np.where(similar, tables[1], tables[0]).astype(np.float32)
        self.top = 2 * k - 2
        self._columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def distinct_columns(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One representative of each distinct (label group, other bits) among ``cols``, and
        for every column the index of its representative. Kept for the last ``cols`` array
        (Lin:V passes the same one, every database item, in every round of a bit)."""
        if self._columns is not None and self._columns[0] is cols:
            return self._columns[1], self._columns[2]
        keys = np.column_stack([self.d_group[cols].astype(np.uint64), self.d_words[cols] & self.mask])
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        result = (np.ascontiguousarray(cols[first], dtype=np.int64), inverse.reshape(-1))
        self._columns = (cols, *result)
        return result


class _PackedBlock:
    """``M`` on ``rows x cols`` as compiled products, never formed (module docstring).

    Columns with the same label group and the same other bits are the same column of ``M``,
    so the products run over one representative column per distinct (group, other bits):
    ``M v`` sums ``v`` within each distinct column first, and ``u^T M`` is computed once per
    distinct column and copied to its duplicates. For Lin:V this is most of the database:
    its code words settle to a few per label group within the first epoch (one per class
    on single-label data), so a round's products over 59,000 database items shrink to a
    few dozen columns. ``u^T M`` is bit for bit what the column-by-column product gives;
    ``M v`` adds the same terms in another order (float64 accumulation).
    """

    def __init__(self, packed: _PackedCodes, rows: np.ndarray, cols: np.ndarray) -> None:
        self.p = packed
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.cols, self.inverse = packed.distinct_columns(cols)

    def _call(self, kernel: Callable[..., None], vector: np.ndarray, size: int) -> np.ndarray:
        p, out = self.p, np.empty(size, dtype=np.float64)
        kernel(p.q_words, self.rows, p.d_words, self.cols, p.mask, p.q_group, p.d_group,
               p.pair_tables, p.top, np.ascontiguousarray(vector, dtype=np.float64), out)
        return out

    def matvec(self, v: np.ndarray) -> np.ndarray:
        from ._neyshabur_kernels import saving_matvec

        sums = np.bincount(self.inverse, weights=v, minlength=len(self.cols))
        return self._call(saving_matvec, sums, len(self.rows)).astype(np.float32)

    def rmatvec(self, u: np.ndarray) -> np.ndarray:
        from ._neyshabur_kernels import saving_rmatvec

        return self._call(saving_rmatvec, u, len(self.cols))[self.inverse].astype(np.float32)


class _DenseBlock:
    def __init__(self, m: np.ndarray) -> None:
        self.m = m

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self.m @ v

    def rmatvec(self, u: np.ndarray) -> np.ndarray:
        return u @ self.m


class _ChunkedBlock:
    """``M`` over all database columns: built once if small, else chunk by chunk per use."""

    _KEEP = 32_000_000  # entries (128 MB of float32)

    def __init__(self, make: Callable[[np.ndarray], np.ndarray], n_rows: int, n_cols: int) -> None:
        self.make, self.n_cols = make, n_cols
        self.full = make(np.arange(n_cols)) if n_rows * n_cols <= self._KEEP else None

    def _chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.full is not None:
            yield 0, self.full
            return
        for start in range(0, self.n_cols, _CHUNK):
            yield start, self.make(np.arange(start, min(start + _CHUNK, self.n_cols)))

    def matvec(self, v: np.ndarray) -> np.ndarray:
        out = None
        for start, block in self._chunks():
            part = block @ v[start:start + block.shape[1]]
            out = part if out is None else out + part
        return out

    def rmatvec(self, u: np.ndarray) -> np.ndarray:
        out = np.empty(self.n_cols, dtype=np.float32)
        for start, block in self._chunks():
            out[start:start + block.shape[1]] = u @ block
        return out


class NeyshaburHasher(AsymmetricHasher):
    """Common ``fit``/``encode`` of Lin:Lin and Lin:V; subclasses set ``_database``.

    Learned state: ``standardiser_``, ``query_weights_`` (K x (d+1)), ``theta_``,
    ``loss_history_``, ``db_codes_`` (the database codes handed out by ``database_codes()``),
    and for Lin:Lin ``db_weights_``.
    """

    _database = "linear"
    param_rules = {"beta": "(0,1)", "conv": ">0", "max_epochs": ">=1", "block_size": ">=1", "n_pairs": ">=1",
                   "sgd_epochs": ">=1", "sgd_batches": ">=1", "sgd_batch": ">=1"}

    def __init__(self, bits: int = 32, beta: float = 0.7, conv: float = 0.5,
                 max_epochs: int = 10, block_size: int = 1000, n_pairs: int = 1_000_000,
                 sgd_epochs: int = 10, sgd_batches: int = 100, sgd_batch: int = 100,
                 kernels: str = "numba") -> None:
        self.bits = bits
        self.beta = beta
        self.conv = conv
        self.max_epochs = max_epochs
        self.block_size = block_size
        self.n_pairs = n_pairs
        self.sgd_epochs = sgd_epochs
        self.sgd_batches = sgd_batches
        self.sgd_batch = sgd_batch
        self.kernels = kernels

    def _config(self) -> NeyshaburConfig:
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(f"{self.meta.name}: beta must lie in (0, 1), got {self.beta}")
        if self.conv <= 0:
            raise ConfigError(f"{self.meta.name}: conv must be positive, got {self.conv}")
        if self.kernels not in ("numba", "numpy"):
            raise ConfigError(f"{self.meta.name}: kernels must be 'numba' or 'numpy', "
                              f"got {self.kernels!r}")
        return NeyshaburConfig(beta=self.beta, conv=self.conv, max_epochs=self.max_epochs,
                               block_size=self.block_size, n_pairs=self.n_pairs,
                               sgd_epochs=self.sgd_epochs, sgd_batches=self.sgd_batches,
                               sgd_batch=self.sgd_batch, kernels=self.kernels)

    def _features(self, inputs: Any) -> np.ndarray:
        return with_bias(self.standardiser_.transform(inputs))

    def fit(self, data: TrialData, ctx: RunContext) -> NeyshaburHasher:
        cfg = self._config()
        self.standardiser_ = Standardiser().fit(data.train.inputs)
        xq = self._features(data.train.inputs)
        lq = np.asarray(data.train.labels) > 0
        if self._database == "codes" and not data.train_is_database:
            # Lin:V learns a code word for every database item (ADSH eq. 3 setting)
            xd, ld = self._features(data.database.inputs), np.asarray(data.database.labels) > 0
            self.learned_indices_ = np.asarray(data.database.indices)
        else:
            xd, ld = xq, lq
            self.learned_indices_ = np.asarray(data.train.indices)
        result = NeyshaburTrainer(self.bits, self._database, cfg, ctx).fit(xq, lq, xd, ld)
        self.query_weights_ = result.query_weights
        self.theta_ = result.theta
        self.loss_history_ = result.history
        if self._database == "linear":
            self.db_weights_ = result.db_weights
        self.db_codes_ = result.db_codes
        return self

    def encode(self, inputs: Any) -> np.ndarray:
        """Query codes ``sign(W_q [x; 1])``."""
        self._check_fitted("query_weights_")
        return _project(self._features(inputs), self.query_weights_)

    def database_codes(self) -> np.ndarray:
        self._check_fitted("db_codes_")
        return self.db_codes_


def _project(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return binarize(x @ weights.T)
