r"""Importance sampling of the tail of an affinity graph: the candidates a top-:math:`k` head
misses, drawn from a uniform or a cluster proposal and weighted so that the weighted sum of
:math:`e^{h_i \cdot h_k}` is an unbiased estimate of the full partition function (see
:func:`~mp_contrastive.knn.sampled_affinity_graph`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mp_contrastive.knn._exact import contains

__all__ = ["PROPOSALS", "DEFENSIVE", "Cells", "kmeans_assignment", "cluster_cells", "sample_tail"]

PROPOSALS = ("uniform", "cluster")
# Share of the cluster proposal drawn uniformly (defensive importance sampling): bounds every
# importance weight by  num_candidates / (DEFENSIVE * num_samples).
DEFENSIVE = 0.1

#: ``(order, ptr, count, mean)``: candidate ids sorted by cell, cell offsets into them, cell
#: sizes and cell means.
Cells = tuple[Tensor, Tensor, Tensor, Tensor]


def kmeans_assignment(x: Tensor, nlist: int, seed: int) -> Tensor:
    """The nearest of ``nlist`` k-means centroids (faiss, 10 iterations) of every row of ``x``,
    on the CPU."""
    import faiss

    data = x.detach().float().cpu().contiguous().numpy()
    kmeans = faiss.Kmeans(x.size(1), nlist, niter=10, seed=seed, max_points_per_centroid=64,
                          spherical=False, verbose=False)
    kmeans.train(data)
    _, nearest = kmeans.index.search(data, 1)
    return torch.from_numpy(nearest[:, 0]).long()


def cluster_cells(x: Tensor, assign: Tensor, nlist: int, mean: Tensor | None = None) -> Cells:
    """The :data:`Cells` of the partition of ``x`` (``[N, d]``) given by ``assign`` (``[N]``, cell
    ids below ``nlist``), on ``x``'s device; ``mean`` (``[nlist, d]``) replaces the cell means
    (e.g. means kept from an earlier partition, which the proposal may use as well)."""
    assign = assign.to(x.device)
    count = torch.bincount(assign, minlength=nlist)
    order = torch.argsort(assign, stable=True)
    ptr = torch.cumsum(count, 0) - count
    if mean is None:
        mean = torch.zeros(nlist, x.size(1), dtype=x.dtype, device=x.device)
        mean.index_add_(0, assign, x).div_(count.clamp_min(1).unsqueeze(1).to(x.dtype))
    return order, ptr, count, mean.to(x.device, x.dtype)


def _uniform_draws(num_queries: int, num_samples: int, n: int, device: torch.device,
                   dtype: torch.dtype,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    item = torch.randint(0, n, (num_queries, num_samples), device=device, generator=generator)
    return item, torch.full(item.shape, 1.0 / n, dtype=dtype, device=device)


def _cluster_draws(q: Tensor, num_samples: int, n: int, cells: Cells,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    num_queries, device, dtype = q.size(0), q.device, q.dtype
    order, ptr, count, mean = cells
    filled = (count > 0).nonzero().view(-1)  # empty cells are never drawn
    order_ptr, count, mean = ptr[filled], count[filled], mean[filled]
    cell_prob = torch.softmax(q @ mean.T + count.to(dtype).log(), 1)
    cell_prob.mul_(1 - DEFENSIVE).add_(count.to(dtype) * (DEFENSIVE / n))
    # Systematic sampling: one uniform offset u per query and the evenly spaced points
    # (u + j) / m through the cells' CDF, so each cell gets the floor or the ceiling of
    # m p_i(c) draws: no multinomial noise in the counts, same expected counts (weights).
    cdf = cell_prob.cumsum(1)
    cdf[:, -1] = 1.0  # exactly m draws per query despite rounding (with the clamp)
    offset = torch.rand(num_queries, 1, device=device, dtype=dtype, generator=generator)
    reached = (cdf * num_samples + offset).floor_().long().clamp_max_(num_samples)
    per_cell = torch.diff(reached, dim=1, prepend=torch.zeros_like(reached[:, :1]))
    cells_ = torch.arange(count.numel(), device=device).expand_as(per_cell)
    cell = torch.repeat_interleave(cells_.reshape(-1), per_cell.reshape(-1),
                                   output_size=num_queries * num_samples)
    cell = cell.view(num_queries, num_samples)
    size = count[cell]
    slot = (torch.rand(cell.shape, device=device, dtype=dtype, generator=generator)
            * size.to(dtype)).long().clamp_max_(size - 1)
    item = order.index_select(0, (order_ptr[cell] + slot).view(-1)).view(cell.shape)
    return item, cell_prob.gather(1, cell) / size.to(dtype)


def sample_tail(q: Tensor, head: Tensor, head_key: Tensor, num_candidates: int,
                num_samples: int, *, cells: Cells | None, same: bool, exclude: Tensor | None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""The head plus ``num_samples`` importance-weighted tail draws per query, as
    ``(edge_index, edge_weight)``.

    Args:
        q (Tensor): queries ``[Q, d]``.
        head (Tensor): ``[Q, k]`` head candidate ids; head_key (Tensor): their rank keys
            (``-inf`` where none).
        num_candidates (int): :math:`N`, the candidates drawn from.
        num_samples (int): draws :math:`m` per query, with replacement.
        cells (Cells, optional): the ``"cluster"`` proposal's partition; ``None`` draws
            uniformly.
        same (bool): ``q`` are the candidates: drop draws of the query itself.
        exclude (Tensor, optional): ``[2, P]`` (candidate, query) pairs whose draws are dropped.
        generator (torch.Generator, optional): for reproducible draws.
    """
    num_queries, n = q.size(0), num_candidates
    if cells is None:
        item, prob = _uniform_draws(num_queries, num_samples, n, q.device, q.dtype, generator)
    else:
        item, prob = _cluster_draws(q, num_samples, n, cells, generator)
    # Hansen-Hurwitz: sum_j 1[k_j in tail] f(k_j) / (m p_i(k_j)) is unbiased for the tail's
    # sum whatever the head is (so an approximate IVF head keeps the estimate unbiased).
    weight = 1.0 / (num_samples * prob)
    rows = torch.arange(num_queries, device=q.device).unsqueeze(1)
    keep = ~contains((rows * n + head)[head_key > -math.inf], rows * n + item)
    if same:
        keep &= item != rows
    if exclude is not None:
        keep &= ~contains(exclude[1] * n + exclude[0], rows * n + item)
    # Rows of [head | tail] flattened row-major: edges grouped by query, head first. Repeated
    # draws of a pair stay separate edges (their weights add up in the operator's sum).
    index = torch.cat([head, item], 1)
    valid = torch.cat([head_key > -math.inf, keep], 1)
    edge_weight = torch.cat([torch.ones_like(head_key), weight], 1)[valid]
    dst = rows.expand_as(index)[valid]
    return torch.stack([index[valid], dst]), edge_weight
