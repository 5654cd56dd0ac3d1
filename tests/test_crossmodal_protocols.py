"""Cross-modal track: count-based and fixed-order splits, MAP@K beside MAP, the I→T / T→I
table of the report and the DCMH paper's numbers shipped with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hashbench import report
from hashbench.errors import ConfigError
from hashbench.evaluation import Conventions, evaluate
from hashbench.protocol import builtin_protocols, get_protocol, materialise, parse_protocol
from hashbench.tracking import Store


def _labels(n=3000, classes=24, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < 0.1).astype(np.uint8)
    labels[np.arange(n), rng.integers(0, classes, n)] = 1
    return labels


def _proto(**query):
    data = {"name": "p", "dataset": "d", "query": query, "train": {"mode": "sampled", "count": 500},
            "evaluation": {"map_ks": [50, 500]}}
    return parse_protocol(data, "test")


def test_count_split_is_seeded_disjoint_and_sized():
    labels = _labels()
    split = materialise(_proto(count=200), labels)
    assert len(split.query) == 200 and len(split.database) == 2800 and len(split.train) == 500
    assert not np.intersect1d(split.query, split.database).size
    assert np.isin(split.train, split.database).all()
    assert np.array_equal(split.query, np.sort(split.query))
    again = materialise(_proto(count=200), labels)
    assert again.sha256 == split.sha256  # a function of the protocol and its seed
    fixed = materialise(_proto(count=200, order="first"), labels)
    np.testing.assert_array_equal(fixed.query, np.arange(200))  # "the first 2,000 rows" style
    assert fixed.sha256 != split.sha256


def test_count_protocol_errors_name_the_field():
    with pytest.raises(ConfigError, match="exactly one of query.per_class and query.count"):
        _proto(count=10, per_class=3)
    with pytest.raises(ConfigError, match="query.count"):
        _proto(count=0)
    with pytest.raises(ConfigError, match="query.order"):
        _proto(count=5, order="last")
    from hashbench.errors import DataError

    with pytest.raises(DataError, match="9999 asked for but the pool holds only 3000"):
        materialise(_proto(count=9999), _labels())


def test_builtin_cross_modal_protocols_match_the_dcmh_paper_shape():
    protocols = builtin_protocols()
    for name, queries in (("dcmh2017-mirflickr", 2000), ("dcmh2017-nuswide", 2100), ("dcmh2017-iapr", 2000)):
        p = protocols[name]
        assert p.query_count == queries and p.train_count == 10000 and p.default_bits == (16, 32, 64)
        assert p.map_ks == (50, 500) and p.map_topk is None
    wiki = get_protocol("wikipedia")
    assert (wiki.query_pool, wiki.query_count, wiki.database_from, wiki.train_mode) == ("test", -1, "train", "full")
    n = 20015
    split = materialise(protocols["dcmh2017-mirflickr"], _labels(n))
    assert (len(split.query), len(split.database), len(split.train)) == (2000, 18015, 10000)


def test_map_ks_are_extra_map_at_k_metrics_equal_to_their_own_evaluation():
    rng = np.random.default_rng(1)
    q = np.where(rng.random((60, 16)) > 0.5, 1, -1).astype(np.int8)
    d = np.where(rng.random((800, 16)) > 0.5, 1, -1).astype(np.int8)
    ql, dl = rng.integers(0, 5, 60), rng.integers(0, 5, 800)
    both = evaluate(q, d, ql, dl, Conventions(map_ks=(50, 500))).metrics
    for k in (50, 500):
        assert both[f"map@{k}"] == evaluate(q, d, ql, dl, Conventions(map_topk=k)).metrics["map"]
    assert both["map"] == evaluate(q, d, ql, dl).metrics["map"]
    assert Conventions(map_ks=(50, 500)).as_tags()["eval.map_ks"] == "50,500"
    assert "eval.map_ks" not in Conventions().as_tags()  # older protocols keep their tags and run keys


def _add(store, method, title, task_values, bits, seed, protocol="dcmh2017-mirflickr"):
    tags = {"hashbench.kind": "trial", "hashbench.run_key": f"{method}-{bits}-{seed}-{protocol}",
            "hashbench.method_title": title, "hashbench.display_name": title, "hashbench.variant": "",
            "hashbench.eval_split_sha256": "e" * 64, "hashbench.split_sha256": "s" * 64,
            "eval.map_topk": "all", "eval.map_ks": "50,500", "hashbench.version": "0.1.0"}
    run = store.start_run(f"{method}-{bits}", tags)
    run.log_params({"method": method, "protocol": protocol, "dataset": "mirflickr", "bits": bits,
                    "seed": seed, "train_mode": "sampled"})
    run.log_metrics({f"{task}.map": v for task, v in task_values.items()})
    run.end("FINISHED")


def test_report_builds_the_cross_modal_table_with_the_dcmh_papers_numbers(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/x.db")
    for seed, delta in enumerate((0.0, 0.02)):
        _add(store, "scm", "SCM", {"i2t": 0.60 + delta, "t2i": 0.62 + delta}, 16, seed)
        _add(store, "cca", "CCA", {"i2t": 0.50 + delta, "t2i": 0.51 + delta}, 16, seed)
    frame = report.collect(store)
    (table,) = report.build_tables(frame, "map", paper=True)
    assert table.title == "Cross-modal"
    assert [g.label for g in table.groups] == ["dcmh2017-mirflickr I→T", "dcmh2017-mirflickr T→I"]
    md = report.to_markdown(table)
    # sample std of (0.60, 0.62) = 0.0141
    assert "| SCM | **0.6100 ± 0.0141 (2)** (paper 0.6851, Δ -0.0751) | **0.6300 ± 0.0141 (2)**" in md
    assert "(paper 0.5719" in md  # CCA I→T at 16 bits, from the DCMH paper
    assert "CNN-F features" in report.caption(table)
    tex = report.to_latex(table)
    assert r"dcmh2017-mirflickr I$\to$T" in tex and "→" not in tex  # pdflatex has no UTF-8 arrows
    shipped = report.load_cross_modal_paper()
    assert len(shipped) == 72 and set(shipped["features"]) == {"CNN-F"}
    dcmh = shipped[(shipped.method == "dcmh") & (shipped.protocol == "dcmh2017-mirflickr/i2t")]
    assert dcmh.sort_values("bits")["map"].tolist() == [0.7410, 0.7465, 0.7485]
    assert isinstance(frame, pd.DataFrame)


def test_tasks_are_declared_by_the_protocol_i2i_and_t2t_on_request():
    from hashbench.runner import tasks_for

    assert [(t.name, t.query, t.database) for t in tasks_for(("features", "text"))] == [
        ("i2t", "features", "text"), ("t2i", "text", "features")]
    every = tasks_for(("text", "image"), ("t2t", "i2i", "t2i", "i2t"))
    assert [(t.name, t.query, t.database) for t in every] == [
        ("i2t", "image", "text"), ("t2i", "text", "image"), ("i2i", "image", "image"), ("t2t", "text", "text")]
    assert [t.name for t in tasks_for(("features",), ("i2i",))] == [""]  # single-modal: one task
    proto = parse_protocol({"name": "p", "dataset": "d", "query": {"count": 5},
                            "train": {"mode": "full"}, "evaluation": {"tasks": ["i2t", "i2i"]}}, "t")
    assert proto.tasks == ("i2t", "i2i")
    with pytest.raises(ConfigError, match="unknown task 'i2x'.*did you mean"):
        parse_protocol({"name": "p", "dataset": "d", "query": {"count": 5}, "train": {"mode": "full"},
                        "evaluation": {"tasks": ["i2x"]}}, "t")
