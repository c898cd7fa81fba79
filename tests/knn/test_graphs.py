import math

import pytest
import torch
import torch.nn.functional as F

import mp_contrastive.nn.functional._affinity as affinity_module
from benchmarks._measure import peak_memory
from mp_contrastive.knn import affinity_graph
from mp_contrastive.nn import ContrastiveConv, UniformityConv
from tests.knn.reference import clustered

# -- kNN uniformity against the dense one ---------------------------------------------------------

def test_knn_uniformity_equals_dense_at_k_n_minus_1(gen):
    h = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    edge_index, _ = affinity_graph(h, 39)
    for conv in [UniformityConv(0.3), UniformityConv(0.3, detach_targets=True),
                 UniformityConv(0.3, "spectral")]:
        torch.testing.assert_close(conv(h, edge_index), conv(h), atol=1e-10, rtol=0)
        torch.testing.assert_close(conv.energy(h, edge_index), conv.energy(h), atol=1e-10,
                                   rtol=0)


def test_knn_gradient_approaches_dense_as_k_grows(gen):
    """Captured softmax mass and gradient cosine rise with k, reaching 1 at k = N - 1."""
    h = clustered(600, 16, 6, gen).double() / math.sqrt(0.2)
    conv = UniformityConv()
    dense = conv.step(h)
    prob = torch.softmax((h @ h.T).fill_diagonal_(-math.inf), 1)
    masses, cosines = [], []
    for k in [4, 16, 64, 256, 599]:
        edge_index, _ = affinity_graph(h, k)
        masses.append(float(prob[edge_index[1], edge_index[0]].sum() / 600))
        cosines.append(float(F.cosine_similarity(conv.step(h, edge_index).flatten(),
                                                 dense.flatten(), 0)))
    assert all(b > a for a, b in zip(masses, masses[1:], strict=False))
    assert all(b > a for a, b in zip(cosines, cosines[1:], strict=False))
    assert masses[-1] == pytest.approx(1.0) and cosines[-1] == pytest.approx(1.0, abs=1e-12)
    assert cosines[0] < 0.99  # the small heads do miss something: the test can fail


# -- a ContrastiveConv GNN layer with a kNN affinity graph at PubMed size ----------------------------
def test_contrastive_gnn_layer_on_pubmed_size_graph_in_bounded_memory(gen, monkeypatch):
    """19,717 nodes x 500 features (PubMed's sizes), a random 3-block graph with PubMed's 44k
    edges: encoder -> ContrastiveConv with a k = 10 kNN affinity graph -> loss -> backward. The
    dense path must not run, and the peak stays far below one N x N float matrix (1.55 GB), which
    the dense path would need several of."""
    n, features, hidden = 19717, 500, 64
    block = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.randn(3, features, generator=gen)
    x = centers[block] + 2.0 * torch.randn(n, features, generator=gen)
    src = torch.randint(0, n, (3 * 44_338,), generator=gen)
    dst = torch.randint(0, n, (3 * 44_338,), generator=gen)
    keep = (block[src] == block[dst]) & (src != dst)  # assortative: edges within blocks
    edge_index = torch.cat([torch.stack([src[keep], dst[keep]]),
                            torch.stack([dst[keep], src[keep]])], 1)
    encoder = torch.nn.Linear(features, hidden)
    conv = ContrastiveConv(alpha=0.5)

    def dense_forbidden(*args, **kwargs):
        raise AssertionError("the dense affinity path ran")

    monkeypatch.setattr(affinity_module, "dense_uniformity", dense_forbidden)

    def layer():
        h = F.normalize(encoder(x), dim=1) / math.sqrt(0.5)
        affinity, _ = affinity_graph(h.detach(), 10, backend="exact")  # torch: measured
        out = conv(h, edge_index, affinity_index=affinity)
        out.pow(2).sum().backward()
        return affinity

    peak = peak_memory(layer)
    # O((N k + |E|) d): autograd keeps a few [E, d] gathers (about 360 MB here), where the dense
    # path would keep several N x N matrices.
    assert peak < 0.3 * n * n * 4
    assert encoder.weight.grad is not None and bool(torch.isfinite(encoder.weight.grad).all())
