"""How dense ``rows x cols`` work (similarities, softmaxes, top-k) is cut into tiles.

One setting shared by the blockwise uniformity engine, the attention's row log-sum-exp and the exact
kNN search: each holds at most one tile of ``elements`` entries of an ``N x M`` matrix at a time.
It is passed in (operators take ``tiling=``), never read from a module global.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mp_contrastive._validation import check_positive_int

__all__ = ["Tiling", "DEFAULT_TILING", "check_tiling"]


@dataclass(frozen=True)
class Tiling:
    """Tile sizes for dense ``num_rows x num_cols`` work.

    Args:
        elements (int): entries per tile (default ``1 << 22``, 16 MiB in float32).
        threshold (int): on the CPU, dense matrices with more entries than this are processed
            tile by tile; at or below it the plain path (one matrix, in place) is as fast and
            stays ``torch.compile``-able (default ``1 << 24``).
        cuda_threshold (int): the same on a CUDA device (default ``1 << 27``, 512 MiB per float32
            matrix). Higher, because a GPU has the memory and pays a kernel launch per tile: at
            N = 8192 the tiles took 19 ms on an H200 where one matrix took 3.3 ms
            (``docs/performance.md``, GPU check).
    """

    elements: int = 1 << 22
    threshold: int = 1 << 24
    cuda_threshold: int = 1 << 27

    def __post_init__(self) -> None:
        check_positive_int(self.elements, "elements")
        for name in ("threshold", "cuda_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"'{name}' must be a non-negative int, got {value!r}")

    def blockwise(self, num_rows: int, num_cols: int,
                  device: torch.device | None = None) -> bool:
        """Whether a ``num_rows x num_cols`` matrix on ``device`` (the CPU when ``None``) is too
        large to hold whole."""
        limit = self.cuda_threshold if device is not None and device.type == "cuda" \
            else self.threshold
        return num_rows * num_cols > limit

    def shape(self, num_rows: int, num_cols: int, min_cols: int = 1,
              max_cols: int | None = None) -> tuple[int, int]:
        """``(rows, cols)`` of a tile: whole rows when a row fits (at most ``max_cols`` columns,
        at least ``min_cols``), as many rows as fill the tile."""
        cols = min(num_cols, max(min_cols, self.elements if max_cols is None
                                 else min(self.elements, max_cols)))
        return max(1, min(num_rows, self.elements // max(cols, 1))), max(cols, 1)

    def spans(self, size: int, step: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of consecutive spans of ``step`` over ``range(size)``."""
        for start in range(0, size, step):
            yield start, min(size, start + step)


#: The tiling operators use unless given another.
DEFAULT_TILING = Tiling()


def check_tiling(tiling: object) -> Tiling:
    """``tiling`` must be a :class:`Tiling` (a ``TypeError`` names the argument otherwise)."""
    if not isinstance(tiling, Tiling):
        raise TypeError(f"'tiling' must be a Tiling (mp_contrastive.nn.functional.Tiling), "
                        f"got {type(tiling).__name__}")
    return tiling
