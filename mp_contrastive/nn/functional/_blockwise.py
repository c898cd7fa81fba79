"""The dense uniformity tile by tile: neither the forward nor the backward pass holds an ``N x M``
matrix.

Tiles are row blocks of the anchors. A row block holds whole rows whenever a row fits in a tile, so
its log-sum-exp is exact in one pass and each tile's similarities are computed once, as in the
plain path. Rows longer than a tile are split into column chunks, whose log-sum-exp is accumulated
chunk by chunk before the coefficients are formed (a second pass). The backward pass recomputes the
tiles from the features and the saved row log-sum-exp, as memory-efficient attention does.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mp_contrastive.nn.functional._repulsion import Attraction, Repulsion
from mp_contrastive.nn.functional._tiling import Tiling

__all__ = ["blockwise_uniformity"]

class _Config(NamedTuple):
    same_nodes: bool
    both_sides: bool
    kernel: str
    need_step: bool
    need_energy: bool
    tiling: Tiling
    # (dst, src) pairs left out of the affinity graph (InfoNCE only), sorted by dst.
    exclude: tuple[Tensor, Tensor] | None = None
    # (batch_src, batch_dst): only pairs within one graph of a batch are in the affinity graph.
    groups: tuple[Tensor, Tensor] | None = None


def _across(cfg: _Config, r0: int, r1: int, c0: int, c1: int) -> Tensor | None:
    """The tile's pairs that join two different graphs of a batch (not in the affinity graph)."""
    if cfg.groups is None:
        return None
    batch_src, batch_dst = cfg.groups
    return batch_dst[r0:r1].unsqueeze(1) != batch_src[c0:c1].unsqueeze(0)


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


def _similarity_tile(h_src: Tensor, q: Tensor, r0: int, c0: int, c1: int, cfg: _Config) -> Tensor:
    """``h_dst[r0:r1] @ h_src[c0:c1].T`` with the self pairs masked (-inf for InfoNCE, 0 for the
    spectral kernel)."""
    s = q @ h_src[c0:c1].T
    if cfg.same_nodes:  # the global diagonal i == k lies on the tile's diagonal of offset r0 - c0
        s.diagonal(r0 - c0).fill_(-math.inf if cfg.kernel == "infonce" else 0.0)
    across = _across(cfg, r0, r0 + q.size(0), c0, c1)
    if across is not None:
        s.masked_fill_(across, -math.inf if cfg.kernel == "infonce" else 0.0)
    if cfg.exclude is not None:
        dst, src = cfg.exclude
        bounds = torch.searchsorted(dst, torch.tensor([r0, r0 + q.size(0)], device=dst.device))
        dst, src = dst[int(bounds[0]):int(bounds[1])], src[int(bounds[0]):int(bounds[1])]
        inside = (src >= c0) & (src < c1)
        s[dst[inside] - r0, src[inside] - c0] = -math.inf
    return s


def _blockwise_forward(h_src: Tensor, h_dst: Tensor, anchor: Tensor | None, pull: _Pull | None,
                       cfg: _Config) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    n, m = h_dst.size(0), h_src.size(0)
    rows, cols = cfg.tiling.shape(n, m)
    chunks = list(cfg.tiling.spans(m, cols))
    infonce = cfg.kernel == "infonce"
    grad = h_dst.new_zeros(h_dst.shape) if cfg.need_step else None
    lse = h_dst.new_empty(n) if infonce else None
    energy = h_dst.new_zeros(())
    for r0, r1 in cfg.tiling.spans(n, rows):
        q = h_dst[r0:r1]
        c = None if anchor is None else anchor[r0:r1].unsqueeze(1)
        edges = None if pull is None or not cfg.need_step else pull.rows(r0, r1)
        s = coef = None
        if infonce:
            if len(chunks) == 1:
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
    rows, cols = cfg.tiling.shape(n, m)
    chunks = list(cfg.tiling.spans(m, cols))
    infonce = cfg.kernel == "infonce"
    d_src, d_dst = torch.zeros_like(h_src), torch.zeros_like(h_dst)
    d_anchor = h_dst.new_zeros(n) if need_anchor else None

    def coupling(q: Tensor, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        assert g_grad is not None
        dk = g_grad[r0:r1] @ h_src[c0:c1].T
        if cfg.both_sides:
            dk.addmm_(q, g_grad[c0:c1].T)
        return dk

    for r0, r1 in cfg.tiling.spans(n, rows):
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
                across = None if ds is None else _across(cfg, r0, r1, c0, c1)
                if across is not None:  # so are the pairs across graphs
                    ds.masked_fill_(across, 0.0)
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
                value: Tensor | None, pull_index: Tensor | None,
                cfg: _Config) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        pull = None if pull_index is None else _Pull(pull_index[1], pull_index[0], value)
        grad, energy, lse = _blockwise_forward(h_src, h_dst, anchor, pull, cfg)
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
                d_anchor, d_value, None, None)


def blockwise_uniformity(h_src: Tensor, h_dst: Tensor, same_nodes: bool, both_sides: bool,
                         anchor_weight: Tensor | None, kernel: str, need_step: bool,
                         need_energy: bool, attraction: Attraction | None,
                         tiling: Tiling, exclude: Tensor | None = None,
                         batch: tuple[Tensor, Tensor] | None = None) -> Repulsion:
    """The dense uniformity of :func:`~mp_contrastive.nn.functional._dense.dense_uniformity`, tile
    by tile (same values and gradients; see the module docstring)."""
    pairs = None
    if exclude is not None:
        order = torch.argsort(exclude[1], stable=True)
        pairs = (exclude[1, order], exclude[0, order])
    cfg = _Config(same_nodes, both_sides, kernel, need_step, need_energy, tiling, pairs, batch)
    if attraction is None or not need_step:
        grad, energy, lse = _BlockwiseDense.apply(h_src, h_dst, anchor_weight, None, None, cfg)
        return Repulsion(grad, energy, lse)
    edge_index, value = attraction
    # Sorted by anchor once, so that each row block reads one slice (autograd maps the values'
    # gradient back through the permutation).
    order = torch.argsort(edge_index[1], stable=True)
    grad, energy, lse = _BlockwiseDense.apply(h_src, h_dst, anchor_weight, value[order],
                                              edge_index[:, order], cfg)
    return Repulsion(grad, energy, lse)
