"""Evaluator speed: hashbench's ``evaluate`` against the per-query reference loop.

The reference is the straightforward loop of the ADSH / DPSH / DeepHash evaluation code,
run in this process on the same data: for each query, Hamming distances to the whole database
(``0.5 * (bits - q . B^T)`` on float32 codes), relevance from a label product, a stable argsort,
then precision at each relevant rank. Both give MAP (or MAP@K) and the script checks they agree.

Random codes and labels at the sizes of the ADSH protocols:

- CIFAR-10: 1,000 queries x 59,000 database items, 10 classes (single label), MAP over all;
- NUS-WIDE: 2,100 x 193,734, 21 labels (multi-label), MAP@5000;
- MS-COCO: 5,000 x 117,218, 80 labels (multi-label), MAP@5000;

at 12 and 48 bits. Printed per case: reference seconds (measured or extrapolated), hashbench
seconds for ``map_only=True`` and for the full metric set, with ``n_jobs=1`` and ``n_jobs=2``,
the speed-up ratios of wall-clock time and of CPU time (CPU time is the fairer single-thread
comparison on a shared machine; with ``n_jobs=2`` the wall-clock ratio is the one that counts),
and the peak memory traced by ``tracemalloc`` during one ``evaluate`` call
(numpy reports its buffers to tracemalloc; the compiled ranking pass allocates nothing itself:
its scratch is numpy arrays made by the caller, so the trace sees everything).

Usage: ``python benchmarks/eval_speed.py [--quick] [--cases cifar10,nuswide,coco] [--bits 12,48]``.
Runs come in ``--rounds`` interleaved rounds (reference, then every hashbench setting) so that
both sides see the same background load; each keeps its fastest round. ``--quick`` runs the
reference loop on one block of 20 queries per round (cycling over the first 100 queries) and
extrapolates the fastest block's time per query to the full query set (the output says so); the
MAP check is then made on those queries.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashbench.evaluation import Conventions, evaluate  # noqa: E402

CASES = {
    "cifar10": dict(n_query=1000, n_db=59000, n_labels=10, multi=False, map_topk=None),
    "nuswide": dict(n_query=2100, n_db=193734, n_labels=21, multi=True, map_topk=5000),
    "coco": dict(n_query=5000, n_db=117218, n_labels=80, multi=True, map_topk=5000),
}


def make_data(n_query: int, n_db: int, n_labels: int, multi: bool, bits: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.choice(np.array([-1, 1], np.int8), size=(n_query, bits))
    d = rng.choice(np.array([-1, 1], np.int8), size=(n_db, bits))
    if multi:
        # about 2-3 labels per item, at least one
        ql = (rng.random((n_query, n_labels)) < 2.5 / n_labels).astype(np.int8)
        dl = (rng.random((n_db, n_labels)) < 2.5 / n_labels).astype(np.int8)
        ql[np.arange(n_query), rng.integers(0, n_labels, n_query)] = 1
        dl[np.arange(n_db), rng.integers(0, n_labels, n_db)] = 1
    else:
        ql = np.eye(n_labels, dtype=np.int8)[rng.integers(0, n_labels, n_query)]
        dl = np.eye(n_labels, dtype=np.int8)[rng.integers(0, n_labels, n_db)]
    return q, d, ql, dl


def reference_map(q_codes, db_codes, q_labels, db_labels, topk: int | None) -> np.ndarray:
    """The per-query loop of the ADSH/DPSH/DeepHash evaluation code (stable argsort)."""
    qB, rB = q_codes.astype(np.float32), db_codes.astype(np.float32)
    qL, rL = q_labels.astype(np.float32), db_labels.astype(np.float32)
    bits = qB.shape[1]
    aps = np.zeros(qB.shape[0])
    for i in range(qB.shape[0]):
        gnd = (qL[i] @ rL.T > 0).astype(np.float32)
        hamm = 0.5 * (bits - qB[i] @ rB.T)
        ind = np.argsort(hamm, kind="stable")
        gnd = gnd[ind]
        if topk is not None:
            gnd = gnd[:topk]
        tsum = int(gnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(gnd == 1)).ravel() + 1.0
        aps[i] = np.mean(count / tindex)
    return aps


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def peak_memory(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


SETTINGS = [(True, 1), (True, 2), (False, 1), (False, 2)]  # (map_only, n_jobs)


def run_case(name: str, bits: int, quick: bool, rounds: int) -> None:
    spec = CASES[name]
    q, d, ql, dl = make_data(spec["n_query"], spec["n_db"], spec["n_labels"], spec["multi"], bits)
    conv = Conventions(map_topk=spec["map_topk"])
    print(f"\n== {name} {len(q)}x{len(d)} {bits} bits, {conv.map_name}", flush=True)

    # Rounds interleave the reference and hashbench so both see the same background load; each
    # keeps its fastest round. Quick mode: one block of 20 reference queries per round (the
    # first 100 queries are cycled), its time per query extrapolated to all queries.
    ref_wall = ref_cpu = float("inf")
    ref_aps: dict[int, np.ndarray] = {}
    best = {s: [float("inf"), float("inf"), None] for s in SETTINGS}
    for r in range(rounds):
        if quick:
            s0 = (r * 20) % min(100, len(q))
            aps, t, c = timed(lambda s0=s0: reference_map(q[s0:s0 + 20], d, ql[s0:s0 + 20], dl,
                                                          spec["map_topk"]))
            ref_aps.update({s0 + i: a for i, a in enumerate(aps)})
            ref_wall, ref_cpu = min(ref_wall, t / 20 * len(q)), min(ref_cpu, c / 20 * len(q))
        elif r == 0:
            aps, ref_wall, ref_cpu = timed(lambda: reference_map(q, d, ql, dl, spec["map_topk"]))
            ref_aps.update(enumerate(aps))
        for map_only, n_jobs in SETTINGS:
            res, t, c = timed(lambda mo=map_only, nj=n_jobs: evaluate(q, d, ql, dl, conv, map_only=mo,
                                                                      n_jobs=nj))
            slot = best[(map_only, n_jobs)]
            slot[0], slot[1], slot[2] = min(slot[0], t), min(slot[1], c), res
    how = "extrapolated from blocks of 20 queries" if quick else "measured on every query"
    print(f"reference loop: wall {ref_wall:8.2f} s, cpu {ref_cpu:8.2f} s ({how}; "
          f"{ref_wall / len(q) * 1e3:.2f} ms/query)")
    checked = np.array(sorted(ref_aps))
    expected = np.array([ref_aps[i] for i in checked])
    for (map_only, n_jobs), (t, c, res) in best.items():
        err = float(np.abs(res.per_query["ap"][checked] - expected).max())
        what = "map only " if map_only else "full set "
        print(f"hashbench {what} n_jobs={n_jobs}: wall {t:6.2f} s (ratio {ref_wall / t:5.1f}x), "
              f"cpu {c:6.2f} s (ratio {ref_cpu / c:5.1f}x)  map={res.metrics['map']:.6f}  "
              f"max |AP - ref| over {checked.size} queries = {err:.1e}", flush=True)
        if err > 1e-9:
            raise SystemExit(f"MISMATCH against the reference loop ({err})")
    peak = peak_memory(lambda: evaluate(q, d, ql, dl, conv))
    peak2 = peak_memory(lambda: evaluate(q, d, ql, dl, conv, n_jobs=2))
    print(f"peak traced memory of one full evaluate: {peak:.0f} MiB (n_jobs=1), {peak2:.0f} MiB (n_jobs=2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="reference loop on 100 queries only, time extrapolated")
    parser.add_argument("--cases", default="cifar10,nuswide,coco")
    parser.add_argument("--bits", default="12,48")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of reference and hashbench runs (best is kept)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    for name in args.cases.split(","):
        for bits in (int(b) for b in args.bits.split(",")):
            run_case(name.strip(), bits, args.quick, args.rounds)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
