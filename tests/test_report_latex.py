"""The LaTeX report compiles inside a two-column article without overfull boxes (needs
``pdflatex``; skipped without it). Wide tables (more than four columns) span both columns."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hashbench.cli import main
from hashbench.tracking import Store
from tests.test_report import add_run

ARTICLE = r"""\documentclass[twocolumn]{article}
\usepackage{booktabs,graphicx}
\begin{document}
Tables~\ref{tab:hashbench-table-1-map} and~\ref{tab:hashbench-table-2-map}.
\input{report.tex}
\end{document}
"""


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_report_compiles_in_a_two_column_article(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/r.db")
    for protocol in ("adsh2018-cifar10", "adsh2018-nuswide", "data_set#1"):
        for bits in (12, 24, 32, 48):
            for seed in range(2):
                add_run(store, "itq", "ITQ", bits, seed, 0.5 + seed / 100, protocol=protocol)
                add_run(store, "my_method", "Mine_%&", bits, seed, 0.6 - seed / 100, protocol=protocol,
                        flags={"collapsed": "2 codes"} if bits == 48 else None)
                add_run(store, "lfh", "LFH", bits, seed, 0.55, protocol=protocol, mode="full")
                add_run(store, "adsh", "ADSH", bits, seed, 0.7, protocol=protocol, mode="full",
                        learns_database=True, display="ADSH")
    out = tmp_path / "out"
    assert main(["report", "--tracking-uri", store.uri, "--out", str(out), "--no-figures", "--paper"]) == 0
    tex = (out / "report.tex").read_text()
    assert r"\begin{table*}" in tex and r"\label{tab:hashbench-table-2-map}" in tex
    assert r"Mine\_\%\&" in tex and r"\caption{MAP on adsh2018-cifar10" in tex
    (out / "doc.tex").write_text(ARTICLE)
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                            cwd=out, capture_output=True, text=True, timeout=120)
    log = (out / "doc.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log and "Undefined control sequence" not in log
