"""The paper's settings are the protocol's: per-method training regimes and --variants."""

from __future__ import annotations

import pytest
from test_datasets import write_cifar10  # tests/ is on sys.path (rootdir)

from hashbench import registry
from hashbench.cli import main
from hashbench.errors import ConfigError
from hashbench.progress import Reporter
from hashbench.protocol import get_protocol, parse_protocol
from hashbench.runner import RunConfig, plan_grid
from hashbench.tracking import Store

TINY = ["--protocol-set", "query.per_class=2", "--protocol-set", "train.per_class=4"]


def _plan(tmp_path, protocol, methods="all", variants=False):
    config = RunConfig(methods=registry.resolve(methods), protocol=protocol, bits=[12], seeds=[0],
                       tracking_uri=f"sqlite:///{tmp_path}/plan.db", data_root=tmp_path / "data",
                       pretrained=False, features="pixels-pca", variants=variants,
                       skip_incompatible=methods == "all")
    plan = plan_grid(config, Reporter(quiet=True))
    plan.parent.end("KILLED")  # planned only
    return {(s.method, s.train_mode) for s in plan.pending}, plan


def test_adsh2018_protocol_runs_adsh_and_linv_on_the_database_and_the_rest_sampled(tmp_path):
    write_cifar10(tmp_path / "data")
    protocol = get_protocol("adsh2018-cifar10").with_overrides({"query.per_class": 2, "train.per_class": 4})
    modes, plan = _plan(tmp_path, protocol)
    assert ("adsh", "full") in modes and ("linv", "full") in modes
    assert {m for m, mode in modes if mode == "full"} == {"adsh", "linv"}
    cross_modal = {c for c in registry.available() if "text" in registry.get(c).meta.modalities}
    assert cross_modal and {m for m, _ in modes} == set(registry.available()) - cross_modal
    assert set(plan.context.splits) == {"sampled", "full"}
    full, sampled = plan.context.splits["full"], plan.context.splits["sampled"]
    assert full.eval_sha256 == sampled.eval_sha256  # same queries and database
    assert len(full.train) == len(full.database) and len(sampled.train) == 40
    with_variants, _ = _plan(tmp_path, protocol, "lfh,sdh,itq,adsh,dpsh", variants=True)
    assert with_variants == {("lfh", "sampled"), ("lfh", "full"), ("sdh", "sampled"), ("sdh", "full"),
                             ("itq", "sampled"), ("adsh", "full"), ("dpsh", "sampled"), ("dpsh", "full")}
    forced, _ = _plan(tmp_path, protocol.with_train_mode("sampled"), "adsh,itq", variants=True)
    assert forced == {("adsh", "sampled"), ("itq", "sampled")}  # --train-mode overrides the regimes


def test_regimes_end_to_end_names_rows_and_records_the_source(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    write_cifar10(tmp_path / "data")
    base = ["run", "--protocol", "adsh2018-cifar10", "--data-root", str(tmp_path / "data"), "--bits", "8",
            "--features", "pixels-pca", "--no-pretrained", "--quiet", *TINY,
            "--param", "adsh.outer_iters=2", "--param", "linv.max_epochs=1"]
    assert main(base + ["--methods", "itq,linv,adsh,sdh", "--variants"]) == 0
    records = Store(f"sqlite:///{tmp_path}/results/mlflow.db").trial_records()
    seen = {(r.display, r.train_mode, r.variant, r.train_mode_source) for r in records}
    assert seen == {("ITQ", "sampled", False, "protocol"), ("Lin:V", "full", False, "protocol"),
                    ("ADSH", "full", False, "protocol"), ("SDH", "sampled", False, "protocol"),
                    ("SDH-D", "full", True, "protocol")}
    assert main(["report", "--no-figures", "--paper", "--text"]) == 0
    out = capsys.readouterr().out
    assert "Table 1" in out and "Table 2" in out and "ADSH (sampled)" not in out
    assert main(base + ["--methods", "itq", "--train-mode", "full"]) == 0
    forced = [r for r in Store(f"sqlite:///{tmp_path}/results/mlflow.db").trial_records()
              if r.train_mode_source == "--train-mode"]
    assert [(r.method, r.train_mode, r.display) for r in forced] == [("itq", "full", "ITQ-D")]


def test_regime_lists_are_checked():
    with pytest.raises(ConfigError, match="train.full"):
        parse_protocol({"name": "p", "dataset": "d", "query": {"per_class": 1},
                        "train": {"mode": "sampled", "per_class": 1, "full": "adsh"}}, "t")
    proto = parse_protocol({"name": "p", "dataset": "digits", "query": {"per_class": 1},
                            "train": {"mode": "sampled", "per_class": 1, "full": ["adhs"]}}, "t")
    with pytest.raises(ConfigError, match="unknown method 'adhs'.*did you mean 'adsh'"):
        plan_grid(RunConfig(methods=[registry.get("itq")], protocol=proto, bits=[8], seeds=[0]),
                  Reporter(quiet=True))
