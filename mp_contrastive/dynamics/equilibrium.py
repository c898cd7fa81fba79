r"""Proposition 3: how far the augmentation graph :math:`\bar{A}` and the affinity graph
:math:`\hat{A}` of the features are apart, row by row (zero at the contrastive equilibrium)."""

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import coalesce, scatter

from mp_contrastive._validation import (
    check_choice,
    check_edge_index,
    check_edge_values,
    check_features,
    check_index_vector,
)

__all__ = ["REDUCTIONS", "EquilibriumGap", "equilibrium_gap"]

REDUCTIONS = ("mean", "none")


class EquilibriumGap(NamedTuple):
    """Row-wise distances between the augmentation graph and the affinity graph."""

    total_variation: Tensor
    kl: Tensor


def equilibrium_gap(x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                    normalize: bool = True, anchors: Tensor | None = None,
                    reduction: str = "mean") -> EquilibriumGap:
    r"""How far the features are from the contrastive equilibrium of Proposition 3,
    :math:`\bar{A} = \hat{A}`, row by row. With the dense affinity graph
    :math:`\hat{A}_{ij} = e^{x_i \cdot x_j} / \sum_{k \ne i} e^{x_i \cdot x_k}`,

    .. math::
        \mathrm{TV}_i = \tfrac{1}{2} \sum_{j \ne i} |\bar{A}_{ij} - \hat{A}_{ij}|, \qquad
        \mathrm{KL}_i = \sum_{j \ne i} \Big[\bar{A}_{ij} \log \frac{\bar{A}_{ij}}{\hat{A}_{ij}}
        - \bar{A}_{ij} + \hat{A}_{ij}\Big].

    :math:`\mathrm{KL}_i` is the generalised (unnormalised) Kullback-Leibler divergence: the usual
    KL when row :math:`i` of :math:`\bar{A}` sums to one (any batch of views), and in every case
    non-negative and zero iff the rows agree. Both are zero exactly at the equilibrium, where the
    contrastive step of :class:`~mp_contrastive.nn.ContrastiveConv` vanishes. Runs in
    :math:`O(m N d + |E|)` for :math:`m` anchors, without forming :math:`\bar{A}` densely.

    Args:
        x (Tensor): features in the loss's feature space, :math:`H = \mathrm{normalize}(Z) /
            \sqrt{\tau}`, shape :math:`(N, d)`.
        edge_index (Tensor): augmentation edges :math:`(2, |E|)` (source, target), no self loops.
        edge_weight (Tensor, optional): edge weights (default one).
        normalize (bool): apply :math:`D^{-1/2} A D^{-1/2}` (PyG's ``gcn_norm``, as
            :class:`~mp_contrastive.nn.ContrastiveConv` does); a batch graph from
            :func:`~mp_contrastive.graph.augmentation_graph` is unchanged by it. (default ``True``)
        anchors (Tensor, optional): indices of the rows to measure (default all); the softmax
            still runs over all other nodes, so a random subset estimates the mean without bias.
        reduction (str): ``"mean"`` over anchors, or ``"none"`` for one value per anchor.
    """
    x = check_features(x)
    check_choice(reduction, "reduction", REDUCTIONS)
    num_nodes, device = x.size(0), x.device
    if num_nodes < 2:
        raise ValueError("'x' needs at least 2 rows: the affinity graph excludes each node itself")
    check_edge_index(edge_index, num_nodes, num_nodes)
    if edge_weight is not None:
        edge_weight = check_edge_values(edge_weight, edge_index.size(1), "edge_weight")
        edge_weight = edge_weight.to(device, torch.float64)
    edge_index = edge_index.to(device)
    if bool((edge_index[0] == edge_index[1]).any()):
        raise ValueError("'edge_index' has self loops, but the affinity graph Ahat excludes each "
                         "node itself: remove them")
    inverse = None
    if anchors is None:
        anchors = torch.arange(num_nodes, device=device)
    else:
        anchors = check_index_vector(anchors, "anchors").to(device)
        if anchors.numel() == 0 or int(anchors.max()) >= num_nodes:
            raise ValueError(f"'anchors' must be non-empty node indices in [0, {num_nodes})")
        anchors, inverse = torch.unique(anchors, return_inverse=True)  # repeats allowed

    with torch.no_grad():
        x = x.detach()
        if normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_nodes,
                                               add_self_loops=False, dtype=torch.float64)
        elif edge_weight is None:
            edge_weight = torch.ones(edge_index.size(1), dtype=torch.float64, device=device)
        edge_index, edge_weight = coalesce(edge_index, edge_weight, num_nodes)
        # Position of each node among the anchors (-1 if not an anchor).
        slot = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        slot[anchors] = torch.arange(anchors.numel(), device=device)
        keep = slot[edge_index[1]] >= 0
        src, dst = edge_index[:, keep]
        abar = edge_weight[keep]
        row = slot[dst]

        sim = x.index_select(0, anchors) @ x.T
        sim[torch.arange(anchors.numel(), device=device), anchors] = -math.inf
        # The m x N pass stays in the features' dtype (it dominates the cost); only the per-edge
        # quantities below are float64, where the TV and KL sums could otherwise cancel.
        lse = torch.logsumexp(sim, dim=1).double()
        log_ahat = (x.index_select(0, dst) * x.index_select(0, src)).sum(1).double() - lse[row]
        ahat = log_ahat.exp()
        m = anchors.numel()
        # Ahat's rows sum to one, so the mass off the augmentation edges is 1 - (mass on them).
        on_edges = scatter(ahat, row, 0, m, reduce="sum")
        tv = 0.5 * (scatter((abar - ahat).abs(), row, 0, m, reduce="sum") + (1 - on_edges).clamp_min(0))
        kl_terms = torch.xlogy(abar, abar) - abar * log_ahat - abar
        kl = (scatter(kl_terms, row, 0, m, reduce="sum") + 1).clamp_min(0)
    if inverse is not None:
        tv, kl = tv[inverse], kl[inverse]
    if reduction == "mean":
        return EquilibriumGap(tv.mean(), kl.mean())
    return EquilibriumGap(tv, kl)
