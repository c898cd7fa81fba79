"""Overhead of :class:`~mp_contrastive.monitor.DynamicsMonitor` against a training step.

For each setup, the median wall time of one training step (forward, loss, backward, optimiser),
of one monitor call on a logging step (every metric it logs for that setup, CSV row included) and
of one call on a skipped step, all interleaved so that machine drift hits them alike. The overhead
at period ``n`` is ``(monitor call + (n - 1) * skipped call) / (n * training step)``:

* image: CIFAR ResNet-18 + 512-512-128 projector, SimCLR on two views of a batch of 32x32 images;
* graph: GRACE-style, a 2-layer GCN on a Cora-sized random graph (2,708 nodes, 1,433 sparse
  features), two views by edge dropping and feature masking, SimCLR over all 5,416 nodes;
* mlp (worst case): a 2-layer MLP on fixed 512-d inputs, the cheapest step a contrastive run has.

    python -m benchmarks.monitor_overhead [--batch 128] [--repeats 7] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable

import torch
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import dropout_edge, mask_feature

from benchmarks._measure import add_measure_arguments, interleaved_times, seed_and_threads
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, int_at_least, make_parser, positive_int
from mp_contrastive.losses import SimCLRLoss
from mp_contrastive.monitor import DEFAULT_EVERY, DynamicsMonitor
from mp_contrastive.vision import ProjectionHead, resnet_cifar

TARGET = 0.02  # the monitor may cost at most 2% of training time at its default period


class Setup:
    """A training step, the monitor inputs of the last step, and the batch size in nodes."""

    def __init__(self, name: str, step: Callable[[], dict], nodes: int, dim: int) -> None:
        self.name, self.step, self.nodes, self.dim = name, step, nodes, dim


def contrastive_step(loss_fn: SimCLRLoss, optimizer: torch.optim.Optimizer, z: torch.Tensor,
                     sample: torch.Tensor, labels: torch.Tensor) -> dict:
    """One optimiser step on the loss of the projections ``z``; returns the monitor's inputs."""
    loss = loss_fn(z, sample)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"features": z, "sample": sample, "labels": labels}


def image_setup(batch: int, gen: torch.Generator) -> Setup:
    backbone = resnet_cifar("resnet18")
    model = nn.Sequential(backbone, ProjectionHead(512, 512, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = SimCLRLoss(temperature=0.5)
    images = torch.rand(batch, 3, 32, 32, generator=gen)
    labels = torch.randint(10, (batch,), generator=gen)
    sample = torch.arange(batch).repeat(2)

    def step() -> dict:
        views = torch.cat([images.flip(3), images + 0.05 * torch.randn(images.shape, generator=gen)])
        z = model(views)
        return contrastive_step(loss_fn, optimizer, z, sample, labels.repeat(2))

    return Setup(f"image: ResNet-18, {batch} images x 2 views", step, 2 * batch, 128)


class GCN(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = GCNConv(in_dim, hidden), GCNConv(hidden, hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x, edge_index).relu(), edge_index).relu())


def graph_setup(gen: torch.Generator) -> Setup:
    num_nodes, num_features, num_edges = 2708, 1433, 5278
    x = (torch.rand(num_nodes, num_features, generator=gen) < 0.0127).float()
    src = torch.randint(num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(num_nodes, (num_edges,), generator=gen)
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    labels = torch.randint(7, (num_nodes,), generator=gen)
    model = GCN(num_features, 128, 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    loss_fn = SimCLRLoss(temperature=0.5)
    sample = torch.arange(num_nodes).repeat(2)

    def step() -> dict:
        views = []
        for p_edge, p_feat in ((0.2, 0.3), (0.4, 0.4)):
            ei, _ = dropout_edge(edge_index, p=p_edge)
            xi, _ = mask_feature(x, p=p_feat)
            views.append(model(xi, ei))
        z = torch.cat(views)
        return contrastive_step(loss_fn, optimizer, z, sample, labels.repeat(2))

    return Setup(f"graph: GCN (GRACE), {num_nodes} nodes x 2 views", step, 2 * num_nodes, 128)


def mlp_setup(batch: int, gen: torch.Generator) -> Setup:
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = SimCLRLoss(temperature=0.5)
    inputs = torch.randn(2 * batch, 512, generator=gen)
    sample = torch.arange(batch).repeat(2)
    labels = torch.randint(10, (batch,), generator=gen).repeat(2)

    def step() -> dict:
        z = model(inputs)
        return contrastive_step(loss_fn, optimizer, z, sample, labels)

    return Setup(f"mlp (worst case): {batch} inputs x 2 views", step, 2 * batch, 128)


def measure(setup: Setup, repeats: int, every: int, log_dir: str) -> list[object]:
    inputs = setup.step()
    monitor = DynamicsMonitor(every=every, log_dir=log_dir, temperature=0.5)
    times = interleaved_times({
        "step": setup.step,
        "log": lambda: monitor(0, **inputs),  # step 0: a logging step
        "skip": lambda: monitor(1, **inputs),  # not a multiple of every: returns at once
    }, repeats=repeats, warmup=1)
    monitor.close()

    def overhead(n: int) -> float:
        return (times["log"] + (n - 1) * times["skip"]) / (n * times["step"])

    at_default = overhead(every)
    return [setup.name, f"{setup.nodes} x {setup.dim}", f"{times['step'] * 1e3:.1f}",
            f"{times['log'] * 1e3:.1f}", f"{times['skip'] * 1e6:.1f}", f"{overhead(1):.1%}",
            f"{at_default:.2%}", "yes" if at_default <= TARGET else "NO"]


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--batch", type=int_at_least(2), default=128,
                        help="images per batch (image, mlp)")
    parser.add_argument("--every", type=positive_int, default=DEFAULT_EVERY,
                        help=f"monitor period to report (default: the monitor's, {DEFAULT_EVERY})")
    parser.add_argument("--setups", nargs="+", default=["image", "graph", "mlp"],
                        choices=["image", "graph", "mlp"], help="setups to measure")
    add_measure_arguments(parser, repeats=7)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    gen = seed_and_threads(args.seed, args.threads)
    builders = {"image": lambda: image_setup(args.batch, gen), "graph": lambda: graph_setup(gen),
                "mlp": lambda: mlp_setup(args.batch, gen)}
    print(f"# DynamicsMonitor overhead, every={args.every}, {platform.machine()} CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of "
          f"{args.repeats}\n")
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        for name in args.setups:
            rows.append(measure(builders[name](), args.repeats, args.every, log_dir))
    print(markdown_table(["setup", "nodes x dim", "train step ms", "monitor log ms",
                          "skipped call us", "overhead every=1", f"overhead every={args.every}",
                          f"<= {TARGET:.0%}"], rows))


if __name__ == "__main__":
    main()
