import pytest
import torch
from torch_geometric.utils import dropout_edge, mask_feature

from mp_contrastive.gnn import GraphAugment, augment_graph


def graph(gen):
    x = (torch.rand(50, 40, generator=gen) < 0.2).float()
    edge_index = torch.randint(0, 50, (2, 400), generator=gen)
    return x, edge_index


def test_is_pyg_dropout_edge_then_mask_feature(gen):
    x, edge_index = graph(gen)
    torch.manual_seed(3)
    out_x, out_edges = augment_graph(x, edge_index, 0.3, 0.4)
    torch.manual_seed(3)
    ref_edges, _ = dropout_edge(edge_index, p=0.3)
    ref_x, _ = mask_feature(x, p=0.4, mode="col")
    assert torch.equal(out_edges, ref_edges) and torch.equal(out_x, ref_x)


def test_columns_are_masked_for_all_nodes_alike(gen):
    x = torch.rand(30, 2000, generator=gen) + 0.1
    torch.manual_seed(0)
    out, _ = GraphAugment(drop_edge=0.0, drop_feature=0.25)(x, torch.zeros(2, 0, dtype=torch.long))
    zero = out == 0
    assert torch.equal(zero, zero[:1].expand_as(zero))  # whole columns
    assert abs(float(zero[0].float().mean()) - 0.25) < 0.03


def test_sparse_features_give_the_same_view(gen):
    x, edge_index = graph(gen)
    torch.manual_seed(5)
    dense = augment_graph(x, edge_index, 0.2, 0.5)
    torch.manual_seed(5)
    sparse = augment_graph(x.to_sparse_csr(), edge_index, 0.2, 0.5)
    assert sparse[0].layout == torch.sparse_csr
    assert torch.equal(sparse[0].to_dense(), dense[0]) and torch.equal(sparse[1], dense[1])


def test_zero_rates_are_the_identity(gen):
    x, edge_index = graph(gen)
    out_x, out_edges = augment_graph(x, edge_index, 0.0, 0.0)
    assert torch.equal(out_x, x) and torch.equal(out_edges, edge_index)


def test_bad_input(gen):
    x, edge_index = graph(gen)
    with pytest.raises(ValueError, match="'drop_edge'"):
        augment_graph(x, edge_index, 1.0, 0.1)
    with pytest.raises(ValueError, match="'drop_feature'"):
        GraphAugment(0.1, -0.1)
    with pytest.raises(TypeError, match="'drop_edge'"):
        GraphAugment("0.1", 0.1)
    with pytest.raises(ValueError, match="'edge_index' is out of range"):
        augment_graph(x, edge_index + 50, 0.1, 0.1)
    with pytest.raises(TypeError, match="'x'"):
        augment_graph(x.long(), edge_index, 0.1, 0.1)
