import math

import pytest
import torch
import torch.nn.functional as F

from mp_contrastive.knn import AffinityIndex, affinity_graph, sampled_affinity_graph
from mp_contrastive.nn import UniformityConv
from tests.knn.reference import clustered


@pytest.mark.parametrize("proposal", ["uniform", "cluster"])
def test_sampled_partition_function_is_unbiased(gen, proposal):
    """E[sum_k w_ik exp(h_i.h_k)] over the draws equals the full sum over the candidates."""
    bank = clustered(3000, 8, 10, gen) / math.sqrt(0.25)
    q = clustered(8, 8, 10, gen) / math.sqrt(0.25)
    index = AffinityIndex(bank, nlist=20)
    exact = torch.logsumexp(q @ bank.T, 1).exp()
    draws = []
    for seed in range(200):
        edge_index, weight = index.sample(10, 30, q, proposal=proposal,
                                          generator=torch.Generator().manual_seed(seed))
        score = (q[edge_index[1]] * bank[edge_index[0]]).sum(1)
        draws.append(torch.zeros(8).index_add_(0, edge_index[1], weight * score.exp()))
    draws = torch.stack(draws)
    # Within 4 standard errors of the mean, per query.
    assert bool(((draws.mean(0) - exact).abs() < 4 * draws.std(0) / math.sqrt(200) + 1e-3 * exact)
                .all())


def test_sampled_graph_structure(gen):
    bank = clustered(2000, 8, 10, gen)
    exclude = torch.tensor([[5, 6, 7], [0, 0, 1]])
    edge_index, weight = sampled_affinity_graph(bank, 16, 64, exclude=exclude,
                                                generator=torch.Generator().manual_seed(0))
    n = 2000
    assert bool((edge_index[1][1:] >= edge_index[1][:-1]).all())  # grouped by anchor
    assert not bool((edge_index[0] == edge_index[1]).any())
    assert set((edge_index[1] * n + edge_index[0]).tolist()).isdisjoint([5, 6, n + 7])
    assert bool((weight > 0).all()) and int((weight == 1).sum()) >= 16 * n
    head, _ = affinity_graph(bank, 16, exclude=exclude)
    tail = weight != 1
    # no tail draw repeats a head edge
    assert set((edge_index[1][tail] * n + edge_index[0][tail]).tolist()).isdisjoint(
        (head[1] * n + head[0]).tolist())


def test_sampled_gradient_close_to_dense_on_clustered_features(gen):
    """The estimator's purpose, on a bank of 16k clustered negatives at temperature 0.1: the step
    matches the dense one in direction and size, where the renormalised head alone does not."""
    bank = clustered(16384, 32, 64, gen, spread=0.6) / math.sqrt(0.1)
    q = clustered(256, 32, 64, gen, spread=0.6) / math.sqrt(0.1)
    conv = UniformityConv()
    dense = conv.step((bank, q))
    index = AffinityIndex(bank)
    head, _ = index.search(64, q)
    head_only = conv.step((bank, q), head)
    edge_index, weight = index.sample(64, 512, q, generator=torch.Generator().manual_seed(0))
    sampled = conv.step((bank, q), edge_index, weight)
    cos = F.cosine_similarity(sampled.flatten(), dense.flatten(), 0)
    assert cos > 0.99 and abs(sampled.norm() / dense.norm() - 1) < 0.05
    assert abs(head_only.norm() / dense.norm() - 1) > 0.1  # what the tail is for
