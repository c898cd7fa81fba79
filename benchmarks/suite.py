"""The cross-domain benchmark runner: a matrix of cells (domain x dataset x method x seed), each
run once and stored as one JSON file, then aggregated into a CSV, a Markdown table and plots.

Resumable: a cell whose JSON says ``"status": "ok"`` is not run again; a failed cell is recorded
with its error (the others' results are kept) and retried on the next run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mp_contrastive.experiments.cli import ArgumentParser, argument_error, existing_file

__all__ = ["Cell", "cell_key", "run_cells", "summarize", "SummaryRow", "markdown_summary", "write_outputs",
           "replace_marked_section", "add_update_docs"]


def cell_key(domain: str, dataset: str, method: str, seed: int) -> str:
    """A file-name-safe identifier of a cell."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{domain}__{dataset}__{method}__seed{seed}")


@dataclass(frozen=True)
class Cell:
    """One run: ``run()`` returns a dict of metrics. ``baseline`` names the method this one is
    compared with (same domain and dataset), ``None`` for a baseline itself. ``metrics`` lists the
    metrics to report, the first being the one plotted."""

    domain: str
    dataset: str
    method: str
    seed: int
    run: Callable[[], dict[str, float]] = field(compare=False, repr=False)
    baseline: str | None = None
    metrics: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return cell_key(self.domain, self.dataset, self.method, self.seed)


def run_cells(cells: Iterable[Cell], out_dir: str | Path, progress: bool = True,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell not finished before; return all records (old and new) in cell order."""
    cells = list(cells)
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError("two cells share the same (domain, dataset, method, seed)")
    folder = Path(out_dir) / "cells"
    folder.mkdir(parents=True, exist_ok=True)
    bar = _progress(len(cells)) if progress else None
    records = []
    for cell in cells:
        path = folder / f"{cell.key}.json"
        record = _load(path)
        if record is None or record.get("status") != "ok":
            if bar is not None:
                bar.set_description(cell.key[:60])
            record = _execute(cell)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)
            if record["status"] != "ok":
                log(f"cell {cell.key} FAILED: {record['error'].strip().splitlines()[-1]}")
        records.append(record)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return records


def _execute(cell: Cell) -> dict[str, Any]:
    record: dict[str, Any] = {"domain": cell.domain, "dataset": cell.dataset,
                              "method": cell.method, "seed": cell.seed,
                              "baseline": cell.baseline, "metrics_reported": list(cell.metrics)}
    started = time.perf_counter()
    try:
        metrics = cell.run()
        record.update(status="ok", metrics={k: float(v) for k, v in metrics.items()})
    except Exception:  # noqa: BLE001 - a failing cell is reported, not fatal to the suite
        record.update(status="failed", metrics={}, error=traceback.format_exc())
    record["seconds"] = time.perf_counter() - started
    return record


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


@dataclass
class SummaryRow:
    domain: str
    dataset: str
    method: str
    metric: str
    n: int
    mean: float
    std: float
    baseline: str | None = None
    difference: float | None = None
    p_value: float | None = None


def summarize(records: Iterable[dict[str, Any]]) -> list[SummaryRow]:
    """Mean and sample standard deviation per (domain, dataset, method, metric) over seeds, and the
    difference to the baseline's mean with Welch's t-test p-value (when both have 2+ seeds)."""
    values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    baselines: dict[tuple[str, str, str], str | None] = {}
    order: list[tuple[str, str, str, str]] = []
    for record in records:
        if record.get("status") != "ok":
            continue
        group = (record["domain"], record["dataset"], record["method"])
        baselines[group] = record.get("baseline")
        wanted = record.get("metrics_reported") or sorted(record["metrics"])
        for metric in wanted:
            if metric in record["metrics"]:
                key = (*group, metric)
                if key not in values:
                    order.append(key)
                values[key].append(record["metrics"][metric])
    rows = []
    for key in order:
        domain, dataset, method, metric = key
        sample = values[key]
        row = SummaryRow(domain, dataset, method, metric, len(sample), statistics.fmean(sample),
                         statistics.stdev(sample) if len(sample) > 1 else 0.0)
        base = baselines.get((domain, dataset, method))
        if base is not None and (domain, dataset, base, metric) in values:
            reference = values[(domain, dataset, base, metric)]
            row.baseline = base
            row.difference = row.mean - statistics.fmean(reference)
            row.p_value = welch_p_value(sample, reference)
        rows.append(row)
    return rows


def welch_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value; ``None`` with fewer than 2 values on a side, and 1.0 (or 0.0)
    when both sides have no spread (equal or different means)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a), statistics.variance(b)
    if va == 0 and vb == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def markdown_summary(rows: list[SummaryRow]) -> str:
    """One table: mean ± std over seeds, and the difference to the baseline with its p-value
    (``*`` marks p < 0.05)."""
    lines = ["| domain | dataset | method | metric | mean ± std (n) | vs baseline |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        versus = ""
        if r.difference is not None:
            p = "" if r.p_value is None else f", p={r.p_value:.3f}" + ("*" if r.p_value < 0.05
                                                                       else "")
            versus = f"{r.difference:+.4g} vs {r.baseline}{p}"
        lines.append(f"| {r.domain} | {r.dataset} | {r.method} | {r.metric} | "
                     f"{r.mean:.4g} ± {r.std:.2g} ({r.n}) | {versus} |")
    return "\n".join(lines)


def write_outputs(records: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``results.csv`` (one row per cell and metric), ``summary.md``, ``summary.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "markdown": out / "summary.md", "plot": out / "summary.png"}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["domain", "dataset", "method", "seed", "status", "metric", "value",
                         "seconds"])
        for r in records:
            items = sorted(r["metrics"].items()) or [("", math.nan)]
            for metric, value in items:
                writer.writerow([r["domain"], r["dataset"], r["method"], r["seed"], r["status"],
                                 metric, value, f"{r['seconds']:.1f}"])
    rows = summarize(records)
    failed = [r for r in records if r["status"] != "ok"]
    text = markdown_summary(rows)
    if failed:
        text += "\n\nFailed cells: " + ", ".join(
            f"{r['domain']}/{r['dataset']}/{r['method']}/seed{r['seed']}" for r in failed)
    paths["markdown"].write_text(text + "\n")
    _plot(records, rows, paths["plot"])
    return paths


def _plot(records: list[dict[str, Any]], rows: list[SummaryRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = {}
    for r in records:
        if r.get("metrics_reported"):
            primary.setdefault((r["domain"], r["dataset"]), r["metrics_reported"][0])
    panels = [key for key in primary if any(
        (row.domain, row.dataset) == key and row.metric == primary[key] for row in rows)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (domain, dataset) in zip(axes[0], panels, strict=True):
        metric = primary[(domain, dataset)]
        chosen = [row for row in rows
                  if (row.domain, row.dataset, row.metric) == (domain, dataset, metric)]
        ax.bar(range(len(chosen)), [row.mean for row in chosen],
               yerr=[row.std for row in chosen], capsize=3,
               color=["#1f77b4" if row.baseline is None else "#ff7f0e" for row in chosen])
        ax.set_xticks(range(len(chosen)), [row.method for row in chosen], rotation=35,
                      ha="right", fontsize=8)
        low = min(row.mean - row.std for row in chosen)
        high = max(row.mean + row.std for row in chosen)
        pad = 0.15 * (high - low) + 1e-9
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"{domain}: {dataset}\n{metric} (mean ± std over seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("blue: baselines, orange: variants compared with their baseline", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _progress(total: int):  # noqa: ANN202 - tqdm is optional
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="benchmark cells", dynamic_ncols=True)


def replace_marked_section(path: str | Path, name: str, text: str) -> None:
    """Replace what lies between ``<!-- name -->`` and ``<!-- /name -->`` in the file at ``path``
    (docs/results.md, docs/performance.md), so the published tables are the suite's own output."""
    path = Path(path)
    content = path.read_text()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise ValueError(f"{path} must hold exactly one '{start}' ... '{end}' pair")
    head, rest = content.split(start)
    _, tail = rest.split(end)
    path.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")


def add_update_docs(parser: ArgumentParser, marker: str | Callable[[argparse.Namespace], str],
                    help_text: str) -> None:
    """``--update-docs PATH``: the results also go into ``PATH`` between the ``marker`` comments
    (a name, or a function of the parsed arguments). The file is checked for the markers when the
    arguments are parsed, so a long run does not end on an error."""
    parser.add_argument("--update-docs", metavar="PATH", type=existing_file, default=None,
                        help=help_text)
    name = marker if callable(marker) else (lambda _: marker)

    def check(args: argparse.Namespace) -> None:
        if args.update_docs is None:
            return
        start, end = f"<!-- {name(args)} -->", f"<!-- /{name(args)} -->"
        text = Path(args.update_docs).read_text()
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise argument_error("--update-docs", f"'{args.update_docs}' must hold exactly one "
                                                  f"'{start}' ... '{end}' pair")

    parser.add_check(check)
