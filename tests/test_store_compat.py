"""A store written by hashbench before core v2 reports as that version reported it.

``tests/data/store-0.1.0`` holds an MLflow store written at commit b55dfdd (before the store
schema moved into ``TrialRecord``) and what that version's ``hashbench report`` printed and
wrote (its README lists the commands). The current report reads it identically (same stdout,
Markdown and LaTeX; a runs.csv that differs only where the schema says so: ``learns_database``
became ``variant``, its complement on full-mode runs; a ``setting`` column was added) except
for one deliberate fix: that version averaged ITQ's ``n_iter=5`` run with its ``n_iter=50``
runs as if they were seeds; now the ``n_iter=5`` run has its own row, ``ITQ (n_iter=5)``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hashbench.cli import main
from hashbench.tracking import Store, TrialRecord

FIXTURE = Path(__file__).resolve().parent / "data" / "store-0.1.0"
CASES = {
    "default": [],
    "all": ["--paper", "--table", "all"],
    "p100": ["--metric", "p@100", "--text"],
}


@pytest.fixture
def old_store(tmp_path):
    db = tmp_path / "old" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(FIXTURE / "mlflow.db", db)  # a copy: opening it may migrate the schema
    return db


@pytest.mark.parametrize("case", sorted(CASES))
def test_old_store_reports_identically(case, old_store, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["report", "--no-figures", "--out", str(out), "--tracking-uri", f"sqlite:///{old_store}",
                 *CASES[case]])
    assert code == 0
    expected = FIXTURE / "expected" / case
    captured = capsys.readouterr()
    # the tables on stdout; the "wrote <paths>" line names the output folder, which differs
    want = (expected / "stdout.txt").read_text().split("\nwrote ")[0]
    _same_but_itq_rows((captured.out + captured.err).split("\nwrote ")[0], want)
    for name in ("report.md", "report.tex"):
        _same_but_itq_rows((out / name).read_text(), (expected / name).read_text())
    new = pd.read_csv(out / "runs.csv")
    old = pd.read_csv(expected / "runs.csv")
    renamed = [("variant" if c == "learns_database" else c) for c in old.columns]
    at = renamed.index("error") + 1
    assert list(new.columns) == renamed[:at] + ["setting"] + renamed[at:]
    relabelled = new["display"] != old["display"]
    assert new.loc[relabelled, "display"].unique().tolist() == ["ITQ (n_iter=5)"]
    pd.testing.assert_frame_equal(new.drop(columns=["variant", "setting", "display"]),
                                  old.drop(columns=["learns_database", "display"]))
    # variant: a full-mode run of a method that did not learn the database (the "-D" rows)
    derived = (old["train_mode"] == "full") & ~old["learns_database"]
    assert new["variant"].tolist() == derived.tolist()


def _same_but_itq_rows(new: str, old: str) -> None:
    """Line for line equal, except ITQ's table rows: the old version's mixed 12-bit ITQ cell
    (n_iter 50 and 5 averaged) and the new ``ITQ (n_iter=5)`` row."""
    new_lines, old_lines = new.splitlines(), old.splitlines()

    def is_itq_row(line: str) -> bool:
        return line.lstrip("| ").startswith("ITQ ") and "bits" not in line

    assert [x for x in new_lines if not is_itq_row(x)] == [x for x in old_lines if not is_itq_row(x)]
    old_itq = [x for x in old_lines if is_itq_row(x)]
    new_itq = [x for x in new_lines if is_itq_row(x)]
    assert len(old_itq) == 1 and len(new_itq) == 2, (old_itq, new_itq)
    (alone,) = [x for x in new_itq if "n_iter=5" in x or "n\\_iter=5" in x]
    (plain,) = [x for x in new_itq if x is not alone]

    def first_mean(line: str) -> float:  # the 12-bit cell: seeds 0, 1 at n_iter=50; seed 0 at n_iter=5
        return float(re.findall(r"\d\.\d{4}", line)[0])

    mixed = first_mean(old_itq[0])
    assert mixed == pytest.approx((2 * first_mean(plain) + first_mean(alone)) / 3, abs=2e-4)


def test_old_trial_runs_read_back_as_trial_records(old_store):
    records = Store(f"sqlite:///{old_store}", create=False).trial_records()
    assert len(records) == 22
    by = {(r.method, r.train_mode, r.bits, r.seed, r.hyper_parameters.get("n_iter")): r for r in records}
    full_itq = by[("itq", "full", 12, 0, "50")]
    assert full_itq.variant and full_itq.display == "ITQ-D"
    adsh_full = next(r for r in records if r.method == "adsh" and r.train_mode == "full")
    assert not adsh_full.variant and adsh_full.display == "ADSH"
    assert all(r.status == "FINISHED" and r.version == "0.1.0" for r in records)
    assert all(r.conventions["eval.map_topk"] == "all" for r in records)
    assert all(0 < r.metrics["map"] <= 1 for r in records)
    assert isinstance(records[0], TrialRecord)
