"""The wheel ships methods/ and protocols/ under hashbench, and plugins install with pip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, capture_output=True)
    (path,) = out.glob("hashbench-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_maps_methods_and_protocols_under_hashbench(wheel):
    names = set(wheel.namelist())
    for source in sorted((REPO / "methods").glob("*.py")):
        assert f"hashbench/methods/{source.name}" in names
    for source in sorted((REPO / "protocols").glob("*.toml")):
        assert f"hashbench/protocols/{source.name}" in names
    for source in sorted((REPO / "hashbench").rglob("*.py")):
        assert source.relative_to(REPO).as_posix() in names, source
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"hashbench"}


PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "hashbench-demo-plugin"
version = "0.1"

[project.entry-points."hashbench.methods"]
demolsh = "hashbench_demo_plugin:DemoLSH"
"""

PLUGIN_MODULE = """
import numpy as np
from hashbench.api import Hasher, MethodMeta, binarize


class DemoLSH(Hasher):
    meta = MethodMeta(name="demolsh", title="DemoLSH", citation="a third-party plugin",
                      family="data-independent")

    def __init__(self, bits=32):
        self.bits = bits

    def fit(self, data, ctx):
        x = np.asarray(data.train.inputs, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        self.w_ = ctx.rng.standard_normal((x.shape[1], self.bits))
        return self

    def encode(self, inputs):
        self._check_fitted("w_")
        return binarize((np.asarray(inputs) - self.mean_) @ self.w_)
"""


def test_pip_installed_plugin_is_listed_and_runs(tmp_path):
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (src / "hashbench_demo_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "-q", "--target", str(target), str(src)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("MLFLOW_TRACKING_URI", None)
    listed = subprocess.run([sys.executable, "-m", "hashbench.cli", "list"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "demolsh" in listed.stdout and "plugin hashbench-demo-plugin" in listed.stdout
    ran = subprocess.run([sys.executable, "-m", "hashbench.cli", "run", "--methods", "demolsh",
                          "--bits", "16", "--quiet"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert "1 finished" in ran.stderr
