"""Retrieval evaluation: Hamming ranking and metrics (pure functions).

Public entry point: :func:`evaluate` (see ``CONTRACT`` in the module docstring of
``hashbench.evaluation.api``). Modules:

- :mod:`.conventions`: the declared evaluation conventions (:class:`Conventions`);
- :mod:`.ranking`: chunked Hamming ranking statistics (histograms, ranks of relevant items);
- :mod:`.metrics`: the metric formulas, pure functions of those statistics;
- :mod:`.stats`: code health statistics and flags (``collapsed``);
- :mod:`.io`: reading code and label files, packing codes;
- :mod:`.search`: exact Hamming top-k search over packed codes.
"""

from hashbench.evaluation.api import EvaluationResult, evaluate
from hashbench.evaluation.conventions import Conventions
from hashbench.evaluation.inputs import as_codes, to_multihot
from hashbench.evaluation.io import load_codes, load_labels, pack_codes, unpack_codes
from hashbench.evaluation.search import hamming_topk

__all__ = [
    "Conventions",
    "EvaluationResult",
    "as_codes",
    "evaluate",
    "hamming_topk",
    "load_codes",
    "load_labels",
    "pack_codes",
    "to_multihot",
    "unpack_codes",
]
