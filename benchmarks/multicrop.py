"""Seconds per SimCLR optimiser step with N global and M small crops of every image (augmentation,
one forward per crop size, loss, backward, LARS step), each setting timed in interleaved rounds:

    python -m benchmarks.multicrop [--crops 2+0 2+2 2+6 4+0] [--small-size 18] [--threads 1]

The small crops are the image examples' (``--num-small-crops``): the global crops' augmentation at
``--small-size`` pixels over the examples' default area range (``SMALL_CROP_DEFAULTS`` in
mp_contrastive.experiments.vision: solo-learn's CIFAR multi-crop). The model is the CPU preset's
(ResNet-10, width 16), the images random: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import platform

import torch

from benchmarks._measure import add_measure_arguments, interleaved_times, seed_and_threads
from benchmarks.training_step import make_step
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, argument_error, int_at_least, make_parser
from mp_contrastive.experiments.vision import GLOBAL_CROP_SIZE, SMALL_CROP_DEFAULTS
from mp_contrastive.vision import ProjectionHead, SimCLRAugment, SimCLRModel, resnet_cifar
from mp_contrastive.vision.methods import SimCLRMethod
from mp_contrastive.vision.models import ARCHITECTURES


def crop_setting(text: str) -> tuple[int, int]:
    """``N+M``: ``N >= 2`` global crops and ``M >= 0`` small ones of every image."""
    parts = text.split("+")
    if len(parts) != 2 or not all(part.isdigit() for part in parts) or int(parts[0]) < 2:
        raise argparse.ArgumentTypeError(f"must be N+M with N >= 2 global and M >= 0 small crops "
                                         f"(e.g. 2+6), got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--crops", type=crop_setting, nargs="+",
                        default=[(2, 0), (2, 2), (2, 6), (4, 0)], metavar="N+M",
                        help="settings to time: N global and M small crops of every image")
    parser.add_argument("--small-size", type=int_at_least(1),
                        default=SMALL_CROP_DEFAULTS["small_crop_size"],
                        help=f"the small crops' side in pixels (below the global "
                             f"{GLOBAL_CROP_SIZE})")
    parser.add_argument("--batch-size", type=int_at_least(2), default=256, help="images per step")
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="resnet10",
                        help="ResNet architecture")
    parser.add_argument("--width", type=int_at_least(1), default=16,
                        help="first-stage width of the ResNet")
    add_measure_arguments(parser, repeats=5)

    def check(args: argparse.Namespace) -> None:
        if args.small_size >= GLOBAL_CROP_SIZE:
            raise argument_error("--small-size", f"must be below the global crops' "
                                                 f"{GLOBAL_CROP_SIZE}, got {args.small_size}")

    parser.add_check(check)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    seed_and_threads(args.seed, args.threads)
    images = torch.randint(0, 256, (args.batch_size, 3, GLOBAL_CROP_SIZE, GLOBAL_CROP_SIZE),
                           dtype=torch.uint8)
    augment = SimCLRAugment(size=GLOBAL_CROP_SIZE)
    small = SimCLRAugment(size=args.small_size, scale=(SMALL_CROP_DEFAULTS["small_crop_min"],
                                                       SMALL_CROP_DEFAULTS["small_crop_max"]))
    steps = {}
    for large, few in args.crops:
        torch.manual_seed(args.seed)
        backbone = resnet_cifar(args.arch, args.width)
        method = SimCLRMethod(SimCLRModel(backbone, ProjectionHead(backbone.out_dim)), 0.2)
        steps[(large, few)] = make_step(method, images, augment, args.seed, num_views=large,
                                        small_augment=small, num_small_views=few)
    times = interleaved_times({f"{n}+{m}": step for (n, m), step in steps.items()},
                              args.repeats, warmup=1, statistic=min)
    first = times[f"{args.crops[0][0]}+{args.crops[0][1]}"]
    rows = [[f"{n} global + {m} small", f"{times[f'{n}+{m}']:.2f}",
             f"{times[f'{n}+{m}'] / first:.2f}"] for n, m in args.crops]
    print(f"# SimCLR step with multi-crop: {args.arch} width {args.width}, batch {args.batch_size},"
          f" small crops {args.small_size} px, {platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; fastest of {args.repeats} interleaved steps\n")
    print(markdown_table(["views per image", "seconds per step",
                          f"vs {args.crops[0][0]} global + {args.crops[0][1]} small"], rows))


if __name__ == "__main__":
    main()
