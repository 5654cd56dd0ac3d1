"""Reports: MLflow trial records -> pandas -> the ADSH paper's tables (and figures).

The report reads only the store (no recomputation), so it works on a store produced on
another machine.

Tables. Rows are methods (their display names: ``LFH-D`` for LFH trained on the full
database), column groups are protocols (datasets), columns are bit lengths; a cell is
the mean ± population std over seeds of the chosen metric, with the number of seeds.
Table 1 holds the runs trained on a sampled set (and methods such as ADSH that always
learn the database codes); Table 2 the full-database runs beside ADSH. Comparability is
decided by the evaluation split hash (query + database indices) and the evaluation
conventions recorded with every run: runs that differ in either are never averaged
together, they go to separate tables whose note says why. When a trial was rerun with
``--force``, the newest FINISHED run of each run key counts; when a method's revision changed
(``MethodMeta.revision``) and a trial's coordinates (data, split, bits, seed) were run again,
only the newest revision's runs there count, whatever their settings. Cells whose runs
collapsed (few distinct database codes) or failed are flagged.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from hashbench.tracking import CONVENTION_PREFIX, Store, metric_key

LOWER_IS_BETTER_SUFFIX = "seconds"

SIGNIFICANCE_LEVEL = 0.05


class Cell(NamedTuple):
    """One table cell: the mean and sample standard deviation (ddof=1; NaN for one seed) of a
    metric over seeds, the number of seeds, notes (collapsed / failed runs), the per-seed
    values behind it and the MLflow run ids they came from."""

    mean: float
    std: float
    n: int
    notes: str
    values: tuple[float, ...] = ()
    run_ids: tuple[str, ...] = ()


def collect(store: Store) -> pd.DataFrame:
    """One row per trial run (every status): its :class:`~hashbench.tracking.TrialRecord`
    fields of interest and all metrics (``metric.<name>``)."""
    rows = []
    for record in store.trial_records():
        conventions = "; ".join(f"{k[len(CONVENTION_PREFIX):]}={v}"
                                for k, v in sorted(record.conventions.items()))
        row = {
            "run_id": record.run_id,
            "status": record.status,
            "start_time": record.start_time,
            "run_key": record.run_key,
            "method": record.method,
            "title": record.title,
            "display": record.display,
            "variant": record.variant,
            "protocol": record.protocol,
            "dataset": record.dataset,
            "train_mode": record.train_mode,
            "bits": record.bits,
            "seed": record.seed,
            "split_sha256": record.split_sha256,
            "eval_split_sha256": record.eval_split_sha256,
            "data": data_label(record.dataset, record.data_tags),
            "conventions": conventions,
            "eval_description": record.eval_description,
            "version": record.version,
            "git_sha": record.git_sha,
            "device": record.device,
            "flags": "; ".join(f"{k.split('.')[-1]}: {v}" for k, v in sorted(record.flags.items())),
            "collapsed": any(k == "collapsed" or k.endswith(".collapsed") for k in record.flags),
            "error": record.error,
            "setting": json.dumps(record.hyper_parameters, sort_keys=True),
            "revision": record.method_revision,
        }
        row.update({f"metric.{k}": v for k, v in record.metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["protocol", "method", "bits", "seed", "start_time"]).reset_index(drop=True)
    return _label_settings(frame)


def _label_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs of one method that differ in more than the seed never share a cell: under each
    protocol, the method's setting at its registered defaults (else its most frequent one)
    keeps the plain name and every other setting gets its own row named after what differs,
    e.g. ``ITQ (n_iter=5)``."""
    for _, runs in frame.groupby(["protocol", "display"], sort=False):
        if runs["setting"].nunique() < 2:
            continue
        method = str(runs["method"].iloc[0])  # runs from before irrelevant params were left out
        frame.loc[runs.index, "setting"] = runs["setting"].map(  # share a setting with the runs after
            lambda s, m=method: json.dumps(_applicable(m, json.loads(s)), sort_keys=True))
        runs = frame.loc[runs.index]
        counts = runs["setting"].value_counts()
        if len(counts) < 2:
            continue
        defaults = _default_setting(str(runs["method"].iloc[0]))
        at_defaults = [s for s in counts.index
                       if defaults and all(defaults.get(k, v) == v for k, v in json.loads(s).items())]
        main = (at_defaults or sorted(counts.index, key=lambda s: (-counts[s], s)))[0]
        base = json.loads(main)
        for setting in counts.index:
            if setting == main:
                continue
            hp = json.loads(setting)
            diff = {k: hp.get(k, "-") for k in sorted(set(hp) | set(base)) if hp.get(k) != base.get(k)}
            label = ", ".join(f"{k}={v}" for k, v in diff.items())
            rows = runs.index[runs["setting"] == setting]
            frame.loc[rows, "display"] = frame.loc[rows, "display"] + f" ({label})"
    return frame


@functools.cache
def _method_class(method: str) -> type | None:
    """The registered class of ``method``, or None (a plugin that is not installed here)."""
    from . import registry

    try:
        return registry.get(method)
    except Exception:  # noqa: BLE001 - any failure to load a plugin means "unknown here"
        return None


def _applicable(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The recorded hyper-parameters that apply to the run (``Hasher.applicable_params``)."""
    cls = _method_class(method)
    return cls.applicable_params(params) if cls is not None else dict(params)


def _default_setting(method: str) -> dict[str, str]:
    """The method's registered defaults as the store writes them (MLflow params are text),
    so that the plain row name means "at its defaults"; empty when the method is unknown."""
    from hashbench.params import defaults_of
    from hashbench.tracking import param_text

    cls = _method_class(method)
    if cls is None:  # a plugin that is not installed here: fall back to the most frequent setting
        return {}
    return {name: param_text(value) for name, value in defaults_of(cls).items() if name != "bits"}


# a trial's coordinates whatever the method's revision and settings: a newer revision's run at
# them makes the older revision's runs there obsolete (a revision may change a default too)
TRIAL_KEYS = ["method", "protocol", "data", "split_sha256", "eval_split_sha256", "conventions",
              "train_mode", "bits", "seed"]


def superseded(frame: pd.DataFrame, by: pd.DataFrame) -> pd.Series:
    """True for the rows of ``frame`` whose coordinates (``TRIAL_KEYS``: method, data, splits,
    conventions, training mode, bits, seed) have a run in ``by`` of a higher method revision
    (``MethodMeta.revision``, bumped when a method's behaviour changes), in any setting: runs of
    two revisions of a method are never compared in one table once the newer one has run there.
    A run that recorded no revision (0: before revisions were recorded) counts as revision 1:
    a run of a method whose behaviour has changed since (revision 2 or later) supersedes it,
    a run of a method never revised (revision 1) does not."""
    if frame.empty or "revision" not in frame or "revision" not in by:
        return pd.Series(False, index=frame.index)
    newest = (by.assign(revision=by["revision"].clip(lower=1))
              .groupby(TRIAL_KEYS, dropna=False)["revision"].max().rename("newest_revision"))
    merged = frame[TRIAL_KEYS + ["revision"]].join(newest, on=TRIAL_KEYS)
    return (merged["newest_revision"] > merged["revision"].clip(lower=1)).fillna(False).astype(bool)


def latest_finished(frame: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs only, the newest per run key; a run whose trial was rerun by a newer
    revision of its method is left out (:func:`superseded`)."""
    done = frame[frame["status"] == "FINISHED"]
    done = done[~superseded(done, done)]
    return done.sort_values("start_time").groupby("run_key", as_index=False).tail(1)


# ---------------------------------------------------------------- tables


@dataclass
class Group:
    """One column group: runs of one protocol sharing evaluation split and conventions."""

    protocol: str
    eval_split: str
    conventions: str
    description: str
    bits: list[int]
    cells: dict[tuple[str, int], Cell]
    provenance: dict[str, str]
    label: str = ""
    data: str = ""


@dataclass
class Table:
    """Rows (method display names) x column groups (protocols) x bits."""

    title: str
    metric: str
    groups: list[Group]
    rows: list[str]
    note: str = ""
    paper: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (display, protocol, bits)

    @property
    def higher_is_better(self) -> bool:
        return not self.metric.endswith(LOWER_IS_BETTER_SUFFIX)

    @property
    def decimals(self) -> int:
        """Digits after the point: 4 for MAP and precision, 1 for seconds."""
        return 1 if self.metric.endswith(LOWER_IS_BETTER_SUFFIX) else 4

    def best(self, group: Group, bits: int) -> str | None:
        values = {r: group.cells[(r, bits)][0] for r in self.rows
                  if (r, bits) in group.cells and not math.isnan(group.cells[(r, bits)][0])}
        if not values:
            return None
        pick = max if self.higher_is_better else min
        return pick(values, key=values.__getitem__)

    def mark(self, group: Group, bits: int, row: str) -> str:
        """``"best"`` for the best mean of the column, ``"tie"`` for a cell not significantly
        worse than it (:func:`not_significantly_worse`), else ``""``."""
        best = self.best(group, bits)
        if best is None or (row, bits) not in group.cells:
            return ""
        if row == best:
            return "best"
        worse = not_significantly_worse(group.cells[(best, bits)], group.cells[(row, bits)],
                                        self.higher_is_better)
        return "tie" if worse else ""


def not_significantly_worse(best: Cell, other: Cell, higher_is_better: bool = True,
                            alpha: float = SIGNIFICANCE_LEVEL) -> bool:
    """Whether ``other`` is not significantly worse than ``best``: a one-sided Welch's t-test
    over the seeds (unequal variances), H1 = best's mean is better, at level ``alpha``.

    t = (m_b - m_o) / sqrt(s_b^2/n_b + s_o^2/n_o) with sample variances s^2 and the
    Welch-Satterthwaite degrees of freedom. Cells with fewer than two seeds are never marked
    (there is no spread to test against); two zero-spread cells tie only when equal."""
    if best.n < 2 or other.n < 2 or math.isnan(other.mean):
        return False
    scale = 1e-9 * max(1.0, abs(best.mean))
    if best.std <= scale and other.std <= scale:  # no spread (deterministic methods)
        return abs(best.mean - other.mean) <= scale
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # near-identical seeds: scipy warns, the test still holds
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(best.values, other.values, equal_var=False,
                                 alternative="greater" if higher_is_better else "less")
    return bool(result.pvalue >= alpha)


def _cell(runs: pd.DataFrame, failed: pd.DataFrame, column: str) -> Cell:
    present = runs[runs[column].notna()] if column in runs else runs.iloc[:0]
    values = present[column].astype(float) if column in runs else pd.Series(dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan  # sample std over seeds
    notes = []
    collapsed = int(runs["collapsed"].sum())
    if collapsed:
        notes.append(f"{collapsed} collapsed")
    for status in ("FAILED", "KILLED"):
        count = int((failed["status"] == status).sum())
        if count:
            notes.append(f"{count} {status.lower()}")
    return Cell(mean, std, len(values), ", ".join(notes), tuple(values.tolist()),
                tuple(present["run_id"].tolist()))


def data_label(dataset: str, data_tags: dict[str, str]) -> str:
    """What a trial's inputs were, for labels: the dataset, and the feature extractor when
    the trial used one (``features.extractor``), e.g. ``cifar10, features hog(...)``."""
    extractor = data_tags.get("features.extractor", "")
    return f"{dataset}, features {extractor}" if extractor else dataset


def unfinished(frame: pd.DataFrame) -> pd.DataFrame:
    """FAILED and KILLED trials whose run key has no FINISHED run: the newest per key."""
    done = frame[frame["status"] == "FINISHED"]
    done_keys = set(done["run_key"])
    out = frame[frame["status"].isin(["FAILED", "KILLED"]) & ~frame["run_key"].isin(done_keys)]
    out = out[~superseded(out, done)]
    return out.sort_values("start_time").groupby("run_key", as_index=False).tail(1)


GROUP_KEYS = ["protocol", "data", "eval_split_sha256", "conventions"]


def _groups(frame: pd.DataFrame, metric: str) -> list[Group]:
    """Column groups: runs of one protocol on the same data (dataset and feature extractor),
    evaluation split and conventions. A cell notes the FAILED / KILLED trials of its row and
    bits that never finished; a cell with only such trials shows just that note."""
    column = f"metric.{metric_key(metric)}"
    done = latest_finished(frame)
    open_runs = unfinished(frame)
    groups = []
    for (protocol, data, split, conventions), runs in done.groupby(GROUP_KEYS, sort=True):
        failed = open_runs[(open_runs["protocol"] == protocol) & (open_runs["data"] == data)
                           & (open_runs["eval_split_sha256"] == split)]
        cells = {}
        keys = set(runs.groupby(["display", "bits"]).groups) | set(failed.groupby(["display", "bits"]).groups)
        for display, bits in sorted(keys):
            cell_runs = runs[(runs["display"] == display) & (runs["bits"] == bits)]
            cell_failed = failed[(failed["display"] == display) & (failed["bits"] == bits)]
            cells[(display, int(bits))] = _cell(cell_runs, cell_failed, column)
        groups.append(Group(
            protocol=protocol, eval_split=split, conventions=conventions,
            description=str(runs["eval_description"].iloc[0]),
            bits=sorted({b for _, b in cells}), cells=cells,
            provenance={
                "data": data,
                "hashbench": ", ".join(sorted(runs["version"].unique())),
                "git": ", ".join(sorted({_short_sha(s) for s in runs["git_sha"].unique()})),
                "evaluation split": split[:12],
                "device": ", ".join(sorted(runs["device"].unique())),
            },
            label=protocol,
            data=data,
        ))
    return groups


def _short_sha(sha: str) -> str:
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


def _explain(main: Group, other: Group) -> str:
    reasons = []
    if main.data != other.data:
        reasons.append(f"data {other.data} differs from {main.data}")
    if main.eval_split != other.eval_split:
        reasons.append(f"evaluation split {other.eval_split[:12]} differs from {main.eval_split[:12]}")
    if main.conventions != other.conventions:
        mine = dict(x.split("=", 1) for x in main.conventions.split("; ") if "=" in x)
        theirs = dict(x.split("=", 1) for x in other.conventions.split("; ") if "=" in x)
        diff = [f"{k}: {theirs.get(k, '-')} vs {mine.get(k, '-')}"
                for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        reasons.append("conventions differ (" + "; ".join(diff) + ")")
    return "; ".join(reasons)


def _table1_row(display: str, frame: pd.DataFrame) -> bool:
    runs = frame[frame["display"] == display]
    return bool((~runs["variant"].astype(bool)).all())


def _table2_row(display: str, frame: pd.DataFrame) -> bool:
    runs = frame[frame["display"] == display]
    return bool((runs["train_mode"] == "full").all())


def load_paper() -> pd.DataFrame:
    """The ADSH paper's Tables 1 and 2 (MAP), shipped as package data."""
    text = resources.files("hashbench").joinpath("data/adsh2018_tables.csv").read_text("utf-8")
    from io import StringIO

    return pd.read_csv(StringIO(text), comment="#")


TASK_TITLES = {"i2t": "I→T", "t2i": "T→I", "i2i": "I→I", "t2t": "T→T"}


def build_tables(frame: pd.DataFrame, metric: str = "map", which: str = "auto",
                 paper: bool = False) -> list[Table]:
    """Table 1 / Table 2 (``which``: auto, 1, 2 or all) plus tables for runs kept apart, for
    single-modal protocols; one cross-modal table (column groups: task x protocol) for
    protocols whose trials report per-task metrics (``i2t.map``, ``t2i.map``)."""
    if frame.empty:
        return []
    tasks = _tasks(frame, metric)
    cross = sorted({p for p, ts in tasks.items() if ts})
    single = frame[~frame["protocol"].isin(cross)]
    tables = _single_modal_tables(single, metric, which, paper) if not single.empty else []
    if cross:
        tables += _cross_modal_tables(frame[frame["protocol"].isin(cross)], metric, tasks, paper)
    return tables


def _tasks(frame: pd.DataFrame, metric: str) -> dict[str, list[str]]:
    """Protocol -> the retrieval tasks whose ``<task>.<metric>`` its runs recorded."""
    key = metric_key(metric)
    names = [c[len("metric."):-len(key) - 1] for c in frame.columns
             if c.startswith("metric.") and c.endswith("." + key) and c.count(".") == 2]
    out: dict[str, list[str]] = {}
    for protocol, runs in frame.groupby("protocol"):
        out[str(protocol)] = [t for t in names if runs[f"metric.{t}.{key}"].notna().any()]
    return out


def _cross_modal_tables(frame: pd.DataFrame, metric: str, tasks: dict[str, list[str]],
                        paper: bool) -> list[Table]:
    """One table: rows = methods, column groups = (protocol, task), columns = bits."""
    groups: list[Group] = []
    order = [t for t in TASK_TITLES if any(t in ts for ts in tasks.values())]
    for task in order:
        for group in _groups(frame[frame["protocol"].isin([p for p, ts in tasks.items() if task in ts])],
                             f"{task}.{metric}"):
            group.label = f"{group.protocol} {TASK_TITLES.get(task, task)}"
            group.protocol = f"{group.protocol}/{task}"
            groups.append(group)
    groups.sort(key=lambda g: (g.protocol.split("/")[0], order.index(g.protocol.split("/")[1])))
    rows = sorted({d for g in groups for d, _ in g.cells})
    values = _paper_values(frame, load_cross_modal_paper()) if paper and metric == "map" else {}
    note = ("In parentheses: the DCMH paper's value (Jiang & Li, CVPR 2017; baselines run by the DCMH "
            "authors on CNN-F features)." if values else "")
    return [Table("Cross-modal", metric, groups, rows, note=note, paper=values)] if rows else []


def _single_modal_tables(frame: pd.DataFrame, metric: str, which: str, paper: bool) -> list[Table]:
    groups = _groups(frame, metric)
    if not groups:
        return []
    by_protocol: dict[str, list[Group]] = {}
    for g in groups:
        by_protocol.setdefault(g.protocol, []).append(g)
    main, apart = [], []
    first_of: dict[str, Group] = {}
    for gs in by_protocol.values():
        sizes = [sum(c[2] for c in g.cells.values()) for g in gs]
        first = gs[sizes.index(max(sizes))]
        first_of[first.protocol] = first
        main.append(first)
        for g in gs:
            if g is not first:
                apart.append((g, _explain(first, g)))
    displays = sorted({d for g in main for d, _ in g.cells})
    done = latest_finished(frame)
    full_rows = [d for d in displays if _table2_row(d, done) and not _table1_row(d, done)]
    specs = []
    if which in ("auto", "1"):
        specs.append(("Table 1", [d for d in displays if _table1_row(d, done)]))
    if which == "2" or (which == "auto" and full_rows):
        specs.append(("Table 2", [d for d in displays if _table2_row(d, done)]))
    if which == "all":
        specs.append(("All runs", displays))
    paper_values = _paper_values(frame) if paper and metric == "map" else {}
    tables = []
    for title, rows in specs:
        if not rows:
            continue
        groups_with_rows = [g for g in main if any(r == d for (d, _) in g.cells for r in rows)]
        tables.append(Table(title, metric, groups_with_rows, rows, paper=paper_values))
    for g, why in apart:
        rows = sorted({d for d, _ in g.cells})
        g.label = (f"{g.protocol} [{g.data}]" if g.data != first_of[g.protocol].data
                   else f"{g.protocol} [{g.eval_split[:8]}]")
        tables.append(Table(f"Kept apart: {g.protocol}", metric, [g], rows,
                            note=f"Not averaged with the main table: {why}.", paper=paper_values))
    return tables


def load_cross_modal_paper() -> pd.DataFrame:
    """The DCMH paper's cross-modal MAP (CROSSMODAL.md section 4.1), shipped as package data;
    its ``protocol`` column names ``<protocol>/<task>``."""
    text = resources.files("hashbench").joinpath("data/dcmh2017_tables.csv").read_text("utf-8")
    from io import StringIO

    table = pd.read_csv(StringIO(text), comment="#")
    table["protocol"] = table["protocol"] + "/" + table["task"]
    return table


def _paper_values(frame: pd.DataFrame,
                  paper: pd.DataFrame | None = None) -> dict[tuple[str, str, int], float]:
    paper = load_paper() if paper is None else paper
    displays = frame.drop_duplicates(["method", "train_mode"]).set_index(["method", "train_mode"])["display"]
    out = {}
    for row in paper.itertuples():
        display = displays.get((row.method, row.train_mode))
        if display is None:
            continue
        out[(display, row.protocol, int(row.bits))] = float(row.map)
    return out


# ---------------------------------------------------------------- formats

METRIC_TITLES = {
    "map": "MAP", "tie_aware_map": "tie-aware MAP", "map_best": "MAP (best tie order)",
    "map_worst": "MAP (worst tie order)", "train_seconds": "training time (s)",
}


def metric_title(metric: str) -> str:
    """A caption-ready name: ``map@5000`` -> ``MAP@5000``, ``p@100`` -> ``precision@100``,
    ``p_r2`` -> ``precision within Hamming radius 2``, ``i2t.map`` -> ``I→T MAP``."""
    task, dot, name = metric.rpartition(".")
    if task in TASK_TITLES:
        return f"{TASK_TITLES[task]} {metric_title(name)}"
    name = metric.replace("_at_", "@")
    if name in METRIC_TITLES:
        return METRIC_TITLES[name]
    if name.startswith("map@"):
        return "MAP@" + name[4:]
    if name.startswith("p@"):
        return "precision@" + name[2:]
    if name.startswith("p_r") and name[3:].isdigit():
        return f"precision within Hamming radius {name[3:]}"
    if name.startswith("r_r") and name[3:].isdigit():
        return f"recall within Hamming radius {name[3:]}"
    return name.replace("_", " ")


def _cells_of(table: Table) -> list[Cell]:
    return [c for g in table.groups for (row, _), c in g.cells.items() if row in table.rows]


def seeds_phrase(table: Table) -> str:
    """``3 seeds``, or ``1-3 seeds per cell`` when cells differ in their number of seeds."""
    counts = sorted({c.n for c in _cells_of(table) if c.n})
    if not counts:
        return "0 seeds"
    if len(counts) == 1:
        return f"{counts[0]} seed" + ("s" if counts[0] != 1 else "")
    return f"{counts[0]}–{counts[-1]} seeds per cell"


def has_paper_values(table: Table) -> bool:
    return any((row, g.protocol, b) in table.paper for row in table.rows for g in table.groups
               for b in g.bits)


def caption(table: Table, best: str = "bold", tie: str = "underlined") -> str:
    """What a paper can keep: metric, datasets, conventions, what a cell is, what the marks mean.
    Provenance (versions, git and split hashes) is in :func:`provenance`, not here."""
    labels = ", ".join(g.label for g in table.groups)
    parts = [f"{metric_title(table.metric)} on {labels}: mean ± sample standard deviation over "
             f"{seeds_phrase(table)}."]
    parts += sorted({g.description for g in table.groups if g.description})
    direction = "lowest" if not table.higher_is_better else "highest"
    parts.append(f"{best.capitalize()}: the {direction} mean of each column; {tie}: not significantly "
                 f"worse than it (one-sided Welch's t-test over seeds, p ≥ {SIGNIFICANCE_LEVEL}; "
                 "cells with one seed are not tested).")
    if table.note and (has_paper_values(table) or not table.note.startswith("In parentheses")):
        parts.append(table.note)
    elif has_paper_values(table):
        parts.append("Paper: the ADSH paper's published value (Jiang & Li, AAAI 2018).")
    return " ".join(parts)


def provenance(table: Table) -> list[str]:
    """One line per column group: hashbench version, git commit, evaluation split, device."""
    return [f"{g.label}: " + ", ".join(f"{k} {v}" for k, v in g.provenance.items())
            for g in table.groups]


def _number(value: float, decimals: int = 4) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{decimals}f}"


def _fmt(cell: Cell | None, mark: str = "", style: str = "markdown", decimals: int = 4) -> str:
    """``mean ± std (n)``; Markdown: best bold, ties underlined; text: best ``*``, ties ``~``."""
    if cell is None:
        return "-"
    if cell.n == 0 and cell.notes:  # only failed / killed trials: say so instead of "-"
        return cell.notes
    text = _number(cell.mean, decimals)
    if not math.isnan(cell.mean):
        text += ("" if math.isnan(cell.std) else f" ± {cell.std:.{decimals}f}") + f" ({cell.n})"
    if style == "markdown":
        text = {"best": f"**{text}**", "tie": f"<u>{text}</u>"}.get(mark, text)
    elif style == "text":
        text += {"best": "*", "tie": "~"}.get(mark, "")
    if cell.notes:
        text += f" ⚠ {cell.notes}" if style == "markdown" else f" [{cell.notes}]"
    return text


def _paper_suffix(table: Table, row: str, group: Group, bits: int, cell: Cell | None) -> str:
    value = table.paper.get((row, group.protocol, bits))
    if value is None:
        return ""
    diff = "" if cell is None or math.isnan(cell[0]) else f", Δ {cell[0] - value:+.4f}"
    return f" (paper {value:.4f}{diff})"


def _header(table: Table, sep: str = " ") -> list[str]:
    return [f"{g.label}{sep}{b}" if len(table.groups) > 1 else f"{b} bits"
            for g in table.groups for b in g.bits]


def to_markdown(table: Table) -> str:
    header = ["method"] + _header(table)
    lines = [f"### {table.title}: {metric_title(table.metric)}", "", caption(table), "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table.rows:
        cells = [row]
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                cells.append(_fmt(cell, table.mark(g, b, row), decimals=table.decimals)
                             + _paper_suffix(table, row, g, b, cell))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Provenance: " + "; ".join(provenance(table)) + "."]
    return "\n".join(lines)


def to_text(table: Table) -> str:
    """Fixed-width text for terminals; best ``*``, not significantly worse ``~``."""
    header = ["method"] + _header(table, "/")
    body = []
    for row in table.rows:
        cells = [row]
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                cells.append(_fmt(cell, table.mark(g, b, row), "text", table.decimals)
                             + _paper_suffix(table, row, g, b, cell))
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [f"{table.title}: {metric_title(table.metric)}", fmt.format(*header),
             fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in body]
    lines.append(caption(table, best="*", tie="~"))
    lines.append("Provenance: " + "; ".join(provenance(table)) + ".")
    return "\n".join(lines)


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", "±": r"$\pm$", "→": r"$\to$", "≥": r"$\geq$",
                   "Δ": r"$\Delta$", "–": "--"}
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))


def latex_escape(text: str) -> str:
    """Free text (captions) for LaTeX, in one pass so nothing is escaped twice; table labels
    go through pandas' Styler escaping."""
    return _LATEX_PATTERN.sub(lambda m: _LATEX_SPECIALS[m.group(0)], text)


def _latex_symbols(text: str) -> str:
    """The non-ASCII symbols of the report (→, ±, ≥, Δ, –) as LaTeX math, in escaped text."""
    for symbol in ("±", "→", "≥", "Δ", "–"):
        text = text.replace(symbol, _LATEX_SPECIALS[symbol])
    return text


def latex_label(table: Table) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{table.title} {table.metric}".lower()).strip("-")
    groups = re.sub(r"[^a-z0-9]+", "-", "-".join(g.protocol for g in table.groups).lower()).strip("-")
    return f"tab:hashbench-{slug}" + (f"-{groups}" if table.title.startswith("Kept apart") else "")


def _latex_cell(cell: Cell | None, common_n: int | None, decimals: int = 4) -> str:
    if cell is None:
        return "--"
    if cell.n == 0 and cell.notes:  # only failed / killed trials
        return latex_escape(cell.notes)
    if math.isnan(cell.mean):
        return "n/a"
    text = f"{cell.mean:.{decimals}f}"
    if not math.isnan(cell.std):
        text += rf"\,{{\scriptsize$\pm${cell.std:.{decimals}f}}}"
    if common_n is None or cell.n != common_n:
        text += rf"\,{{\scriptsize($n$={cell.n})}}"
    if cell.notes:
        text += r"$^\dagger$"
    return text


def to_latex(table: Table) -> str:
    """A booktabs table through pandas' Styler: caption above (metric, conventions, what a
    cell is, the significance test), ``\\label{tab:...}``, bold best and underlined ties,
    shrunk to the column (or text) width only when wider; provenance in comment lines.
    Needs ``\\usepackage{booktabs,graphicx}``."""
    counts = {c.n for c in _cells_of(table)}
    common_n = counts.pop() if len(counts) == 1 else None
    columns = pd.MultiIndex.from_tuples([(g.label, f"{b} bits") for g in table.groups for b in g.bits])
    rows, index, marks = [], [], []
    for row in table.rows:
        rows.append([_latex_cell(g.cells.get((row, b)), common_n, table.decimals)
                     for g in table.groups for b in g.bits])
        marks.append([{"best": "textbf:--rwrap;", "tie": "underline:--rwrap;"}.get(
            table.mark(g, b, row), "") for g in table.groups for b in g.bits])
        index.append(row)
        paper = [table.paper.get((row, g.protocol, b)) for g in table.groups for b in g.bits]
        if any(v is not None for v in paper):
            rows.append(["" if v is None else f"({v:.4f})" for v in paper])
            marks.append([""] * len(paper))
            index.append(f"{row} (paper)")
    frame = pd.DataFrame(rows, index=index, columns=columns)
    style_frame = pd.DataFrame(marks, index=frame.index, columns=columns)
    styler = (frame.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
              .apply(lambda _: style_frame, axis=None))
    tabular = styler.to_latex(column_format="l" + "r" * len(columns), hrules=True, multicol_align="c")
    tabular = _latex_symbols(_cmidrules(tabular, table))  # Styler escapes specials, not → or ±
    wide = len(columns) > 4
    env, width = ("table*", r"\textwidth") if wide else ("table", r"\columnwidth")
    notes = caption(table)
    if any(c.notes for c in _cells_of(table)):
        notes += " † collapsed or failed runs in the cell (see runs.csv)."
    if common_n is None:
        notes += " n: the number of seeds where it differs."
    lines = ["% " + _latex_symbols(line) for line in provenance(table)]
    lines += [rf"\begin{{{env}}}[t]", r"\centering", rf"\caption{{{latex_escape(notes)}}}",
              rf"\label{{{latex_label(table)}}}", r"\smallskip",
              rf"\resizebox{{\ifdim\width>{width}{width}\else\width\fi}}{{!}}{{%",
              tabular.rstrip() + "%", "}", rf"\end{{{env}}}"]
    return "\n".join(lines)


def _cmidrules(tabular: str, table: Table) -> str:
    """A \\cmidrule under each column group's name (Styler writes the \\multicolumn header)."""
    lines = tabular.splitlines()
    for i, line in enumerate(lines):
        if r"\multicolumn" in line:
            start, rules = 2, []
            for g in table.groups:
                rules.append(rf"\cmidrule(lr){{{start}-{start + len(g.bits) - 1}}}")
                start += len(g.bits)
            lines.insert(i + 1, " ".join(rules))
            break
    return "\n".join(lines) + "\n"


def _run_links(cell: Cell, ui: str | None, experiment_id: str | None) -> str | None:
    """The MLflow UI page of a cell's runs (one run, or the compare view of its seeds)."""
    if not ui or not experiment_id or not cell.run_ids:
        return None
    if len(cell.run_ids) == 1:
        return f"{ui}/#/experiments/{experiment_id}/runs/{cell.run_ids[0]}"
    runs = json.dumps(list(cell.run_ids), separators=(",", ":"))
    return f"{ui}/#/compare-runs?runs={runs}&experiments=[\"{experiment_id}\"]"


def to_html_table(table: Table, ui: str | None = None, experiment_id: str | None = None) -> str:
    """pandas' Styler HTML (escaped), best bold and ties underlined, sortable by column, each
    cell linking to its MLflow runs when the store has a UI address."""
    columns = pd.MultiIndex.from_tuples([(g.label, f"{b} bits") for g in table.groups for b in g.bits])
    rows, classes = [], []
    for row in table.rows:
        values, marks = [], []
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                text = html.escape(_fmt(cell, style="html", decimals=table.decimals)
                                   + _paper_suffix(table, row, g, b, cell))
                link = _run_links(cell, ui, experiment_id) if cell is not None else None
                values.append(f"<a href='{html.escape(link)}'>{text}</a>" if link else text)
                mark = table.mark(g, b, row)
                flag = "flag" if cell is not None and cell.notes else ""
                marks.append(" ".join(filter(None, [mark, flag])))
        rows.append(values)
        classes.append(marks)
    frame = pd.DataFrame(rows, index=table.rows, columns=columns)
    styler = (frame.style.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
              .set_td_classes(pd.DataFrame(classes, index=frame.index, columns=columns))
              .set_table_attributes("class='report sortable'")
              .set_caption(html.escape(caption(table))))
    return (f"<h2>{html.escape(table.title)}: {html.escape(metric_title(table.metric))}</h2>"
            + styler.to_html(doctype_html=False)
            + f"<p class='provenance'>{html.escape('; '.join(provenance(table)))}</p>")


# ---------------------------------------------------------------- whole reports


def render(tables: list[Table], frame: pd.DataFrame, fmt: str = "markdown") -> str:
    """All tables as Markdown or plain text; says when runs were kept apart or failed."""
    if not tables:
        return "No finished trials match: run `hashbench run` first (or relax the filters).\n"
    one = to_markdown if fmt == "markdown" else to_text
    parts = ["# hashbench report", ""] if fmt == "markdown" else []
    if any(t.title.startswith("Kept apart") for t in tables):
        parts += ["Runs on different data (dataset, feature extractor), evaluation splits or "
                  "conventions are never averaged together; they are shown in separate tables "
                  "below with the reason.", ""]
    for table in tables:
        parts += [one(table), ""]
    left_out = {status: int((frame["status"] == status).sum()) for status in ("RUNNING", "KILLED")}
    for status, n in left_out.items():
        if n:
            why = ("still running, or their process died without closing them (the next `hashbench run` "
                   "of the same grid closes those)" if status == "RUNNING" else "interrupted")
            parts.append(f"{n} {status} trial(s) left out of the tables: {why}.")
    n_failed = int((frame["status"] == "FAILED").sum())
    n_collapsed = int(((frame["status"] == "FINISHED") & frame["collapsed"]).sum())
    if n_failed:
        parts.append(f"{n_failed} failed trial(s) in the store; see runs.csv (columns status, error).")
    if n_collapsed:
        parts.append(f"{n_collapsed} finished trial(s) collapsed to few distinct database codes "
                     "(flagged ⚠ in the tables; column flags of runs.csv).")
    other = flag_counts(frame[frame["status"] == "FINISHED"], exclude=("collapsed",))
    if other:
        parts.append("Flags on finished trials (not marked in the tables; column flags of runs.csv): "
                     + ", ".join(f"{name} on {n}" for name, n in other.items()) + ".")
    return "\n".join(parts).rstrip() + "\n"


def flag_counts(frame: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Flag name -> number of runs carrying it (from the ``flags`` column)."""
    counts: dict[str, int] = {}
    for text in frame.get("flags", pd.Series(dtype=str)).fillna(""):
        for item in filter(None, str(text).split("; ")):
            name = item.split(":", 1)[0].strip()
            if name and name not in exclude:
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """runs.csv: one row per run; ``start_time`` as ISO 8601 UTC; the hyper-parameters as
    ``hp.<name>`` columns; ``curve.*`` histories left out (their last value means nothing:
    the curves are in the figures' CSV files and the runs' curve artifacts)."""
    out = frame.drop(columns=[c for c in frame.columns if c.startswith("metric.curve.")])
    if "start_time" in out:
        out["start_time"] = (pd.to_datetime(out["start_time"], unit="ms", utc=True)
                             .dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if "setting" in out:
        hp = pd.DataFrame([json.loads(s) if isinstance(s, str) and s else {} for s in out["setting"]],
                          index=out.index)
        out = pd.concat([out, hp.add_prefix("hp.")], axis=1)
    return out


def write(frame: pd.DataFrame, tables: list[Table], out_dir: Path,
          figures: dict[str, Path] | None = None, ui: str | None = None,
          experiment_id: str | None = None) -> list[Path]:
    """report.md, report.tex, runs.csv (tidy: one row per run) and report.html in ``out_dir``.
    Refuses (UsageError) to write a report without tables: an earlier report is never replaced
    by an empty one."""
    if not tables:
        from hashbench.errors import UsageError

        raise UsageError("no table to write: nothing in the store matches (earlier reports are kept)")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "report.md": render(tables, frame, "markdown"),
        "report.tex": LATEX_PREAMBLE + "\n\n".join(to_latex(t) for t in tables) + "\n",
        "report.html": to_html(tables, figures or {}, ui, experiment_id),
    }
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    csv = out_dir / "runs.csv"
    runs_table(frame).to_csv(csv, index=False)
    return written[:2] + [csv] + written[2:]


LATEX_PREAMBLE = ("% hashbench report tables: needs \\usepackage{booktabs,graphicx};\n"
                  "% \\input{report.tex} or copy a table; \\ref{tab:...} names each.\n")

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}
h2{margin-top:1.6em}
table.report{border-collapse:collapse;margin:0.6em 0;font-size:15px;min-width:50%;max-width:100%}
table.report th,table.report td{border-bottom:1px solid #ddd;padding:5px 8px;white-space:nowrap;
  font-variant-numeric:tabular-nums}
table.report td{text-align:right} table.report th{text-align:center}
table.report th.row_heading{text-align:left} table.report thead th{background:#f6f6f6;cursor:pointer}
table.report td.best{font-weight:bold} table.report td.tie{text-decoration:underline}
table.report td.flag{background:#fff3cd} table.report a{color:inherit;text-decoration:inherit}
table.report caption{caption-side:bottom;text-align:left;font-size:13px;color:#444;padding-top:4px}
.provenance{font-size:12px;color:#777} figure{margin:1.5em 0} figcaption{font-size:13px;color:#444}
img{max-width:100%;height:auto;border:1px solid #eee}
"""

FIGURE_ZOOM = 1.6  # print-size figures (points) drawn larger on screen, never wider than the page

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
  var heads=t.tHead.rows[t.tHead.rows.length-1].cells;
  Array.prototype.forEach.call(heads,function(th,i){th.title='click to sort';th.onclick=function(){
    var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),dir=th.dataset.dir==='d'?1:-1;
    th.dataset.dir=dir>0?'a':'d';
    function key(r){var c=r.cells[i];var v=parseFloat(c?c.textContent:'');return isNaN(v)?-Infinity:v;}
    rows.sort(function(a,b){return i===0?dir*a.cells[0].textContent.localeCompare(b.cells[0].textContent)
      :dir*(key(a)-key(b));});
    rows.forEach(function(r){body.appendChild(r);});};});});
"""


def to_html(tables: list[Table], figures: dict[str, Path], ui: str | None = None,
            experiment_id: str | None = None) -> str:
    """One self-contained page at full width: sortable tables (click a header), then the
    figures embedded as SVG (PNG when no SVG was written) with their captions."""
    import base64

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hashbench report</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{CSS}</style></head><body><h1>hashbench report</h1>"]
    if ui:
        parts.append(f"<p>Cells link to their runs in the MLflow UI at {html.escape(ui)}.</p>")
    parts += [to_html_table(t, ui, experiment_id) for t in tables]
    for title, path in figures.items():
        svg = path.with_suffix(".svg")
        source, mime = (svg, "image/svg+xml") if svg.exists() else (path, "image/png")
        raw = source.read_bytes()
        data = base64.b64encode(raw).decode()
        width = re.search(rb'width="([\d.]+)pt"', raw[:2000]) if mime == "image/svg+xml" else None
        size = f" width='{round(float(width.group(1)) * 4 / 3 * FIGURE_ZOOM)}'" if width else ""
        note = path.with_suffix(".txt")
        text = note.read_text(encoding="utf-8") if note.exists() else ""
        parts.append(f"<figure><h2>{html.escape(title)}</h2><img{size} alt='{html.escape(title)}' "
                     f"src='data:{mime};base64,{data}'><figcaption>{html.escape(text)}</figcaption></figure>")
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    return "".join(parts)
