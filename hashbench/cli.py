"""The ``hashbench`` command line: parses options, calls the library, formats output.

Exit codes: 0 success; 1 a trial failed or a data problem; 2 bad usage (unknown names,
malformed options, invalid protocol files); 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from hashbench.errors import HashbenchError, UsageError, interruption_name, os_error_line

# ---------------------------------------------------------------- option parsing


def parse_int_list(text: str, what: str, minimum: int) -> list[int]:
    """``"12,24,32"`` -> [12, 24, 32]; empty items, non-integers and small values are errors."""
    items = text.split(",")
    values: list[int] = []
    for item in items:
        item = item.strip()
        if not item:
            raise UsageError(f"--{what} {text!r}: empty entry (expected e.g. 12,24,32)")
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"--{what} {text!r}: {item!r} is not an integer") from None
        if value < minimum:
            raise UsageError(f"--{what} {text!r}: {value} is below the minimum of {minimum}")
        if value not in values:
            values.append(value)
    return values


def parse_value(raw: str) -> Any:
    """A command-line value: a Python literal (``30``, ``0.5``, ``True``, ``None``, ``(1, 2)``),
    ``true`` / ``false`` in any case as the flags they say (the form the store and the report
    print), else the text itself."""
    if raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_assignments(items: list[str], option: str, example: str) -> dict[str, Any]:
    """``["a.b=5", "c=x"]`` -> {"a.b": 5, "c": "x"} (values parsed as Python literals if possible)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
        out[key.strip()] = parse_value(raw)
    return out


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["itq.n_iter=30"]`` -> {"itq": {"n_iter": 30}} (values as :func:`parse_value`)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise UsageError(f"--param {item!r}: expected METHOD.NAME=VALUE, e.g. itq.n_iter=30")
        out.setdefault(method.strip().lower(), {})[name.strip()] = parse_value(raw)
    return out


# ---------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    """Methods (metadata read without importing them: no torch), protocols and datasets."""
    import json

    from hashbench import catalog, datasets
    from hashbench.protocol import builtin_protocols

    methods = catalog.entries()
    protocols = builtin_protocols()
    if args.json:
        print(json.dumps({
            "methods": [{"name": name, "title": e.meta.title, "citation": e.meta.citation,
                         "family": e.meta.family, "modalities": list(e.meta.modalities),
                         "supervised": e.meta.supervised, "asymmetric": e.meta.asymmetric,
                         "requires": e.meta.requires, "origin": e.origin} for name, e in methods.items()],
            "protocols": [{"name": name, "dataset": proto.dataset, "description": proto.description}
                          for name, proto in protocols.items()],
            "datasets": list(datasets.available()),
        }, indent=2))
        return 0
    print("Methods:")
    width = max((len(n) for n in methods), default=4)
    for name, entry in methods.items():
        m = entry.meta
        kind = ", ".join(filter(None, [
            m.family, "+".join(m.modalities), "supervised" if m.supervised else "unsupervised",
            "asymmetric" if m.asymmetric else "", "" if m.requires == "cpu" else m.requires,
        ]))
        where = f" [{entry.origin}]" if entry.origin.startswith("plugin") else ""
        print(f"  {name:<{width}}  {m.title} ({kind}){where}")
        print(f"  {'':<{width}}  {m.citation}")
    print("\nProtocols:")
    width = max((len(n) for n in protocols), default=4)
    for name, proto in protocols.items():
        print(f"  {name:<{width}}  dataset {proto.dataset}; {proto.description}")
    print("\nDatasets:")
    print("  " + ", ".join(datasets.available()))
    return 0


def _protocol(args: argparse.Namespace) -> Any:
    from hashbench.protocol import get_protocol, protocol_for_dataset

    if args.protocol:
        proto = get_protocol(args.protocol)
        if args.dataset and args.dataset != proto.dataset:
            raise UsageError(
                f"--protocol {proto.name} is defined on dataset {proto.dataset!r}, "
                f"not {args.dataset!r}"
            )
    else:
        proto = protocol_for_dataset(args.dataset or "digits")
    overrides = parse_assignments(args.protocol_set or [], "--protocol-set", "query.per_class=5")
    return proto.with_overrides(overrides).with_train_mode(args.train_mode)


def _data_options(args: argparse.Namespace) -> dict[str, str]:
    return {k: str(v) for k, v in parse_assignments(
        args.data_option or [], "--data-option", "lists=nuswide/database.txt").items()}


def cmd_run(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    if not args.quiet and sys.stderr.isatty():  # importing torch and loading the data take seconds
        print(f"loading methods ({args.methods}) and dataset "
              f"{args.dataset or args.protocol or 'digits'} ...", file=sys.stderr, flush=True)
    from hashbench import registry
    from hashbench.params import check_names, check_params

    bits = parse_int_list(args.bits, "bits", 1) if args.bits else None
    seeds = parse_int_list(args.seeds, "seeds", 0)
    params = parse_params(args.param or [])
    methods = registry.resolve(args.methods)
    for name in params:
        registry.get(name)  # unknown method in --param: did-you-mean error
    protocol = _protocol(args)
    for cls in methods:  # the same checks the planner makes, before the runner (and its imports) load
        check_names(cls, params.get(cls.meta.name, {}))
        for b in bits or protocol.default_bits:
            check_params(cls, params.get(cls.meta.name, {}), b)
    from hashbench.progress import Reporter
    from hashbench.runner import GridRunner, RunConfig

    config = RunConfig(
        methods=methods,
        protocol=protocol,
        bits=bits or list(protocol.default_bits),
        seeds=seeds,
        params=params,
        force=args.force,
        device=args.device,
        data_root=Path(args.data_root) if args.data_root else None,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        data_options=_data_options(args),
        pretrained=not args.no_pretrained,
        feature_image_size=args.feature_image_size,
        features=args.features,
        variants=args.variants,
        skip_incompatible=args.methods.strip().lower() == "all",
        command="hashbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    if args.dry_run:
        return _dry_run(config, args.quiet)
    executor, reporter = None, Reporter(quiet=args.quiet)
    if args.executor != "local":  # scale-out: hashbench.executors (README "Running on a cluster")
        from hashbench import executors
        from hashbench.tracking import resolve_tracking_uri

        executor = executors.from_options(args.executor, **_executor_options(args))
        executor.check_store(resolve_tracking_uri(args.tracking_uri))  # before anything is recorded
        reporter = executors.GridReporter(quiet=args.quiet)
    elif args.jobs is not None or args.ray_address is not None:
        raise UsageError("--jobs and --ray-address need --executor process or --executor ray")
    summary = GridRunner(config, reporter, executor).run()
    _summary(summary, time.perf_counter() - started, args)
    return 1 if summary.failed else 0


def _summary(summary: Any, seconds: float, args: argparse.Namespace) -> None:
    """The end of a run: counts and time, every flagged and failed trial, the next command."""
    from hashbench.progress import duration

    n = len(summary.outcomes)
    counts = ", ".join(f"{summary.count(s)} {s.lower()}" for s in ("FINISHED", "SKIPPED", "FAILED"))
    print(f"{n} trial{'' if n == 1 else 's'}: {counts} in {duration(seconds)}", file=sys.stderr)
    flagged = [o for o in summary.outcomes if o.status == "FINISHED" and o.flags]
    if flagged:
        print(f"{len(flagged)} flagged (runs.csv column flags after `hashbench report`):", file=sys.stderr)
        for outcome in flagged:
            flags = "; ".join(f"{k}: {v}" for k, v in outcome.flags.items())
            print(f"  FLAGGED {outcome.trial.label}: {flags}", file=sys.stderr)
    for outcome in summary.failed:
        print(f"  FAILED {outcome.trial.label}: {outcome.error}", file=sys.stderr)
    if summary.count("FINISHED") or summary.count("SKIPPED"):
        store = [] if not args.tracking_uri else ["--tracking-uri", args.tracking_uri]
        experiment = [] if args.experiment == "hashbench" else ["--experiment", args.experiment]
        command = " ".join(shlex.quote(a) for a in ["hashbench", "report", *store, *experiment])
        print(f"next: {command}", file=sys.stderr)


def _dry_run(config: Any, quiet: bool) -> int:
    """Print the planned grid (run or skip per trial, with an estimated time) and record nothing."""
    from hashbench.progress import Estimates, Reporter, duration
    from hashbench.runner import plan_grid

    config.dry_run = True
    plan = plan_grid(config, Reporter(quiet=quiet))
    estimates = Estimates.from_store(plan.store, config.protocol.dataset) if plan.store else Estimates()
    rows = [(o.trial.label, f"skip (finished: run {(o.run_id or '')[:8]})", "") for o in plan.skipped]
    total, unknown = 0.0, 0
    for spec in plan.pending:
        guess = estimates.of(spec.method, spec.bits)
        total += guess or 0.0
        unknown += guess is None
        rows.append((spec.label, "run", "?" if guess is None else f"~{duration(guess)}"))
    width = max((len(r[0]) for r in rows), default=5)
    print(f"dry run: protocol {config.protocol.name}, store {plan.context.tracking_uri}; nothing recorded")
    for label, action, estimate in rows:
        print(f"  {label:<{width}}  {action:<28}  {estimate}".rstrip())
    tail = f" (+ {unknown} trial(s) without an earlier run to estimate from)" if unknown else ""
    print(f"{len(plan.pending)} to run, {len(plan.skipped)} to skip; estimated {duration(total)}{tail}")
    return 0


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.executor == "process" and args.ray_address is not None:
        raise UsageError("--ray-address applies to --executor ray")
    if args.executor == "ray" and args.jobs is not None:
        raise UsageError("--jobs applies to --executor process (Ray schedules by the cluster's CPUs)")
    options: dict[str, Any] = {"max_retries": args.max_retries, "allow_local_store": args.allow_local_store}
    if args.executor == "process":
        options["jobs"] = args.jobs
    else:
        options["address"] = args.ray_address
    return options


def cmd_check(args: argparse.Namespace) -> int:
    from hashbench import conformance, registry

    cls = registry.get(args.method)
    results = conformance.run_checks(cls)
    print(conformance.render(cls, results))
    return 0 if all(r.ok for r in results) else 1


def cmd_new_method(args: argparse.Namespace) -> int:
    from hashbench import scaffold

    directory = Path(args.dir)
    written = scaffold.write(args.name, directory, Path(args.tests_dir) if args.tests_dir else None)
    print("wrote " + ", ".join(str(p) for p in written))
    print(f"next: fill in {written[0].name}, then `python -m pytest {written[1]}`"
          + ("" if directory.name == "methods" else
             "; to use it in runs, put it in methods/ or register it as a plugin (README, Adding a method)"))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    import json

    from hashbench.datasets import load
    from hashbench.datasets.check import check_dataset
    from hashbench.progress import Reporter

    dataset = load(args.dataset, Path(args.data_root) if args.data_root else None,
                   **_data_options(args))
    report = check_dataset(dataset, check_images=not args.skip_images,
                           progress=Reporter().progress)
    print(json.dumps(report.as_dict(), indent=2, default=list) if args.json else report.render())
    return 1 if report.problems else 0


def _same_width(query: Any, database: Any) -> tuple[Any, Any]:
    """Class-index files give one-hot rows as wide as their largest index: pad the narrower."""
    import numpy as np

    if query.shape[1] == database.shape[1]:
        return query, database
    if (query.sum(axis=1) == 1).all() and (database.sum(axis=1) == 1).all():
        width = max(query.shape[1], database.shape[1])
        pad = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (query, database)]
        return pad[0], pad[1]
    raise UsageError(f"query labels have {query.shape[1]} columns but database labels have "
                     f"{database.shape[1]}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from hashbench.evaluation import Conventions, evaluate, load_codes, load_labels

    bits = args.bits
    query = load_codes(args.query_codes, bits)
    database = load_codes(args.database_codes, bits)
    q_labels, db_labels = _same_width(load_labels(args.query_labels), load_labels(args.database_labels))
    for what, codes, labels, path in (("query", query, q_labels, args.query_labels),
                                      ("database", database, db_labels, args.database_labels)):
        if len(codes) != len(labels):
            raise UsageError(f"{path}: {len(labels)} label rows but the {what} codes have {len(codes)} rows")
    if args.topk is not None and args.topk < 1:
        raise UsageError(f"--topk must be a positive integer, got {args.topk} (leave it out for MAP over "
                         "the whole database)")
    conventions = Conventions(
        map_topk=args.topk, drop_zero_relevant=args.drop_zero_relevant,
        mapk_normalisation=args.mapk_normalisation,
        precision_ks=tuple(parse_int_list(args.precision_ks, "precision-ks", 1)),
        radius=args.radius,
    )
    result = evaluate(query, database, q_labels, db_labels, conventions, n_jobs=args.n_jobs)
    if args.json:
        print(json.dumps({"metrics": result.metrics, "flags": result.flags,
                          "conventions": conventions.as_tags(),
                          "curves": {k: v.to_dict(orient="list") for k, v in result.curves.items()}},
                         indent=2))
        return 0
    print(f"{len(query)} queries, {len(database)} database items, {query.shape[1]} bits")
    print(conventions.describe())
    width = max(len(k) for k in result.metrics)
    for name, value in result.metrics.items():
        text = f"{int(value)}" if float(value).is_integer() and abs(value) > 1 else f"{value:.6f}"
        print(f"  {name:<{width}}  {text}")
    for name, text in result.flags.items():
        print(f"  FLAG {name}: {text}")
    return 0


def _unknown(option: str, given: str, known: list[str]) -> UsageError:
    """``--metric 'mapp' is not in the store; did you mean 'map'? (recorded: ...)``."""
    from hashbench.registry import suggest

    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    return UsageError(f"{option} {given!r} is not in the store{suggest(given, known)} "
                      f"(recorded: {shown or 'nothing'})")


def _filter_runs(frame: Any, args: argparse.Namespace) -> Any:
    """Apply --dataset/--methods/--bits; a name the store does not hold is a usage error."""
    if args.dataset:
        wanted = [d.strip() for d in args.dataset.split(",") if d.strip()]
        known = sorted(set(frame["dataset"]) | set(frame["protocol"]))
        for name in wanted:
            if name not in known:
                raise _unknown("--dataset", name, known)
        frame = frame[frame["dataset"].isin(wanted) | frame["protocol"].isin(wanted)]
    if args.methods:
        wanted = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
        known = sorted(set(frame["method"]))
        for name in wanted:
            if name not in known:
                raise _unknown("--methods", name, known)
        frame = frame[frame["method"].isin(wanted)]
    if args.bits:
        wanted_bits = parse_int_list(args.bits, "bits", 1)
        known_bits = sorted(int(b) for b in frame["bits"].unique())
        for b in wanted_bits:
            if b not in known_bits:
                raise UsageError(f"--bits {b}: no run of that code length in the selection "
                                 f"(recorded: {', '.join(map(str, known_bits))})")
        frame = frame[frame["bits"].isin(wanted_bits)]
    return frame


def _check_metric(frame: Any, metric: str) -> None:
    """--metric must name a metric the selected runs recorded (``i2t.map`` style names
    included; a cross-modal store accepts the plain name for every task)."""
    from hashbench.tracking import metric_key

    recorded = sorted({c[len("metric."):] for c in frame.columns
                       if c.startswith("metric.") and not c.startswith("metric.curve.")
                       and frame[c].notna().any()})
    key = metric_key(metric)
    if key in recorded or any(r.endswith("." + key) for r in recorded):
        return
    names = sorted({r.replace("_at_", "@") for r in recorded})
    raise _unknown("--metric", metric, names)


def cmd_report(args: argparse.Namespace) -> int:
    from hashbench import report
    from hashbench.tracking import Store

    if args.topk is not None and args.figure_topk is None:
        args.figure_topk = args.topk
    store = Store(args.tracking_uri, args.experiment, create=False)
    frame = report.collect(store)
    if frame.empty:
        raise UsageError(f"no trials in experiment {args.experiment!r} of {store.uri}; "
                         "run `hashbench run` first (earlier reports are kept)")
    frame = _filter_runs(frame, args)
    _check_metric(frame, args.metric)
    tables = report.build_tables(frame, args.metric, args.table, paper=args.paper)
    if not tables:
        raise UsageError("no FINISHED trial matches the filters; nothing written (earlier reports are kept)")
    print(report.render(tables, frame, "text" if args.text else "markdown"))
    out = Path(args.out) if args.out else Path.cwd() / "results"
    figures, notes = {}, []
    if not args.no_figures:
        from hashbench import figures as figs

        figures = figs.all_figures(store, frame, out / "figures", args.curve_bits, args.figure_topk, notes)
    ui = store.uri.rstrip("/") if store.uri.startswith(("http://", "https://")) else None
    written = report.write(frame, tables, out, figures, ui, store.experiment_id)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written + list(figures.values())), file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parser


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=os.environ.get("HASHBENCH_DATA"), metavar="DIR",
                   help="where datasets live (default: $HASHBENCH_DATA, else ./data)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="dataset loader option, e.g. lists=FILE, images=FILE labels=FILE, "
                        "prefix_from=OLD prefix_to=NEW, path=FILE.npz (repeatable)")


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<cwd>/results/mlflow.db); a path ending in .db means SQLite")
    p.add_argument("--experiment", default="hashbench", metavar="NAME",
                   help="MLflow experiment name (default: hashbench)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hashbench",
        description="Benchmark learning-to-hash methods under one declared protocol; "
                    "every trial is recorded in MLflow.",
    )
    from hashbench import __version__

    parser.add_argument("--version", action="version", version=f"hashbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list methods, protocols and datasets",
                       description="List the registered methods (built-in and plugins) with "
                                   "family, modalities and citation; the protocols; the datasets.")
    p.add_argument("--json", action="store_true", help="print the lists as JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="run the conformance suite on a method (plugin authors)",
                       description="Run every conformance check (metadata, codes contract, "
                                   "fit/encode order, determinism under a seed, database codes) on "
                                   "a registered method, built-in or plugin, and list each result. "
                                   "Exit 1 when a check fails.")
    p.add_argument("method", help="method id (see `hashbench list`)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("new-method", help="write a method file to fill in and its conformance test",
                       description="Write <dir>/<name>.py (a working supervised linear method on "
                                   "features that passes the conformance suite: a template to fill "
                                   "in) and <tests-dir>/test_<name>.py (runs every conformance "
                                   "check on it). Nothing existing is overwritten.")
    p.add_argument("name", help="the new method's id (lower case, e.g. myhash)")
    p.add_argument("--dir", default=".", metavar="DIR",
                   help="where the method file goes (default: here; methods/ in a checkout)")
    p.add_argument("--tests-dir", metavar="DIR", help="where the test goes (default: --dir)")
    p.set_defaults(func=cmd_new_method)

    p = sub.add_parser(
        "run", help="train and evaluate methods x bits x seeds under a protocol",
        description="Run the grid methods x bits x seeds under one protocol, recording every "
                    "trial in MLflow. Trials that already finished (same run key) are skipped.",
    )
    p.add_argument("--methods", required=True, metavar="M[,M...]",
                   help="comma-separated method ids (see `hashbench list`), or 'all'")
    p.add_argument("--dataset", metavar="NAME",
                   help="dataset; its default protocol is used (default: digits)")
    p.add_argument("--protocol", metavar="NAME|FILE",
                   help="protocol name or path to a protocol TOML file (overrides the "
                        "dataset's default protocol)")
    p.add_argument("--bits", metavar="B[,B...]",
                   help="code lengths, e.g. 12,24,32,48 (default: the protocol's)")
    p.add_argument("--seeds", default="0", metavar="S[,S...]",
                   help="random seeds of the methods, e.g. 0,1,2 (default: 0); the split is "
                        "fixed by the protocol's own seed")
    p.add_argument("--train-mode", choices=["sampled", "full"],
                   help="train every method on a sampled set or on the whole database (the '-D' "
                        "setting), overriding the protocol's per-method regimes; recorded with "
                        "the runs (tag hashbench.train_mode_source). Default: the protocol's "
                        "regimes (e.g. adsh2018-*: ADSH and Lin:V on the whole database, the "
                        "others sampled)")
    p.add_argument("--variants", action="store_true",
                   help="also run the protocol's full-database '-D' variants (train.variants: "
                        "the ADSH paper's Table 2 rows and Fig. 3 runs) of the chosen methods")
    p.add_argument("--param", action="append", metavar="METHOD.NAME=VALUE",
                   help="override a hyper-parameter, e.g. --param itq.n_iter=30 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="rerun trials that already finished instead of skipping them")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="device for deep methods (default: auto = CUDA when available)")
    p.add_argument("--protocol-set", action="append", metavar="FIELD=VALUE",
                   help="override a protocol field, e.g. --protocol-set query.per_class=5 "
                        "(repeatable; recorded with the runs and changes the split hash)")
    _data_arguments(p)
    p.add_argument("--no-pretrained", action="store_true",
                   help="random (seeded) instead of ImageNet weights for feature extraction and "
                        "deep backbones; recorded with the runs")
    p.add_argument("--features", default="alexnet-fc7", metavar="alexnet-fc7|hog|pixels-pca",
                   help="feature extractor for shallow methods on image datasets (default: "
                        "alexnet-fc7, the paper's, needs ImageNet weights; hog and pixels-pca run "
                        "offline); cached, and recorded with the runs (it enters the run key)")
    p.add_argument("--feature-image-size", type=int, default=224, metavar="N",
                   help="side images are resized to before AlexNet fc7 feature extraction for "
                        "shallow methods on image datasets (default: 224, as in the paper)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--dry-run", action="store_true",
                   help="show the planned grid (run or skip per trial, estimated time from earlier "
                        "runs in the store) and record nothing")
    p.add_argument("--executor", choices=["local", "process", "ray"], default="local",
                   help="where trials run: local (in this process, one after the other; the "
                        "default), process (a pool of --jobs worker processes on this machine), ray "
                        "(one task per trial on a Ray cluster; pip install 'hashbench[ray]')")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="worker processes of --executor process (default: one per usable CPU)")
    p.add_argument("--ray-address", metavar="auto|HOST:PORT",
                   help="Ray cluster of --executor ray (default: start Ray locally for this run)")
    p.add_argument("--max-retries", type=int, default=1, metavar="N",
                   help="retries of a trial whose worker process was lost (killed, out of memory, "
                        "node gone), never of a trial that raised (default: 1)")
    p.add_argument("--allow-local-store", action="store_true",
                   help="let --executor ray write to a sqlite:/file: store (every worker must share "
                        "its path); otherwise it needs an MLflow server")
    _store_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="dataset utilities (data check)",
                       description="Dataset utilities.")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = data_sub.add_parser(
        "check", help="report counts, labels and problems of a dataset without training",
        description="Load a dataset and report its size, label shape and frequency, partitions "
                    "and every problem found (missing files, unreadable images, rows without "
                    "labels, NaN features). Exit code 1 when problems are found.")
    p.add_argument("dataset", help="dataset name (see `hashbench list`)")
    _data_arguments(p)
    p.add_argument("--skip-images", action="store_true",
                   help="do not open every image file (faster)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_data_check)

    p = sub.add_parser(
        "evaluate", help="evaluate codes made elsewhere (every metric)",
        description="Evaluate binary codes produced by any tool: Hamming ranking under the declared "
                    "conventions, every metric (MAP, P@K, radius precision, tie-aware MAP, code "
                    "statistics). Codes: .npy/.npz/.mat in {-1,+1}, {0,1} or packed bytes (with "
                    "--bits); labels: class indices or multi-hot rows (.npy/.npz/.mat/.txt/.csv).")
    p.add_argument("--query-codes", required=True, metavar="FILE", help="query codes")
    p.add_argument("--database-codes", required=True, metavar="FILE", help="database codes")
    p.add_argument("--query-labels", required=True, metavar="FILE", help="query labels")
    p.add_argument("--database-labels", required=True, metavar="FILE", help="database labels")
    p.add_argument("--bits", type=int, metavar="B", help="code length; required for packed bytes")
    p.add_argument("--topk", type=int, metavar="K", help="MAP@K instead of MAP over the whole database")
    p.add_argument("--mapk-normalisation", choices=["found", "min_k_r"], default="found",
                   help="MAP@K divides by the relevant items found in the top K (found, the ADSH "
                        "authors' convention) or by min(K, R)")
    p.add_argument("--drop-zero-relevant", action="store_true",
                   help="leave queries with no relevant item out of the means (default: AP 0, kept)")
    p.add_argument("--precision-ks", default="100,1000,5000", metavar="K[,K]",
                   help="K of the scalar precision@K metrics (default: 100,1000,5000)")
    p.add_argument("--radius", type=int, default=2, metavar="R",
                   help="Hamming radius of p_r/r_r (default: 2)")
    p.add_argument("--n-jobs", type=int, default=1, metavar="N",
                   help="threads over query chunks (default: 1)")
    p.add_argument("--json", action="store_true", help="print metrics, flags, conventions and curves as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "report", help="tables from the MLflow store",
        description="Turn the MLflow store into the ADSH paper's tables (mean ± std over seeds "
                    "per method x dataset x bits) and figures; print the tables and write "
                    "Markdown, LaTeX, CSV, a self-contained HTML page and figures (PNG, PDF, SVG).",
    )
    p.add_argument("--metric", default="map",
                   help="a metric the runs recorded: map, p@100, p@1000, p_r2, tie_aware_map, "
                        "train_seconds, ... (default: map; an unknown name lists the recorded ones)")
    p.add_argument("--table", choices=["auto", "1", "2", "all"], default="auto",
                   help="Table 1 (sampled training sets), Table 2 (full-database '-D' runs beside "
                        "ADSH), all rows in one table, or auto (Table 1, plus Table 2 if any)")
    p.add_argument("--paper", action="store_true",
                   help="add the ADSH paper's published MAP (Tables 1 and 2) and the difference")
    p.add_argument("--text", action="store_true", help="plain text instead of Markdown on stdout")
    p.add_argument("--dataset", metavar="NAME[,NAME]", help="only runs on these datasets or protocols")
    p.add_argument("--methods", metavar="M[,M...]", help="only these methods")
    p.add_argument("--bits", metavar="B[,B...]", help="only these code lengths")
    p.add_argument("--figure-topk", type=int, metavar="K",
                   help="K of the precision-versus-bits figure (default: 5000 when recorded)")
    p.add_argument("--topk", type=int, metavar="K", help=argparse.SUPPRESS)  # old name of --figure-topk
    p.add_argument("--curve-bits", type=int, metavar="B",
                   help="code length of the MAP-vs-time, P@K and PR figures (default: the largest)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: ./results): report.md, report.tex, runs.csv, "
                        "report.html, figures/")
    _store_options(p)
    p.set_defaults(func=cmd_report)
    return parser


def _warning_line(message: Any, category: Any, filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `hashbench`: the commands, not an argparse error
        parser.print_help()
        return 0
    warnings.showwarning = _warning_line
    # stdout carries results only: MLflow writes "View run ... at http://..." lines to stdout
    # whenever a run on a tracking server ends, unless this is set (an explicit "false" wins)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    previous = {}
    if threading.current_thread() is threading.main_thread():  # SIGTERM / SIGHUP as Ctrl-C
        from hashbench.tracking import on_interrupt  # held back during a store call

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_interrupt)
    try:
        return args.func(args)
    except HashbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk, a read-only folder, a file in the way: one line
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C: 130; SIGTERM 143, SIGHUP 129
        killed = getattr(exc, "killed_trial", None)
        done = (f"the running trial ({killed}) was marked KILLED" if killed
                else "no trial had started" if getattr(exc, "before_trials", False)
                else "running trials were marked KILLED")
        print(f"{interruption_name(exc)}: {done}; rerun the same command to finish the rest",
              file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
