"""FastH: fast supervised hashing with decision trees (Lin, Shen, Shi, van den Hengel & Suter,
CVPR 2014).

Two-step hashing, one bit at a time. For bit r (r = 1..K), with ``d_ij`` the Hamming distance
between the *hash functions' outputs* on the first r-1 bits:

**Loss** (the paper's "Hinge" loss, the one the authors' demo recommends; normalised by
the current bit count r as the authors' code does, ``update_bit_loss = r``)::

    l_ij(d) = (d / r)^2                    if i and j are similar (share a label)
    l_ij(d) = max(0.5 - d / r, 0)^2        otherwise

**Step 1, binary code inference** (the paper's first step): with the earlier bits fixed,
the new bit ``z`` in {-1, +1}^n changes ``d_ij`` by ``[z_i != z_j]``, so the loss of all
pairs is, up to a constant, the binary quadratic problem

    min_z  E(z) = 1/2 sum_{i != j} a_ij z_i z_j,     a_ij = l_ij(d_ij) - l_ij(d_ij + 1)

(``a_ij = l(agree) - l(disagree)``). A pair term is submodular iff ``a_ij <= 0``, which holds
for every similar pair (the loss grows with the distance). **Block graph cut**:
take a block of points that are pairwise similar, here one block per class (the authors'
``gen_infer_block_multiclass``; for multi-label data one block per label, the points carrying
it, so blocks may overlap); with the other points fixed, the block's sub-problem

    min_{z_B} sum_{i in B} u_i z_i + sum_{i<j in B} a_ij z_i z_j,   u_i = sum_{j not in B} a_ij z_j

is submodular and solved *exactly* by one s-t minimum cut (Kolmogorov & Zabih): node i in
the sink segment means ``z_i = +1``; the terminal edges carry ``2 max(u_i, 0)`` (source)
and ``2 max(-u_i, 0)`` (sink), each similar pair an edge of capacity ``-2 a_ij`` both ways.
Every block step is exact, so E never increases. As the authors: all bits start at +1, and
the blocks are swept ``infer_iters`` (2) times, in a random order.

**Step 2, hash function**: boosted decision trees (LightGBM, 200 rounds of depth-4
trees; ``hashbench.oos.BoostedTrees``) fitted to ``z`` with per-example weights
``w_i = sum_j |a_ij|`` (the authors' ``updata_data_weights``: how much loss rides on the
point). Bit r of the codes is the trees' output, and it is these outputs, not ``z``, that
give ``d_ij`` for bit r+1 (the authors' ``train_stagewise``), so later bits correct the trees'
mistakes.

Logged per bit: ``bqp_energy`` (E after inference, per pair), ``step1_loss`` (mean pair loss
of the r-bit codes with the inferred bit), ``loss`` (the same with the trees' bit: the
objective the codes actually reach) and ``tree_agreement`` (fraction of points where the
trees reproduce z).

Sources: the paper and the authors' MATLAB release (``fasthash``: hinge loss normalised by the
current bit count, all-ones start, 2 block sweeps, pair-weight data weights, 200 rounds of
depth-4 trees). The paper's text was not at hand to cite equation numbers; the derivation is
stated in full above instead.

Trees (issue 14): :class:`hashbench.oos.BoostedTrees`, set by the ``tree_*`` parameters. Since
revision 2 each tree sees :func:`hashbench.oos.auto_feature_fraction` of the inputs by default
(logged as the metric ``tree_feature_fraction``; ``tree_feature_fraction=1.0`` is the reference).
Since revision 3 they use 63 histogram bins per feature (``tree_max_bin=63``; 255 is the
reference). Since revision 4 the auto fraction is 256 features per tree at every width (it was
a tenth above 2,560 dims; the same below). The other speed options are off (no
``xgboost-multi``: bit-by-bit trees need a model per bit);
``hashbench/oos.py`` has the measurements.

Cost: every bit touches all n^2 pairs (never an n x n matrix): step 1 is block-wise (one
block per class, a unary sum over all n points per block row), so time is O(n^2) per bit and
memory O(max_block^2 + n) with the compiled kernels (``kernels="numba"``, the default,
issue 14: pair sums from the packed earlier bits and a label-group table,
``methods/_fasth_kernels.py``; ``"numpy"`` is the reference path, which forms block x n
slabs, up to 2,000 x n). Measured on 10-class data at bit 24 (a busy 2-core machine):
5,000 points, one block sweep 4.3 s -> 2.7 s (now mostly the graph cuts), one summary
(energy, loss, data weights) 8.4 s -> 0.26 s; a bit's step 1 (2 sweeps, 2 summaries) about
25 s -> 6 s. The graph cuts are exact either way and the tests find identical inferred bits.
Intended for sampled training sets (the ADSH paper trains FastH on 5,000-10,500 points);
at 59,000 points see the measurement in ``benchmarks/paper_cost.py``'s notes.
``tree_pca_dims`` is passed to the trees (it was ignored by ``fit`` before issue 14).
Blocks larger than ``max_block`` are split at random into pieces (still pairwise similar,
still solved exactly) to bound the size of a graph. Needs PyMaxflow (``import maxflow``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashbench.api import Hasher, MethodMeta, RunContext, TrialData, binarize
from hashbench.errors import ConfigError
from hashbench.oos import BoostedTrees
from hashbench.registry import register

from ._neyshabur import LabelGroups

_ROWS = 1024


def hinge_loss_table(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Loss ``l(d)`` for ``d = 0..bits`` (dissimilar, similar), normalised by ``bits``."""
    d = np.arange(bits + 1, dtype=np.float64) / bits
    return np.maximum(0.5 - d, 0.0) ** 2, d ** 2


def pair_coefficients(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``a(d) = l(d) - l(d + 1)`` for ``d = 0..bits-1`` (dissimilar, similar), float32."""
    dissimilar, similar = hinge_loss_table(bits)
    return ((dissimilar[:-1] - dissimilar[1:]).astype(np.float32),
            (similar[:-1] - similar[1:]).astype(np.float32))


def block_energy(z: np.ndarray, unary: np.ndarray, pairwise: np.ndarray) -> float:
    """``sum_i u_i z_i + sum_{i<j} a_ij z_i z_j`` (``pairwise`` symmetric, zero diagonal)."""
    z = z.astype(np.float64)
    return float(unary @ z + 0.5 * z @ pairwise @ z)


def solve_block(unary: np.ndarray, pairwise: np.ndarray) -> np.ndarray:
    """Exact minimiser over {-1, +1}^m of ``block_energy`` for submodular ``pairwise``
    (symmetric, zero diagonal, every entry <= 0), by one s-t minimum cut."""
    try:
        import maxflow
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError("fasth needs PyMaxflow for its graph cuts: pip install PyMaxflow") from exc
    m = len(unary)
    if m == 1:
        return np.array([1 if unary[0] < 0 else -1], dtype=np.int8)
    if (pairwise > 1e-12).any():
        raise ValueError("solve_block: a positive pair coefficient is not submodular")
    graph = maxflow.Graph[float](m, m * 4)
    nodes = graph.add_nodes(m)
    i, j = np.nonzero(np.triu(pairwise < 0, k=1))
    if len(i):
        cap = (-2.0 * pairwise[i, j]).astype(np.float64)
        graph.add_edges(nodes[i], nodes[j], cap, cap)
    u = 2.0 * np.asarray(unary, dtype=np.float64)
    graph.add_grid_tedges(nodes, np.maximum(u, 0.0), np.maximum(-u, 0.0))
    graph.maxflow()
    sink = graph.get_grid_segments(nodes)  # True: sink segment, z = +1
    return np.where(sink, 1, -1).astype(np.int8)


class PairProblem:
    """The bit-r problem: coefficients ``a_ij`` from the labels and the earlier bits ``H``.

    ``kernels="numba"``: unaries, block pairs and summaries by the compiled pair sums of
    ``methods/_fasth_kernels.py`` (packed codes, no n-column slabs); ``"numpy"``: the
    reference path below (also used when the label-group table is too large)."""

    def __init__(self, codes: np.ndarray, groups: LabelGroups, bit: int,
                 kernels: str = "numba") -> None:
        self.h = codes.astype(np.float32)  # (n, bit - 1) outputs of the earlier trees
        self.groups = groups
        self.bit = bit
        self.coef = pair_coefficients(bit)
        self.loss = hinge_loss_table(bit)
        self.packed = None
        table = groups.table
        if kernels == "numba" and table is not None and table.size * (bit + 1) <= 16_000_000:
            from ._neyshabur_kernels import pack_codes

            self.words = np.zeros((len(codes), max(1, (codes.shape[1] + 63) // 64)), np.uint64)
            pack_codes(np.ascontiguousarray(codes), self.words)
            similar = np.asarray(table, dtype=bool)[:, :, None]
            self.group = np.ascontiguousarray(groups.gq, dtype=np.int32)
            self.coef_t = np.where(similar, self.coef[1], self.coef[0]).astype(np.float64)
            self.loss_t = np.where(similar, self.loss[1], self.loss[0]).astype(np.float64)
            self.packed = True

    def unary_and_block(self, block: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(u, a[block, block])`` of the block's sub-problem (module docstring)."""
        if self.packed is None:
            a = self.rows(block)
            inside = a[:, block]
            unary = a @ z.astype(np.float32) - inside @ z[block].astype(np.float32)
            return unary, inside
        from ._fasth_kernels import block_pairs, block_unary

        block = np.ascontiguousarray(block, dtype=np.int64)
        in_block = np.zeros(len(z), dtype=bool)
        in_block[block] = True
        unary = np.empty(len(block))
        block_unary(self.words, block, in_block, z.astype(np.float64), self.group, self.coef_t, unary)
        inside = np.empty((len(block), len(block)))
        block_pairs(self.words, block, self.group, self.coef_t, inside)
        return unary, inside

    def distances(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        h_cols = self.h if cols is None else self.h[cols]
        inner = self.h[rows] @ h_cols.T
        return ((self.h.shape[1] - inner) / 2).round().astype(np.int32)

    def rows(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """``a`` on ``rows x cols`` (all points by default), with a_ii = 0."""
        cols_ = np.arange(len(self.h)) if cols is None else cols
        d = self.distances(rows, cols)
        similar = self.groups.block(rows, cols_)
        a = np.where(similar, self.coef[1][d], self.coef[0][d])
        a[rows[:, None] == cols_[None, :]] = 0.0
        return a

    def summary(self, z: np.ndarray) -> dict[str, Any]:
        """Energy per pair, mean r-bit loss with bit z, and data weights ``sum_j |a_ij|``."""
        n = len(z)
        if self.packed is not None:
            from ._fasth_kernels import pair_summary

            energy_rows, loss_rows, weights = np.empty(n), np.empty(n), np.empty(n)
            pair_summary(self.words, z.astype(np.float64), self.group, self.coef_t, self.loss_t,
                         energy_rows, loss_rows, weights)
            pairs = max(n * (n - 1), 1)
            return {"energy": float(energy_rows.sum()) / pairs, "loss": float(loss_rows.sum()) / pairs,
                    "weights": weights}
        zf = z.astype(np.float32)
        energy, loss, weights = 0.0, 0.0, np.empty(n)
        for start in range(0, n, _ROWS):
            rows = np.arange(start, min(start + _ROWS, n))
            a = self.rows(rows)
            energy += 0.5 * float(zf[rows] @ (a @ zf))
            weights[rows] = np.abs(a).sum(axis=1)
            d = self.distances(rows) + (z[rows, None] != z[None, :])
            similar = self.groups.block(rows, np.arange(n))
            values = np.where(similar, self.loss[1][d], self.loss[0][d])
            values[np.arange(len(rows)), rows] = 0.0
            loss += float(values.sum())
        pairs = max(n * (n - 1), 1)
        return {"energy": energy / pairs, "loss": loss / pairs, "weights": weights}


def make_blocks(labels: np.ndarray, max_block: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One block per label (its points are pairwise similar), split into pieces of at most
    ``max_block``; an unlabelled point is its own block."""
    labels = np.asarray(labels) > 0
    blocks = []
    for c in range(labels.shape[1]):
        members = np.flatnonzero(labels[:, c])
        if len(members) == 0:
            continue
        members = rng.permutation(members)
        pieces = int(np.ceil(len(members) / max_block))
        blocks.extend(np.sort(piece) for piece in np.array_split(members, pieces))
    blocks.extend(np.array([i]) for i in np.flatnonzero(~labels.any(axis=1)))
    return blocks


def block_graph_cut(problem: PairProblem, blocks: list[np.ndarray], z: np.ndarray,
                    sweeps: int, rng: np.random.Generator) -> np.ndarray:
    """Block coordinate descent on E(z), each block solved exactly by a graph cut."""
    z = z.copy()
    for _ in range(sweeps):
        for b in rng.permutation(len(blocks)):
            block = blocks[b]
            unary, inside = problem.unary_and_block(block, z)
            z[block] = solve_block(unary, inside)
    return z


@register
class FastH(Hasher):
    meta = MethodMeta(
        name="fasth",
        title="FastH",
        citation="Lin, Shen, Shi, van den Hengel & Suter, Fast supervised hashing with decision "
        "trees for high-dimensional data, CVPR 2014",
        family="shallow",
        supervised=True,
        revision=4,  # 2: trees sample features (tree_feature_fraction=None, issue 14);
        # 3: 63 histogram bins (tree_max_bin=63, issue 14); 4: 256 features per tree above
        # 2,560 dims (was a tenth; issue 14)
    )
    param_rules = {"n_rounds": ">=1", "max_depth": ">=1", "learning_rate": ">0", "infer_iters": ">=1",
                   "max_block": ">=1", "tree_pca_dims": ">=1", "tree_feature_fraction": "(0,1]",
                   "tree_max_bin": ">=2"}
    conformance_params = {"n_rounds": 20}

    def __init__(self, bits: int = 32, n_rounds: int = 200, max_depth: int = 4,
                 learning_rate: float = 0.1, infer_iters: int = 2, max_block: int = 2000,
                 tree_pca_dims: int | None = None, kernels: str = "numba",
                 tree_feature_fraction: float | None = None, tree_max_bin: int = 63) -> None:
        self.bits = bits
        self.n_rounds = n_rounds
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.infer_iters = infer_iters
        self.max_block = max_block
        self.tree_pca_dims = tree_pca_dims
        self.kernels = kernels
        self.tree_feature_fraction = tree_feature_fraction
        self.tree_max_bin = tree_max_bin

    def _trees(self) -> BoostedTrees:
        """Step 2's unfitted hash function (the bits are appended with ``fit_bit``)."""
        return BoostedTrees(n_rounds=self.n_rounds, max_depth=self.max_depth,
                            learning_rate=self.learning_rate, pca_dims=self.tree_pca_dims,
                            feature_fraction=self.tree_feature_fraction, max_bin=self.tree_max_bin)

    def fit(self, data: TrialData, ctx: RunContext) -> FastH:
        x = np.asarray(data.train.inputs, dtype=np.float32)
        labels = np.asarray(data.train.labels) > 0
        n = len(x)
        if n < 2:
            raise ConfigError("fasth needs at least two training points")
        if self.kernels not in ("numba", "numpy"):
            raise ConfigError(f"fasth: kernels must be 'numba' or 'numpy', got {self.kernels!r}")
        rng = ctx.rng
        groups = LabelGroups(labels, labels)
        blocks = make_blocks(labels, self.max_block, rng)
        trees = self._trees()  # tree_pca_dims applies (it was ignored before)
        codes = np.empty((n, 0), dtype=np.int8)
        self.history_: list[dict[str, float]] = []
        for bit in ctx.progress(range(1, self.bits + 1), total=self.bits, desc="fasth bits"):
            problem = PairProblem(codes, groups, bit, self.kernels)
            z = block_graph_cut(problem, blocks, np.ones(n, dtype=np.int8), self.infer_iters, rng)
            step1 = problem.summary(z)
            weights = step1["weights"]
            weights = weights / weights.mean() if weights.mean() > 0 else None
            h = trees.fit_bit(x, z, seed=int(rng.integers(2**31 - 1)), sample_weight=weights)
            codes = np.hstack([codes, h.reshape(-1, 1).astype(np.int8)])
            record = {"bqp_energy": step1["energy"], "step1_loss": step1["loss"],
                      "loss": problem.summary(h)["loss"],
                      "tree_agreement": float(np.mean(h == z))}
            self.history_.append(record)
            for name, value in record.items():
                ctx.log_metric(name, value, bit)
        trees.release()  # the binned training set shared by the bits
        self.trees_ = trees
        if trees.feature_fraction_ is not None:  # what the trees ran with (None = auto)
            ctx.log_metric("tree_feature_fraction", trees.feature_fraction_, 0)
        self.train_codes_ = codes
        return self

    def encode(self, inputs: Any) -> np.ndarray:
        self._check_fitted("trees_")
        return binarize(self.trees_.decision_function(np.asarray(inputs, dtype=np.float32)))
