"""The operator GNN layers against PyG's (forward + backward time and peak memory), and one
GRACE-style step on a PubMed-size graph through the kNN path.

Layers: AlignmentGCNConv vs GCNConv, AttentionAlignmentGATConv vs GATConv (8 heads x 8), a
single AttentionAlignmentConv step vs AGNNConv, and a trained uniformity step on a kNN affinity
graph (UniformityConv, differentiated through) vs the same step written with PyG's ``softmax``
and ``scatter`` (autograd through per-edge gathers), on Cora (2,708 nodes, 1,433 features; the
shared data) and a synthetic PubMed-size graph (19,717 nodes, 500 features). Median over
interleaved repeats, peak memory of one forward + backward, all in one run:

    python -m benchmarks.gnn [--repeats 7] [--threads 1] [--grace] [--seed 0]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch_geometric.data import Data
from torch_geometric.nn import AGNNConv, GATConv, GCNConv
from torch_geometric.utils import scatter, softmax

from benchmarks._measure import add_measure_arguments, interleaved_times, peak_memory, seed_and_threads, where
from mp_contrastive._reporting import markdown_table
from mp_contrastive.experiments.cli import ArgumentParser, check_data_root, make_parser
from mp_contrastive.experiments.presets import GRACE_PRESETS
from mp_contrastive.gnn import (
    AlignmentGCNConv,
    AttentionAlignmentGATConv,
    load_planetoid,
    planted_partition_graph,
    train_grace,
)
from mp_contrastive.knn import affinity_graph
from mp_contrastive.nn import AttentionAlignmentConv, UniformityConv


def pairs(num_features: int, seed: int = 0) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    torch.manual_seed(seed)
    return {
        "GCN layer (-> 64)": (AlignmentGCNConv(num_features, 64), GCNConv(num_features, 64)),
        "GAT layer (8 x 8 heads)": (AttentionAlignmentGATConv(num_features, 8, heads=8),
                                    GATConv(num_features, 8, heads=8)),
        "AGNN propagation (d=64)": (
            AttentionAlignmentConv(1.0, 1.0, "neighbors", "cosine", detach_targets=True,
                                   add_self_loops=True), AGNNConv(requires_grad=False)),
    }


def step(module: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        inp = x.detach().requires_grad_()
        module(inp, edge_index).sum().backward()
    return run


def layer_rows(name: str, data: Data, repeats: int, seed: int = 0) -> list[list[object]]:
    rows = []
    for label, (ours, pyg) in pairs(data.num_features, seed).items():
        x = data.x if "AGNN" not in label else torch.randn(data.num_nodes, 64)
        fns = {"ours": step(ours, x, data.edge_index), "pyg": step(pyg, x, data.edge_index)}
        times = interleaved_times(fns, repeats)
        memory = {key: peak_memory(fn) for key, fn in fns.items()}
        rows.append([name, label, f"{1e3 * times['ours']:.1f}", f"{1e3 * times['pyg']:.1f}",
                     f"{times['ours'] / times['pyg']:.2f}", f"{memory['ours'] / 2**20:.1f}",
                     f"{memory['pyg'] / 2**20:.1f}"])
    return rows


def pyg_uniformity_step(h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """The InfoNCE uniformity step on a sparse affinity graph (stop-gradient targets) as plain PyG
    code: per-edge gathers, ``softmax`` and ``scatter``, differentiated by autograd."""
    src, dst = edge_index
    prob = softmax((h[dst] * h[src]).sum(-1), dst, num_nodes=h.size(0))
    return -scatter(prob.unsqueeze(-1) * h[src], dst, 0, h.size(0), reduce="sum")


def uniformity_rows(name: str, num_nodes: int, repeats: int, seed: int = 0,
                    k: int = 64) -> list[list[object]]:
    """A trained layer's uniformity step: forward + backward through the step, ``k`` affinity
    neighbours per node (a kNN graph of random unit features, d = 64)."""
    generator = torch.Generator().manual_seed(seed)
    h0 = torch.nn.functional.normalize(torch.randn(num_nodes, 64, generator=generator), dim=1)
    edge_index, _ = affinity_graph(h0, k)
    conv = UniformityConv(alpha=1.0, detach_targets=True)

    def run(step: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def go() -> None:
            h = h0.detach().requires_grad_()
            step(h).square().sum().backward()
        return go

    fns = {"ours": run(lambda h: conv.step(h, edge_index)),
           "pyg": run(lambda h: pyg_uniformity_step(h, edge_index))}
    times = interleaved_times(fns, repeats)
    memory = {key: peak_memory(fn) for key, fn in fns.items()}
    return [[name, f"uniformity step, kNN k={k} (d=64)", f"{1e3 * times['ours']:.1f}",
             f"{1e3 * times['pyg']:.1f}", f"{times['ours'] / times['pyg']:.2f}",
             f"{memory['ours'] / 2**20:.1f}", f"{memory['pyg'] / 2**20:.1f}"]]


def build_parser() -> ArgumentParser:
    parser = make_parser(__doc__)
    add_measure_arguments(parser, repeats=7)
    parser.add_argument("--data-root", default=None,
                        help="folder holding Planetoid/Cora/raw (default: $MP_CONTRASTIVE_DATA)")
    parser.add_argument("--grace", action="store_true",
                        help="also time one GRACE step (PubMed preset) through the kNN path")
    parser.add_check(lambda args: check_data_root(args.data_root,
                                                  "a folder holding Planetoid/Cora/raw"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    seed_and_threads(args.seed, args.threads)
    print(f"# GNN layers, forward + backward, {where('cpu')}, torch {torch.__version__}\n")
    graphs = {"Cora": load_planetoid("Cora", args.data_root),
              "PubMed-size (synthetic)": planted_partition_graph(seed=args.seed)}
    rows = [row for name, data in graphs.items() for row in layer_rows(name, data, args.repeats, args.seed)]
    rows += [row for name, data in graphs.items()
             for row in uniformity_rows(name, data.num_nodes, args.repeats, args.seed)]
    print(markdown_table(["graph", "layer", "ours (ms)", "PyG (ms)", "ratio", "ours peak (MiB)",
                          "PyG peak (MiB)"], rows))
    if args.grace:
        data = graphs["PubMed-size (synthetic)"]
        dense_bytes = (2 * data.num_nodes) ** 2 * 4
        grace_rows = []
        for k, samples in ((8, 32), (32, 128)):
            config = GRACE_PRESETS["PubMed"].replace(epochs=1, knn_k=k, knn_samples=samples)
            result: dict = {}
            started = time.perf_counter()
            peak = peak_memory(lambda c=config, r=result: r.update(train_grace(
                c, data, args.seed, evaluate=False)))
            grace_rows.append([k, samples, result["path"], f"{time.perf_counter() - started:.1f}",
                               f"{peak / 2**20:.0f}", f"{dense_bytes / 2**20:.0f}"])
        print("\n# One GRACE step on the PubMed-size graph (hidden 256, 39,434 views)\n")
        print(markdown_table(["k", "tail draws", "path", "s / step", "peak (MiB)",
                              "one dense N x N (MiB)"], grace_rows))


if __name__ == "__main__":
    main()
