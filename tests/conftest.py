"""Shared fixtures: every test runs in its own directory with no MLflow URI from outside."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HASHBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
