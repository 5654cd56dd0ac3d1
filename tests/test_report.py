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
            conv=CONV, status="FINISHED", flags=None, learns_database=False, display=None, seconds=1.0,
            extra=None, hp=None):
    tags = {"hashbench.kind": "trial", "hashbench.run_key": f"{method}-{protocol}-{split}-{mode}-{bits}-{seed}-"
            f"{sorted(conv.items())}", "hashbench.method_title": title,
            "hashbench.eval_split_sha256": split * 8, "hashbench.split_sha256": split * 8 + mode,
            "hashbench.version": "0.1.0", "hashbench.git_sha": "abc", "hashbench.device": "cpu",
            "hashbench.learns_database": str(learns_database).lower(),
            "hashbench.eval_description": "MAP over the whole database.", **conv}
    if display:
        tags["hashbench.display_name"] = display
    tags.update(extra or {})
    for k, v in (flags or {}).items():
        tags[f"hashbench.flag.{k}"] = v
    rec = store.start_run(f"{method}-{bits}", tags)
    rec.log_params({"method": method, "protocol": protocol, "dataset": protocol, "bits": bits,
                    "seed": seed, "train_mode": mode, **{f"hp.{k}": v for k, v in (hp or {}).items()}})
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
    # LFH at 12 bits: mean 0.8, sample std of (0.7, 0.8, 0.9) = 0.1; ITQ 0.6 ± 0.1 is
    # significantly worse (Welch t = 0.2 / sqrt(2 * 0.01 / 3) = 2.449, df 4, one-sided p = 0.035)
    assert "| LFH | **0.8000 ± 0.1000 (3)** |" in md
    assert "| ITQ | 0.6000 ± 0.1000 (3) |" in md
    assert "sample standard deviation over 3 seeds" in md and "Welch" in md
    # 24 bits: ITQ 0.7 beats LFH 0.4, and LFH's cell is flagged collapsed
    assert "**0.7000 ± " in md and "⚠ 3 collapsed" in md
    text = report.to_text(table)
    assert "0.8000 ± 0.1000 (3)*" in text and "[3 collapsed]" in text


def test_lower_is_better_for_seconds(store):
    (table,) = report.build_tables(report.collect(store), "train_seconds")
    assert table.best(table.groups[0], 12) == "ITQ"
    # seconds print with one decimal (3.0 s, not 3.0000 s), in every format
    assert "| **3.0 ± 0.0 (3)** | " in report.to_markdown(table)
    assert "9.0 ± 0.0 (3)" in report.to_text(table) and "9.0000" not in report.to_text(table)
    assert r"3.0\,{\scriptsize$\pm$0.0}" in report.to_latex(table)


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
    # LFH-D 0.85 ± 0 against ADSH 0.95 ± 0: both without spread, different means: no tie
    assert "<u>" not in report.to_markdown(t2)
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
    assert "Table 1: MAP" in out and "0.8000 ± 0.1000 (3)*" in out
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.md", "report.tex", "runs.csv", "report.html", "figures"} <= files
    tex = (tmp_path / "out" / "report.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{0.8000\,{\scriptsize$\pm$0.1000}}" in tex and r"$^\dagger$" in tex
    assert r"\label{tab:hashbench-table-1-map}" in tex and "Table 1:" not in tex
    page = (tmp_path / "out" / "report.html").read_text()
    assert "sortable" in page and "data:image/svg+xml;base64," in page and " best" in page
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


def cell(values):
    values = tuple(values)
    return report.Cell(float(np.mean(values)), float(np.std(values, ddof=1)), len(values), "", values)


def test_welch_marks_only_differences_inside_the_seed_spread():
    # hand-worked: a = (1, 2, 3), b = (0, 1, 2): t = 1 / sqrt(1/3 + 1/3) = 1.2247, df = 4,
    # one-sided p = 0.144 >= 0.05: not significantly worse
    assert report.not_significantly_worse(cell([1, 2, 3]), cell([0, 1, 2]))
    # b = (-3, -2, -1): t = 4.899, df = 4, p = 0.004: significantly worse
    assert not report.not_significantly_worse(cell([1, 2, 3]), cell([-3, -2, -1]))
    # lower is better (seconds): the same pair read the other way round
    assert not report.not_significantly_worse(cell([-3, -2, -1]), cell([1, 2, 3]), higher_is_better=False)
    # the case: 0.9916 ± 0.0003 vs 0.9914 ± 0.0009 over 3 seeds is a tie
    assert report.not_significantly_worse(cell([0.9913, 0.9916, 0.9919]), cell([0.9905, 0.9914, 0.9923]))
    # one seed: nothing to test against, never marked
    assert not report.not_significantly_worse(cell([1, 2, 3]), report.Cell(2.0, float("nan"), 1, "", (2.0,)))


def test_ties_are_underlined_in_every_format(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/t.db")
    for seed, (a, b, c) in enumerate([(0.9913, 0.9905, 0.5), (0.9916, 0.9914, 0.6), (0.9919, 0.9923, 0.7)]):
        add_run(s, "itq", "ITQ", 12, seed, a)
        add_run(s, "lfh", "LFH", 12, seed, b)
        add_run(s, "lsh", "LSH_x&y", 12, seed, c)
    (table,) = report.build_tables(report.collect(s), "map")
    group = table.groups[0]
    assert [table.mark(group, 12, r) for r in table.rows] == ["best", "tie", ""]
    assert "| LFH | <u>0.9914 ± 0.0009 (3)</u> |" in report.to_markdown(table)
    tex = report.to_latex(table)
    assert r"\underline{0.9914\,{\scriptsize$\pm$0.0009}}" in tex
    assert r"LSH\_x\&y" in tex  # row names escaped by the Styler
    assert r"\caption{MAP on digits: mean $\pm$ sample standard deviation over 3 seeds." in tex
    html_table = report.to_html_table(table)
    assert "tie" in html_table and "LSH_x&amp;y" in html_table


def test_latex_escape_is_one_pass():
    assert report.latex_escape(r"a\b_c 50% {x} ± 2") == r"a\textbackslash{}b\_c 50\% \{x\} $\pm$ 2"


def test_paper_rows_only_when_the_paper_has_values(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/p.db")
    add_run(s, "adsh", "ADSH", 12, 0, 0.9, protocol="adsh2018-cifar10", mode="full",
            learns_database=True, display="ADSH")
    add_run(s, "mine", "Mine", 12, 0, 0.5, protocol="digits")
    tables = report.build_tables(report.collect(s), "map", paper=True)
    tex = "\n".join(report.to_latex(t) for t in tables)
    assert "ADSH (paper) & (0.8898)" in tex and "Mine (paper)" not in tex
    assert "ADSH paper" in report.caption(tables[0])
    (digits,) = report.build_tables(report.collect(s)[lambda f: f["protocol"] == "digits"], "map", paper=True)
    assert "paper" not in report.caption(digits).lower()


@pytest.mark.parametrize("option, value, hint", [
    ("--metric", "mapp", "did you mean 'map'"),
    ("--metric", "p@5000", "recorded: map, p@100, train_seconds"),
    ("--methods", "itqq", "did you mean 'itq'"),
    ("--dataset", "digit", "did you mean 'digits'"),
])
def test_report_input_errors_exit_2_and_keep_the_old_report(store, tmp_path, capsys, option, value, hint):
    out = tmp_path / "out"
    assert main(["report", "--tracking-uri", store.uri, "--out", str(out), "--no-figures"]) == 0
    before = (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["report", "--tracking-uri", store.uri, "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err, err
    assert (out / "report.md").read_text() == before


def test_runs_csv_has_hyper_parameters_iso_times_and_no_curve_columns(tmp_path):
    uri = f"sqlite:///{tmp_path}/s.db"
    assert main(["run", "--methods", "itq", "--bits", "8", "--quiet", "--tracking-uri", uri]) == 0
    assert main(["report", "--tracking-uri", uri, "--out", str(tmp_path / "o"), "--no-figures"]) == 0
    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    assert "hp.n_iter" in runs.columns and not [c for c in runs.columns if c.startswith("metric.curve.")]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", runs["start_time"].iloc[0])


def test_html_cells_link_to_their_runs_on_an_mlflow_server(store):
    (table,) = report.build_tables(report.collect(store), "map")
    page = report.to_html_table(table, ui="http://mlflow:5000", experiment_id="7")
    cell = table.groups[0].cells[("LFH", 12)]
    assert len(cell.run_ids) == 3
    runs = ",".join(f'&quot;{r}&quot;' for r in cell.run_ids)
    assert f"http://mlflow:5000/#/compare-runs?runs=[{runs}]&amp;experiments=[&quot;7&quot;]" in page
    assert "<a href=" not in report.to_html_table(table)  # a local store has no UI address


def test_runs_on_other_features_are_labelled_never_averaged(store):
    """Issue 16, item 6: same protocol, same split, another feature extractor (HOG): a
    separate, labelled table, never averaged into the main one."""
    for seed in range(2):
        add_run(store, "itq", "ITQ", 12, seed, 0.31, extra={
            "features.extractor": "hog(cell=7)", "hashbench.run_key": f"itq-hog-{seed}"})
    frame = report.collect(store)
    tables = report.build_tables(frame, "map")
    assert [t.title for t in tables] == ["Table 1", "Kept apart: digits"]
    assert "0.31" not in report.to_markdown(tables[0])
    assert "| ITQ | 0.6000 ± 0.1000 (3) |" in report.to_markdown(tables[0])
    apart = report.to_markdown(tables[1])
    assert "digits [digits, features hog(cell=7)]" in apart and "0.3100 ± 0.0000 (2)" in apart
    assert "data digits, features hog(cell=7) differs from digits" in tables[1].note
    assert "data digits, features hog(cell=7)" in "; ".join(report.provenance(tables[1]))


def test_killed_and_failed_cells_say_so_until_a_rerun_finishes(store):
    add_run(store, "lfh", "LFH", 48, 0, 0, status="KILLED")
    add_run(store, "itq", "ITQ", 48, 0, 0, status="FAILED")
    add_run(store, "itq", "ITQ", 12, 0, 0, status="KILLED")  # its key FINISHED earlier: not noted
    frame = report.collect(store)
    (table,) = report.build_tables(frame, "map")
    md = report.to_markdown(table)
    assert table.groups[0].bits == [12, 24, 48]
    assert "| LFH | **0.8000 ± 0.1000 (3)** | 0.4000 ± 0.1000 (3) ⚠ 3 collapsed | 1 killed |" in md
    assert "| ITQ | 0.6000 ± 0.1000 (3) | **0.7000 ± 0.1000 (3)** | 1 failed |" in md


def test_the_plain_row_is_the_registered_default_even_when_outnumbered(tmp_path):
    uri = f"sqlite:///{tmp_path}/s.db"
    base = ["run", "--methods", "itq", "--bits", "8", "--quiet", "--tracking-uri", uri]
    assert main(base + ["--seeds", "0,1", "--param", "itq.n_iter=5"]) == 0
    assert main(base + ["--seeds", "0"]) == 0
    (table,) = report.build_tables(report.collect(Store(uri)), "map")
    assert table.rows == ["ITQ", "ITQ (n_iter=5)"]
    assert table.groups[0].cells[("ITQ", 8)][2] == 1 and table.groups[0].cells[("ITQ (n_iter=5)", 8)][2] == 2


def test_a_newer_method_revision_supersedes_the_older_runs_of_the_same_trial(store):
    """LFH's seeds 0 and 1 at 12 bits rerun by revision 2 (new run keys): the cell averages the
    new runs and seed 2's old one, never both revisions of one trial; at 48 bits neither a failed
    run nor a run in another setting of the old revision stays beside the new revision's run."""
    for seed, value in ((0, 0.2), (1, 0.3)):
        add_run(store, "lfh", "LFH", 12, seed, value, split="s1",
                extra={"hashbench.run_key": f"lfh-rev2-{seed}", "hashbench.method_revision": "2"})
    add_run(store, "lfh", "LFH", 48, 0, 0, status="FAILED", extra={"hashbench.run_key": "lfh-old-48"})
    add_run(store, "lfh", "LFH", 48, 0, 0.7, extra={"hashbench.run_key": "lfh-old-48-other-setting"},
            hp={"rounds": 7})
    add_run(store, "lfh", "LFH", 48, 0, 0.5, extra={"hashbench.run_key": "lfh-rev2-48",
                                                    "hashbench.method_revision": "2"})
    frame = report.collect(store)
    assert sorted(frame.loc[frame["method"] == "lfh", "revision"].unique()) == [0, 2]
    (table,) = report.build_tables(frame, "map")
    values = table.groups[0].cells[("LFH", 12)][4]
    assert sorted(values) == pytest.approx([0.2, 0.3, 0.9])       # seed 2 of revision 0 stays
    assert table.groups[0].cells[("LFH", 48)][4] == pytest.approx((0.5,))
    assert table.rows == ["LFH", "ITQ"] or table.rows == ["ITQ", "LFH"]   # no "LFH (rounds=7)" row
    assert "failed" not in report.to_markdown(table)


def test_a_run_without_a_recorded_revision_counts_as_revision_one(store):
    """A method never revised (revision 1) run again in another setting at the coordinates of an
    older run that recorded no revision: both stay, as two labelled rows (the CIFAR-10 ADSH
    (sampled) runs at 8 and at 50 outer iterations)."""
    add_run(store, "lfh", "LFH", 48, 0, 0.4, extra={"hashbench.run_key": "lfh-old-8"},
            hp={"rounds": 8})
    add_run(store, "lfh", "LFH", 48, 0, 0.6, hp={"rounds": 50},
            extra={"hashbench.run_key": "lfh-new-50", "hashbench.method_revision": "1"})
    (table,) = report.build_tables(report.collect(store), "map")
    assert {"LFH (rounds=8)", "LFH (rounds=50)"} <= set(table.rows)


def test_registered_defaults_match_the_params_as_the_store_writes_them(tmp_path):
    """Booleans and None go into the store as JSON ("true", "null"); the report's defaults must
    read the same, or a method with a flag at its default gets a labelled row of its own."""
    from hashbench import registry
    from hashbench.params import defaults_of

    s = Store(f"sqlite:///{tmp_path}/r.db")
    defaults = {k: v for k, v in defaults_of(registry.get("dcmh")).items() if k != "bits"}
    rec = s.start_run("dcmh", {"hashbench.kind": "trial"})
    rec.log_params({f"hp.{k}": v for k, v in defaults.items()})
    rec.end("FINISHED")
    (record,) = s.trial_records()
    expected = report._default_setting("dcmh")
    assert expected["standardize"] == "true"
    assert {k: expected[k] for k in record.hyper_parameters} == record.hyper_parameters
