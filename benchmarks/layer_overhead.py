"""What the operator layers cost over PyG's: AlignmentGCNConv against GCNConv at Cora's size.

AlignmentGCNConv is ``Linear`` -> ``AlignmentConv(alpha=1.0, detach_targets=True,
add_self_loops=True)`` (the ``gcn_norm`` GCN form) -> bias, the same function as ``GCNConv``
(``tests/nn/test_pyg_equivalence.py``); what it adds is its input checks (shape, dtype, finite
features and weights, index ranges) and its own code path. Both layers get the same weights on a
random undirected graph of Cora's size (2,708 nodes, 10,556 edges), for Cora's first layer
(1,433 -> 64 features) and a hidden one (64 -> 64, where the propagation is most of the time),
forward and forward + backward; the fastest of interleaved repeats, in one run (a difference of a
few per cent is what is measured, and on a shared machine the median of a millisecond call moves
more than that from run to run; the fastest call is the least disturbed one). Target: at most
1.05x GCNConv's time in every row.

The layer's propagation is GCNConv's, bitwise on the CPU, but faster: on a graph without self
loops it adds the self loops' messages after the sum over the edges instead of appending them to
the edge list (``AlignmentConv._loops_apart``). So the validation's own cost is shown apart:
``forward`` against the same layer unchecked (``_forward``, what a model that checked its inputs
once runs for every layer), both called as methods (without ``nn.Module.__call__``, which both
layers pay in the first columns), as a share of GCNConv's time.

    python -m benchmarks.layer_overhead [--repeats 100] [--threads 1] [--seed 0] [--device cuda]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_undirected

from benchmarks._measure import add_measure_arguments, interleaved_times, seed_and_threads, where
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, make_parser
from mp_contrastive.gnn import AlignmentGCNConv

TARGET = 1.05
NODES, EDGES = 2708, 10556  # Cora's nodes and (directed) edges
LAYERS = {"1433 -> 64 (Cora's first layer)": (1433, 64), "64 -> 64 (hidden layer)": (64, 64)}


def cora_size_graph(generator: torch.Generator, nodes: int = NODES,
                    edges: int = EDGES) -> Tensor:
    """A random undirected graph without self loops or repeated edges: ``edges`` directed
    edges (``edges / 2`` node pairs, both directions)."""
    pairs = torch.randint(nodes, (2, 4 * edges), generator=generator)
    pairs = pairs[:, pairs[0] != pairs[1]].sort(dim=0).values  # (low, high): one per pair
    pairs = pairs.unique(dim=1)
    keep = torch.randperm(pairs.size(1), generator=generator)[: edges // 2]
    return to_undirected(pairs[:, keep], num_nodes=nodes)


def layer_pair(in_channels: int, out_channels: int,
               generator: torch.Generator) -> tuple[GCNConv, AlignmentGCNConv]:
    """``GCNConv`` and ``AlignmentGCNConv`` with the same random weight and bias."""
    pyg, ours = GCNConv(in_channels, out_channels), AlignmentGCNConv(in_channels, out_channels)
    with torch.no_grad():
        pyg.lin.weight.copy_(torch.randn(out_channels, in_channels, generator=generator) * 0.05)
        pyg.bias.copy_(torch.randn(out_channels, generator=generator))
        ours.lin.weight.copy_(pyg.lin.weight)
        ours.bias.copy_(pyg.bias)
    return pyg, ours


def timed(call: Callable[[Tensor, Tensor], Tensor], x: Tensor, edge_index: Tensor,
          backward: bool) -> Callable[[], None]:
    """One forward (in training mode, recording the graph), or forward + backward."""
    def forward() -> None:
        call(x, edge_index)

    def forward_backward() -> None:
        call(x, edge_index).sum().backward()
    return forward_backward if backward else forward


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    add_measure_arguments(parser, repeats=100, device="the layers")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    generator = seed_and_threads(args.seed, args.threads)
    edge_index = cora_size_graph(generator).to(args.device)
    print(f"# AlignmentGCNConv vs GCNConv, {NODES:,} nodes, {edge_index.size(1):,} edges, "
          f"{where(args.device)}, torch {torch.__version__}\n")
    rows, verdicts = [], []
    for label, (in_channels, out_channels) in LAYERS.items():
        pyg, ours = (layer.to(args.device) for layer in layer_pair(in_channels, out_channels,
                                                                    generator))
        x = torch.randn(NODES, in_channels, generator=generator).to(args.device)
        torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index), rtol=1e-5, atol=1e-5)
        for mode, backward in (("forward", False), ("forward + backward", True)):
            times = interleaved_times(
                {"GCNConv": timed(pyg, x, edge_index, backward),
                 "AlignmentGCNConv": timed(ours, x, edge_index, backward),
                 "checked": timed(ours.forward, x, edge_index, backward),
                 "unchecked": timed(ours._forward, x, edge_index, backward)},
                args.repeats, statistic=min)
            ratio = times["AlignmentGCNConv"] / times["GCNConv"]
            checks = (times["checked"] - times["unchecked"]) / times["GCNConv"]
            rows.append([label, mode, f"{times['GCNConv'] * 1e3:.3f}",
                         f"{times['AlignmentGCNConv'] * 1e3:.3f}",
                         f"{times['unchecked'] * 1e3:.3f}", f"{ratio:.3f}", f"{100 * checks:.1f}%"])
            verdicts.append(f"{label}, {mode}: AlignmentGCNConv {ratio:.3f}x GCNConv (target <= "
                            f"{TARGET}) {'PASS' if ratio <= TARGET else 'FAIL'}; its checks cost "
                            f"{100 * checks:.1f}% of a GCNConv call")
    print(markdown_table(["layer", "pass", "GCNConv ms", "AlignmentGCNConv ms", "unchecked ms",
                          "ours / GCNConv", "checks / GCNConv"], rows))
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
