"""The dense affinity graph (every other node): matmuls and a softmax, no per-edge gathers."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mp_contrastive.nn.functional._blockwise import blockwise_uniformity
from mp_contrastive.nn.functional._repulsion import Attraction, Repulsion
from mp_contrastive.nn.functional._sparse import grad_tracked
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling

__all__ = ["dense_uniformity"]


def dense_uniformity(h_src: Tensor, h_dst: Tensor, same_nodes: bool, both_sides: bool,
                     anchor_weight: Tensor | None, kernel: str, need_step: bool,
                     need_energy: bool, similarity: Tensor | None = None,
                     attraction: Attraction | None = None,
                     tiling: Tiling = DEFAULT_TILING, exclude: Tensor | None = None,
                     batch: tuple[Tensor, Tensor] | None = None,
                     row_logsumexp: Tensor | None = None) -> Repulsion:
    """The uniformity on the dense affinity graph. Works in place on the ``N x M`` similarity
    matrix when no autograd graph has to be kept, so the peak is one matrix; above
    ``tiling.threshold`` entries it goes tile by tile (:func:`blockwise_uniformity`), unless the
    caller passes the ``similarity`` it computed (which is then overwritten). ``exclude``
    (``[2, P]`` pairs ``(src, dst)``, InfoNCE only) leaves those pairs out of the graph; ``batch``
    (``(batch_src, batch_dst)``, each node's graph in a PyG ``Batch``) keeps only the pairs within
    one graph. ``row_logsumexp``: each row's log-sum-exp over the caller's ``similarity`` as it
    will be masked here, computed by the caller (who needed it first); used when no autograd graph
    is kept (it carries no gradient)."""
    if same_nodes and h_dst.size(0) < 2:
        raise ValueError("the dense affinity graph needs at least 2 nodes, got 1")
    if exclude is not None and kernel != "infonce":
        raise ValueError("'exclude' leaves pairs out of an InfoNCE affinity graph; the spectral "
                         "kernel has no such form")
    if similarity is None and tiling.blockwise(h_dst.size(0), h_src.size(0), h_src.device):
        return blockwise_uniformity(h_src, h_dst, same_nodes, both_sides, anchor_weight, kernel,
                                    need_step, need_energy, attraction, tiling, exclude, batch)
    inplace = not grad_tracked(h_src, h_dst)
    sim = h_dst @ h_src.T if similarity is None else similarity
    if batch is not None:
        across = batch[1].unsqueeze(1) != batch[0].unsqueeze(0)
        fill = -math.inf if kernel == "infonce" else 0.0
        sim = sim.masked_fill_(across, fill) if inplace else sim.masked_fill(across, fill)
    weight = None if anchor_weight is None else anchor_weight.unsqueeze(1)
    energy = None
    if kernel == "infonce":
        if same_nodes:
            sim.fill_diagonal_(-math.inf)
        if exclude is not None:
            sim = sim.index_put_((exclude[1], exclude[0]), sim.new_tensor(-math.inf)) if inplace \
                else sim.index_put((exclude[1], exclude[0]), sim.new_tensor(-math.inf))
        lse = row_logsumexp if row_logsumexp is not None and inplace \
            else torch.logsumexp(sim, dim=1)
        if need_energy:
            energy = lse.sum() if anchor_weight is None else (anchor_weight * lse).sum()
        if not need_step:
            return Repulsion(None, energy, lse)
        prob = sim.sub_(lse.unsqueeze(1)) if inplace else sim - lse.unsqueeze(1)
        prob = prob.exp_()
        coef = prob if weight is None else (prob.mul_(weight) if inplace else prob * weight)
    else:
        lse = None
        if same_nodes:
            sim.fill_diagonal_(0.0)
        coef = sim if weight is None else sim * weight
        if need_energy:
            energy = (coef * sim).sum()
        if not need_step:
            return Repulsion(None, energy, None)
        coef = coef.mul_(2.0) if inplace else 2.0 * coef
    if attraction is not None:
        # Folded in entry by entry, as autograd of a cross-entropy does: subtracting a propagated
        # attraction instead would cancel catastrophically in float32 near the equilibrium.
        (src, dst), value = attraction
        coef = coef.index_put_((dst, src), -value, accumulate=True) if inplace else \
            coef.index_put((dst, src), -value, accumulate=True)
    grad = coef @ h_src
    if both_sides:
        grad = torch.addmm(grad, coef.T, h_dst)
    return Repulsion(grad, energy, lse)
