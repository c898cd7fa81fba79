"""The image examples' headline figures, produced by the examples themselves:

    python -m benchmarks.headlines [--out runs/headlines] [--seeds 3] [--data-root DIR]
        [--update-docs docs/results.md]

runs ``examples/cifar_simclr_gat.py --preset cpu`` (seed 0) and
``examples/cifar_simsiam_multistage.py --preset cpu`` with ``--multistage off`` and
``--multistage official`` (seeds 0 .. ``--seeds``-1), each in its own folder ``<out>/<run>``, and
tabulates what their ``results.json`` hold: kNN top-1 of the random encoder and after training,
the linear probe, the wall time. A run whose ``results.json`` exists is read, not repeated; one
that stopped part-way (a checkpoint, no results) continues with ``--resume``. So the README's and
docs' headline figures are the landed code's, and regenerating them costs only the runs that
changed. ``--update-docs`` writes the table between ``<!-- results-headlines -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._measure import ROOT
from benchmarks.suite import add_update_docs, replace_marked_section
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    make_parser,
    nonnegative_int,
    output_dir,
    positive_int,
    run_cli,
)
from mp_contrastive.experiments.graphs import mean_std

MARKER = "results-headlines"


@dataclass(frozen=True)
class Arm:
    """One row of the table: an example with fixed options, run once per seed."""

    name: str
    script: str
    options: tuple[str, ...]
    folder: str  # run folders are <out>/<folder>_<seed>
    all_seeds: bool = True  # False: seed 0 only (the flagship's headline is one deterministic run)


ARMS = (
    Arm("SimCLR + attention (official), `cifar_simclr_gat.py --preset cpu`",
        "examples/cifar_simclr_gat.py", ("--preset", "cpu"), "simclr_gat_cpu", all_seeds=False),
    Arm("SimSiam, `cifar_simsiam_multistage.py --preset cpu --multistage off`",
        "examples/cifar_simsiam_multistage.py", ("--preset", "cpu", "--multistage", "off"),
        "simsiam_cpu_off"),
    Arm("SimSiam, `cifar_simsiam_multistage.py --preset cpu --multistage official`",
        "examples/cifar_simsiam_multistage.py", ("--preset", "cpu", "--multistage", "official"),
        "simsiam_cpu_official"),
)


def command(arm: Arm, seed: int, folder: Path, data_root: str | None) -> list[str]:
    """The example's command line for one seed; ``--resume`` when a run stopped part-way."""
    cmd = [sys.executable, str(ROOT / arm.script), *arm.options, "--seed", str(seed),
           "--out", str(folder), "--no-progress"]
    if data_root is not None:
        cmd += ["--data-root", data_root]
    if (folder / "checkpoint.pt").exists():
        cmd.append("--resume")
    return cmd


def results_of(arm: Arm, seed: int, out: Path, data_root: str | None,
               threads: int = 1) -> dict[str, Any]:
    """The run's ``results.json``, running the example first (on ``threads`` torch threads) if
    it is not there."""
    folder = out / f"{arm.folder}_{seed}"
    path = folder / "results.json"
    if not path.exists():
        cmd = command(arm, seed, folder, data_root)
        print(" ".join(cmd), flush=True)
        # The thread count changes the order of the sums, hence the last digits of the figures.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        status = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        if status != 0:  # the example printed its own error above
            raise SystemExit(f"error: {arm.script} (seed {seed}) exited with status {status}; "
                             f"its output folder is {folder}")
    return json.loads(path.read_text())


def spread(values: list[float]) -> str:
    """Mean ± standard deviation (over the seeds, as every table of the project: ``mean_std``),
    or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def table(rows: dict[Arm, list[dict[str, Any]]]) -> str:
    """The headline table: one row per arm, mean ± std over its seeds, then each seed's values."""
    lines = []
    for arm, runs in rows.items():
        initial = [run["knn_top1_initial"] for run in runs]
        final = [run["knn_top1_final"] for run in runs]
        probe = [run["linear_probe"]["test_top1"] for run in runs]
        gain = [b - a for a, b in zip(initial, final, strict=True)]
        per_seed = "; ".join(f"{a:.2f} → {b:.2f}, {p:.2f}"
                             for a, b, p in zip(initial, final, probe, strict=True))
        lines.append([arm.name, len(runs), spread(initial), spread(final), spread(gain),
                      spread(probe), f"{statistics.mean(r['wall_seconds'] for r in runs):.0f}",
                      per_seed])
    return markdown_table(["run", "seeds", "kNN top-1, random init (%)", "kNN top-1, trained (%)",
                           "gain (points)", "linear probe (%)", "wall (s, mean)",
                           "per seed: kNN init → trained, probe"], lines)


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--out", type=output_dir, default="runs/headlines",
                        help="folder of the runs (one sub-folder per run)")
    parser.add_argument("--seeds", type=positive_int, default=3,
                        help="seeds per SimSiam arm (the flagship runs seed 0)")
    parser.add_argument("--data-root", default=None,
                        help="passed to the examples (default: theirs, $MP_CONTRASTIVE_DATA)")
    add_update_docs(parser, MARKER, f"write the table between the {MARKER} markers of PATH")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads of each run (OMP_NUM_THREADS); results differ in "
                             "their last digits from one thread count to another")
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="first seed (runs use seed .. seed+n-1)")
    return parser


def main(argv: list[str] | None = None) -> str:
    args: argparse.Namespace = build_parser().parse_args(argv)
    out = Path(args.out)
    rows = {arm: [results_of(arm, seed, out, args.data_root, args.threads)
                  for seed in range(args.seed, args.seed + (args.seeds if arm.all_seeds else 1))]
            for arm in ARMS}
    report = (f"{table(rows)}\n\n{args.threads} torch thread(s) per run; mean ± standard "
              f"deviation over the seeds (population, as in the graph tables); each run's "
              f"`results.json` is in `{out}/<run>_<seed>`. Produced by `python -m "
              f"benchmarks.headlines --out {out} --threads {args.threads} --update-docs "
              f"docs/results.md`.")
    print(report)
    if args.update_docs:
        replace_marked_section(args.update_docs, MARKER, report)
    return report


if __name__ == "__main__":
    run_cli(main)
