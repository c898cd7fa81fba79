"""A custom self-supervised method trained by the library's Trainer.

A method is a module: ``forward(views, index)`` returns ``MethodOutput(loss, nodes)`` and the
Trainer owns the loop (schedule, augmentation, kNN monitor, logs, checkpoints, DDP). This one is
SimCLR written out in a few lines with the library's SimCLRLoss; it writes results.json.

    python examples/custom_method.py --epochs 1 --train-subset 1024 --out runs/custom_method
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_contrastive.experiments import cli
from mp_contrastive.losses import SimCLRLoss
from mp_contrastive.monitor import DynamicsMonitor
from mp_contrastive.vision import (
    LossNodes,
    MethodOutput,
    ProjectionHead,
    SimCLRAugment,
    TrainConfig,
    Trainer,
    load_cifar,
    resnet_cifar,
    stratified_subset,
)


class MySimCLR(nn.Module):
    """Two views -> backbone -> projector -> SimCLR loss; views of one image are positives."""

    def __init__(self, backbone: nn.Module, dim: int, temperature: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = ProjectionHead(backbone.out_dim, out_dim=dim)
        self.loss = SimCLRLoss(temperature)

    def forward(self, views: list[Tensor], index: Tensor) -> MethodOutput:
        z = self.projector(self.backbone(torch.cat(views)))
        sample = torch.arange(index.numel(), device=z.device).repeat(len(views))
        # The nodes feed the Trainer's dynamics monitor; ``return self.loss(z, sample)`` is enough
        # for a run without one.
        return MethodOutput(self.loss(z, sample), LossNodes(z.detach(), sample,
                                                            index.repeat(len(views))))


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--epochs", type=cli.positive_int, default=1, help="training epochs")
    parser.add_argument("--train-subset", type=cli.positive_int, default=1024,
                        help="class-balanced CIFAR-10 training images")
    parser.add_argument("--batch-size", type=cli.positive_int, default=256, help="batch size")
    parser.add_argument("--width", type=cli.positive_int, default=16, help="ResNet-10 width")
    parser.add_argument("--dynamics-every", type=cli.nonnegative_int, default=2,
                        help="learning-dynamics row every N steps (0 = off)")
    parser.add_argument("--device", type=cli.torch_device,
                        default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the method trains (default: cuda where available, else cpu)")
    cli.add_common_arguments(parser, default_out="runs/custom_method",
                             data_layout="CIFAR-10 in torchvision's layout or the packed copy "
                                         "cifar10/{train,test}_jpeg.npz")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    train = load_cifar("cifar10", args.data_root, train=True, download=args.download,
                       select=lambda labels: stratified_subset(labels, args.train_subset, generator))
    queries = load_cifar("cifar10", args.data_root, train=False, download=args.download,
                         select=lambda labels: stratified_subset(labels, 500, generator))
    torch.manual_seed(args.seed)
    backbone = resnet_cifar("resnet10", args.width)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="lars", lr=1.0,
                         warmup=0.1, seed=args.seed, out_dir=args.out, knn_k=20,
                         progress=not args.no_progress, tensorboard=False)
    dynamics = (DynamicsMonitor(args.dynamics_every, log_dir=args.out, temperature=0.5)
                if args.dynamics_every else None)
    trainer = Trainer(MySimCLR(backbone, dim=64), backbone, train, SimCLRAugment(), config,
                      monitor=(train, queries), device=args.device, dynamics=dynamics)
    history = trainer.fit()
    path = trainer.write_results({"args": vars(args), **history,
                                  "dynamics": dynamics.history if dynamics else []})
    print(f"kNN top-1 {history['knn_initial']:.2f}% -> {history['epochs'][-1]['knn_top1']:.2f}%; "
          f"results in {path}")


if __name__ == "__main__":
    cli.run_cli(main)
