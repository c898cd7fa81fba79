"""PyG's bipartite convention: AlignmentConv takes (x_src, x_dst) as GCN-style layers do, which
is what to_hetero and layer-wise sampling pass; forms that need one node set say so."""

import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.nn import to_hetero

from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv


def bipartite(gen, num_src=7, num_dst=4, num_edges=12):
    x_src = torch.randn(num_src, 3, generator=gen, dtype=torch.float64)
    x_dst = torch.randn(num_dst, 3, generator=gen, dtype=torch.float64)
    edge_index = torch.stack([torch.randint(0, num_src, (num_edges,), generator=gen),
                              torch.randint(0, num_dst, (num_edges,), generator=gen)])
    weight = torch.rand(num_edges, generator=gen, dtype=torch.float64) + 0.1
    return x_src, x_dst, edge_index, weight


def reference(x_src, x_dst, edge_index, weight, normalize):
    """sum_j a_ij x_src[j], a_ij = w_ij / sqrt(out_degree_j in_degree_i) when normalised."""
    src, dst = edge_index
    dense = torch.zeros(x_dst.size(0), x_src.size(0), dtype=x_src.dtype)
    dense.index_put_((dst, src), weight, accumulate=True)
    if normalize:
        out_degree, in_degree = dense.sum(0), dense.sum(1)
        dense = dense / in_degree.clamp_min(1e-300).sqrt().unsqueeze(1)
        dense = dense / out_degree.clamp_min(1e-300).sqrt().unsqueeze(0)
    return dense @ x_src


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_pair_is_the_gcn_form_from_sources_to_targets(gen, normalize, alpha):
    x_src, x_dst, edge_index, weight = bipartite(gen)
    conv = AlignmentConv(alpha, detach_targets=True, normalize=normalize)
    expected = (1 - alpha) * x_dst + alpha * reference(x_src, x_dst, edge_index, weight, normalize)
    torch.testing.assert_close(conv((x_src, x_dst), edge_index, weight), expected, atol=1e-12,
                               rtol=0)
    # The step is the gradient step of E = |x_dst|^2 / 2 - x_dst . A x_src (sources constant).
    x = x_dst.clone().requires_grad_()
    (grad,) = torch.autograd.grad(conv.energy((x_src, x), edge_index, weight), x)
    torch.testing.assert_close(conv.step((x_src, x_dst), edge_index, weight), -alpha * grad,
                               atol=1e-12, rtol=0)


def test_pair_of_one_symmetric_graph_is_gcn_without_self_loops(gen):
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    edges = torch.tensor([[0, 1, 1, 2, 3, 4, 4, 5], [1, 0, 2, 1, 4, 3, 5, 4]])
    conv = AlignmentConv(1.0, detach_targets=True)
    torch.testing.assert_close(conv((x, x), edges), conv(x, edges), atol=1e-12, rtol=0)


def test_forms_that_need_one_node_set_say_which_form_works(gen):
    x_src, x_dst, edge_index, _ = bipartite(gen)
    with pytest.raises(ValueError, match="detach_targets=True"):
        AlignmentConv()((x_src, x_dst), edge_index)
    with pytest.raises(ValueError, match="add_self_loops=False"):
        AlignmentConv(detach_targets=True, add_self_loops=True)((x_src, x_dst), edge_index)
    with pytest.raises(ValueError, match="mismatched feature dimensions"):
        AlignmentConv(detach_targets=True)((x_src, x_dst[:, :2]), edge_index)
    with pytest.raises(ValueError, match="edge_index"):
        AlignmentConv(detach_targets=True)((x_src, x_dst), edge_index + 10)


def papers_and_authors(gen):
    """A HeteroData with two node types and an edge type each way; and the author->paper edges."""
    data = HeteroData()
    data["paper"].x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    data["author"].x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    writes = torch.tensor([[0, 1, 2, 3, 3], [0, 1, 2, 3, 4]])
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "written_by", "author"].edge_index = writes.flip(0)
    return data, writes


class GNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = AlignmentConv(1.0, detach_targets=True)
        self.lin = torch.nn.Linear(3, 3).double()
        self.conv2 = AlignmentConv(0.5, detach_targets=True)

    def forward(self, x, edge_index):
        return self.conv2(self.lin(self.conv1(x, edge_index)).relu(), edge_index)


def test_to_hetero_model_runs_on_heterodata(gen):
    data, writes = papers_and_authors(gen)
    model = to_hetero(GNN(), data.metadata(), aggr="sum")
    out = model(data.x_dict, data.edge_index_dict)
    assert out["paper"].shape == (5, 3) and out["author"].shape == (4, 3)
    # The first layer for papers is the bipartite GCN form from authors.
    first = AlignmentConv(1.0, detach_targets=True)((data["author"].x, data["paper"].x), writes)
    torch.testing.assert_close(first, reference(data["author"].x, data["paper"].x, writes,
                                                torch.ones(5, dtype=torch.float64), True))
    out["paper"].sum().backward()  # differentiable end to end


def test_attention_pair_is_agnn_from_sources_to_targets(gen):
    """(x, x) with self loops in the edges is AGNNConv (output and gradients); a pair of two node
    sets takes the same softmax over each target's incoming edges."""
    from torch_geometric.nn import AGNNConv
    from torch_geometric.utils import add_self_loops

    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    edges = torch.tensor([[0, 1, 1, 2, 3, 4, 4, 5], [1, 0, 2, 1, 4, 3, 5, 4]])
    ours = AttentionAlignmentConv(1.0, 0.7, "neighbors", "cosine", detach_targets=True,
                                  detach_attention=False)
    theirs = AGNNConv(requires_grad=False).double()
    theirs.beta.data.fill_(0.7)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ours((a, a), add_self_loops(edges)[0])
    expected = theirs(b, edges)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (ga,) = torch.autograd.grad((out * probe).sum(), a)
    (gb,) = torch.autograd.grad((expected * probe).sum(), b)
    torch.testing.assert_close(ga, gb, atol=1e-12, rtol=0)


def test_attention_pair_step_is_the_gradient_step(gen):
    x_src, x_dst, edge_index, weight = bipartite(gen)
    conv = AttentionAlignmentConv(0.4, 1.5, "neighbors", "dot", detach_targets=True)
    out, (index, attention) = conv((x_src, x_dst), edge_index, weight,
                                   return_attention_weights=True)
    assert torch.equal(index, edge_index)
    has_edges = torch.zeros(x_dst.size(0), dtype=torch.bool).index_fill_(0, edge_index[1], True)
    sums = torch.zeros(x_dst.size(0), dtype=x_dst.dtype).index_add_(0, edge_index[1], attention)
    torch.testing.assert_close(sums[has_edges], torch.ones_like(sums[has_edges]))  # a softmax
    x = x_dst.clone().requires_grad_()
    (grad,) = torch.autograd.grad(conv.energy((x_src, x), edge_index, weight), x)
    torch.testing.assert_close(out - x_dst, -0.4 * grad, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="normalize='neighbors'"):
        AttentionAlignmentConv(0.4, normalize="negatives", detach_targets=True)(
            (x_src, x_dst), edge_index)
    with pytest.raises(ValueError, match="detach_targets=True"):
        AttentionAlignmentConv(0.4, normalize="neighbors")((x_src, x_dst), edge_index)


class AttentionGNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = AttentionAlignmentConv(1.0, 1.0, "neighbors", "cosine", detach_targets=True)

    def forward(self, x, edge_index):
        return self.conv(x, edge_index)


def test_to_hetero_attention_model_runs_on_heterodata(gen):
    data, writes = papers_and_authors(gen)
    out = to_hetero(AttentionGNN(), data.metadata(), aggr="sum")(data.x_dict, data.edge_index_dict)
    assert out["paper"].shape == (5, 3) and bool(torch.isfinite(out["author"]).all())
