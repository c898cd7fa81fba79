"""The command line of the example scripts and the benchmarks.

One parser class, one error handler, the arguments every experiment script takes and argparse
``type=`` functions built on the library's own input checks (:mod:`mp_contrastive._validation`),
so that a value the library would reject is refused where it is parsed: an argparse error that
names the flag, exit status 2, nothing written. Checks that involve several arguments (a data
folder that only needs to exist without ``--download``, a batch larger than the training set)
are registered with :meth:`ArgumentParser.add_check` and run right after parsing.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mp_contrastive._paths import DATA_ENV
from mp_contrastive._signals import Interrupted
from mp_contrastive._validation import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
)

__all__ = [
    "ArgumentParser",
    "make_parser",
    "run_cli",
    "add_common_arguments",
    "check_data_root",
    "argument_error",
    "library_error",
    "positive_int",
    "nonnegative_int",
    "int_at_least",
    "positive_float",
    "nonnegative_float",
    "fraction",
    "float_in",
    "comma_choices",
    "output_dir",
    "existing_file",
    "torch_device",
]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` keeps the description's line breaks (the scripts' docstrings) and shows every
    option's default; an option whose default is ``None`` (decided later: a preset, torch) must
    say what it means in its own help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS
                or action.nargs == 0):  # a flag is off unless given
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(value) for value in default)
        shown = f"(default: {default})".replace("%", "%%")
        return f"{text} {shown}" if text else shown


class ArgumentParser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` with :class:`_HelpFormatter` and checks run after parsing:
    a check takes the parsed namespace and raises ``ValueError`` (its message becomes the argparse
    error, exit status 2) when the arguments do not fit together."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._checks: list[Callable[[argparse.Namespace], None]] = []

    def add_check(self, check: Callable[[argparse.Namespace], None]) -> None:
        self._checks.append(check)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        for check in self._checks:
            try:
                check(namespace)
            except ValueError as error:
                self.error(str(error))
        return namespace, extras


def make_parser(doc: str | None, **kwargs: Any) -> ArgumentParser:
    """A parser whose description is a script's whole docstring (never cut mid-sentence)."""
    return ArgumentParser(description=textwrap.dedent(doc or "").strip() or None, **kwargs)


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main``; a user error found after parsing (missing data, a checkpoint that
    does not fit, a setting the library rejects) is printed as one line, exit status 2; Ctrl-C is
    one line too, exit status 130, as is a run stopped by SIGINT or SIGTERM after saving a
    checkpoint (:class:`~mp_contrastive._signals.Interrupted`: its message, status 128 + the
    signal's number), and an ``OSError`` (a full disk: exit status 1). Anything else keeps its
    traceback: the arguments were validated when parsed, so it is a bug."""
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # the machine's fault, not the code's: a full disk, a lost folder
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as stopped:  # a checkpoint was written: say where, and how to go on
        print(f"interrupted: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_status)
    except KeyboardInterrupt:  # Ctrl-C outside training: one line, the shell's status for SIGINT
        print("interrupted: stopped before the end; the image examples resume from their last "
              "checkpoint with --resume", file=sys.stderr)
        sys.exit(130)


def argument_error(flag: str, message: str) -> ValueError:
    """The error a check raises: ``argument --flag: message``, as argparse words its own."""
    return ValueError(f"argument {flag}: {message}")


def library_error(error: Exception, renames: dict[str, str] | None = None) -> str:
    """A library ``ValueError`` (``"'name' must ..."``) worded for the command line: the
    argument's name becomes its flag (``renames`` maps names whose flag differs)."""
    message = str(error)
    found = re.match(r"'(\w+)'", message)
    if found is None:
        return message
    name = found.group(1)
    flag = (renames or {}).get(name, "--" + name.replace("_", "-"))
    return f"argument {flag}: {message}"


# -- argument types ---------------------------------------------------------------------------------
# Each takes the text argparse read and returns the value or raises ArgumentTypeError; argparse
# prefixes the message with "argument --flag: ". The library's checks word their messages as
# "'<name>' must ...": the name is left out here, the flag stands in its place.

_NAME = "value"


def _library(check: Callable[..., Any], value: Any, *extra: Any) -> Any:
    try:
        return check(value, _NAME, *extra)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error).replace(f"'{_NAME}' ", "", 1)) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An int >= 1 (:func:`~mp_contrastive._validation.check_positive_int`)."""
    return _library(check_positive_int, _int(text))


def nonnegative_int(text: str) -> int:
    """An int >= 0 (0 usually meaning "none" or "all", as the option's help says)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {value}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An int >= ``minimum``."""
    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        return value
    parse.__name__ = f"int_at_least_{minimum}"
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0 (:func:`~mp_contrastive._validation.check_positive`)."""
    return _library(check_positive, _float(text))


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (:func:`~mp_contrastive._validation.check_nonnegative`)."""
    return _library(check_nonnegative, _float(text))


def float_in(low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> Callable[[str], float]:
    """A number in the interval from ``low`` to ``high`` (each end closed unless ``*_open``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _float(text)
        inside = (math.isfinite(value) and (value > low if low_open else value >= low)
                  and (value < high if high_open else value <= high))
        if not inside:
            raise argparse.ArgumentTypeError(f"must lie in {interval}, got {value}")
        return value
    parse.__name__ = f"number_in_{interval}"
    return parse


#: A rate or a fraction of a whole: a number in [0, 1).
fraction = float_in(0.0, 1.0, high_open=True)


def comma_choices(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A comma-separated, non-empty list of names drawn from ``choices``
    (:func:`~mp_contrastive._validation.check_choice` for each)."""
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"names no item; choose from {', '.join(choices)}")
        for name in names:
            _library(check_choice, name, tuple(choices))
        return names
    parse.__name__ = "comma_separated_choices"
    return parse


def output_dir(text: str) -> str:
    """A folder to write into: it may not exist yet, but it may not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a file, not a folder")
    for parent in path.absolute().parents:  # the first existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"'{parent}' is a file, not a folder")
            break
    return text


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no file at '{text}'")
    return text


def torch_device(text: str) -> str:
    """A device torch knows and this machine has (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (e.g. cpu, cuda, "
                                         f"cuda:1)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"'{text}' needs a CUDA GPU and this machine has none")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"'{text}': this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"'{text}': the examples run on cpu or cuda")
    return text


# -- the arguments every experiment script takes -------------------------------------------------


def add_common_arguments(parser: ArgumentParser, *, default_out: str | None, data_layout: str,
                         data_default: str = f"${DATA_ENV}", out_help: str = "output folder",
                         seed_help: str = "random seed", download_fills_root: bool = False) -> None:
    """``--seed --data-root --download --out --no-progress``, the arguments the graph and the
    image examples share (:func:`mp_contrastive.experiments.graphs.add_graph_arguments` and
    :func:`mp_contrastive.experiments.vision.add_image_arguments` add their own).

    Args:
        default_out: ``--out``'s default (``None``: the script derives one, ``out_help`` says how).
        data_layout: what the data folder holds, for the help and the errors.
        data_default: where the data is looked for without ``--data-root``, for the help.
        download_fills_root: ``--download`` may create a missing ``--data-root`` (torchvision
            does); otherwise a data folder that does not exist is an error even with it.
    """
    parser.add_argument("--seed", type=nonnegative_int, default=0, help=seed_help)
    parser.add_argument("--data-root", default=None,
                        help=f"folder holding {data_layout} (default: {data_default})")
    parser.add_argument("--download", action="store_true",
                        help="download datasets that are not found (needs internet)")
    parser.add_argument("--out", type=output_dir, default=default_out, help=out_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    def check_data(args: argparse.Namespace) -> None:
        if args.download and download_fills_root:
            return
        if args.data_root is not None:
            check_data_root(args.data_root, f"a folder holding {data_layout}",
                            ", or add --download" if download_fills_root else "")
        elif os.environ.get(DATA_ENV) and not Path(os.environ[DATA_ENV]).is_dir():
            raise argument_error("--data-root", (
                f"not given, and ${DATA_ENV}='{os.environ[DATA_ENV]}' is not a folder; point "
                f"--data-root (or ${DATA_ENV}) at a folder holding {data_layout}"))

    parser.add_check(check_data)


def check_data_root(data_root: str | None, holding: str, suggestion: str = "") -> None:
    """Refuses a ``--data-root`` given as a path that is not a folder (``None``, not given, is
    left to the caller); ``holding`` names the folder to point it at, ``suggestion`` ends the
    message."""
    if data_root is not None and not Path(data_root).is_dir():
        raise argument_error("--data-root", f"folder '{data_root}' does not exist; point "
                                            f"--data-root (or ${DATA_ENV}) at {holding}{suggestion}")
