"""hashbench: a benchmark suite for learning-to-hash.

Methods register in :mod:`hashbench.registry`, run under a declared protocol
(:mod:`hashbench.protocol`), are evaluated by :mod:`hashbench.evaluation`, recorded in
MLflow (:mod:`hashbench.tracking`) and reported by :mod:`hashbench.report`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hashbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
