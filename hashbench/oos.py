"""Out-of-sample extension: hash functions fitted to codes that a method learned directly.

Several supervised methods learn binary codes ``B`` in {-1, +1}^(n x c) for their training
points only (LFH, COSDISH, FastH, and every "-D" variant). Encoding a point that was not in
training needs a second step, a hash function ``h(x) -> {-1, +1}^c`` fitted to ``(X, B)``:
"two-step" hashing (Lin et al., CVPR 2014). This module holds that second step and a small
template for methods built this way.

Public API (kept small on purpose; FastH and later methods reuse it):

``BoostedTrees(n_rounds=200, max_depth=4, learning_rate=0.1, feature_fraction=1.0, ...)``
    (the methods pass ``feature_fraction=None``: :func:`auto_feature_fraction`)
    One LightGBM binary classifier per bit, label ``B[:, k] > 0`` (the ADSH paper's
    "boosted decision tree for out-of-sample extension", with FastH's setting of 200 rounds
    of depth-4 trees). ``fit(x, codes, seed=, sample_weight=)`` fits every bit;
    ``fit_bit(x, bit, seed=, sample_weight=)`` appends one bit and returns its {-1, +1}
    predictions on ``x`` (for methods that learn bit by bit, like FastH);
    ``decision_function(x)`` gives the raw scores ``(n, bits)``; ``predict(x)`` the int8 codes
    (score > 0 -> +1, else -1), both through :mod:`hashbench.forest`'s compiled trees (the
    same raw scores as LightGBM's ``predict``, in one pass over the rows for all bits). The
    binned LightGBM dataset of ``x`` is built once and shared by all bits; ``release()``
    frees it after the last ``fit_bit``.

``LinearProjection(ridge=1.0)``
    The linear extension of the LFH and COSDISH authors' code: ridge regression of the
    targets on the features, ``W = (X^T X + ridge I)^{-1} X^T T`` (no intercept: both codes
    standardise the features first), ``h(x) = sign(x W)``. Same ``fit`` / ``predict`` /
    ``decision_function`` methods; ``T`` may be the codes or real-valued scores.

``make_extension(kind, **options)``
    ``kind`` is ``"trees"`` or ``"linear"`` (``EXTENSIONS``); options go to the constructor.

``TwoStepHasher``
    An :class:`~hashbench.api.AsymmetricHasher` template: a subclass implements
    ``_learn_codes(x, labels, ctx) -> codes`` (step 1, on standardised features) and
    ``_extension(n, d)`` (step 2's unfitted hash function), and may override
    ``_regression_targets(codes)`` (what a linear extension regresses on). ``fit``
    standardises, learns the codes, keeps them as ``database_codes()`` (the "-D" variants)
    and fits the extension; ``encode`` standardises and applies it.

Helpers: ``Standardiser`` (per-dimension z-scores, ``fit(x)`` / ``transform(x)``, float32
output, as the LFH and COSDISH demos preprocess) and ``gram_matrix(x)`` (``X^T X`` in
float64 from row chunks).

Threads: LightGBM uses ``n_jobs`` threads; by default one thread for small problems (fewer
than 4 million feature cells; when boosting, the cells one tree reads: rows times the bagging
share times the sampled features) and otherwise the ``HASHBENCH_THREADS`` environment variable,
else 2. (Issue 14: at 5,000 x 4,096 with a tenth of the features per tree, one thread took
96 ms a round and two 289 ms, best of 3 in one process at load 15 on 2 cores; 34 vs 863 ms
at load 2. Binning and prediction still follow the whole input's size.) Results do not
depend on it (LightGBM runs with ``deterministic=True`` and
column-wise histograms).
"""

from __future__ import annotations

import weakref
from abc import abstractmethod
from typing import Any, Protocol

import numpy as np

from hashbench.api import AsymmetricHasher, RunContext, TrialData, binarize
from hashbench.errors import ConfigError, positive_int_env

EXTENSIONS = ("trees", "linear")
TREE_BACKENDS = ("lightgbm", "xgboost-multi")
THREADS_ENV = "HASHBENCH_THREADS"
_CHUNK_ROWS = 8192
# Below this many feature cells (rows x dims) LightGBM runs on one thread: on small data the
# thread start-up and synchronisation cost more than they save, badly so on a busy machine.
_SMALL_PROBLEM_CELLS = 4_000_000
# Rows LightGBM samples to place the histogram bin edges (its default, 200,000, keeps a float64
# copy of every sampled value: 6 GiB at 193,734 x 4,096); quantiles need far fewer.
_BIN_SAMPLE_ROWS = 20_000
# feature_fraction=None ("auto", issue 14): each tree samples 256 features, all of them up to
# 256 dims (auto_feature_fraction).
AUTO_FEATURES = 256
# bagging_fraction=None ("auto", issue 14): each round's tree sees about this many rows
AUTO_BAGGING_ROWS = 5000


def auto_feature_fraction(d: int, floor: float = 0.0) -> float:
    """The per-tree feature fraction that ``feature_fraction=None`` picks for ``d`` inputs:
    ``min(1, max(floor, 256 / d))``: every feature up to 256 dims, 256 of them above
    (4,096-d fc7 features: a sixteenth), never under ``floor``. LFH and FastH use no floor
    (since LFH revision 5, FastH revision 4); COSDISH keeps a floor of a tenth
    (:data:`COSDISH_FRACTION_FLOOR` in ``methods/cosdish.py``: 410 features at 4,096 dims),
    the rule all three used before, because at 256 features its MAP fell outside the tolerance
    (below). The rules agree up to 2,560 dims.

    Chosen by measurement (issue 14; LFH codes, 200 rounds of depth-4 trees, one seed; MAP
    of tree-coded queries against the tree-coded database / against the learned codes as a
    "-D" database; a shared 2-core machine at load 12-25, so the times are rough):

    * synthetic CIFAR-shaped features (``benchmarks/paper_cost.py``'s generator) at 1,024
      dims, 2,000 training points, 12 bits: fraction 1.0 / 0.25 (this rule) / 0.1: MAP
      0.7994 / 0.7989 / 0.7988, "-D" 0.8792 / 0.8770 / 0.8732, fit 1,373 / 396 / 187 s. A
      tenth of 1,024 (102 features) is at the edge of the 0.005 tolerance on the "-D" side,
      hence the floor of 256 features per tree;
    * Fashion-MNIST HOG (1,296 dims; this rule: 0.198), 5,000 training points, 12 bits:
      fraction 1.0 / 0.25 / 0.1 / 0.05: MAP 0.7444 / 0.7430 / 0.7426 / 0.7373, "-D" 0.7893 /
      0.7889 / 0.7882 / 0.7838, fit 2,280 / 301 / 111 / 221 s (the reference in its own
      process at a higher load: the ratio is rough). 0.05 (65 features) is outside the
      tolerance;
    * at 4,096 dims (``benchmarks/tree_fraction.py``: validation data only, 500 queries,
      20,000-item database, 5,000 training points ("sampled") or the whole database ("-D"),
      seeds 0/1/2, one thread), a tenth (410 features, the former rule) against 256 features
      (MAP mean +- sample std over the seeds; "fine HOG": real Fashion-MNIST images carved
      from the protocol's database, 16 orientations, 3 x 3-pixel cells, 4,096 dims):

      ==============================================  =================  =================
      method, data, mode, bits                        0.1                0.0625
      ==============================================  =================  =================
      LFH, synthetic (generator seed 7), sampled, 12  0.5372 +- 0.0089   0.5421 +- 0.0032
      LFH, synthetic, sampled, 48                     0.7339 +- 0.0166   0.7332 +- 0.0158
      LFH, synthetic, "-D", 12                        0.6384 +- 0.0047   0.6349 +- 0.0049
      LFH, fine HOG, sampled, 12                      0.6725 +- 0.0060   0.6722 +- 0.0065
      LFH, fine HOG, "-D", 12                         0.7695 +- 0.0022   0.7688 +- 0.0028
      FastH, synthetic, sampled, 12                   0.8819 +- 0.0078   0.8803 +- 0.0037
      COSDISH, synthetic, sampled, 12                 0.8735 +- 0.0069   0.8645 +- 0.0052
      ==============================================  =================  =================

      LFH and FastH stay within the tolerance (0.005 or one seed's standard deviation) and
      take 256 features; COSDISH loses 0.009 on every seed (paired: -0.011, -0.008, -0.007),
      outside it, so COSDISH keeps the floor of a tenth (``floor=0.1``). Per boosting round,
      one thread, 30 rounds x 3 bits in one process: 59,000 x 4,096 0.149 -> 0.105 s, 5,000 x
      4,096 0.0225 -> 0.0157 s (0.70x). Earlier one-process timing at 5,000 x 4,096 (load
      about 4): 0.89 s per round with every feature, 0.27 s at 0.25, 0.086 s at 0.1.

    Rejected: early stopping (20 rounds on a 10 % hold-out) kept 184 of 200 rounds and lost
    0.011 MAP on HOG; ``max_bin=63`` with a tenth of the features (HOG: MAP 0.7474 against
    0.7426 without it) was not faster under this load; the PCA-128 inputs lost 0.022 MAP on
    Fashion-MNIST pixels and XGBoost's multi-output trees were slower (earlier measurements).
    """
    return float(min(1.0, max(floor, AUTO_FEATURES / max(int(d), 1))))


def auto_bagging_fraction(n: int) -> float:
    """The per-round row fraction that ``bagging_fraction=None`` picks for ``n`` training rows:
    ``min(1, 5,000 / n)``, so each tree sees about as many rows as a sampled-mode fit (every
    row up to 5,000; a "-D" fit on CIFAR-10's 59,000 database items: 8.5 %)."""
    return float(min(1.0, AUTO_BAGGING_ROWS / max(int(n), 1)))


def default_threads() -> int:
    """LightGBM threads: ``$HASHBENCH_THREADS`` if set, else 2."""
    threads = positive_int_env(THREADS_ENV)
    return 2 if threads is None else threads


class OutOfSampleExtension(Protocol):
    """What a fitted out-of-sample hash function offers."""

    def fit(self, x: np.ndarray, codes: np.ndarray, seed: int = 0,
            sample_weight: np.ndarray | None = None) -> OutOfSampleExtension: ...

    def decision_function(self, x: np.ndarray) -> np.ndarray: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def _as_bits(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a (n, bits) matrix, got shape {codes.shape}")
    return codes


class BoostedTrees:
    """Gradient-boosted tree classifiers fitted to learned codes, one output per bit.

    Each bit ``k`` is a binary problem with label ``codes[:, k] > 0``; the hash bit of a new
    point is +1 when the classifier's raw score (log-odds) is positive. A bit that is
    constant over the training points gets a constant predictor (LightGBM refuses one-class
    problems). ``sample_weight`` (``(n,)`` shared or ``(n, bits)`` per bit) weights the
    examples, as FastH's step 2 does.

    Settings (the defaults are the reference: FastH's 200 rounds of depth-4 trees on every
    input feature, one LightGBM model per bit):

    * ``pca_dims``: if set, the trees are trained on the top ``pca_dims`` principal components
      of the training inputs (:class:`PrincipalProjection`, fitted once per ``fit`` and kept
      for prediction) instead of the raw ``d`` features. The per-round cost of a tree is about
      linear in the number of features, so 4,096 -> 128 dims divides it by about 30.
    * ``backend``: ``"lightgbm"`` (one single-output model per bit) or ``"xgboost-multi"``
      (XGBoost ``hist`` with ``multi_strategy="multi_output_tree"``: one ensemble whose trees
      have a vector of ``bits`` leaf values, so one histogram set per round serves every bit;
      ``fit`` only, since ``fit_bit``'s bit-by-bit use needs one model per bit, and no
      per-bit sample weights). XGBoost runs on the GPU when ``device="auto"`` finds one.
    * ``early_stopping_rounds``: if > 0, ``validation_fraction`` of the training rows (a
      seeded draw) are held out and boosting stops once their log-loss has not improved for
      that many rounds; the model keeps the best round.
    * ``feature_fraction``: LightGBM's per-tree feature sampling (seeded); ``None`` picks
      :func:`auto_feature_fraction` of the tree inputs' dimension (kept as
      ``feature_fraction_``), the methods' default since issue 14; ``max_bin``: the
      histogram bins per feature; ``bagging_fraction`` < 1: each round's tree sees that
      fraction of the rows (LightGBM bagging, redrawn every round, seeded by the bit's seed),
      for the "-D" fits on a whole database (issue 14); ``None`` picks
      :func:`auto_bagging_fraction` of the training rows (kept as ``bagging_fraction_``).

    Cost is about linear in rows x features x rounds x bits: at 59,000 x 4,096 a round takes
    about a second on two cores, so the reference 200 rounds x 48 bits take hours there.

    The methods' setting since issue 14's second round (LFH revision 4, COSDISH 3, FastH 3):
    ``max_bin=63``. Measured (LFH codes, 200 rounds, 12 bits; MAP of tree-coded queries
    against the tree-coded database, or the learned codes for "-D"; fit seconds of the two
    settings in one process, one after the other, on a shared 2-core machine at load 17-43):

    * ``max_bin`` 255 -> 63, Fashion-MNIST HOG (1,296-d, 5,000 training points, two seeds):
      MAP 0.7067 -> 0.7076 and 0.7027 -> 0.6995 (mean -0.0012), fit 320 -> 181 s and
      501 -> 275 s (1.8x). Per boosting round at 5,000 x 4,096 with a tenth of the features
      on one thread, best of 3 in one process: 442 -> 275 ms (1.6x, load 25-29); LFH on
      ``benchmarks/paper_cost.py``'s synthetic data (15,000 + 1,000 x 4,096, 5,000 training
      points, the two trials side by side at load 26-27): MAP 0.5705 -> 0.5686 (-0.0020),
      trial 437 -> 352 s (trees 395 -> 302 s, binning 56 -> 38 s), peak 1,326 / 1,320 MiB;
    * ``bagging_fraction=None`` (``min(1, 5,000 / n)``) stays an option, off in the methods:
      on Fashion-MNIST HOG with a 15,000-item database (LFH-D, 12 bits, seed 0; a third of the
      rows per round) MAP against the learned codes 0.8248 -> 0.8196 (-0.0052) and tree-coded
      0.7898 -> 0.7770 (-0.0128), outside the 0.005 tolerance, and a CIFAR-size database would
      keep only 8.5 % of the rows. (Fit 565 s with every row vs 1,326 s bagged: the bagged fit
      ran while the load was above 100, so that ratio says nothing.) On synthetic 15,000 x
      4,096 data the bagged LFH-D reached 0.6220; its reference fit was killed twice by the
      machine's out-of-memory killer (other jobs held 21-23 of 23 GB);
    * 20,000 rows per round (``min(1, 20,000 / n)``, issue 14's fourth round) stays off too.
      It cuts a round at 59,000 x 4,096 by about a third (30 rounds, a tenth of the features,
      one thread: 6.7-7.0 s with every row, 4.3-4.6 s bagged) and held the MAP on
      ``benchmarks/paper_cost.py``'s synthetic data (LFH-D 12 bits 0.6172 -> 0.6178; 48 bits
      0.8110 -> 0.8107; COSDISH-D 48 bits 0.9410 -> 0.9416), but on real data it did not: LFH-D
      on Fashion-MNIST pixels-pca (a validation split carved from the protocol's database: 500
      queries, the other 68,500 items as database and training set; 12 bits, seed 0) 0.8667 with
      every row, 0.8578 bagged (-0.0089, outside the 0.005 tolerance).

    Why the other options stay off (issue 14; measured with LFH codes, 5,000 training points,
    200 rounds): ``pca_dims=128`` on Fashion-MNIST pixels (784 dims, 12 bits) cut 135 s to
    27 s but MAP 0.596 -> 0.574, outside the 0.005 tolerance; ``"xgboost-multi"`` on
    5,000 x 128 at 48 bits was slower than per-bit LightGBM (386 s vs 158 s, on two threads
    at a high load: not re-measured on one); LightGBM's gradient-based one-side sampling
    (``data_sample_strategy="goss"``, issue 14's fourth round) kept the MAP of LFH-D (validation
    splits carved from the database, 12 bits, seeds 0 / 1: Fashion-MNIST pixels-pca with a
    20,000-item database 0.8449 / 0.8650 -> 0.8492 / 0.8653; synthetic 20,000 x 4,096
    0.6411 / 0.6208 -> 0.6396 / 0.6207) but did not make boosting faster: 60 rounds on
    59,000 x 4,096 (a tenth of the features per tree, one thread, one process) 9.2 / 9.5 s with
    every row, 9.0 / 9.3 s with GOSS. Not tried for lack of time: a fixed random
    feature subset per bit instead of per tree (a 410-column dataset boosts about 2x faster
    than LightGBM's per-tree sampling from 4,096 columns, in one process at load 28).
    """

    predictor = "compiled"  # or "lightgbm": Booster.predict (decision_function)

    def __init__(self, n_rounds: int = 200, max_depth: int = 4, learning_rate: float = 0.1,
                 feature_fraction: float | None = 1.0, min_child_samples: int = 20,
                 max_bin: int = 255,
                 n_jobs: int | None = None, pca_dims: int | None = None,
                 backend: str = "lightgbm", early_stopping_rounds: int = 0,
                 validation_fraction: float = 0.1, device: str = "auto",
                 bagging_fraction: float | None = 1.0, feature_floor: float = 0.0) -> None:
        self.n_rounds = n_rounds
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.feature_fraction = feature_fraction
        self.min_child_samples = min_child_samples
        self.max_bin = max_bin
        self.n_jobs = n_jobs
        self.pca_dims = pca_dims
        self.backend = backend
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.device = device
        self.bagging_fraction = bagging_fraction
        self.feature_floor = feature_floor
        self.models_: list[Any] = []
        self.feature_fraction_: float | None = None
        self.bagging_fraction_: float | None = None
        self.projection_: PrincipalProjection | None = None
        self.rounds_: list[int] = []
        self._train_set: Any = None
        self._train_ref: Any = None
        self._reduced: np.ndarray | None = None
        self._weighted = False
        self._forest: tuple[list[Any], Any] | None = None

    def _threads(self, n_cells: int) -> int:
        if self.n_jobs:
            return self.n_jobs
        return 1 if n_cells < _SMALL_PROBLEM_CELLS else default_threads()

    def _boosting_cells(self, inputs: np.ndarray) -> int:
        """Feature cells one tree reads: rows (times the bagging share) x the sampled features.
        The boosting threads follow this, not ``inputs.size``: at 5,000 x 4,096 with a tenth
        of the features a tree reads 2 million cells, and there a second thread lost 3x on a
        busy 2-core machine (issue 14, ``_SMALL_PROBLEM_CELLS``)."""
        rows = len(inputs) * min(1.0, self.bagging_fraction_ or 1.0)
        return int(rows * inputs.shape[1] * (self.feature_fraction_ or 1.0))

    def _params(self, seed: int, threads: int) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": 2 ** self.max_depth,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction_ or 1.0,
            "num_threads": threads,
            "deterministic": True,
            "force_col_wise": True,
            "seed": seed,
            "verbose": -1,
        } | ({"bagging_fraction": self.bagging_fraction_, "bagging_freq": 1,
              "bagging_seed": seed} if (self.bagging_fraction_ or 1.0) < 1.0 else {})

    def _check(self) -> None:
        if self.backend not in TREE_BACKENDS:
            raise ConfigError(f"tree backend must be one of {', '.join(TREE_BACKENDS)}, "
                              f"got {self.backend!r}")
        if self.pca_dims is not None and self.pca_dims < 1:
            raise ConfigError(f"pca_dims must be positive or None, got {self.pca_dims}")
        if self.feature_fraction is not None and not 0.0 < self.feature_fraction <= 1.0:
            raise ConfigError(f"feature_fraction must be in (0, 1] or None, got {self.feature_fraction}")
        if self.bagging_fraction is not None and not 0.0 < self.bagging_fraction <= 1.0:
            raise ConfigError(f"bagging_fraction must be in (0, 1], got {self.bagging_fraction}")
        if self.early_stopping_rounds and not 0.0 < self.validation_fraction < 0.5:
            raise ConfigError(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}")

    def _inputs(self, x: np.ndarray, seed: int) -> np.ndarray:
        """The tree inputs of the training rows ``x``: ``x`` itself, or its principal
        components (the projection fitted on the first call for this ``x`` object)."""
        if self.pca_dims is None or self.pca_dims >= x.shape[1]:
            self.projection_ = None
            return x
        if self._reduced is not None and self._train_ref is not None and self._train_ref() is x:
            return self._reduced
        if self.projection_ is None or not self.models_:  # earlier bits keep their projection
            self.projection_ = PrincipalProjection(self.pca_dims).fit(x, seed=seed)
        self._reduced = self.projection_.transform(x)
        self._train_set = None
        self._train_ref = weakref.ref(x)
        return self._reduced

    def _resolve_fraction(self, inputs: np.ndarray) -> None:
        self.feature_fraction_ = (auto_feature_fraction(inputs.shape[1], self.feature_floor)
                                  if self.feature_fraction is None
                                  else float(self.feature_fraction))
        self.bagging_fraction_ = (auto_bagging_fraction(len(inputs)) if self.bagging_fraction is None
                                  else float(self.bagging_fraction))

    def _tree_inputs(self, x: np.ndarray) -> np.ndarray:
        return x if self.projection_ is None else self.projection_.transform(x)

    def _dataset(self, x: np.ndarray, label: np.ndarray, key: np.ndarray) -> Any:
        """The binned training set of ``x``, built once and reused for every bit."""
        import lightgbm as lgb

        if self._train_set is None or self._train_ref is None or self._train_ref() is not key:
            self._train_set = lgb.Dataset(
                x, label=label, free_raw_data=True,
                params={"max_bin": self.max_bin, "verbose": -1,
                        "bin_construct_sample_cnt": _BIN_SAMPLE_ROWS,
                        "num_threads": self._threads(x.size),
                        "min_data_in_leaf": self.min_child_samples},
            ).construct()  # bin now: the benchmark times binning apart from boosting
            self._train_ref = weakref.ref(key)  # identity only: never keeps the features alive
            self._weighted = False
        else:
            self._train_set.set_label(label)
        return self._train_set

    def fit_bit(self, x: np.ndarray, bit: np.ndarray, seed: int = 0,
                sample_weight: np.ndarray | None = None) -> np.ndarray:
        """Append a classifier for one more bit; return its {-1, +1} predictions on ``x``.

        Calls on the same ``x`` object share one binned dataset (and one principal
        projection with ``pca_dims``); :meth:`release` frees it. LightGBM only.
        """
        self._check()
        if self.backend != "lightgbm":
            raise ConfigError(f"fit_bit needs the lightgbm tree backend, not {self.backend!r}")
        x = _features(x)
        label = (np.asarray(bit).reshape(-1) > 0).astype(np.float64)
        if len(label) != len(x):
            raise ValueError(f"bit has {len(label)} rows, features have {len(x)}")
        if label.min() == label.max():
            self.models_.append(1.0 if label[0] > 0 else -1.0)
            return np.full(len(x), 1 if label[0] > 0 else -1, dtype=np.int8)
        inputs = self._inputs(x, seed)
        self._resolve_fraction(inputs)
        booster = self._train(inputs, x, label, seed, sample_weight)
        return binarize(booster.predict(inputs, raw_score=True,
                                        num_threads=self._threads(inputs.size)))

    def _train(self, inputs: np.ndarray, key: np.ndarray, label: np.ndarray, seed: int,
               sample_weight: np.ndarray | None) -> Any:
        import lightgbm as lgb

        weight = None
        if sample_weight is not None:
            weight = np.asarray(sample_weight, np.float64).reshape(-1)
            if len(weight) != len(inputs):
                raise ValueError(f"sample_weight has {len(weight)} rows, features have {len(inputs)}")
        params = self._params(seed, self._threads(self._boosting_cells(inputs)))
        if self.early_stopping_rounds:
            train_rows, valid_rows = _holdout(len(inputs), self.validation_fraction, seed)
            data_params = {"max_bin": self.max_bin, "verbose": -1, "num_threads": params["num_threads"],
                           "bin_construct_sample_cnt": _BIN_SAMPLE_ROWS,
                           "min_data_in_leaf": self.min_child_samples}
            train = lgb.Dataset(inputs[train_rows], label=label[train_rows], params=data_params,
                                weight=None if weight is None else weight[train_rows])
            valid = lgb.Dataset(inputs[valid_rows], label=label[valid_rows], reference=train,
                                weight=None if weight is None else weight[valid_rows])
            booster = lgb.train(params | {"metric": "binary_logloss"}, train,
                                num_boost_round=self.n_rounds, valid_sets=[valid],
                                callbacks=[lgb.early_stopping(self.early_stopping_rounds,
                                                              verbose=False)])
            self.rounds_.append(int(booster.best_iteration or self.n_rounds))
        else:
            data = self._dataset(inputs, label, key)
            if weight is not None:
                data.set_weight(weight)
                self._weighted = True
            elif self._weighted:  # a shared dataset keeps the weights of an earlier bit
                data.set_weight(np.ones(len(inputs)))
            booster = lgb.train(params, data, num_boost_round=self.n_rounds)
            self.rounds_.append(self.n_rounds)
        self.models_.append(booster)
        return booster

    def fit(self, x: np.ndarray, codes: np.ndarray, seed: int = 0,
            sample_weight: np.ndarray | None = None) -> BoostedTrees:
        """Fit every column of ``codes`` (all bits, replacing earlier fits)."""
        self._check()
        codes = _as_bits(codes)
        x = _features(x)
        self.models_, self.rounds_ = [], []
        self.release()
        inputs = self._inputs(x, seed)
        self._resolve_fraction(inputs)
        weights = None if sample_weight is None else np.asarray(sample_weight, np.float64)
        if self.backend == "xgboost-multi":
            if weights is not None and weights.ndim == 2:
                raise ConfigError("the xgboost-multi tree backend takes one weight per row, "
                                  "not per bit")
            self.models_ = [self._fit_multi(inputs, codes, seed, weights)]
        else:
            for k in range(codes.shape[1]):
                w = weights[:, k] if weights is not None and weights.ndim == 2 else weights
                label = (codes[:, k] > 0).astype(np.float64)
                if label.min() == label.max():
                    self.models_.append(1.0 if label[0] > 0 else -1.0)
                else:
                    self._train(inputs, x, label, seed + k, w)
        self.release()
        return self

    def _fit_multi(self, inputs: np.ndarray, codes: np.ndarray, seed: int,
                   weight: np.ndarray | None) -> _MultiOutputTrees:
        import xgboost as xgb

        labels = (codes > 0).astype(np.float32)
        constant = labels.min(axis=0) == labels.max(axis=0)
        device = _xgboost_device(self.device)
        params = {
            "tree_method": "hist", "multi_strategy": "multi_output_tree",
            "objective": "binary:logistic", "eval_metric": "logloss",
            "max_depth": self.max_depth, "eta": self.learning_rate, "max_bin": self.max_bin,
            "min_child_weight": 0.0, "colsample_bytree": self.feature_fraction_ or 1.0,
            "nthread": self._threads(self._boosting_cells(inputs)), "seed": seed, "device": device,
        }
        kept = np.flatnonzero(~constant)
        booster, rounds = None, 0
        if len(kept):
            y = labels[:, kept]
            if self.early_stopping_rounds:
                train_rows, valid_rows = _holdout(len(inputs), self.validation_fraction, seed)
                w = (None, None) if weight is None else (weight[train_rows], weight[valid_rows])
                train = xgb.QuantileDMatrix(inputs[train_rows], label=y[train_rows], weight=w[0],
                                            max_bin=self.max_bin)
                valid = xgb.DMatrix(inputs[valid_rows], label=y[valid_rows], weight=w[1])
                booster = xgb.train(params, train, num_boost_round=self.n_rounds,
                                    evals=[(valid, "valid")], verbose_eval=False,
                                    early_stopping_rounds=self.early_stopping_rounds)
                rounds = int(booster.best_iteration) + 1
            else:
                train = xgb.QuantileDMatrix(inputs, label=y, weight=weight, max_bin=self.max_bin)
                booster = xgb.train(params, train, num_boost_round=self.n_rounds)
                rounds = self.n_rounds
        self.rounds_ = [rounds] * codes.shape[1]
        return _MultiOutputTrees(booster, kept, np.where(labels[0] > 0, 1.0, -1.0), rounds)

    def release(self) -> None:
        """Drop the binned training set that :meth:`fit_bit` calls share (``fit`` does this
        itself; call it after the last ``fit_bit``)."""
        self._train_set = self._train_ref = None
        self._reduced = None
        self._weighted = False

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds of bit = +1), shape ``(n, bits)``.

        LightGBM models are evaluated by :class:`hashbench.forest.Forest` (compiled once per
        fit and kept): the same raw scores as ``Booster.predict(raw_score=True)``, without
        its per-model copy of every row (``predictor = "lightgbm"`` uses ``predict``)."""
        x = self._tree_inputs(_features(x))
        if len(self.models_) == 1 and isinstance(self.models_[0], _MultiOutputTrees):
            return self.models_[0].scores(x, self._threads(x.size))
        if self.predictor == "compiled" and self.models_:
            return self._compiled().scores(x, self._threads(x.size))
        scores = np.empty((len(x), len(self.models_)), dtype=np.float64)
        for k, model in enumerate(self.models_):
            if isinstance(model, float):
                scores[:, k] = model
            else:
                scores[:, k] = model.predict(x, raw_score=True, num_threads=self._threads(x.size))
        return scores

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Codes: int8 ``(n, bits)`` in {-1, +1}."""
        return binarize(self.decision_function(x))

    def _compiled(self) -> Any:
        """The :class:`~hashbench.forest.Forest` of ``models_``, rebuilt when they changed."""
        from hashbench.forest import Forest

        cached = getattr(self, "_forest", None)
        if cached is None or len(cached[0]) != len(self.models_) or any(
                a is not b for a, b in zip(cached[0], self.models_, strict=True)):
            cached = (list(self.models_), Forest.from_models(self.models_))
            self._forest = cached
        return cached[1]


class _MultiOutputTrees:
    """One XGBoost multi-output ensemble; constant bits get their constant score."""

    def __init__(self, booster: Any, kept: np.ndarray, constant: np.ndarray, rounds: int) -> None:
        self.booster, self.kept, self.constant, self.rounds = booster, kept, constant, rounds

    def scores(self, x: np.ndarray, threads: int) -> np.ndarray:
        import xgboost as xgb

        out = np.tile(self.constant, (len(x), 1))
        if self.booster is not None:
            self.booster.set_param({"nthread": threads})
            margin = self.booster.predict(xgb.DMatrix(x), output_margin=True,
                                          iteration_range=(0, self.rounds))
            out[:, self.kept] = np.asarray(margin, dtype=np.float64).reshape(len(x), -1)
        return out


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``range(n)`` into training rows and ``fraction`` held-out rows."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(n * fraction)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def _xgboost_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when XGBoost was built with CUDA and a GPU is visible, else
    ``"cpu"``; any other value is passed through."""
    if device != "auto":
        return device
    try:
        import xgboost as xgb

        if not xgb.build_info().get("USE_CUDA"):
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no GPU stack: the CPU is always there
        return "cpu"


class PrincipalProjection:
    """Centre and project on the top-``dims`` principal directions (float32 output).

    Fitted on at most ``max_rows`` rows (a seeded sample) by a randomised range finder with
    ``power_iters`` power iterations (Halko, Martinsson & Tropp 2011): it needs only products
    with the data, never a ``d x d`` matrix or a centred copy of the inputs.
    """

    def __init__(self, dims: int, max_rows: int = 10_000, power_iters: int = 2) -> None:
        self.dims = dims
        self.max_rows = max_rows
        self.power_iters = power_iters

    def fit(self, x: np.ndarray, seed: int = 0) -> PrincipalProjection:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(x), size=min(self.max_rows, len(x)), replace=False))
        sample = np.asarray(x[rows], dtype=np.float32)
        self.mean_ = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        sample -= self.mean_
        k = min(self.dims + 10, *sample.shape)
        basis = np.linalg.qr(sample @ rng.standard_normal((x.shape[1], k)).astype(np.float32))[0]
        for _ in range(self.power_iters):
            basis = np.linalg.qr(sample.T @ basis)[0]
            basis = np.linalg.qr(sample @ basis)[0]
        _, _, vt = np.linalg.svd(basis.T @ sample, full_matrices=False)
        self.components_ = np.ascontiguousarray(vt[: self.dims].T, dtype=np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.components_.shape[1]), dtype=np.float32)
        for start in range(0, len(x), _CHUNK_ROWS):
            chunk = np.asarray(x[start:start + _CHUNK_ROWS], dtype=np.float32)
            out[start:start + len(chunk)] = (chunk - self.mean_) @ self.components_
        return out


class LinearProjection:
    """Ridge regression to the targets, then sign: ``W = (X^T X + ridge I)^{-1} X^T T``."""

    def __init__(self, ridge: float = 1.0) -> None:
        self.ridge = ridge
        self.weights_: np.ndarray | None = None

    def fit(self, x: np.ndarray, codes: np.ndarray, seed: int = 0,
            sample_weight: np.ndarray | None = None) -> LinearProjection:
        """``codes`` may be {-1, +1} codes or real-valued targets (n, bits); ``seed`` is unused."""
        targets = _as_bits(codes).astype(np.float64)
        x = _features(x)
        if sample_weight is not None:
            raise ValueError("LinearProjection does not take sample weights")
        gram = gram_matrix(x)
        gram[np.diag_indices_from(gram)] += self.ridge
        rhs = np.zeros((x.shape[1], targets.shape[1]))
        for start in range(0, len(x), _CHUNK_ROWS):
            rhs += x[start:start + _CHUNK_ROWS].T @ targets[start:start + _CHUNK_ROWS]
        self.weights_ = np.linalg.solve(gram, rhs)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return _features(x) @ self.weights_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return binarize(self.decision_function(x))


def make_extension(kind: str, **options: Any) -> BoostedTrees | LinearProjection:
    """``"trees"`` -> :class:`BoostedTrees`, ``"linear"`` -> :class:`LinearProjection`."""
    if kind == "trees":
        return BoostedTrees(**options)
    if kind == "linear":
        return LinearProjection(**options)
    raise ConfigError(f"out-of-sample extension must be one of {', '.join(EXTENSIONS)}, got {kind!r}")


def gram_matrix(x: np.ndarray) -> np.ndarray:
    """``X^T X`` accumulated in float64 over row chunks (each chunk's product in the dtype of
    ``X``), so no float64 copy of ``X`` is ever made."""
    gram = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), _CHUNK_ROWS):
        chunk = np.asarray(x[start:start + _CHUNK_ROWS])
        gram += chunk.T @ chunk
    return gram


def _features(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be a (n, d) matrix, got shape {x.shape}")
    return x


class Standardiser:
    """Per-dimension z-scores with the training mean and standard deviation (constant
    dimensions are only centred): the ``normZeroMean`` + ``normEqualVariance`` step of the
    LFH and COSDISH authors' demos. Output float32, computed in row chunks."""

    def fit(self, x: np.ndarray) -> Standardiser:
        x = _features(x)
        total = np.zeros(x.shape[1])
        for start in range(0, len(x), _CHUNK_ROWS):
            total += np.asarray(x[start:start + _CHUNK_ROWS], dtype=np.float64).sum(axis=0)
        self.mean_ = total / len(x)
        squares = np.zeros(x.shape[1])  # second pass: no cancellation in E[x^2] - E[x]^2
        for start in range(0, len(x), _CHUNK_ROWS):
            chunk = np.asarray(x[start:start + _CHUNK_ROWS], dtype=np.float64) - self.mean_
            squares += np.square(chunk).sum(axis=0)
        std = np.sqrt(squares / len(x))
        self.scale_ = np.where((std > 0) & (std > 1e-6 * np.abs(self.mean_)), std, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _features(x)
        out = np.empty(x.shape, dtype=np.float32)
        mean, scale = self.mean_.astype(np.float32), self.scale_.astype(np.float32)
        for start in range(0, len(x), _CHUNK_ROWS):
            out[start:start + _CHUNK_ROWS] = (x[start:start + _CHUNK_ROWS] - mean) / scale
        return out


class TwoStepHasher(AsymmetricHasher):
    """Template for "two-step" hashing: learn training codes, then fit a hash function.

    Subclasses implement :meth:`_learn_codes` and :meth:`_extension`, and may override
    :meth:`_regression_targets` (what a linear extension regresses on; the codes by default).
    Learned state: ``standardiser_``, ``codes_`` (the training codes, returned by
    ``database_codes()``), ``extension_``.
    """

    @abstractmethod
    def _learn_codes(self, x: np.ndarray, labels: np.ndarray, ctx: RunContext) -> np.ndarray:
        """Step 1: int8 codes ``(n, bits)`` of the (standardised) training points."""

    @abstractmethod
    def _extension(self, n: int, d: int) -> BoostedTrees | LinearProjection:
        """Step 2: an unfitted hash function for ``n`` training points of dimension ``d``."""

    def _regression_targets(self, codes: np.ndarray) -> np.ndarray:
        return codes

    def fit(self, data: TrialData, ctx: RunContext) -> TwoStepHasher:
        inputs = data.train.inputs
        self.standardiser_ = Standardiser().fit(inputs)
        x = self.standardiser_.transform(inputs)
        labels = np.asarray(data.train.labels)
        codes = self._learn_codes(x, labels, ctx)
        extension = self._extension(*x.shape)
        targets = codes if isinstance(extension, BoostedTrees) else self._regression_targets(codes)
        extension.fit(x, targets, seed=int(ctx.rng.integers(2**31 - 1)))
        if isinstance(extension, BoostedTrees):  # what the trees ran with (None = auto)
            ctx.log_metric("tree_feature_fraction", float(extension.feature_fraction_ or 1.0), 0)
            ctx.log_metric("tree_bagging_fraction", float(extension.bagging_fraction_ or 1.0), 0)
        self.codes_ = codes
        self.learned_indices_ = np.asarray(data.train.indices)
        self.extension_ = extension
        return self

    def encode(self, inputs: Any) -> np.ndarray:
        self._check_fitted("extension_")
        return self.extension_.predict(self.standardiser_.transform(inputs))

    def database_codes(self) -> np.ndarray:
        self._check_fitted("codes_")
        return self.codes_
