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
``--force``, the newest FINISHED run of each run key counts. Cells whose runs collapsed
(few distinct database codes) or failed are flagged.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from hashbench.tracking import CONVENTION_PREFIX, Store, metric_key

LOWER_IS_BETTER_SUFFIX = "seconds"

Cell = tuple[float, float, int, str]  # mean, std, n seeds, notes


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
            "conventions": conventions,
            "eval_description": record.eval_description,
            "version": record.version,
            "git_sha": record.git_sha,
            "device": record.device,
            "flags": "; ".join(f"{k.split('.')[-1]}: {v}" for k, v in sorted(record.flags.items())),
            "collapsed": any(k == "collapsed" or k.endswith(".collapsed") for k in record.flags),
            "error": record.error,
            "setting": json.dumps(record.hyper_parameters, sort_keys=True),
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
    protocol, the method's most frequent hyper-parameter setting keeps the plain name and
    every other setting gets its own row named after what differs, e.g. ``ITQ (n_iter=5)``."""
    for _, runs in frame.groupby(["protocol", "display"], sort=False):
        counts = runs["setting"].value_counts()
        if len(counts) < 2:
            continue
        main = sorted(counts.index, key=lambda s: (-counts[s], s))[0]
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


def latest_finished(frame: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs only, the newest per run key."""
    done = frame[frame["status"] == "FINISHED"]
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

    def best(self, group: Group, bits: int) -> str | None:
        values = {r: group.cells[(r, bits)][0] for r in self.rows
                  if (r, bits) in group.cells and not math.isnan(group.cells[(r, bits)][0])}
        if not values:
            return None
        pick = max if self.higher_is_better else min
        return pick(values, key=values.__getitem__)


def _cell(runs: pd.DataFrame, failed: pd.DataFrame, column: str) -> Cell:
    values = runs[column].dropna() if column in runs else pd.Series(dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    std = float(values.std(ddof=0)) if len(values) else math.nan
    notes = []
    collapsed = int(runs["collapsed"].sum())
    if collapsed:
        notes.append(f"{collapsed} collapsed")
    if len(failed):
        notes.append(f"{len(failed)} failed")
    return mean, std, len(values), ", ".join(notes)


def _groups(frame: pd.DataFrame, metric: str) -> list[Group]:
    column = f"metric.{metric_key(metric)}"
    done = latest_finished(frame)
    failed_all = frame[frame["status"] == "FAILED"]
    groups = []
    for (protocol, split, conventions), runs in done.groupby(
            ["protocol", "eval_split_sha256", "conventions"], sort=True):
        failed = failed_all[(failed_all["protocol"] == protocol)
                            & (failed_all["eval_split_sha256"] == split)]
        cells = {}
        for (display, bits), cell_runs in runs.groupby(["display", "bits"]):
            cell_failed = failed[(failed["display"] == display) & (failed["bits"] == bits)]
            cells[(display, int(bits))] = _cell(cell_runs, cell_failed, column)
        groups.append(Group(
            protocol=protocol, eval_split=split, conventions=conventions,
            description=str(runs["eval_description"].iloc[0]),
            bits=sorted(int(b) for b in runs["bits"].unique()), cells=cells,
            provenance={
                "hashbench": ", ".join(sorted(runs["version"].unique())),
                "git": ", ".join(sorted({_short_sha(s) for s in runs["git_sha"].unique()})),
                "split": split[:12],
                "device": ", ".join(sorted(runs["device"].unique())),
            },
            label=protocol,
        ))
    return groups


def _short_sha(sha: str) -> str:
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


def _explain(main: Group, other: Group) -> str:
    reasons = []
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
    for gs in by_protocol.values():
        sizes = [sum(c[2] for c in g.cells.values()) for g in gs]
        first = gs[sizes.index(max(sizes))]
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
        g.label = f"{g.protocol} [{g.eval_split[:8]}]"
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


def _fmt(cell: Cell | None, best: bool = False, style: str = "markdown") -> str:
    """``mean ± std (n)``, emphasised when best (bold in Markdown, * in text), then flags."""
    if cell is None:
        return "-"
    mean, std, n, notes = cell
    text = "n/a" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f} ({n})"
    if best:
        text = f"**{text}**" if style == "markdown" else f"{text}*"
    if notes:
        text += f" ⚠ {notes}" if style == "markdown" else f" [{notes}]"
    return text


def _paper_suffix(table: Table, row: str, group: Group, bits: int, cell: Cell | None) -> str:
    value = table.paper.get((row, group.protocol, bits))
    if value is None:
        return ""
    diff = "" if cell is None or math.isnan(cell[0]) else f", Δ {cell[0] - value:+.4f}"
    return f" (paper {value:.4f}{diff})"


def caption(table: Table) -> str:
    parts = [f"{table.metric}: mean ± std over seeds, (n) = number of seeds; best per column in bold."]
    descriptions = sorted({g.description for g in table.groups if g.description})
    parts += descriptions
    for g in table.groups:
        parts.append(f"{g.label}: " + ", ".join(f"{k} {v}" for k, v in g.provenance.items()) + ".")
    if table.note:
        parts.append(table.note)
    return " ".join(parts)


def to_markdown(table: Table) -> str:
    header = ["method"] + [f"{g.label} {b}" if len(table.groups) > 1 else f"{b} bits"
                           for g in table.groups for b in g.bits]
    lines = [f"### {table.title}: {table.metric}", "", caption(table), "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table.rows:
        cells = [row]
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                cells.append(_fmt(cell, table.best(g, b) == row) + _paper_suffix(table, row, g, b, cell))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_text(table: Table) -> str:
    """Fixed-width text for terminals; the best cell per column is marked with *."""
    header = ["method"] + [f"{g.label}/{b}" for g in table.groups for b in g.bits]
    body = []
    for row in table.rows:
        cells = [row]
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                cells.append(_fmt(cell, table.best(g, b) == row, "text")
                             + _paper_suffix(table, row, g, b, cell))
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [f"{table.title}: {table.metric}", fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in body]
    lines.append(caption(table))
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return (text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("⚠", r"$\dagger$")
            .replace("→", r"$\to$"))


def to_latex(table: Table) -> str:
    """A booktabs table: one column group per protocol."""
    n_cols = sum(len(g.bits) for g in table.groups)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "r" * n_cols + "}", r"\toprule"]
    lines.append(" & " + " & ".join(rf"\multicolumn{{{len(g.bits)}}}{{c}}{{{_latex_escape(g.label)}}}"
                                    for g in table.groups) + r" \\")
    start = 2
    rules = []
    for g in table.groups:
        rules.append(rf"\cmidrule(lr){{{start}-{start + len(g.bits) - 1}}}")
        start += len(g.bits)
    lines.append(" ".join(rules))
    lines.append("Method & " + " & ".join(f"{b} bits" for g in table.groups for b in g.bits) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        cells = [_latex_escape(row)]
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                text = "--" if cell is None else (
                    "n/a" if math.isnan(cell[0]) else f"{cell[0]:.4f} $\\pm$ {cell[1]:.4f}")
                if cell is not None and table.best(g, b) == row:
                    text = rf"\textbf{{{text}}}"
                if cell is not None and cell[3]:
                    text += r"$^\dagger$"
                value = table.paper.get((row, g.protocol, b))
                if value is not None:
                    text += f" ({value:.4f})"
                cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{table.title}: {_latex_escape(caption(table))}"
              + (r" $\dagger$: collapsed or failed runs." if any(
                  c[3] for g in table.groups for c in g.cells.values()) else "")
              + (" In parentheses: the ADSH paper's value." if table.paper and table.title != "Cross-modal"
                 else "") + "}",
              r"\end{table}"]
    return "\n".join(lines)


def to_html_table(table: Table) -> str:
    head = ["<tr><th rowspan=2>method</th>" + "".join(
        f"<th colspan={len(g.bits)}>{html.escape(g.label)}</th>" for g in table.groups) + "</tr>",
        "<tr>" + "".join(f"<th>{b} bits</th>" for g in table.groups for b in g.bits) + "</tr>"]
    body = []
    for row in table.rows:
        cells = [f"<th>{html.escape(row)}</th>"]
        for g in table.groups:
            for b in g.bits:
                cell = g.cells.get((row, b))
                text = html.escape(_fmt(cell, style="html") + _paper_suffix(table, row, g, b, cell))
                cls = []
                if cell is not None and table.best(g, b) == row:
                    cls.append("best")
                if cell is not None and cell[3]:
                    cls.append("flag")
                cells.append(f"<td class='{' '.join(cls)}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h2>{html.escape(table.title)}: {html.escape(table.metric)}</h2>"
            f"<table><thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table>"
            f"<p class='caption'>{html.escape(caption(table))}</p>")


# ---------------------------------------------------------------- whole reports


def render(tables: list[Table], frame: pd.DataFrame, fmt: str = "markdown") -> str:
    """All tables as Markdown or plain text; says when runs were kept apart or failed."""
    if not tables:
        return "No finished trials match: run `hashbench run` first (or relax the filters).\n"
    one = to_markdown if fmt == "markdown" else to_text
    parts = ["# hashbench report", ""] if fmt == "markdown" else []
    if any(t.title.startswith("Kept apart") for t in tables):
        parts += ["Runs with different evaluation splits or conventions are never averaged "
                  "together; they are shown in separate tables below with the reason.", ""]
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
    return "\n".join(parts).rstrip() + "\n"


def write(frame: pd.DataFrame, tables: list[Table], out_dir: Path,
          figures: dict[str, Path] | None = None) -> list[Path]:
    """report.md, report.tex, runs.csv (tidy: one row per run) and report.html in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    md = out_dir / "report.md"
    md.write_text(render(tables, frame, "markdown"), encoding="utf-8")
    tex = out_dir / "report.tex"
    tex.write_text("% requires \\usepackage{booktabs}\n" + "\n\n".join(to_latex(t) for t in tables) + "\n",
                   encoding="utf-8")
    csv = out_dir / "runs.csv"
    frame.to_csv(csv, index=False)
    page = out_dir / "report.html"
    page.write_text(to_html(tables, figures or {}), encoding="utf-8")
    written += [md, tex, csv, page]
    return written


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border-bottom:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th:first-child{text-align:left} td.best{font-weight:bold} td.flag{background:#fff3cd}
.caption{font-size:12px;color:#555;max-width:1200px} img{max-width:100%;border:1px solid #eee}
"""


def to_html(tables: list[Table], figures: dict[str, Path]) -> str:
    """One self-contained page: tables, then figures embedded as base64 PNG."""
    import base64

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hashbench report</title>",
             f"<style>{CSS}</style></head><body><h1>hashbench report</h1>"]
    if not tables:
        parts.append("<p>No finished trials.</p>")
    parts += [to_html_table(t) for t in tables]
    for title, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "".join(parts)
