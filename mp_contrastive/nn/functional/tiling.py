"""How dense ``rows x cols`` work (similarities, softmaxes, top-k) is cut into tiles.

One setting shared by the blockwise uniformity engine, the attention's row log-sum-exp and the exact
kNN search: each holds at most one tile of ``elements`` entries of an ``N x M`` matrix at a time.
It is passed in (operators take ``tiling=``), never read from a module global.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mp_contrastive._validation import check_positive_int

__all__ = ["Tiling", "DEFAULT_TILING", "check_tiling"]


@dataclass(frozen=True)
class Tiling:
    """Tile sizes for dense ``num_rows x num_cols`` work.

    Args:
        elements (int): entries per tile (default ``1 << 22``, 16 MiB in float32).
        threshold (int): dense matrices with more entries than this are processed tile by tile;
            at or below it the plain path (one matrix, in place) is as fast and stays
            ``torch.compile``-able (default ``1 << 24``).
    """

    elements: int = 1 << 22
    threshold: int = 1 << 24

    def __post_init__(self) -> None:
        check_positive_int(self.elements, "elements")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) \
                or self.threshold < 0:
            raise ValueError(f"'threshold' must be a non-negative int, got {self.threshold!r}")

    def blockwise(self, num_rows: int, num_cols: int) -> bool:
        """Whether a ``num_rows x num_cols`` matrix is too large to hold whole."""
        return num_rows * num_cols > self.threshold

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
