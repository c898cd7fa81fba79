"""The memory-bank contrast kernel against plain autograd, and its dense, tiled and sparse paths
against each other."""

import math

import pytest
import torch

from mp_contrastive.nn.functional import Tiling
from mp_contrastive.nn.functional._bank import bank_contrast


def reference(anchor, positive, negatives, scale, c=None, v=None, weight=None, edges=None):
    """The energy by autograd: c_i log(e^{s_i} + sum_k w_ik e^{scale a_i.n_k}) - v_i s_i."""
    a, p = anchor.clone().requires_grad_(), positive.clone().requires_grad_()
    s = (a * p).sum(1)
    logits = scale * a @ negatives.T
    if edges is not None:  # a sparse graph: only its edges, with log-weights
        mask = torch.full_like(logits, -math.inf)
        w = torch.ones(edges.size(1), dtype=a.dtype) if weight is None else weight
        mask = mask.index_put((edges[1], edges[0]), w.log(), accumulate=False)
        logits = logits + mask
    lse = torch.logsumexp(torch.cat([s.unsqueeze(1), logits], 1), 1)
    c = torch.ones_like(s) if c is None else c
    v = torch.ones_like(s) if v is None else v
    energy = (c * lse - v * s).sum()
    return (energy.detach(), *torch.autograd.grad(energy, [a, p]))


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    anchor, positive = torch.randn(2, 12, 5, generator=gen, dtype=torch.float64).unbind(0)
    negatives = torch.nn.functional.normalize(torch.randn(40, 5, generator=gen,
                                                          dtype=torch.float64), dim=1)
    return anchor, positive, negatives


def test_dense_equals_autograd(data):
    anchor, positive, negatives = data
    c = torch.rand(12, dtype=torch.float64) + 0.5
    v = torch.rand(12, dtype=torch.float64) + 0.5
    got = bank_contrast(anchor, positive, negatives, negative_scale=1.7, anchor_weight=c,
                        positive_weight=v)
    for a, b in zip(got, reference(anchor, positive, negatives, 1.7, c, v), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_tiled_and_sparse_complete_graph_equal_dense(data):
    anchor, positive, negatives = data
    dense = bank_contrast(anchor, positive, negatives, negative_scale=0.8)
    tiled = bank_contrast(anchor, positive, negatives, negative_scale=0.8,
                          tiling=Tiling(elements=7, threshold=0))
    complete = torch.stack([torch.arange(40).repeat(12), torch.arange(12).repeat_interleave(40)])
    sparse = bank_contrast(anchor, positive, negatives, negative_scale=0.8,
                           affinity_index=complete)
    for other in (tiled, sparse):
        for a, b in zip(other, dense, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_weighted_sparse_graph_equals_autograd(data):
    anchor, positive, negatives = data
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, 40, (12, 6), generator=gen)
    edges = torch.stack([src.flatten(), torch.arange(12).repeat_interleave(6)])
    edges = torch.unique(edges, dim=1)  # the reference adds no duplicate pairs
    weight = torch.rand(edges.size(1), generator=gen, dtype=torch.float64) + 0.2
    got = bank_contrast(anchor, positive, negatives, negative_scale=1.3, affinity_index=edges,
                        affinity_weight=weight)
    want = reference(anchor, positive, negatives, 1.3, weight=weight, edges=edges)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_empty_bank_leaves_only_the_positive(data):
    anchor, positive, _ = data
    got = bank_contrast(anchor, positive, anchor.new_zeros(0, 5))
    assert got.energy.item() == 0.0
    assert torch.count_nonzero(got.grad_anchor) == 0 and torch.count_nonzero(got.grad_positive) == 0
