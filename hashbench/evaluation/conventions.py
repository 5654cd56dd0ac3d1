"""The declared evaluation conventions.

Every number hashbench reports depends on choices that papers rarely state: how ties in
Hamming distance are ordered, what "relevant" means, what happens to a query without any
relevant item, and what MAP@K divides by. :class:`Conventions` names those choices, records
them as MLflow tags (:meth:`Conventions.as_tags`) and prints them under every table
(:meth:`Conventions.describe`). The defaults are the ADSH authors' evaluation code.

Fixed by the evaluator (not options, but recorded so that a table can say so):

- ranking by Hamming distance, ties broken by database index (stable order);
- relevance: a query and a database item share at least one label;
- an empty Hamming ball counts precision 0 in ``p_r<radius>`` and in the PR curve;
- tie-aware, best-case and worst-case MAP are computed over the whole database.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from hashbench.errors import ConfigError

MAPK_NORMALISATIONS = ("found", "min_k_r")

# Version of the conventions as a whole: bump when a fixed choice above changes.
CONVENTIONS_VERSION = "1"


@dataclass(frozen=True)
class Conventions:
    """How rankings are scored.

    Attributes:
        map_topk: ``None`` for MAP over the whole database; ``K`` for MAP@K.
        drop_zero_relevant: ``False`` (default): a query with no relevant database item
            scores AP 0 and stays in every query average. ``True``: such queries are left
            out of every query average (MAP, P@K, radius metrics, curves).
        mapk_normalisation: what MAP@K divides the summed precisions by: ``"found"`` (the
            number of relevant items found in the top K; ADSH authors) or ``"min_k_r"``
            (``min(K, R)`` with R the number of relevant items in the database).
        precision_ks: the K of each scalar ``p@K`` metric.
        curve_max_k: the P@K / R@K curve runs up to ``min(curve_max_k, n_database)``.
        radius: Hamming radius of the ``p_r<radius>`` / ``r_r<radius>`` metrics.
        map_ks: further MAP@K metrics (``map@K`` for each K, normalised by
            ``mapk_normalisation``) beside ``map``; the cross-modal papers report MAP@50 and
            MAP@500 next to MAP over the whole database.
    """

    map_topk: int | None = None
    drop_zero_relevant: bool = False
    mapk_normalisation: str = "found"
    precision_ks: tuple[int, ...] = (100,)
    curve_max_k: int = 5000
    radius: int = 2
    map_ks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        ks_extra = tuple(self.map_ks)
        if not all(_positive_int(k) for k in ks_extra):
            raise ConfigError(f"map_ks must be positive integers, got {self.map_ks!r}")
        object.__setattr__(self, "map_ks", tuple(int(k) for k in ks_extra))
        if self.map_topk is not None and not _positive_int(self.map_topk):
            raise ConfigError(f"map_topk must be None (whole database) or a positive integer, "
                              f"got {self.map_topk!r}")
        if self.map_topk is not None:
            object.__setattr__(self, "map_topk", int(self.map_topk))
        if self.mapk_normalisation not in MAPK_NORMALISATIONS:
            raise ConfigError(f"mapk_normalisation must be one of {', '.join(MAPK_NORMALISATIONS)}, "
                              f"got {self.mapk_normalisation!r}")
        ks = tuple(self.precision_ks)
        if not all(_positive_int(k) for k in ks):
            raise ConfigError(f"precision_ks must be positive integers, got {self.precision_ks!r}")
        object.__setattr__(self, "precision_ks", tuple(int(k) for k in ks))
        if not _positive_int(self.curve_max_k):
            raise ConfigError(f"curve_max_k must be a positive integer, got {self.curve_max_k!r}")
        object.__setattr__(self, "curve_max_k", int(self.curve_max_k))
        if not _positive_int(self.radius + 1 if _integer(self.radius) else None):
            raise ConfigError(f"radius must be an integer >= 0, got {self.radius!r}")
        object.__setattr__(self, "radius", int(self.radius))
        if not isinstance(self.drop_zero_relevant, bool):
            raise ConfigError(f"drop_zero_relevant must be True or False, got {self.drop_zero_relevant!r}")

    @property
    def map_name(self) -> str:
        """Metric name of the MAP@K variant (``"map@5000"``), or ``"map"`` for the whole database."""
        return "map" if self.map_topk is None else f"map@{self.map_topk}"

    @property
    def radius_names(self) -> tuple[str, str]:
        """Names of the radius precision and recall metrics, e.g. ``("p_r2", "r_r2")``."""
        return f"p_r{self.radius}", f"r_r{self.radius}"

    def as_tags(self) -> dict[str, str]:
        """The conventions as flat string tags (``eval.*``), recorded with every run."""
        return {
            "eval.version": CONVENTIONS_VERSION,
            "eval.tie_order": "database_index_stable",
            "eval.relevance": "share_at_least_one_label",
            "eval.zero_relevant": "dropped" if self.drop_zero_relevant else "ap_0_kept",
            "eval.map_topk": "all" if self.map_topk is None else str(self.map_topk),
            "eval.mapk_normalisation": self.mapk_normalisation,
            "eval.precision_ks": ",".join(str(k) for k in self.precision_ks),
            "eval.curve_max_k": str(self.curve_max_k),
            "eval.radius": str(self.radius),
            "eval.radius_empty": "precision_0",
            "eval.tie_aware": "expected_ap_whole_database",
            # only when set, so that the tags (and run keys) of protocols without it stay as they were
            **({"eval.map_ks": ",".join(str(k) for k in self.map_ks)} if self.map_ks else {}),
        }

    def describe(self) -> str:
        """One sentence that states the conventions, for table captions."""
        if self.map_topk is None:
            what = "MAP over the whole database"
        else:
            divisor = ("the number of relevant items found in the top "
                       f"{self.map_topk}" if self.mapk_normalisation == "found"
                       else f"min({self.map_topk}, number of relevant items)")
            what = f"MAP@{self.map_topk} (summed precision at each relevant item in the top " \
                   f"{self.map_topk}, divided by {divisor})"
        if self.map_ks:
            rule = ("relevant items found in the top K" if self.mapk_normalisation == "found"
                    else "min(K, number of relevant items)")
            what += f", and MAP@K for K = {', '.join(map(str, self.map_ks))} (divided by the {rule})"
        zero = ("queries without a relevant item are left out of the averages"
                if self.drop_zero_relevant else "a query without a relevant item scores AP 0 "
                "and stays in the mean")
        return (f"{what}; Hamming ranking with ties broken by database index; relevant means "
                f"sharing at least one label; {zero}; precision within Hamming radius "
                f"{self.radius} counts an empty ball as 0.")


def _integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value: object) -> bool:
    return _integer(value) and value > 0  # type: ignore[operator]
