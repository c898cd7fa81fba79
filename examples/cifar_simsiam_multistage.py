"""SimSiam with multi-stage (JumpingKnowledge-over-epochs) aggregation on CIFAR.

    python examples/cifar_simsiam_multistage.py                        # --multistage official
    python examples/cifar_simsiam_multistage.py --multistage off       # plain SimSiam
    python examples/cifar_simsiam_multistage.py --multistage paper --stages 4 --aggr mean

``official``: the paper's code (k = 1 stored epoch of view-2 projections, target
0.5 z_now + 0.5 z_previous_epoch after a warm-up); ``paper``: the same with --stages k and
--aggr; ``alone``: multi-stage alignment without the predictor (the paper's Figure 2a).
"""

from __future__ import annotations

import argparse

from mp_contrastive.experiments import cli
from mp_contrastive.experiments import vision as harness
from mp_contrastive.vision.methods import MULTISTAGE_MODES, SimSiamMethod

PRESETS = {
    # The official run: MULTI-STAGE-GRAPH-AGGREGATION/scripts/pretrain/cifar/simsiam.sh with
    # solo-learn's defaults (SGD momentum 0.9, lr 0.5 x batch/256, wd 1e-5, batch 256, projector
    # 2048, predictor 512, 10 warm-up epochs, zero-initialised residual branches, stem padding 2,
    # normalised inputs, fp16 mixed precision), 200 epochs as the paper (the script says 1000), and
    # multi-stage from the 52nd epoch: the official code switches it on when its epoch counter,
    # 0 at the start, exceeds 50 (solo/methods/simsiam.py). docs/results.md tabulates the sources.
    # The official SimSiam side ships no CIFAR linear evaluation (its one linear script is for
    # ImageNet-100 and calls a main_linear.py it lacks; solo-learn logs an online classifier while
    # pretraining), so the probe is the GRAPH-ATTENTION code's, as for SimCLR.
    "paper": dict(dataset="cifar10", arch="resnet18", width=64, batch_size=256, epochs=200,
                  optimizer="sgd", lr=0.5, weight_decay=1e-5, warmup=10 / 200, train_subset=0,
                  monitor_queries=0, probe_epochs=164, probe="official", jitter_strength=0.5,
                  proj_dim=2048, pred_dim=512, multistage_warmup=51, stem_padding=2,
                  zero_init_residual=True, normalize=True, precision="fp16"),
    # Minutes on 2 CPU cores, and SimSiam learns. Short trials at 1 thread (docs/results.md):
    # the former preset (SGD lr 0.5, wd 1e-5, batch 256, crops from 8% of the image, 4,096
    # images) lost kNN accuracy, and so did SGD with wd 5e-4; batch 128 (twice the steps) with
    # crops from 20% (SimSiam's CIFAR setting) gained a little, the official run's input
    # normalisation and zero-initialised residual branches more, AdamW more still. At full length
    # (seed 0, 1 thread): lr 2e-3 x batch/256 gave kNN +8.75 points over the random encoder,
    # 4e-3 +9.65.
    "cpu": dict(dataset="cifar10", arch="resnet10", width=16, batch_size=128, epochs=8,
                optimizer="adamw", lr=4e-3, weight_decay=1e-4, warmup=0.05, train_subset=8192,
                monitor_queries=2000, probe_epochs=100, jitter_strength=0.5, crop_min=0.2,
                proj_dim=512, pred_dim=128, multistage_warmup=2, normalize=True,
                zero_init_residual=True),
}


#: Why SimSiam takes exactly two views of one size: ``--num-crops 2`` only, and no small crops.
TWO_VIEWS = ("SimSiam takes two views of one size (it predicts each from the other, and the "
             "multi-stage memory stores view 2)")


def build_parser() -> cli.ArgumentParser:
    parser = cli.make_parser(__doc__)
    harness.add_image_arguments(parser, PRESETS, "runs/simsiam_<multistage>_<preset>_seed<seed>",
                                lr_note="base rate, multiplied by batch_size / 256 (SimSiam's "
                                        "linear scaling rule, as solo-learn)",
                                two_views=lambda args: TWO_VIEWS, small_crops=False)
    parser.add_argument("--multistage", choices=MULTISTAGE_MODES, default="official",
                        help="multi-stage aggregation (off: plain SimSiam)")
    parser.add_argument("--stages", type=cli.positive_int, default=None,
                        help="epochs kept per sample (k; default 1, the only value of "
                             "--multistage official)")
    parser.add_argument("--aggr", choices=["sum", "mean", "max", "decay"], default=None,
                        help="how the stored epochs are aggregated (default mean, the only "
                             "value of --multistage official)")
    parser.add_argument("--multistage-warmup", type=cli.nonnegative_int,
                        help=harness.preset_help(PRESETS, "multistage_warmup",
                                                 "epochs of plain SimSiam first"))
    parser.add_argument("--proj-dim", type=cli.positive_int,
                        help=harness.preset_help(PRESETS, "proj_dim", "projector width"))
    parser.add_argument("--pred-dim", type=cli.positive_int,
                        help=harness.preset_help(PRESETS, "pred_dim", "predictor hidden width"))

    def check(args: argparse.Namespace) -> None:
        # The official code keeps one epoch, averaged: other values are never replaced silently.
        if args.multistage == "official":
            if args.stages not in (None, 1):
                raise cli.argument_error("--stages", f"--multistage official keeps one stored "
                                         f"epoch (k = 1), got {args.stages}: use --multistage "
                                         f"paper for k > 1")
            if args.aggr not in (None, "mean"):
                raise cli.argument_error("--aggr", f"--multistage official averages (mean), got "
                                         f"'{args.aggr}': use --multistage paper for another "
                                         f"aggregation")
        if args.multistage in ("paper", "official"):
            harness.check_warmup_epochs(args, PRESETS, "multistage_warmup",
                                        "multi-stage aggregation")
        if args.stages is None:
            args.stages = 1
        if args.aggr is None:
            args.aggr = "mean"

    parser.add_check(check)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Train SimSiam with the chosen multi-stage aggregation on CIFAR and evaluate the encoder
    (kNN, linear probe). From the command line or in-process with ``argv``; returns the results
    that also go to ``<out>/results.json``."""
    args = build_parser().parse_args(argv)

    run = harness.start_run(args, PRESETS)
    settings = run.settings
    settings.update(multistage=args.multistage, stages=args.stages, aggr=args.aggr,
                    seed=args.seed)
    method = SimSiamMethod(run.backbone, run.backbone.out_dim, len(run.splits.train),
                           proj_dim=settings["proj_dim"], proj_hidden_dim=settings["proj_dim"],
                           pred_hidden_dim=settings["pred_dim"], multistage=args.multistage,
                           num_stages=args.stages, aggr=args.aggr,
                           warmup_epochs=settings["multistage_warmup"])
    # Linear scaling rule of SimSiam: lr = base * batch / 256.
    settings["lr"] = settings["lr"] * settings["batch_size"] / 256
    out = args.out or f"runs/simsiam_{args.multistage}_{settings['preset']}_seed{args.seed}"
    return harness.train_and_evaluate(
        method, run, args, out,
        f"SimSiam (multi-stage: {args.multistage}, k={args.stages}, {args.aggr})")


if __name__ == "__main__":
    cli.run_cli(main)
