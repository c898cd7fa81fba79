"""What the graph example scripts share: arguments (on top of :mod:`mp_contrastive.experiments.cli`), thread
set-up, dataset loading, a resumable store of per-seed results and mean +- std summaries (the
progress bar and Markdown tables are :mod:`mp_contrastive._reporting`'s)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from mp_contrastive._files import write_text_atomic
from mp_contrastive._paths import DATA_ENV
from mp_contrastive.experiments.cli import ArgumentParser, add_common_arguments, positive_int
from mp_contrastive.gnn.data import GRAPH_DATASETS, PLANETOID_NAMES, load_graph, load_planetoid

__all__ = [
    "add_graph_arguments",
    "graph_datasets",
    "ResultStore",
    "mean_std",
    "format_mean_std",
]

#: What ``--data-root`` holds for the graph examples.
_DATA_LAYOUT = "Planetoid/<Name>/raw"


def _graph_name(text: str) -> str:
    """A name :func:`~mp_contrastive.gnn.data.load_graph` knows (``SBM-<nodes>`` included)."""
    known = [n for n in GRAPH_DATASETS if n != "SBM-<nodes>"]
    for name in known:
        if text.lower() == name.lower():
            return name
    if text.upper().startswith("SBM-") and text[4:].replace("_", "").isdigit() \
            and int(text[4:].replace("_", "")) >= 2000:
        return "SBM-" + text[4:].replace("_", "")
    raise argparse.ArgumentTypeError(f"unknown graph {text!r}: one of {', '.join(known)}, or "
                                     f"SBM-<nodes> with at least 2000 nodes (e.g. SBM-1000000)")


def add_graph_arguments(parser: ArgumentParser, default_out: str,
                        any_graph: bool = False) -> None:
    """The common arguments (:func:`mp_contrastive.experiments.cli.add_common_arguments`) and
    ``--datasets --num-seeds --threads``; ``--datasets`` takes the Planetoid graphs, or with
    ``any_graph`` every graph :func:`~mp_contrastive.gnn.data.load_graph` loads."""
    if any_graph:
        parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer"], type=_graph_name,
                            help=f"graphs: {', '.join(GRAPH_DATASETS)} (all but Cora, CiteSeer "
                                 f"and SBM need --download on first use; ogbn-arxiv needs ogb)")
    else:
        parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer"],
                            choices=PLANETOID_NAMES,
                            help="Planetoid graphs (PubMed needs --download)")
    parser.add_argument("--num-seeds", type=positive_int, default=10, help="seeds per row (n)")
    add_common_arguments(parser, default_out=default_out, data_layout=_DATA_LAYOUT,
                         out_help="output folder (results.json, tables)",
                         seed_help="first seed; runs use seed .. seed+n-1")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is fastest for these "
                             "small graphs on a loaded machine)")


def graph_datasets(args: argparse.Namespace) -> dict[str, Data]:
    """The start of a graph example, from the options of :func:`add_graph_arguments`: torch's
    thread count (``--threads``) and the graphs of ``--datasets``
    (:func:`~mp_contrastive.gnn.data.load_graph`; ``--seed`` draws random splits and synthetic
    graphs, a Planetoid graph has its public split whatever the seed). Missing Planetoid data is
    a ``FileNotFoundError`` worded for the command line (``--data-root``,
    ``$MP_CONTRASTIVE_DATA``, ``--download``)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names, root, download, seed = args.datasets, args.data_root, args.download, args.seed
    datasets = {}
    for name in names:
        if name not in PLANETOID_NAMES:
            datasets[name] = load_graph(name, root, download=download, seed=seed)
            continue
        try:
            datasets[name] = load_planetoid(name, root, download=download)
        except FileNotFoundError:
            where = f"under '{root}'" if root is not None else (
                f"under ${DATA_ENV}='{os.environ[DATA_ENV]}'" if os.environ.get(DATA_ENV)
                else f"(neither --data-root nor ${DATA_ENV} is set)")
            raise FileNotFoundError(
                f"no raw Planetoid files for {name} {where} nor in the cache; point --data-root "
                f"(or ${DATA_ENV}) at a folder holding {_DATA_LAYOUT.replace('<Name>', name)}, "
                f"or add --download to let PyG fetch them") from None
    return datasets


class ResultStore:
    """Per-run results in ``<folder>/results.json``, keyed by strings, written after every run so
    that an interrupted experiment resumes where it stopped (a finished key is not run again).
    ``write=False`` (the other ranks of a torchrun job) reads the file but never writes it."""

    def __init__(self, folder: str | Path, settings: dict[str, Any], write: bool = True) -> None:
        self.write = write
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
            if self.write:
                write_text_atomic(self.path, json.dumps({"settings": self.settings,
                                                         "runs": self.runs}, indent=1))
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
