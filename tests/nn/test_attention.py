import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import AGNNConv
from torch_geometric.testing import assert_module

import mp_contrastive.nn.functional._attention as attention_module
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.nn import AttentionAlignmentConv
from mp_contrastive.nn.functional import attention_weights
from tests.reference import (
    complete_graph,
    dense,
    laplacian_energy,
    random_graph,
    step_from_autograd,
)

MODES = ["negatives", "positives", "neighbors"]


def reference_weights(q: torch.Tensor, pos: torch.Tensor, base: torch.Tensor, beta: float,
                      mode: str, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Attention matrix [i, j] from the formulas in the docstring, with dense masks."""
    n = q.size(0)
    s = beta * q @ q.T
    if mode == "neighbors":
        logits = (s + base.log()).masked_fill(~pos, -math.inf)
        return torch.softmax(logits, 1).nan_to_num(0.0)
    if mode == "positives":
        return base * torch.exp(s - torch.logsumexp(s[pos], 0) + math.log(int(pos.sum()))) * pos
    if negatives is None:
        negatives = ~pos & ~torch.eye(n, dtype=torch.bool)
    log_mean = torch.logsumexp(s.masked_fill(~negatives, -math.inf), 1) - \
        negatives.sum(1).double().log()
    return base * torch.exp(s - log_mean[:, None]) * pos


def batch(gen, sample):
    graph = augmentation_graph(sample=torch.tensor(sample))
    n = graph.num_nodes
    h = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    pos = dense(graph.edge_index, None, n) > 0
    base = dense(graph.edge_index, graph.edge_weight, n)
    return graph, h, pos, base


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kernel", ["dot", "cosine"])
def test_weights_match_reference(gen, mode, kernel):
    graph, h, pos, base = batch(gen, [0, 1, 2, 0, 1, 2, 0, 3, 3, 1])
    conv = AttentionAlignmentConv(beta=0.8, normalize=mode, score=kernel)
    edge_index, weight = conv.attention(h, graph.edge_index, graph.edge_weight)
    q = F.normalize(h, dim=1) if kernel == "cosine" else h
    expected = reference_weights(q, pos, base, 0.8, mode)
    torch.testing.assert_close(dense(edge_index, weight, h.size(0)), expected, atol=1e-10, rtol=0)


def test_default_base_is_row_normalised(gen):
    graph, h, pos, base = batch(gen, [0, 1, 0, 1, 0, 2, 2])
    conv = AttentionAlignmentConv(beta=0.5)
    _, with_base = conv.attention(h, graph.edge_index, graph.edge_weight)
    _, without = conv.attention(h, graph.edge_index)
    torch.testing.assert_close(with_base, without)


def test_sparse_negatives_complete_equals_dense(gen):
    graph, h, _, _ = batch(gen, [0, 1, 2, 0, 1, 2, 2])
    conv = AttentionAlignmentConv(beta=1.3)
    _, dense_w = conv.attention(h, graph.edge_index, graph.edge_weight)
    _, sparse_w = conv.attention(h, graph.edge_index, graph.edge_weight,
                                 affinity_index=complete_graph(7))
    torch.testing.assert_close(sparse_w, dense_w, atol=1e-10, rtol=0)


def test_sparse_negatives_subset(gen):
    graph, h, pos, base = batch(gen, [0, 1, 2, 0, 1, 2, 3, 3])
    negatives_index, _ = random_graph(8, 0.6, gen, symmetric=False, weighted=False)
    conv = AttentionAlignmentConv(beta=0.7)
    edge_index, weight = conv.attention(h, graph.edge_index, graph.edge_weight,
                                        affinity_index=negatives_index)
    negatives = (dense(negatives_index, None, 8) > 0) & ~pos
    expected = reference_weights(h, pos, base, 0.7, "negatives", negatives)
    torch.testing.assert_close(dense(edge_index, weight, 8), expected, atol=1e-10, rtol=0)


def test_negatives_when_positives_dominate(gen, monkeypatch):
    """Rows whose positives hold most of the softmax mass take the exact (masked) path."""
    graph, h, pos, base = batch(gen, [0, 1, 2, 3, 0, 1, 2, 3])
    h[4:6] = h[:2] + 1e-3 * torch.randn(2, 4, generator=gen, dtype=torch.float64)
    h = 3 * h
    exact_rows = []
    original = attention_module._exact_negative_logsumexp

    def spy(query, beta, rows, *args):
        exact_rows.extend(rows.tolist())
        return original(query, beta, rows, *args)

    monkeypatch.setattr(attention_module, "_exact_negative_logsumexp", spy)
    conv = AttentionAlignmentConv(beta=2.0)
    edge_index, weight = conv.attention(h, graph.edge_index, graph.edge_weight)
    expected = reference_weights(h, pos, base, 2.0, "negatives")
    torch.testing.assert_close(dense(edge_index, weight, 8), expected, atol=1e-9, rtol=1e-9)
    assert sorted(exact_rows) == [0, 1, 4, 5]  # the near-duplicate pairs, and only those
    similarity = h @ h.T
    _, shared = attention_weights(h, graph.edge_index, graph.edge_weight, similarity=similarity)
    _, plain = attention_weights(h, graph.edge_index, graph.edge_weight)
    torch.testing.assert_close(shared, plain, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(similarity, h @ h.T, atol=0, rtol=0)  # read, not modified


@pytest.mark.parametrize("mode", MODES)
def test_beta_zero_gives_base_weights(gen, mode):
    graph, h, _, _ = batch(gen, [0, 1, 2, 0, 1, 2, 0])
    _, weight = AttentionAlignmentConv(beta=0.0, normalize=mode).attention(
        h, graph.edge_index, graph.edge_weight)
    torch.testing.assert_close(weight, graph.edge_weight.double(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("detach", [False, True])
def test_step_is_gradient_step(gen, mode, detach):
    graph, h, _, _ = batch(gen, [0, 1, 2, 0, 1, 2, 0, 3, 3])
    conv = AttentionAlignmentConv(alpha=0.4, beta=1.5, normalize=mode, detach_targets=detach)
    edge_index, weight = conv.attention(h, graph.edge_index, graph.edge_weight)
    w = dense(edge_index, weight, h.size(0))
    expected = step_from_autograd(lambda x: laplacian_energy(x, w, detach), h, 0.4)
    torch.testing.assert_close(conv(h, graph.edge_index, graph.edge_weight), expected,
                               atol=1e-8, rtol=0)
    torch.testing.assert_close(conv.energy(h, graph.edge_index, graph.edge_weight),
                               laplacian_energy(h, w, False), atol=1e-8, rtol=0)


def test_return_attention_weights(gen):
    graph, h, _, _ = batch(gen, [0, 1, 0, 1])
    conv = AttentionAlignmentConv(normalize="neighbors", add_self_loops=True)
    out, (edge_index, weight) = conv(h, graph.edge_index, return_attention_weights=True)
    assert out.shape == h.shape
    assert edge_index.size(1) == graph.edge_index.size(1) + 4  # self loops added
    assert weight.shape == (edge_index.size(1),) and not weight.requires_grad


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_equals_agnn_propagation(gen, beta):
    """normalize='neighbors', cosine kernel, self loops, detached targets, alpha=1: AGNNConv."""
    x = torch.randn(25, 5, generator=gen)
    edge_index, _ = random_graph(25, 0.2, gen, symmetric=False, weighted=False)
    agnn = AGNNConv(requires_grad=False)
    agnn.beta.fill_(beta)
    conv = AttentionAlignmentConv(alpha=1.0, beta=beta, normalize="neighbors", score="cosine",
                                  detach_targets=True, add_self_loops=True)
    torch.testing.assert_close(conv(x, edge_index), agnn(x, edge_index), atol=1e-6, rtol=1e-5)


def test_full_half_step_equals_agnn_only_for_symmetric_weights(gen):
    """Without detaching, alpha=1/2 gives AGNN's W x only when W is symmetric (W = W^T)."""
    x = torch.randn(6, 3, generator=gen)
    graph = augmentation_graph(3, 2)  # one positive per node: W = W^T = the pair graph
    agnn = AGNNConv(requires_grad=False)
    conv = AttentionAlignmentConv(alpha=0.5, normalize="neighbors", score="cosine")
    # Each node and its one positive, without self loops: W is the symmetric pairing.
    torch.testing.assert_close(conv(x, graph.edge_index),
                               x[torch.tensor([3, 4, 5, 0, 1, 2])], atol=1e-6, rtol=0)
    directed = torch.tensor([[1, 2, 0, 2], [0, 0, 1, 1]])
    conv = AttentionAlignmentConv(alpha=0.5, beta=1.0, normalize="neighbors", score="cosine",
                                  add_self_loops=True)
    assert not torch.allclose(conv(x[:3], directed), agnn(x[:3], directed), atol=1e-4)


def test_attention_x_and_layouts(gen):
    graph, h, pos, base = batch(gen, [0, 1, 2, 0, 1, 2])
    backbone = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    conv = AttentionAlignmentConv(normalize="positives", score="cosine")
    edge_index, weight = conv.attention(h, graph.edge_index, graph.edge_weight,
                                        attention_x=backbone)
    expected = reference_weights(F.normalize(backbone, dim=1), pos, base, 1.0, "positives")
    torch.testing.assert_close(dense(edge_index, weight, 6), expected, atol=1e-10, rtol=0)
    assert_module(AttentionAlignmentConv(normalize="neighbors"), h.float(), graph.edge_index,
                  expected_size=(6, 4), test_sparse_layouts=[torch.sparse_coo, torch.sparse_csc],
                  atol=1e-6)


def test_repr_shows_the_non_default_settings():
    assert repr(AttentionAlignmentConv()) == "AttentionAlignmentConv(alpha=0.5)"
    assert repr(AttentionAlignmentConv(1.0, 0.5, "neighbors", "cosine", detach_targets=True,
                                       add_self_loops=True)) == (
        "AttentionAlignmentConv(alpha=1.0, beta=0.5, normalize='neighbors', score='cosine', "
        "detach_targets=True, add_self_loops=True)")
    assert repr(AttentionAlignmentConv(beta=2.0, detach_attention=False, learn_beta=True)) == (
        "AttentionAlignmentConv(alpha=0.5, beta=2.0, detach_attention=False, learn_beta=True, "
        "initial_beta=2.0)")

