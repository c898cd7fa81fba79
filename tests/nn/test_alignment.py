import pytest
import torch
from torch_geometric.nn import GCNConv
from torch_geometric.testing import assert_module

from mp_contrastive.graph import augmentation_graph
from mp_contrastive.nn import AlignmentConv
from tests.reference import (
    alignment_energy,
    assert_permutation_equivariant,
    dense,
    random_graph,
    step_from_autograd,
    sym_normalize,
)


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_step_is_gradient_step(gen, detach, symmetric):
    n = 12
    h = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    edge_index, weight = random_graph(n, 0.3, gen, symmetric=symmetric)
    abar = dense(edge_index, weight, n)  # normalize=False: the weights are used as given
    conv = AlignmentConv(alpha=0.2, detach_targets=detach, normalize=False)
    expected = step_from_autograd(lambda x: alignment_energy(x, abar, detach), h, 0.2)
    torch.testing.assert_close(conv(h, edge_index, weight), expected, atol=1e-8, rtol=0)
    torch.testing.assert_close(conv.energy(h, edge_index, weight),
                               alignment_energy(h, abar, False), atol=1e-8, rtol=0)


@pytest.mark.parametrize("detach", [False, True])
def test_normalized_step_on_batch_graph(gen, detach):
    graph = augmentation_graph(sample=torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 3, 3]))
    h = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    abar = sym_normalize(dense(graph.edge_index, None, 10))
    conv = AlignmentConv(alpha=0.3, detach_targets=detach)
    expected = step_from_autograd(lambda x: alignment_energy(x, abar, detach), h, 0.3)
    torch.testing.assert_close(conv(h, graph.edge_index), expected, atol=1e-8, rtol=0)
    # The batch graph's own weights are already normalised: gcn_norm leaves them unchanged.
    torch.testing.assert_close(conv(h, graph.edge_index, graph.edge_weight.double()), expected,
                               atol=1e-8, rtol=0)


def test_half_step_is_gcn_propagation(gen):
    """AlignmentConv(alpha=1/2) with GCN normalisation and self loops is GCNConv's propagation
    (identity weight, no bias) on an undirected graph; detached with alpha=1 on any graph."""
    n, d = 30, 6
    x = torch.randn(n, d, generator=gen)
    gcn = GCNConv(d, d, bias=False)
    with torch.no_grad():
        gcn.lin.weight.copy_(torch.eye(d))
    undirected, _ = random_graph(n, 0.15, gen, symmetric=True, weighted=False)
    conv = AlignmentConv(alpha=0.5, add_self_loops=True)
    torch.testing.assert_close(conv(x, undirected), gcn(x, undirected), atol=1e-6, rtol=1e-5)
    directed, _ = random_graph(n, 0.15, gen, symmetric=False, weighted=False)
    conv = AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=True)
    torch.testing.assert_close(conv(x, directed), gcn(x, directed), atol=1e-6, rtol=1e-5)
    weight = torch.rand(directed.size(1), generator=gen) + 0.1
    torch.testing.assert_close(conv(x, directed, weight), gcn(x, directed, weight), atol=1e-6,
                               rtol=1e-5)


@pytest.mark.parametrize("detach", [False, True])
def test_sparse_layouts_and_edge_permutation(gen, detach):
    x = torch.randn(15, 4, generator=gen)
    edge_index, _ = random_graph(15, 0.3, gen, symmetric=False, weighted=False)
    assert_module(AlignmentConv(alpha=0.5, detach_targets=detach, add_self_loops=True), x,
                  edge_index, expected_size=(15, 4),
                  test_sparse_layouts=[torch.sparse_coo, torch.sparse_csc], atol=1e-6)


def test_node_permutation_equivariance(gen):
    x = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    assert_permutation_equivariant(AlignmentConv(), x, gen, *random_graph(9, 0.4, gen))


def test_gradient_flows_to_input(gen):
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    graph = augmentation_graph(3, 2)
    AlignmentConv()(x, graph.edge_index).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_repr_and_reset():
    conv = AlignmentConv()
    conv.reset_parameters()
    assert repr(conv) == "AlignmentConv(alpha=0.5)"
    assert repr(AlignmentConv(1.0, detach_targets=True)) == \
        "AlignmentConv(alpha=1.0, detach_targets=True)"
