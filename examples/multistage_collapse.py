"""The paper's Figure 2(a) at CPU scale: multi-stage alignment alone, for several k.

Alignment alone (no predictor, no uniformity) collapses the features; aligning each view with the
aggregate of its sample's features from the last k epochs should keep them apart, more so for
larger k. For each k this trains the same encoder with the same seed and reports the backbone
features' effective rank, the per-dimension standard deviation of the normalised projections
(1/sqrt(d) without collapse, 0 at complete collapse) and the kNN accuracy; it writes a Markdown
table, a JSON file and a PNG plot.

    python examples/multistage_collapse.py --stages 1 2 4 8 --out runs/multistage_collapse
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mp_contrastive._files import save_figure_atomic, write_text_atomic
from mp_contrastive.dynamics import effective_rank
from mp_contrastive.experiments import cli
from mp_contrastive.experiments.vision import DATA_LAYOUT, load_splits
from mp_contrastive.vision import SimCLRAugment, resnet_cifar
from mp_contrastive.vision.evaluation import extract_features, knn_accuracy
from mp_contrastive.vision.methods import SimSiamMethod
from mp_contrastive.vision.models import ARCHITECTURES
from mp_contrastive.vision.trainer import TrainConfig, Trainer


def run_one(stages: int, splits, args: argparse.Namespace) -> dict[str, float]:  # noqa: ANN001
    torch.manual_seed(args.seed)
    backbone = resnet_cifar(args.arch, args.width)
    method = SimSiamMethod(backbone, backbone.out_dim, len(splits.train), proj_dim=args.proj_dim,
                           proj_hidden_dim=args.proj_dim, pred_hidden_dim=args.proj_dim,
                           multistage="alone", num_stages=stages, aggr="mean")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd",
                         lr=args.lr * args.batch_size / 256, weight_decay=1e-5, warmup=0.0,
                         seed=args.seed, out_dir=str(Path(args.out) / f"k{stages}"),
                         progress=not args.no_progress, tensorboard=False, eval_every=args.epochs)
    trainer = Trainer(method, backbone, splits.train, SimCLRAugment(), config,
                      monitor=(splits.bank, splits.queries))
    history = trainer.fit()
    features = extract_features(backbone, splits.bank.images)
    projections = extract_features(lambda x: method.projector(backbone(x)), splits.bank.images)
    query_features = extract_features(backbone, splits.queries.images)
    return {
        "k": stages,
        "effective_rank": float(effective_rank(features, center=True)),
        "projection_std": float(F.normalize(projections, dim=1).std(0).mean()),
        "knn_top1": knn_accuracy(features, splits.bank.labels, query_features,
                                 splits.queries.labels, splits.bank.num_classes,
                                 k=min(200, len(splits.bank))),
        "knn_top1_initial": history["knn_initial"],
        "final_loss": history["epochs"][-1]["loss"],
        "feature_dim": features.size(1), "projection_dim": projections.size(1),
    }


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = [("effective_rank", f"effective rank (of {rows[0]['feature_dim']})"),
              ("projection_std", "std of normalised projections"),
              ("knn_top1", "kNN top-1 (%)")]
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot(ks, [r[key] for r in rows], "o-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (epochs aggregated)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].axhline(1 / rows[0]["projection_dim"] ** 0.5, ls="--", c="gray",
                    label="no collapse: 1/sqrt(d)")
    axes[1].legend(fontsize=8)
    axes[2].axhline(rows[0]["knn_top1_initial"], ls="--", c="gray", label="random init")
    axes[2].axhline(100 / 10, ls=":", c="red", label="chance")
    axes[2].legend(fontsize=8)
    fig.suptitle("Multi-stage alignment alone (no predictor, no uniformity): "
                 "larger k, less collapse?")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)


def build_parser() -> cli.ArgumentParser:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--stages", type=cli.positive_int, nargs="+", default=[1, 2, 4, 8],
                        help="the values of k (epochs aggregated), one run each")
    parser.add_argument("--epochs", type=cli.positive_int, default=16, help="training epochs")
    parser.add_argument("--train-subset", type=cli.nonnegative_int, default=2048,
                        help="class-balanced training images (0 = all)")
    parser.add_argument("--monitor-queries", type=cli.nonnegative_int, default=1000,
                        help="held-out images for the kNN accuracy (0 = the whole test set)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=256, help="batch size")
    parser.add_argument("--lr", type=cli.positive_float, default=0.5, help="base lr (x batch/256)")
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="resnet10",
                        help="ResNet architecture")
    parser.add_argument("--width", type=cli.positive_int, default=8,
                        help="first-stage width of the ResNet")
    parser.add_argument("--proj-dim", type=cli.positive_int, default=256,
                        help="projector and predictor width")
    cli.add_common_arguments(parser, default_out="runs/multistage_collapse",
                             data_layout=DATA_LAYOUT,
                             out_help="output folder (table.md, results.json, collapse.png, runs)",
                             download_fills_root=True)

    def check(args: argparse.Namespace) -> None:
        if args.train_subset and args.batch_size > args.train_subset:
            raise cli.argument_error("--batch-size", f"{args.batch_size} is larger than the "
                                                     f"training set (--train-subset "
                                                     f"{args.train_subset})")

    parser.add_check(check)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    settings = {"dataset": "cifar10", "train_subset": args.train_subset,
                "monitor_queries": args.monitor_queries}
    splits = load_splits(settings, args.data_root, args.download, args.seed)
    rows = [run_one(k, splits, args) for k in args.stages]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = "| k | effective rank | projection std | kNN top-1 (%) | final loss |"
    lines = [header, "|---|---|---|---|---|"] + [
        f"| {r['k']} | {r['effective_rank']:.2f} | {r['projection_std']:.4f} | "
        f"{r['knn_top1']:.2f} | {r['final_loss']:.4f} |" for r in rows]
    table = "\n".join(lines)
    write_text_atomic(out / "table.md", table + "\n")
    write_text_atomic(out / "results.json", json.dumps({"args": vars(args), "rows": rows},
                                                        indent=2))
    plot(rows, out / "collapse.png")
    print(table)
    print(f"random-init kNN top-1 {rows[0]['knn_top1_initial']:.2f}%; "
          f"no-collapse projection std 1/sqrt({rows[0]['projection_dim']}) = "
          f"{1 / rows[0]['projection_dim'] ** 0.5:.4f}; {time.perf_counter() - started:.0f} s; "
          f"written to {out}/")


if __name__ == "__main__":
    cli.run_cli(main)
