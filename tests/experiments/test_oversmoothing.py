import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import to_dense_adj, to_undirected

from mp_contrastive.experiments import oversmoothing
from mp_contrastive.experiments.oversmoothing import (
    _DeepPropagationClassifier,
    _propagate,
    depth_study,
    trained_depth_study,
)
from mp_contrastive.gnn import planted_partition_graph


def small_graph(gen, n=30):
    edge_index = to_undirected(torch.randint(0, n, (2, 90), generator=gen))
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    x = torch.rand(n, 8, generator=gen, dtype=torch.float64)
    return x, edge_index


def gcn_matrix(edge_index, n):
    a = to_dense_adj(edge_index, max_num_nodes=n)[0].double() + torch.eye(n, dtype=torch.float64)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def node_norm(h, tau):
    return F.normalize(h, dim=1) / math.sqrt(tau)


def test_alignment_step_closed_form(gen):
    x, edge_index = small_graph(gen)
    a = gcn_matrix(edge_index, 30)
    h0 = node_norm(x, 0.5)
    out = _propagate(x, edge_index, "alignment", [0, 1, 2], alpha=2.0, tau=0.5)
    torch.testing.assert_close(out[0], h0)
    h1 = node_norm(h0 + 2.0 * a @ h0, 0.5)
    torch.testing.assert_close(out[1], h1, atol=1e-12, rtol=0)
    torch.testing.assert_close(out[2], node_norm(h1 + 2.0 * a @ h1, 0.5), atol=1e-12, rtol=0)


def test_contrastive_step_closed_form(gen):
    """N(H + alpha (A_bar - A_hat) H), A_hat the softmax of H_i . H_k over each node's k nearest."""
    x, edge_index = small_graph(gen)
    a = gcn_matrix(edge_index, 30)
    h0 = node_norm(x, 0.2)
    s = h0 @ h0.T
    s.fill_diagonal_(-math.inf)
    nearest = s.topk(5, dim=1).indices
    logits = torch.full_like(s, -math.inf).scatter(1, nearest, s.gather(1, nearest))
    a_hat = torch.softmax(logits, dim=1)
    expected = node_norm(h0 + 0.5 * (a - a_hat) @ h0, 0.2)
    out = _propagate(x, edge_index, "contrastive", [1], alpha=0.5, tau=0.2, k=5, num_samples=0)
    torch.testing.assert_close(out[1], expected, atol=1e-12, rtol=0)


def test_contrastive_dense_affinity_closed_form(gen):
    """With affinity="dense", A_hat is the softmax of H_i . H_k over every other node."""
    x, edge_index = small_graph(gen)
    a = gcn_matrix(edge_index, 30)
    h0 = node_norm(x, 0.5)
    a_hat = torch.softmax((h0 @ h0.T).fill_diagonal_(-math.inf), dim=1)
    expected = node_norm(h0 + 2.0 * (a - a_hat) @ h0, 0.5)
    out = _propagate(x, edge_index, "contrastive", [1], alpha=2.0, tau=0.5, affinity="dense")
    torch.testing.assert_close(out[1], expected, atol=1e-12, rtol=0)


def test_pairnorm_step_closed_form(gen):
    x, edge_index = small_graph(gen)
    a = gcn_matrix(edge_index, 30)

    def pair_norm(h):
        h = h - h.mean(0)
        return h / (1e-5 + h.pow(2).sum(1).mean()).sqrt()

    out = _propagate(x, edge_index, "pairnorm", [1], alpha=1.0)
    h0 = pair_norm(x)
    # the alignment step (1 - a') H + a' A_bar H with a' = alpha / (1 + alpha) = 1/2
    torch.testing.assert_close(out[1], pair_norm(0.5 * (h0 + a @ h0)), atol=1e-12, rtol=0)


def test_alignment_collapses_and_contrastive_does_not():
    """On a connected planted-partition graph: after 64 steps alignment alone maps every node to
    nearly one direction and the (regularised) probe loses accuracy; with the uniformity on the
    sampled kNN affinity graph the features stay centred and spread and keep the classes apart."""
    data = planted_partition_graph(300, 16, 4, 1200, homophily=0.9, signal=2.0, num_val=100,
                                   num_test=100, seed=3)
    rows = depth_study(data, depths=(64,), alpha=4.0, k=8, num_samples=32,
                       schemes=("alignment", "contrastive"))
    alignment, contrastive = rows
    assert alignment["mean_cosine"] > 0.999
    assert abs(contrastive["mean_cosine"]) < 0.05
    assert contrastive["test_acc"] >= alignment["test_acc"] + 5, rows


def test_bad_input(gen):
    x, edge_index = small_graph(gen)
    with pytest.raises(ValueError, match="'scheme'"):
        _propagate(x, edge_index, "gcn", [1])
    with pytest.raises(ValueError, match="'depths'"):
        _propagate(x, edge_index, "alignment", [])
    with pytest.raises(ValueError, match="'k'"):
        _propagate(x, edge_index, "contrastive", [1], k=30)
    with pytest.raises(ValueError, match="'alpha'"):
        _propagate(x, edge_index, "alignment", [1], alpha=0.0)
    with pytest.raises(ValueError, match="'affinity'"):
        _propagate(x, edge_index, "contrastive", [1], affinity="full")
    with pytest.raises(ValueError, match="'edge_index' is out of range"):
        _propagate(x, edge_index + 30, "alignment", [1])


def test_deep_classifier_layer_closed_form(gen):
    """One layer in eval mode: classifier(ReLU(N(H + alpha (A_bar - A_hat) H))), H = x W + b, with
    A_hat the softmax of H_i . H_k over every other node (dense affinity)."""
    x, edge_index = small_graph(gen)
    model = _DeepPropagationClassifier(8, 6, 3, 1, "contrastive", alpha=2.0, tau=0.5,
                                       affinity="dense").double().eval()
    h = model.lins[0](x)
    a_hat = torch.softmax((h @ h.T).fill_diagonal_(-math.inf), dim=1)
    hidden = torch.relu(node_norm(h + 2.0 * (gcn_matrix(edge_index, 30) - a_hat) @ h, 0.5))
    torch.testing.assert_close(model(x, edge_index), model.classifier(hidden), atol=1e-12, rtol=0)


def test_deep_classifier_searches_affinity_every_refresh(gen, monkeypatch):
    """The affinity graph is searched on the first pass and every ``refresh_every``-th training
    pass, once per layer; evaluation passes reuse it."""
    x, edge_index = small_graph(gen)
    calls = []
    search = oversmoothing._affinity_edges

    def counted(*args, **kwargs):
        calls.append(args[0].detach().clone())
        return search(*args, **kwargs)

    monkeypatch.setattr(oversmoothing, "_affinity_edges", counted)
    model = _DeepPropagationClassifier(8, 6, 3, 2, "contrastive", k=4, num_samples=4,
                                       refresh_every=3).double()
    for _ in range(7):
        model.train()
        model(x, edge_index)
        model.eval()
        model(x, edge_index)
    assert len(calls) == 2 * 3  # training passes 1, 4 and 7, two layers each
    assert [c.shape for c in calls[:2]] == [(30, 6), (30, 6)]  # each layer's own features
    calls.clear()
    fresh = _DeepPropagationClassifier(8, 6, 3, 2, "contrastive", k=4, num_samples=4).double()
    fresh.eval()
    fresh(x, edge_index)
    fresh(x, edge_index)
    assert len(calls) == 2  # searched on first use, then reused


def test_trained_depth_alignment_collapses_contrastive_trains():
    """Trained deep stacks on a planted-partition graph: 12 alignment-only layers fall to chance
    (one class for every node), 12 contrastive layers keep the classes apart."""
    data = planted_partition_graph(600, 32, 3, 1500, signal=1.0, num_val=100, num_test=200, seed=2)
    alignment, contrastive = trained_depth_study(data, (12,), ("alignment", "contrastive"),
                                                 hidden_channels=16, epochs=40, num_samples=16)
    assert alignment["test_acc"] < 45, alignment
    assert contrastive["test_acc"] >= alignment["test_acc"] + 25, (alignment, contrastive)


def test_deep_classifier_bad_input(gen):
    x, edge_index = small_graph(gen)
    with pytest.raises(ValueError, match="'depth'"):
        _DeepPropagationClassifier(8, 6, 3, 0, "alignment")
    with pytest.raises(ValueError, match="'scheme'"):
        _DeepPropagationClassifier(8, 6, 3, 2, "gcn")
    with pytest.raises(ValueError, match="'dropout'"):
        _DeepPropagationClassifier(8, 6, 3, 2, "alignment", dropout=1.0)
    with pytest.raises(TypeError, match="'hidden_channels'"):
        _DeepPropagationClassifier(8, 6.0, 3, 2, "alignment")
    with pytest.raises(ValueError, match="'refresh_every'"):
        _DeepPropagationClassifier(8, 6, 3, 2, "contrastive", refresh_every=0)
    with pytest.raises(ValueError, match="'k'"):
        _DeepPropagationClassifier(8, 6, 3, 2, "contrastive", k=30).double()(x, edge_index)
    with pytest.raises(ValueError, match="'edge_index' is out of range"):
        _DeepPropagationClassifier(8, 6, 3, 2, "alignment").double()(x, edge_index + 30)
