"""Graph contrastive learning against graph size: mini-batch GRACE (ours) next to full-batch GRACE
(ours, dense affinity graph in tiles; and GRACE as its authors' code computes it: PyG's GCNConv and
the NT-Xent by autograd over the whole 2N x 2N similarity matrix) on planted-partition graphs of
10k, 100k and 1M nodes, in one run:

    python -m benchmarks.graph_scale [--sizes 10000 100000 1000000] [--parts 8] [--seed 0]
        [--probe-epochs 1] [--update-docs docs/performance.md]

Every cell runs in its own process (so that its peak resident memory is its own) under an address-
space limit of ``--memory-gib`` (24 by default, the machine's memory): a cell that needs more
fails there with an out-of-memory error, which the table records. A cell whose time would be far
beyond the others (our full-batch dense path above ``--dense-max`` nodes: its cost grows as
(2N)^2, its memory does not) is not run; the table says so and gives the time extrapolated from
``--dense-max``.

The graphs: ``planted_partition_graph`` with ``--features`` class-correlated features, 5 classes,
``--degree`` average degree, homophily 0.8. Mini-batches: PyG's NeighborLoader where pyg-lib or
torch-sparse is installed, else RandomNodeLoader with ``--parts`` parts (batch = N / parts nodes);
negatives within each batch (dense up to 16,384 views, above it the kNN affinity graph with a head
of ``--knn-k`` and a tail of ``--knn-samples`` per anchor). The largest graph's mini-batch cell
trains ``--probe-epochs`` epochs (its time is per epoch) and probes its encoder linearly, next to
the same probe of the untrained encoder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from benchmarks.suite import add_update_docs, replace_marked_section
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import (
    ArgumentParser,
    make_parser,
    nonnegative_int,
    positive_float,
    positive_int,
)

MARKER = "results-graph-scale"
METHODS = {
    "minibatch": "mini-batch GRACE (ours)",
    "dense": "full-batch GRACE (ours, dense tiles)",
    "reference": "full-batch GRACE (authors' form: GCNConv + autograd NT-Xent)",
}
TARGET_GIB = 24.0


def make_graph(num_nodes: int, features: int, degree: int, seed: int):
    from mp_contrastive.gnn import planted_partition_graph

    return planted_partition_graph(num_nodes, features, 5, num_nodes * degree // 2, seed=seed,
                                   signal=1.0, num_val=500, num_test=1000)


def config_for(method: str, num_nodes: int, parts: int, epochs: int, knn: tuple[int, int]):
    from mp_contrastive.gnn import GRACEConfig

    config = GRACEConfig(hidden=128, proj_hidden=128, epochs=epochs)
    if method == "minibatch":
        return config.replace(batch_size=math.ceil(num_nodes / parts), knn_k=knn[0],
                              knn_samples=knn[1])
    if method == "dense":
        return config.replace(negatives="dense")
    return config.replace(variant="reference")


def child(method: str, num_nodes: int, args) -> dict:
    """One cell, in this process: the graph, ``epochs`` of training, peak resident memory."""
    from mp_contrastive.gnn import GRACEEncoder, GRACEModel, embed_nodes, linear_probe, train_grace

    torch.set_num_threads(args.threads)
    data = make_graph(num_nodes, args.features, args.degree, args.seed)
    epochs = args.probe_epochs if args.probe else 1
    config = config_for(method, num_nodes, args.parts, epochs, (args.knn_k, args.knn_samples))
    result: dict = {"edges": int(data.num_edges)}
    if args.probe:
        torch.manual_seed(args.seed)
        untrained = GRACEModel(GRACEEncoder(data.num_features, config.hidden), config.hidden,
                               config.proj_hidden).eval()
        result["untrained_acc"] = linear_probe(embed_nodes(untrained, data), data,
                                               seed=args.seed)["test_acc"]
    try:
        run = train_grace(config, data, args.seed, evaluate=args.probe)
    except (MemoryError, RuntimeError) as error:
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        result.update(status="out of memory", error=str(error).splitlines()[0][:160])
    else:
        result.update(status="ok", seconds=run["seconds"] / epochs, path=run.get("path"),
                      steps=run.get("steps", epochs) // epochs, final_loss=run["losses"][-1])
        if args.probe:
            result["test_acc"] = run["test_acc"]
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB
    return result


def run_cell(method: str, num_nodes: int, args) -> dict:
    """``child`` in a fresh process under the address-space limit."""
    command = [sys.executable, "-m", "benchmarks.graph_scale", "--child", method, str(num_nodes),
               "--features", str(args.features), "--degree", str(args.degree), "--parts",
               str(args.parts), "--seed", str(args.seed), "--threads", str(args.threads),
               "--knn-k", str(args.knn_k), "--knn-samples", str(args.knn_samples),
               "--probe-epochs", str(args.probe_epochs), "--memory-gib", str(args.memory_gib)]
    if args.probe:
        command.append("--probe")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ,
                                                                       "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        memory = "memory" in done.stderr.lower() or done.returncode in (-9, 137)
        return {"status": "out of memory" if memory else "failed", "error": last[:160],
                "wall": time.perf_counter() - started}
    return json.loads(done.stdout.strip().splitlines()[-1]) | {
        "wall": time.perf_counter() - started}


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[10_000, 100_000,
                                                                          1_000_000],
                        help="numbers of nodes")
    parser.add_argument("--features", type=positive_int, default=128, help="feature size")
    parser.add_argument("--degree", type=positive_int, default=10, help="average degree")
    parser.add_argument("--parts", type=positive_int, default=8,
                        help="mini-batches per epoch (RandomNodeLoader parts)")
    parser.add_argument("--dense-max", type=positive_int, default=10_000,
                        help="largest graph our full-batch dense path is run on (the authors' "
                             "form is run on every size: it fits or fails at once)")
    parser.add_argument("--knn-k", type=positive_int, default=16,
                        help="mini-batches' kNN path: head per anchor")
    parser.add_argument("--knn-samples", type=positive_int, default=64,
                        help="mini-batches' kNN path: sampled tail per anchor")
    parser.add_argument("--probe-epochs", type=nonnegative_int, default=1,
                        help="the largest graph's mini-batch cell trains this many epochs and "
                             "probes its encoder (0: one epoch, no probe)")
    parser.add_argument("--memory-gib", type=positive_float, default=TARGET_GIB,
                        help="address-space limit of each cell")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads per cell")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    add_update_docs(parser, MARKER, f"write the tables between the {MARKER} markers of PATH")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child:
        limit = int(args.memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return
    header = (f"# Graph scale: planted partition, {args.features} features, degree {args.degree}, "
              f"{args.parts} parts, {platform.machine()}, {args.threads} threads, "
              f"limit {args.memory_gib:g} GiB, torch {torch.__version__}; load average at start "
              f"{os.getloadavg()[0]:.1f} (other processes sharing the cores slow every cell)")
    print(header + "\n", flush=True)
    rows, cells = [], {}
    for n in args.sizes:
        for method, label in METHODS.items():
            if method == "dense" and n > args.dense_max:
                base = cells.get((method, args.dense_max))
                guess = (f"; extrapolated {duration(base['seconds'] * (n / args.dense_max) ** 2)}"
                         f" per epoch" if base and base.get("status") == "ok" else "")
                rows.append([f"{n:,}", label, "not run", "-", "-", f"(2N)^2 = {(2 * n) ** 2:.1e} "
                             f"similarities{guess}"])
                continue
            args.probe = bool(args.probe_epochs) and method == "minibatch" and n == max(args.sizes)
            cell = run_cell(method, n, args)
            cells[(method, n)] = cell
            if cell["status"] == "ok":
                note = f"{cell['steps']} step(s), negatives {cell['path']}"
                rows.append([f"{n:,}", label, f"{cell['seconds']:.1f}", f"{cell['peak_gib']:.2f}",
                             "PASS" if cell["peak_gib"] <= TARGET_GIB else "FAIL", note])
            else:
                rows.append([f"{n:,}", label, cell["status"], "-", "FAIL", cell["error"]])
            print(" | ".join(map(str, rows[-1])), flush=True)
    table = markdown_table(["nodes", "method", "s / epoch", "peak GiB", f"<= {TARGET_GIB:g} GiB",
                            "notes"], rows)
    sections = [header, "## One epoch\n\n" + table]
    probed = cells.get(("minibatch", max(args.sizes)), {})
    if "test_acc" in probed:
        sections.append(
            f"## Linear probe, {max(args.sizes):,} nodes, {args.probe_epochs} epoch(s) of "
            f"mini-batch GRACE\n\n"
            + markdown_table(["encoder", "test acc (%)"],
                             [["untrained (same seed)", f"{probed['untrained_acc']:.2f}"],
                              [f"trained, {args.probe_epochs} epoch(s)",
                               f"{probed['test_acc']:.2f}"]])
            + "\n\nchance: 20.00% (5 classes)")
    sections.append(f"load average at the end {os.getloadavg()[0]:.1f}")
    report = "\n\n".join(sections)
    print("\n" + report)
    if args.update_docs:
        replace_marked_section(args.update_docs, MARKER, report)


if __name__ == "__main__":
    main()
