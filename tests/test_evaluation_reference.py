"""The evaluator against independent, straightforward references.

- a per-query loop (distances, stable argsort, cumulative precision) written here, on random
  codes with many ties, single- and multi-label, with queries that have no relevant item;
- scikit-learn's average_precision_score when there are no ties;
- brute force over every ordering inside the tie groups for the tie-aware, best and worst AP.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hashbench.evaluation import Conventions, evaluate
from hashbench.evaluation.metrics import curve_ks


def random_problem(seed: int, n_query: int, n_db: int, bits: int, n_labels: int, multi: bool):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], size=(n_query, bits)).astype(np.int8)
    db = rng.choice([-1, 1], size=(n_db, bits)).astype(np.int8)
    if multi:
        # about 3 labels per query and 2.4 per item at most, so relevance stays mixed
        ql = (rng.random((n_query, n_labels)) < min(0.25, 3 / n_labels)).astype(np.int8)
        dl = (rng.random((n_db, n_labels)) < min(0.2, 2.4 / n_labels)).astype(np.int8)
        ql[:3] = 0  # queries without labels: no relevant item at all
    else:
        ql = np.eye(n_labels, dtype=np.int8)[rng.integers(0, n_labels, n_query)]
        dl = np.eye(n_labels, dtype=np.int8)[rng.integers(0, n_labels - 1, n_db)]
        ql[:3] = np.eye(n_labels, dtype=np.int8)[n_labels - 1]  # a class no database item has
    return q, db, ql, dl


def reference(q, db, ql, dl, conv: Conventions, ks):
    """Straightforward per-query evaluation, one query at a time."""
    bits, n = q.shape[1], db.shape[0]
    out = {"ap": [], "found_k": [], "radius_p": [], "radius_r": [], "pr_p": [], "pr_r": [], "R": []}
    for i in range(q.shape[0]):
        dist = (bits - db.astype(np.int64) @ q[i].astype(np.int64)) // 2
        relevant = (dl.astype(np.int64) @ ql[i].astype(np.int64)) > 0
        order = np.argsort(dist, kind="stable")
        rel = relevant[order].astype(np.int64)
        cum = np.cumsum(rel)
        precision = cum / np.arange(1, n + 1)
        R = int(relevant.sum())
        if conv.map_topk is None:
            ap = float(np.sum(precision * rel) / R) if R else 0.0
        else:
            k = min(conv.map_topk, n)
            s = float(np.sum(precision[:k] * rel[:k]))
            found = int(rel[:k].sum())
            den = found if conv.mapk_normalisation == "found" else min(conv.map_topk, R)
            ap = s / den if den else 0.0
        out["ap"].append(ap)
        out["R"].append(R)
        out["found_k"].append([int(cum[min(k, n) - 1]) for k in ks])
        pr_p, pr_r = [], []
        for r in range(bits + 1):
            inside = dist <= r
            hits = int((inside & relevant).sum())
            pr_p.append(hits / inside.sum() if inside.sum() else 0.0)
            pr_r.append(hits / R if R else 0.0)
        out["pr_p"].append(pr_p)
        out["pr_r"].append(pr_r)
        out["radius_p"].append(pr_p[min(conv.radius, bits)])
        out["radius_r"].append(pr_r[min(conv.radius, bits)])
    return {k: np.asarray(v) for k, v in out.items()}


CASES = [
    # seed, n_query, n_db, bits, n_labels, multi, conventions
    (0, 25, 400, 6, 5, False, Conventions()),
    (1, 25, 400, 6, 6, True, Conventions()),
    (2, 20, 600, 6, 5, True, Conventions(map_topk=50, curve_max_k=100, precision_ks=(20,))),
    (3, 20, 600, 6, 4, False, Conventions(map_topk=50, mapk_normalisation="min_k_r", curve_max_k=60,
                                          precision_ks=(5, 60))),
    (8, 20, 900, 10, 5, False, Conventions(map_topk=30, curve_max_k=40, precision_ks=(1, 2))),
    (4, 20, 500, 8, 7, True, Conventions(map_topk=450, mapk_normalisation="min_k_r",
                                         precision_ks=(1, 7, 450))),
    (5, 15, 300, 4, 3, False, Conventions(map_topk=10, precision_ks=(10, 1000), radius=1, curve_max_k=120)),
    (6, 20, 700, 12, 9, True, Conventions(drop_zero_relevant=True, radius=3)),
    (7, 30, 250, 3, 4, True, Conventions(map_topk=600)),
    (9, 10, 200, 300, 4, True, Conventions(map_topk=20, curve_max_k=30)),  # 300 bits: uint16 distances
    (10, 8, 120, 255, 3, False, Conventions(radius=120)),  # largest uint8 distance
    (11, 20, 400, 70, 80, True, Conventions(map_topk=60)),  # two words of codes and of labels
    (12, 15, 350, 64, 64, False, Conventions()),  # exactly one full word of each
]


@pytest.mark.parametrize(("seed", "nq", "ndb", "bits", "nl", "multi", "conv"), CASES)
def test_matches_per_query_reference(seed, nq, ndb, bits, nl, multi, conv):
    q, db, ql, dl = random_problem(seed, nq, ndb, bits, nl, multi)
    grid = curve_ks(min(conv.curve_max_k, ndb))
    ks = list(conv.precision_ks) + grid.tolist()
    ref = reference(q, db, ql, dl, conv, ks)
    keep = ref["R"] > 0 if conv.drop_zero_relevant else np.ones(nq, bool)
    assert (ref["R"] == 0).sum() >= 3  # the zero-relevant queries are really there

    for chunk_size, n_jobs in [(None, 1), (3, 2), (1, 1)]:
        res = evaluate(q, db, ql, dl, conv, chunk_size=chunk_size, n_jobs=n_jobs)
        m = res.metrics
        np.testing.assert_allclose(res.per_query["ap"], ref["ap"], rtol=0, atol=1e-12)
        assert m["map"] == pytest.approx(ref["ap"][keep].mean(), abs=1e-12)
        if conv.map_topk is not None:
            assert m[f"map@{conv.map_topk}"] == m["map"]
        assert m["n_queries_zero_relevant"] == float((ref["R"] == 0).sum())
        for j, k in enumerate(conv.precision_ks):
            # precision values are exact ratios: compare exactly
            expected = np.mean((ref["found_k"][:, j] / min(k, ndb))[keep])
            assert m[f"p@{k}"] == pytest.approx(expected, rel=1e-15, abs=0)
        assert m[f"p_r{conv.radius}"] == pytest.approx(ref["radius_p"][keep].mean(), rel=1e-15, abs=0)
        assert m[f"r_r{conv.radius}"] == pytest.approx(ref["radius_r"][keep].mean(), rel=1e-15, abs=0)

        curve = res.curves["precision_at_k"]
        assert curve["k"].tolist() == grid.tolist()
        found = ref["found_k"][:, len(conv.precision_ks):]
        exp_p = (found / np.minimum(grid, ndb))[keep].mean(axis=0)
        n_rel = ref["R"][:, None]
        exp_r = np.where(n_rel > 0, found / np.maximum(n_rel, 1), 0.0)[keep].mean(axis=0)
        np.testing.assert_allclose(curve["precision"], exp_p, rtol=1e-14, atol=0)
        np.testing.assert_allclose(curve["recall"], exp_r, rtol=1e-14, atol=0)
        pr = res.curves["pr_curve"]
        np.testing.assert_allclose(pr["precision"], ref["pr_p"][keep].mean(axis=0), rtol=1e-14, atol=0)
        np.testing.assert_allclose(pr["recall"], ref["pr_r"][keep].mean(axis=0), rtol=1e-14, atol=0)

        only = evaluate(q, db, ql, dl, conv, chunk_size=chunk_size, n_jobs=n_jobs, map_only=True)
        np.testing.assert_allclose(only.per_query["ap"], ref["ap"], rtol=0, atol=1e-12)
        assert only.metrics["map"] == m["map"]

        # stable-order AP lies between the extremes of the orderings within ties
        if conv.map_topk is None:
            assert m["map_worst"] - 1e-12 <= m["map"] <= m["map_best"] + 1e-12
        assert m["map_worst"] - 1e-12 <= m["tie_aware_map"] <= m["map_best"] + 1e-12


def test_agrees_with_sklearn_average_precision_without_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(11)
    bits, n = 64, 60
    for _ in range(10):
        q0 = rng.choice([-1, 1], size=bits).astype(np.int8)
        flip_order = rng.permutation(bits)
        db = np.tile(q0, (n, 1))
        for i, k in enumerate(rng.permutation(n)):  # item i at distance k from q0: all distinct
            db[i, flip_order[:k]] *= -1
        queries = np.stack([q0, -q0])  # -q0 sees distance 64 - k: distinct too
        ql = (rng.random((2, 5)) < 0.5).astype(np.int8)
        ql[:, 0] = 1
        dl = (rng.random((n, 5)) < 0.3).astype(np.int8)
        res = evaluate(queries, db, ql, dl)
        tie = res.metrics["tie_fraction"]
        assert tie == 0.0
        for j in range(2):
            dist = (bits - db.astype(int) @ queries[j].astype(int)) // 2
            relevant = (dl @ ql[j]) > 0
            expected = average_precision_score(relevant, -dist)
            assert res.per_query["ap"][j] == pytest.approx(expected, abs=1e-12)
            # no ties: tie-aware, best and worst all equal the stable AP
            assert res.per_query["tie_aware_ap"][j] == pytest.approx(expected, abs=1e-12)
        assert res.metrics["map_best"] == pytest.approx(res.metrics["map"], abs=1e-12)
        assert res.metrics["map_worst"] == pytest.approx(res.metrics["map"], abs=1e-12)


def brute_force_tie_orderings(dist: np.ndarray, relevant: np.ndarray):
    """AP over every ordering of the items within each tie group: (mean, max, min)."""
    groups = [np.flatnonzero(dist == d) for d in np.unique(dist)]
    R = int(relevant.sum())
    aps = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        rel = relevant[np.concatenate(perms)]
        hits = np.cumsum(rel)
        aps.append(float(np.sum(rel * hits / np.arange(1, len(rel) + 1)) / R) if R else 0.0)
    return float(np.mean(aps)), max(aps), min(aps), len(aps)


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_best_worst_against_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    bits, n_db, n_query = 3, 7, 3
    q = rng.choice([-1, 1], size=(n_query, bits))
    db = rng.choice([-1, 1], size=(n_db, bits))
    ql = (rng.random((n_query, 3)) < 0.5).astype(int)
    dl = (rng.random((n_db, 3)) < 0.4).astype(int)
    ql[0] = [1, 1, 1]  # at least one query with relevant items
    res = evaluate(q, db, ql, dl)
    for i in range(n_query):
        dist = (bits - db @ q[i]) // 2
        relevant = (dl @ ql[i]) > 0
        mean, best, worst, count = brute_force_tie_orderings(dist, relevant)
        assert count == math.prod(math.factorial(c) for c in np.unique(dist, return_counts=True)[1])
        assert res.per_query["tie_aware_ap"][i] == pytest.approx(mean, abs=1e-12)
        assert worst - 1e-12 <= res.per_query["ap"][i] <= best + 1e-12
    tie, best_m, worst_m = (res.metrics[k] for k in ("tie_aware_map", "map_best", "map_worst"))
    expected = [brute_force_tie_orderings((bits - db @ q[i]) // 2, (dl @ ql[i]) > 0) for i in range(n_query)]
    assert tie == pytest.approx(np.mean([e[0] for e in expected]), abs=1e-12)
    assert best_m == pytest.approx(np.mean([e[1] for e in expected]), abs=1e-12)
    assert worst_m == pytest.approx(np.mean([e[2] for e in expected]), abs=1e-12)
    assert worst_m <= tie <= best_m


def test_tie_aware_closed_form_against_direct_sum_on_large_buckets():
    """The digamma closed form against the defining sum, on buckets with thousands of items."""
    q, db, ql, dl = random_problem(21, 6, 5000, 4, 3, True)
    res = evaluate(q, db, ql, dl)
    for i in range(6):
        dist = (4 - db.astype(int) @ q[i].astype(int)) // 2
        relevant = (dl.astype(int) @ ql[i].astype(int)) > 0
        R = int(relevant.sum())
        total, before, before_rel = 0.0, 0, 0
        for d in range(5):
            n = int((dist == d).sum())
            r = int((relevant & (dist == d)).sum())
            t = np.arange(1, n + 1)
            b = (r - 1) / (n - 1) if n > 1 else 0.0
            total += r / n * np.sum((before_rel + 1 + (t - 1) * b) / (before + t)) if r else 0.0
            before, before_rel = before + n, before_rel + r
        expected = total / R if R else 0.0
        assert res.per_query["tie_aware_ap"][i] == pytest.approx(expected, abs=1e-12)
