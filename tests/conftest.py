"""Shared fixtures: every test runs in its own directory with no MLflow URI from outside."""

from __future__ import annotations

import pytest


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
