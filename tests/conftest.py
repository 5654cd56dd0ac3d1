"""Shared fixtures: every test runs in its own directory with no MLflow URI from outside, and
the whole session shares one fresh ``$HASHBENCH_CACHE`` (feature caches, the empty-store
template), never the user's."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def session_cache(tmp_path_factory):
    saved = os.environ.get("HASHBENCH_CACHE")
    os.environ["HASHBENCH_CACHE"] = str(tmp_path_factory.mktemp("hashbench-cache"))
    yield
    if saved is None:
        os.environ.pop("HASHBENCH_CACHE", None)
    else:
        os.environ["HASHBENCH_CACHE"] = saved


@pytest.fixture
def plugin_env(tmp_path) -> Callable[[str, str, str], dict[str, str]]:
    """Install a one-module plugin package (entry point ``hashbench.methods``) into a folder of
    ``tmp_path``; returns the environment a CLI subprocess needs to find it."""

    def install(name: str, source: str, cls: str) -> dict[str, str]:
        site = tmp_path / "site"
        info = site / f"{name}_plugin-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[hashbench.methods]\n{name} = {name}_mod:{cls}\n")
        (site / f"{name}_mod.py").write_text(textwrap.dedent(source))
        return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    return install


GATE = """
import os
import time
from pathlib import Path

from hashbench.api import MethodMeta
from hashbench.methods.lsh import LSH


# LSH whose fit waits until the file named by $GATE_FILE exists (and says so by creating
# $GATE_FILE.waiting): a trial that runs for as long as a test needs, at no CPU cost.
class Gate(LSH):
    meta = MethodMeta(name="gate", title="Gate", citation="test", family="data-independent",
                      supervised=False)

    def fit(self, data, ctx):
        gate = os.environ.get("GATE_FILE")
        if gate:
            Path(gate + ".waiting").touch()
        while gate and not Path(gate).exists():
            time.sleep(0.05)
        return super().fit(data, ctx)
"""


@pytest.fixture
def gate_env(plugin_env, tmp_path) -> tuple[dict[str, str], Path]:
    """The environment of a CLI run with the ``gate`` plugin method, and its gate file (absent:
    the trial waits; create it to let the trial finish). ``<gate file>.waiting`` appears when a
    trial starts waiting."""
    gate = tmp_path / "gate-open"
    return {**plugin_env("gate", GATE, "Gate"), "GATE_FILE": str(gate)}, gate


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HASHBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need a CUDA device: skipped, with the reason, when torch sees none."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (torch sees none)")
        for item in gpu:
            item.add_marker(skip)
