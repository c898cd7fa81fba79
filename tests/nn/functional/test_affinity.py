import pytest
import torch

from mp_contrastive.nn.functional import uniformity
from mp_contrastive.nn.functional._affinity import edge_sum
from tests.reference import complete_graph


@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
@pytest.mark.parametrize("both_sides", [False, True])
def test_dense_equals_sparse_on_the_complete_graph(gen, kernel, both_sides):
    h = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    anchor = torch.rand(9, generator=gen, dtype=torch.float64) + 0.5
    common = dict(same_nodes=True, both_sides=both_sides, anchor_weight=anchor, kernel=kernel,
                  need_step=True, need_energy=True)
    dense = uniformity(h, h, **common)
    sparse = uniformity(h, h, affinity_index=complete_graph(9), **common)
    torch.testing.assert_close(sparse.grad, dense.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(sparse.energy, dense.energy, atol=1e-10, rtol=0)


def test_folded_attraction_is_subtracted(gen):
    h = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    edge_index = torch.tensor([[1, 0, 3, 2], [0, 1, 2, 3]])
    value = torch.full((4,), 0.5, dtype=torch.float64)
    plain = uniformity(h, h, same_nodes=True, both_sides=False)
    folded = uniformity(h, h, same_nodes=True, both_sides=False,
                        attraction=(edge_index, value))
    torch.testing.assert_close(folded.grad, plain.grad - edge_sum(edge_index, value, h, 6),
                               atol=1e-12, rtol=0)


def test_attraction_needs_the_dense_graph(gen):
    h = torch.randn(4, 3, generator=gen)
    edges = complete_graph(4)
    with pytest.raises(ValueError, match="only be folded into a dense affinity graph"):
        uniformity(h, h, same_nodes=True, both_sides=False, affinity_index=edges,
                   attraction=(edges, torch.ones(edges.size(1))))


def test_repeated_pairs_beyond_the_dense_size(gen):
    """A sampled graph may repeat pairs more often than the dense matrix has entries: the result
    is the graph with each pair once, weighted by its multiplicity."""
    h_dst, h_src = torch.randn(4, 3, generator=gen), torch.randn(3, 3, generator=gen)
    src = torch.randint(0, 3, (40,), generator=gen)
    edges = torch.stack([src, torch.arange(4).repeat_interleave(10)])
    pairs, multiplicity = torch.unique(edges, dim=1, return_counts=True)
    common = dict(same_nodes=False, both_sides=False, need_energy=True)
    repeated = uniformity(h_src, h_dst, affinity_index=edges, **common)
    weighted = uniformity(h_src, h_dst, affinity_index=pairs, affinity_weight=multiplicity.float(),
                          **common)
    torch.testing.assert_close(repeated.grad, weighted.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(repeated.energy, weighted.energy, atol=1e-5, rtol=1e-5)


def test_zero_weights_are_no_edges(gen):
    """An anchor whose affinity weights are all zero has no term (no NaN spreading from log 0)."""
    h = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    edges = torch.tensor([[1, 2, 0, 3], [0, 0, 1, 2]])
    weight = torch.tensor([0.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    common = dict(same_nodes=True, both_sides=True, need_energy=True)
    zero = uniformity(h, h, affinity_index=edges, affinity_weight=weight, **common)
    dropped = uniformity(h, h, affinity_index=edges[:, 2:], affinity_weight=weight[2:], **common)
    assert bool(torch.isfinite(zero.grad).all())
    torch.testing.assert_close(zero.grad, dropped.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(zero.energy, dropped.energy, atol=1e-12, rtol=0)
