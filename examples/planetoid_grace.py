"""GRACE-style graph contrastive learning with the operators' loss, on the Planetoid public split:
vanilla (NT-Xent with inter- and intra-view negatives = ContrastiveConv's energy), attention
alignment and multi-stage alignment; linear probe on the frozen encoder. Published
hyper-parameters per dataset (mp_contrastive.gnn.GRACE_PRESETS): on Cora DGL's
public-split settings, the encoder selected by the probe's validation accuracy every 25 of 400
epochs; elsewhere GRACE's config.yaml. --config-yaml runs GRACE's own settings and protocol
(config.yaml, the last epoch's encoder) on every dataset.

    python examples/planetoid_grace.py --datasets Cora CiteSeer --variants vanilla attention \\
        multistage --num-seeds 10 --out runs/planetoid_grace

Results are stored per run in <out>/results.json; an interrupted call resumes from there.
"""

from __future__ import annotations

import time

from mp_contrastive._files import write_text_atomic
from mp_contrastive.cli import (
    ArgumentParser,
    make_parser,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    run_cli,
)
from mp_contrastive.gnn import GRACE_CONFIG_YAML, GRACE_PRESETS, train_grace
from mp_contrastive.gnn.experiment import (
    ResultStore,
    add_graph_arguments,
    format_mean_std,
    load_datasets,
    markdown_table,
    mean_std,
    progress_bar,
    setup_threads,
)
from mp_contrastive.gnn.grace_config import VARIANTS


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    add_graph_arguments(parser, "runs/planetoid_grace")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="contrastive variants")
    parser.add_argument("--config-yaml", action="store_true",
                        help="GRACE's own settings and protocol (config.yaml) instead of the presets")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="override the preset's epochs (default: the dataset's preset)")
    parser.add_argument("--eval-every", type=nonnegative_int, default=None,
                        help="override the preset's model selection: probe every this many epochs "
                             "and keep the best-validation encoder (0: the last epoch's encoder; "
                             "default: the dataset's preset)")
    parser.add_argument("--beta", type=nonnegative_float, default=1.0, help="attention sharpness")
    parser.add_argument("--attention", default="positives",
                        choices=["positives", "negatives", "neighbors"],
                        help="attention normalisation: positives = official code, negatives = paper")
    parser.add_argument("--num-stages", type=positive_int, default=1,
                        help="multi-stage: epochs aggregated")
    parser.add_argument("--multistage-weight", type=positive_float, default=0.5,
                        help="multi-stage: weight of the alignment with the stored epochs")
    parser.add_argument("--negatives", default="auto", choices=["auto", "dense", "knn"],
                        help="negatives: the dense graph, the kNN path, or auto by size")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_threads(args.threads)
    started = time.perf_counter()
    datasets = load_datasets(args.datasets, args.data_root, args.download)
    overrides = {"beta": args.beta, "attention_normalize": args.attention,
                 "num_stages": args.num_stages, "multistage_weight": args.multistage_weight,
                 "negatives": args.negatives}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.eval_every is not None:
        overrides["eval_every"] = args.eval_every or None
    presets = GRACE_CONFIG_YAML if args.config_yaml else GRACE_PRESETS
    store = ResultStore(args.out, {"overrides": overrides, "config_yaml": args.config_yaml})
    seeds = range(args.seed, args.seed + args.num_seeds)
    rows = []
    for name, data in datasets.items():
        for variant in args.variants:
            config = presets[name].replace(variant=variant, **overrides)
            runs = []
            for seed in seeds:
                key = f"{name}/{variant}/{seed}"
                if key in store:
                    runs.append(store.runs[key])
                    continue
                bar = progress_bar(config.epochs, f"{name} {variant} seed {seed}", args.no_progress)

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
    write_text_atomic(store.folder / "table.md", table + "\n")
    print(table)
    print(f"{time.perf_counter() - started:.0f} s; per-run results in {store.path}")


if __name__ == "__main__":
    run_cli(main)
