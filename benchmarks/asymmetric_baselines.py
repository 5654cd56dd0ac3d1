"""Training time of Lin:Lin, Lin:V, FastH and KADGH on synthetic deep-feature-sized data.

The ADSH paper runs its shallow baselines on 4,096-d CNN features with 5,000 sampled training
points (CIFAR-10). This script builds features of that shape (10 Gaussian classes, class
means at about 3 sigma, float32, seeded: the recipe of ``benchmarks/shallow_scale.py``),
fits each method on all ``--n`` points as the database (the full mode: Lin:V learns
its code words and KADGH's ``database_codes()`` is KADGH-D), and prints the fit time, the
time to encode 1,000 queries and the training-set MAP of query codes against the database
codes (a sanity check that the run learned, not a benchmark number). Nothing is asserted::

    .venv/bin/python benchmarks/asymmetric_baselines.py                     # 5,000 x 4,096
    .venv/bin/python benchmarks/asymmetric_baselines.py --methods kadgh,fasth --bits 12

FastH learns its bits in order and nothing in bit k depends on the final length, so a
48-bit fit also gives the 12-bit time (``--fasth-once``, the default: only the largest length
is fitted and the smaller ones are read off it).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def synthetic(n: int, dim: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around 10 class means shared by every seed; ``seed`` draws the points."""
    means = (np.random.default_rng(12345).standard_normal((classes, dim)).astype(np.float32)
             * (12.0 / np.sqrt(dim)))
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    x = rng.standard_normal((n, dim), dtype=np.float32) + means[target]
    return x, np.eye(classes, dtype=np.uint8)[target]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--bits", default="12,48")
    parser.add_argument("--methods", default="kadgh,fasth,linv,linlin")
    parser.add_argument("--fasth-once", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="cap Lin:Lin / Lin:V epochs (time per epoch; default: theirs)")
    args = parser.parse_args()

    from hashbench import registry
    from hashbench.api import AsymmetricHasher, RunContext
    from hashbench.evaluation import Conventions, evaluate
    from hashbench.testing import training_view

    x, labels = synthetic(args.n, args.dim)
    queries, query_labels = synthetic(1000, args.dim, seed=1)
    print(f"synthetic features {args.n} x {args.dim} float32, {os.cpu_count()} CPUs", flush=True)
    for name in args.methods.split(","):
        cls = registry.get(name)
        lengths = [int(b) for b in args.bits.split(",")]
        if name == "fasth" and args.fasth_once:
            lengths = [max(lengths)]
        for bits in lengths:
            params = {"max_epochs": args.max_epochs} if (
                args.max_epochs and "max_epochs" in cls.param_names()) else {}
            method = cls(bits=bits, **params)
            data = training_view(x, labels)
            marks: dict[int, float] = {}
            t0 = time.perf_counter()

            def mark(metric: str, value: float, step: int, t0: float = t0,
                     marks: dict[int, float] = marks) -> None:
                marks.setdefault(step, time.perf_counter() - t0)  # FastH logs once per bit

            method.fit(data, RunContext(seed=0, log_metric=mark))
            fit = time.perf_counter() - t0
            if name == "fasth":  # bits are learned in order: the first k bits are a k-bit fit
                for k in sorted(int(b) for b in args.bits.split(",")):
                    if k < bits and k in marks:
                        print(f"{name:7s} bits={k:2d} fit={marks[k]:8.1f}s (the first {k} bits "
                              f"of the {bits}-bit fit)", flush=True)
            t0 = time.perf_counter()
            q = method.encode(queries)
            encode = time.perf_counter() - t0
            db = (method.database_codes() if isinstance(method, AsymmetricHasher)
                  else method.encode(x))
            result = evaluate(q, db, query_labels, labels,
                              Conventions(map_topk=None, precision_ks=(100,), radius=2))
            epochs = ""
            if hasattr(method, "loss_history_"):
                epochs = f" bit_updates={len(method.loss_history_) - 1}"
            print(f"{name:7s} bits={bits:2d} fit={fit:8.1f}s encode_1000={encode:6.3f}s "
                  f"map={result.metrics['map']:.4f}{epochs} {params or ''}", flush=True)


if __name__ == "__main__":
    main()
