"""Reports: MLflow trial records -> pandas -> tables.

The report reads only the store (no recomputation), so it works on a store produced on
another machine. Runs are grouped by (protocol, split hash, evaluation conventions, train
mode): numbers from different splits or conventions are never averaged together, they get
separate tables. When a trial was rerun with ``--force``, the newest FINISHED run of each
run key counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hashbench.tracking import RUN_KEY_TAG, Store, metric_key, run_record

CONVENTION_PREFIX = "eval."
GROUP_COLUMNS = ["protocol", "split_sha256", "conventions"]


def collect(store: Store) -> pd.DataFrame:
    """One row per trial run (every status): params, tags of interest and all metrics."""
    rows = []
    for record in map(run_record, store.trial_runs()):
        p, t = record["params"], record["tags"]
        conventions = "; ".join(
            f"{k[len(CONVENTION_PREFIX):]}={v}" for k, v in sorted(t.items())
            if k.startswith(CONVENTION_PREFIX)
        )
        flags = "; ".join(f"{k.split('.')[-1]}: {v}" for k, v in sorted(t.items())
                          if k.startswith("hashbench.flag."))
        row = {
            "run_id": record["run_id"],
            "status": record["status"],
            "start_time": record["start_time"],
            "run_key": t.get(RUN_KEY_TAG, ""),
            "method": p.get("method", t.get("hashbench.method", "")),
            "title": t.get("hashbench.method_title", p.get("method", "")),
            "protocol": p.get("protocol", t.get("hashbench.protocol", "")),
            "dataset": p.get("dataset", ""),
            "train_mode": p.get("train_mode", ""),
            "bits": int(p["bits"]) if "bits" in p else -1,
            "seed": int(p["seed"]) if "seed" in p else -1,
            "split_sha256": t.get("hashbench.split_sha256", ""),
            "conventions": conventions,
            "version": t.get("hashbench.version", ""),
            "git_sha": t.get("hashbench.git_sha", ""),
            "device": t.get("hashbench.device", ""),
            "flags": flags,
            "error": t.get("hashbench.error", ""),
        }
        row.update({f"metric.{k}": v for k, v in record["metrics"].items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["display"] = frame["title"] + frame["train_mode"].map(lambda m: "-D" if m == "full" else "")
    return frame.sort_values(["protocol", "method", "bits", "seed", "start_time"]).reset_index(drop=True)


def latest_finished(frame: pd.DataFrame) -> pd.DataFrame:
    """FINISHED runs only, the newest per run key."""
    done = frame[frame["status"] == "FINISHED"]
    return done.sort_values("start_time").groupby("run_key", as_index=False).tail(1)


@dataclass
class Table:
    """One table: cells are (mean, std, n, flagged) per (display method, bits)."""

    metric: str
    protocol: str
    split_sha256: str
    conventions: str
    cells: dict[tuple[str, int], tuple[float, float, int, str]]
    methods: list[str]
    bits: list[int]
    provenance: dict[str, str] = field(default_factory=dict)

    def best(self, bits: int, higher_is_better: bool = True) -> str | None:
        values = {m: c[0] for (m, b), c in self.cells.items() if b == bits and not math.isnan(c[0])}
        if not values:
            return None
        pick = max if higher_is_better else min
        return pick(values, key=values.__getitem__)


def tables(frame: pd.DataFrame, metric: str = "map") -> list[Table]:
    """Mean +- std over seeds of ``metric`` per method x bits, one table per comparable group."""
    if frame.empty:
        return []
    column = f"metric.{metric_key(metric)}"
    done = latest_finished(frame)
    failed = frame[frame["status"] == "FAILED"]
    out = []
    for key, group in done.groupby(GROUP_COLUMNS, sort=True):
        protocol, split, conventions = key
        cells: dict[tuple[str, int], tuple[float, float, int, str]] = {}
        for (display, bits), runs in group.groupby(["display", "bits"]):
            values = runs[column].dropna() if column in runs else pd.Series(dtype=float)
            mean = float(values.mean()) if len(values) else math.nan
            std = float(values.std(ddof=0)) if len(values) else math.nan
            notes = []
            if (runs["flags"] != "").any():
                notes.append("collapsed")
            n_failed = len(failed[(failed["display"] == display) & (failed["bits"] == bits)
                                  & (failed["protocol"] == protocol)])
            if n_failed:
                notes.append(f"{n_failed} failed")
            cells[(display, int(bits))] = (mean, std, len(values), ", ".join(notes))
        out.append(Table(
            metric=metric, protocol=protocol, split_sha256=split, conventions=conventions,
            cells=cells, methods=sorted(group["display"].unique()),
            bits=sorted(int(b) for b in group["bits"].unique()),
            provenance={
                "hashbench": ", ".join(sorted(group["version"].unique())),
                "git": ", ".join(sorted(s[:12] for s in group["git_sha"].unique())),
                "device": ", ".join(sorted(group["device"].unique())),
                "split": split[:16],
            },
        ))
    return out


def format_cell(cell: tuple[float, float, int, str] | None, bold: bool = False) -> str:
    if cell is None:
        return "-"
    mean, std, n, notes = cell
    text = "n/a" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f} ({n})"
    if bold:
        text = f"**{text}**"
    if notes:
        text += f" ⚠ {notes}"
    return text


def to_markdown(table: Table) -> str:
    higher = not table.metric.endswith("seconds")
    header = ["method"] + [f"{b} bits" for b in table.bits]
    lines = [
        f"### {table.metric} on {table.protocol} (mean ± std over seeds, (n) = seeds)",
        "",
        f"Conventions: {table.conventions or 'not recorded'}. "
        + "; ".join(f"{k}: {v}" for k, v in table.provenance.items()) + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(table.bits)) + "|",
    ]
    for method in table.methods:
        row = [method]
        for b in table.bits:
            cell = table.cells.get((method, b))
            row.append(format_cell(cell, bold=cell is not None and table.best(b, higher) == method))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render(frame: pd.DataFrame, metric: str = "map") -> str:
    """The whole Markdown report; explains when groups were kept apart."""
    found = tables(frame, metric)
    if not found:
        return "No finished trials in the store yet: run `hashbench run` first."
    parts = ["# hashbench report", ""]
    if len(found) > 1:
        parts += [
            f"{len(found)} tables: runs with different protocols, split hashes or evaluation "
            "conventions are never averaged together.",
            "",
        ]
    for table in found:
        parts += [to_markdown(table), ""]
    n_failed = int((frame["status"] == "FAILED").sum())
    if n_failed:
        parts.append(f"{n_failed} failed trial(s) are in the store; see runs.csv (column error).")
    return "\n".join(parts).rstrip() + "\n"


def write(frame: pd.DataFrame, out_dir: Path, metric: str = "map") -> list[Path]:
    """Write ``report.md`` and the tidy ``runs.csv`` (one row per run) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(render(frame, metric), encoding="utf-8")
    csv = out_dir / "runs.csv"
    frame.drop(columns=["display"], errors="ignore").to_csv(csv, index=False)
    return [md, csv]
