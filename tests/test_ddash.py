"""DDASH (the CROSSMODAL.md §1.4 reconstruction): the B-step against brute force, the W-step
against the normal equations, monotone objective, graded similarity blocks, and the method on
the bundled two-view digits (balanced codes, database codes for both tasks)."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import torch
from hashbench.methods.ddash import (
    SIMILARITIES,
    GradedSimilarityBlock,
    group_similarity,
    label_code_matrix,
    objective,
    objective_dense,
    update_database_codes,
    update_label_map,
)

from hashbench import registry
from hashbench.api import RunContext
from hashbench.conformance import sample_for
from hashbench.errors import ConfigError, DataError
from hashbench.evaluation import evaluate
from hashbench.labels import group_labels
from hashbench.runner import run_trial_data

torch.set_default_dtype(torch.float32)


def _labels(rng, n, k=4):
    lab = (rng.random((n, k)) < 0.35).astype(np.uint8)
    lab[lab.sum(1) == 0, rng.integers(0, k)] = 1
    return lab


def _problem(seed, n=6, m=4, c=3, k=4, kind="graded-cosine", balance=True, full=True):
    """A tiny random problem: database labels, Omega (rows of the database in the full mode),
    network outputs U, G in (-1, 1), W, and the similarity block."""
    rng = np.random.default_rng(seed)
    db = _labels(rng, n, k)
    omega = np.sort(rng.choice(n, m, replace=False))
    q = db[omega] if full else _labels(rng, m, k)
    groups, (q_ids, d_ids) = group_labels(q, db)
    block = GradedSimilarityBlock(groups, q_ids, d_ids, kind, balance)
    U = torch.from_numpy(np.tanh(rng.standard_normal((m, c)) * 2))
    G = torch.from_numpy(np.tanh(rng.standard_normal((m, c)) * 2))
    W = torch.from_numpy(rng.standard_normal((c, k)))
    B = torch.from_numpy(np.where(rng.random((n, c)) < 0.5, 1.0, -1.0))
    omega_db = torch.from_numpy(omega) if full else None
    return dict(block=block, U=U, G=G, W=W, B=B, omega_db=omega_db,
                L=torch.from_numpy(db.astype(np.float64)), Lo=torch.from_numpy(q.astype(np.float64)))


WEIGHTS = dict(gamma=3.0, alpha=2.0, beta=0.5, ridge=1.5)


def _J(p, B, W=None, dense=True, **weights):
    w = {**WEIGHTS, **weights}
    fn = objective_dense if dense else objective
    S = p["block"].dense() if dense else p["block"]
    return fn([B], [[p["U"], p["G"]]], S, p["omega_db"], p["L"], p["Lo"],
              p["W"] if W is None else W, **w)


def _b_step(p, B, alpha=WEIGHTS["alpha"], gamma=WEIGHTS["gamma"]):
    outs = [p["U"], p["G"]]
    Q = label_code_matrix(p["block"], outs, p["omega_db"], gamma, p["L"], p["W"], alpha)
    return update_database_codes(B.clone(), outs, Q, p["W"], alpha)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("seed", range(6))
def test_b_step_equals_brute_force_column_by_column(seed, kind):
    """Each column update is the exact minimiser of J over that column (2^n candidates), the
    columns taken in order 1..c with the earlier ones already updated."""
    p = _problem(seed, kind=kind, full=seed % 2 == 0)
    ref = p["B"].clone()
    n, c = ref.shape
    candidates = [torch.tensor(col, dtype=torch.float64) for col in itertools.product((-1.0, 1.0), repeat=n)]
    for k in range(c):
        values = []
        for col in candidates:
            trial = ref.clone()
            trial[:, k] = col
            values.append(_J(p, trial))
        ref[:, k] = candidates[int(np.argmin(values))]
    got = _b_step(p, p["B"])
    assert _J(p, got) == pytest.approx(_J(p, ref), rel=1e-12, abs=1e-9)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("seed", range(20))
def test_b_step_never_increases_its_sub_objective(seed):
    p = _problem(100 + seed, n=30, m=12, c=8, k=5, full=seed % 2 == 0)
    before = _J(p, p["B"])
    after = _J(p, _b_step(p, p["B"]))
    assert after <= before + 1e-9 * abs(before)


def test_objective_without_s_matches_the_dense_one():
    p = _problem(7, n=40, m=15, c=6, k=5)
    assert _J(p, p["B"], dense=False) == pytest.approx(_J(p, p["B"]), rel=1e-10)


@pytest.mark.parametrize("ridge", [1.5, 0.0])
def test_w_step_solves_the_normal_equations(ridge):
    """W minimises alpha sum ||B W - L||^2 + beta sum ||O W - L_Omega||^2 + ridge ||W||^2: the
    least-squares solution of the stacked system, and a zero gradient."""
    p = _problem(3, n=30, m=10, c=6, k=5)
    B2 = torch.from_numpy(np.where(np.random.default_rng(9).random((30, 6)) < 0.5, 1.0, -1.0))
    a, b = WEIGHTS["alpha"], WEIGHTS["beta"]
    W = update_label_map([p["B"], B2], p["L"], [p["U"], p["G"]], p["Lo"], a, b, ridge)
    c = p["B"].shape[1]
    lhs = torch.cat([a ** 0.5 * p["B"], a ** 0.5 * B2, b ** 0.5 * p["U"], b ** 0.5 * p["G"],
                     ridge ** 0.5 * torch.eye(c, dtype=torch.float64)])
    rhs = torch.cat([a ** 0.5 * p["L"], a ** 0.5 * p["L"], b ** 0.5 * p["Lo"], b ** 0.5 * p["Lo"],
                     torch.zeros(c, p["L"].shape[1], dtype=torch.float64)])
    ref = torch.linalg.lstsq(lhs, rhs).solution
    torch.testing.assert_close(W, ref)
    grad = lhs.T @ (lhs @ W - rhs)
    assert float(grad.abs().max()) < 1e-8


@pytest.mark.parametrize("seed", range(10))
def test_full_objective_does_not_increase_over_a_b_and_w_step(seed):
    p = _problem(200 + seed, n=40, m=15, c=6, k=5, full=seed % 2 == 0)
    before = _J(p, p["B"])
    B = _b_step(p, p["B"])
    mid = _J(p, B)
    W = update_label_map([B], p["L"], [p["U"], p["G"]], p["Lo"], WEIGHTS["alpha"], WEIGHTS["beta"],
                         WEIGHTS["ridge"])
    after = _J(p, B, W)
    assert mid <= before + 1e-9 * abs(before)
    assert after <= mid + 1e-9 * abs(mid)


def test_similarity_kinds_coincide_on_single_label_data():
    """On one-hot labels (Wikipedia, digits-2view) every similarity kind gives the same
    balanced block: the kind can only matter on multi-label data, so the Wikipedia ablation
    leaves it out."""
    rng = np.random.default_rng(1)
    lab = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 60)]
    groups, (ids,) = group_labels(lab)
    rows = rng.choice(60, 25, replace=False)
    blocks = {kind: GradedSimilarityBlock(groups, ids[rows], ids, kind, balance=True).dense()
              for kind in SIMILARITIES}
    for kind, block in blocks.items():
        torch.testing.assert_close(block, blocks["binary"], rtol=0, atol=1e-12, msg=kind)
    multi = _labels(rng, 60, 5)  # while on multi-label data graded and binary differ
    mgroups, (mids,) = group_labels(multi)
    graded = GradedSimilarityBlock(mgroups, mids[rows], mids, "graded-cosine", balance=True).dense()
    binary = GradedSimilarityBlock(mgroups, mids[rows], mids, "binary", balance=True).dense()
    assert not torch.allclose(graded, binary)


def test_similarity_kinds_and_balancing():
    a = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    cos = group_similarity("graded-cosine", a, a)
    np.testing.assert_allclose(cos[0], [1.0, 2 / np.sqrt(2) - 1, -1.0])
    jac = group_similarity("jaccard", a, a)
    np.testing.assert_allclose(jac[0], [1.0, 0.0, -1.0])
    np.testing.assert_array_equal(group_similarity("binary", a, a)[0], [1.0, 1.0, -1.0])
    rng = np.random.default_rng(0)
    lab = _labels(rng, 50, 5)
    groups, (ids,) = group_labels(lab)
    rows = rng.choice(50, 20, replace=False)
    for kind in SIMILARITIES:
        block = GradedSimilarityBlock(groups, ids[rows], ids, kind, balance=True)
        S = block.dense()
        assert float(S.sum()) == pytest.approx(0.0, abs=1e-9)  # balanced: positive mass = negative mass
        raw = group_similarity(kind, lab[rows], lab)
        if kind == "adsh" or block.r <= 1:
            np.testing.assert_allclose(S.numpy(), np.where(raw < 0, raw * block.r, raw))
        else:
            np.testing.assert_allclose(S.numpy(), np.where(raw > 0, raw / block.r, raw))
        if kind != "adsh":
            assert float(S.max()) <= 1.0 and float(S.min()) >= -1.0
        U = torch.from_numpy(rng.standard_normal((20, 4)))
        V = torch.from_numpy(rng.standard_normal((50, 4)))
        torch.testing.assert_close(block.t_matmul(U), S.T @ U)
        torch.testing.assert_close(block.matmul(V), S @ V)
        torch.testing.assert_close(block.row_sq_norms, (S ** 2).sum(1))
    one_hot = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 50)]   # mostly dissimilar pairs: r < 1
    groups, (ids,) = group_labels(one_hot)
    adsh = GradedSimilarityBlock(groups, ids[rows], ids, "adsh", balance=False)
    binary = GradedSimilarityBlock(groups, ids[rows], ids, "binary", balance=True)
    assert adsh.r < 1
    torch.testing.assert_close(adsh.dense(), binary.dense())
    plain = GradedSimilarityBlock(groups, ids[rows], ids, "binary", balance=False)
    assert plain.r == 1.0 and set(np.unique(plain.dense().numpy())) <= {-1.0, 1.0}


# ---------------------------------------------------------------- the method

FAST = dict(outer_iters=8, inner_epochs=2, num_samples=300, text_hidden=256, hidden=64)


@pytest.fixture(scope="module")
def fitted_full():
    method = registry.get("ddash")(bits=16, **FAST)
    data = sample_for(method, full=True, n_train=600, n_query=100)
    codes, _ = run_trial_data(method, data, RunContext(seed=0))
    return method, data, {t.name: pair for t, pair in codes.items()}


def test_registered_as_a_cross_modal_asymmetric_deep_reconstruction():
    cls = registry.get("ddash")
    meta = cls.meta
    assert meta.modalities == ("features", "text") and meta.family == "deep"
    assert meta.requires == "gpu-preferred" and meta.supervised and meta.asymmetric
    assert meta.display_name("full") == "DDASH"
    assert "reconstruction" in meta.citation and "reconstruction" in sys.modules[cls.__module__].__doc__
    assert cls(backbone="cnn").modalities == ("image", "text")
    for name in ("similarity", "balance", "beta", "shared_codes", "alpha", "gamma", "ridge"):
        assert name in cls.param_names()
    with pytest.raises(ConfigError, match="similarity"):
        cls(similarity="cosine").fit(sample_for(cls(), full=True).for_fit(), RunContext())


def test_learned_codes_are_the_database_codes_of_both_tasks_and_balanced(fitted_full):
    method, data, codes = fitted_full
    B = method.database_codes()
    np.testing.assert_array_equal(method.learned_indices_, data.database.indices)
    np.testing.assert_array_equal(codes["i2t"][1], B)
    np.testing.assert_array_equal(codes["t2i"][1], B)
    assert np.abs(B.mean(axis=0)).max() < 0.5, B.mean(axis=0)        # every bit is used both ways
    assert len(np.unique(B, axis=0)) >= 10                           # ten classes, not collapsed
    for task, (q, d) in codes.items():
        result = evaluate(q, d, data.query.labels, data.database.labels).metrics["map"]
        assert result > 0.4, (task, result)                           # chance is about 0.1


def test_objective_decreases_over_training(fitted_full):
    losses = fitted_full[0].losses_
    assert losses[-1] < losses[0]


def test_refuses_another_database(fitted_full):
    method, _, _ = fitted_full
    other = sample_for(method, full=False)
    with pytest.raises(DataError, match="other rows"):
        method.encode_database(other, "text")


def test_sampled_mode_learns_codes_for_the_whole_database():
    method = registry.get("ddash")(bits=8, **{**FAST, "outer_iters": 3})
    data = sample_for(method, full=False)
    method.fit(data.for_fit(), RunContext(seed=0))
    assert method.database_codes().shape == (len(data.database), 8)
    np.testing.assert_array_equal(method.encode_database(data, "features"), method.database_codes())


def test_per_modality_codes_pair_with_their_query_side():
    method = registry.get("ddash")(bits=8, shared_codes=False, **{**FAST, "outer_iters": 3})
    data = sample_for(method, full=True)
    method.fit(data.for_fit(), RunContext(seed=0))
    b_img, b_txt = method.codes_
    assert not np.array_equal(b_img, b_txt)
    np.testing.assert_array_equal(method.encode_database(data, "text"), b_img)       # I->T
    np.testing.assert_array_equal(method.encode_database(data, "features"), b_txt)   # T->I


def test_cli_runs_the_cross_modal_grid_on_tiny_wikipedia_files_and_reports(tmp_path, capsys):
    """The issue's command on tiny files in the real Wikipedia format: DDASH, DCMH (on the
    database: the protocol trains every method there, so no "-D"), SePH, SCM and CCA, then the cross-modal table with both tasks (8 bits:
    CCA needs as many dimensions per view as bits, and the LDA text has 10)."""
    from test_crossmodal_datasets import write_wikipedia  # tests/ is on sys.path (rootdir)

    from hashbench.cli import main
    from hashbench.report import collect
    from hashbench.tracking import Store

    write_wikipedia(tmp_path / "data", n_train=40, n_test=10)
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    small = ["ddash.outer_iters=2", "ddash.num_samples=30", "ddash.text_hidden=32", "ddash.hidden=16",
             "dcmh.epochs=2", "dcmh.text_hidden=32", "dcmh.hidden=16"]
    args = ["run", "--methods", "ddash,dcmh,seph,scm,cca", "--dataset", "wikipedia", "--data-root",
            str(tmp_path / "data"), "--bits", "8", "--seeds", "0", "--device", "cpu", "--quiet",
            "--tracking-uri", uri] + [a for p in small for a in ("--param", p)]
    assert main(args) == 0
    runs = collect(Store(uri, create=False)).to_dict("records")
    assert sorted(r["method"] for r in runs) == ["cca", "dcmh", "ddash", "scm", "seph"]
    for run in runs:
        assert run["status"] == "FINISHED" and run["train_mode"] == "full", run
        assert 0.0 < run["metric.i2t.map"] <= 1.0 and 0.0 < run["metric.t2i.map"] <= 1.0, run
    capsys.readouterr()
    assert main(["report", "--tracking-uri", uri, "--no-figures", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "wikipedia I→T" in out and "wikipedia T→I" in out
    for row in ("| DDASH |", "| DCMH |", "| SePH |", "| SCM-Seq |", "| CCA |"):
        assert row in out, (row, out)
