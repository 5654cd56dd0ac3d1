"""The five shallow cross-modal hashing cores (methods/_crossmodal.py) on "split digits".

Two views of scikit-learn's 8x8 digits: the image view is the left half of each image (columns
0-3, 32 dims), the text view the right half (columns 4-7, 32 dims); labels are the one-hot digit.
I->T ranks text-view database codes for image-view queries, T->I the reverse, with the project's
evaluator.
"""

from __future__ import annotations

import numpy as np
import pytest
from hashbench.methods._crossmodal import (
    CMFH,
    DLFH,
    SCM,
    CCAHash,
    SePH,
    cca_directions,
    dlfh_log_likelihood,
    dlfh_update_codes,
    itq_rotation,
    kernel_logistic_regression,
    seph_cost_and_gradient,
    unit_rows,
)
from sklearn.cross_decomposition import CCA
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from hashbench.errors import ConfigError, NotFittedError
from hashbench.evaluation import evaluate

BITS = 16
ALL = [CCAHash, CMFH, SCM, SePH, DLFH]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def split_digits():
    """Holdout: 30 queries per class; database = the rest; training = 60 per class of the database."""
    digits = load_digits()
    images = digits.images
    image = images[:, :, :4].reshape(len(images), -1)
    text = images[:, :, 4:].reshape(len(images), -1)
    labels = np.eye(10)[digits.target]
    rng = np.random.default_rng(0)
    query = np.concatenate([rng.choice(np.flatnonzero(digits.target == k), 30, replace=False)
                            for k in range(10)])
    database = np.setdiff1d(np.arange(len(images)), query)
    train = np.concatenate([rng.choice(database[digits.target[database] == k], 60, replace=False)
                            for k in range(10)])
    return dict(image=image, text=text, labels=labels, query=query, database=database, train=train)


def fit(cls, data, seed=1, rows=None, **kwargs):
    rows = data["train"] if rows is None else rows
    return cls(bits=BITS, **kwargs).fit(data["image"][rows], data["text"][rows], data["labels"][rows],
                                        np.random.default_rng(seed))


def cross_modal_map(model, data) -> tuple[float, float]:
    q, db, lab = data["query"], data["database"], data["labels"]
    i2t = evaluate(model.encode(data["image"][q], "image"), model.encode(data["text"][db], "text"),
                   lab[q], lab[db], map_only=True).metrics["map"]
    t2i = evaluate(model.encode(data["text"][q], "text"), model.encode(data["image"][db], "image"),
                   lab[q], lab[db], map_only=True).metrics["map"]
    return i2t, t2i


@pytest.fixture(scope="module")
def maps(split_digits):
    """MAP (I->T, T->I) of every method at 16 bits, fitted once (seed 1)."""
    models = {
        "cca": CCAHash(bits=BITS, rotation="none"),
        "cca_itq": CCAHash(bits=BITS, rotation="itq"),
        "cmfh": CMFH(bits=BITS),
        "scm": SCM(bits=BITS),
        "seph": SePH(bits=BITS),
        "dlfh": DLFH(bits=BITS),
        "kdlfh": DLFH(bits=BITS, extension="kernel"),
    }
    d, rows = split_digits, split_digits["train"]
    out = {}
    with threadpool_limits(1):
        for name, model in models.items():
            model.fit(d["image"][rows], d["text"][rows], d["labels"][rows], np.random.default_rng(1))
            out[name] = (model, *cross_modal_map(model, d))
    return out


# --- the code contract ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cca", "cca_itq", "cmfh", "scm", "seph", "dlfh", "kdlfh"])
def test_codes_contract_and_no_collapse(maps, split_digits, name):
    model = maps[name][0]
    for modality in ("image", "text"):
        codes = model.encode(split_digits[modality][split_digits["database"]], modality)
        assert codes.dtype == np.int8
        assert codes.shape == (len(split_digits["database"]), BITS)
        assert set(np.unique(codes)) <= {-1, 1}
        assert len(np.unique(codes, axis=0)) >= 40, f"{name} {modality}: codes collapsed"
        if name not in ("dlfh", "kdlfh"):          # DLFH: see test_dlfh_constant_bits_act_as_a_bias
            assert np.all(np.abs(codes.mean(axis=0)) < 0.98), f"{name} {modality}: a constant bit"


def test_zero_projection_maps_to_minus_one():
    model = CCAHash(bits=2, rotation="none").fit(
        np.array([[1.0, 0.0], [-1.0, 0.2], [0.5, -1.0], [-0.5, 0.8]]),
        np.array([[0.9, 0.1], [-1.1, 0.1], [0.4, -0.9], [-0.2, 0.7]]),
        np.eye(2)[[0, 1, 0, 1]], np.random.default_rng(0))
    codes = model.encode(model.mean_x_[None, :], "image")          # projection exactly 0
    np.testing.assert_array_equal(codes, [[-1, -1]])


@pytest.mark.parametrize("cls", ALL)
def test_encode_before_fit_raises(cls):
    with pytest.raises(NotFittedError):
        cls(bits=BITS).encode(np.zeros((3, 32)), "image")


@pytest.mark.parametrize("cls", ALL)
def test_same_seed_same_codes(split_digits, cls):
    rows = split_digits["train"][::3]                 # 200 items: quick
    a = fit(cls, split_digits, seed=7, rows=rows)
    b = fit(cls, split_digits, seed=7, rows=rows)
    x = split_digits["text"][split_digits["query"]]
    np.testing.assert_array_equal(a.encode(x, "text"), b.encode(x, "text"))
    np.testing.assert_array_equal(a.encode(x, "image"), b.encode(x, "image"))


def test_different_seed_different_codes(split_digits):
    rows = split_digits["train"][::3]
    x = split_digits["image"][split_digits["query"]]
    a = fit(DLFH, split_digits, seed=1, rows=rows).encode(x, "image")
    b = fit(DLFH, split_digits, seed=2, rows=rows).encode(x, "image")
    assert not np.array_equal(a, b)


def test_bad_arguments(split_digits):
    model = fit(SCM, split_digits)
    with pytest.raises(ConfigError, match="modality"):
        model.encode(split_digits["image"][:3], "audio")
    with pytest.raises(ConfigError, match="rows"):
        SCM(bits=4).fit(np.zeros((5, 3)), np.zeros((4, 3)), np.eye(5), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="dimensions"):
        CCAHash(bits=40).fit(split_digits["image"][:100], split_digits["text"][:100],
                             split_digits["labels"][:100], np.random.default_rng(0))


# --- retrieval quality ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["scm", "seph", "dlfh", "kdlfh"])
def test_supervised_methods_beat_cca_both_directions(maps, name):
    """The label-supervised methods clear the unsupervised CCA floor by >= 0.1 MAP both ways."""
    _, cca_i2t, cca_t2i = maps["cca"]
    _, i2t, t2i = maps[name]
    assert i2t >= cca_i2t + 0.10, (name, i2t, cca_i2t)
    assert t2i >= cca_t2i + 0.10, (name, t2i, cca_t2i)


@pytest.mark.parametrize("name", ["seph", "kdlfh"])
def test_kernel_methods_beat_every_linear_one(maps, name):
    """Kernel hash functions (SePH, KDLFH) are far above anything linear on half-digits."""
    best_linear = max(max(maps[k][1], maps[k][2]) for k in ("cca", "cca_itq", "cmfh", "scm", "dlfh"))
    _, i2t, t2i = maps[name]
    assert min(i2t, t2i) >= best_linear + 0.2, (name, i2t, t2i, best_linear)


def test_unsupervised_methods_beat_chance(maps):
    """CCA-ITQ and CMFH learn a cross-view embedding: well above chance (MAP about 0.1)."""
    for name in ("cca_itq", "cmfh"):
        _, i2t, t2i = maps[name]
        assert min(i2t, t2i) > 0.25, (name, i2t, t2i)
    assert maps["cca_itq"][1] > maps["cca"][1], "the ITQ rotation should help over plain sign(CCA)"


# --- CCA ---------------------------------------------------------------------------------------

def test_cca_directions_satisfy_the_cca_constraints():
    """Small case: W^T C W = I in each view, Wx^T Cxy Wy = diag(rho) descending, rho^2 the eigenvalues
    of Cxx^-1 Cxy Cyy^-1 Cyx, and rho_1 equal to scikit-learn's first canonical correlation."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((400, 2))
    x = np.hstack([z, rng.standard_normal((400, 3))]) @ rng.standard_normal((5, 5))
    y = np.hstack([z[:, :1] + 0.3 * rng.standard_normal((400, 1)), rng.standard_normal((400, 3))])
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy, cxy = xc.T @ xc / 400, yc.T @ yc / 400, xc.T @ yc / 400
    wx, wy, rho = cca_directions(cxx, cyy, cxy, 3)
    np.testing.assert_allclose(wx.T @ cxx @ wx, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(wy.T @ cyy @ wy, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(wx.T @ cxy @ wy, np.diag(rho), atol=1e-10)
    assert np.all(np.diff(rho) <= 0) and rho[0] > 0.9
    eig = np.sort(np.linalg.eigvals(np.linalg.solve(cxx, cxy) @ np.linalg.solve(cyy, cxy.T)).real)[::-1]
    np.testing.assert_allclose(rho ** 2, eig[:3], atol=1e-10)
    sk = CCA(n_components=1, scale=False, max_iter=5000, tol=1e-12).fit(x, y)
    xs, ys = sk.transform(x, y)
    np.testing.assert_allclose(np.corrcoef(xs[:, 0], ys[:, 0])[0, 1], rho[0], atol=1e-6)


def test_cca_itq_quantisation_loss_never_increases(maps):
    losses = np.array(maps["cca_itq"][0].quantization_losses_)
    assert len(losses) == 50
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < losses[0]


def test_itq_rotation_is_orthogonal():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((300, 6))
    rotation, _ = itq_rotation(v, np.linalg.qr(rng.standard_normal((6, 6)))[0], 10)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(6), atol=1e-10)


# --- CMFH --------------------------------------------------------------------------------------

def test_cmfh_objective_never_increases(split_digits):
    model = fit(CMFH, split_digits, n_iter=40)
    obj = np.array(model.objective_)
    assert np.all(np.diff(obj) <= 1e-9 * obj[0]), obj
    assert obj[-1] < obj[0]


def test_cmfh_p_update_is_the_block_minimiser(split_digits):
    """The P step's closed form (ridge gamma / mu) minimises the printed objective over P1."""
    model = fit(CMFH, split_digits, n_iter=5)
    rows = split_digits["train"]
    x1 = split_digits["image"][rows] - model.mean1_
    x2 = split_digits["text"][rows] - model.mean2_
    # For any V, the closed-form P1 minimises O over P1: perturbations only raise it.
    v = x1 @ model.p1_ * 0.5 + x2 @ model.p2_ * 0.5
    p1 = np.linalg.solve(x1.T @ x1 + model.gamma / model.mu * np.eye(x1.shape[1]), x1.T @ v)
    base = model.objective(x1, x2, v, model.u1_, model.u2_, p1, model.p2_)
    rng = np.random.default_rng(0)
    for _ in range(5):
        e = 1e-3 * rng.standard_normal(p1.shape)
        assert model.objective(x1, x2, v, model.u1_, model.u2_, p1 + e, model.p2_) >= base


# --- SCM ---------------------------------------------------------------------------------------

def test_scm_factorised_similarity_matches_the_explicit_one(split_digits):
    rows = split_digits["train"][:50]
    lab = split_digits["labels"][rows].copy()
    lab[::7, 3] = 1                                   # a few multi-label rows
    x = split_digits["image"][rows] - split_digits["image"][rows].mean(0)
    y = split_digits["text"][rows] - split_digits["text"][rows].mean(0)
    lt = unit_rows(lab)
    s = 2 * lt @ lt.T - 1
    explicit = x.T @ s @ y
    factorised = 2 * (x.T @ lt) @ (y.T @ lt).T - np.outer(x.sum(0), y.sum(0))
    np.testing.assert_allclose(factorised, explicit, atol=1e-8)


def test_scm_sequential_eigenvalues_decrease(maps):
    model = maps["scm"][0]
    assert model.n_sequential_ >= 1
    assert np.all(np.diff(model.eigenvalues_) <= 0)


# --- SePH --------------------------------------------------------------------------------------

def test_seph_blocked_cost_and_gradient_match_dense_and_finite_differences():
    rng = np.random.default_rng(0)
    n, c = 30, 4
    labels = np.eye(3)[rng.integers(0, 3, n)]
    labels[::5, 0] = 1
    lt = unit_rows(labels)
    h = rng.standard_normal((n, c))
    alpha = 0.3
    cost, grad = seph_cost_and_gradient(h, lt, alpha, block=7)
    a = lt @ lt.T
    np.fill_diagonal(a, 0)
    p = a / a.sum()
    d2 = np.sum((h[:, None] - h[None]) ** 2, axis=2)
    num = 1 / (1 + d2 / 4)
    np.fill_diagonal(num, 0)
    q = num / num.sum()
    mask = p > 0
    dense = np.sum(p[mask] * np.log(p[mask] / q[mask])) + alpha * np.sum((np.abs(h) - 1) ** 2)
    np.testing.assert_allclose(cost, dense, rtol=1e-10)
    eps = 1e-6
    for i, k in [(0, 0), (5, 2), (17, 3)]:
        hp, hm = h.copy(), h.copy()
        hp[i, k] += eps
        hm[i, k] -= eps
        fd = (seph_cost_and_gradient(hp, lt, alpha)[0] - seph_cost_and_gradient(hm, lt, alpha)[0]) / (2 * eps)
        np.testing.assert_allclose(grad[i, k], fd, rtol=1e-5, atol=1e-9)


def test_seph_descent_lowers_the_kl_objective(maps):
    obj = np.array(maps["seph"][0].objective_)
    assert obj.min() < 0.7 * obj[0]


def test_kernel_logistic_regression_is_monotone_and_fits():
    rng = np.random.default_rng(0)
    k = rng.random((200, 20))
    w_true = rng.standard_normal((20, 3))
    targets = np.where(k @ w_true - np.median(k @ w_true, axis=0) > 0, 1.0, -1.0)
    _, costs = kernel_logistic_regression(k, np.eye(20), targets, 0.01, n_iter=300)
    assert np.all(np.diff(costs) <= 1e-9 * costs[0])
    assert costs[-1] < 0.6 * costs[0]


def test_seph_uses_at_most_n_samples(split_digits):
    model = fit(SePH, split_digits, n_samples=120, n_anchors=50)
    assert model.n_train_used_ == 120 and model.train_codes_.shape == (120, BITS)
    assert model.anchors_image_.shape == (50, 32)


# --- DLFH --------------------------------------------------------------------------------------

def test_dlfh_full_likelihood_never_decreases(split_digits):
    rows = split_digits["train"][::4]
    model = fit(DLFH, split_digits, rows=rows, num_samples=None, n_iter=6)
    ll = np.array(model.log_likelihood_)
    assert np.all(np.diff(ll) >= -1e-9 * abs(ll[0]))


def test_dlfh_column_update_is_minorise_maximise():
    """Every single column step (full S) leaves the log-likelihood no lower than before."""
    rng = np.random.default_rng(0)
    labels = np.eye(4)[rng.integers(0, 4, 60)]
    s = (labels @ labels.T > 0).astype(float)
    u = np.where(rng.random((60, 8)) < 0.5, -1.0, 1.0)
    v = np.where(rng.random((60, 8)) < 0.5, -1.0, 1.0)
    before = dlfh_log_likelihood(u, v, labels, 8.0)
    u2 = dlfh_update_codes(u, v, s, 8.0)
    mid = dlfh_log_likelihood(u2, v, labels, 8.0)
    v2 = dlfh_update_codes(v, u2, s.T, 8.0)
    after = dlfh_log_likelihood(u2, v2, labels, 8.0)
    assert before <= mid <= after and after > before


def test_dlfh_stochastic_codes_fit_the_similarity(maps, split_digits):
    """The learned training codes: similar image-text pairs have larger inner products than dissimilar."""
    model = maps["dlfh"][0]
    lab = split_digits["labels"][split_digits["train"]]
    ip = model.image_codes_.astype(float) @ model.text_codes_.T.astype(float)
    s = lab @ lab.T > 0
    assert ip[s].mean() > ip[~s].mean() + 4


def test_dlfh_full_method_refuses_large_n():
    with pytest.raises(ConfigError, match="num_samples"):
        DLFH(bits=4, num_samples=None).fit(np.zeros((5000, 2)), np.zeros((5000, 2)),
                                           np.eye(2)[np.arange(5000) % 2], np.random.default_rng(0))


def test_dlfh_constant_bits_act_as_a_bias(maps):
    """DLFH's likelihood has no bias term; on single-label data (10% similar pairs) it spends some bits
    on one: a column constant in U and constant with the opposite sign in V lowers every theta_ij by
    lam / c. Such columns come in anti-aligned pairs, and most bits still vary."""
    model = maps["dlfh"][0]
    mu, mv = model.image_codes_.mean(axis=0), model.text_codes_.mean(axis=0)
    constant = np.abs(mu) > 0.98
    assert constant.sum() <= BITS // 2
    assert np.all(np.sign(mu[constant]) == -np.sign(mv[constant]))
    assert np.all(np.abs(mv[constant]) > 0.9)
