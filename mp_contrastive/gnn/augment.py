r"""Graph augmentations for graph contrastive learning (GRACE): edge dropping and feature masking.

A view of :math:`(X, A)` keeps each directed edge with probability :math:`1 - p_e` (PyG's
:func:`~torch_geometric.utils.dropout_edge`, as GRACE's ``dropout_adj``: the two directions of an
undirected edge are dropped independently) and zeroes each feature *column* with probability
:math:`p_f` for all nodes alike (PyG's :func:`~torch_geometric.utils.mask_feature` with
``mode="col"``, GRACE's ``drop_feature``). Randomness comes from torch's global generator, so
``torch.manual_seed`` makes a run reproducible.

Sparse CSR features (bag-of-words graphs are ~1% dense) stay sparse: their masked columns are
zeroed in the stored values, from the same random draw ``mask_feature`` makes, so a seeded view is
the same dense or sparse; the encoder's first linear map then costs :math:`O(\mathrm{nnz})`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch_geometric.utils import dropout_edge, mask_feature

from mp_contrastive._validation import check_edge_index, check_features, check_rate

__all__ = ["SPARSE_FEATURES_BELOW", "GraphAugment", "augment_graph", "check_node_features"]

#: Features with fewer non-zeros than this share are trained as a sparse CSR matrix (the GRACE
#: trainers): the encoder's first linear map then costs O(nnz).
SPARSE_FEATURES_BELOW = 0.1


def check_node_features(x: object, name: str = "x", *, finite: bool = True) -> Tensor:
    """Dense node features as :func:`~mp_contrastive._validation.check_features` checks them, or a
    sparse CSR matrix ``[num_nodes, num_features]`` with floating-point values; finite ones unless
    ``finite=False`` (for a caller whose next step checks what it computes from ``x``)."""
    if isinstance(x, Tensor) and x.layout == torch.sparse_csr:
        if not x.is_floating_point():
            raise TypeError(f"'{name}' must be a floating-point tensor, got dtype {x.dtype}")
        if x.size(0) == 0 or x.size(1) == 0:
            raise ValueError(f"'{name}' is empty (shape {tuple(x.shape)})")
        if finite:
            check_features(x.values().view(-1, 1) if x.values().numel() else x.new_zeros(1, 1),
                           f"{name} (values)")
        return x
    return check_features(x, name, finite=finite)


def augment_graph(x: Tensor, edge_index: Tensor, drop_edge: float,
                  drop_feature: float) -> tuple[Tensor, Tensor]:
    """One augmented view ``(x', edge_index')``: edges dropped with probability ``drop_edge``,
    feature columns zeroed with probability ``drop_feature`` (``x`` dense or sparse CSR)."""
    x = check_node_features(x, "x")
    edge_index = check_edge_index(edge_index, x.size(0), x.size(0), "edge_index")
    drop_edge = check_rate(drop_edge, "drop_edge")
    drop_feature = check_rate(drop_feature, "drop_feature")
    edge_index, _ = dropout_edge(edge_index, p=drop_edge)
    if x.layout != torch.sparse_csr:
        x, _ = mask_feature(x, p=drop_feature, mode="col")
    elif drop_feature > 0:
        keep = torch.rand(x.size(1), device=x.device) >= drop_feature  # mask_feature's draw
        values = x.values() * keep[x.col_indices()].to(x.dtype)
        with warnings.catch_warnings():  # the CSR layout's "beta" notice, once per process
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            x = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape)
    return x, edge_index


class GraphAugment(nn.Module):
    """GRACE's two augmentations with fixed rates: ``augment(x, edge_index) -> (x', edge_index')``.

    Args:
        drop_edge (float): probability of dropping each directed edge, in ``[0, 1)``.
        drop_feature (float): probability of zeroing each feature column, in ``[0, 1)``.
    """

    def __init__(self, drop_edge: float = 0.2, drop_feature: float = 0.3) -> None:
        super().__init__()
        self.drop_edge = check_rate(drop_edge, "drop_edge")
        self.drop_feature = check_rate(drop_feature, "drop_feature")

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        return augment_graph(x, edge_index, self.drop_edge, self.drop_feature)

    def extra_repr(self) -> str:
        return f"drop_edge={self.drop_edge}, drop_feature={self.drop_feature}"
