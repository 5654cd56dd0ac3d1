"""Hand-worked cases for the evaluator, with every expected number derived in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hashbench.errors import ConfigError, DataError
from hashbench.evaluation import Conventions, EvaluationResult, evaluate, to_multihot

# Two queries, five database items, 2 bits.
#
#            code      class   d(q1)  d(q2)
#   x0   [-1, -1]        0       2      0
#   x1   [+1, +1]        1       0      2
#   x2   [+1, -1]        0       1      1
#   x3   [+1, +1]        0       0      2
#   x4   [-1, +1]        1       1      1
#
# q1 = [+1, +1], class 0: relevant x0, x2, x3 (R = 3).
#   Stable ranking (distance, then index): x1 (0), x3 (0), x2 (1), x4 (1), x0 (2)
#   relevance 0 1 1 0 1 -> relevant ranks 2, 3, 5
#   AP = (1/2 + 2/3 + 3/5) / 3 = (53/30) / 3 = 53/90
# q2 = [-1, -1], class 2: no database item has class 2 -> R = 0 -> AP 0, kept in the mean.
#   MAP = (53/90 + 0) / 2 = 53/180
Q_CODES = np.array([[1, 1], [-1, -1]], dtype=np.int8)
DB_CODES = np.array([[-1, -1], [1, 1], [1, -1], [1, 1], [-1, 1]], dtype=np.int8)
Q_CLASSES = np.array([0, 2])
DB_CLASSES = np.array([0, 1, 0, 0, 1])


def run(**conventions) -> EvaluationResult:
    return evaluate(Q_CODES, DB_CODES, Q_CLASSES, DB_CLASSES, Conventions(**conventions))


def test_map_whole_database_ties_broken_by_index_and_zero_relevant_query_kept():
    r = run()
    assert r.per_query["ap"] == pytest.approx([53 / 90, 0.0], abs=1e-15)
    assert r.metrics["map"] == pytest.approx(53 / 180, abs=1e-15)
    assert r.metrics["n_queries_zero_relevant"] == 1.0
    assert "map@5000" not in r.metrics


def test_drop_zero_relevant_leaves_the_query_out():
    r = run(drop_zero_relevant=True)
    assert r.metrics["map"] == pytest.approx(53 / 90, abs=1e-15)
    assert r.metrics["n_queries_zero_relevant"] == 1.0


def test_map_at_k_found_versus_min_k_r():
    # K = 3: q1's top 3 are x1, x3, x2 -> relevance 0 1 1 -> ranks 2, 3:
    #   summed precision 1/2 + 2/3 = 7/6; found = 2 -> AP@3 = 7/12 ("found")
    #   min(K, R) = min(3, 3) = 3 -> AP@3 = 7/18 ("min_k_r"). q2 scores 0 either way.
    found = run(map_topk=3)
    assert found.metrics["map"] == pytest.approx(7 / 24, abs=1e-15)
    assert found.metrics["map@3"] == found.metrics["map"]
    min_k_r = run(map_topk=3, mapk_normalisation="min_k_r")
    assert min_k_r.metrics["map@3"] == pytest.approx(7 / 36, abs=1e-15)
    # K = 2: top 2 are x1, x3 -> one relevant at rank 2: sum 1/2; found 1 -> 1/2;
    #   min(2, 3) = 2 -> 1/4.
    assert run(map_topk=2).per_query["ap"][0] == pytest.approx(1 / 2, abs=1e-15)
    assert run(map_topk=2, mapk_normalisation="min_k_r").per_query["ap"][0] == pytest.approx(1 / 4)
    # K = 5 = N: everything is in the top K, so "found" gives the whole-database AP.
    assert run(map_topk=5).per_query["ap"][0] == pytest.approx(53 / 90, abs=1e-15)
    # K larger than the database is capped at N; the metric keeps the requested name.
    assert run(map_topk=50).metrics["map@50"] == pytest.approx(53 / 180, abs=1e-15)


def test_map_at_k_with_no_relevant_item_in_the_top_k_is_zero():
    # K = 1: q1's first item x1 is not relevant: found = 0 -> AP@1 = 0 (not NaN).
    r = run(map_topk=1)
    assert r.per_query["ap"].tolist() == [0.0, 0.0]


def test_precision_at_k_exact_values():
    # q1 relevance in rank order 0 1 1 0 1 -> P@1 = 0, P@2 = 1/2, P@3 = 2/3, P@5 = 3/5;
    # P@100 is capped at the 5 items -> 3/5. q2 has no relevant item -> 0.
    r = run(precision_ks=(1, 2, 3, 100))
    assert r.metrics["p@1"] == 0.0
    assert r.metrics["p@2"] == (1 / 2) / 2
    assert r.metrics["p@3"] == (2 / 3) / 2
    assert r.metrics["p@100"] == (3 / 5) / 2
    curve = r.curves["precision_at_k"]
    assert list(curve.columns) == ["k", "precision", "recall"]
    assert curve["k"].tolist() == [1, 5]  # grid capped at n_database = 5
    # recall at k=5: q1 3/3, q2 0 (R = 0) -> 1/2
    assert curve["recall"].tolist() == [0.0, 0.5]


def test_tie_aware_best_and_worst_map_by_hand():
    # q1's tie groups: {x1, x3} at 0 (one relevant), {x2, x4} at 1 (one relevant), {x0} at 2.
    # The four orderings and their summed precisions (relevant ranks):
    #   x1 x3 | x2 x4 | x0 -> 2,3,5: 1/2 + 2/3 + 3/5 = 53/30
    #   x3 x1 | x2 x4 | x0 -> 1,3,5: 1   + 2/3 + 3/5 = 68/30  (best)
    #   x1 x3 | x4 x2 | x0 -> 2,4,5: 1/2 + 2/4 + 3/5 = 48/30  (worst)
    #   x3 x1 | x4 x2 | x0 -> 1,4,5: 1   + 2/4 + 3/5 = 63/30
    # tie-aware AP = mean / R = (232/120) / 3 = 29/45; best 68/90; worst 48/90.
    # q2 has R = 0 and scores 0 in all three.
    r = run()
    assert r.per_query["tie_aware_ap"] == pytest.approx([29 / 45, 0.0], abs=1e-14)
    assert r.metrics["tie_aware_map"] == pytest.approx(29 / 90, abs=1e-14)
    assert r.metrics["map_best"] == pytest.approx(68 / 180, abs=1e-14)
    assert r.metrics["map_worst"] == pytest.approx(48 / 180, abs=1e-14)


def test_tie_fraction_and_code_statistics_by_hand():
    # q1 bucket sizes 2, 2, 1 and q2 bucket sizes 1, 2, 2: 4 of 5 items share their distance.
    r = run()
    assert r.metrics["tie_fraction"] == pytest.approx(0.8)
    # Codes: 4 distinct of 5; each bit is +1 for 3 of 5 items -> 2 * min(0.6, 0.4) = 0.8.
    assert r.metrics["distinct_db_codes"] == 4.0
    assert r.metrics["distinct_db_codes_fraction"] == pytest.approx(0.8)
    assert r.metrics["bit_balance_min"] == pytest.approx(0.8)
    assert r.metrics["bit_balance_mean"] == pytest.approx(0.8)
    assert r.flags == {}


# Radius metrics, 4 bits.
#          code              class  d(A) d(B)
#   y0  [+1, +1, +1, +1]       0     0    4
#   y1  [-1, -1, +1, +1]       0     2    2
#   y2  [-1, -1, -1, +1]       1     3    1
# A = [+1]*4, class 0 (relevant y0, y1; R = 2); B = [-1]*4, class 0 (relevant y0, y1; R = 2).
# radius 2: A's ball {y0, y1}: P = 1, R = 1.  B's ball {y1, y2}: P = 1/2, R = 1/2.
#   p_r2 = 3/4, r_r2 = 3/4
# radius 1: A {y0}: P = 1, R = 1/2.  B {y2}: P = 0, R = 0.           p_r1 = 1/2, r_r1 = 1/4
# radius 0: A {y0}: P = 1, R = 1/2.  B: the ball is EMPTY -> P = 0.  p_r0 = 1/2, r_r0 = 1/4
# (leaving the empty ball out of the mean would give p_r0 = 1: the convention matters.)
RADIUS_Q = np.array([[1, 1, 1, 1], [-1, -1, -1, -1]])
RADIUS_DB = np.array([[1, 1, 1, 1], [-1, -1, 1, 1], [-1, -1, -1, 1]])
RADIUS_Q_LABELS = np.array([[1, 0], [1, 0]])
RADIUS_DB_LABELS = np.array([[1, 0], [1, 0], [0, 1]])


@pytest.mark.parametrize(("radius", "precision", "recall"),
                         [(2, 3 / 4, 3 / 4), (1, 1 / 2, 1 / 4), (0, 1 / 2, 1 / 4)])
def test_radius_precision_with_empty_ball_counting_zero(radius, precision, recall):
    r = evaluate(RADIUS_Q, RADIUS_DB, RADIUS_Q_LABELS, RADIUS_DB_LABELS, Conventions(radius=radius))
    assert r.metrics[f"p_r{radius}"] == precision
    assert r.metrics[f"r_r{radius}"] == recall
    assert f"p_r{radius + 1}" not in r.metrics


def test_pr_curve_over_all_radii():
    r = evaluate(RADIUS_Q, RADIUS_DB, RADIUS_Q_LABELS, RADIUS_DB_LABELS)
    pr = r.curves["pr_curve"]
    assert list(pr.columns) == ["radius", "precision", "recall"]
    assert pr["radius"].tolist() == [0, 1, 2, 3, 4]
    # radius 3: A {y0,y1,y2}: P 2/3, R 1; B {y1,y2}: P 1/2, R 1/2
    # radius 4: everything: P 2/3, R 1 for both
    assert pr["precision"].tolist() == pytest.approx([1 / 2, 1 / 2, 3 / 4, (2 / 3 + 1 / 2) / 2, 2 / 3])
    assert pr["recall"].tolist() == pytest.approx([1 / 4, 1 / 4, 3 / 4, 3 / 4, 1.0])


def test_result_shape_and_metric_names():
    r = evaluate(Q_CODES, DB_CODES, Q_CLASSES, DB_CLASSES, Conventions(map_topk=4, precision_ks=(1, 3)))
    assert set(r.metrics) == {
        "map", "map@4", "p@1", "p@3", "p_r2", "r_r2", "tie_aware_map", "map_best", "map_worst",
        "n_queries_zero_relevant", "distinct_db_codes", "distinct_db_codes_fraction",
        "bit_balance_min", "bit_balance_mean", "tie_fraction"}
    assert all(isinstance(v, float) for v in r.metrics.values())
    assert set(r.curves) == {"precision_at_k", "pr_curve"}
    assert all(isinstance(c, pd.DataFrame) for c in r.curves.values())


def test_map_only_gives_the_same_map():
    full = run(map_topk=3)
    only = evaluate(Q_CODES, DB_CODES, Q_CLASSES, DB_CLASSES, Conventions(map_topk=3), map_only=True)
    assert only.metrics == {"map": full.metrics["map"], "map@3": full.metrics["map"],
                            "n_queries_zero_relevant": 1.0}
    assert only.curves == {}


def test_multi_label_relevance_is_share_at_least_one_label():
    # Query labels {0, 2}; items {2}, {1}, {0, 1}, {} -> relevant, not, relevant, not.
    q = np.array([[1, 1, 1]])
    db = np.array([[1, 1, 1], [1, 1, 1], [-1, -1, -1], [1, 1, -1]])
    r = evaluate(q, db, np.array([[1, 0, 1]]), np.array([[0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]))
    # distances 0, 0, 3, 1 -> ranking x0, x1, x3, x2 -> relevance 1 0 0 1 -> AP = (1 + 2/4)/2
    assert r.metrics["map"] == pytest.approx(0.75, abs=1e-15)


def test_all_queries_without_relevant_items_are_flagged_and_nan_when_dropped():
    r = evaluate(Q_CODES, DB_CODES, np.array([2, 2]), DB_CLASSES)
    assert r.metrics["map"] == 0.0
    assert "no_relevant" in r.flags
    dropped = evaluate(Q_CODES, DB_CODES, np.array([2, 2]), DB_CLASSES, Conventions(drop_zero_relevant=True))
    assert np.isnan(dropped.metrics["map"])


def test_inputs_as_float_and_torch_tensors_give_the_same_answer():
    torch = pytest.importorskip("torch")
    base = run().metrics
    as_float = evaluate(Q_CODES.astype(np.float64), DB_CODES.astype(np.float32), Q_CLASSES, DB_CLASSES)
    as_torch = evaluate(torch.from_numpy(Q_CODES).float(), torch.from_numpy(DB_CODES),
                        torch.from_numpy(Q_CLASSES), torch.from_numpy(DB_CLASSES))
    assert as_float.metrics == base
    assert as_torch.metrics == base


@pytest.mark.parametrize(("codes", "message"), [
    (np.array([[1, 0], [1, 1]]), r"only -1 and \+1, found 0 "),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), r"only -1 and \+1, found nan"),
    (np.array([[True, False], [True, True]]), "dtype bool"),
    (np.array([1, -1]), "2-D"),
    (np.zeros((0, 2)), "empty"),
])
def test_bad_codes_raise_data_error(codes, message):
    with pytest.raises(DataError, match=message):
        evaluate(codes, DB_CODES, Q_CLASSES[: len(codes)] if codes.ndim == 2 else Q_CLASSES, DB_CLASSES)


def test_shape_mismatches_raise_data_error():
    with pytest.raises(DataError, match="bits"):
        evaluate(Q_CODES, np.ones((5, 3)), Q_CLASSES, DB_CLASSES)
    with pytest.raises(DataError, match="rows"):
        evaluate(Q_CODES, DB_CODES, Q_CLASSES, DB_CLASSES[:4])
    with pytest.raises(DataError, match="classes"):
        evaluate(Q_CODES, DB_CODES, np.eye(3)[[0, 1]], np.eye(4)[DB_CLASSES])


def test_to_multihot():
    assert to_multihot(np.array([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert to_multihot(np.array([1]), n_classes=4).tolist() == [[0, 1, 0, 0]]
    passed = to_multihot(np.array([[True, False, True]]))
    assert passed.dtype == np.int8 and passed.tolist() == [[1, 0, 1]]
    for bad, message in [(np.array([-1, 0]), ">= 0"), (np.array([[0, 2]]), "only 0 and 1"),
                         (np.array([0.5]), "whole numbers"), (np.zeros((2, 2, 2)), "1-D")]:
        with pytest.raises(DataError, match=message):
            to_multihot(bad)
    with pytest.raises(DataError, match="out of range"):
        to_multihot(np.array([3]), n_classes=3)


def test_conventions_tags_and_description():
    assert Conventions().as_tags() == {
        "eval.version": "1",
        "eval.tie_order": "database_index_stable",
        "eval.relevance": "share_at_least_one_label",
        "eval.zero_relevant": "ap_0_kept",
        "eval.map_topk": "all",
        "eval.mapk_normalisation": "found",
        "eval.precision_ks": "100",
        "eval.curve_max_k": "5000",
        "eval.radius": "2",
        "eval.radius_empty": "precision_0",
        "eval.tie_aware": "expected_ap_whole_database",
    }
    tags = Conventions(map_topk=5000, drop_zero_relevant=True, mapk_normalisation="min_k_r",
                       precision_ks=[100, 1000]).as_tags()
    assert tags["eval.map_topk"] == "5000"
    assert tags["eval.zero_relevant"] == "dropped"
    assert tags["eval.mapk_normalisation"] == "min_k_r"
    assert tags["eval.precision_ks"] == "100,1000"
    assert all(isinstance(v, str) for v in tags.values())
    text = Conventions(map_topk=5000).describe()
    assert "MAP@5000" in text and "database index" in text and "AP 0" in text
    assert "\n" not in text
    assert Conventions(precision_ks=[10]).precision_ks == (10,)


@pytest.mark.parametrize("kwargs", [
    {"map_topk": 0}, {"map_topk": -5}, {"map_topk": 2.5}, {"mapk_normalisation": "min"},
    {"precision_ks": (0,)}, {"curve_max_k": 0}, {"radius": -1}, {"radius": 1.5},
    {"drop_zero_relevant": "yes"},
])
def test_invalid_conventions_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        Conventions(**kwargs)


def test_conventions_are_hashable_and_frozen():
    c = Conventions(map_topk=np.int64(10))
    assert c.map_topk == 10 and type(c.map_topk) is int
    assert hash(c) == hash(Conventions(map_topk=10))
    with pytest.raises(AttributeError):
        c.radius = 3  # type: ignore[misc]
