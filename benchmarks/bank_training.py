"""The flagship with and without a memory bank: batch-only SimCLR, a dense bank and a kNN bank,
on the CPU preset, several seeds per arm (each run one process; finished runs are reused).

    python -m benchmarks.bank_training --seeds 0 1 2 --jobs 2 --update-docs docs/results.md

Every run is ``examples/cifar_simclr_gat.py --preset cpu --attention off --seed S`` plus the arm's
bank options, with ``--threads`` torch threads each, ``--jobs`` runs at a time (the arms
interleaved, so that they share the machine alike). The table gives, per arm, the final kNN top-1
and the linear probe (mean +- sample std over seeds) and the mean seconds per training step (from
each run's ``steps.csv``), and says whether the kNN arm lies within one standard deviation of the
dense-bank arm.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._measure import ROOT
from benchmarks.suite import add_update_docs, replace_marked_section
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    fraction,
    make_parser,
    nonnegative_int,
    output_dir,
    positive_int,
)

MARKER = "results-memory-bank"


def arms(size: int, momentum: float) -> dict[str, list[str]]:
    bank = ["--memory-bank", str(size), "--key-momentum", str(momentum)]
    return {"batch-only SimCLR": [],
            f"bank {size}, dense": [*bank, "--affinity", "dense"],
            f"bank {size}, kNN": [*bank, "--affinity", "knn"]}


def run(out: Path, options: list[str], seed: int, threads: int, data_root: str | None) -> dict:
    """One run's results.json (the run is made first unless it finished before)."""
    results = out / "results.json"
    if not results.exists():
        command = [sys.executable, str(ROOT / "examples" / "cifar_simclr_gat.py"), "--preset",
                   "cpu", "--attention", "off", "--seed", str(seed), "--out", str(out),
                   "--no-progress", *options]
        if data_root is not None:
            command += ["--data-root", data_root]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        out.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.log", "w") as log:
            subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    record = json.loads(results.read_text())
    with open(out / "steps.csv") as steps:
        speeds = [float(row["images_per_s"]) for row in csv.DictReader(steps)]
    batch = record["settings"]["batch_size"]
    record["seconds_per_step"] = statistics.mean(batch / speed for speed in speeds)
    return record


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1, 2],
                        help="seeds per arm")
    parser.add_argument("--memory-bank", type=positive_int, default=16384, help="bank size K")
    parser.add_argument("--key-momentum", type=fraction, default=0.99,
                        help="momentum of the bank's key encoder (0: the model's own keys)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=positive_int, default=2, help="runs at a time")
    parser.add_argument("--out", type=output_dir, default="runs/bank_training",
                        help="one folder per run")
    parser.add_argument("--data-root", default=None, help="CIFAR-10 location (default: "
                        "$MP_CONTRASTIVE_DATA)")
    add_update_docs(parser, MARKER, f"write the table between the {MARKER} markers of PATH")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    plan = arms(args.memory_bank, args.key_momentum)
    jobs = [(name, seed) for seed in args.seeds for name in plan]
    folder = {name: f"arm{i}" for i, name in enumerate(plan)}

    def one(job: tuple[str, int]) -> dict:
        name, seed = job
        out = Path(args.out) / f"{folder[name]}_seed{seed}"
        record = run(out, plan[name], seed, args.threads, args.data_root)
        print(f"done: {name}, seed {seed} ({out}): kNN top-1 {record['knn_top1_final']:.2f}%",
              file=sys.stderr, flush=True)
        return record

    with ThreadPoolExecutor(args.jobs) as pool:
        records = dict(zip(jobs, pool.map(one, jobs), strict=True))
    rows, summary = [], {}
    for name in plan:
        runs = [records[(name, seed)] for seed in args.seeds]
        knn = mean_std([r["knn_top1_final"] for r in runs])
        probe = mean_std([r["linear_probe"]["test_top1"] for r in runs])
        step = mean_std([r["seconds_per_step"] for r in runs])
        summary[name] = knn
        rows.append([name, f"{knn[0]:.2f} ± {knn[1]:.2f}", f"{probe[0]:.2f} ± {probe[1]:.2f}",
                     f"{step[0]:.3f}", ", ".join(f"{r['knn_top1_final']:.2f}" for r in runs)])
    header = (f"CPU preset (8,192 images, 10 epochs, batch 256), `--attention off`, seeds "
              f"{', '.join(map(str, args.seeds))}, {args.threads} torch thread(s) per run, "
              f"{args.jobs} runs at a time; bank K = {args.memory_bank}, key momentum "
              f"{args.key_momentum}")
    table = markdown_table(["arm", "kNN top-1 (%)", "linear probe (%)", "s / step",
                            "kNN top-1 per seed"], rows)
    dense, knn = summary[f"bank {args.memory_bank}, dense"], summary[f"bank {args.memory_bank}, kNN"]
    gap = abs(knn[0] - dense[0])
    verdict = (f"kNN arm - dense arm: {knn[0] - dense[0]:+.2f} points; dense std {dense[1]:.2f}: "
               f"{'within' if gap <= dense[1] else 'NOT within'} one standard deviation")
    text = f"{header}.\n\n{table}\n\n{verdict}"
    print(text)
    if args.update_docs is not None:
        replace_marked_section(args.update_docs, MARKER, text)


if __name__ == "__main__":
    main()
