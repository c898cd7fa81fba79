"""Stopping a long run cleanly on Ctrl-C (SIGINT) or SIGTERM (what schedulers, ``kill`` and
``torchrun`` send): the signal is noted, the run finishes its current step, saves a checkpoint
and raises :class:`Interrupted`, which :func:`mp_contrastive.experiments.cli.run_cli` prints as one line."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

__all__ = ["Interrupted", "StopSignals"]

#: The signals that ask a run to stop.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped on a signal after saving its state. A ``KeyboardInterrupt``, so that code
    catching ``Exception`` does not swallow it; :attr:`exit_status` is the shell's status for the
    signal (128 + its number: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + int(signum)


class StopSignals:
    """A context manager: while active, SIGINT and SIGTERM set :attr:`requested` (the signal's
    number) instead of stopping the process, so the loop it guards can stop at a safe point; a
    second signal stops at once (``KeyboardInterrupt``), for a loop stuck somewhere. Signal
    handlers can only be set in the main thread: elsewhere it does nothing (signals keep their
    handlers and :attr:`requested` stays ``None``)."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            # None: a handler set outside Python, which cannot be put back; the default it was
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # type: ignore[arg-type]
        self._previous.clear()
