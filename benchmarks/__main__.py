"""Benchmarks from one entry point.

    python -m benchmarks run --suite quick [--domains images,graphs,synthetic] [--seeds N] --out DIR
    python -m benchmarks perf [--out DIR]
    python -m benchmarks gpu-check [--dry-run] [--update-docs docs/performance.md]

``run`` executes the cross-domain matrix (method x dataset x seed; resumable, one JSON per cell)
and writes results.csv, summary.md and summary.png; ``perf`` runs every performance comparison
(each a table with ratios measured in one run) and collects them in perf.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from benchmarks.domains import DOMAINS, build_cells
from benchmarks.suite import (
    add_update_docs,
    markdown_summary,
    replace_marked_section,
    run_cells,
    summarize,
    write_outputs,
)
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    argument_error,
    check_data_root,
    comma_choices,
    make_parser,
    nonnegative_int,
    output_dir,
    positive_int,
)

PERF = {
    # module -> arguments; each prints its own table(s) with ratios
    "losses": [],
    "training_step": [],
    "monitor_overhead": [],
    "affinity": ["--quick"],
    "memory_bank": [],
    "gnn": ["--grace"],
    "layer_overhead": ["--threads", "1"],
}


def machine() -> str:
    cpu = " ".join(part for part in (platform.machine(), platform.processor()) if part)
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")


def perf_section(body: str, machine_line: str) -> str:
    """The perf tables under docs/performance.md's "Tables" heading: one level-3 heading per
    benchmark module, its own headings one level below."""
    lines = []
    for line in body.splitlines():
        if line.startswith("## ") and "`python -m benchmarks." in line:
            lines.append("### " + line[3:])
        elif line.startswith("#"):
            lines.append("#### " + line.lstrip("#").strip())
        else:
            lines.append(line)
    return f"Machine: {machine_line}.\n\n" + "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    domains = args.domains
    seeds = args.seeds if args.seeds is not None else (2 if args.suite == "quick" else 3)
    cells = build_cells(args.suite, domains, seeds, out, args.data_root)
    started = time.perf_counter()
    records = run_cells(cells, out, progress=not args.no_progress)
    paths = write_outputs(records, out)
    header = (f"{args.suite} suite: {len(records)} cells, {seeds} seeds, domains "
              f"{','.join(domains)}; {machine()}; {time.perf_counter() - started:.0f} s this run, "
              f"{sum(r['seconds'] for r in records):.0f} s of cell time in all")
    table = markdown_summary(summarize(records))
    print(f"\n# {header}\n")
    print(table)
    if args.update_docs:
        replace_marked_section(args.update_docs, f"results-{args.suite}",
                               f"{header}.\n\n{table}")
        figure = Path(args.update_docs).parent / "figures" / f"{args.suite}_summary.png"
        if paths["plot"].exists():  # the docs page shows it above the table
            figure.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths["plot"], figure)
    failed = [r for r in records if r["status"] != "ok"]
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    if failed:
        print(f"{len(failed)} cell(s) failed; their errors are in {out}/cells/*.json and a "
              f"re-run retries them")
    return 1 if failed else 0


def perf(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Before the benchmarks run: one of them sets its own thread count (it says so in its table).
    machine_line = machine()
    sections, status = [f"# Performance comparisons\n\nMachine: {machine_line}\n"], 0
    for name, argv in PERF.items():
        if args.only and name not in args.only:
            continue
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as error:
            sections.append(f"## {name}\n\nnot available: {error}\n")
            status = 1
            continue
        buffer = io.StringIO()
        print(f"running benchmarks.{name} ...", file=sys.stderr, flush=True)
        try:
            with contextlib.redirect_stdout(buffer):
                module.main([*argv, "--seed", str(args.seed)])
        except SystemExit as error:
            status = status or int(error.code or 0)
        sections.append(f"## {name}: `python -m benchmarks.{name} {' '.join(argv)}`\n\n"
                        f"{buffer.getvalue()}")
        print(sections[-1], flush=True)
    (out / "perf.md").write_text("\n".join(sections))
    if args.update_docs:
        replace_marked_section(args.update_docs, "results-perf",
                               perf_section("\n".join(sections[1:]), machine_line))
    print(f"written: {out / 'perf.md'}")
    return status


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__, prog="python -m benchmarks")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="the cross-domain matrix",
                                     description="The cross-domain matrix (method x dataset x "
                                                 "seed), resumable.")
    run_parser.add_argument("--suite", choices=["quick", "full"], default="quick",
                            help="quick: about 20 minutes on 2 CPU cores; full: paper scale (GPU)")
    run_parser.add_argument("--domains", type=comma_choices(DOMAINS), default=",".join(DOMAINS),
                            help="comma-separated domains")
    run_parser.add_argument("--seeds", type=positive_int, default=None,
                            help="seeds per cell (default: 2 in the quick suite, 3 in the full one)")
    run_parser.add_argument("--out", type=output_dir, default="runs/benchmarks",
                            help="output folder (cells/*.json, results.csv, summary.md/png)")
    run_parser.add_argument("--data-root", default=None,
                            help="folder holding the data (default: $MP_CONTRASTIVE_DATA)")
    run_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_update_docs(run_parser, lambda args: f"results-{args.suite}",
                    "also write the table into PATH between <!-- results-SUITE --> markers "
                    "(docs/results.md), and the plot to figures/ next to it; default: no file")

    run_parser.add_check(lambda args: check_data_root(args.data_root, "the data folder"))
    perf_parser = commands.add_parser("perf", help="performance comparisons with ratios",
                                      description="Every performance comparison, collected in "
                                                  "<out>/perf.md.")
    perf_parser.add_argument("--out", type=output_dir, default="runs/perf",
                             help="output folder (perf.md)")
    perf_parser.add_argument("--only", nargs="*", choices=list(PERF),
                             help="run only these comparisons (default: all)")
    perf_parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    add_update_docs(perf_parser, "results-perf",
                    "also write the tables into PATH between <!-- results-perf --> markers "
                    "(docs/performance.md; default: no file); all of them, so not with --only")

    def check_perf(args: argparse.Namespace) -> None:
        if args.only and args.update_docs:
            raise argument_error("--only", "--update-docs replaces every table between the "
                                           "markers: run all the comparisons to update the page")

    perf_parser.add_check(check_perf)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu-check"]:  # its own parser and --help (benchmarks/gpu_check.py)
        from benchmarks.gpu_check import main as gpu_check

        return gpu_check(argv[1:])
    args = build_parser().parse_args(argv)
    return run(args) if args.command == "run" else perf(args)


if __name__ == "__main__":
    sys.exit(main())
