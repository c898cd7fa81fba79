"""Loggers of rows of scalars, one row per logged step: a CSV file, TensorBoard, or memory.

Used by :class:`~mp_contrastive.monitor.DynamicsMonitor` for the learning-dynamics diagnostics and
by the image trainer (:class:`~mp_contrastive.vision.trainer.Trainer`) for its loss, learning rate
and kNN accuracy. Anything with ``log(step, metrics)`` and ``close()`` is a :class:`MetricLogger`.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mp_contrastive._files import write_bytes_atomic

__all__ = ["MetricLogger", "MemoryLogger", "CSVLogger", "TensorBoardLogger",
           "tensorboard_available", "truncate_tensorboard"]


@runtime_checkable
class MetricLogger(Protocol):
    """Anything that can take one row of scalars per logged step."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class MemoryLogger:
    """Keeps every row in :attr:`rows` (a list of dicts with a ``"step"`` key)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.rows.append({"step": step, **metrics})

    def close(self) -> None:
        pass


class CSVLogger:
    """Appends one row per logged step to a CSV file whose first column is the step.

    The file is flushed after every row, so it can be read while training runs. When a later row
    brings a column the header lacks (e.g. labels appear only at evaluation steps), the file is
    rewritten once with the extended header; missing values are left empty.

    Args:
        path (str or Path): the CSV file; its folder is created.
        append (bool): keep the rows of an existing file (default ``False``: start afresh).
        index (str): name of the first column, the ``step`` of :meth:`log` (default ``"step"``).
        columns (sequence of str): columns to put in the header, in this order, before any that
            rows bring later (default none); a row without one of them leaves it empty.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False, *, index: str = "step",
                 columns: Sequence[str] = ()) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"'path' must be a str or path, got {type(path).__name__}")
        self.path = Path(path)
        self.index = str(index)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._declared = [self.index, *columns]
        self._columns: list[str] = []
        if append and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self._columns = next(csv.reader(f))
        else:
            self.path.write_text("")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {self.index: step, **metrics}
        wanted = dict.fromkeys([*(self._columns or self._declared), *row])
        new = [k for k in wanted if k not in self._columns]
        if new:
            self._extend_header(new)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns, restval="").writerow(row)

    def _extend_header(self, new: list[str]) -> None:
        old_rows = self._rows() if self._columns else []
        self._columns = self._columns + new
        self._write(old_rows)

    def _rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict[str, str]]) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def truncate(self, below: int) -> None:
        """Keep only the rows whose step is below ``below`` (a run resumed from a checkpoint
        redoes the steps after it and must not log them twice)."""
        if self._columns:
            self._write([row for row in self._rows() if int(row[self.index]) < below])

    def close(self) -> None:
        pass  # every row is written and closed at once

    def __repr__(self) -> str:
        return f"CSVLogger('{self.path}')"


class TensorBoardLogger:
    """Writes each metric as a TensorBoard scalar ``{prefix}/{name}``.

    Args:
        target: a log directory (a ``torch.utils.tensorboard.SummaryWriter`` is created there;
            needs the ``tensorboard`` package), or an existing writer with ``add_scalar`` (e.g. the
            trainer's own, so the dynamics land in the same event files).
        prefix (str): tag prefix (default ``"dynamics"``).

    Attributes:
        log_dir (Path or None): the folder of the writer it created, ``None`` for a given writer.
    """

    def __init__(self, target: Any, prefix: str = "dynamics") -> None:
        if isinstance(target, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError("TensorBoardLogger with a log directory needs the 'tensorboard' "
                                  "package (pip install tensorboard)") from error
            self.writer, self._owned = SummaryWriter(str(target)), True
            self.log_dir: Path | None = Path(target)
        elif callable(getattr(target, "add_scalar", None)):
            self.writer, self._owned = target, False
            self.log_dir = None  # another's writer: its folder is its owner's business
        else:
            raise TypeError(f"'target' must be a log directory or a writer with add_scalar(), "
                            f"got {type(target).__name__}")
        self.prefix = str(prefix)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}/{name}", value, step)

    def flush(self) -> None:
        """Write the pending events to disk (when the writer can)."""
        if callable(getattr(self.writer, "flush", None)):
            self.writer.flush()

    def close(self) -> None:
        if self._owned:
            self.writer.close()
        else:
            self.flush()


def truncate_tensorboard(log_dir: str | os.PathLike, keep: Callable[[str, int], bool]) -> int:
    """Drop from every TensorBoard event file in ``log_dir`` the scalars for which ``keep(tag,
    step)`` is false: a run resumed from a checkpoint redoes the steps after it and must not show
    them twice (TensorBoard would draw both). Each file that loses a value is rewritten whole
    (temporary file, rename); the others, e.g. one a live writer still appends to, are left
    alone. A record cut short by a kill is dropped. Returns the number of values dropped.

    Needs the ``tensorboard`` package, which wrote the files; without event files it does
    nothing."""
    folder = Path(log_dir)
    files = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
    if not files:
        return 0
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in files:
        records, before = [], dropped
        for raw in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(raw)
            values = [value for value in event.summary.value if keep(value.tag, event.step)]
            if len(values) == len(event.summary.value):
                records.append(raw)
                continue
            dropped += len(event.summary.value) - len(values)
            if values:  # an event with several scalars keeps the others
                del event.summary.value[:]
                event.summary.value.extend(values)
                records.append(event.SerializeToString())
        if dropped > before:
            buffer = io.BytesIO()
            writer = RecordWriter(buffer)
            for record in records:
                writer.write(record)
            write_bytes_atomic(path, buffer.getvalue())
    return dropped


def tensorboard_available() -> bool:
    """Whether ``tensorboard`` (needed by ``SummaryWriter``) is importable."""
    return importlib.util.find_spec("tensorboard") is not None
