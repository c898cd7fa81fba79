"""GRACE's encoder and projector."""

import pytest
import torch
from torch_geometric.nn import GCNConv

from mp_contrastive.gnn import AlignmentGCNConv, GRACEEncoder, GRACEModel


@pytest.mark.parametrize(("layer", "conv"), [("gcn", AlignmentGCNConv), ("pyg_gcn", GCNConv)])
def test_encoder_widths_and_projector(layer, conv):
    encoder = GRACEEncoder(8, 4, activation="prelu", num_layers=3, layer=layer)
    assert [type(c) for c in encoder.convs] == [conv] * 3
    assert [(c.in_channels, c.out_channels) for c in encoder.convs] == [(8, 8), (8, 8), (8, 4)]
    assert sum(isinstance(m, torch.nn.PReLU) for m in encoder.modules()) == 1  # shared, as GRACE
    model = GRACEModel(encoder, 4, 6)
    x, edge_index = torch.randn(5, 8), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    z = model(x, edge_index)
    assert z.shape == (5, 4)
    assert model.projection(z).shape == (5, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="'num_layers'"):
        GRACEEncoder(8, 4, num_layers=1)
    with pytest.raises(TypeError, match="'num_layers'"):
        GRACEEncoder(8, 4, num_layers=2.0)
    with pytest.raises(ValueError, match="'activation'"):
        GRACEEncoder(8, 4, activation="gelu")
    with pytest.raises(ValueError, match="'layer'"):
        GRACEEncoder(8, 4, layer="gat")
