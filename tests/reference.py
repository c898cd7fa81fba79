"""Plain dense reference energies, written independently of the package (autograd differentiates
them in the tests). Matrices are indexed ``[target i, source j]``: ``A[i, j]`` is the weight of the
edge ``j -> i``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def dense(edge_index: Tensor, weight: Tensor | None, num_dst: int, num_src: int | None = None,
          dtype: torch.dtype = torch.float64) -> Tensor:
    num_src = num_dst if num_src is None else num_src
    out = torch.zeros(num_dst, num_src, dtype=dtype)
    w = torch.ones(edge_index.size(1), dtype=dtype) if weight is None else weight.to(dtype)
    out.index_put_((edge_index[1], edge_index[0]), w, accumulate=True)
    return out


def sym_normalize(adj: Tensor) -> Tensor:
    deg = adj.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * adj * inv[None, :]


def neighbour(h: Tensor, detach: bool) -> Tensor:
    """The copy of ``h`` that plays the neighbour role: a constant in the stop-gradient form."""
    return h.detach() if detach else h


def alignment_energy(h: Tensor, abar: Tensor, detach: bool) -> Tensor:
    """tr(H^T (I - Abar) H); detached: sum_i 1/2|H_i|^2 + 1/2|sg H_i|^2 - H_i . (Abar sg H)_i."""
    if not detach:
        return (h * h).sum() - (h * (abar @ h)).sum()
    return 0.5 * (h * h).sum() + 0.5 * (h.detach() ** 2).sum() - (h * (abar @ h.detach())).sum()


def uniformity_energy(h_dst: Tensor, h_src: Tensor, mask: Tensor, weight: Tensor | None,
                      anchor: Tensor | None, kernel: str, detach: bool) -> Tensor:
    """sum_i c_i log sum_{k in K(i)} w_ik exp(h_i.h_k)  or  sum_i c_i sum_k w_ik (h_i.h_k)^2."""
    sim = h_dst @ neighbour(h_src, detach).T
    w = torch.ones_like(sim) if weight is None else weight
    c = torch.ones(h_dst.size(0), dtype=h_dst.dtype) if anchor is None else anchor
    if kernel == "infonce":
        logits = (sim + w.log()).masked_fill(~mask, float("-inf"))
        has = mask.any(1)
        return (c[has] * torch.logsumexp(logits[has], 1)).sum()
    return (c[:, None] * w * sim.pow(2) * mask).sum()


def contrastive_energy(h: Tensor, abar: Tensor, mask: Tensor, kernel: str, detach: bool,
                       weight: Tensor | None = None, anchor: Tensor | None = None) -> Tensor:
    kappa = 1.0 if kernel == "infonce" else 2.0
    attract = (h * (abar @ neighbour(h, detach))).sum()
    return -kappa * attract + uniformity_energy(h, h, mask, weight, anchor, kernel, detach)


def laplacian_energy(h: Tensor, w: Tensor, detach: bool) -> Tensor:
    """1/2 sum_ij W_ij ||H_i - H_j||^2 with the neighbour side optionally detached."""
    diff = h[:, None, :] - neighbour(h, detach)[None, :, :]
    return 0.5 * (w[:, :, None] * diff.pow(2)).sum()


def step_from_autograd(energy_fn, h: Tensor, alpha: float) -> Tensor:
    """H - alpha * grad E(H), by autograd."""
    h = h.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(energy_fn(h), h)
    return (h - alpha * grad).detach()


def random_graph(num_nodes: int, p: float, generator: torch.Generator, symmetric: bool = True,
                 weighted: bool = True) -> tuple[Tensor, Tensor | None]:
    mask = torch.rand(num_nodes, num_nodes, generator=generator) < p
    mask.fill_diagonal_(False)
    if symmetric:
        mask = mask | mask.T
    dst, src = mask.nonzero().T
    if not weighted:
        return torch.stack([src, dst]), None
    w = torch.rand(num_nodes, num_nodes, generator=generator, dtype=torch.float64) + 0.1
    if symmetric:
        w = w + w.T
    return torch.stack([src, dst]), w[dst, src]


def assert_permutation_equivariant(layer: Callable[..., Tensor], x: Tensor,
                                   generator: torch.Generator, edge_index: Tensor | None = None,
                                   edge_weight: Tensor | None = None) -> None:
    """``layer`` commutes with renaming the nodes: on ``x[perm]`` (node ``i`` is node ``perm[i]``
    of ``x``) with the edges renamed by the inverse order, its output is its output on ``x`` in the
    order ``perm``; ``edge_index=None`` calls it on the features alone (a dense graph)."""
    perm = torch.randperm(x.size(0), generator=generator)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(x.size(0))
    graph = () if edge_index is None else (edge_index, edge_weight)
    renamed = () if edge_index is None else (inverse[edge_index], edge_weight)
    torch.testing.assert_close(layer(x[perm], *renamed), layer(x, *graph)[perm])


def complete_graph(num_nodes: int) -> Tensor:
    mask = ~torch.eye(num_nodes, dtype=torch.bool)
    dst, src = mask.nonzero().T
    return torch.stack([src, dst])
