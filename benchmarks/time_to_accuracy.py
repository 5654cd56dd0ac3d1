"""MAP against training time: ADSH versus DPSH, DSH, DHN and their "-D" variants (ADSH Fig. 3).

The ADSH paper (Fig. 3, MS-COCO) trains the symmetric deep baselines on a sampled training
set and on the whole database ("-D") and shows that ADSH reaches their accuracy much sooner.
This script repeats the measurement on the same data and device for every method:

* ADSH trained on the database (eq. 5: the protocol's ``full`` mode);
* DPSH, DSH, DHN on the sampled training set, and DPSH-D, DSH-D, DHN-D on the whole database,

each with its registered defaults (MLP backbone on feature vectors). During training the
true retrieval MAP (the protocol's queries against the database codes the method would
return now: ADSH's learned V, ``sign(F(x))`` of the database for the others) is measured
against the training time so far. The methods call the public per-epoch hook
``RunContext.on_epoch(step, elapsed_seconds, method)`` after every epoch (an outer
iteration for ADSH) with their training time so far, the hook's own time excluded; the
hook evaluates ``method.encode(queries)`` against ``method.database_codes()`` (ADSH) or
``method.encode(database)`` (the others), exactly as ``hashbench run`` does at the end,
whenever the training time has grown by 5% (and at least ``EVAL_MIN_GAP`` seconds) since
the last measurement, and once more at the end: the times to a MAP are therefore
overstated by at most about 5%, that gap, or one epoch (for ADSH one outer iteration, 2% of
its training), whichever is longest, by the same rule for every method. A method whose
training time passes ``--budget`` seconds is stopped there. All methods run in this one
process, one after the other, on the same device with the same torch threads (one on CPU
for the small backbones unless ``HASHBENCH_TORCH_THREADS`` says otherwise).

Printed: for each method the training time, the best MAP and when it was first reached, and
the time to reach each ``--targets`` MAP; then, for each baseline, the time it and ADSH took
to reach the highest MAP both reach (the lower of their two best MAPs, less
``--tolerance``) and the ratio: how many times sooner ADSH got there (the paper's claim is
that ADSH reaches the baselines' accuracy much sooner).
The curves go to ``<out>/curves_<dataset>.csv`` and, with matplotlib, ``<out>/curves_<dataset>.png``.
No assertions.

Datasets: ``digits`` (the bundled protocol: 100 queries, 1,697 database items, 500 sampled
training points) or ``synthetic``: ``--n`` feature vectors in ``--dim`` dimensions, 10
classes, each class a mixture of 4 Gaussian blobs (so that a linear map is not enough),
with standard deviation ``--noise``; 100 queries per class, the rest the database,
``--train-per-class`` per class sampled from it for training.

    python benchmarks/time_to_accuracy.py                                   # digits, 24 bits
    python benchmarks/time_to_accuracy.py --dataset synthetic --n 20000 --budget 120
    python benchmarks/time_to_accuracy.py --dataset synthetic --n 60000 --budget 150 \
        --methods adsh,dsh,dhn                      # a CIFAR-10-sized database (59,000)
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hashbench import registry
from hashbench.api import RunContext, trial_data
from hashbench.backbones import threads_for
from hashbench.evaluation import evaluate

BASELINES = ("dpsh", "dsh", "dhn")
EVAL_GROWTH = 1.05  # evaluate when the training time has grown 5% since the last evaluation,
EVAL_MIN_GAP = 0.02  # and by at least this many seconds: about evenly spaced on a log time axis


@dataclass
class Data:
    features: np.ndarray
    labels: np.ndarray
    query: np.ndarray
    database: np.ndarray
    sampled: np.ndarray
    description: str


@dataclass
class Curve:
    label: str
    seconds: list[float] = field(default_factory=list)
    maps: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    stopped: bool = False
    wall_seconds: float = 0.0
    last_seconds: float = 0.0

    def time_to(self, target: float) -> float | None:
        return first_time(self.seconds, self.maps, target)

    @property
    def best(self) -> float:
        return max(self.maps) if self.maps else float("nan")


def first_time(seconds: list[float], values: list[float], target: float) -> float | None:
    """The first training time at which ``values`` reach ``target`` (None: never)."""
    return next((t for t, v in zip(seconds, values, strict=True) if v >= target), None)


class _OutOfTime(Exception):
    """Raised from the ``on_epoch`` hook to stop a method past the time budget."""


def digits_data() -> Data:
    from hashbench.datasets import load
    from hashbench.protocol import get_protocol, materialise

    data = load("digits")
    protocol = get_protocol("digits")
    split = materialise(protocol, data.labels)
    return Data(data.features, data.labels, split.query, split.database, split.train,
                f"digits: {len(split.query)} queries, {len(split.database)} database, "
                f"{len(split.train)} sampled for training")


def synthetic_data(n: int, dim: int, noise: float, train_per_class: int, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    classes, blobs = 10, 4
    centres = rng.standard_normal((classes, blobs, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    blob = rng.integers(0, blobs, n)
    x = centres[y, blob] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    labels = np.eye(classes, dtype=np.uint8)[y]
    query = np.concatenate([rng.choice(np.flatnonzero(y == c), 100, replace=False)
                            for c in range(classes)])
    is_query = np.zeros(n, bool)
    is_query[query] = True
    database = np.flatnonzero(~is_query)
    sampled = np.concatenate([rng.choice(database[y[database] == c], train_per_class, replace=False)
                              for c in range(classes)])
    return Data(x, labels, np.sort(query), database, np.sort(sampled),
                f"synthetic: {n:,} points in {dim} d, 10 classes x 4 blobs, noise {noise}; "
                f"{len(query)} queries, "
                f"{len(database):,} database, {len(sampled):,} sampled for training")


def run_one(name: str, full: bool, data: Data, bits: int, seed: int, budget: float,
            device: str) -> Curve:
    cls = registry.get(name)
    curve = Curve(cls.meta.display_name("full" if full else "sampled"))
    method = cls(bits=bits)  # the registered defaults
    train = data.database if full else data.sampled
    view = trial_data({"features": data.features}, data.labels, train, data.database,
                      train_mode="full" if full else "sampled")
    x_query = data.features[data.query]
    q_labels, db_labels = data.labels[data.query], data.labels[data.database]
    next_eval = [0.0]

    def record(elapsed: float, fitted: Any) -> None:
        db_codes = fitted.encode_database(view)  # the contract's hook, as the runner does
        result = evaluate(fitted.encode(x_query), db_codes, q_labels, db_labels)
        curve.seconds.append(elapsed)
        curve.maps.append(float(result.metrics["map"]))
        curve.flags = sorted(result.flags)
        next_eval[0] = max(elapsed * EVAL_GROWTH, elapsed + EVAL_MIN_GAP)

    def on_epoch(step: int, elapsed: float, fitted: Any) -> None:
        curve.last_seconds = elapsed
        if elapsed >= next_eval[0] or elapsed > budget:
            record(elapsed, fitted)
        if elapsed > budget:
            raise _OutOfTime

    start = time.perf_counter()
    try:
        method.fit(view, RunContext(seed=seed, device=device, on_epoch=on_epoch))
    except _OutOfTime:
        curve.stopped = True
    else:  # the trained method, exactly as the runner evaluates it
        if not curve.seconds or curve.seconds[-1] < curve.last_seconds:
            record(curve.last_seconds, method)
    curve.wall_seconds = time.perf_counter() - start
    return curve


def fmt(seconds: float | None) -> str:
    return f"{'never':>9s}" if seconds is None else f"{seconds:8.2f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--n", type=int, default=20000, help="synthetic: number of points")
    parser.add_argument("--dim", type=int, default=32, help="synthetic: feature dimension")
    parser.add_argument("--noise", type=float, default=1.1,
                        help="synthetic: blob standard deviation (1-NN accuracy about 0.96 at 1.0, "
                             "0.72 at 1.4)")
    parser.add_argument("--train-per-class", type=int, default=100, help="synthetic: sampled set")
    parser.add_argument("--bits", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=600.0,
                        help="stop a method once its training time passes this many seconds")
    parser.add_argument("--targets", default="0.9,0.95,0.98")
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="ADSH must reach a baseline's best MAP less this")
    parser.add_argument("--methods", default="adsh,dpsh,dsh,dhn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/time_to_accuracy")
    args = parser.parse_args()

    data = digits_data() if args.dataset == "digits" else synthetic_data(
        args.n, args.dim, args.noise, args.train_per_class, args.seed)
    targets = [float(t) for t in args.targets.split(",")]
    names = args.methods.split(",")
    threads = threads_for("mlp", args.device)
    print(f"{data.description}; {args.bits} bits, seed {args.seed}, device {args.device} "
          f"({'default' if threads is None else threads} torch thread(s) for every method), "
          f"budget {args.budget:.0f} s per method")
    runs = [(name, True) for name in names if name == "adsh"]
    for name in (n for n in names if n != "adsh"):
        runs += [(name, False), (name, True)]
    curves = []
    for name, full in runs:
        curve = run_one(name, full, data, args.bits, args.seed, args.budget, args.device)
        curves.append(curve)
        print(f"  {curve.label:8s} done: {len(curve.maps)} evaluations, training "
              f"{curve.seconds[-1] if curve.seconds else 0:.1f} s"
              f"{' (stopped at the budget)' if curve.stopped else ''}, best MAP {curve.best:.4f}",
              flush=True)

    header = (f"{'method':8s} {'train':>9s} {'best MAP':>9s} {'at':>9s} "
              + " ".join(f"{'MAP>=' + str(t):>10s}" for t in targets) + "  flags")
    print("\n" + header + "\n" + "-" * len(header))
    for c in curves:
        at = c.time_to(c.best) if c.maps else None
        row = (f"{c.label:8s} {fmt(c.seconds[-1] if c.seconds else None)} {c.best:9.4f} {fmt(at)} "
               + " ".join(f"{fmt(c.time_to(t)):>10s}" for t in targets)
               + ("  stopped" if c.stopped else "") + ("  " + ",".join(c.flags) if c.flags else ""))
        print(row)

    adsh = next((c for c in curves if c.label == "ADSH"), None)
    if adsh is not None and adsh.maps:
        print(f"\ntime to the highest MAP both reach (the lower of the two best MAPs, less "
              f"{args.tolerance}): the baseline's time / ADSH's time")
        for c in curves:
            if c is adsh or not c.maps:
                continue
            target = min(c.best, adsh.best) - args.tolerance
            mine, theirs = adsh.time_to(target), c.time_to(target)
            ratio = f"{theirs / mine:6.1f}x" if mine is not None and theirs is not None else "n/a"
            print(f"  {c.label:8s} MAP >= {target:.4f}: {c.label:8s}{fmt(theirs)}   ADSH{fmt(mine)}"
                  f"   ratio {ratio}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"curves_{args.dataset}.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "train_seconds", "map"])
        for c in curves:
            writer.writerows([c.label, f"{s:.4f}", f"{m:.6f}"] for s, m in zip(c.seconds, c.maps,
                                                                             strict=True))
    print(f"\ncurves: {csv_path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        ax.plot(c.seconds, c.maps, label=c.label, linestyle="--" if c.label.endswith("-D") else "-")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("MAP")
    ax.set_title(f"{args.dataset}, {args.bits} bits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / f"curves_{args.dataset}.png"
    fig.savefig(png, dpi=120)
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
