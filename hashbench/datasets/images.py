"""Indexable image collections: items are RGB PIL images, loaded on access.

Methods apply their backbone's transform (see ``hashbench.backbones``); feature extraction
applies AlexNet's (:mod:`hashbench.features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hashbench.errors import DataError


class ImageFiles:
    """Images stored as files; ``paths`` are absolute or relative to the working directory."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):  # -> PIL.Image.Image
        from PIL import Image, UnidentifiedImageError

        path = self.paths[int(i)]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"image file not found: {path}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"unreadable image {path}: {exc}") from None

    def identity(self) -> str:
        """A short description that changes when the list of files changes (cache keys)."""
        import hashlib

        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()

    def find_problems(self, progress=None, limit: int | None = None) -> list[str]:
        """Paths that are missing or cannot be decoded (each file is opened and verified)."""
        from PIL import Image

        problems = []
        indices = range(len(self.paths) if limit is None else min(limit, len(self.paths)))
        iterator = progress(indices, total=len(indices), desc="checking images") if progress else indices
        for i in iterator:
            path = self.paths[i]
            try:
                with Image.open(path) as img:
                    img.verify()
            except FileNotFoundError:
                problems.append(f"missing image {path}")
            except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
                problems.append(f"unreadable image {path} ({type(exc).__name__})")
        return problems


class ArrayImages:
    """Images held in a uint8 array of shape (n, H, W, 3) (e.g. CIFAR-10)."""

    def __init__(self, array: np.ndarray) -> None:
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise DataError(f"expected a uint8 (n, H, W, 3) image array, got {array.dtype} {array.shape}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):  # -> PIL.Image.Image
        from PIL import Image

        return Image.fromarray(self.array[int(i)])

    def identity(self) -> str:
        import hashlib

        h = hashlib.sha256()
        h.update(str(self.array.shape).encode())
        h.update(np.ascontiguousarray(self.array).tobytes())
        return h.hexdigest()

    def find_problems(self, progress=None, limit: int | None = None) -> list[str]:
        return []
