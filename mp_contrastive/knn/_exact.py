"""The ``"exact"`` backend: a tiled ``q @ x.T`` with a running top-:math:`k` per query, on any torch
device, whose memory is bounded by one tile; and the helpers every backend shares (the
deterministic tie order, membership tests, ``[Q, k]`` results to edge lists)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mp_contrastive.nn.functional._tiling import Tiling

__all__ = ["TILE_COLUMNS", "contains", "sort_by_key_then_index", "_tile_topk", "exact_search",
           "to_edges"]

#: Candidates per tile of the exact backend (columns), unless ``k`` is larger.
TILE_COLUMNS = 8192


def contains(reference: Tensor, values: Tensor) -> Tensor:
    """``torch.isin(values, reference)`` by binary search in the sorted reference (isin sorts both
    sides; the reference here is the smaller one)."""
    reference = torch.sort(reference.reshape(-1)).values
    if reference.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    pos = torch.searchsorted(reference, values).clamp_max_(reference.numel() - 1)
    return reference[pos] == values


def sort_by_key_then_index(key: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Rows sorted by ``key`` descending, ties by ``index`` ascending (two stable sorts)."""
    by_index = torch.argsort(index, dim=1, stable=True)
    key, index = key.gather(1, by_index), index.gather(1, by_index)
    by_key = torch.argsort(key, dim=1, descending=True, stable=True)
    return key.gather(1, by_key), index.gather(1, by_key)


def _tile_topk(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` of each row, ties at the boundary resolved to the smaller column index."""
    key, index = s.topk(k, 1)
    bound = key[:, -1:]
    # Rows with more entries equal to their k-th value than were kept: the choice among the
    # tied entries was topk's; redo those rows with a stable sort (rare with continuous data).
    ambiguous = ((s == bound).sum(1) > (key == bound).sum(1)).nonzero().view(-1)
    if ambiguous.numel() > 0:
        sorted_key, sorted_index = torch.sort(s.index_select(0, ambiguous), dim=1,
                                              descending=True, stable=True)
        key[ambiguous], index[ambiguous] = sorted_key[:, :k], sorted_index[:, :k]
    return key, index


def exact_search(x: Tensor, q: Tensor, k: int, metric: str, same: bool, exclude: Tensor | None,
                 sq_norm: Tensor | None, tiling: Tiling) -> tuple[Tensor, Tensor]:
    """Tiled ``q @ x.T`` with a running top-``k`` per query: ``[Q, k]`` candidate ids (``N`` for
    none) and rank keys (larger is nearer, ``-inf`` for none; ``-|q - x|^2`` for l2); never more
    than one tile of ``tiling.elements`` similarities (or one row of ``k``, when larger).

    Args:
        x (Tensor): candidates ``[N, d]`` (normalised already for ``"cos"``).
        q (Tensor): queries ``[Q, d]``.
        k (int): neighbours per query, at most ``N``.
        metric (str): ``"ip"``, ``"cos"`` or ``"l2"``.
        same (bool): ``q`` is ``x``; the pairs ``(i, i)`` are excluded.
        exclude (Tensor, optional): ``[2, P]`` (candidate, query) pairs never to return.
        sq_norm (Tensor, optional): ``|x|^2`` per candidate, required for ``"l2"``.
        tiling (Tiling): the tile size.
    """
    n, num_queries = x.size(0), q.size(0)
    rows, cols = tiling.shape(num_queries, n, min_cols=k, max_cols=TILE_COLUMNS)
    if exclude is not None:
        order = torch.argsort(exclude[1], stable=True)
        ex_src, ex_dst = exclude[0, order], exclude[1, order]
    out_key = q.new_empty(num_queries, k)
    out_index = torch.empty(num_queries, k, dtype=torch.long, device=q.device)
    for r0, r1 in tiling.spans(num_queries, rows):
        best_key = q.new_empty(r1 - r0, 0)
        best_index = torch.empty(r1 - r0, 0, dtype=torch.long, device=q.device)
        if exclude is not None:
            lo, hi = torch.searchsorted(ex_dst, torch.tensor([r0, r1], device=q.device)).tolist()
        for c0, c1 in tiling.spans(n, cols):
            s = q[r0:r1] @ x[c0:c1].T
            if metric == "l2":  # argmin |q - x|^2 = argmax 2 q.x - |x|^2
                assert sq_norm is not None
                s.mul_(2.0).sub_(sq_norm[c0:c1])
            if same:
                s.diagonal(r0 - c0).fill_(-math.inf)
            if exclude is not None and hi > lo:
                src, dst = ex_src[lo:hi], ex_dst[lo:hi]
                inside = (src >= c0) & (src < c1)
                s[dst[inside] - r0, src[inside] - c0] = -math.inf
            key, index = _tile_topk(s, min(k, c1 - c0))
            best_key = torch.cat([best_key, key], 1)
            best_index = torch.cat([best_index, index + c0], 1)
            if best_key.size(1) > k:
                best_key, best_index = sort_by_key_then_index(best_key, best_index)
                best_key, best_index = best_key[:, :k], best_index[:, :k]
        best_key, best_index = sort_by_key_then_index(best_key, best_index)
        out_key[r0:r1], out_index[r0:r1] = best_key, best_index
    out_index.masked_fill_(out_key == -math.inf, n)
    if metric == "l2":  # rank key 2 q.x - |x|^2 to -|q - x|^2, the faiss backend's key
        out_key.sub_(q.pow(2).sum(1, keepdim=True)).clamp_max_(0.0)
    return out_index, out_key


def to_edges(index: Tensor, key: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """``[Q, k]`` candidate ids and rank keys (``-inf``: no candidate) to ``(edge_index, score)``."""
    valid = key > -math.inf
    dst = torch.arange(index.size(0), device=index.device).repeat_interleave(valid.sum(1))
    score = key[valid]
    return torch.stack([index[valid], dst]), (-score if metric == "l2" else score)
