"""What a trial's curve artifacts cost: the precision-recall and precision@K curves as CSV, JSON
and MLflow figure (PNG), written to a real SQLite MLflow store.

Every variant writes the same two curves of one digits-sized evaluation (100 queries, 1,697
database items, 12 bits) to a fresh run and is repeated ``--repeat`` times; the script prints
the median wall and CPU time per trial (CPU time of this process: less disturbed by other
jobs on a shared machine), each as a ratio to the first variant, and the peak RSS.

* ``new figure``: the baseline (hashbench before the figures were cached): CSV, JSON and a
  new matplotlib figure per curve, logged with ``log_figure``;
* ``now``: what a trial does, ``RunRecorder.log_curve_artifacts`` per curve (the axes drawn
  once per process, each trial draws its lines on them: ``tracking.CurvePlots``);
* ``no figures``: the CSV and JSON only (what the figures cost is the difference).

    python benchmarks/curve_figures.py               # 10 repeats
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hashbench.evaluation import Conventions, evaluate
from hashbench.tracking import RunRecorder, Store


def curves() -> dict[str, object]:
    rng = np.random.default_rng(0)
    query = np.where(rng.random((100, 12)) < 0.5, -1, 1).astype(np.int8)
    database = np.where(rng.random((1697, 12)) < 0.5, -1, 1).astype(np.int8)
    labels = np.eye(10, dtype=np.uint8)
    result = evaluate(query, database, labels[rng.integers(0, 10, 100)], labels[rng.integers(0, 10, 1697)],
                      Conventions(precision_ks=(100,), radius=2), n_jobs=1)
    return dict(result.curves)


def figure(name: str, frame: Any) -> Any:
    """The baseline: a new figure per curve, as trials drew them before ``CurvePlots``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_axes((0.14, 0.14, 0.82, 0.76))
    step, *values = list(frame.columns)
    if step == "radius":
        ax.plot(frame["recall"], frame["precision"], marker="o", markersize=3)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"precision-recall, Hamming radius 0..{int(frame[step].max())}", fontsize=9)
    else:
        for column in values:
            ax.plot(frame[step], frame[column], label=column)
        ax.set_xlabel(step)
        ax.legend(frameon=False)
        ax.set_title(name)
    ax.grid(alpha=0.3)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    frames = curves()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")

        def run() -> RunRecorder:
            return store.start_run("bench", {"hashbench.kind": "bench"})

        def new_figure() -> None:
            recorder = run()
            for name, frame in frames.items():
                recorder.log_text(frame.to_csv(index=False), f"curves/{name}.csv")
                recorder.log_text(frame.to_json(orient="records"), f"curves/{name}.json")
                recorder.client.log_figure(recorder.run_id, figure(name, frame), f"curves/{name}.png")

        def now() -> None:
            recorder = run()
            for name, frame in frames.items():
                recorder.log_curve_artifacts(name, frame)

        def no_figures() -> None:
            recorder = run()
            for name, frame in frames.items():
                recorder.log_text(frame.to_csv(index=False), f"curves/{name}.csv")
                recorder.log_text(frame.to_json(orient="records"), f"curves/{name}.json")

        variants: dict[str, Callable[[], None]] = {"new figure": new_figure, "now": now,
                                                   "no figures": no_figures}
        for fn in variants.values():  # warm-up: imports, the store's first writes
            fn()
        results = {}
        for name, fn in variants.items():
            walls, cpus = [], []
            for _ in range(args.repeat):
                w, c = time.perf_counter(), time.process_time()
                fn()
                walls.append(time.perf_counter() - w)
                cpus.append(time.process_time() - c)
            results[name] = (statistics.median(walls), statistics.median(cpus))
    base_wall, base_cpu = results["new figure"]
    print(f"{'variant':<14}{'wall s/trial':>14}{'ratio':>8}{'CPU s/trial':>14}{'ratio':>8}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<14}{wall:>14.3f}{wall / base_wall:>8.2f}{cpu:>14.3f}{cpu / base_cpu:>8.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
