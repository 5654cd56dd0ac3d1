"""benchmarks/paper_cost.py's bookkeeping (no timings): the before/after table and the grid
projection from the 12- and 48-bit trials."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_cost.py"


@pytest.fixture(scope="module")
def paper_cost():
    spec = importlib.util.spec_from_file_location("paper_cost", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, bits, setting, seconds, projected=False, map_=0.5):
    return {"method": method, "mode": "sampled", "bits": bits, "setting": setting,
            "trial_seconds": seconds, "peak_mib": 700.0, "map": map_, "projected": projected}


def test_summary_table_pairs_settings_and_marks_projections(paper_cost):
    rows = [_row("lfh", 12, "before", 100.0, projected=True), _row("lfh", 12, "after", 10.0),
            _row("sdh", 12, "before", 3.0)]
    table = paper_cost.summary_table(rows).splitlines()
    assert table[0].startswith("| method | mode | bits | before s | after s | before/after")
    assert table[2] == "| lfh | sampled | 12 | 100.0* | 10.0 | 10.0x | 700 / 700 | 0.5000* | 0.5000 |"
    assert table[3] == "| sdh | sampled | 12 | 3.0 | - | - | 700 / - | 0.5000 | - |"


def test_grid_hours_interpolate_the_bit_lengths_over_five_seeds(paper_cost):
    rows = [_row("lfh", 12, "after", 120.0), _row("lfh", 48, "after", 480.0)]
    # 12, 24, 32, 48 bits: 120 + 240 + 320 + 480 s, times 5 seeds
    assert paper_cost._grid_hours(rows, "after") == pytest.approx(1160 * 5 / 3600)
    assert paper_cost._grid_hours(rows[:1], "after") is None  # one bit length: no projection
    assert paper_cost._grid_hours(rows, "before") is None


def test_before_is_the_reference_tree_setting(paper_cost):
    for method in ("lfh", "cosdish", "fasth"):
        assert paper_cost.BEFORE[method]["tree_feature_fraction"] == 1.0
        assert paper_cost.BEFORE[method]["tree_max_bin"] == 255
    for method in ("lfh", "cosdish"):  # the "-D" fits: every row in every round
        assert paper_cost.BEFORE[method]["tree_bagging_fraction"] == 1.0


def test_merged_rows_are_replaced_by_newer_ones_at_the_same_coordinates(paper_cost, tmp_path):
    old = [_row("lfh", 12, "after", 120.0), _row("lfh", 48, "after", 480.0),
           _row("lfh", 48, "before", 4000.0, projected=True)]
    newer = [_row("lfh", 48, "after", 300.0)]
    merged = paper_cost.merge_rows(old, newer)
    assert [(r["bits"], r["setting"], r["trial_seconds"]) for r in merged] == [
        (12, "after", 120.0), (48, "after", 300.0), (48, "before", 4000.0)]
    assert paper_cost._grid_hours(merged, "after") == pytest.approx(
        (120 + 180 + 220 + 300) * 5 / 3600)
    path = tmp_path / "rows.json"
    path.write_text('[{"method": "lfh"}]')
    with pytest.raises(SystemExit, match="rows.json: not a --json file"):
        paper_cost._read_rows(str(path))


def test_a_method_without_a_reference_setting_reuses_its_after_row_as_before(paper_cost):
    rows = paper_cost.unchanged_as_before([_row("sdh", 12, "after", 3.0), _row("lfh", 12, "after", 9.0),
                                           _row("itq", 12, "after", 2.0), _row("itq", 12, "before", 2.5)])
    before = {(r["method"], r["trial_seconds"]) for r in rows if r["setting"] == "before"}
    assert before == {("sdh", 3.0), ("itq", 2.5)}  # lfh has a reference setting: not copied
    assert [r.get("unchanged") for r in rows if r["method"] == "sdh"] == [None, True]


def test_the_before_after_ratio_covers_the_pairs_measured_in_both(paper_cost):
    rows = [_row("lfh", 12, "before", 1200.0), _row("lfh", 48, "before", 4800.0),
            _row("lfh", 12, "after", 120.0), _row("lfh", 48, "after", 480.0),
            _row("linv", 12, "after", 50.0), _row("linv", 48, "after", 90.0)]
    assert paper_cost.complete_pairs(rows, "before") == {("lfh", "sampled")}
    assert paper_cost.complete_pairs(rows, "after") == {("lfh", "sampled"), ("linv", "sampled")}
    both = {("lfh", "sampled")}
    assert paper_cost._grid_hours(rows, "before", both) == pytest.approx(
        10 * paper_cost._grid_hours(rows, "after", both))
