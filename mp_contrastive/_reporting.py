"""What the example scripts, the image trainer and the benchmarks show a person: a progress bar
and Markdown tables. One copy of each, shared by :mod:`mp_contrastive.gnn`,
:mod:`mp_contrastive.vision` and ``benchmarks/``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["progress_bar", "markdown_table"]


class _SilentBar:
    """The progress bar when there is none to show: every method a bar offers does nothing."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, description: str, enabled: bool = True, *,
                 leave: bool = True) -> Any:
    """A ``tqdm`` bar over ``total`` steps, or, when not ``enabled`` or ``tqdm`` is missing, an
    object with the same ``update``, ``set_postfix``, ``set_postfix_str`` and ``close`` that does
    nothing: callers never check which they got. ``leave=False`` clears the bar once closed."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with the examples extra
            pass
        else:
            return tqdm(total=total, desc=description, leave=leave, dynamic_ncols=True)
    return _SilentBar()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table: ``header``, the separator line and one line per row (cells through
    ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
