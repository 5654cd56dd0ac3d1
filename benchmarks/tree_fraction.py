"""MAP of the tree out-of-sample extension under different per-tree feature fractions at
CIFAR-10's feature width (4,096 dims), on validation data only (issue 14).

Two data sets, both split like ``adsh2018-cifar10`` but smaller (50 queries per class, the
rest of ``--items`` as the database, 500 training points per class from it):

* ``synthetic``: ``benchmarks/paper_cost.py``'s class-structured generator at 4,096 dims, drawn
  with a seed of its own (7), so no benchmark row is reused;
* ``fashion-mnist-hog``: real Fashion-MNIST images carved from the ``fashion-mnist``
  protocol's database (never its 1,000 queries), described by a finer HOG than the
  extractor's (16 orientations, 3 x 3-pixel cells, 2 x 2-cell blocks: 4,096 dims, the width
  of AlexNet fc7), computed here.

For every seed and fraction it fits the method (``lfh`` by default; its trees are the ones
COSDISH, FastH and the "-D" variants share) in sampled mode (tree-coded queries against the
tree-coded database) or full mode (the "-D" setting: tree-coded queries against the learned
database codes) and prints one JSON line per trial (MAP, seconds), then mean and sample
standard deviation per fraction::

    python benchmarks/tree_fraction.py --data synthetic --mode sampled --fractions 1,0.1,0.0625
    python benchmarks/tree_fraction.py --data fashion-mnist-hog --mode full --fractions 0.1,0.0625
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

FINE_HOG = {"orientations": 16, "pixels_per_cell": (3, 3), "cells_per_block": (2, 2),
            "block_norm": "L2-Hys", "transform_sqrt": False}


def _validation_items(n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST items drawn from the ``fashion-mnist`` protocol's database (seed 100),
    as fine-HOG features and one-hot labels."""
    from hashbench.datasets.base import load
    from hashbench.extractors import hog_features
    from hashbench.protocol import get_protocol, materialise

    data = load("fashion-mnist")
    split = materialise(get_protocol("fashion-mnist"), data.labels)
    rows = np.sort(np.random.default_rng(100).choice(split.database, n_items, replace=False))
    x = hog_features(data.modality("image")[rows], params=FINE_HOG)
    return x, data.labels[rows]


def trial(method_name: str, x: np.ndarray, labels: np.ndarray, mode: str, bits: int,
          fraction: float | None, seed: int) -> dict[str, object]:
    from hashbench import registry
    from hashbench.api import RunContext
    from hashbench.datasets.base import Dataset
    from hashbench.evaluation import evaluate
    from hashbench.protocol import get_protocol, materialise
    from hashbench.runner import fit_and_encode

    protocol = get_protocol("adsh2018-cifar10").with_overrides(
        {"query.per_class": 50, "train.per_class": 500}).in_mode(mode)
    split = materialise(protocol, labels)
    dataset = Dataset(name="validation", labels=labels, features=x)
    method = registry.get(method_name)(bits=bits, tree_feature_fraction=fraction)
    t0 = time.perf_counter()
    query, database, timings = fit_and_encode(method, dataset, split, RunContext(seed=seed))
    result = evaluate(query, database, labels[split.query], labels[split.database], map_only=True)
    return {"method": method_name, "mode": mode, "bits": bits, "fraction": fraction, "seed": seed,
            "map": round(float(result.metrics["map"]), 4),
            "train_seconds": round(timings["train_seconds"], 1),
            "trial_seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("synthetic", "fashion-mnist-hog"), default="synthetic")
    parser.add_argument("--items", type=int, default=20_500)
    parser.add_argument("--method", default="lfh")
    parser.add_argument("--mode", choices=("sampled", "full"), default="sampled")
    parser.add_argument("--bits", type=int, default=12)
    parser.add_argument("--fractions", default="0.1,0.0625")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    if args.data == "synthetic":
        from paper_cost import synthetic

        x, labels = synthetic(args.items, 4096, seed=7)
    else:
        x, labels = _validation_items(args.items)
    print(f"# {args.data}: {x.shape[0]} x {x.shape[1]}", flush=True)
    by: dict[float, list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for fraction in (float(f) for f in args.fractions.split(",")):
            row = trial(args.method, x, labels, args.mode, args.bits, fraction, seed)
            by.setdefault(fraction, []).append(float(row["map"]))
            print(json.dumps(row), flush=True)
    for fraction, maps in by.items():
        spread = statistics.stdev(maps) if len(maps) > 1 else float("nan")
        print(f"fraction {fraction}: MAP {statistics.mean(maps):.4f} +- {spread:.4f} "
              f"over {len(maps)} seed(s)", flush=True)


if __name__ == "__main__":
    main()
