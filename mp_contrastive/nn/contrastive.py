"""Contrastive: alignment on the augmentation graph minus uniformity on the affinity graph."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import scatter

from mp_contrastive.nn.functional._affinity import uniformity
from mp_contrastive.nn.functional._attention import AttentionSpec, check_attention_x
from mp_contrastive.nn.functional._inputs import (
    as_edge_index,
    check_adjacency,
    check_kernel,
    check_pair,
    check_repulsion,
    repulsion_inputs,
    split_pair,
)
from mp_contrastive.nn.functional._sparse import grad_tracked
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling, check_tiling
from mp_contrastive.nn.step_conv import StepConv

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

    With ``attention`` (an :class:`~mp_contrastive.nn.functional.AttentionSpec`, e.g.
    ``AttentionAlignmentConv(...).spec``), :math:`\bar{A}` is replaced by the detached attention
    graph :math:`W` (GAT on the augmentation graph). With
    ``normalize="positives"`` each anchor's uniformity term is also weighted by :math:`c_i =
    \sum_j W_{ij}`, as the official code weights the whole per-pair log-softmax.

    Args:
        alpha (float): step size (default ``1.0``).
        kernel (str): ``"infonce"`` or ``"spectral"``.
        detach_targets (bool): stop-gradient on the neighbours (default ``False``).
        normalize (bool): apply :math:`D^{-1/2} A D^{-1/2}` to the augmentation edge weights
            (default ``True``; a batch graph from :func:`~mp_contrastive.graph.augmentation_graph`
            is already normalised and unchanged by it).
        attention (AttentionSpec, optional): reweight positive pairs by attention.
        tiling (Tiling): when and how the dense affinity graph is processed tile by tile (default
            :data:`~mp_contrastive.nn.functional.DEFAULT_TILING`).
    """

    def __init__(self, alpha: float = 1.0, kernel: str = "infonce", detach_targets: bool = False,
                 normalize: bool = True, attention: AttentionSpec | None = None,
                 tiling: Tiling = DEFAULT_TILING, **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        self.kernel = check_kernel(kernel)
        self.normalize = bool(normalize)
        if attention is not None and not isinstance(attention, AttentionSpec):
            hint = (" (pass its .spec)" if hasattr(attention, "spec") else "")
            raise TypeError(f"'attention' must be an AttentionSpec or None, "
                            f"got {type(attention).__name__}{hint}")
        self.attention = attention
        self.tiling = check_tiling(tiling)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                affinity_index: Adj | None = None, affinity_weight: OptTensor = None,
                anchor_weight: OptTensor = None, attention_x: OptTensor = None,
                batch: OptTensor = None, negatives: OptTensor = None) -> Tensor:
        r"""``edge_index``: augmentation edges among the nodes ``x``; ``affinity_index``: affinity
        edges from neighbours (``x``, or ``negatives``) to anchors (``x``), dense when ``None``;
        ``anchor_weight``: the :math:`c_i`; ``attention_x``: features the attention is computed on
        (default ``x``); ``batch``: each node's graph in a PyG ``Batch``, so that the dense
        affinity graph stays within each graph (the same as one call per graph);
        ``negatives``: other nodes (e.g. a memory bank's features) that are the affinity graph's
        neighbours instead of ``x`` itself (the step is on ``x``)."""
        self._check(x, edge_index, edge_weight, affinity_index, affinity_weight, anchor_weight,
                    attention_x, batch, negatives)
        return self._forward(x, edge_index, edge_weight, affinity_index, affinity_weight,
                             anchor_weight, attention_x, batch, negatives)

    def _forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                 affinity_index: Adj | None = None, affinity_weight: OptTensor = None,
                 anchor_weight: OptTensor = None, attention_x: OptTensor = None,
                 batch: OptTensor = None, negatives: OptTensor = None) -> Tensor:
        """``forward`` of checked inputs."""
        return x + self._step(x, edge_index, edge_weight, affinity_index, affinity_weight,
                              anchor_weight, attention_x, batch, negatives)

    def _check(self, x: object, edge_index: object, edge_weight: object = None,
               affinity_index: object = None, affinity_weight: object = None,
               anchor_weight: object = None, attention_x: object = None, batch: object = None,
               negatives: object = None, *, sync: bool = False) -> None:
        if isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(p, Tensor) for p in x):
            raise TypeError("'x' must be a torch.Tensor: ContrastiveConv takes one node set (its "
                            "augmentation edges join nodes of x); pass other nodes that act as "
                            "negatives (a memory bank) as negatives=..., not as a pair "
                            "(x_src, x_dst)")
        if negatives is None:
            x_src, x_dst, same_nodes = check_pair(x, sync=sync)
        else:
            x_src, x_dst, same_nodes = check_pair((negatives, x), "(negatives, x)", sync=sync)
        num_dst = x_dst.size(0)
        check_adjacency(edge_index, edge_weight, num_dst, num_dst, "edge_index", "edge_weight",
                        x_dst, nonnegative=self.normalize, sync=sync)
        check_repulsion(x_src, x_dst, same_nodes, affinity_index, affinity_weight, anchor_weight,
                        batch, ("affinity_index", "affinity_weight"), sync=sync)
        attention = self.attention
        if batch is not None and attention is not None and attention.normalize == "negatives" \
                and affinity_index is None:
            raise ValueError("ContrastiveConv: batch= with a 'negatives' attention on the dense "
                             "graph is not supported (its normaliser runs over every node); use "
                             "normalize='positives' or 'neighbors', or one call per graph")
        if attention_x is not None and attention is not None:  # read only by the attention
            check_attention_x(attention_x, x_dst, sync=sync)

    def _compute(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                 affinity_index: Adj | None = None, affinity_weight: OptTensor = None,
                 anchor_weight: OptTensor = None, attention_x: OptTensor = None,
                 batch: OptTensor = None, negatives: OptTensor = None, *,
                 need_step: bool, need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        x_src, x_dst, same_nodes = split_pair(x if negatives is None else (negatives, x))
        num_dst, dtype = x_dst.size(0), x_dst.dtype
        edge_index, edge_weight = as_edge_index(edge_index, edge_weight, dtype)
        if self.normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_dst,
                                               add_self_loops=False, dtype=dtype)
        affinity_index, affinity_weight, anchor_weight, batch = repulsion_inputs(
            affinity_index, affinity_weight, anchor_weight, batch, dtype)
        attention = self.attention
        # Under an explainer the augmentation edges go through propagate, where its edge mask
        # applies, instead of being folded into the dense coefficients.
        dense = affinity_index is None and same_nodes and not self.explain
        # A dense "negatives" attention with a dot score reads the similarity matrix the
        # uniformity then overwrites: the attention's weights (their own log-sum-exp pass) are
        # computed first and handed to the kernel as (edge_index, value).
        shared = (attention is not None and attention.shares_similarity() and attention_x is None
                  and dense and self.kernel == "infonce"
                  and not self.tiling.blockwise(num_dst, x_src.size(0), x_src.device))
        similarity = x_dst @ x_src.T if shared else None
        row_logsumexp = None
        if similarity is not None and attention.beta == 1.0 and not grad_tracked(x_dst) \
                and batch is None:
            # At beta = 1 the attention's normaliser and the uniformity need the same row
            # log-sum-exp: one explicit pass, handed to both.
            row_logsumexp = torch.logsumexp(similarity.fill_diagonal_(-math.inf), 1)
        kappa = 1.0 if self.kernel == "infonce" else 2.0
        if attention is not None:
            edge_index, edge_weight, anchor_weight = self._attend(
                attention, x_dst, edge_index, edge_weight,
                affinity_index if same_nodes else None, anchor_weight, attention_x,
                None if similarity is None else similarity.detach(), row_logsumexp)
        value = (torch.full_like(edge_index[0], kappa, dtype=dtype) if edge_weight is None
                 else kappa * edge_weight)

        repulsion = uniformity(
            x_src, x_dst, same_nodes=same_nodes, both_sides=same_nodes and not self.detach_targets,
            affinity_index=affinity_index, affinity_weight=affinity_weight,
            anchor_weight=anchor_weight, kernel=self.kernel, need_step=need_step,
            need_energy=need_energy, similarity=similarity,
            attraction=(edge_index, value) if dense else None, tiling=self.tiling, batch=batch,
            row_logsumexp=row_logsumexp)
        energy = grad = None
        if need_energy:
            src, dst = edge_index
            attract_energy = (value * (x_dst.index_select(0, dst) * x_dst.index_select(0, src))
                              .sum(-1)).sum()
            energy = repulsion.energy - attract_energy
        if need_step:
            grad = repulsion.grad
            if not dense:  # else folded into the uniformity's coefficients
                grad = grad - self.weighted_sum(edge_index, value, x_dst, num_dst)
                if not self.detach_targets:
                    grad = grad - self.weighted_sum(edge_index.flip(0), value, x_dst, num_dst)
        return grad, energy

    def _attend(self, attention: AttentionSpec, x: Tensor, edge_index: Tensor,
                edge_weight: OptTensor, negative_index: Tensor | None, anchor_weight: OptTensor,
                attention_x: OptTensor, similarity: OptTensor,
                row_logsumexp: OptTensor = None) -> tuple[Tensor, Tensor, OptTensor]:
        """Replace the augmentation weights by (detached) attention weights and, for the official
        ``"positives"`` normalisation, weight each anchor's uniformity term by its row sum."""
        with torch.no_grad():
            edge_index, weight = attention._weights(
                x, edge_index, edge_weight, affinity_index=negative_index,
                attention_x=attention_x, similarity=similarity, row_logsumexp=row_logsumexp,
                tiling=self.tiling)
        if attention.normalize == "positives":
            row_sum = scatter(weight, edge_index[1], 0, x.size(0), reduce="sum")
            anchor_weight = row_sum if anchor_weight is None else anchor_weight * row_sum
        return edge_index, weight, anchor_weight

