"""Contrastive: alignment on the augmentation graph minus uniformity on the affinity graph."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor, PairTensor
from torch_geometric.utils import scatter

from mp_contrastive.nn._base import (
    StepConv,
    as_edge_index,
    check_anchor_weight,
    check_kernel,
    use_blockwise,
)
from mp_contrastive.nn.attention import AttentionAlignmentConv

__all__ = ["ContrastiveConv"]

class ContrastiveConv(StepConv):
    r"""The contrastive update (paper eq. 9-10): one gradient step of size :math:`\alpha` on

    .. math::
        E(H) = -\kappa\, \mathrm{tr}(H^\top \bar{A} H) + U(H),

    the attraction of the augmentation graph :math:`\bar{A}` minus the repulsion :math:`U` of the
    affinity graph (see :class:`UniformityConv`), with :math:`\kappa = 1` for ``kernel="infonce"``
    and :math:`\kappa = 2` for ``kernel="spectral"``. For two views and a dense affinity graph the
    InfoNCE energy summed over anchors *is* SimCLR's NT-Xent loss, and the spectral one is HaoChen et
    al.'s spectral contrastive loss. The InfoNCE step is

    .. math::
        H' = H + \alpha \big[(\bar{A} + \bar{A}^\top) - (C\hat{A} + \hat{A}^\top C)\big] H,

    and :math:`H + \alpha (\bar{A} - C\hat{A}) H` with ``detach_targets=True``. It vanishes when
    :math:`\bar{A} = \hat{A}` (Proposition 3: the equilibrium).

    With ``attention`` (an :class:`AttentionAlignmentConv`), :math:`\bar{A}` is replaced by its
    detached attention graph :math:`W` (GAT on the augmentation graph). With
    ``normalize="positives"`` each anchor's uniformity term is also weighted by :math:`c_i =
    \sum_j W_{ij}`, as the official code weights the whole per-pair log-softmax.

    Args:
        alpha (float): step size (default ``1.0``).
        kernel (str): ``"infonce"`` or ``"spectral"``.
        detach_targets (bool): stop-gradient on the neighbours (default ``False``).
        normalize (bool): apply :math:`D^{-1/2} A D^{-1/2}` to the augmentation edge weights
            (default ``True``; a batch graph from :func:`~mp_contrastive.graph.augmentation_graph`
            is already normalised and unchanged by it).
        attention (AttentionAlignmentConv, optional): reweight positive pairs by attention.
    """

    def __init__(self, alpha: float = 1.0, kernel: str = "infonce", detach_targets: bool = False,
                 normalize: bool = True, attention: AttentionAlignmentConv | None = None,
                 **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        self.kernel = check_kernel(kernel)
        self.normalize = bool(normalize)
        if attention is not None and not isinstance(attention, AttentionAlignmentConv):
            raise TypeError(f"'attention' must be an AttentionAlignmentConv or None, "
                            f"got {type(attention).__name__}")
        self.attention = attention

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None,
                affinity_index: Adj | None = None, affinity_weight: OptTensor = None,
                anchor_weight: OptTensor = None, attention_x: OptTensor = None) -> Tensor:
        r"""``edge_index``: augmentation edges among the batch nodes (``x``, or ``x[1]`` for a pair
        ``(x_negatives, x_batch)``); ``affinity_index``: affinity edges from neighbours (``x`` or
        ``x[0]``) to anchors, dense when ``None``; ``anchor_weight``: the :math:`c_i`;
        ``attention_x``: features the attention is computed on (default ``x``)."""
        _, x_dst, _ = self.split_pair(x)
        return x_dst + self.step(x, edge_index, edge_weight, affinity_index, affinity_weight,
                                 anchor_weight, attention_x)

    def _compute(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None,
                 affinity_index: Adj | None = None, affinity_weight: OptTensor = None,
                 anchor_weight: OptTensor = None, attention_x: OptTensor = None, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        x_src, x_dst, same_nodes = self.split_pair(x)
        num_dst, dtype = x_dst.size(0), x_dst.dtype
        edge_index, edge_weight = as_edge_index(edge_index, edge_weight, num_dst, num_dst,
                                                "edge_index", "edge_weight", dtype)
        if self.normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_dst,
                                               add_self_loops=False, dtype=dtype)
        if affinity_index is not None:
            affinity_index, affinity_weight = as_edge_index(
                affinity_index, affinity_weight, x_src.size(0), num_dst, "affinity_index",
                "affinity_weight", dtype)
        elif affinity_weight is not None:
            raise ValueError("'affinity_weight' needs an 'affinity_index' (the dense affinity "
                             "graph is unweighted)")
        anchor_weight = check_anchor_weight(anchor_weight, num_dst, dtype)

        # A dense, same-node "negatives" attention with a dot kernel shares the similarity matrix
        # with the uniformity; at beta = 1 it only needs the uniformity's row log-sum-exp.
        shared = (self.attention is not None and self.attention.normalize == "negatives"
                  and self.attention.kernel == "dot" and attention_x is None and same_nodes
                  and affinity_index is None and self.kernel == "infonce"
                  and not use_blockwise(num_dst, x_src.size(0)))  # blockwise: no N x N matrix
        similarity = x_dst @ x_src.T if shared else None
        attend_after = shared and self.attention is not None and self.attention.beta == 1.0
        if self.attention is not None and not attend_after:
            edge_index, edge_weight, anchor_weight = self._attend(
                x_dst, edge_index, edge_weight, affinity_index if same_nodes else None,
                anchor_weight, attention_x,
                similarity=None if similarity is None else similarity.detach())

        kappa = 1.0 if self.kernel == "infonce" else 2.0
        attraction: list[tuple[Tensor, Tensor]] = []

        def attract(row_logsumexp: Tensor | None) -> tuple[Tensor, Tensor]:
            index, weight = edge_index, edge_weight
            if attend_after:  # the attention's normaliser is the uniformity's row log-sum-exp
                assert row_logsumexp is not None and similarity is not None
                # Called before the uniformity overwrites the similarity matrix: it can be read.
                index, weight, _ = self._attend(x_dst, index, weight, None, None, None,
                                                similarity=similarity.detach(),
                                                row_logsumexp=row_logsumexp.detach())
            pull = (torch.full_like(index[0], kappa, dtype=dtype) if weight is None
                    else kappa * weight)
            attraction.append((index, pull))
            return index, pull

        attract.needs_logsumexp = attend_after  # spares the blockwise path an extra pass

        fold = affinity_index is None and same_nodes
        repel_grad, repel_energy, _ = self.uniformity_gradient(
            x_src, x_dst, same_nodes, affinity_index, affinity_weight, anchor_weight, self.kernel,
            need_step, need_energy, similarity=similarity, attraction=attract if fold else None)
        edge_index, pull = attraction[0] if fold else attract(None)
        energy = grad = None
        if need_energy:
            src, dst = edge_index
            attract_energy = (pull * (x_dst.index_select(0, dst) * x_dst.index_select(0, src))
                              .sum(-1)).sum()
            energy = repel_energy - attract_energy
        if need_step:
            grad = repel_grad
            if not fold:
                grad = grad - self.weighted_sum(edge_index, pull, x_dst, num_dst)
                if not self.detach_targets:
                    grad = grad - self.weighted_sum(edge_index.flip(0), pull, x_dst, num_dst)
        return grad, energy

    def _attend(self, x: Tensor, edge_index: Tensor, edge_weight: OptTensor,
                negative_index: Tensor | None, anchor_weight: OptTensor, attention_x: OptTensor,
                **shared: Tensor | None) -> tuple[Tensor, Tensor, OptTensor]:
        """Replace the augmentation weights by attention weights (and, for the official
        ``"positives"`` normalisation, weight each anchor's uniformity term by its row sum)."""
        assert self.attention is not None
        edge_index, weight = self.attention.attention(x, edge_index, edge_weight, negative_index,
                                                      attention_x, **shared)
        if self.attention.normalize == "positives":
            row_sum = scatter(weight, edge_index[1], 0, x.size(0), reduce="sum")
            anchor_weight = row_sum if anchor_weight is None else anchor_weight * row_sum
        return edge_index, weight, anchor_weight

    def __repr__(self) -> str:
        extra = "" if self.attention is None else f", attention={self.attention}"
        return f"{self.__class__.__name__}(alpha={self.alpha}, kernel='{self.kernel}'{extra})"
