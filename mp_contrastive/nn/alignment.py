"""Alignment: one gradient step on the augmentation graph's Laplacian energy (GCN propagation)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_sparse

from mp_contrastive._validation import check_features
from mp_contrastive.nn._base import StepConv, as_edge_index

__all__ = ["AlignmentConv"]


class AlignmentConv(StepConv):
    r"""The alignment update of contrastive learning (paper eq. 4-5): one gradient step of size
    :math:`\alpha` on the Laplacian energy of the augmentation graph

    .. math::
        E(H) = \mathrm{tr}(H^\top L H) = \tfrac{1}{2} \sum_{i,j} A_{ij}
        \Big\| \tfrac{H_i}{\sqrt{d_i}} - \tfrac{H_j}{\sqrt{d_j}} \Big\|^2,
        \qquad L = I - \bar{A},\ \bar{A} = D^{-1/2} A D^{-1/2}.

    The step is

    .. math::
        H' = H - \alpha \nabla E(H) = (1 - 2\alpha) H + \alpha (\bar{A} + \bar{A}^\top) H,

    which for an undirected graph is :math:`(1-2\alpha) H + 2\alpha \bar{A} H`; :math:`\alpha = 1/2`
    gives GCN's propagation :math:`\bar{A} H`. With ``detach_targets=True`` the neighbours are
    constants and the step is :math:`(1 - \alpha) H + \alpha \bar{A} H` (one propagation;
    :math:`\alpha = 1` gives :math:`\bar{A} H` for any graph).

    Args:
        alpha (float): step size :math:`\alpha` (default ``0.5``).
        detach_targets (bool): stop-gradient on the neighbours (default ``False``).
        normalize (bool): apply :math:`D^{-1/2} A D^{-1/2}` to the edge weights (PyG's ``gcn_norm``).
            Set ``False`` when ``edge_weight`` is already normalised. (default ``True``)
        add_self_loops (bool): add self loops before normalising, as ``GCNConv`` does.
            Needs ``normalize=True``. (default ``False``: the augmentation graph has none)

    Shapes:
        - **input:** node features :math:`(|V|, F)`, edge indices :math:`(2, |E|)` or a sparse
          ``adj_t``, edge weights :math:`(|E|)` *(optional)*
        - **output:** node features :math:`(|V|, F)`
    """

    def __init__(self, alpha: float = 0.5, detach_targets: bool = False, normalize: bool = True,
                 add_self_loops: bool = False, **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        if add_self_loops and not normalize:
            raise ValueError("'add_self_loops=True' needs 'normalize=True' (as in GCNConv, self "
                             "loops are added by the normalisation)")
        self.normalize = bool(normalize)
        self.add_self_loops = bool(add_self_loops)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        return x + self.step(x, edge_index, edge_weight)

    def _compute(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        x = check_features(x)
        num_nodes = x.size(0)
        adj, weight = self.normalized_adjacency(edge_index, edge_weight, num_nodes, x)
        smoothed = self.weighted_sum(adj, weight, x, num_nodes)
        energy = grad = None
        if need_energy:
            energy = (x * x).sum() - (x * smoothed).sum()
        if need_step:
            if self.detach_targets:
                grad = x - smoothed
            else:
                transposed = adj.t() if is_sparse(adj) else adj.flip(0)
                grad = 2 * x - smoothed - self.weighted_sum(transposed, weight, x, num_nodes)
        return grad, energy

    def normalized_adjacency(self, edge_index: Adj, edge_weight: OptTensor, num_nodes: int,
                             x: Tensor) -> tuple[Adj, OptTensor]:
        r"""The propagation matrix :math:`\bar{A}`: an ``edge_index`` with weights, or a sparse
        ``adj_t`` (kept sparse for the fused sparse-dense matmul)."""
        if is_sparse(edge_index):
            as_edge_index(edge_index, edge_weight, num_nodes, num_nodes, "edge_index",
                          "edge_weight", x.dtype)  # validates size and weights
        else:
            edge_index, edge_weight = as_edge_index(edge_index, edge_weight, num_nodes, num_nodes,
                                                    "edge_index", "edge_weight", x.dtype)
        if self.normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_nodes,
                                               add_self_loops=self.add_self_loops, dtype=x.dtype)
        return edge_index, edge_weight

    def __repr__(self) -> str:
        extra = "" if not self.detach_targets else ", detach_targets=True"
        return f"{self.__class__.__name__}(alpha={self.alpha}{extra})"

