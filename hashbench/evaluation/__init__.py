"""Retrieval evaluation: Hamming ranking and metrics (pure functions).

Public entry point: :func:`evaluate` (see ``CONTRACT`` in the module docstring of
``hashbench.evaluation.api``).
"""
