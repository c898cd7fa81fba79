"""GRACE's encoder (a stack of GCN layers) and projector."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from mp_contrastive._validation import check_choice, check_positive_int
from mp_contrastive.gnn.models import AlignmentGCNConv

__all__ = ["ACTIVATIONS", "GRACEEncoder", "GRACEModel"]

ACTIVATIONS = ("relu", "prelu")


class GRACEEncoder(nn.Module):
    r"""GRACE's encoder: ``num_layers`` GCN layers of widths ``in -> 2 hidden -> ... -> hidden``, each
    followed by the activation (one shared ``PReLU`` for ``"prelu"``, as in GRACE).

    Args:
        in_channels (int): input features. hidden (int): output features.
        activation (str): ``"relu"`` or ``"prelu"``.
        num_layers (int): at least 2 (default 2).
        layer (str): ``"gcn"`` (:class:`~mp_contrastive.gnn.AlignmentGCNConv`, ours) or
            ``"pyg_gcn"`` (PyG's ``GCNConv``, GRACE's own).
    """

    def __init__(self, in_channels: int, hidden: int, activation: str = "relu", num_layers: int = 2,
                 layer: str = "gcn") -> None:
        super().__init__()
        check_choice(activation, "activation", ACTIVATIONS)
        check_choice(layer, "layer", ("gcn", "pyg_gcn"))
        if check_positive_int(num_layers, "num_layers") < 2:
            raise ValueError(f"'num_layers' must be an int >= 2 (GRACE's encoder), got {num_layers!r}")
        conv = AlignmentGCNConv if layer == "gcn" else GCNConv
        widths = [in_channels] + [2 * hidden] * (num_layers - 1) + [hidden]
        self.convs = nn.ModuleList(conv(i, o) for i, o in zip(widths[:-1], widths[1:], strict=True))
        self.activation: nn.Module = nn.PReLU() if activation == "prelu" else nn.ReLU()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        for conv in self.convs:
            x = self.activation(conv(x, edge_index))
        return x


class GRACEModel(nn.Module):
    """Encoder and GRACE's projector :math:`g(z) = W_2\\, \\mathrm{ELU}(W_1 z)` (``hidden ->
    proj_hidden -> hidden``)."""

    def __init__(self, encoder: GRACEEncoder, hidden: int, proj_hidden: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc1 = nn.Linear(hidden, proj_hidden)
        self.fc2 = nn.Linear(proj_hidden, hidden)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.encoder(x, edge_index)

    def projection(self, z: Tensor) -> Tensor:
        return self.fc2(F.elu(self.fc1(z)))
