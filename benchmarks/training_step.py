"""One SimCLR training step (augment, forward, loss, backward, optimiser), ours vs lightly.

Same backbone, batch, augmentations and optimiser; ours uses SimCLRLoss (or the attention losses)
and the official projector, lightly its NTXentLoss and SimCLRProjectionHead. Median over
interleaved repeats, in one run:

    python -m benchmarks.training_step [--batch-size 256] [--arch resnet10 --width 16] [--seed 0]
"""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from benchmarks._measure import add_measure_arguments, interleaved_times, seed_and_threads
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, int_at_least, make_parser, positive_int
from mp_contrastive.vision import LARS, ProjectionHead, SimCLRAugment, SimCLRModel, resnet_cifar
from mp_contrastive.vision.methods import MethodOutput, SimCLRMethod
from mp_contrastive.vision.models import ARCHITECTURES
from mp_contrastive.vision.optim import lars_param_groups


class LightlySimCLR(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, dim: int, temperature: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, dim, 128)
        self.loss = NTXentLoss(temperature)

    def forward(self, views: list[torch.Tensor], index: torch.Tensor) -> MethodOutput:
        z0, z1 = self.projection_head(self.backbone(torch.cat(views))).chunk(2)
        return MethodOutput(self.loss(z0, z1))


def make_step(method: torch.nn.Module, images: torch.Tensor, augment: SimCLRAugment,
              seed: int, num_views: int = 2, small_augment: SimCLRAugment | None = None,
              num_small_views: int = 0) -> Callable[[], None]:
    """One optimiser step (LARS) of ``method`` on ``num_views`` augmentations of ``images`` and,
    after them, ``num_small_views`` ones by ``small_augment`` (small crops), as the trainer draws.
    ``num_small_views > 0`` without ``small_augment`` is a ``ValueError``."""
    if num_small_views > 0 and small_augment is None:
        raise ValueError(f"'num_small_views' is {num_small_views} and 'small_augment' is None: "
                         f"pass the small crops' augmentation")
    optimizer = LARS(lars_param_groups(method, 1e-6), lr=0.1)
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(images.size(0))

    def step() -> None:
        views = [augment(images, generator) for _ in range(num_views)]
        views += [small_augment(images, generator) for _ in range(num_small_views)]
        loss = method(views, index).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--batch-size", type=int_at_least(2), default=256,
                        help="images per batch (2 views each)")
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="resnet10",
                        help="ResNet architecture")
    parser.add_argument("--width", type=positive_int, default=16,
                        help="first-stage width of the ResNet")
    add_measure_arguments(parser, repeats=8)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    seed_and_threads(args.seed, args.threads)
    images = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8)
    augment = SimCLRAugment()

    def ours(attention: str) -> torch.nn.Module:
        torch.manual_seed(args.seed)
        backbone = resnet_cifar(args.arch, args.width)
        return SimCLRMethod(SimCLRModel(backbone, ProjectionHead(backbone.out_dim)), 0.5, attention)

    torch.manual_seed(args.seed)
    backbone = resnet_cifar(args.arch, args.width)
    steps = {
        "lightly (NTXentLoss + SimCLRProjectionHead)":
            make_step(LightlySimCLR(backbone, backbone.out_dim, 0.5), images, augment, args.seed),
        "ours: SimCLR": make_step(ours("off"), images, augment, args.seed),
        "ours: SimCLR + attention (paper)": make_step(ours("paper"), images, augment, args.seed),
        "ours: SimCLR + attention (official)":
            make_step(ours("official"), images, augment, args.seed),
    }
    times = interleaved_times(steps, args.repeats, warmup=2)
    lightly = times["lightly (NTXentLoss + SimCLRProjectionHead)"]
    plain = times["ours: SimCLR"]
    rows = [[name, f"{t * 1e3:.0f}", f"{args.batch_size / t:.0f}", f"{lightly / t:.3f}",
             f"{t / plain:.3f}"] for name, t in times.items()]
    print(f"# SimCLR training step: {args.arch} width {args.width}, batch {args.batch_size} x 2 "
          f"views, {platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}\n")
    print(markdown_table(["method", "ms / step", "images / s", "speed vs lightly",
                          "time vs our SimCLR"], rows))
    ratio = lightly / plain
    print(f"\nimages/s ours / lightly = {ratio:.3f} (target >= 1.0: "
          f"{'PASS' if ratio >= 1.0 else 'FAIL'})")
    for name in ("ours: SimCLR + attention (paper)", "ours: SimCLR + attention (official)"):
        over = times[name] / plain - 1
        print(f"{name}: overhead {100 * over:+.1f}% vs plain SimCLR (target <= 5%: "
              f"{'PASS' if over <= 0.05 else 'FAIL'})")


if __name__ == "__main__":
    main()
