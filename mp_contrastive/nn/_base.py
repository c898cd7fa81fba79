"""The base class of every operator, and the affinity-graph (uniformity) computation they share.

Every operator is one gradient-descent step of size ``alpha`` on an energy :math:`E`:
``forward(x) = x + step(x)`` with ``step(x) = -alpha * grad E(x)``. Subclasses implement
``_compute(x, ..., need_step, need_energy) -> (grad, energy)``; the step, the energy and the
forward pass all come from it, so the three can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor
from torch_geometric.utils import is_sparse, scatter, spmm, to_edge_index

from mp_contrastive._validation import (
    check_choice,
    check_edge_index,
    check_edge_values,
    check_features,
    check_positive,
)

__all__ = ["StepConv", "KERNELS", "Repulsion", "Attraction"]

KERNELS = ("infonce", "spectral")


# Given the dense row log-sum-exp (None for the spectral kernel), the attraction's
# (edge_index, coefficient): computed lazily because attention weights may depend on it. It is
# called while the similarity matrix still holds the similarities (diagonal masked), so it may
# read them.
Attraction = Callable[[Tensor | None], tuple[Tensor, Tensor]]


class Repulsion(NamedTuple):
    """What the uniformity computation returns: the gradient w.r.t. the anchors, the energy, and
    (dense InfoNCE only) each anchor's log-sum-exp over its neighbours, which callers may reuse."""

    grad: Tensor | None
    energy: Tensor | None
    row_logsumexp: Tensor | None = None


class StepConv(MessagePassing):
    r"""Base class: a ``MessagePassing`` layer that performs one gradient step on an energy.

    Args:
        alpha (float): step size :math:`\alpha > 0`.
        detach_targets (bool): if ``True``, the energy's neighbour side is treated as a constant
            (stop-gradient on the targets), so each node only follows the gradient of its own terms.
    """

    def __init__(self, alpha: float, detach_targets: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        self.alpha = check_positive(alpha, "alpha")
        self.detach_targets = bool(detach_targets)

    def reset_parameters(self) -> None:
        super().reset_parameters()

    # -- public API shared by all operators ------------------------------------------------------
    def step(self, x: Tensor | PairTensor, *args: Any, **kwargs: Any) -> Tensor:
        r"""The update :math:`\mathrm{conv}(x) - x = -\alpha \nabla E(x)`, computed directly (not as
        a difference, so it keeps full precision when it is small against :math:`x`)."""
        grad, _ = self._compute(x, *args, need_step=True, need_energy=False, **kwargs)
        return -self.alpha * grad

    def energy(self, x: Tensor | PairTensor, *args: Any, **kwargs: Any) -> Tensor:
        """The energy :math:`E(x)` whose gradient step this operator performs (a scalar)."""
        _, energy = self._compute(x, *args, need_step=False, need_energy=True, **kwargs)
        return energy

    def step_and_energy(self, x: Tensor | PairTensor, *args: Any,
                        **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Both at the cost of one: ``(step(x), energy(x))``."""
        grad, energy = self._compute(x, *args, need_step=True, need_energy=True, **kwargs)
        return -self.alpha * grad, energy

    def _compute(self, x: Any, *args: Any, need_step: bool, need_energy: bool,
                 **kwargs: Any) -> tuple[Tensor | None, Tensor | None]:
        raise NotImplementedError

    # -- message passing -------------------------------------------------------------------------
    def message(self, x_j: Tensor, weight: Tensor | None) -> Tensor:
        return x_j if weight is None else weight.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor | PairTensor) -> Tensor:
        x_src = x[0] if isinstance(x, (tuple, list)) else x
        return spmm(adj_t, x_src, reduce=self.aggr)

    def weighted_sum(self, edge_index: Adj, weight: Tensor | None, x_src: Tensor,
                     num_dst: int) -> Tensor:
        r""":math:`\mathrm{out}_i = \sum_{(j, i) \in E} w_{ji} x_j` by message passing."""
        if is_sparse(edge_index):
            return self.propagate(edge_index, x=(x_src, None), weight=None,
                                  size=(x_src.size(0), num_dst))
        return self.propagate(edge_index, x=(x_src, None), weight=weight,
                              size=(x_src.size(0), num_dst))

    # -- the affinity graph (uniformity), shared by UniformityConv and ContrastiveConv -----------
    def uniformity_gradient(self, h_src: Tensor, h_dst: Tensor, same_nodes: bool,
                            affinity_index: Tensor | None, affinity_weight: Tensor | None,
                            anchor_weight: Tensor | None, kernel: str, need_step: bool,
                            need_energy: bool, similarity: Tensor | None = None,
                            attraction: Attraction | None = None) -> Repulsion:
        r"""Gradient w.r.t. the anchors (``h_dst``) and value of the uniformity energy

        .. math::
            U = \sum_i c_i \log \sum_{k \in K(i)} w_{ik} e^{h_i \cdot h_k} \quad\text{(infonce)},
            \qquad U = \sum_i c_i \sum_{k \in K(i)} w_{ik} (h_i \cdot h_k)^2 \quad\text{(spectral)}.

        ``K(i)`` is every other node (dense, ``affinity_index=None``) or the sources of the edges into
        ``i``. When ``same_nodes`` and not ``detach_targets``, the gradient also includes the terms in
        which a node is somebody else's neighbour. A dense ``similarity`` (``h_dst @ h_src.T``) computed
        by the caller is reused, and overwritten.

        ``attraction`` (dense, same nodes only) returns the ``(edge_index, coefficient)`` of an
        attraction to subtract from the gradient. It is called once, with the row log-sum-exp; its
        coefficients are folded into the ``N x N`` coefficient matrix, so
        :math:`\hat{A} - \bar{A}` is formed entry by entry before the matmul, as autograd of a
        cross-entropy does. Subtracting two propagated matrices instead would cancel
        catastrophically in float32 near convergence, where :math:`\hat{A} \approx \bar{A}`.
        """
        both_sides = same_nodes and not self.detach_targets
        if affinity_index is None:
            return _dense_uniformity(h_src, h_dst, same_nodes, both_sides, anchor_weight, kernel,
                                     need_step, need_energy, similarity, attraction)
        if attraction is not None:
            raise ValueError("an attraction can only be folded into a dense affinity graph")
        src, dst = affinity_index
        num_dst = h_dst.size(0)
        score = (h_dst.index_select(0, dst) * h_src.index_select(0, src)).sum(-1)
        anchor = None if anchor_weight is None else anchor_weight.index_select(0, dst)
        energy = coef = None
        if kernel == "infonce":
            logit = score if affinity_weight is None else score + affinity_weight.log()
            lse, has_edges = _scatter_logsumexp(logit, dst, num_dst)
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
        grad = None
        if need_step:
            grad = self.weighted_sum(affinity_index, coef, h_src, num_dst)
            if both_sides:
                grad = grad + self.weighted_sum(affinity_index.flip(0), coef, h_dst,
                                                h_src.size(0))
        return Repulsion(grad, energy)

    # -- input handling ----------------------------------------------------------------------------
    @staticmethod
    def split_pair(x: Tensor | PairTensor, name: str = "x") -> tuple[Tensor, Tensor, bool]:
        """``(x_src, x_dst, same_nodes)`` for a tensor or a bipartite pair ``(x_src, x_dst)``."""
        if isinstance(x, (tuple, list)):
            if len(x) != 2 or not all(isinstance(part, Tensor) for part in x):
                raise TypeError(f"'{name}' must be a torch.Tensor or a pair (x_src, x_dst) of "
                                f"tensors, got a {type(x).__name__} of {len(x)} items")
            x_src = check_features(x[0], f"{name}[0] (x_src)")
            x_dst = check_features(x[1], f"{name}[1] (x_dst)")
            if x_src.size(1) != x_dst.size(1):
                raise ValueError(f"'{name}' pair has mismatched feature dimensions: x_src has "
                                 f"{x_src.size(1)}, x_dst has {x_dst.size(1)}")
            if x_src.dtype != x_dst.dtype:
                raise TypeError(f"'{name}' pair has mismatched dtypes {x_src.dtype} and "
                                f"{x_dst.dtype}")
            return x_src, x_dst, False
        x = check_features(x, name)
        return x, x, True


def as_edge_index(adj: Adj, edge_weight: Tensor | None, num_src: int, num_dst: int,
                  name: str, weight_name: str, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Bring an ``edge_index`` tensor, a torch sparse ``adj_t`` or a ``SparseTensor`` ``adj_t`` to
    ``(edge_index, edge_weight)`` form with checked ranges and the features' dtype."""
    if is_sparse(adj):
        if edge_weight is not None:
            raise ValueError(f"'{weight_name}' must be None when '{name}' is a sparse matrix "
                             f"(its values are the weights)")
        if tuple(adj.size()) != (num_dst, num_src):  # adj_t: rows are targets
            raise ValueError(f"sparse '{name}' (adj_t) must have size [num_dst, num_src] = "
                             f"[{num_dst}, {num_src}], got {list(adj.size())}")
        index, edge_weight = to_edge_index(adj)
        edge_index = index.flip(0)
    else:
        edge_index = check_edge_index(adj, num_src, num_dst, name)
        if edge_weight is not None:
            edge_weight = check_edge_values(edge_weight, edge_index.size(1), weight_name)
    if edge_weight is not None:
        edge_weight = edge_weight.to(dtype)
    return edge_index, edge_weight


def check_anchor_weight(anchor_weight: Tensor | None, num_dst: int,
                        dtype: torch.dtype) -> Tensor | None:
    if anchor_weight is None:
        return None
    if not isinstance(anchor_weight, Tensor) or not anchor_weight.is_floating_point():
        raise TypeError("'anchor_weight' must be a floating-point tensor of shape [num_nodes]")
    if anchor_weight.dim() != 1 or anchor_weight.numel() != num_dst:
        raise ValueError(f"'anchor_weight' must have shape [num_nodes] = [{num_dst}], "
                         f"got {tuple(anchor_weight.shape)}")
    return anchor_weight.detach().to(dtype)


def check_kernel(kernel: str) -> str:
    return check_choice(kernel, "kernel", KERNELS)


def _scatter_logsumexp(logit: Tensor, index: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Per-segment log-sum-exp and the mask of non-empty segments (whose value is meaningless)."""
    peak = scatter(logit.detach(), index, 0, num_segments, reduce="max")
    total = scatter((logit - peak.index_select(0, index)).exp(), index, 0, num_segments,
                    reduce="sum")
    nonempty = total > 0
    # Clamping keeps log's backward finite for empty segments, which callers mask out.
    return peak + total.clamp_min(torch.finfo(total.dtype).tiny).log(), nonempty


def _grad_tracked(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _dense_uniformity(h_src: Tensor, h_dst: Tensor, same_nodes: bool, both_sides: bool,
                      anchor_weight: Tensor | None, kernel: str, need_step: bool,
                      need_energy: bool, sim: Tensor | None = None,
                      attraction: Attraction | None = None) -> Repulsion:
    """Dense affinity graph: matmuls and a softmax, no per-edge gathers. Works in place on the
    ``N x N`` similarity matrix when no autograd graph has to be kept, so the peak is one matrix."""
    if same_nodes and h_dst.size(0) < 2:
        raise ValueError("the dense affinity graph needs at least 2 nodes, got 1")
    inplace = not _grad_tracked(h_src, h_dst)
    sim = h_dst @ h_src.T if sim is None else sim
    weight = None if anchor_weight is None else anchor_weight.unsqueeze(1)
    energy = grad = None
    if kernel == "infonce":
        if same_nodes:
            sim.fill_diagonal_(-math.inf)
        lse = torch.logsumexp(sim, dim=1)
        pull = None if attraction is None else attraction(lse)
        if need_energy:
            energy = lse.sum() if anchor_weight is None else (anchor_weight * lse).sum()
        if not need_step:
            return Repulsion(None, energy, lse)
        prob = sim.sub_(lse.unsqueeze(1)) if inplace else sim - lse.unsqueeze(1)
        prob = prob.exp_()
        coef = prob if weight is None else (prob.mul_(weight) if inplace else prob * weight)
    else:
        lse = None
        pull = None if attraction is None else attraction(None)
        if same_nodes:
            sim.fill_diagonal_(0.0)
        coef = sim if weight is None else sim * weight
        if need_energy:
            energy = (coef * sim).sum()
        if not need_step:
            return Repulsion(None, energy)
        coef = coef.mul_(2.0) if inplace else 2.0 * coef
    if pull is not None:
        (src, dst), value = pull
        coef = coef.index_put_((dst, src), -value, accumulate=True) if inplace else \
            coef.index_put((dst, src), -value, accumulate=True)
    grad = coef @ h_src
    if both_sides:
        grad = torch.addmm(grad, coef.T, h_dst)
    return Repulsion(grad, energy, lse)
