"""Cost of the ADSH paper's shallow baselines at CIFAR-10 size, before and after issue 14.

For every shallow method of the paper's Tables 1 and 2 (Table 1, sampled training set:
ITQ, Lin:Lin, LFH, FastH, SDH, COSDISH, KADGH; Table 2, the whole database: Lin:V, LFH-D,
SDH-D, COSDISH-D, KADGH-D) this script times fit, query encoding, database encoding and
evaluation on synthetic class-structured features of CIFAR-10's shape (59,000 database
items + 1,000 queries, 4,096-d float32, 10 classes; sampled mode trains on 5,000 of the
database, full mode on all of it), at 12 and 48 bits, one seed, under two settings:

* ``before``: the reference paths (``BEFORE``): the numpy loops of Lin:Lin, Lin:V and FastH
  (``kernels="numpy"``) and boosted trees on all 4,096 input features, 255 bins, every row
  in every round, predicting with LightGBM's ``Booster.predict`` (``hashbench.forest``'s
  compiled trees give the same scores faster: ``BoostedTrees.predictor``);
* ``after``: the defaults after issue 14 (compiled kernels; LFH / COSDISH / FastH trees
  that sample ``min(1, 256 / d)`` of the features per tree (256 of 4,096),
  ``hashbench.oos.auto_feature_fraction``, with 63 bins, every row in every round (row
  bagging, ``hashbench.oos.auto_bagging_fraction``, stays an option: it failed the MAP
  tolerance on real data); compiled tree prediction; boosting on one thread when a tree
  reads under 4 million feature cells) plus ``AFTER``'s
  options (empty unless an option passed the MAP tolerance; ``--after-params`` tries others,
  e.g. ``lfh.tree_pca_dims=128``). The thread rule is not pinned in ``before``: with every
  feature and row a tree reads 20 million cells or more, so it runs on two threads as before.
  At ``--quick``'s 256 dims the trees take every feature in both settings, so the tree
  methods' before/after rows there differ only by machine noise.

Each trial runs in a fresh process (peak resident memory, ``ru_maxrss``, belongs to it).
Multi-hour "before" trials can be cut: ``--tree-rounds R`` trains R boosting rounds instead
of 200 and *projects* the tree time to 200 rounds (boosting seconds x 200 / R, counted by a
timer around every tree fit, plus the binning of the shared training set once, which does
not grow with the rounds); projected numbers are marked ``*``. The MAP of a cut trial is
the MAP of the cut model (marked too): compare MAPs only between uncut trials.

``--epochs E`` cuts Lin:Lin / Lin:V to E epochs and projects the fit time to the reference
maximum of 10 epochs (an upper bound: the window rule may stop earlier), marked ``*`` too.

Finally it prints the projected wall time of the whole CIFAR-10 Table 1 + Table 2 shallow
grid (4 bit lengths x 5 seeds): per method and mode, the 12- and 48-bit trial times
interpolated linearly in the bit count for 24 and 32 bits, times 5 seeds.

Synthetic data: 32 latent dims, class means N(0, I), within-class spread 1.5, lifted to
4,096 dims with unit noise and a ReLU (like fc7 features): hard enough that the MAP is
not saturated (LFH 12 bits about 0.8, not 1.0).

Runs so far (a shared 2-core machine at load 12-25): ``--quick`` completes (about 80 min
there); the CIFAR-size run does not fit such a machine's evening: the reference ("before")
trials alone are hours each (LFH-D trees, FastH, Lin:V with numpy loops). In issue 14's
second round (load 17-83, one trial killed by the machine's out-of-memory killer while other
jobs held 21 of 23 GB) even a 10-round CIFAR-size "after" LFH trial did not finish; the
tree settings were timed per boosting round instead (``hashbench/oos.py``).

Examples::

    .venv/bin/python benchmarks/paper_cost.py --quick                  # smoke check, ~minutes
    nice -n 10 .venv/bin/python benchmarks/paper_cost.py               # the full comparison
    .venv/bin/python benchmarks/paper_cost.py --methods lfh --modes full --bits 48 \\
        --settings before --tree-rounds 5                              # a projected trial
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

TABLE1 = ("itq", "linlin", "lfh", "fasth", "sdh", "cosdish", "kadgh")  # sampled training set
TABLE2 = ("linv", "lfh", "sdh", "cosdish", "kadgh")  # the whole database ("-D", Lin:V)
TREE_METHODS = {"lfh": "tree_rounds", "cosdish": "tree_rounds", "fasth": "n_rounds"}
REFERENCE_ROUNDS = 200
# "before": the reference (numpy) paths; "after": the defaults plus AFTER's options
# (the tree options are spelt out: the reference is every input feature per tree, whatever the
# methods' defaults are now)
_REFERENCE_TREES = {"tree_feature_fraction": 1.0, "tree_max_bin": 255}
BEFORE = {"linlin": {"kernels": "numpy"}, "linv": {"kernels": "numpy"},
          "fasth": {"kernels": "numpy"} | _REFERENCE_TREES,
          "lfh": _REFERENCE_TREES | {"tree_bagging_fraction": 1.0},
          "cosdish": _REFERENCE_TREES | {"tree_bagging_fraction": 1.0}}
AFTER: dict[str, dict[str, object]] = {}
EPOCH_METHODS = ("linlin", "linv")
REFERENCE_EPOCHS = 10
GRID_BITS = (12, 24, 32, 48)
GRID_SEEDS = 5
PAPER_SIZE = (59000, 1000, 5000, 4096)  # database, queries, sampled training set, dims


def synthetic(n: int, dim: int, classes: int = 10, seed: int = 0, latent: int = 32,
              spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Class-structured ReLU features (module docstring), float32, and one-hot labels."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    fixed = np.random.default_rng(12345)  # the same class structure for every draw
    means = fixed.standard_normal((classes, latent)).astype(np.float32)
    lift = (fixed.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 4096):  # in chunks: no n x d temporaries
        stop = min(start + 4096, n)
        z = means[target[start:stop]] + spread * rng.standard_normal((stop - start, latent),
                                                                     dtype=np.float32)
        x[start:stop] = z @ lift + rng.standard_normal((stop - start, dim), dtype=np.float32)
        np.maximum(x[start:stop], 0.0, out=x[start:stop])
    return x, np.eye(classes, dtype=np.uint8)[target]


def _tree_timer() -> dict[str, float]:
    """Count the seconds spent boosting (every LightGBM / XGBoost fit of BoostedTrees)."""
    from hashbench import oos

    spent = {"seconds": 0.0, "binning": 0.0}
    for name, key in (("_train", "seconds"), ("_fit_multi", "seconds"), ("_dataset", "binning")):
        original = getattr(oos.BoostedTrees, name, None)
        if original is None:
            continue

        def timed(self, *args, _original=original, _key=key, **kwargs):
            t0 = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                spent[_key] += time.perf_counter() - t0

        setattr(oos.BoostedTrees, name, timed)
    return spent


def run_trial(args: argparse.Namespace) -> dict[str, object]:
    from hashbench import registry
    from hashbench.api import RunContext
    from hashbench.datasets.base import Dataset
    from hashbench.evaluation import evaluate
    from hashbench.protocol import get_protocol, materialise
    from hashbench.runner import fit_and_encode

    spent = _tree_timer()
    if args.setting == "before":  # the reference predicts with LightGBM, one model at a time
        from hashbench import oos

        oos.BoostedTrees.predictor = "lightgbm"
    n_total = args.n_database + args.n_queries
    x, labels = synthetic(n_total, args.dim)
    protocol = get_protocol("adsh2018-cifar10").with_overrides(
        {"query.per_class": args.n_queries // 10, "train.per_class": args.n_train // 10}
    ).in_mode(args.mode)
    split = materialise(protocol, labels)
    dataset = Dataset(name="synthetic-cifar10", labels=labels, features=x)
    params = dict((AFTER if args.setting == "after" else BEFORE).get(args.method, {}))
    if args.setting == "after":
        for item in args.after_params:
            key, _, value = item.partition("=")
            name, _, field = key.partition(".")
            if name == args.method:
                params[field] = json.loads(value)
    rounds = REFERENCE_ROUNDS
    if args.method in TREE_METHODS and args.tree_rounds:
        params[TREE_METHODS[args.method]] = rounds = args.tree_rounds
    epochs = REFERENCE_EPOCHS
    if args.method in EPOCH_METHODS and args.epochs:
        params["max_epochs"] = epochs = args.epochs
    method = registry.get(args.method)(bits=args.bits, **params)
    t0 = time.perf_counter()
    query_codes, db_codes, timings = fit_and_encode(method, dataset, split, RunContext(seed=0))
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = evaluate(query_codes, db_codes, labels[split.query], labels[split.database],
                      map_only=True)
    timings["evaluate_seconds"] = time.perf_counter() - t0
    projected = rounds != REFERENCE_ROUNDS or epochs != REFERENCE_EPOCHS
    # binning the shared training set (inside _train, once per fit) does not grow with the
    # rounds: only the boosting time is projected
    boosting = max(spent["seconds"] - spent["binning"], 0.0)
    extra = boosting * (REFERENCE_ROUNDS / rounds - 1.0)
    if epochs != REFERENCE_EPOCHS:
        extra += timings["train_seconds"] * (REFERENCE_EPOCHS / epochs - 1.0)
    return {
        "method": args.method, "mode": args.mode, "bits": args.bits, "setting": args.setting,
        "params": {k: v for k, v in vars(method).items() if not k.startswith("_") and not k.endswith("_")},
        "train_seconds": timings["train_seconds"] + extra,
        "tree_seconds": spent["binning"] + boosting * REFERENCE_ROUNDS / rounds,
        "binning_seconds": spent["binning"],
        "encode_query_seconds": timings["encode_query_seconds"],
        "encode_database_seconds": timings["encode_database_seconds"],
        "evaluate_seconds": timings["evaluate_seconds"],
        "trial_seconds": wall + timings["evaluate_seconds"] + extra,
        "projected": projected, "rounds_run": rounds, "epochs_run": epochs,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "map": result.metrics["map"],
    }


def _trials(args: argparse.Namespace) -> list[tuple[str, str]]:
    methods = None if args.methods == "all" else set(args.methods.split(","))
    out = []
    for mode, table in (("sampled", TABLE1), ("full", TABLE2)):
        if mode not in args.modes.split(","):
            continue
        out += [(m, mode) for m in table if methods is None or m in methods]
    return out


def summary_table(rows: list[dict[str, object]]) -> str:
    """Per method, mode and bit count: trial seconds before and after, their ratio, peak
    memory and MAP of both settings (``*``: projected time / cut model, as in the log)."""
    cells: dict[tuple[str, str, int], dict[str, dict[str, object]]] = {}
    for r in rows:
        cells.setdefault((str(r["method"]), str(r["mode"]), int(r["bits"])), {})[str(r["setting"])] = r
    lines = ["| method | mode | bits | before s | after s | before/after | peak MiB before / after "
             "| MAP before | MAP after |", "|---|---|---|---|---|---|---|---|---|"]

    def cell(r: dict[str, object] | None, key: str, fmt: str) -> str:
        if r is None:
            return "-"
        return format(float(r[key]), fmt) + ("*" if r["projected"] and key != "peak_mib" else "")

    for (method, mode, bits), by in cells.items():
        b, a = by.get("before"), by.get("after")
        ratio = (f"{float(b['trial_seconds']) / float(a['trial_seconds']):.1f}x"
                 if b is not None and a is not None and float(a["trial_seconds"]) > 0 else "-")
        lines.append(f"| {method} | {mode} | {bits} | {cell(b, 'trial_seconds', '.1f')} | "
                     f"{cell(a, 'trial_seconds', '.1f')} | {ratio} | {cell(b, 'peak_mib', '.0f')} / "
                     f"{cell(a, 'peak_mib', '.0f')} | {cell(b, 'map', '.4f')} | {cell(a, 'map', '.4f')} |")
    return "\n".join(lines)


def _row_key(row: dict[str, object]) -> tuple[str, str, int, str]:
    return str(row["method"]), str(row["mode"]), int(row["bits"]), str(row["setting"])


def merge_rows(rows: list[dict[str, object]],
               newer: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rows`` with ``newer`` added; a newer row replaces an older one with the same method,
    mode, bits and setting (the order of first appearance is kept)."""
    merged = {_row_key(r): r for r in rows}
    for row in newer:
        merged[_row_key(row)] = row
    return list(merged.values())


def unchanged_as_before(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rows`` plus, for every "after" row of a method that ``BEFORE`` does not list (its
    reference setting is its default: ITQ, SDH, KADGH) and that has no "before" row at those
    coordinates, the same row as its "before" (``"unchanged": True``), so the grid projections
    of both settings cover the same trials."""
    have = {_row_key(r) for r in rows}
    out = list(rows)
    for row in rows:
        if (row["setting"] == "after" and row["method"] not in BEFORE
                and _row_key(dict(row, setting="before")) not in have):
            out.append(dict(row, setting="before", unchanged=True))
            have.add(_row_key(out[-1]))
    return out


def _read_rows(path: str) -> list[dict[str, object]]:
    try:
        with open(path) as f:
            rows = json.load(f)
        for row in rows:
            _row_key(row)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"paper_cost.py: --merge {path}: not a --json file of this script ({exc})") from None
    return rows


def complete_pairs(rows: list[dict[str, object]], setting: str) -> set[tuple[str, str]]:
    """The (method, mode) pairs with rows at two or more bit lengths in ``setting``."""
    lengths: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        if r["setting"] == setting:
            lengths.setdefault((str(r["method"]), str(r["mode"])), set()).add(int(r["bits"]))
    return {pair for pair, bits in lengths.items() if len(bits) >= 2}


def _grid_hours(rows: list[dict[str, object]], setting: str,
                pairs: set[tuple[str, str]] | None = None) -> float | None:
    """Projected hours of the 4-bit-length x 5-seed grid from the 12- and 48-bit trials
    (of the (method, mode) ``pairs`` only, if given)."""
    by_key: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        if r["setting"] == setting and (pairs is None or (r["method"], r["mode"]) in pairs):
            by_key.setdefault((r["method"], r["mode"]), {})[int(r["bits"])] = float(r["trial_seconds"])
    if not by_key:
        return None
    total = 0.0
    for times in by_key.values():
        if len(times) < 2:
            return None
        (b0, t0), (b1, t1) = sorted(times.items())[0], sorted(times.items())[-1]
        for bits in GRID_BITS:
            total += t0 + (t1 - t0) * (bits - b0) / max(b1 - b0, 1)
    return total * GRID_SEEDS / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="all",
                        help="comma-separated, 'all', or 'none' (with --merge: only table the "
                             "earlier rows)")
    parser.add_argument("--modes", default="sampled,full")
    parser.add_argument("--bits", default="12,48")
    parser.add_argument("--settings", default="before,after")
    parser.add_argument("--n-database", type=int, default=59000)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--tree-rounds", type=int, default=0,
                        help="boosting rounds to run (0: the reference 200); time projected to 200")
    parser.add_argument("--epochs", type=int, default=0,
                        help="Lin:Lin / Lin:V epochs to run (0: up to the reference 10); fit time "
                             "projected to 10")
    parser.add_argument("--after-params", action="append", default=[],
                        help="METHOD.PARAM=JSON added to the 'after' setting (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 database items, 200 queries, 500 training points, 256 dims, "
                             "20 tree rounds, 2 Lin:Lin / Lin:V epochs")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--merge", action="append", default=[], metavar="JSON",
                        help="rows of earlier runs (their --json files) to table and project "
                             "with this run's; a row of this run, or of a later file, replaces "
                             "one with the same method, mode, bits and setting (repeatable)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n_database, args.n_queries, args.n_train, args.dim = 2000, 200, 500, 256
        args.tree_rounds = args.tree_rounds or 20
        args.epochs = args.epochs or 2
    if args.worker:
        args.method, args.mode, bits, args.setting = args.worker
        args.bits = int(bits)
        print(json.dumps(run_trial(args), default=str))
        return
    print(f"synthetic {args.n_database} + {args.n_queries} x {args.dim}, train {args.n_train} "
          f"(sampled) / all (full); {os.cpu_count()} CPUs", flush=True)
    rows = []
    for path in args.merge:
        rows = merge_rows(rows, _read_rows(path))
    fresh: list[dict[str, object]] = []
    for method, mode in _trials(args):
        for bits in args.bits.split(","):
            for setting in args.settings.split(","):
                cmd = [sys.executable, __file__, "--worker", method, mode, bits, setting,
                       "--n-database", str(args.n_database), "--n-queries", str(args.n_queries),
                       "--n-train", str(args.n_train), "--dim", str(args.dim),
                       "--tree-rounds", str(args.tree_rounds), "--epochs", str(args.epochs)]
                cmd += [f"--after-params={item}" for item in args.after_params]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    print(f"{method} {mode} {bits} {setting}: FAILED\n{out.stderr[-1500:]}", flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                fresh.append(row)
                mark = "*" if row["projected"] else ""
                print(f"{method:8s} {mode:7s} {bits:>2s} {setting:6s} "
                      f"trial {row['trial_seconds']:8.1f}s{mark} (fit {row['train_seconds']:.1f}{mark}, "
                      f"trees {row['tree_seconds']:.1f}{mark}, query {row['encode_query_seconds']:.1f}, "
                      f"db {row['encode_database_seconds']:.1f}, eval {row['evaluate_seconds']:.1f}) "
                      f"peak {row['peak_mib']:.0f} MiB  MAP {row['map']:.4f}{mark}", flush=True)
    rows = unchanged_as_before(merge_rows(rows, fresh))
    print(summary_table(rows), flush=True)
    reduced = " (at this run's reduced size, not CIFAR-10's)" if (
        args.n_database, args.n_queries, args.n_train, args.dim) != PAPER_SIZE else ""
    grid = f"projected grid (Tables 1+2 shallow, {len(GRID_BITS)} bit lengths x {GRID_SEEDS} seeds)"
    for setting in ("before", "after"):
        hours = _grid_hours(rows, setting)
        if hours is not None:
            print(f"{grid}, {setting}: {hours:.2f} h{reduced}", flush=True)
    both = complete_pairs(rows, "before") & complete_pairs(rows, "after")
    if both:
        before, after = _grid_hours(rows, "before", both), _grid_hours(rows, "after", both)
        names = ", ".join(f"{m}{'-D' if mode == 'full' and m != 'linv' else ''}"
                          for m, mode in sorted(both, key=lambda p: (p[1] != "sampled", p[0])))
        print(f"{grid} over the {len(both)} trials measured in both settings ({names}): "
              f"before {before:.2f} h, after {after:.2f} h, {before / after:.1f}x{reduced}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fresh, f, indent=1, default=str)


if __name__ == "__main__":
    main()
