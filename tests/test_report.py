"""Report layout on a synthetic MLflow store built here (real SQLite store, no training)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hashbench import report
from hashbench.cli import main
from hashbench.tracking import Store

CONV = {"eval.map_topk": "all", "eval.tie_order": "database_index_stable"}


def add_run(store, method, title, bits, seed, value, *, protocol="digits", split="s1", mode="sampled",
            conv=CONV, status="FINISHED", flags=None, learns_database=False, display=None, seconds=1.0):
    tags = {"hashbench.kind": "trial", "hashbench.run_key": f"{method}-{protocol}-{split}-{mode}-{bits}-{seed}-"
            f"{sorted(conv.items())}", "hashbench.method_title": title,
            "hashbench.eval_split_sha256": split * 8, "hashbench.split_sha256": split * 8 + mode,
            "hashbench.version": "0.1.0", "hashbench.git_sha": "abc", "hashbench.device": "cpu",
            "hashbench.learns_database": str(learns_database).lower(),
            "hashbench.eval_description": "MAP over the whole database.", **conv}
    if display:
        tags["hashbench.display_name"] = display
    for k, v in (flags or {}).items():
        tags[f"hashbench.flag.{k}"] = v
    rec = store.start_run(f"{method}-{bits}", tags)
    rec.log_params({"method": method, "protocol": protocol, "dataset": protocol, "bits": bits,
                    "seed": seed, "train_mode": mode})
    if status == "FINISHED":
        rec.log_metrics({"map": value, "train_seconds": seconds, "p@100": value / 2})
    else:
        rec.set_tags({"hashbench.error": "boom"})
    rec.end(status)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/r.db")
    for seed, (a, b) in enumerate([(0.5, 0.7), (0.6, 0.8), (0.7, 0.9)]):
        add_run(s, "itq", "ITQ", 12, seed, a, seconds=3)
        add_run(s, "lfh", "LFH", 12, seed, b, seconds=9)
        add_run(s, "itq", "ITQ", 24, seed, a + 0.1)
        add_run(s, "lfh", "LFH", 24, seed, b - 0.4, flags={"collapsed": "2 distinct codes"})
    return s


def test_table1_mean_std_seeds_and_bold(store):
    frame = report.collect(store)
    (table,) = report.build_tables(frame, "map")
    md = report.to_markdown(table)
    # LFH at 12 bits: mean 0.8, population std sqrt(2/3)*0.1
    std = np.std([0.7, 0.8, 0.9])
    assert f"| LFH | **0.8000 ± {std:.4f} (3)** |" in md
    assert f"| ITQ | 0.6000 ± {std:.4f} (3) |" in md
    # 24 bits: ITQ 0.7 beats LFH 0.4, and LFH's cell is flagged collapsed
    assert "**0.7000 ± " in md and "⚠ 3 collapsed" in md
    text = report.to_text(table)
    assert "0.8000 ± 0.0816 (3)*" in text and "[3 collapsed]" in text


def test_lower_is_better_for_seconds(store):
    (table,) = report.build_tables(report.collect(store), "train_seconds")
    assert table.best(table.groups[0], 12) == "ITQ"


def test_different_splits_and_conventions_are_kept_apart(store):
    add_run(store, "itq", "ITQ", 12, 0, 0.99, split="s2")
    add_run(store, "itq", "ITQ", 12, 0, 0.11, conv={**CONV, "eval.map_topk": "50"})
    frame = report.collect(store)
    tables = report.build_tables(frame, "map")
    assert [t.title for t in tables] == ["Table 1", "Kept apart: digits", "Kept apart: digits"]
    main_md = report.to_markdown(tables[0])
    assert "0.99" not in main_md and "0.11" not in main_md  # never averaged in
    notes = " ".join(t.note for t in tables[1:])
    assert "evaluation split s2s2s2s2s2s2 differs" in notes
    assert "conventions differ (map_topk: 50 vs all)" in notes
    assert "never averaged together" in report.render(tables, frame)


def test_failed_runs_flagged_and_full_mode_in_table2(store):
    add_run(store, "itq", "ITQ", 12, 5, 0, status="FAILED")
    for seed in range(2):
        add_run(store, "lfh", "LFH", 12, seed, 0.85, mode="full")
        add_run(store, "adsh", "ADSH", 12, seed, 0.95, mode="full", learns_database=True, display="ADSH")
    frame = report.collect(store)
    t1, t2 = report.build_tables(frame, "map")
    assert t1.title == "Table 1" and t2.title == "Table 2"
    assert t1.rows == ["ADSH", "ITQ", "LFH"] and t2.rows == ["ADSH", "LFH-D"]
    assert "1 failed" in report.to_markdown(t1)
    assert "**0.9500 ± 0.0000 (2)**" in report.to_markdown(t2)
    assert "1 failed trial(s)" in report.render([t1, t2], frame)


def test_paper_numbers_and_difference(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/p.db")
    add_run(s, "adsh", "ADSH", 12, 0, 0.9, protocol="adsh2018-cifar10", mode="full",
            learns_database=True, display="ADSH")
    (table,) = report.build_tables(report.collect(s), "map", paper=True)
    assert "(paper 0.8898, Δ +0.0102)" in report.to_markdown(table)


def test_paper_data_matches_the_paper_text():
    paper = report.load_paper()
    assert len(paper) == 124 + 64
    text_path = Path(__file__).resolve().parents[2] / "shared" / "papers" / "adsh-aaai2018.txt"
    if not text_path.exists():
        pytest.skip("paper text not beside the repo")
    text = text_path.read_text()
    order = ["adsh2018-coco", "adsh2018-cifar10", "adsh2018-nuswide"]
    for table_no, start in ((1, "Table 1: MAP"), (2, "Table 2: MAP")):
        block = text[text.index(start):]
        sub = paper[paper["table"] == table_no]
        for name in sub["paper_name"].unique():
            line = re.search(rf"^{re.escape(name)} ((?:[\d.]+|N/A)(?: (?:[\d.]+|N/A)){{11}})$", block, re.M)
            values = line.group(1).split()
            for row in sub[sub["paper_name"] == name].itertuples():
                i = order.index(row.protocol) * 4 + [12, 24, 32, 48].index(row.bits)
                assert float(values[i]) == row.map, (name, row.protocol, row.bits)


def test_cli_report_writes_every_format(store, tmp_path, capsys):
    uri = store.uri
    assert main(["report", "--tracking-uri", uri, "--out", str(tmp_path / "out"), "--text"]) == 0
    out = capsys.readouterr().out
    assert "Table 1: map" in out and "0.8000 ± 0.0816 (3)*" in out
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.md", "report.tex", "runs.csv", "report.html", "figures"} <= files
    tex = (tmp_path / "out" / "report.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{0.8000 $\pm$ 0.0816}" in tex and r"$^\dagger$" in tex
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "class='best'" in page
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(runs) == 12 and {"method", "bits", "seed", "metric.map", "status"} <= set(runs.columns)
    assert (tmp_path / "out" / "figures" / "fig2_precision_top100.csv").exists()
    # filters
    assert main(["report", "--tracking-uri", uri, "--methods", "itq", "--bits", "12",
                 "--out", str(tmp_path / "f"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "LFH" not in out and "24 bits" not in out and "12 bits" in out


def test_report_on_missing_store_is_one_line(tmp_path, capsys):
    assert main(["report", "--tracking-uri", str(tmp_path / "none.db")]) == 2
    assert "no MLflow store" in capsys.readouterr().err


def test_only_the_collapsed_flag_marks_a_cell(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/c.db")
    add_run(s, "sdh", "SDH", 48, 0, 0.99, flags={"constant_bits": "3 of 48 bits are constant"})
    (table,) = report.build_tables(report.collect(s), "map")
    assert "collapsed" not in report.to_markdown(table)


def test_display_names_keep_training_settings_apart():
    from hashbench.api import MethodMeta

    adsh = MethodMeta(name="x", title="ADSH", citation="c", family="deep", full_mode_title="ADSH")
    lfh = MethodMeta(name="y", title="LFH", citation="c", family="shallow")
    assert (adsh.display_name("full"), adsh.display_name("sampled")) == ("ADSH", "ADSH (sampled)")
    assert (lfh.display_name("full"), lfh.display_name("sampled")) == ("LFH-D", "LFH")


def test_runs_that_differ_in_a_hyper_parameter_never_share_a_cell(tmp_path):
    """`--param itq.n_iter=5` beside the default: two rows, each averaging its own seeds."""
    from hashbench.cli import main

    uri = f"sqlite:///{tmp_path}/s.db"
    base = ["run", "--methods", "itq", "--bits", "8", "--quiet", "--tracking-uri", uri]
    assert main(base + ["--seeds", "0,1"]) == 0
    assert main(base + ["--seeds", "0", "--param", "itq.n_iter=5"]) == 0
    frame = report.collect(Store(uri))
    (table,) = report.build_tables(frame, "map")
    assert table.rows == ["ITQ", "ITQ (n_iter=5)"]
    cells = {row: table.groups[0].cells[(row, 8)] for row in table.rows}
    assert cells["ITQ"][2] == 2 and cells["ITQ (n_iter=5)"][2] == 1
