"""Exact Hamming top-k search speed over packed codes.

Times :func:`hashbench.evaluation.hamming_topk` (k = 100 and 5000) over 59,000 and 1,000,000
random packed codes (12 and 48 bits by default) and prints queries per second. When faiss is
importable, ``faiss.IndexBinaryFlat`` runs on the same packed bytes (its width is 8 x bytes per
code; the pad bits are 0 on both sides, so distances are unchanged), with as many OpenMP threads
as hashbench gets ``--n-jobs``, and the results are checked against ours: faiss orders ties as
it likes, so the check is that both return the same sorted distance lists, and the same items
wherever the distance is below the k-th distance (at the k-th distance any tied item is a
correct answer). Without faiss, a straightforward baseline runs instead: per query, distances
via XOR + popcount and a full stable argsort (on a subsample of queries).

Usage: ``python benchmarks/search_speed.py [--queries 200] [--bits 12,48] [--sizes 59000,1000000]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashbench.evaluation import hamming_topk, pack_codes  # noqa: E402
from hashbench.evaluation.search import as_words, hamming_distances  # noqa: E402


def baseline_topk(q_packed: np.ndarray, db_packed: np.ndarray, k: int) -> np.ndarray:
    """Per query: all distances, full stable argsort, first k."""
    qw, dw = as_words(q_packed), as_words(db_packed)
    out = np.empty((len(qw), k), np.int64)
    for i in range(len(qw)):
        dist = hamming_distances(qw[i:i + 1], dw)[0]
        out[i] = np.argsort(dist, kind="stable")[:k]
    return out


def check_against(ours_idx, ours_dist, other_idx, other_dist) -> None:
    if not np.array_equal(np.sort(other_dist, axis=1), ours_dist):
        raise SystemExit("MISMATCH: distance lists differ")
    for i in range(len(ours_idx)):
        kth = ours_dist[i, -1]
        a = set(ours_idx[i][ours_dist[i] < kth].tolist())
        b = set(other_idx[i][other_dist[i] < kth].tolist())
        if a != b:
            raise SystemExit(f"MISMATCH: query {i} differs below the k-th distance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--bits", default="12,48")
    parser.add_argument("--sizes", default="59000,1000000")
    parser.add_argument("--ks", default="100,5000")
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    try:
        import faiss  # type: ignore[import-not-found]

        faiss.omp_set_num_threads(args.n_jobs)  # same thread count on both sides
    except ImportError:
        faiss = None
        print("faiss not importable: comparing with a per-query full stable argsort instead")
    rng = np.random.default_rng(0)
    for bits in (int(b) for b in args.bits.split(",")):
        for n_db in (int(s) for s in args.sizes.split(",")):
            q = pack_codes(rng.choice(np.array([-1, 1], np.int8), size=(args.queries, bits)))
            db = pack_codes(rng.choice(np.array([-1, 1], np.int8), size=(n_db, bits)))
            for k in (int(x) for x in args.ks.split(",")):
                t0 = time.perf_counter()
                idx, dist = hamming_topk(q, db, k, bits=bits, n_jobs=args.n_jobs)
                t = time.perf_counter() - t0
                line = f"{bits:3d} bits  n={n_db:>9,}  k={k:>5}: hashbench {len(q) / t:9.1f} queries/s"
                if faiss is not None:
                    index = faiss.IndexBinaryFlat(8 * db.shape[1])
                    index.add(db)
                    t0 = time.perf_counter()
                    f_dist, f_idx = index.search(q, k)
                    tf = time.perf_counter() - t0
                    check_against(idx, dist, f_idx, f_dist)
                    line += f"   faiss IndexBinaryFlat {len(q) / tf:9.1f} queries/s (same results)"
                else:
                    n_base = min(len(q), 20)
                    t0 = time.perf_counter()
                    base = baseline_topk(q[:n_base], db, min(k, n_db))
                    tb = (time.perf_counter() - t0) / n_base
                    if not np.array_equal(base, idx[:n_base]):
                        raise SystemExit("MISMATCH against the full-argsort baseline")
                    line += f"   full argsort {1 / tb:9.1f} queries/s (identical indices, {n_base} queries)"
                print(line, flush=True)


if __name__ == "__main__":
    main()
