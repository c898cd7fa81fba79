"""What the graph example scripts share: arguments, thread set-up, dataset loading, a resumable
store of per-seed results, mean +- std summaries and Markdown tables."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from mp_contrastive.gnn.data import PLANETOID_NAMES, load_planetoid

__all__ = [
    "add_common_arguments",
    "setup_threads",
    "load_datasets",
    "ResultStore",
    "mean_std",
    "format_mean_std",
    "markdown_table",
    "progress_bar",
    "run_cli",
]


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--datasets --seed --num-seeds --data-root --out --threads --no-progress``."""
    parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer"],
                        choices=PLANETOID_NAMES, help="Planetoid graphs (PubMed needs --download)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; runs use seed .. seed+n-1")
    parser.add_argument("--num-seeds", type=int, default=10, help="seeds per row (n)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding Planetoid/<Name>/raw (default $MP_CONTRASTIVE_DATA)")
    parser.add_argument("--download", action="store_true",
                        help="let PyG download datasets that are not found (e.g. PubMed)")
    parser.add_argument("--out", default=default_out, help="output folder (results.json, tables)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is fastest for these "
                             "small graphs on a loaded machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def setup_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"'--threads' must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def load_datasets(names: Sequence[str], root: str | None, download: bool) -> dict[str, Data]:
    return {name: load_planetoid(name, root, download=download) for name in names}


class ResultStore:
    """Per-run results in ``<folder>/results.json``, keyed by strings, written after every run so
    that an interrupted experiment resumes where it stopped (a finished key is not run again)."""

    def __init__(self, folder: str | Path, settings: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "results.json"
        self.runs: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if stored.get("settings") == settings:
                self.runs = stored.get("runs", {})
        self.settings = settings

    def __contains__(self, key: str) -> bool:
        return key in self.runs

    def get(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in self.runs:
            result = compute()
            # Merge with what other processes sharing the folder wrote meanwhile.
            if self.path.exists():
                stored = json.loads(self.path.read_text())
                if stored.get("settings") == self.settings:
                    self.runs = {**stored.get("runs", {}), **self.runs}
            self.runs[key] = result
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"settings": self.settings, "runs": self.runs}, indent=1))
            os.replace(tmp, self.path)
        return self.runs[key]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for a single value)."""
    values = list(values)
    if not values:
        raise ValueError("'values' is empty")
    return statistics.fmean(values), statistics.pstdev(values)


def format_mean_std(values: Iterable[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def progress_bar(total: int, description: str, disable: bool) -> Any:
    """A tqdm bar (a no-op object when tqdm is missing or ``disable``)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the examples extra
        disable = True
    if disable:
        class _Silent:
            def update(self, n: int = 1) -> None: ...
            def set_postfix_str(self, text: str) -> None: ...
            def close(self) -> None: ...
        return _Silent()
    return tqdm(total=total, desc=description, dynamic_ncols=True)


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's ``main``; a user error (missing data, bad setting) is printed as one line,
    exit status 2."""
    try:
        main()
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
