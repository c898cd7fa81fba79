"""GRACE-style graph contrastive learning with the operators' loss, on the Planetoid public split:
vanilla (NT-Xent with inter- and intra-view negatives = ContrastiveConv's energy), attention
alignment and multi-stage alignment; linear probe on the frozen encoder. Published
hyper-parameters per dataset (mp_contrastive.experiments.presets.GRACE_PRESETS): on Cora DGL's
public-split settings, the encoder selected by the probe's validation accuracy every 25 of 400
epochs; elsewhere GRACE's config.yaml. --config-yaml runs GRACE's own settings and protocol
(config.yaml, the last epoch's encoder) on every dataset.

    python examples/planetoid_grace.py --datasets Cora CiteSeer --variants vanilla attention \\
        multistage --num-seeds 10 --out runs/planetoid_grace

Graphs past one batch train in mini-batches (--batch-size; PyG's NeighborLoader where pyg-lib or
torch-sparse is installed, else RandomNodeLoader) on any graph of mp_contrastive.gnn.load_graph:

    python examples/planetoid_grace.py --datasets SBM-1000000 --variants vanilla --num-seeds 1 \\
        --batch-size 131072 --epochs 3 --out runs/grace_sbm

and in several processes (DDP, gloo on the CPU): torchrun --nproc-per-node 2
examples/planetoid_grace.py --batch-size ... (each rank takes a share of every epoch's nodes).

Results are stored per run in <out>/results.json; an interrupted call resumes from there.
"""

from __future__ import annotations

import argparse
import time

from mp_contrastive._files import write_text_atomic
from mp_contrastive._reporting import markdown_table, progress_bar
from mp_contrastive.distributed import rank_and_world, setup_distributed
from mp_contrastive.experiments import cli
from mp_contrastive.experiments.graphs import (
    ResultStore,
    add_graph_arguments,
    format_mean_std,
    graph_datasets,
    mean_std,
)
from mp_contrastive.experiments.presets import GRACE_CONFIG_YAML, GRACE_PRESETS
from mp_contrastive.gnn import GRACEConfig, train_grace
from mp_contrastive.gnn.grace_config import VARIANTS
from mp_contrastive.gnn.minibatch import SAMPLERS


def build_parser() -> cli.ArgumentParser:
    parser = cli.make_parser(__doc__)
    add_graph_arguments(parser, "runs/planetoid_grace", any_graph=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="contrastive variants")
    parser.add_argument("--config-yaml", action="store_true",
                        help="GRACE's own settings and protocol (config.yaml) instead of the presets")
    parser.add_argument("--epochs", type=cli.positive_int, default=None,
                        help="override the preset's epochs (default: the dataset's preset)")
    parser.add_argument("--eval-every", type=cli.nonnegative_int, default=None,
                        help="override the preset's model selection: probe every this many epochs "
                             "and keep the best-validation encoder (0: the last epoch's encoder; "
                             "default: the dataset's preset)")
    parser.add_argument("--beta", type=cli.nonnegative_float, default=1.0,
                        help="attention sharpness")
    parser.add_argument("--attention", default="positives",
                        choices=["positives", "negatives", "neighbors"],
                        help="attention normalisation: positives = official code, negatives = paper")
    parser.add_argument("--num-stages", type=cli.positive_int, default=1,
                        help="multi-stage: epochs aggregated")
    parser.add_argument("--multistage-weight", type=cli.positive_float, default=0.5,
                        help="multi-stage: weight of the alignment with the stored epochs")
    parser.add_argument("--negatives", default="auto", choices=["auto", "dense", "knn"],
                        help="negatives: the dense graph, the kNN path, or auto by size")
    parser.add_argument("--batch-size", type=cli.positive_int, default=None,
                        help="train in mini-batches of this many seed nodes (default: the whole "
                             "graph at once); the last epoch's encoder is probed (the Cora "
                             "preset's selection by probe is full-batch only) and kNN edges are "
                             "searched in every batch (the PubMed preset's refresh is not used)")
    parser.add_argument("--sampler", default="auto", choices=list(SAMPLERS),
                        help="mini-batches: neighbor = PyG's NeighborLoader (needs pyg-lib or "
                             "torch-sparse), subgraph = RandomNodeLoader (induced subgraphs), "
                             "auto = neighbor where it can run")
    parser.add_argument("--num-neighbors", type=cli.positive_int, nargs="+", default=[10, 10],
                        help="mini-batches with the neighbor sampler: neighbours per hop")

    def check(args: argparse.Namespace) -> None:
        if args.batch_size is None:
            for flag, value, default in (("--sampler", args.sampler, "auto"),
                                         ("--num-neighbors", args.num_neighbors, [10, 10])):
                if value != default:
                    raise cli.argument_error(flag, "it sets the mini-batches: add --batch-size")
            return
        if args.eval_every:
            raise cli.argument_error("--eval-every", "model selection by probe is full-batch only: "
                                                     "leave it out with --batch-size")

    parser.add_check(check)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_distributed("cpu")  # under torchrun: a gloo process group
    rank, world = rank_and_world()
    if world > 1 and args.batch_size is None:
        raise SystemExit("error: several processes (torchrun) need --batch-size: full-batch "
                         "training runs in one process")
    started = time.perf_counter()
    datasets = graph_datasets(args)
    overrides = {"beta": args.beta, "attention_normalize": args.attention,
                 "num_stages": args.num_stages, "multistage_weight": args.multistage_weight,
                 "negatives": args.negatives}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.eval_every is not None:
        overrides["eval_every"] = args.eval_every or None
    if args.batch_size is not None:  # as --help says: no probe selection, fresh kNN edges
        overrides.update(batch_size=args.batch_size, sampler=args.sampler,
                         num_neighbors=tuple(args.num_neighbors), knn_refresh=1, eval_every=None)
    presets = GRACE_CONFIG_YAML if args.config_yaml else GRACE_PRESETS
    settings = {"overrides": overrides, "config_yaml": args.config_yaml}
    if world > 1:  # each rank trains on its share: not the runs of one process
        settings["processes"] = world
    store = ResultStore(args.out, settings, write=rank == 0)
    seeds = range(args.seed, args.seed + args.num_seeds)
    rows = []
    for name, data in datasets.items():
        for variant in args.variants:
            # Graphs without a preset (Amazon, Coauthor, WikiCS, ogbn-arxiv, SBM) take GRACE's
            # defaults (config.yaml's Cora settings) unless overridden.
            config = presets.get(name, GRACEConfig()).replace(variant=variant, **overrides)
            runs = []
            for seed in seeds:
                key = f"{name}/{variant}/{seed}"
                if key in store:
                    runs.append(store.runs[key])
                    continue
                bar = progress_bar(config.epochs, f"{name} {variant} seed {seed}",
                                   enabled=not args.no_progress and rank == 0)

                def run(config=config, seed=seed, bar=bar, data=data) -> dict:  # noqa: ANN001
                    def tick(epoch: int, loss: float) -> None:
                        bar.update()
                        bar.set_postfix_str(f"loss {loss:.4f}")

                    result = train_grace(config, data, seed, progress=tick)
                    return {key: result[key] for key in
                            ("test_acc", "val_acc", "weight_decay", "seconds", "path",
                             "best_epoch", "checkpoints") if key in result} | {
                        "final_loss": result["losses"][-1]}

                runs.append(store.get(key, run))
                bar.close()
            rows.append([name, variant, format_mean_std(r["test_acc"] for r in runs),
                         format_mean_std(r["val_acc"] for r in runs), len(runs), runs[0]["path"],
                         f"{mean_std(r['seconds'] for r in runs)[0]:.0f}"])
    table = markdown_table(["dataset", "variant", "test acc (%)", "val acc (%)", "seeds",
                            "negatives", "s / run"], rows)
    if rank == 0:
        write_text_atomic(store.folder / "table.md", table + "\n")
        print(table)
        print(f"{time.perf_counter() - started:.0f} s; per-run results in {store.path}")


if __name__ == "__main__":
    cli.run_cli(main)
