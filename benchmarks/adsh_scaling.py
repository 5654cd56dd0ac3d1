"""ADSH training time against the database size n (the paper's O(n) claim).

Whole ADSH training runs (MLP backbone, feature inputs, eq. 5: the database is the training
set) on synthetic clustered data with n = 10k, 20k, 40k, 80k, 160k points and a fixed
|Omega| and number of iterations. With |Omega| and the iterations fixed, the network's work
is constant and everything else (similarity by label groups, the V-step) is linear in n,
so the time should be affine, ``t(n) = a + b n``. Prints the times, the largest relative
deviation of an affine fit (the "linear within 20%" check), the time ratio of each doubling
(at most 2 for O(n)) and the marginal cost per database point ``(t(2n) - t(n)) / n``;
no assertions.

    python benchmarks/adsh_scaling.py                        # 10 outer x 3 inner, 48 bits
    python benchmarks/adsh_scaling.py --outer-iters 50       # the paper's T_out
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from hashbench.methods.adsh import ADSH

from hashbench.api import RunContext
from hashbench.testing import training_view


def clustered(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` Gaussian clusters in ``dim`` dimensions, one-hot labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centres[y] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return x, np.eye(classes, dtype=np.uint8)[y]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,20000,40000,80000,160000")
    parser.add_argument("--bits", type=int, default=48)
    parser.add_argument("--outer-iters", type=int, default=10)
    parser.add_argument("--inner-epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the fastest counts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    params = {"bits": args.bits, "outer_iters": args.outer_iters, "inner_epochs": args.inner_epochs,
              "num_samples": args.num_samples}
    print(f"ADSH {params}, MLP on {args.dim}-d clustered features, {args.classes} classes, "
          f"device={args.device}")
    # warm-up: torch's one-off imports and allocator growth must not land on the first size
    x, y = clustered(4000, args.dim, args.classes, 0)
    ADSH(**{**params, "outer_iters": 1}).fit(
        training_view(x, y), RunContext(seed=0, device=args.device))

    times = []
    for n in sizes:
        x, y = clustered(n, args.dim, args.classes, 1)
        data = training_view(x, y)
        best = np.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            ADSH(**params).fit(data, RunContext(seed=0, device=args.device))
            best = min(best, time.perf_counter() - start)
        times.append(best)
        print(f"n={n:>8,}  {best:8.2f} s  ({best / n * 1e6:7.2f} us per database point)", flush=True)

    t, n = np.array(times), np.array(sizes, dtype=float)
    b, a = np.polyfit(n, t, 1)
    deviation = np.max(np.abs(a + b * n - t) / t)
    print(f"affine fit: t(n) = {a:.2f} s + {b * 1e6:.3f} us * n; largest deviation {deviation:.1%} "
          f"(linear within 20%: {'yes' if deviation <= 0.2 else 'no'})")
    marginal = np.diff(t) / np.diff(n) * 1e6
    for i, cost in enumerate(marginal):
        print(f"n {sizes[i]:>7,} -> {sizes[i + 1]:>7,}: time x {t[i + 1] / t[i]:.2f} for n x "
              f"{n[i + 1] / n[i]:.0f}; marginal cost {cost:7.3f} us per database point")
    print(f"t(largest)/t(smallest) = {t[-1] / t[0]:.1f} for n x {n[-1] / n[0]:.0f} "
          f"(the fixed network work of |Omega| = {args.num_samples} points is the intercept)")

if __name__ == "__main__":
    main()
