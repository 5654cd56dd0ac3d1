"""A store written by hashbench before core v2 reports the numbers that version reported.

``tests/data/store-0.1.0`` holds an MLflow store written at commit b55dfdd (before the store
schema moved into ``TrialRecord``) and what that version's ``hashbench report`` printed and
wrote (its README lists the commands). The current report reads it with the same rows, means,
seed counts and best cells (stdout, Markdown and LaTeX) and a runs.csv that differs only where
the schema says so (``learns_database`` became ``variant``, its complement on full-mode runs;
``setting``, ``revision`` (the method's, 0 = not recorded then) and ``hp.*`` columns were added; ``start_time`` is ISO 8601; ``curve.*`` histories
left out). Deliberate changes: the std shown is the sample std over seeds (the old version's
population std times sqrt(n / (n - 1))); that version averaged ITQ's ``n_iter=5`` run with its
``n_iter=50`` runs as if they were seeds, now the ``n_iter=5`` run has its own row.
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
def test_old_store_reports_the_same_numbers(case, old_store, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["report", "--no-figures", "--out", str(out), "--tracking-uri", f"sqlite:///{old_store}",
                 *CASES[case]])
    assert code == 0
    expected = FIXTURE / "expected" / case
    captured = capsys.readouterr()
    text = "--text" in CASES[case]
    _same_cells(captured.out, (expected / "stdout.txt").read_text(), text=text)
    _same_cells((out / "report.md").read_text(), (expected / "report.md").read_text(), text=False)
    _same_latex_means((out / "report.tex").read_text(), (expected / "report.tex").read_text())
    new = pd.read_csv(out / "runs.csv")
    old = pd.read_csv(expected / "runs.csv")
    renamed = [("variant" if c == "learns_database" else c) for c in old.columns
               if not c.startswith("metric.curve.")]  # curve histories are no runs.csv columns now
    at = renamed.index("error") + 1
    renamed.insert(renamed.index("eval_split_sha256") + 1, "data")  # dataset + feature extractor (new)
    at += 1
    hp = [c for c in new.columns if c.startswith("hp.")]
    assert list(new.columns) == renamed[:at] + ["setting", "revision"] + renamed[at:] + hp
    assert (new["revision"] == 0).all()
    assert {"hp.n_iter", "hp.max_epochs"} <= set(hp)
    relabelled = new["display"] != old["display"]
    assert new.loc[relabelled, "display"].unique().tolist() == ["ITQ (n_iter=5)"]
    # start_time: epoch milliseconds then, ISO 8601 UTC now
    iso = pd.to_datetime(old["start_time"], unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert new["start_time"].tolist() == iso.tolist()
    keep = [c for c in old.columns if c in new.columns and c not in ("display", "start_time")]
    pd.testing.assert_frame_equal(new[keep], old[keep])
    # variant: a full-mode run of a method that did not learn the database (the "-D" rows)
    derived = (old["train_mode"] == "full") & ~old["learns_database"]
    assert new["variant"].tolist() == derived.tolist()


CELL = re.compile(r"(\d\.\d{4})(?: ± (\d\.\d{4}))? \((\d+)\)(\*?)")


def _rows(report: str, text: bool) -> dict[str, list[tuple[float, float | None, int, bool]]]:
    """Method -> its cells (mean, std, n, best) from a Markdown or text table."""
    rows = {}
    for line in report.splitlines():
        if not CELL.search(line):
            continue
        name = line.split("|")[1].strip() if line.startswith("|") else re.split(r"\s{2,}", line)[0]
        cells = []
        for mean, std, n, star in CELL.findall(line):
            best = bool(star) if text else f"**{mean}" in line.split(mean)[0][-3:] + mean
            cells.append((float(mean), float(std) if std else None, int(n), best))
        rows[name] = cells
    return rows


def _same_cells(new: str, old: str, text: bool) -> None:
    """The same rows, means, seed counts and best cells as the 0.1.0 report, which printed the
    population std: the sample std now shown is it times sqrt(n / (n - 1)) (none for one seed).
    ITQ's rows differ by design (see :func:`_split_itq_cell`)."""
    new_rows, old_rows = _rows(new, text), _rows(old, text)
    assert set(new_rows) - {"ITQ (n_iter=5)"} == set(old_rows)
    for name, old_cells in old_rows.items():
        if name == "ITQ":
            continue
        for (m1, s1, n1, b1), (m0, s0, n0, b0) in zip(new_rows[name], old_cells, strict=True):
            assert (m1, n1, b1) == (m0, n0, b0), name
            if n0 == 1:
                assert s1 is None
            else:
                ratio = (n0 / (n0 - 1)) ** 0.5  # both printed to 4 decimals: allow both roundings
                assert s1 == pytest.approx(s0 * ratio, abs=0.5e-4 * (ratio + 1) + 1e-9), name
    _split_itq_cell(new_rows, old_rows)


def _split_itq_cell(new_rows, old_rows) -> None:
    """The old version averaged ITQ's n_iter=5 run with its n_iter=50 runs at 12 bits (seeds
    0, 1 at n_iter=50, seed 0 at n_iter=5); now ``ITQ (n_iter=5)`` has its own row."""
    mixed, plain, alone = old_rows["ITQ"][0], new_rows["ITQ"][0], new_rows["ITQ (n_iter=5)"][0]
    assert (mixed[2], plain[2], alone[2]) == (3, 2, 1)
    assert mixed[0] == pytest.approx((2 * plain[0] + alone[0]) / 3, abs=2e-4)
    assert new_rows["ITQ"][1:] == old_rows["ITQ"][1:] or all(
        (a[0], a[2]) == (b[0], b[2]) for a, b in zip(new_rows["ITQ"][1:], old_rows["ITQ"][1:], strict=True))


def _same_latex_means(new: str, old: str) -> None:
    """Every LaTeX row of the old report has the same means (and bold cells) now."""
    def rows(tex: str) -> dict[str, list[tuple[str, bool]]]:
        out = {}
        for line in tex.splitlines():
            if line.endswith(r"\\") and re.search(r"\d\.\d{4}", line) and "(paper)" not in line:
                name, *cells = [c.strip() for c in line[:-2].split("&")]
                out[name] = [(m.group(0), r"\textbf" in c) for c in cells
                             for m in [re.search(r"\d\.\d{4}", c)] if m]
        return out

    new_rows, old_rows = rows(new), rows(old)
    for name, cells in old_rows.items():
        if not name.startswith("ITQ"):
            assert new_rows[name] == cells, name


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
