import pytest
import torch
from torch_geometric.testing import assert_module

from mp_contrastive.nn import UniformityConv
from tests.reference import (
    assert_permutation_equivariant,
    complete_graph,
    dense,
    random_graph,
    step_from_autograd,
    uniformity_energy,
)

KERNELS = ["infonce", "spectral"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("detach", [False, True])
def test_dense_step_is_gradient_step(gen, kernel, detach):
    h = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    mask = ~torch.eye(11, dtype=torch.bool)
    conv = UniformityConv(alpha=0.3, kernel=kernel, detach_targets=detach)
    expected = step_from_autograd(
        lambda x: uniformity_energy(x, x, mask, None, None, kernel, detach), h, 0.3)
    torch.testing.assert_close(conv(h), expected, atol=1e-8, rtol=0)
    ref_energy = uniformity_energy(h, h, mask, None, None, kernel, detach)
    torch.testing.assert_close(conv.energy(h), ref_energy, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("detach", [False, True])
def test_sparse_weighted_step_is_gradient_step(gen, kernel, detach):
    n = 12
    h = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    edge_index, weight = random_graph(n, 0.3, gen, symmetric=False)
    anchor = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    mask = dense(edge_index, None, n) > 0
    w = dense(edge_index, weight, n)
    conv = UniformityConv(alpha=0.7, kernel=kernel, detach_targets=detach)
    out = conv(h, edge_index, weight, anchor_weight=anchor)
    expected = step_from_autograd(
        lambda x: uniformity_energy(x, x, mask, w.clamp_min(1e-300), anchor, kernel, detach),
        h, 0.7)
    torch.testing.assert_close(out, expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("detach", [False, True])
def test_sparse_complete_graph_equals_dense(gen, kernel, detach):
    h = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    conv = UniformityConv(alpha=0.5, kernel=kernel, detach_targets=detach)
    torch.testing.assert_close(conv(h, complete_graph(9)), conv(h), atol=1e-10, rtol=0)
    torch.testing.assert_close(conv.energy(h, complete_graph(9)), conv.energy(h), atol=1e-10,
                               rtol=0)


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("bipartite", [False, True])
def test_sparse_step_backward_matches_second_order_autograd(gen, monkeypatch, detach, bipartite):
    # A trained layer differentiates the step itself: its backward (hand-written on the sparse
    # path) must equal autograd through the autograd-computed step of the reference energy.
    from mp_contrastive.nn.functional._sparse import SparseSoftmaxStep

    calls = []
    fast = SparseSoftmaxStep.apply
    monkeypatch.setattr(SparseSoftmaxStep, "apply",
                        lambda *args: calls.append(1) or fast(*args))
    n_src, n_dst = 12, (7 if bipartite else 12)
    h_src = torch.randn(n_src, 5, generator=gen, dtype=torch.float64)
    h_dst = torch.randn(n_dst, 5, generator=gen, dtype=torch.float64) if bipartite else h_src
    edge_index, weight = random_graph(n_src, 0.3, gen, symmetric=False)
    edge_index, weight = edge_index[:, edge_index[1] < n_dst], weight[edge_index[1] < n_dst]
    anchor = torch.rand(n_dst, generator=gen, dtype=torch.float64) + 0.5
    upstream = torch.randn(n_dst, 5, generator=gen, dtype=torch.float64)
    conv = UniformityConv(alpha=0.7, detach_targets=detach)

    def inputs():
        src = h_src.clone().requires_grad_()
        dst = h_dst.clone().requires_grad_() if bipartite else src
        return src, dst, weight.clone().requires_grad_()

    src, dst, w = inputs()
    out = conv.step((src, dst) if bipartite else src, edge_index, w, anchor_weight=anchor)
    ours = torch.autograd.grad((out * upstream).sum(), [src, dst, w] if bipartite else [src, w])
    assert calls, "the sparse step did not take the fast autograd path"

    src, dst, w = inputs()
    anchors, neighbours = dst * 1.0, src * 1.0  # separate variables: the step is d E / d anchors
    energy = uniformity_energy(anchors, neighbours, dense(edge_index, None, n_dst, n_src) > 0,
                               dense(edge_index, w, n_dst, n_src), anchor, "infonce", False)
    d_anchor, d_neighbour = torch.autograd.grad(energy, [anchors, neighbours], create_graph=True)
    expected = -0.7 * (d_anchor if detach or bipartite else d_anchor + d_neighbour)
    reference = torch.autograd.grad((expected * upstream).sum(),
                                    [src, dst, w] if bipartite else [src, w])
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_bipartite_memory_bank(gen, kernel):
    bank = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    batch = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    conv = UniformityConv(alpha=0.4, kernel=kernel)
    mask = torch.ones(6, 20, dtype=torch.bool)
    expected = step_from_autograd(
        lambda x: uniformity_energy(x, bank, mask, None, None, kernel, False), batch, 0.4)
    torch.testing.assert_close(conv((bank, batch)), expected, atol=1e-8, rtol=0)
    # Sparse bipartite: every batch node sees the same 7 bank entries.
    src = torch.arange(7).repeat(6)
    dst = torch.arange(6).repeat_interleave(7)
    mask = torch.zeros(6, 20, dtype=torch.bool)
    mask[:, :7] = True
    expected = step_from_autograd(
        lambda x: uniformity_energy(x, bank, mask, None, None, kernel, False), batch, 0.4)
    out = conv((bank, batch), torch.stack([src, dst]))
    torch.testing.assert_close(out, expected, atol=1e-8, rtol=0)


def test_node_without_affinity_edges_does_not_move(gen):
    h = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    edge_index = torch.tensor([[1, 2], [0, 0]])  # only node 0 is an anchor
    conv = UniformityConv(detach_targets=True)
    out = conv(h, edge_index)
    torch.testing.assert_close(out[1:], h[1:])
    assert torch.isfinite(conv.energy(h, edge_index))


def test_sparse_layouts_and_edge_permutation(gen):
    h = torch.randn(10, 4, generator=gen)
    edge_index, _ = random_graph(10, 0.4, gen, symmetric=False, weighted=False)
    assert_module(UniformityConv(alpha=0.5), h, edge_index, expected_size=(10, 4),
                  test_sparse_layouts=[torch.sparse_coo, torch.sparse_csc], atol=1e-6)


def test_node_permutation_equivariance(gen):
    h = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    assert_permutation_equivariant(UniformityConv(), h, gen)  # the dense affinity graph
    assert_permutation_equivariant(UniformityConv(), h, gen, *random_graph(8, 0.5, gen))


def test_self_attention_is_gradient_ascent_on_uniformity(gen):
    """Paper eq. 12: self-attention is a uniformity step of negative size, so it raises U."""
    h = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    conv = UniformityConv(alpha=0.05, detach_targets=True)
    attended = h - conv.step(h)  # step of size -alpha
    assert conv.energy(attended) > conv.energy(h)
    assert conv.energy(conv(h)) < conv.energy(h)


def test_repr_shows_the_non_default_settings():
    assert repr(UniformityConv()) == "UniformityConv(alpha=1.0)"
    assert repr(UniformityConv(0.5, "spectral", detach_targets=True)) == \
        "UniformityConv(alpha=0.5, kernel='spectral', detach_targets=True)"


def test_torch_compile_dense_path(gen):
    h = torch.randn(16, 8, generator=gen)
    conv = UniformityConv()
    compiled = torch.compile(conv, fullgraph=True)
    torch.testing.assert_close(compiled(h), conv(h), atol=1e-6, rtol=1e-5)
