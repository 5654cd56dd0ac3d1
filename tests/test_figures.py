"""Figures: print-size files in three formats with their data and caption, one style per
method that survives greyscale, and no Fig. 3 without per-epoch curves (a note says how)."""

from __future__ import annotations

import pandas as pd
import pytest

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
    assert "zoom" not in path.with_suffix(".txt").read_text()  # two lines: nothing crowds the top
    data = pd.read_csv(path.with_suffix(".csv"))
    itq = data[(data["display"] == "ITQ") & (data["bits"] == 12)].iloc[0]
    assert itq["p@100_mean"] == 0.275 and round(itq["p@100_std"], 6) == round(0.05 / 2 ** 0.5, 6)
    assert notes and "--param adsh.eval_every=1" in notes[0]  # Fig. 3 needs per-epoch curves
    from PIL import Image

    width, height = Image.open(path).size  # one panel: a column of a two-column paper at 200 dpi
    assert width == round(figures.PANEL_SIZE[0] * 200)


def test_top_cluster_finds_the_lines_crowding_the_top():
    # range 0.40..1.00: the top tenth starts at 0.94; a, b, c, d stay above it at every length
    means = pd.DataFrame({12: [0.99, 0.98, 0.97, 0.95, 0.93, 0.40], 24: [1.00, 0.99, 0.96, 0.97, 0.99, 0.60]},
                         index=["a", "b", "c", "d", "e", "f"])
    low, high, names = figures.top_cluster(means)
    assert names == ["a", "b", "c", "d"]  # e dips to 0.93 at 12 bits
    pad = 0.08 * (1.00 - 0.95)
    assert (round(low, 6), round(high, 6)) == (round(0.95 - pad, 6), round(1.00 + pad, 6))
    assert figures.top_cluster(means.drop(index="d")) is None  # three lines are not a crowd
    assert figures.top_cluster(means.loc[["a", "b", "c", "d"]]) is None  # all lines: nothing to zoom from


def test_fig2_zooms_into_a_crowded_top_and_only_there(tmp_path):
    """Protocol "crowded": four of six lines in the top tenth, a zoom panel under it; protocol
    "spread": none, so its zoom panel is hidden."""
    import matplotlib.pyplot as plt

    store = Store(f"sqlite:///{tmp_path}/z.db")
    for protocol, values in (("crowded", [0.99, 0.985, 0.98, 0.975, 0.6, 0.4]), ("spread", [0.9, 0.7, 0.5, 0.3])):
        for i, value in enumerate(values):
            for bits in (12, 24):
                add_run(store, f"m{i}", f"M{i}", bits, 0, value, protocol=protocol)
    shown = []
    original = figures._finish

    def keep(fig, axes, path, data, caption, order=None):
        shown.extend(ax for ax in fig.axes if ax.get_visible())
        return original(fig, axes, path, data, caption, order)

    figures._finish = keep
    try:
        path = figures.precision_vs_bits(report.collect(store), tmp_path)
    finally:
        figures._finish = original
    plt.close("all")
    assert [ax.get_title() for ax in shown] == ["crowded", "spread", "zoom: the top 4 methods"]
    zoom = shown[2]
    # p@100 = value / 2: the top four lie in 0.4875..0.495, padded by the 0.001 minimum
    assert len(zoom.get_lines()) == 4 and zoom.get_ylim() == pytest.approx((0.4865, 0.496))
    assert "zooms into the boxed region" in path.with_suffix(".txt").read_text()
