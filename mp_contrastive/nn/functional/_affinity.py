r"""The uniformity (repulsion) of an affinity graph: its gradient w.r.t. the anchors and its energy,

.. math::
    U = \sum_i c_i \log \sum_{k \in K(i)} w_{ik} e^{h_i \cdot h_k} \quad\text{(infonce)},
    \qquad U = \sum_i c_i \sum_{k \in K(i)} w_{ik} (h_i \cdot h_k)^2 \quad\text{(spectral)},

on the dense graph (:mod:`~mp_contrastive.nn.functional._dense`, tiled above a size by
:mod:`~mp_contrastive.nn.functional._blockwise`) or on a sparse one (CSR kernels of
:mod:`~mp_contrastive.nn.functional._sparse` where they apply, gathers and scatters otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch_geometric.utils import scatter

from mp_contrastive.nn.functional._dense import dense_uniformity
from mp_contrastive.nn.functional._repulsion import Attraction, Repulsion
from mp_contrastive.nn.functional._sparse import (
    SparseSoftmaxStep,
    csr_aggregate,
    csr_aggregate_transposed,
    csr_eligible,
    csr_pattern,
    scatter_logsumexp,
    sddmm,
)
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling

__all__ = ["uniformity", "sparse_uniformity", "edge_sum"]

#: ``aggregate(edge_index, weight, x_src, num_dst)``: :math:`\sum_{(j, i)} w_{ji} x_j` per target.
EdgeSum = Callable[[Tensor, Tensor, Tensor, int], Tensor]

def uniformity(h_src: Tensor, h_dst: Tensor, *, same_nodes: bool, both_sides: bool,
               affinity_index: Tensor | None = None, affinity_weight: Tensor | None = None,
               anchor_weight: Tensor | None = None, kernel: str = "infonce",
               need_step: bool = True, need_energy: bool = False,
               similarity: Tensor | None = None, attraction: Attraction | None = None,
               tiling: Tiling = DEFAULT_TILING, exclude: Tensor | None = None,
               batch: tuple[Tensor, Tensor] | None = None,
               row_logsumexp: Tensor | None = None,
               aggregate: EdgeSum | None = None) -> Repulsion:
    r"""Gradient w.r.t. the anchors ``h_dst`` and value of the uniformity energy (module docstring).

    ``K(i)`` is every other node (dense, ``affinity_index=None``) or the sources of the edges into
    ``i``. With ``both_sides`` (same nodes, targets not detached) the gradient also includes the
    terms in which a node is somebody else's neighbour. A dense ``similarity`` (``h_dst @ h_src.T``)
    computed by the caller is reused, and overwritten. ``attraction`` (dense only; ``(edge_index,
    value)`` computed beforehand) is folded into the coefficient matrix, so
    :math:`\hat{A} - \bar{A}` is formed entry by entry before the matmul.
    ``exclude`` (dense InfoNCE only; ``[2, P]`` pairs ``(src, dst)``) leaves pairs out of the dense
    graph; a sparse graph leaves them out by not having the edges. ``batch`` (dense only;
    ``(batch_src, batch_dst)``) keeps the dense graph within each graph of a PyG ``Batch``.
    ``row_logsumexp`` (dense, with ``similarity``): each row's log-sum-exp over ``similarity`` as
    it will be masked here, computed by the caller (used when no autograd graph is kept).
    ``aggregate`` (sparse only): see :func:`sparse_uniformity`.
    """
    if affinity_index is None:
        return dense_uniformity(h_src, h_dst, same_nodes, both_sides, anchor_weight, kernel,
                                need_step, need_energy, similarity, attraction, tiling, exclude,
                                batch, row_logsumexp)
    if batch is not None:
        raise ValueError("'batch' restricts the dense affinity graph to each graph of a batch; "
                         "a sparse 'affinity_index' already says which pairs are negatives")
    if exclude is not None:
        raise ValueError("'exclude' applies to the dense affinity graph: leave the pairs out of "
                         "'affinity_index' instead")
    if attraction is not None:
        raise ValueError("an attraction can only be folded into a dense affinity graph")
    return sparse_uniformity(h_src, h_dst, affinity_index, affinity_weight, anchor_weight,
                             kernel=kernel, both_sides=both_sides, need_step=need_step,
                             need_energy=need_energy, aggregate=aggregate)


def sparse_uniformity(h_src: Tensor, h_dst: Tensor, affinity_index: Tensor,
                      affinity_weight: Tensor | None, anchor_weight: Tensor | None, *,
                      kernel: str, both_sides: bool, need_step: bool,
                      need_energy: bool, aggregate: EdgeSum | None = None) -> Repulsion:
    """The uniformity on the edges ``affinity_index`` (source = neighbour, target = anchor).

    ``aggregate`` replaces the sum over the edges (default :func:`edge_sum`, or fused CSR kernels
    where they apply), e.g. by an operator's ``weighted_sum``, which goes through ``propagate``
    where an explainer's edge mask applies; the edges are then kept in their order."""
    num_dst, num_src = h_dst.size(0), h_src.size(0)
    fused = aggregate is None
    if (fused and kernel == "infonce" and need_step and not need_energy
            and csr_eligible(h_src, h_dst, affinity_index, check_grad=False)):
        # The step alone: sparse kernels forward and, under autograd, a hand-written backward
        # (several times faster than autograd through [E, d] gathers and scatters).
        affinity_index, affinity_weight, crow = csr_pattern(affinity_index, affinity_weight,
                                                            num_dst)
        log_weight = None if affinity_weight is None else affinity_weight.log()
        grad = SparseSoftmaxStep.apply(h_src, h_dst, log_weight, anchor_weight, crow,
                                       affinity_index[0], affinity_index[1], both_sides)
        return Repulsion(grad, None)
    crow = None
    if fused and csr_eligible(h_src, h_dst, affinity_index, affinity_weight, anchor_weight):
        # No autograd graph to keep: score with an SDDMM and aggregate with a fused
        # gather-reduce instead of materialising [E, d] gathers (several times faster).
        affinity_index, affinity_weight, crow = csr_pattern(affinity_index, affinity_weight,
                                                            num_dst)
        score = sddmm(crow, affinity_index[0], h_dst, h_src)
    src, dst = affinity_index
    if crow is None:
        score = (h_dst.index_select(0, dst) * h_src.index_select(0, src)).sum(-1)
    anchor = None if anchor_weight is None else anchor_weight.index_select(0, dst)
    energy = coef = lse = None
    if kernel == "infonce":
        logit = score if affinity_weight is None else score + affinity_weight.log()
        lse, has_edges = scatter_logsumexp(logit, dst, num_dst)
        if need_energy:  # an anchor without affinity edges has no term
            per_anchor = lse if anchor_weight is None else anchor_weight * lse
            energy = per_anchor[has_edges].sum()
        if need_step:
            coef = (logit - lse.index_select(0, dst)).exp()
            coef = coef if anchor is None else coef * anchor
    else:
        weighted = score if affinity_weight is None else score * affinity_weight
        weighted = weighted if anchor is None else weighted * anchor
        if need_energy:
            energy = (weighted * score).sum()
        if need_step:
            coef = 2 * weighted
    if lse is not None:  # an anchor without affinity edges has an empty sum: -inf
        lse = lse.masked_fill(~has_edges, float("-inf"))
    if not need_step:
        return Repulsion(None, energy, lse)
    assert coef is not None
    if crow is not None:
        grad = csr_aggregate(crow, src, coef, h_src)
        if both_sides:
            grad += csr_aggregate_transposed(src, dst, coef, h_dst, num_src)
    else:
        aggregate = edge_sum if aggregate is None else aggregate
        grad = aggregate(affinity_index, coef, h_src, num_dst)
        if both_sides:
            grad = grad + aggregate(affinity_index.flip(0), coef, h_dst, num_src)
    return Repulsion(grad, energy, lse)


def edge_sum(edge_index: Tensor, weight: Tensor, x_src: Tensor, num_dst: int) -> Tensor:
    r""":math:`\mathrm{out}_i = \sum_{(j, i) \in E} w_{ji} x_j` (what ``propagate`` computes with
    sum aggregation, as a function)."""
    src, dst = edge_index
    return scatter(weight.unsqueeze(-1) * x_src.index_select(0, src), dst, 0, num_dst,
                   reduce="sum")
