import pytest
import torch
from torch_geometric.testing import assert_module

from mp_contrastive.graph import augmentation_graph
from mp_contrastive.nn import AttentionAlignmentConv, ContrastiveConv
from mp_contrastive.nn.functional import AttentionSpec, Tiling
from tests.reference import (
    assert_permutation_equivariant,
    complete_graph,
    contrastive_energy,
    dense,
    random_graph,
    step_from_autograd,
    sym_normalize,
    uniformity_energy,
)

KERNELS = ["infonce", "spectral"]
SAMPLE = [0, 1, 2, 0, 1, 2, 0, 3, 3, 1]


def setup(gen, sample=SAMPLE, dim=4):
    graph = augmentation_graph(sample=torch.tensor(sample))
    n = graph.num_nodes
    h = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    abar = sym_normalize(dense(graph.edge_index, None, n))
    return graph, h, abar


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("detach", [False, True])
def test_dense_step_is_gradient_step(gen, kernel, detach):
    graph, h, abar = setup(gen)
    mask = ~torch.eye(h.size(0), dtype=torch.bool)
    conv = ContrastiveConv(alpha=0.6, kernel=kernel, detach_targets=detach)
    expected = step_from_autograd(
        lambda x: contrastive_energy(x, abar, mask, kernel, detach), h, 0.6)
    torch.testing.assert_close(conv(h, graph.edge_index), expected, atol=1e-8, rtol=0)
    torch.testing.assert_close(conv.energy(h, graph.edge_index),
                               contrastive_energy(h, abar, mask, kernel, False), atol=1e-8, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("detach", [False, True])
def test_sparse_step_is_gradient_step(gen, kernel, detach):
    graph, h, abar = setup(gen)
    n = h.size(0)
    affinity, weight = random_graph(n, 0.4, gen, symmetric=False)
    anchor = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    mask = dense(affinity, None, n) > 0
    w = dense(affinity, weight, n).clamp_min(1e-300)
    conv = ContrastiveConv(alpha=0.6, kernel=kernel, detach_targets=detach)
    out = conv(h, graph.edge_index, None, affinity, weight, anchor_weight=anchor)
    expected = step_from_autograd(
        lambda x: contrastive_energy(x, abar, mask, kernel, detach, w, anchor), h, 0.6)
    torch.testing.assert_close(out, expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("detach", [False, True])
def test_sparse_complete_graph_equals_dense(gen, kernel, detach):
    graph, h, _ = setup(gen)
    conv = ContrastiveConv(kernel=kernel, detach_targets=detach)
    torch.testing.assert_close(conv(h, graph.edge_index, affinity_index=complete_graph(10)),
                               conv(h, graph.edge_index), atol=1e-10, rtol=0)


def test_bipartite_negatives(gen):
    graph, h, abar = setup(gen)
    bank = torch.randn(15, 4, generator=gen, dtype=torch.float64)
    conv = ContrastiveConv(alpha=0.5)
    all_pairs = torch.ones(10, 15, dtype=torch.bool)

    def energy(x):
        return -(x * (abar @ x)).sum() + uniformity_energy(x, bank, all_pairs, None, None,
                                                           "infonce", False)

    expected = step_from_autograd(energy, h, 0.5)
    torch.testing.assert_close(conv(h, graph.edge_index, negatives=bank), expected, atol=1e-8,
                               rtol=0)
    # No tuple with two meanings: PyG's (x_src, x_dst) is refused, naming the argument to use.
    with pytest.raises(TypeError, match="negatives="):
        conv((bank, h), graph.edge_index)


@pytest.mark.parametrize("mode", ["negatives", "positives", "neighbors"])
@pytest.mark.parametrize("beta", [1.0, 0.6])
@pytest.mark.parametrize("detach", [False, True])
def test_attention_step_is_gradient_step(gen, mode, beta, detach):
    """With attention, the energy is -sum_ij W_ij h_i.h_j + U with W (and for 'positives' the
    anchor weights c_i = sum_j W_ij) held constant; the shared-similarity fast paths
    (beta = 1 and beta != 1) must agree with it."""
    graph, h, _ = setup(gen)
    n = h.size(0)
    attention = AttentionSpec(beta=beta, normalize=mode)
    conv = ContrastiveConv(alpha=0.5, detach_targets=detach, attention=attention)
    edge_index, weight = attention.weights(h, graph.edge_index, graph.edge_weight)
    w = dense(edge_index, weight, n)
    anchor = w.sum(1) if mode == "positives" else None
    mask = ~torch.eye(n, dtype=torch.bool)
    expected = step_from_autograd(
        lambda x: contrastive_energy(x, w, mask, "infonce", detach, None, anchor), h, 0.5)
    torch.testing.assert_close(conv(h, graph.edge_index, graph.edge_weight), expected,
                               atol=1e-8, rtol=0)


def test_spectral_contrastive_equals_haochen_loss(gen):
    """kernel='spectral' summed over anchors is -2 sum_i h_i.h_pos(i) + sum_{i != k} (h_i.h_k)^2."""
    graph, h, _ = setup(gen, sample=[0, 1, 2, 0, 1, 2])
    conv = ContrastiveConv(kernel="spectral")
    pos = torch.tensor([3, 4, 5, 0, 1, 2])
    sim = h @ h.T
    expected = -2 * (h * h[pos]).sum() + (sim.pow(2).sum() - sim.diagonal().pow(2).sum())
    torch.testing.assert_close(conv.energy(h, graph.edge_index), expected, atol=1e-10, rtol=0)


def test_sparse_layouts_and_edge_permutation(gen):
    graph, h, _ = setup(gen)
    assert_module(ContrastiveConv(alpha=0.5), h.float(), graph.edge_index, expected_size=(10, 4),
                  test_sparse_layouts=[torch.sparse_coo, torch.sparse_csc], atol=1e-6)


def test_node_permutation_equivariance(gen):
    graph, h, _ = setup(gen)
    for conv in [ContrastiveConv(), ContrastiveConv(attention=AttentionSpec())]:
        assert_permutation_equivariant(conv, h, gen, graph.edge_index)


def test_gradient_flows_through_dense_path(gen):
    graph, h, _ = setup(gen)
    x = h.clone().requires_grad_()
    ContrastiveConv()(x, graph.edge_index).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_repr_shows_the_non_default_settings():
    assert repr(ContrastiveConv()) == "ContrastiveConv(alpha=1.0)"
    assert repr(ContrastiveConv(0.5, "spectral", detach_targets=True, normalize=False)) == (
        "ContrastiveConv(alpha=0.5, kernel='spectral', detach_targets=True, normalize=False)")
    assert repr(ContrastiveConv(attention=AttentionSpec(beta=0.5))) == (
        "ContrastiveConv(alpha=1.0, attention=AttentionSpec(beta=0.5, normalize='negatives', "
        "score='dot', add_self_loops=False))")
    assert "tiling=Tiling(elements=64" in repr(ContrastiveConv(tiling=Tiling(elements=64)))


def test_attention_must_be_a_spec():
    """An operator is not a specification: the error says how to get one."""
    with pytest.raises(TypeError, match=r"'attention' must be an AttentionSpec .*\.spec"):
        ContrastiveConv(attention=AttentionAlignmentConv())
    spec = AttentionAlignmentConv(beta=0.3, normalize="positives", score="cosine").spec
    assert spec == AttentionSpec(0.3, "positives", "cosine")


def test_torch_compile_dense_path(gen):
    graph, h, _ = setup(gen)
    conv = ContrastiveConv(normalize=False)
    compiled = torch.compile(conv, fullgraph=True)
    x = h.float()
    torch.testing.assert_close(compiled(x, graph.edge_index, graph.edge_weight),
                               conv(x, graph.edge_index, graph.edge_weight), atol=1e-5, rtol=1e-5)
