"""Figures from the MLflow store (matplotlib, PNG plus the CSV of the data behind each).

* Fig. 2 style: precision of the top K (``p@K``, K = 5000 by default when recorded) versus
  code length; one line per method, one panel per protocol.
* Fig. 3 style: MAP versus training time from the per-iteration curves methods log
  (``train_map`` and ``elapsed_seconds`` at the same step, as ADSH does); methods without
  a curve appear as one point (final MAP, ``train_seconds``).
* Precision@K curves and precision-recall curves (Hamming radius 0..c) per method at one
  code length, from the ``curve.*`` metric histories the runner records.

A method keeps its colour and marker in every figure (assigned over all methods in the
report, in name order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hashbench.report import latest_finished
from hashbench.tracking import Store, metric_history, metric_key

MARKERS = "osD^v<>pP*Xh"


def styles(displays: list[str]) -> dict[str, dict[str, str]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(displays) <= 10 else "tab20"]
    return {d: {"color": cmap(i % cmap.N), "marker": MARKERS[i % len(MARKERS)]}
            for i, d in enumerate(sorted(displays))}


def _figure(n_panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n_panels, 3)
    rows = int(np.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _finish(fig, axes, path: Path, data: pd.DataFrame) -> Path:
    """One legend below the panels (never over the data), tight layout, PNG + CSV."""
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    width, height = fig.get_size_inches()
    longest = max((len(label) for label in seen), default=0)
    ncol = max(1, min(len(seen), int(width / (0.55 + 0.085 * longest))))
    rows = int(np.ceil(len(seen) / ncol)) if seen else 0
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=ncol,
                   frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, min(0.45, 0.3 * rows / height), 1, 1))
    fig.savefig(path, dpi=130)
    import matplotlib.pyplot as plt

    plt.close(fig)
    data.to_csv(path.with_suffix(".csv"), index=False)
    return path


def precision_vs_bits(frame: pd.DataFrame, out: Path, topk: int | None = None) -> Path | None:
    """Fig. 2 style; returns None when no p@K metric was recorded."""
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
    fig, axes = _figure(len(protocols))
    for ax, protocol in zip(axes, protocols, strict=True):
        part = data[data["protocol"] == protocol]
        for display, rows in part.groupby("display"):
            ax.errorbar(rows["bits"], rows["mean"], yerr=rows["std"].fillna(0), label=display,
                        capsize=3, linewidth=1.5, markersize=5, **style[display])
        ax.set_title(protocol)
        ax.set_xlabel("code length (bits)")
        ax.set_ylabel(f"precision of the top {k}")
        ax.set_xticks(sorted(part["bits"].unique()))
        ax.grid(alpha=0.3)
    return _finish(fig, axes, out / f"fig2_precision_top{k}.png",
                   data.rename(columns={"mean": f"p@{k}_mean", "std": f"p@{k}_std"}))


def _histories(store: Store, runs: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    rows = []
    for run in runs.itertuples():
        series = {n: dict(metric_history(store, run.run_id, n)) for n in names}
        steps = sorted(set.intersection(*(set(s) for s in series.values()))) if series else []
        for step in steps:
            rows.append({"protocol": run.protocol, "display": run.display, "bits": run.bits,
                         "seed": run.seed, "step": step, **{n: series[n][step] for n in names}})
    return pd.DataFrame(rows)


def map_vs_time(store: Store, frame: pd.DataFrame, out: Path, bits: int) -> Path | None:
    """Fig. 3 style at one code length."""
    done = latest_finished(frame)
    done = done[done["bits"] == bits]
    if done.empty:
        return None
    curves = _histories(store, done, ["train_map", "elapsed_seconds"])
    protocols = sorted(done["protocol"].unique())
    style = styles(list(frame["display"].unique()))
    fig, axes = _figure(len(protocols))
    data = []
    for ax, protocol in zip(axes, protocols, strict=True):
        runs = done[done["protocol"] == protocol]
        for display, method_runs in runs.groupby("display"):
            c = curves[(curves["protocol"] == protocol) & (curves["display"] == display)] \
                if not curves.empty else curves
            if not c.empty:
                mean = c.groupby("step")[["elapsed_seconds", "train_map"]].mean().reset_index()
                ax.plot(mean["elapsed_seconds"], mean["train_map"], label=display, linewidth=1.5,
                        markersize=4, **style[display])
                data.append(mean.assign(protocol=protocol, display=display, kind="curve"))
            elif "metric.train_seconds" in method_runs and "metric.map" in method_runs:
                x, y = method_runs["metric.train_seconds"].mean(), method_runs["metric.map"].mean()
                ax.plot([x], [y], linestyle="none", label=display, markersize=7, **style[display])
                data.append(pd.DataFrame({"elapsed_seconds": [x], "train_map": [y], "step": [-1],
                                          "protocol": [protocol], "display": [display],
                                          "kind": ["final"]}))
        ax.set_xscale("log")
        ax.set_title(f"{protocol}, {bits} bits")
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel("MAP")
        ax.grid(alpha=0.3)
    table = pd.concat(data) if data else pd.DataFrame()
    return _finish(fig, axes, out / f"fig3_map_vs_time_{bits}bits.png", table)


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
        ("precision_at_k", ["curve.precision_at_k.precision"], "K (top-K retrieved)", "precision@K",
         f"precision_at_k_{bits}bits.png"),
        ("pr_curve", ["curve.pr_curve.precision", "curve.pr_curve.recall"], "recall", "precision",
         f"pr_curve_{bits}bits.png"),
    ]
    for name, metrics, xlabel, ylabel, filename in specs:
        hist = _histories(store, done, metrics)
        if hist.empty:
            continue
        fig, axes = _figure(len(protocols))
        data = []
        for ax, protocol in zip(axes, protocols, strict=True):
            part = hist[hist["protocol"] == protocol]
            for display, rows in part.groupby("display"):
                mean = rows.groupby("step")[metrics].mean().reset_index()
                if name == "precision_at_k":
                    ax.plot(mean["step"], mean[metrics[0]], label=display, linewidth=1.5,
                            markevery=max(1, len(mean) // 8), markersize=4, **style[display])
                else:
                    ax.plot(mean[metrics[1]], mean[metrics[0]], label=display, linewidth=1.5,
                            markersize=4, **style[display])
                data.append(mean.assign(protocol=protocol, display=display))
            ax.set_title(f"{protocol}, {bits} bits")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        written.append(_finish(fig, axes, out / filename, pd.concat(data)))
    return written


def all_figures(store: Store, frame: pd.DataFrame, out: Path, bits: int | None = None,
                topk: int | None = None) -> dict[str, Path]:
    """Every figure the store supports; keys are the titles used in the HTML page."""
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
    for path in curves(store, frame, out, bits):
        title = "Precision@K" if path.name.startswith("precision") else "Precision-recall over Hamming radii"
        figures[f"{title} at {bits} bits"] = path
    return figures
