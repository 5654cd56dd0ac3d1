"""Dataset loaders.

Every loader returns a :class:`~hashbench.datasets.base.Dataset`: features and/or images,
a multi-hot label matrix and a description. Loaders are looked up by name with
:func:`load`; ``digits`` (scikit-learn's bundled 8x8 digits) needs no download.
"""

from hashbench.datasets.base import Dataset, available, load, register_loader

__all__ = ["Dataset", "available", "load", "register_loader"]
