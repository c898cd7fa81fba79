import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import AGNNConv, GATConv, GCNConv, JumpingKnowledge
from torch_geometric.utils import scatter, to_undirected

from mp_contrastive.gnn import AlignmentGCNConv, AttentionAlignmentGATConv, NodeClassifier


def random_graph(gen, num_nodes=40, num_edges=160, symmetric=False):
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    return to_undirected(edge_index) if symmetric else edge_index


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_alignment_gcn_conv_is_gcn_conv(gen, symmetric, weighted):
    """Same weights, same output and gradients, on directed graphs too (alpha = 1, detached)."""
    x = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    edge_index = random_graph(gen, symmetric=symmetric)
    weight = torch.rand(edge_index.size(1), generator=gen, dtype=torch.float64) if weighted else None
    ours, pyg = AlignmentGCNConv(12, 5).double(), GCNConv(12, 5).double()
    with torch.no_grad():
        pyg.lin.weight.copy_(ours.lin.weight)
        ours.bias.copy_(torch.randn(5, generator=gen))
        pyg.bias.copy_(ours.bias)
    out, ref = ours(x, edge_index, weight), pyg(x, edge_index, weight)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(ours.lin.weight.grad, pyg.lin.weight.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours.bias.grad, pyg.bias.grad, atol=1e-12, rtol=0)


def test_operator_gcn_equals_pyg_gcn_on_cora(cora):
    """The whole classifier: the same seed gives the same initial weights (same init, same order),
    and the two models then give the same logits on Cora."""
    torch.manual_seed(0)
    ours = NodeClassifier(cora.num_features, 16, 7, layer="gcn").eval()
    torch.manual_seed(0)
    pyg = NodeClassifier(cora.num_features, 16, 7, layer="pyg_gcn").eval()
    for (name, a), (_, b) in zip(ours.named_parameters(), pyg.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    torch.testing.assert_close(ours(cora.x, cora.edge_index), pyg(cora.x, cora.edge_index),
                               atol=1e-6, rtol=1e-5)


def test_jumping_knowledge_matches_pyg(gen):
    x = torch.randn(40, 6, generator=gen)
    edge_index = random_graph(gen, symmetric=True)
    for mode in ("max", "cat"):
        torch.manual_seed(1)
        ours = NodeClassifier(6, 8, 3, num_layers=3, jk=mode).eval()
        torch.manual_seed(1)
        pyg = NodeClassifier(6, 8, 3, layer="pyg_gcn", num_layers=3, jk=mode).eval()
        assert isinstance(pyg.jk, JumpingKnowledge)
        torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("concat", [True, False])
def test_attention_layer_equals_gat_conv_when_both_attentions_are_uniform(gen, concat):
    """beta = 0 here and zero attention vectors in GATConv: both average over N(i) and i."""
    x = torch.randn(40, 10, generator=gen)
    edge_index = random_graph(gen)
    ours = AttentionAlignmentGATConv(10, 4, heads=3, concat=concat, beta=0.0)
    gat = GATConv(10, 4, heads=3, concat=concat)
    with torch.no_grad():
        gat.lin.weight.copy_(ours.lin.weight)
        gat.att_src.zero_()
        gat.att_dst.zero_()
        ours.bias.normal_(generator=gen)
        gat.bias.copy_(ours.bias)
    torch.testing.assert_close(ours(x, edge_index), gat(x, edge_index), atol=1e-5, rtol=1e-5)
    # With GAT's learned (additive) scores the two attentions differ: no equality.
    with torch.no_grad():
        gat.att_src.normal_(generator=gen)
    assert not torch.allclose(ours(x, edge_index), gat(x, edge_index), atol=1e-3)


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_each_attention_head_is_agnn_with_fixed_beta(gen, beta):
    x = torch.randn(40, 10, generator=gen)
    edge_index = random_graph(gen)
    ours = AttentionAlignmentGATConv(10, 4, heads=2, beta=beta)
    agnn = AGNNConv(requires_grad=False)
    agnn.beta.fill_(beta)
    h = ours.lin(x).view(40, 2, 4)
    expected = torch.cat([agnn(h[:, k], edge_index) for k in range(2)], 1) + ours.bias
    torch.testing.assert_close(ours(x, edge_index), expected, atol=1e-5, rtol=1e-5)


def test_attention_dropout_is_gat_style(gen):
    """Training mode: the normalised attention weights go through dropout (zeroed with probability
    p, the rest scaled by 1/(1-p)) and are then propagated as they are; evaluation: no dropout."""
    x = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    edge_index = random_graph(gen, 30, 200)
    layer = AttentionAlignmentGATConv(6, 3, beta=2.0, dropout=0.5, bias=False).double()
    h = layer.lin(x)
    index, weight = layer.propagation.attention(h, edge_index)
    torch.testing.assert_close(layer.eval()(x, edge_index),
                               scatter(weight[:, None] * h[index[0]], index[1], 0, 30), atol=1e-12,
                               rtol=0)
    torch.manual_seed(0)
    out = layer.train()(x, edge_index)
    torch.manual_seed(0)
    dropped = F.dropout(weight, p=0.5)
    assert set(torch.unique(dropped / weight).tolist()) == {0.0, 2.0}
    torch.testing.assert_close(out, scatter(dropped[:, None] * h[index[0]], index[1], 0, 30),
                               atol=1e-12, rtol=0)


def test_classifier_shapes_and_bad_input(gen):
    x = torch.randn(40, 6, generator=gen)
    edge_index = random_graph(gen)
    for layer in ("gcn", "pyg_gcn", "attention", "pyg_gat"):
        model = NodeClassifier(6, 4, 3, layer=layer, heads=2)
        assert model(x, edge_index).shape == (40, 3)
    with pytest.raises(ValueError, match="'layer'"):
        NodeClassifier(6, 4, 3, layer="sage")
    with pytest.raises(ValueError, match="'jk'"):
        NodeClassifier(6, 4, 3, layer="pyg_gcn", jk="sum")
    with pytest.raises(ValueError, match="'dropout'"):
        NodeClassifier(6, 4, 3, dropout=1.0)
    with pytest.raises(ValueError, match="'in_channels'"):
        AlignmentGCNConv(0, 4)
    with pytest.raises(TypeError, match="'heads'"):
        AttentionAlignmentGATConv(6, 4, heads=2.0)
    with pytest.raises(TypeError, match="'x'"):
        AlignmentGCNConv(6, 4)(x.long(), edge_index)
    with pytest.raises(ValueError, match="'edge_index' is out of range"):
        AlignmentGCNConv(6, 4)(x, edge_index + 40)
    assert repr(AlignmentGCNConv(6, 4)) == "AlignmentGCNConv(6, 4)"


def test_feature_dropout_is_dropout_on_sparse_features():
    """Zeros stay zero, each non-zero is kept with probability 1 - p and scaled by 1 / (1 - p)
    (dropout's distribution); dense inputs get F.dropout itself (same random stream)."""
    from mp_contrastive.gnn.models import feature_dropout

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(400, 300, generator=gen) * (torch.rand(400, 300, generator=gen) < 0.05)
    out = feature_dropout(x, 0.6)
    assert bool((out[x == 0] == 0).all())
    nonzero = x != 0
    kept = out[nonzero] != 0
    torch.testing.assert_close(out[nonzero][kept], x[nonzero][kept] / 0.4)
    assert abs(float(kept.float().mean()) - 0.4) < 0.02  # 6,000 non-zeros: 5 standard deviations
    assert feature_dropout(x, 0.6, training=False) is x and feature_dropout(x, 0.0) is x
    dense = torch.randn(50, 20, generator=gen)
    torch.manual_seed(3)
    expected = torch.nn.functional.dropout(dense, 0.5)
    torch.manual_seed(3)
    torch.testing.assert_close(feature_dropout(dense, 0.5), expected, atol=0, rtol=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("layout", ["dense", "csr", "zero weight column"])
def test_alignment_gcn_conv_refuses_non_finite_features(value, layout):
    """The layer leaves the finiteness check to its propagation, on lin(x) (one pass over the
    narrow output, not two with the wide input): a NaN or Inf in x still raises, even where the
    weight column it meets is zero (Inf * 0 is NaN)."""
    conv = AlignmentGCNConv(8, 4)
    x = torch.randn(3, 8)
    x[1, 3] = value
    if layout == "zero weight column":
        with torch.no_grad():
            conv.lin.weight[:, 3] = 0.0
    features = x.to_sparse_csr() if layout == "csr" else x
    with pytest.raises(ValueError, match="'x' contains non-finite values"):
        conv(features, torch.tensor([[0, 1, 2], [1, 2, 0]]))
