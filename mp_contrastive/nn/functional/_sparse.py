"""Sparse affinity graphs: CSR kernels for the uniformity (SDDMM scores, fused gather-reduces) and
the autograd Function of its InfoNCE step."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.compiler import is_compiling
from torch_geometric.utils import scatter

__all__ = [
    "scatter_logsumexp",
    "grad_tracked",
    "csr_eligible",
    "csr_pattern",
    "csr_aggregate",
    "csr_aggregate_transposed",
    "sddmm",
    "SparseSoftmaxStep",
]


def scatter_logsumexp(logit: Tensor, index: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Per-segment log-sum-exp and the mask of non-empty segments (whose value is meaningless).
    A segment whose logits are all ``-inf`` (zero weights) counts as empty, not as NaN."""
    peak = scatter(logit.detach(), index, 0, num_segments, reduce="max")
    peak = peak.masked_fill(torch.isneginf(peak), 0.0)
    total = scatter((logit - peak.index_select(0, index)).exp(), index, 0, num_segments,
                    reduce="sum")
    nonempty = total > 0
    # Clamping keeps log's backward finite for empty segments, which callers mask out.
    return peak + total.clamp_min(torch.finfo(total.dtype).tiny).log(), nonempty


def grad_tracked(*tensors: Tensor) -> bool:
    """Whether autograd records operations on any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def csr_eligible(h_src: Tensor, h_dst: Tensor, edge_index: Tensor, *weights: Tensor | None,
                 check_grad: bool = True) -> bool:
    """The sparse-kernel path: CPU, float32/64, a non-empty edge list, not under
    ``torch.compile`` and, with ``check_grad``, no autograd graph (the kernels' own backward is not
    what the operators need; :class:`SparseSoftmaxStep` supplies one)."""
    # torch's sampled_addmm refuses patterns with more entries than the dense matrix has (repeated
    # pairs, as sampled graphs may hold): those take the gather-scatter path.
    return (h_dst.device.type == "cpu" and h_dst.dtype in (torch.float32, torch.float64)
            and 0 < edge_index.size(1) <= h_dst.size(0) * h_src.size(0) and not is_compiling()
            and not (check_grad and grad_tracked(h_src, h_dst,
                                                 *(w for w in weights if w is not None))))


def csr_pattern(edge_index: Tensor, edge_weight: Tensor | None,
                num_dst: int) -> tuple[Tensor, Tensor | None, Tensor]:
    """Edges sorted by target (kept as they are when already sorted, as kNN graphs are) and the
    CSR row pointers ``[num_dst + 1]`` of the ``[num_dst, num_src]`` pattern."""
    src, dst = edge_index
    if not bool((dst[1:] >= dst[:-1]).all()):
        order = torch.argsort(dst, stable=True)
        edge_index = edge_index[:, order]
        edge_weight = None if edge_weight is None else edge_weight[order]
        src, dst = edge_index
    crow = torch.searchsorted(dst, torch.arange(num_dst + 1, device=dst.device))
    return edge_index, edge_weight, crow


def csr_aggregate(crow: Tensor, col: Tensor, value: Tensor, x: Tensor) -> Tensor:
    r""":math:`\mathrm{out}_i = \sum_{e \in \mathrm{row}\ i} \mathrm{value}_e\, x_{\mathrm{col}_e}`
    for CSR rows ``crow``."""
    if x.dtype == torch.float32:  # a fused gather-reduce kernel, ~3x faster than torch.sparse here
        return F.embedding_bag(col, x, crow[:-1], mode="sum", per_sample_weights=value)
    return _csr(crow, col, value, (crow.numel() - 1, x.size(0))) @ x


def csr_aggregate_transposed(src: Tensor, dst: Tensor, value: Tensor, x: Tensor,
                             num_src: int) -> Tensor:
    r""":math:`\mathrm{out}_j = \sum_{e:\, \mathrm{src}_e = j} \mathrm{value}_e\, x_{\mathrm{dst}_e}`
    for ``j < num_src`` (the transposed graph: the edges re-sorted by source)."""
    order = torch.argsort(src, stable=True)
    crow = torch.searchsorted(src[order], torch.arange(num_src + 1, device=src.device))
    return csr_aggregate(crow, dst[order], value[order], x)


def sddmm(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per edge ``e`` of the CSR pattern (row ``i``, column ``col_e``): ``a[i] . b[col_e]``."""
    pattern = _csr(crow, col, torch.zeros(col.numel(), dtype=a.dtype, device=a.device),
                   (a.size(0), b.size(0)))
    return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()


class SparseSoftmaxStep(torch.autograd.Function):
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
        logit = sddmm(crow, src, h_dst, h_src)
        if log_weight is not None:
            logit = logit + log_weight
        lse, _ = scatter_logsumexp(logit, dst, h_dst.size(0))
        prob = (logit - lse.index_select(0, dst)).exp()
        coef = prob if anchor is None else prob * anchor.index_select(0, dst)
        out = csr_aggregate(crow, src, coef, h_src)
        if both_sides:
            out = out + csr_aggregate_transposed(src, dst, coef, h_dst, h_src.size(0))
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
        d_coef = sddmm(crow, src, grad_out, h_src)
        if ctx.both_sides:
            d_coef = d_coef + sddmm(crow, src, h_dst, grad_out[: h_src.size(0)])
        d_prob = d_coef if anchor is None else d_coef * anchor.index_select(0, dst)
        row_dot = scatter(prob * d_prob, dst, 0, num_dst, reduce="sum")
        d_logit = prob * (d_prob - row_dot.index_select(0, dst))
        d_src = d_dst = d_anchor = None
        if need_src:
            num_src = h_src.size(0)
            d_src = (csr_aggregate_transposed(src, dst, coef, grad_out, num_src)
                     + csr_aggregate_transposed(src, dst, d_logit, h_dst, num_src))
        if need_dst:
            d_dst = csr_aggregate(crow, src, d_logit, h_src)
            if ctx.both_sides:
                d_dst = d_dst + csr_aggregate(crow, src, coef, grad_out[: h_src.size(0)])
        if need_anchor:
            d_anchor = scatter(prob * d_coef, dst, 0, num_dst, reduce="sum")
        return (d_src, d_dst, d_logit if need_log_weight else None, d_anchor,
                None, None, None, None)


def _csr(crow: Tensor, col: Tensor, value: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, value, size)
