"""The base class of every operator, and the affinity-graph (uniformity) computation they share.

Every operator is one gradient-descent step of size ``alpha`` on an energy :math:`E`:
``forward(x) = x + step(x)`` with ``step(x) = -alpha * grad E(x)``. Subclasses implement
``_compute(x, ..., need_step, need_energy) -> (grad, energy)``; the step, the energy and the
forward pass all come from it, so the three can never disagree.

A dense affinity graph with more than :data:`BLOCKWISE_THRESHOLD` entries is processed in tiles
of at most :data:`BLOCK_ELEMENTS` entries (:func:`use_blockwise`), so no ``N x N`` matrix is ever
held, in the forward pass or in autograd's backward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.compiler import is_compiling
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

__all__ = [
    "StepConv",
    "KERNELS",
    "Repulsion",
    "Attraction",
    "BLOCKWISE_THRESHOLD",
    "BLOCK_ELEMENTS",
    "use_blockwise",
]

KERNELS = ("infonce", "spectral")


# Given the dense row log-sum-exp (None for the spectral kernel), the attraction's
# (edge_index, coefficient): computed lazily because attention weights may depend on it. It is
# called while the similarity matrix still holds the similarities (diagonal masked), so it may
# read them. The blockwise path (no similarity matrix; callers that share one take the plain path)
# needs the log-sum-exp of every row before its first tile, which costs an extra pass over the
# tiles; an attraction that ignores it says so with a `needs_logsumexp = False` attribute (it is
# then called with None) and saves that pass.
Attraction = Callable[[Tensor | None], tuple[Tensor, Tensor]]

#: Dense affinity graphs with more entries than this (``num_dst * num_src``) take the blockwise
#: path. Below it the plain path (one matrix, in place) is as fast and stays ``torch.compile``-able.
BLOCKWISE_THRESHOLD: int = 1 << 24
#: Entries per tile of the blockwise path (``1 << 22`` = 16 MiB in float32).
BLOCK_ELEMENTS: int = 1 << 22


def use_blockwise(num_dst: int, num_src: int) -> bool:
    """Whether a dense affinity graph of ``num_dst`` anchors and ``num_src`` neighbours is processed
    blockwise. Callers that would build the ``num_dst x num_src`` similarity matrix themselves (to
    share it) should not when this is ``True``: passing it forces the plain path."""
    return num_dst * num_src > BLOCKWISE_THRESHOLD


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
        num_dst = h_dst.size(0)
        if (kernel == "infonce" and need_step and not need_energy
                and _csr_eligible(h_src, h_dst, affinity_index, check_grad=False)):
            # The step alone: sparse kernels forward and, under autograd, a hand-written backward
            # (several times faster than autograd through [E, d] gathers and scatters).
            affinity_index, affinity_weight, csr = _csr_pattern(
                affinity_index, affinity_weight, num_dst, h_src.size(0), h_dst.dtype)
            log_weight = None if affinity_weight is None else affinity_weight.log()
            grad = _SparseSoftmaxStep.apply(h_src, h_dst, log_weight, anchor_weight,
                                            csr.crow_indices(), affinity_index[0],
                                            affinity_index[1], both_sides)
            return Repulsion(grad, None)
        csr = None
        if _csr_eligible(h_src, h_dst, affinity_index, affinity_weight, anchor_weight):
            # No autograd graph to keep: score with an SDDMM and aggregate with a fused
            # gather-reduce instead of materialising [E, d] gathers (several times faster).
            affinity_index, affinity_weight, csr = _csr_pattern(
                affinity_index, affinity_weight, num_dst, h_src.size(0), h_dst.dtype)
            score = _sddmm(csr.crow_indices(), affinity_index[0], h_dst, h_src)
        src, dst = affinity_index
        if csr is None:
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
        if need_step and csr is not None:
            grad = _csr_aggregate(csr.crow_indices(), src, coef, h_src)
            if both_sides:
                grad += _csr_aggregate_transposed(src, dst, coef, h_dst, h_src.size(0))
        elif need_step:
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


def _csr_eligible(h_src: Tensor, h_dst: Tensor, edge_index: Tensor, *weights: Tensor | None,
                  check_grad: bool = True) -> bool:
    """The sparse-kernel path: CPU, float32/64, a non-empty edge list, not under
    ``torch.compile`` and, with ``check_grad``, no autograd graph (the kernels' own backward is not
    what the operators need; :class:`_SparseSoftmaxStep` supplies one)."""
    return (h_dst.device.type == "cpu" and h_dst.dtype in (torch.float32, torch.float64)
            and edge_index.numel() > 0 and not is_compiling()
            and not (check_grad and _grad_tracked(h_src, h_dst,
                                                  *(w for w in weights if w is not None))))


def _csr_pattern(edge_index: Tensor, edge_weight: Tensor | None, num_dst: int, num_src: int,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor | None, Tensor]:
    """Edges sorted by target (kept as they are when already sorted, as kNN graphs are) and their
    CSR pattern ``[num_dst, num_src]`` with zero values."""
    src, dst = edge_index
    if not bool((dst[1:] >= dst[:-1]).all()):
        order = torch.argsort(dst, stable=True)
        edge_index = edge_index[:, order]
        edge_weight = None if edge_weight is None else edge_weight[order]
        src, dst = edge_index
    crow = torch.searchsorted(dst, torch.arange(num_dst + 1, device=dst.device))
    return edge_index, edge_weight, _csr(crow, src, torch.zeros(src.numel(), dtype=dtype),
                                         (num_dst, num_src))


def _csr_aggregate(crow: Tensor, col: Tensor, value: Tensor, x: Tensor) -> Tensor:
    r""":math:`\mathrm{out}_i = \sum_{e \in \mathrm{row}\ i} \mathrm{value}_e\, x_{\mathrm{col}_e}`
    for CSR rows ``crow``."""
    if x.dtype == torch.float32:  # a fused gather-reduce kernel, ~3x faster than torch.sparse here
        return F.embedding_bag(col, x, crow[:-1], mode="sum", per_sample_weights=value)
    return _csr(crow, col, value, (crow.numel() - 1, x.size(0))) @ x


def _csr_aggregate_transposed(src: Tensor, dst: Tensor, value: Tensor, x: Tensor,
                              num_src: int) -> Tensor:
    r""":math:`\mathrm{out}_j = \sum_{e:\, \mathrm{src}_e = j} \mathrm{value}_e\, x_{\mathrm{dst}_e}`
    for ``j < num_src`` (the transposed graph: the edges re-sorted by source)."""
    order = torch.argsort(src, stable=True)
    crow = torch.searchsorted(src[order], torch.arange(num_src + 1, device=src.device))
    return _csr_aggregate(crow, dst[order], value[order], x)


def _sddmm(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per edge ``e`` of the CSR pattern (row ``i``, column ``col_e``): ``a[i] . b[col_e]``."""
    pattern = _csr(crow, col, torch.zeros(col.numel(), dtype=a.dtype, device=a.device),
                   (a.size(0), b.size(0)))
    return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()


class _SparseSoftmaxStep(torch.autograd.Function):
    r"""The InfoNCE uniformity gradient on a sparse affinity graph, differentiable:

    .. math::
        g_i = \sum_{e = (k \to i)} c_i\, p_e\, h^{src}_k \;\big(+ \sum_{e = (i \to m)} c_m\, p_e\,
        h^{dst}_m \text{ with both sides}\big), \qquad
        p_e = \operatorname{softmax}_{e \to i}(h^{dst}_i \cdot h^{src}_k + \log w_e),

    with edges sorted by target (CSR rows ``crow``, columns ``src``). Forward by an SDDMM and fused
    gather-reduces; backward by the same kernels on the transposed pattern, with the softmax's
    Jacobian applied per row. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx: Any, h_src: Tensor, h_dst: Tensor, log_weight: Tensor | None,
                anchor: Tensor | None, crow: Tensor, src: Tensor, dst: Tensor,
                both_sides: bool) -> Tensor:
        logit = _sddmm(crow, src, h_dst, h_src)
        if log_weight is not None:
            logit = logit + log_weight
        lse, _ = _scatter_logsumexp(logit, dst, h_dst.size(0))
        prob = (logit - lse.index_select(0, dst)).exp()
        coef = prob if anchor is None else prob * anchor.index_select(0, dst)
        out = _csr_aggregate(crow, src, coef, h_src)
        if both_sides:
            out = out + _csr_aggregate_transposed(src, dst, coef, h_dst, h_src.size(0))
        ctx.save_for_backward(h_src, h_dst, anchor, crow, src, dst, prob, coef)
        ctx.both_sides = both_sides
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        h_src, h_dst, anchor, crow, src, dst, prob, coef = ctx.saved_tensors
        need_src, need_dst, need_log_weight, need_anchor = ctx.needs_input_grad[:4]
        grad_out = grad_out.contiguous()
        num_dst = h_dst.size(0)
        # d out / d coef_e, then through coef = c_i p_e and the row softmax.
        d_coef = _sddmm(crow, src, grad_out, h_src)
        if ctx.both_sides:
            d_coef = d_coef + _sddmm(crow, src, h_dst, grad_out[: h_src.size(0)])
        d_prob = d_coef if anchor is None else d_coef * anchor.index_select(0, dst)
        row_dot = scatter(prob * d_prob, dst, 0, num_dst, reduce="sum")
        d_logit = prob * (d_prob - row_dot.index_select(0, dst))
        d_src = d_dst = d_anchor = None
        if need_src:
            num_src = h_src.size(0)
            d_src = (_csr_aggregate_transposed(src, dst, coef, grad_out, num_src)
                     + _csr_aggregate_transposed(src, dst, d_logit, h_dst, num_src))
        if need_dst:
            d_dst = _csr_aggregate(crow, src, d_logit, h_src)
            if ctx.both_sides:
                d_dst = d_dst + _csr_aggregate(crow, src, coef, grad_out[: h_src.size(0)])
        if need_anchor:
            d_anchor = scatter(prob * d_coef, dst, 0, num_dst, reduce="sum")
        return (d_src, d_dst, d_logit if need_log_weight else None, d_anchor,
                None, None, None, None)


def _csr(crow: Tensor, col: Tensor, value: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, value, size)


def _dense_uniformity(h_src: Tensor, h_dst: Tensor, same_nodes: bool, both_sides: bool,
                      anchor_weight: Tensor | None, kernel: str, need_step: bool,
                      need_energy: bool, sim: Tensor | None = None,
                      attraction: Attraction | None = None) -> Repulsion:
    """Dense affinity graph: matmuls and a softmax, no per-edge gathers. Works in place on the
    ``N x N`` similarity matrix when no autograd graph has to be kept, so the peak is one matrix."""
    if same_nodes and h_dst.size(0) < 2:
        raise ValueError("the dense affinity graph needs at least 2 nodes, got 1")
    if sim is None and use_blockwise(h_dst.size(0), h_src.size(0)):
        return _blockwise_uniformity(h_src, h_dst, same_nodes, both_sides, anchor_weight, kernel,
                                     need_step, need_energy, attraction)
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


# -- the blockwise dense path ------------------------------------------------------------------------
# Tiles are row blocks of the anchors. A row block holds whole rows whenever a row fits in a tile, so
# its log-sum-exp is exact in one pass and each tile's similarities are computed once, as in the
# plain path. Rows longer than a tile are split into column chunks, whose log-sum-exp is accumulated
# chunk by chunk before the coefficients are formed (a second pass). The backward pass recomputes the
# tiles from the features and the saved row log-sum-exp, as memory-efficient attention does.


class _Config(NamedTuple):
    same_nodes: bool
    both_sides: bool
    kernel: str
    need_step: bool
    need_energy: bool
    block: int


class _Pull(NamedTuple):
    """The attraction's edges sorted by anchor, so that each row block reads one slice."""

    dst: Tensor
    src: Tensor
    value: Tensor

    def rows(self, r0: int, r1: int) -> slice:
        bounds = torch.searchsorted(self.dst, torch.tensor([r0, r1], device=self.dst.device))
        return slice(int(bounds[0]), int(bounds[1]))

    def fold(self, coef: Tensor, rows: slice, r0: int, c0: int, c1: int, value: Tensor) -> None:
        """``coef[i - r0, k - c0] -= value`` for the edges ``k -> i`` of the tile, in place."""
        dst, src = self.dst[rows], self.src[rows]
        inside = (src >= c0) & (src < c1)
        if not bool(inside.all()):
            dst, src, value = dst[inside], src[inside], value[inside]
        coef.index_put_((dst - r0, src - c0), -value, accumulate=True)


def _tile_shape(num_rows: int, num_cols: int, block: int) -> tuple[int, int]:
    cols = min(num_cols, max(1, block))
    return min(num_rows, max(1, block // cols)), cols


def _similarity_tile(h_src: Tensor, q: Tensor, r0: int, c0: int, c1: int, cfg: _Config) -> Tensor:
    """``h_dst[r0:r1] @ h_src[c0:c1].T`` with the self pairs masked (-inf for InfoNCE, 0 for the
    spectral kernel)."""
    s = q @ h_src[c0:c1].T
    if cfg.same_nodes:  # the global diagonal i == k lies on the tile's diagonal of offset r0 - c0
        s.diagonal(r0 - c0).fill_(-math.inf if cfg.kernel == "infonce" else 0.0)
    return s


def _chunks(num_cols: int, cols: int) -> list[tuple[int, int]]:
    return [(c0, min(num_cols, c0 + cols)) for c0 in range(0, num_cols, cols)]


def _blockwise_forward(h_src: Tensor, h_dst: Tensor, anchor: Tensor | None, pull: _Pull | None,
                       lse_hint: Tensor | None,
                       cfg: _Config) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    n, m = h_dst.size(0), h_src.size(0)
    rows, cols = _tile_shape(n, m, cfg.block)
    chunks = _chunks(m, cols)
    infonce = cfg.kernel == "infonce"
    grad = h_dst.new_zeros(h_dst.shape) if cfg.need_step else None
    lse = h_dst.new_empty(n) if infonce else None
    energy = h_dst.new_zeros(())
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        q = h_dst[r0:r1]
        c = None if anchor is None else anchor[r0:r1].unsqueeze(1)
        edges = None if pull is None or not cfg.need_step else pull.rows(r0, r1)
        s = coef = None
        if infonce:
            if lse_hint is not None:
                row_lse = lse_hint[r0:r1]
            elif len(chunks) == 1:
                s = _similarity_tile(h_src, q, r0, 0, m, cfg)
                if cfg.need_step:  # one exp serves the log-sum-exp and the softmax
                    peak = s.amax(1, keepdim=True)
                    total = s.sub_(peak).exp_().sum(1, keepdim=True)
                    row_lse = (peak + total.log()).squeeze(1)
                    coef = s.mul_(total.reciprocal() if c is None else c / total)
                else:
                    row_lse = torch.logsumexp(s, 1)
            else:
                row_lse = torch.stack([torch.logsumexp(_similarity_tile(h_src, q, r0, c0, c1, cfg), 1)
                                       for c0, c1 in chunks]).logsumexp(0)
            lse[r0:r1] = row_lse
        if not cfg.need_step and infonce:
            continue
        for c0, c1 in chunks:
            if s is None or len(chunks) > 1:  # else: the tile (and its softmax) from above
                s = _similarity_tile(h_src, q, r0, c0, c1, cfg)
                coef = None
            if infonce:
                if coef is None:
                    coef = s.sub_(row_lse.unsqueeze(1)).exp_()
                    if c is not None:
                        coef.mul_(c)
            else:
                weighted = s if c is None else s * c
                if cfg.need_energy:
                    energy = energy + (weighted * s).sum()
                if not cfg.need_step:
                    continue
                coef = weighted.mul_(2.0)
            if edges is not None:
                pull.fold(coef, edges, r0, c0, c1, pull.value[edges])
            grad[r0:r1].addmm_(coef, h_src[c0:c1])
            if cfg.both_sides:
                grad[c0:c1].addmm_(coef.T, q)
    if infonce and cfg.need_energy:
        energy = lse.sum() if anchor is None else (anchor * lse).sum()
    return grad, energy if cfg.need_energy else None, lse


def _blockwise_backward(h_src: Tensor, h_dst: Tensor, anchor: Tensor | None, pull: _Pull | None,
                        lse: Tensor | None, g_grad: Tensor | None, g_energy: Tensor | None,
                        g_lse: Tensor | None, cfg: _Config, need_anchor: bool,
                        need_value: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    r"""The vector-Jacobian product of ``(G, E, lse)`` with ``G = K h_src (+ K^T h_dst)``,
    ``K = C P - Pull`` (``P`` the row softmax; ``2 C S - Pull`` spectral), tile by tile:
    ``dK = g_G h_src^T (+ h_dst g_G^T)``, ``dS = P * (C (dK - rowsum(P * dK)) + g_lse + C g_E)``
    (spectral: ``2 C dK + 2 C S g_E``), ``d h_dst = dS h_src (+ K g_G)``,
    ``d h_src = dS^T h_dst + K^T g_G``."""
    n, m = h_dst.size(0), h_src.size(0)
    rows, cols = _tile_shape(n, m, cfg.block)
    chunks = _chunks(m, cols)
    infonce = cfg.kernel == "infonce"
    d_src, d_dst = torch.zeros_like(h_src), torch.zeros_like(h_dst)
    d_anchor = h_dst.new_zeros(n) if need_anchor else None

    def coupling(q: Tensor, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        assert g_grad is not None
        dk = g_grad[r0:r1] @ h_src[c0:c1].T
        if cfg.both_sides:
            dk.addmm_(q, g_grad[c0:c1].T)
        return dk

    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        q = h_dst[r0:r1]
        c = None if anchor is None else anchor[r0:r1].unsqueeze(1)
        edges = None if pull is None or g_grad is None else pull.rows(r0, r1)
        row_lse = lse[r0:r1].unsqueeze(1) if infonce else None
        # Gradient reaching the logits through the log-sum-exp itself (energy and lse outputs).
        direct = None
        if infonce and (g_energy is not None or g_lse is not None):
            direct = 0.0
            if g_lse is not None:
                direct = direct + g_lse[r0:r1].unsqueeze(1)
            if g_energy is not None:
                direct = direct + (g_energy if c is None else c * g_energy)
        row_dot = None  # rowsum(P * dK), needed before any chunk's dS when rows are chunked
        if infonce and g_grad is not None and len(chunks) > 1:
            row_dot = sum((_similarity_tile(h_src, q, r0, c0, c1, cfg).sub_(row_lse).exp_()
                           * coupling(q, r0, r1, c0, c1)).sum(1) for c0, c1 in chunks)
        for c0, c1 in chunks:
            s = _similarity_tile(h_src, q, r0, c0, c1, cfg)
            dk = None if g_grad is None else coupling(q, r0, r1, c0, c1)
            if infonce:
                p = s.sub_(row_lse).exp_()
                ds = None
                if dk is not None:
                    p_dk = p * dk
                    chunk_dot = p_dk.sum(1)
                    if need_anchor:
                        d_anchor[r0:r1] += chunk_dot
                    dot = chunk_dot if row_dot is None else row_dot
                    ds = p_dk.sub_(p * dot.unsqueeze(1))
                    if c is not None:
                        ds.mul_(c)
                if direct is not None:
                    ds = p * direct if ds is None else ds.add_(p * direct)
                coef = p if c is None else p * c
            else:
                ds = None
                if dk is not None:
                    if need_anchor:
                        d_anchor[r0:r1] += 2.0 * (s * dk).sum(1)
                    ds = 2.0 * dk if c is None else (2.0 * c) * dk
                if g_energy is not None:
                    if need_anchor:
                        d_anchor[r0:r1] += g_energy * (s * s).sum(1)
                    term = (2.0 * g_energy) * (s if c is None else c * s)
                    ds = term if ds is None else ds.add_(term)
                if ds is not None and cfg.same_nodes:  # the self pairs are constants
                    ds.diagonal(r0 - c0).zero_()
                coef = 2.0 * s if c is None else (2.0 * c) * s
            if ds is not None:
                d_dst[r0:r1].addmm_(ds, h_src[c0:c1])
                d_src[c0:c1].addmm_(ds.T, q)
            if g_grad is not None:
                if edges is not None:
                    pull.fold(coef, edges, r0, c0, c1, pull.value[edges])
                d_src[c0:c1].addmm_(coef.T, g_grad[r0:r1])
                if cfg.both_sides:
                    d_dst[r0:r1].addmm_(coef, g_grad[c0:c1])
    if need_anchor and infonce and g_energy is not None:
        d_anchor += g_energy * lse
    d_value = None
    if need_value and pull is not None and g_grad is not None:
        d_value = -(g_grad[pull.dst] * h_src[pull.src]).sum(1)
        if cfg.both_sides:
            d_value -= (h_dst[pull.dst] * g_grad[pull.src]).sum(1)
    return d_src, d_dst, d_anchor, d_value


class _BlockwiseDense(torch.autograd.Function):
    """Autograd wrapper: the forward keeps only the features and the row log-sum-exp; the backward
    recomputes the tiles (so neither pass holds an ``N x N`` matrix)."""

    @staticmethod
    def forward(ctx: Any, h_src: Tensor, h_dst: Tensor, anchor: Tensor | None,
                value: Tensor | None, pull_index: Tensor | None, lse_hint: Tensor | None,
                cfg: _Config) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        pull = None if pull_index is None else _Pull(pull_index[1], pull_index[0], value)
        grad, energy, lse = _blockwise_forward(h_src, h_dst, anchor, pull, lse_hint, cfg)
        ctx.set_materialize_grads(False)
        ctx.cfg = cfg
        ctx.save_for_backward(h_src, h_dst, anchor, value, pull_index, lse)
        return grad, energy, lse

    @staticmethod
    def backward(ctx: Any, g_grad: Tensor | None, g_energy: Tensor | None,
                 g_lse: Tensor | None) -> tuple[Tensor | None, ...]:
        h_src, h_dst, anchor, value, pull_index, lse = ctx.saved_tensors
        pull = None if pull_index is None else _Pull(pull_index[1], pull_index[0], value)
        need_anchor = anchor is not None and ctx.needs_input_grad[2]
        need_value = value is not None and ctx.needs_input_grad[3]
        d_src, d_dst, d_anchor, d_value = _blockwise_backward(
            h_src, h_dst, anchor, pull, lse, g_grad, g_energy, g_lse, ctx.cfg, need_anchor,
            need_value)
        return (d_src if ctx.needs_input_grad[0] else None,
                d_dst if ctx.needs_input_grad[1] else None,
                d_anchor, d_value, None, None, None)


def _blockwise_uniformity(h_src: Tensor, h_dst: Tensor, same_nodes: bool, both_sides: bool,
                          anchor_weight: Tensor | None, kernel: str, need_step: bool,
                          need_energy: bool, attraction: Attraction | None) -> Repulsion:
    """The dense uniformity of :func:`_dense_uniformity`, tile by tile (same values and gradients;
    see the module docstring)."""
    cfg = _Config(same_nodes, both_sides, kernel, need_step, need_energy, BLOCK_ELEMENTS)
    if attraction is None or not need_step:
        grad, energy, lse = _BlockwiseDense.apply(h_src, h_dst, anchor_weight, None, None, None, cfg)
        if attraction is not None:  # called once in any case, as the plain path does
            attraction(lse)
        return Repulsion(grad, energy, lse)
    lse_hint = None
    if kernel == "infonce" and getattr(attraction, "needs_logsumexp", True):
        with torch.no_grad():  # a first pass for the row log-sum-exp the attraction needs
            lse_hint = _blockwise_forward(h_src, h_dst, anchor_weight, None, None,
                                          cfg._replace(need_step=False, need_energy=False))[2]
    edge_index, value = attraction(lse_hint)
    # Sorted by anchor once, so that each row block reads one slice (autograd maps the values'
    # gradient back through the permutation).
    order = torch.argsort(edge_index[1], stable=True)
    grad, energy, lse = _BlockwiseDense.apply(h_src, h_dst, anchor_weight, value[order],
                                              edge_index[:, order], lse_hint, cfg)
    return Repulsion(grad, energy, lse)
