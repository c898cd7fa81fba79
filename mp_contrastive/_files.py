"""Writing result files so that a kill or a full disk never leaves a truncated one."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_text_atomic", "write_bytes_atomic", "save_figure_atomic"]


def write_bytes_atomic(path: str | Path, data: bytes,
                       before_replace: Callable[[], None] | None = None) -> Path:
    """Write ``data`` to a temporary file next to ``path``, flush it to the disk and rename it
    over ``path``: readers see the old file or the new one, never a partial one. The temporary
    file is removed if anything fails (the old file is then left as it was).

    ``before_replace`` runs once the new data is safely on the disk and before the rename (the
    checkpoints write their checksum file there, so that no kill leaves a pair that disagrees).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the rename must not reach the disk before the data
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_bytes_atomic` for text (UTF-8)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_figure_atomic(figure: Any, path: str | Path, **kwargs: Any) -> Path:
    """A matplotlib figure's ``savefig`` into memory (the format from ``path``'s suffix), then
    :func:`write_bytes_atomic`: a kill never leaves half a plot."""
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip(".") or None, **kwargs)
    return write_bytes_atomic(path, buffer.getvalue())
