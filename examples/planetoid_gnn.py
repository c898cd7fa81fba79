"""Supervised node classification on the Planetoid public splits with GNNs built from the
contrastive operators, each next to PyG's own layer under the same protocol, splits and seeds:

* gcn:       Linear + AlignmentConv propagation      vs  GCNConv   (Kipf & Welling's protocol)
* attention: Linear + AttentionAlignmentConv, 8 heads vs  GATConv   (Velickovic et al.'s protocol)
* jk:        3 GCN layers + StageAggregation("max")   vs  GCNConv + JumpingKnowledge("max")

    python examples/planetoid_gnn.py --datasets Cora CiteSeer --num-seeds 10 --out runs/planetoid_gnn

Prints mean +- std test accuracy (at the epoch of best validation accuracy) over the seeds; per-run
results go to <out>/results.json (an interrupted call resumes from there), the table to
<out>/table.md.
"""

from __future__ import annotations

import time

from mp_contrastive._files import write_text_atomic
from mp_contrastive._reporting import markdown_table, progress_bar
from mp_contrastive.experiments import cli
from mp_contrastive.experiments.graphs import (
    ResultStore,
    add_graph_arguments,
    format_mean_std,
    graph_datasets,
    mean_std,
)
from mp_contrastive.experiments.presets import SUPERVISED_PRESETS
from mp_contrastive.gnn import train_node_classifier

# model family -> (our preset, PyG's preset, published accuracy on Cora / CiteSeer)
FAMILIES = {
    "gcn": ("gcn", "pyg_gcn", {"Cora": 81.5, "CiteSeer": 70.3, "PubMed": 79.0}),
    "attention": ("attention", "pyg_gat", {"Cora": 83.0, "CiteSeer": 72.5, "PubMed": 79.0}),
    "jk": ("jk", "pyg_jk", {}),
}


def build_parser() -> cli.ArgumentParser:
    parser = cli.make_parser(__doc__)
    add_graph_arguments(parser, "runs/planetoid_gnn")
    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=list(FAMILIES),
                        help="model families, each ours next to PyG's")
    parser.add_argument("--beta", type=cli.nonnegative_float, default=None,
                        help=f"attention sharpness of our attention model (default: the preset's, "
                             f"{SUPERVISED_PRESETS['attention'].beta:g})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    datasets = graph_datasets(args)
    presets = dict(SUPERVISED_PRESETS)
    if args.beta is not None:
        presets["attention"] = presets["attention"].replace(beta=args.beta)
    store = ResultStore(args.out, {"script": "planetoid_gnn"})
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    jobs = [(name, preset) for name in datasets for family in args.models
            for preset in FAMILIES[family][:2]]
    bar = progress_bar(len(jobs) * len(seeds), "runs", enabled=not args.no_progress)
    results: dict[tuple[str, str], list[dict]] = {}
    for name, preset in jobs:
        for seed in seeds:
            # The key holds the whole config: a changed preset is run again, not read back.
            run = store.get(f"{name}/{preset}/{seed}/{presets[preset]}",
                            lambda p=preset, n=name, s=seed: train_node_classifier(
                                presets[p], datasets[n], s))
            results.setdefault((name, preset), []).append(run)
            bar.update()
            bar.set_postfix_str(f"{name} {preset} seed {seed}: {run['test_acc']:.1f}")
    bar.close()
    rows = []
    for name in datasets:
        for family in args.models:
            ours, pyg, published = FAMILIES[family]
            a = [r["test_acc"] for r in results[(name, ours)]]
            b = [r["test_acc"] for r in results[(name, pyg)]]
            rows.append([name, family, format_mean_std(a), format_mean_std(b),
                         f"{mean_std(a)[0] - mean_std(b)[0]:+.2f}",
                         published.get(name, "-"),
                         f"{mean_std(r['seconds'] for r in results[(name, ours)])[0]:.0f} / "
                         f"{mean_std(r['seconds'] for r in results[(name, pyg)])[0]:.0f}"])
    table = markdown_table(["dataset", "model", "ours (%)", "PyG (%)", "ours - PyG", "published",
                            "s / run (ours / PyG)"], rows)
    write_text_atomic(store.folder / "table.md", table + "\n")
    print(f"test accuracy at the best validation epoch, mean ± std over {len(seeds)} seeds "
          f"({seeds[0]}..{seeds[-1]})")
    print(table)
    print(f"{time.perf_counter() - started:.0f} s; per-run results in {store.path}")


if __name__ == "__main__":
    cli.run_cli(main)
