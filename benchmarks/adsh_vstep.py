"""ADSH V-step: the fast implementation against eq. (10) as printed, in one process.

One V-step = ``Q = -2c S^T U - 2 gamma U_bar`` plus one sweep of eq. (10) over the c bits.

* fast: ``hashbench.methods.adsh`` (S by label groups, never built; the sweep vectorised
  over the database on contiguous columns);
* literal: an explicit ``m x n`` float64 S, ``Q`` by a dense product, and per bit
  ``V_hat_k`` / ``U_hat_k`` formed by dropping column k.

Both start from the same V (zeros, as in the first iteration, and a random +-1 V, as later
on) and must give bit-identical codes. Prints times and the ratio; no assertions.

    python benchmarks/adsh_vstep.py                    # n=59,000, m=2,000, c=48 (CIFAR-10 scale)
    python benchmarks/adsh_vstep.py --multilabel 21    # NUS-WIDE-like multi-hot labels
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from hashbench.methods.adsh import (
    SimilarityBlock,
    code_matrix,
    update_codes,
    update_codes_literal,
)

from hashbench.labels import group_labels


def make_problem(n: int, m: int, c: int, classes: int, multilabel: int, seed: int):
    rng = np.random.default_rng(seed)
    if multilabel:
        labels = (rng.random((n, multilabel)) < 2.0 / multilabel).astype(np.uint8)
        labels[np.arange(n), rng.integers(0, multilabel, n)] = 1
    else:
        labels = np.eye(classes, dtype=np.uint8)[rng.integers(0, classes, n)]
    omega = np.sort(rng.choice(n, m, replace=False))
    # U as a trained network gives it: near-binary, correlated with the class
    centres = rng.standard_normal((labels.shape[1], c))
    z = labels[omega] @ centres + 0.5 * rng.standard_normal((m, c))
    U = torch.from_numpy(np.tanh(2 * z))
    V_random = torch.from_numpy(np.where(rng.random((n, c)) < 0.5, 1.0, -1.0))
    return labels, omega, U, V_random


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=59_000)
    parser.add_argument("--m", type=int, default=2_000)
    parser.add_argument("--bits", type=int, default=48)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--multilabel", type=int, default=0, metavar="L",
                        help="multi-hot labels over L classes instead of single labels")
    parser.add_argument("--gamma", type=float, default=200.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, m, c = args.n, args.m, args.bits

    labels, omega, U, V_random = make_problem(n, m, c, args.classes, args.multilabel, args.seed)
    U, V_random = U.to(device), V_random.to(device)
    omega_t = torch.from_numpy(omega).to(device)
    groups, (ids,) = group_labels(labels)
    print(f"n={n:,} m={m:,} c={c} gamma={args.gamma} labels={labels.shape[1]} "
          f"({len(groups)} distinct label vectors) device={device} threads={torch.get_num_threads()}")

    def fast(V0: torch.Tensor) -> torch.Tensor:
        block = SimilarityBlock(groups, ids[omega], ids, device)
        Q = code_matrix(block, U, omega_t, args.gamma)
        return update_codes(V0.clone(), U, Q)

    def build_s() -> torch.Tensor:
        lab = torch.from_numpy(labels.astype(np.float32)).to(device)
        share = (lab[omega_t] @ lab.T) > 0
        r = share.sum().item() / (~share).sum().item()
        one = torch.ones((), dtype=torch.float64, device=device)
        return torch.where(share, one, -r * one)

    t_build, S = best_of(1, build_s)
    U_bar = torch.zeros(n, c, dtype=torch.float64, device=device)
    U_bar[omega_t] = U

    # "warm": the state in the middle of training: V from the previous V-step, U moved a
    # little by one epoch of the network (few codes flip)
    U_prev = torch.tanh(torch.atanh(U.clamp(-0.999, 0.999)) + 0.3 * torch.randn(
        U.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed)).to(device))
    block = SimilarityBlock(groups, ids[omega], ids, device)
    V_warm = update_codes(V_random.clone(), U_prev, code_matrix(block, U_prev, omega_t, args.gamma))
    V_warm = update_codes(V_warm, U_prev, code_matrix(block, U_prev, omega_t, args.gamma))
    flips = (update_codes(V_warm.clone(), U, code_matrix(block, U, omega_t, args.gamma)) != V_warm)
    print(f"warm start: {flips.double().mean().item():.2%} of the codes flip in the timed step")

    print(f"{'start':<8} {'fast s':>9} {'literal s':>10} {'ratio':>7} {'+build S':>9}  identical")
    for name, V0 in (("zeros", torch.zeros(n, c, dtype=torch.float64, device=device)),
                     ("random", V_random), ("warm", V_warm)):
        t_fast, v_fast = best_of(args.repeats, lambda V0=V0: fast(V0))
        t_lit, v_lit = best_of(args.repeats,
                               lambda V0=V0: update_codes_literal(V0, U, S, U_bar, args.gamma))
        if device.type == "cuda":
            torch.cuda.synchronize()
        same = torch.equal(v_fast, v_lit)
        print(f"{name:<8} {t_fast:9.4f} {t_lit:10.4f} {t_lit / t_fast:6.1f}x "
              f"{(t_lit + t_build) / t_fast:8.1f}x  {same}")
    print(f"building the explicit S ({m:,} x {n:,} float64, {S.numel() * 8 / 2**20:,.0f} MiB): "
          f"{t_build:.3f} s (not in 'literal s'; '+build S' includes it)")


if __name__ == "__main__":
    main()
