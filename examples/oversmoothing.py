"""Oversmoothing study (paper section 3.1): accuracy vs depth of feature propagation on Planetoid.

Alignment alone (GCN propagation, AlignmentConv) collapses the features as depth grows; the
ContrastiveConv step adds the uniformity on an affinity graph of the current features (each node's
k nearest plus importance-weighted uniform draws, mp_contrastive.knn; or, with --affinity dense,
every other node, exact) and keeps them apart; PyG's PairNorm is the anchor
(mp_contrastive.experiments.oversmoothing). Two readings of depth:

* --mode propagation (default): the steps with no learning in between, a linear probe (SGC's
  protocol) on the features after each depth, one seed;
* --mode trained: a deep classifier of that many layers (a learned linear map before each step,
  ReLU after), trained on the public split (the deep-GCN experiments of PairNorm and ContraNorm);
  mean +- std over --num-seeds seeds.

    python examples/oversmoothing.py --datasets Cora CiteSeer --depths 2 4 8 16 32 64 128 256 \\
        --out runs/oversmoothing
    python examples/oversmoothing.py --mode trained --datasets Cora --depths 2 4 8 16 32 64 \\
        --num-seeds 3 --out runs/oversmoothing_trained

Writes results.json, table.md and accuracy_vs_depth.png to --out.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from torch_geometric.data import Data

from mp_contrastive._files import save_figure_atomic, write_text_atomic
from mp_contrastive._reporting import markdown_table, progress_bar
from mp_contrastive.experiments import cli
from mp_contrastive.experiments.graphs import (
    ResultStore,
    add_graph_arguments,
    format_mean_std,
    graph_datasets,
    mean_std,
)
from mp_contrastive.experiments.oversmoothing import SCHEMES, depth_study, trained_depth_study
from mp_contrastive.knn import AFFINITIES

LABELS = {"alignment": "alignment only (AlignmentConv)", "contrastive": "ContrastiveConv",
          "pairnorm": "alignment + PairNorm"}


def label(scheme: str, affinity: str) -> str:
    return f"{LABELS[scheme]} ({affinity} affinity)" if scheme == "contrastive" else LABELS[scheme]


def plot(rows: list[dict], datasets: list[str], affinity: str, path: Path, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        for scheme in SCHEMES:
            points = sorted((r["depth"], r["test_acc"], r["test_std"]) for r in rows
                            if r["dataset"] == name and r["scheme"] == scheme)
            if points:
                depth, mean, std = (list(column) for column in zip(*points, strict=True))
                ax.errorbar(depth, mean, yerr=std, fmt="o-", capsize=3,
                            label=label(scheme, affinity))
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Oversmoothing: alignment alone collapses,\nuniformity keeps features apart",
                 fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)


def build_parser() -> cli.ArgumentParser:
    parser = cli.make_parser(__doc__)
    add_graph_arguments(parser, "runs/oversmoothing")
    parser.add_argument("--depths", type=cli.nonnegative_int, nargs="+", default=None,
                        help="propagation steps or layers (default: 2 4 ... 256 in propagation "
                             "mode, 2 4 ... 64 in trained mode; trained mode needs depths >= 1)")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES,
                        help="propagation schemes")
    parser.add_argument("--alpha", type=cli.positive_float, default=4.0,
                        help="step size of every scheme")
    parser.add_argument("--tau", type=cli.positive_float, default=2.0,
                        help="temperature of the feature space")
    parser.add_argument("--k", type=cli.positive_int, default=8,
                        help="nearest neighbours per node (fewer than the graph's nodes)")
    parser.add_argument("--num-samples", type=cli.nonnegative_int, default=None,
                        help="importance-weighted uniform draws per node on top of the k nearest "
                             "(default: 64 in propagation mode, 16 in trained mode)")
    parser.add_argument("--affinity", default="knn", choices=AFFINITIES,
                        help="uniformity on the k nearest + sampled tail, or on every other node")
    parser.add_argument("--mode", default="propagation", choices=("propagation", "trained"),
                        help="steps without learning + linear probe, or a trained deep classifier")
    propagation = parser.add_argument_group("propagation mode")
    propagation.add_argument("--probe-weight-decay", type=cli.nonnegative_float, default=5e-4,
                             help="the linear probe's weight decay")
    trained = parser.add_argument_group("trained mode")
    trained.add_argument("--hidden", type=cli.positive_int, default=64, help="hidden width")
    trained.add_argument("--epochs", type=cli.positive_int, default=100, help="epochs")
    trained.add_argument("--lr", type=cli.positive_float, default=0.005,
                         help="Adam's learning rate")
    trained.add_argument("--refresh-every", type=cli.positive_int, default=10,
                         help="training passes between affinity searches")

    def check(args: argparse.Namespace) -> None:
        if args.mode == "trained" and args.depths is not None and 0 in args.depths:
            raise cli.argument_error("--depths", "a trained classifier needs depths >= 1, got 0")

    parser.add_check(check)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    trained = args.mode == "trained"
    if args.depths is None:
        args.depths = [2, 4, 8, 16, 32, 64] + ([] if trained else [128, 256])
    if args.num_samples is None:
        args.num_samples = 16 if trained else 64
    started = time.perf_counter()
    datasets = graph_datasets(args)
    smallest = min(data.num_nodes for data in datasets.values())
    if args.affinity == "knn" and args.k >= smallest:  # known only now that the graphs are loaded
        parser.error(f"argument --k: must be smaller than the number of nodes ({smallest}), "
                     f"got {args.k}")
    keys = ["mode", "depths", "alpha", "tau", "k", "num_samples", "affinity"]
    keys += ["hidden", "epochs", "lr", "refresh_every"] if trained else ["probe_weight_decay", "seed"]
    store = ResultStore(args.out, {key: getattr(args, key) for key in keys})
    seeds = list(range(args.seed, args.seed + args.num_seeds)) if trained else [args.seed]
    step = dict(alpha=args.alpha, tau=args.tau, k=args.k, num_samples=args.num_samples,
                affinity=args.affinity)

    def study(data: Data, scheme: str, seed: int) -> dict:
        if trained:
            return {"rows": trained_depth_study(
                data, args.depths, (scheme,), seed=seed, hidden_channels=args.hidden,
                epochs=args.epochs, lr=args.lr, refresh_every=args.refresh_every, **step)}
        return {"rows": depth_study(data, args.depths, (scheme,), seed=seed,
                                    probe_weight_decay=args.probe_weight_decay, **step)}

    bar = progress_bar(len(datasets) * len(args.schemes) * len(seeds), "runs",
                       enabled=not args.no_progress)
    rows = []
    for name, data in datasets.items():
        for scheme in args.schemes:
            for seed in seeds:
                result = store.get(f"{name}/{scheme}/{seed}",
                                   functools.partial(study, data, scheme, seed))
                rows += [{"dataset": name, "seed": seed, **row} for row in result["rows"]]
                bar.update()
                bar.set_postfix_str(f"{name} {scheme} seed {seed}")
    bar.close()
    summary, table_rows = [], []
    for name in datasets:
        for scheme in args.schemes:
            cells = []
            for depth in args.depths:
                found = [r for r in rows if (r["dataset"], r["scheme"], r["depth"])
                         == (name, scheme, depth)]
                accuracy = [r["test_acc"] for r in found]
                mean, std = mean_std(accuracy)
                summary.append({"dataset": name, "scheme": scheme, "depth": depth,
                                "test_acc": mean, "test_std": std})
                cells.append(format_mean_std(accuracy) if trained else
                             f"{mean:.1f} ({found[0]['mean_cosine']:.2f})")
            table_rows.append([name, label(scheme, args.affinity)] + cells)
    first = "layers" if trained else "propagation"
    table = markdown_table(["dataset", first] + [str(d) for d in args.depths], table_rows)
    write_text_atomic(store.folder / "table.md", table + "\n")
    plot(summary, list(datasets), args.affinity, store.folder / "accuracy_vs_depth.png",
         "layers (trained)" if trained else "propagation steps")
    if trained:
        print(f"test accuracy (%) of a trained classifier with that many layers, at the best "
              f"validation epoch, mean ± std over seeds {seeds[0]}..{seeds[-1]}")
    else:
        print("test accuracy (%) after each number of propagation steps (mean pairwise cosine "
              "of the features; 1 = complete collapse)")
    print(table)
    print(f"{time.perf_counter() - started:.0f} s; written to {store.folder}/")


if __name__ == "__main__":
    cli.run_cli(main)
