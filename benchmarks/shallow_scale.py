"""Time and peak memory of LFH, SDH and COSDISH at the ADSH paper's "-D" scale.

The "-D" variants train on the whole database: 59,000 points of 4,096-d deep features on
CIFAR-10 (up to 193,734 on NUS-WIDE). This script builds synthetic features of that shape
(10 Gaussian classes, float32, seeded) and measures, each in a fresh process so that the peak
resident memory belongs to that step alone:

* ``codes:<method>``: learning the training codes (LFH, COSDISH: ``_learn_codes`` after the
  standardisation; SDH: its whole ``fit``, RBF features and hash function included);
* ``trees``: the boosted-tree out-of-sample step (:class:`hashbench.oos.BoostedTrees`): the
  binned dataset once, then ``--tree-rounds`` rounds for ``--tree-bits`` bits, extrapolated
  linearly to 200 rounds x ``--bits`` bits (tree cost is linear in both);
* ``linear``: the linear out-of-sample extension (ridge regression on 4,096-d features).

Encoding 1,000 queries is timed with SDH's own hash function (``codes:sdh``) and with the
trees of the measured bits (``trees``; LFH and COSDISH encode through them).

Peak memory: the resident-set high-water mark (``VmHWM``) counted from right after the
imports and the features were made (the count is restarted through ``/proc/self/clear_refs``),
and that peak minus the resident size at that moment (``peak_above_start_mib``: what the step
adds on top of its input; the input itself, n x d float32, is 0.9 GiB at 59,000 x 4,096).
Prints numbers only; nothing is asserted. Example::

    .venv/bin/python benchmarks/shallow_scale.py                   # 59,000 x 4,096, 32 bits
    .venv/bin/python benchmarks/shallow_scale.py --n 5000 --dim 512 --steps codes:sdh
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

STEPS = ("codes:lfh", "codes:cosdish", "codes:sdh", "trees", "linear")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Restart the peak-RSS count (Linux >= 4.0: ``5`` > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """Peak resident memory since the last :func:`reset_peak` (VmHWM), else since the start."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, dim: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class means at distance ~3 sigma plus unit noise, float32; one-hot labels."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    means = rng.standard_normal((classes, dim)).astype(np.float32) * (3.0 / np.sqrt(dim) * 4)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 4096):  # in chunks: no n x d temporaries
        stop = min(start + 4096, n)
        x[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
        x[start:stop] += means[target[start:stop]]
    return x, np.eye(classes, dtype=np.uint8)[target]


def run_step(step: str, args: argparse.Namespace) -> dict[str, float | str]:
    import lightgbm  # noqa: F401 - imported before the baseline, like the registry's modules

    from hashbench import registry
    from hashbench.api import RunContext
    from hashbench.oos import BoostedTrees, LinearProjection, Standardiser
    from hashbench.testing import training_view

    registry.available()  # imports every built-in method (torch included) before the baseline
    x, labels = synthetic(args.n, args.dim)
    queries, _ = synthetic(1000, args.dim, seed=1)
    base = rss_mib()
    reset = reset_peak()
    result: dict[str, float | str] = {"step": step, "input_mib": x.nbytes / 2**20,
                                      "rss_before_mib": base}
    ctx = RunContext(seed=0)
    if step.startswith("codes:"):
        name = step.split(":", 1)[1]
        method = registry.get(name)(bits=args.bits)
        t0 = time.perf_counter()
        if name == "sdh":
            method.fit(training_view(x, labels), ctx)
            result["seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            method.encode(queries)
            result["encode_1000_seconds"] = time.perf_counter() - t0
        else:
            method.standardiser_ = Standardiser().fit(x)
            z = method.standardiser_.transform(x)
            result["standardise_seconds"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            method._learn_codes(z, labels, ctx)
            result["seconds"] = time.perf_counter() - t1
            result["seconds_with_standardise"] = time.perf_counter() - t0
    elif step == "trees":
        codes = np.where(np.random.default_rng(2).standard_normal((args.n, args.tree_bits))
                         + (labels @ np.random.default_rng(3).standard_normal((labels.shape[1],
                                                                              args.tree_bits)))
                         > 0, 1, -1).astype(np.int8)
        trees = BoostedTrees(n_rounds=args.tree_rounds, feature_fraction=args.tree_feature_fraction)
        t0 = time.perf_counter()
        trees.fit_bit(x, codes[:, 0], seed=0)  # builds the shared binned dataset
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        for k in range(1, args.tree_bits):
            trees.fit_bit(x, codes[:, k], seed=k)
        per_bit = (time.perf_counter() - t1) / max(args.tree_bits - 1, 1)
        if args.tree_bits == 1:
            per_bit = first  # upper bound: includes the binning
        binning = max(first - per_bit, 0.0)
        trees.release()
        t0 = time.perf_counter()
        trees.predict(queries)
        result.update({
            "feature_fraction": args.tree_feature_fraction,
            "binning_seconds": binning,
            "seconds_per_bit": per_bit,
            "rounds_measured": args.tree_rounds,
            "bits_measured": args.tree_bits,
            f"extrapolated_seconds_200_rounds_{args.bits}_bits":
                binning + per_bit * (200 / args.tree_rounds) * args.bits,
            f"encode_1000_seconds_{args.tree_bits}_bits": time.perf_counter() - t0,
        })
    elif step == "linear":
        z = Standardiser().fit(x).transform(x)
        codes = np.where(np.random.default_rng(2).standard_normal((args.n, args.bits)) > 0, 1, -1)
        t0 = time.perf_counter()
        LinearProjection(ridge=1.0).fit(z, codes)
        result["seconds"] = time.perf_counter() - t0
    else:
        raise SystemExit(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    result["peak_mib" if reset else "peak_mib_process"] = peak_mib()
    result["peak_above_start_mib"] = peak_mib() - base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=59000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--tree-rounds", type=int, default=10)
    parser.add_argument("--tree-bits", type=int, default=2)
    parser.add_argument("--tree-feature-fraction", type=float, default=1.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_step(args.worker, args)))
        return
    print(f"synthetic features {args.n} x {args.dim} float32, {args.bits} bits, "
          f"{os.cpu_count()} CPUs, HASHBENCH_THREADS={os.environ.get('HASHBENCH_THREADS', '(2)')}",
          flush=True)
    for step in args.steps.split(","):
        cmd = [sys.executable, __file__, "--worker", step, "--n", str(args.n), "--dim", str(args.dim),
               "--bits", str(args.bits), "--tree-rounds", str(args.tree_rounds),
               "--tree-bits", str(args.tree_bits),
               "--tree-feature-fraction", str(args.tree_feature_fraction)]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{step}: FAILED\n{out.stderr[-2000:]}", flush=True)
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        fields = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in result.items() if k != "step")
        print(f"{step}: {fields} (process wall {time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
