"""Figures: print-size files in three formats with their data and caption, one style per
method that survives greyscale, and no Fig. 3 without per-epoch curves (a note says how)."""

from __future__ import annotations

import pandas as pd

from hashbench import figures, report
from hashbench.tracking import Store
from tests.test_report import add_run


def test_every_method_gets_its_own_colour_marker_line_style_triple():
    names = [f"m{i:02d}" for i in range(13)]
    style = figures.styles(names)
    triples = {(s["color"], s["marker"], s["linestyle"]) for s in style.values()}
    assert len(triples) == 13
    # the ninth method repeats the first colour but never its marker or line style
    assert style["m08"]["color"] == style["m00"]["color"]
    assert (style["m08"]["marker"], style["m08"]["linestyle"]) != (style["m00"]["marker"], style["m00"]["linestyle"])


def test_fig2_in_three_formats_with_data_and_caption_and_no_fig3_without_curves(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/f.db")
    for seed in range(2):
        for bits in (12, 24):
            add_run(store, "itq", "ITQ", bits, seed, 0.5 + seed / 10)
            add_run(store, "lfh", "LFH", bits, seed, 0.8)
    frame = report.collect(store)
    notes: list[str] = []
    made = figures.all_figures(store, frame, tmp_path / "fig", notes=notes)
    (path,) = made.values()
    for suffix in (".png", ".pdf", ".svg", ".csv", ".txt"):
        assert path.with_suffix(suffix).stat().st_size > 0
    assert "sample standard deviation" in path.with_suffix(".txt").read_text()
    data = pd.read_csv(path.with_suffix(".csv"))
    itq = data[(data["display"] == "ITQ") & (data["bits"] == 12)].iloc[0]
    assert itq["p@100_mean"] == 0.275 and round(itq["p@100_std"], 6) == round(0.05 / 2 ** 0.5, 6)
    assert notes and "--param adsh.eval_every=1" in notes[0]  # Fig. 3 needs per-epoch curves
    from PIL import Image

    width, height = Image.open(path).size  # one panel: a column of a two-column paper at 200 dpi
    assert width == round(figures.PANEL_SIZE[0] * 200)
