"""Figures from the MLflow store, at print size: each figure is written as vector PDF and SVG
beside a PNG, with the CSV of the data behind it and a caption (``.txt``) that states the
conventions.

* Fig. 2 style: precision of the top K (``p@K``, K = 5000 by default when recorded) versus
  code length; one line per method (mean over seeds, a band of ± one sample std), one panel
  per protocol.
* Fig. 3 style: MAP versus training time from the per-epoch curves methods record
  (``train_map`` and ``elapsed_seconds`` at the same step, e.g. ADSH with
  ``--param adsh.eval_every=1``); methods without a curve appear as one point (final MAP,
  ``train_seconds``). Without any curve the figure is not drawn and the report says how to
  record them.
* Precision@K curves and precision-recall curves (Hamming radius 0..c) per method at one
  code length, from the ``curve.*`` metric histories the runner records.

Style: a method keeps its colour, marker and line style in every figure (assigned over all
methods in the report, in name order). Colours are the Okabe-Ito palette (distinct for
colour-blind readers); markers and line styles differ too, so lines survive greyscale print.
Layout is matplotlib's constrained layout with the legend outside the axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hashbench.report import latest_finished
from hashbench.tracking import Store, metric_history, metric_key

# Okabe & Ito (2008), "Color universal design": distinct under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = "osD^v<>pP*Xh"
LINESTYLES = ("-", "--", ":", "-.")
PANEL_SIZE = (3.4, 2.4)  # inches per panel: one panel is a column of a two-column paper, two a page
FORMATS = ("png", "pdf", "svg")
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
      "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.3, "lines.markersize": 4,
      "svg.fonttype": "none", "pdf.fonttype": 42}


def styles(displays: list[str]) -> dict[str, dict[str, Any]]:
    """Method display name -> matplotlib line style (colour, marker, line style); the same
    name gets the same style in every figure of a report."""
    out = {}
    for i, d in enumerate(sorted(displays)):
        out[d] = {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                  "linestyle": LINESTYLES[(i // len(PALETTE) + i) % len(LINESTYLES)]}
    return out


def _figure(n_panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n_panels, 2)
    rows = int(np.ceil(n_panels / cols))
    plt.rcParams.update(RC)  # all_figures restores the caller's settings afterwards
    # one panel: the column width, legend below; more: the text width (two panels a row),
    # legend on the right
    width = PANEL_SIZE[0] if cols == 1 else 7.0
    fig, axes = plt.subplots(rows, cols, figsize=(width, PANEL_SIZE[1] * rows + (0.5 if cols == 1 else 0)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _finish(fig, axes, path: Path, data: pd.DataFrame, caption: str,
            order: list[str] | None = None) -> Path:
    """One compact legend outside the panels (below one panel, right of several), then PNG,
    PDF, SVG, CSV and the caption."""
    import matplotlib.pyplot as plt

    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if order:  # legend top to bottom as the lines end, so close lines are read in order
        rank = {name: i for i, name in enumerate(order)}
        seen = dict(sorted(seen.items(), key=lambda item: rank.get(item[0], len(rank))))
    if seen and len(axes) == 1:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncol=min(3, len(seen)), frameon=False, handlelength=2.2, columnspacing=1.0)
    elif seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside right upper",
                   frameon=False, handlelength=2.2, borderaxespad=0.2)
    for fmt in FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), dpi=200)
    plt.close(fig)
    data.to_csv(path.with_suffix(".csv"), index=False)
    path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return path.with_suffix(".png")


def _band(ax, x, mean, std, label: str, style: dict[str, Any]) -> None:
    """A line through the means with a band of ± one sample std over seeds."""
    ax.plot(x, mean, label=label, **style)
    std = np.nan_to_num(np.asarray(std, dtype=float))
    if std.any():
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)


ZOOM_BAND = 0.1  # lines whose every mean lies in the top tenth of a panel's range ...
ZOOM_MIN_LINES = 4  # ... and at least this many of them: a zoom panel shows them apart


def top_cluster(means: pd.DataFrame) -> tuple[float, float, list[str]] | None:
    """The lines that crowd the top of a panel: ``means`` has one row per line and one column
    per code length. Returns (low, high, names) with the y range that holds them, padded,
    when at least ``ZOOM_MIN_LINES`` lines (but not all) stay in the top ``ZOOM_BAND`` of the
    panel's range at every length; else None."""
    values = means.to_numpy(dtype=float)
    if values.size == 0 or np.isnan(values).all():
        return None
    top, bottom = np.nanmax(values), np.nanmin(values)
    span = top - bottom
    inside = np.nanmin(np.where(np.isnan(values), top, values), axis=1) >= top - ZOOM_BAND * span
    names = [str(n) for n, keep in zip(means.index, inside, strict=True) if keep]
    if span <= 0 or not ZOOM_MIN_LINES <= len(names) < len(means):
        return None
    low = float(np.nanmin(means.loc[names].to_numpy(dtype=float)))
    pad = max(0.08 * (top - low), 1e-3)
    return low - pad, float(top) + pad, names


def precision_vs_bits(frame: pd.DataFrame, out: Path, topk: int | None = None) -> Path | None:
    """Fig. 2 style; returns None when no p@K metric was recorded. When many lines crowd the
    top of a panel (:func:`top_cluster`), a zoom panel below it shows them on their own y
    range, and the main panel marks the zoomed region."""
    done = latest_finished(frame)
    ks = sorted(int(c.split("_at_")[1]) for c in done.columns
                if c.startswith("metric.p_at_") and done[c].notna().any())
    if not ks:
        return None
    k = topk if topk in ks else (5000 if 5000 in ks and topk is None else max(ks))
    column = f"metric.{metric_key(f'p@{k}')}"
    data = (done.groupby(["protocol", "display", "bits"])[column]
            .agg(["mean", "std", "count"]).reset_index())
    protocols = sorted(data["protocol"].unique())
    style = styles(list(frame["display"].unique()))
    zooms = {p: top_cluster(data[data["protocol"] == p].pivot(index="display", columns="bits", values="mean"))
             for p in protocols}
    fig, axes, zoom_axes = _fig2_axes(len(protocols), any(zooms.values()))
    for i, (ax, protocol) in enumerate(zip(axes, protocols, strict=True)):
        part = data[data["protocol"] == protocol]
        zoom, zoom_ax = zooms[protocol], zoom_axes[i] if zoom_axes else None
        for display, rows in part.groupby("display"):
            args = (rows["bits"].to_numpy(), rows["mean"].to_numpy(), rows["std"].to_numpy(),
                    str(display), style[str(display)])
            _band(ax, *args)
            if zoom and zoom_ax is not None and display in zoom[2]:
                _band(zoom_ax, *args)
        ax.set_title(protocol)
        ax.set_ylabel(f"precision@{k}")
        ticks = sorted(part["bits"].unique())
        for each in (ax, zoom_ax):
            if each is not None:
                each.set_xticks(ticks)
                each.grid(alpha=0.3)
        if zoom and zoom_ax is not None:
            zoom_ax.set_ylim(zoom[0], zoom[1])
            zoom_ax.set_title(f"zoom: the top {len(zoom[2])} methods", fontsize=7)
            zoom_ax.set_xlabel("code length (bits)")
            ax.tick_params(labelbottom=True)
            left, right = ax.get_xlim()  # the zoomed region as a box (no connector lines across ticks)
            ax.indicate_inset((left, zoom[0], right - left, zoom[1] - zoom[0]), edgecolor="0.3")
        else:
            ax.set_xlabel("code length (bits)")
            if zoom_ax is not None:
                zoom_ax.set_visible(False)
    caption = (f"Precision of the top {k} of the Hamming ranking (ties broken by database index) versus "
               "code length; mean over seeds, band: ± one sample standard deviation.")
    if any(zooms.values()):
        caption += (" The lower panel zooms into the boxed region, where the top methods' lines "
                    "would otherwise overlap.")
    longest = data[data["bits"] == data["bits"].max()].groupby("display")["mean"].mean()
    order = list(longest.sort_values(ascending=False).index)
    return _finish(fig, axes, out / f"fig2_precision_top{k}.png",
                   data.rename(columns={"mean": f"p@{k}_mean", "std": f"p@{k}_std"}), caption, order)


def _fig2_axes(n_panels: int, zoom: bool):
    """Fig. 2's panels as :func:`_figure`, each with a zoom panel below it when ``zoom``
    (returned third, one per panel; an empty list without zoom)."""
    if not zoom:
        fig, axes = _figure(n_panels)
        return fig, axes, []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n_panels, 2)
    rows = int(np.ceil(n_panels / cols))
    plt.rcParams.update(RC)
    width = PANEL_SIZE[0] if cols == 1 else 7.0
    height = PANEL_SIZE[1] * 1.7 * rows + (0.5 if cols == 1 else 0)
    fig, grid = plt.subplots(2 * rows, cols, figsize=(width, height), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [1.0, 0.7] * rows})
    mains = [grid[2 * (i // cols), i % cols] for i in range(rows * cols)]
    zooms = [grid[2 * (i // cols) + 1, i % cols] for i in range(rows * cols)]
    for ax in mains[n_panels:] + zooms[n_panels:]:
        ax.set_visible(False)
    return fig, mains[:n_panels], zooms[:n_panels]


def _histories(store: Store, runs: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    rows = []
    for run in runs.itertuples():
        series = {n: dict(metric_history(store, run.run_id, n)) for n in names}
        steps = sorted(set.intersection(*(set(s) for s in series.values()))) if series else []
        for step in steps:
            rows.append({"protocol": run.protocol, "display": run.display, "bits": run.bits,
                         "seed": run.seed, "step": step, **{n: series[n][step] for n in names}})
    return pd.DataFrame(rows)


FIG3_MISSING = ("MAP versus training time (Fig. 3) was not drawn: no run at {bits} bits recorded "
                "per-epoch MAP curves. Rerun the deep methods with e.g. --param adsh.eval_every=1 "
                "(and --force), then report again.")


def map_vs_time(store: Store, frame: pd.DataFrame, out: Path, bits: int) -> Path | None:
    """Fig. 3 style at one code length; None (and a note from :func:`notes`) without curves."""
    done = latest_finished(frame)
    done = done[done["bits"] == bits]
    if done.empty:
        return None
    curves = _histories(store, done, ["train_map", "elapsed_seconds"])
    if curves.empty:
        return None
    protocols = sorted(done["protocol"].unique())
    style = styles(list(frame["display"].unique()))
    fig, axes = _figure(len(protocols))
    data = []
    for ax, protocol in zip(axes, protocols, strict=True):
        runs = done[done["protocol"] == protocol]
        c = curves[curves["protocol"] == protocol]
        longest = max([c["elapsed_seconds"].max()] if not c.empty else [1e-3])
        floor = longest / 1e3  # three decades: faster single points sit on the left edge
        for display, method_runs in runs.groupby("display"):
            mine = c[c["display"] == display]
            if not mine.empty:
                stats = mine.groupby("step")[["elapsed_seconds", "train_map"]].agg(["mean", "std"])
                x = stats[("elapsed_seconds", "mean")].to_numpy()
                _band(ax, x, stats[("train_map", "mean")].to_numpy(), stats[("train_map", "std")].to_numpy(),
                      str(display), {**style[str(display)], "markevery": max(1, len(x) // 8)})
                flat = stats.copy()
                flat.columns = [f"{a}_{b}" for a, b in stats.columns]
                data.append(flat.reset_index().assign(protocol=protocol, display=display, kind="curve"))
            elif "metric.train_seconds" in method_runs and "metric.map" in method_runs:
                x, y = method_runs["metric.train_seconds"].mean(), method_runs["metric.map"].mean()
                ax.plot([max(x, floor)], [y], label=f"{display} (final)",
                        **{**style[str(display)], "linestyle": "none"})
                data.append(pd.DataFrame({"elapsed_seconds_mean": [x], "train_map_mean": [y],
                                          "protocol": [protocol], "display": [display], "kind": ["final"]}))
        ax.set_xscale("log")
        ax.set_xlim(left=floor)
        ax.set_title(f"{protocol}, {bits} bits")
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel("MAP")
        ax.grid(alpha=0.3)
    caption = (f"MAP versus training time at {bits} bits: per-epoch MAP curves (training time only, "
               "evaluation excluded; mean over seeds, band ± one sample std); methods without a curve "
               "are one point at their final MAP and training time; points faster than a thousandth of "
               "the longest curve sit on the left edge.")
    table = pd.concat(data) if data else pd.DataFrame()
    return _finish(fig, axes, out / f"fig3_map_vs_time_{bits}bits.png", table, caption)


def curves(store: Store, frame: pd.DataFrame, out: Path, bits: int) -> list[Path]:
    """Precision@K and precision-recall curves at one code length (mean over seeds)."""
    done = latest_finished(frame)
    done = done[done["bits"] == bits]
    if done.empty:
        return []
    style = styles(list(frame["display"].unique()))
    protocols = sorted(done["protocol"].unique())
    written = []
    specs = [
        ("precision_at_k", ["curve.precision_at_k.precision"], "K (number of items retrieved)",
         "precision@K", f"precision_at_k_{bits}bits.png",
         f"Precision of the top K items of the Hamming ranking versus K at {bits} bits (ties broken by "
         "database index); mean over seeds."),
        ("pr_curve", ["curve.pr_curve.precision", "curve.pr_curve.recall"], "recall", "precision",
         f"pr_curve_{bits}bits.png",
         f"Precision-recall over Hamming radii 0..{bits} at {bits} bits, mean over queries and seeds. "
         "A query whose Hamming ball is empty counts precision 0 at that radius (the ADSH authors' "
         "convention), so curves of methods with sparse codes start low at small radii."),
    ]
    for name, metrics, xlabel, ylabel, filename, caption in specs:
        hist = _histories(store, done, metrics)
        if hist.empty:
            continue
        fig, axes = _figure(len(protocols))
        data = []
        for ax, protocol in zip(axes, protocols, strict=True):
            part = hist[hist["protocol"] == protocol]
            for display, rows in part.groupby("display"):
                mean = rows.groupby("step")[metrics].mean().reset_index()
                st = {**style[str(display)], "markevery": max(1, len(mean) // 8)}
                if name == "precision_at_k":
                    ax.plot(mean["step"], mean[metrics[0]], label=display, **st)
                else:
                    ax.plot(mean[metrics[1]], mean[metrics[0]], label=display, **st)
                data.append(mean.rename(columns={"step": "k" if name == "precision_at_k" else "radius"})
                            .assign(protocol=protocol, display=display))
            if name == "precision_at_k":
                ax.set_xscale("log")
            ax.set_title(f"{protocol}, {bits} bits")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        written.append(_finish(fig, axes, out / filename, pd.concat(data), caption))
    return written


def all_figures(store: Store, frame: pd.DataFrame, out: Path, bits: int | None = None,
                topk: int | None = None, notes: list[str] | None = None) -> dict[str, Path]:
    """Every figure the store supports; keys are the titles used in the HTML page. Figures
    that cannot be drawn add a line to ``notes`` saying why and how to get them."""
    import matplotlib

    with matplotlib.rc_context():  # the print-size settings of _figure do not leak out
        return _all_figures(store, frame, out, bits, topk, notes)


def _all_figures(store: Store, frame: pd.DataFrame, out: Path, bits: int | None,
                 topk: int | None, notes: list[str] | None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    done = latest_finished(frame)
    if done.empty:
        return {}
    if bits is None:
        bits = int(done["bits"].max())
    figures: dict[str, Path] = {}
    fig2 = precision_vs_bits(frame, out, topk)
    if fig2 is not None:
        figures["Precision of the top K versus code length (Fig. 2 style)"] = fig2
    fig3 = map_vs_time(store, frame, out, bits)
    if fig3 is not None:
        figures[f"MAP versus training time at {bits} bits (Fig. 3 style)"] = fig3
    elif notes is not None:
        notes.append(FIG3_MISSING.format(bits=bits))
    for path in curves(store, frame, out, bits):
        title = "Precision@K" if path.name.startswith("precision") else "Precision-recall over Hamming radii"
        figures[f"{title} at {bits} bits"] = path
    return figures
