"""Cross-modal MAP against training time: DDASH versus DCMH and DCMH-D (the DDASH abstract's claim).

The DDASH abstract claims that learning the database codes directly (asymmetric hashing) lets
training use the whole database while cutting training time, against symmetric deep
cross-modal hashing (DCMH) which is trained on a sample. This is the cross-modal counterpart
of ``benchmarks/time_to_accuracy.py`` (the ADSH paper's Fig. 3): on the same data and device,
one after the other in this process,

* DDASH trained on the database (the protocol's full mode: its own setting);
* DCMH on ``--dcmh-train`` sampled pairs of the database (10,000 as in the DCMH release's
  MIRFLICKR demo; skipped when that is the whole database, where it *is* DCMH-D);
* DCMH-D on the whole database,

each with its registered defaults (MLP on the image feature vectors, DCMH's text MLP) unless
``--param`` says otherwise (the same override for every method that has the parameter).
During training the methods call ``RunContext.on_epoch(step, elapsed_seconds, method)`` after
every epoch (DDASH: every outer iteration); the hook computes the protocol's I->T and T->I MAP
exactly as ``hashbench run`` does (queries through ``encode``, the database through
``encode_database``: DDASH's learned B, DCMH's networks), whenever the training time has grown
by 5% since the last measurement, and once at the end. Its time is excluded from the training
time. A method past ``--budget`` seconds of training is stopped there.

Printed: per method, the training time, the best MAP (the mean of I->T and T->I, and each) and
when it was first reached; then for each DCMH run the time it and DDASH took to reach the highest
mean MAP both reach (the lower of the two best, less ``--tolerance``), and the ratio (how many
times sooner DDASH got there; below 1 when DCMH was faster); then the same for I->T and T->I
each on its own (on Wikipedia the mean hides that DCMH reaches DDASH's I->T level sooner). Curves go to
``<out>/curves_<dataset>.csv``.

Datasets:

* ``wikipedia`` (real; ``--data-root`` with ``wikipedia/``): the ``wikipedia`` protocol, 693
  test pairs as queries, the 2,173 training pairs as the database (128-d SIFT histograms, 10-d
  LDA text);
* ``synthetic``: a set at MIRFLICKR-25K scale (``--n 20015`` pairs, 24 labels, multi-label;
  4,096-d non-negative image features, like fc7; 1,386-d sparse binary tag vectors), 2,000
  random queries, the rest the database. Labels: each item draws 1-4 of 24 labels with
  skewed frequencies; image = ReLU(label mixture of per-label prototypes + noise); text = tags
  switched on by the item's labels (each label owns a few dozen tags) plus random noise tags.

    python benchmarks/crossmodal_time_to_accuracy.py --dataset wikipedia --data-root ../shared/data
    python benchmarks/crossmodal_time_to_accuracy.py --dataset synthetic --budget 600 --bits 32
"""

from __future__ import annotations

import argparse
import ast
import csv
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from time_to_accuracy import Curve as BaseCurve
from time_to_accuracy import _OutOfTime, first_time

from hashbench import registry
from hashbench.api import RunContext, trial_data
from hashbench.errors import DivergedError
from hashbench.evaluation import evaluate

EVAL_GROWTH = 1.05
EVAL_MIN_GAP = 0.05


@dataclass
class Data:
    modalities: dict[str, np.ndarray]
    labels: np.ndarray
    query: np.ndarray
    database: np.ndarray
    description: str


@dataclass
class Curve(BaseCurve):
    """``maps`` (what ``time_to`` and ``best`` read) holds the mean of I->T and T->I."""

    i2t: list[float] = field(default_factory=list)
    t2i: list[float] = field(default_factory=list)
    diverged: str = ""  # the DivergedError's message when training diverged
    steps: int = 0  # epochs (DCMH) or outer iterations (DDASH) trained
    peak_rss_mb: float = 0.0

    @property
    def per_step(self) -> float:
        """Training seconds per epoch (DCMH) or outer iteration (DDASH)."""
        return self.last_seconds / self.steps if self.steps else float("nan")


def wikipedia_data(root: str) -> Data:
    from hashbench.datasets import load
    from hashbench.protocol import get_protocol, materialise

    data = load("wikipedia", root=root)
    split = materialise(get_protocol("wikipedia"), data.labels, data.partitions)
    mods = {m: np.asarray(data.modality(m), np.float32) for m in ("features", "text")}
    return Data(mods, data.labels, split.query, np.sort(split.database),
                f"wikipedia: {len(split.query)} queries, {len(split.database)} database pairs")


def synthetic_data(n: int, seed: int, image_dim: int = 4096, text_dim: int = 1386,
                   n_labels: int = 24, n_query: int = 2000) -> Data:
    rng = np.random.default_rng(seed)
    freq = np.sort(rng.dirichlet(np.full(n_labels, 0.7)))[::-1]
    counts = rng.choice([1, 2, 3, 4], size=n, p=[0.35, 0.35, 0.2, 0.1])
    labels = np.zeros((n, n_labels), np.uint8)
    for i, k in enumerate(counts):
        labels[i, rng.choice(n_labels, size=k, replace=False, p=freq)] = 1
    prototypes = rng.standard_normal((n_labels, image_dim)).astype(np.float32)
    mix = labels / labels.sum(1, keepdims=True)
    image = mix.astype(np.float32) @ prototypes
    image += 1.5 * rng.standard_normal((n, image_dim)).astype(np.float32)
    np.maximum(image, 0, out=image)
    owned = [rng.choice(text_dim, size=40, replace=False) for _ in range(n_labels)]
    text = (rng.random((n, text_dim)) < 0.004).astype(np.float32)  # noise tags
    for j in range(n_labels):
        rows = np.flatnonzero(labels[:, j])
        on = rng.random((len(rows), len(owned[j]))) < 0.12
        text[np.ix_(rows, owned[j])] = np.maximum(text[np.ix_(rows, owned[j])], on)
    order = rng.permutation(n)
    query, database = np.sort(order[:n_query]), np.sort(order[n_query:])
    return Data({"features": image, "text": text}, labels, query, database,
                f"synthetic at MIRFLICKR scale: {n:,} pairs, {n_labels} labels "
                f"({labels.sum(1).mean():.2f} per item), {image_dim}-d image features, {text_dim}-d "
                f"tags ({text.sum(1).mean():.1f} per item); {len(query):,} queries, "
                f"{len(database):,} database")


def run_one(name: str, train: np.ndarray, full: bool, data: Data, bits: int, seed: int,
            budget: float, device: str, params: dict[str, Any]) -> Curve:
    cls = registry.get(name)
    own = {k: v for k, v in params.items() if "." not in k and k in cls.param_names()}
    own.update({k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{name}.")})
    method = cls(bits=bits, **own)
    curve = Curve(cls.meta.display_name("full" if full else "sampled"))
    view = trial_data(data.modalities, data.labels, train, data.database,
                      train_mode="full" if full else "sampled")
    q_img, q_txt = data.modalities["features"][data.query], data.modalities["text"][data.query]
    q_labels, db_labels = data.labels[data.query], data.labels[data.database]
    next_eval = [0.0]

    def record(elapsed: float, fitted: Any) -> None:
        i2t = evaluate(fitted.encode(q_img, "features"), fitted.encode_database(view, "text"),
                       q_labels, db_labels).metrics["map"]
        t2i = evaluate(fitted.encode(q_txt, "text"), fitted.encode_database(view, "features"),
                       q_labels, db_labels).metrics["map"]
        curve.seconds.append(elapsed)
        curve.i2t.append(float(i2t))
        curve.t2i.append(float(t2i))
        curve.maps.append((float(i2t) + float(t2i)) / 2)
        next_eval[0] = max(elapsed * EVAL_GROWTH, elapsed + EVAL_MIN_GAP)

    def on_epoch(step: int, elapsed: float, fitted: Any) -> None:
        curve.last_seconds = elapsed
        curve.steps = step + 1
        if elapsed >= next_eval[0] or elapsed > budget:
            record(elapsed, fitted)
        if elapsed > budget:
            raise _OutOfTime

    try:
        method.fit(view, RunContext(seed=seed, device=device, on_epoch=on_epoch))
    except _OutOfTime:
        curve.stopped = True
    except DivergedError as error:  # a result too: the curve so far, and why it ended
        curve.diverged = str(error)
    else:
        if not curve.seconds or curve.seconds[-1] < curve.last_seconds:
            record(curve.last_seconds, method)
    curve.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return curve


def fmt(seconds: float | None) -> str:
    return f"{'never':>9s}" if seconds is None else f"{seconds:8.1f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("wikipedia", "synthetic"), default="wikipedia")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--n", type=int, default=20015, help="synthetic: number of pairs")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dcmh-train", type=int, default=10000, help="DCMH's sampled training pairs")
    parser.add_argument("--budget", type=float, default=900.0, help="training seconds per method")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--param", action="append", default=[],
                        help="NAME=VALUE for every method that has the parameter (e.g. text_hidden=1024), "
                             "or METHOD.NAME=VALUE for one method (dcmh.learning_rate=0.3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/crossmodal_time_to_accuracy")
    args = parser.parse_args()
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value

    if args.dataset == "wikipedia":
        data = wikipedia_data(args.data_root)
    else:
        data = synthetic_data(args.n, args.seed)
    print(f"{data.description}; {args.bits} bits, seed {args.seed}, device {args.device}, budget "
          f"{args.budget:.0f} s per method, params {params or 'registered defaults'}", flush=True)
    rng = np.random.default_rng([args.seed, 18])
    runs = [("ddash", data.database, True)]
    if args.dcmh_train < len(data.database):
        runs.append(("dcmh", np.sort(rng.choice(data.database, args.dcmh_train, replace=False)), False))
    else:
        print(f"  DCMH's {args.dcmh_train:,} sampled pairs cover the whole database: DCMH is DCMH-D here")
    runs.append(("dcmh", data.database, True))
    curves = []
    for name, train, full in runs:
        start = time.perf_counter()
        curve = run_one(name, train, full, data, args.bits, args.seed, args.budget, args.device, params)
        curves.append(curve)
        print(f"  {curve.label:8s} done: {len(curve.maps)} evaluations, training "
              f"{curve.seconds[-1] if curve.seconds else 0:.1f} s (wall {time.perf_counter() - start:.0f} s)"
              f"{' (stopped at the budget)' if curve.stopped else ''}, best mean MAP {curve.best:.4f}"
              f"{'; ' + curve.diverged if curve.diverged else ''}",
              flush=True)

    print(f"\n{'method':8s} {'train':>9s} {'best':>7s} {'I->T':>7s} {'T->I':>7s} {'at':>9s} {'steps':>6s} "
          f"{'s/step':>7s} {'peak RSS':>9s}")
    for c in curves:
        k = int(np.argmax(c.maps)) if c.maps else 0
        print(f"{c.label:8s} {fmt(c.seconds[-1] if c.seconds else None)} {c.best:7.4f} "
              f"{c.i2t[k] if c.maps else float('nan'):7.4f} {c.t2i[k] if c.maps else float('nan'):7.4f} "
              f"{fmt(c.time_to(c.best) if c.maps else None)} {c.steps:6d} {c.per_step:7.2f} "
              f"{c.peak_rss_mb:7.0f}MB{'  stopped' if c.stopped else ''}")
    print("steps: epochs (DCMH) or outer iterations (DDASH) trained; s/step: training seconds per step; "
          "peak RSS: the process's peak resident memory when the method ended (monotone over the runs)")
    ddash = curves[0]
    if ddash.maps:
        print(f"\ntime to the highest mean MAP both reach (the lower of the two best, less {args.tolerance}):"
              f" the DCMH run's time / DDASH's time")
        for c in curves[1:]:
            if not c.maps:
                continue
            target = min(c.best, ddash.best) - args.tolerance
            mine, theirs = ddash.time_to(target), c.time_to(target)
            ratio = f"{theirs / mine:6.1f}x" if mine and theirs is not None else "n/a"
            print(f"  {c.label:8s} MAP >= {target:.4f}: {c.label:8s}{fmt(theirs)}   DDASH{fmt(mine)}"
                  f"   ratio {ratio}")
        # the mean can hide a direction where DCMH is ahead: each direction on its own
        print(f"each direction on its own (the lower of the two best, less {args.tolerance}):")
        for c in curves[1:]:
            for name, of in (("I->T", lambda x: x.i2t), ("T->I", lambda x: x.t2i)):
                if not of(c) or not of(ddash):
                    continue
                target = min(max(of(c)), max(of(ddash))) - args.tolerance
                mine = first_time(ddash.seconds, of(ddash), target)
                theirs = first_time(c.seconds, of(c), target)
                ratio = f"{theirs / mine:6.1f}x" if mine and theirs is not None else "n/a"
                print(f"  {c.label:8s} {name} MAP >= {target:.4f}: {c.label:8s}{fmt(theirs)}   "
                      f"DDASH{fmt(mine)}   ratio {ratio}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"curves_{args.dataset}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "train_seconds", "i2t_map", "t2i_map"])
        for c in curves:
            writer.writerows([c.label, f"{s:.3f}", f"{a:.5f}", f"{b:.5f}"]
                             for s, a, b in zip(c.seconds, c.i2t, c.t2i, strict=True))
    print(f"\ncurves: {path}")


if __name__ == "__main__":
    main()
