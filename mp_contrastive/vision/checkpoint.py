"""The image trainer's checkpoint files: written atomically with a SHA-256 checksum next to them,
verified before they are read, and refused with one clear message when they cannot continue the
run asked for.

``checkpoint.pt`` is a ``torch.save``'d dictionary (loaded with ``weights_only=True``), and
``checkpoint.pt.sha256`` lists, in ``sha256sum``'s format, the SHA-256 of the checkpoint and of
the one it replaced. The checksum file is replaced *before* the checkpoint is renamed into place,
so a kill at any moment leaves a pair that verifies (the old checkpoint matches the second line,
the new one the first); a checksum written after the rename would leave, in that window, an
intact new checkpoint that its stale checksum refuses.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mp_contrastive._files import write_bytes_atomic, write_text_atomic

__all__ = ["FORMAT", "SettingsMismatch", "MISSING", "checksum_path", "save_checkpoint",
           "load_checkpoint", "compare_settings", "plain_settings", "without_former_values"]

#: The layout of the state dictionary; 2 added the run's settings and the position within an epoch.
FORMAT = 2


def checksum_path(path: str | Path) -> Path:
    """Where the checksum of the checkpoint ``path`` lives: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _digests(path: Path) -> list[str]:
    """The hex digests listed in a checksum file (the first word of each line)."""
    return [line.split()[0].lower() for line in path.read_text().splitlines() if line.strip()]


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically, with its checksum (see the module's docstring)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    lines = [f"{digest}  {path.name}"]
    sums = checksum_path(path)
    if path.is_file() and sums.is_file():
        previous = _digests(sums)
        if previous and previous[0] != digest:  # the checkpoint now in place, until the rename
            lines.append(f"{previous[0]}  {path.name}")
    try:
        return write_bytes_atomic(path, data, before_replace=lambda: write_text_atomic(
            sums, "\n".join(lines) + "\n"))
    except OSError as error:  # a full disk, a folder gone: say which file, and that none is lost
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"could not write the checkpoint '{path}' ({reason}); the "
                                   f"previous checkpoint, if any, is intact") from error


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` after verifying its checksum.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: no checksum next to it, a checksum that does not match (a corrupt, truncated
            or edited file), a file that is not a checkpoint, or one of another format; the
            message names the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}' (nothing to resume); run without "
                                f"--resume to start training")
    sums = checksum_path(path)
    fresh = "start a new run in another --out folder"
    if not sums.is_file():
        raise ValueError(
            f"'{path}' has no checksum file '{sums.name}' next to it, so it cannot be verified "
            f"(it was lost, or the checkpoint comes from an older version); {fresh}, or, if you "
            f"trust the checkpoint, write its checksum with `sha256sum {path.name} > {sums.name}` "
            f"in '{path.parent}' and resume again")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() not in _digests(sums):
        raise ValueError(
            f"'{path}' does not match its checksum in '{sums}': the file is corrupt, truncated or "
            f"was changed after it was written; restore it from a copy, or {fresh}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not readable"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"'{path}' cannot be read as a checkpoint ({first}); {fresh}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"'{path}' is not a checkpoint written by this trainer; {fresh}")
    if state["format"] != FORMAT:
        raise ValueError(
            f"'{path}' has checkpoint format {state['format']!r} and this trainer reads format "
            f"{FORMAT} (format 1 stored neither the run's settings nor the position within an "
            f"epoch, so it cannot be checked or continued exactly); {fresh}")
    return state


def plain_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with every value a plain type (``weights_only`` loading reads nothing else):
    tuples become lists, anything not a number, string, bool, ``None`` or container its ``str``."""
    def plain(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, Mapping):
            return {str(key): plain(item) for key, item in value.items()}
        return str(value)
    return {str(key): plain(value) for key, value in settings.items()}


def without_former_values(settings: Mapping[str, Any],
                          former: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` less each one named in ``former`` (settings added after checkpoints were first
    written) whose value is ``former``'s: the value that reproduces the runs from before it. Stored
    only at another value, such a setting lets an older checkpoint (which lacks it) resume at that
    value, and refuses it at any other."""
    return {key: value for key, value in settings.items()
            if not (key in former and value == former[key])}


class SettingsMismatch(ValueError):
    """A checkpoint written by a run with other settings; :attr:`differences` maps each setting's
    name to ``(stored, now)`` (:data:`MISSING` where one side lacks it)."""

    def __init__(self, path: Path, differences: dict[str, tuple[Any, Any]],
                 name: Callable[[str], str] = str) -> None:
        self.path = path
        self.differences = differences
        listed = "; ".join(f"{name(key)}: stored {stored!r}, now {now!r}"
                           for key, (stored, now) in differences.items())
        super().__init__(
            f"cannot resume from '{path}': it was written by a run with other settings "
            f"({listed}); resume with the stored values, or start a new run in another --out "
            f"folder")

    def renamed(self, name: Callable[[str], str]) -> SettingsMismatch:
        """The same error with each setting shown as ``name(setting)`` (e.g. its flag)."""
        return SettingsMismatch(self.path, self.differences, name)


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


#: Stands for a setting one side of a comparison lacks.
MISSING: Any = _Missing()


def compare_settings(stored: Mapping[str, Any], now: Mapping[str, Any], path: Path) -> None:
    """Raise :class:`SettingsMismatch` listing every setting whose value differs between the
    checkpoint (``stored``) and this run (``now``); nothing when they agree."""
    now = plain_settings(now)
    differences = {key: (stored.get(key, MISSING), now.get(key, MISSING))
                   for key in dict.fromkeys([*stored, *now])
                   if stored.get(key, MISSING) != now.get(key, MISSING)}
    if differences:
        raise SettingsMismatch(path, differences)
