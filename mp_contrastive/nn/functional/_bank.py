r"""Contrast against a memory bank: each anchor's own positive and a bank of negatives in its
denominator (lightly's ``NTXentLoss(memory_bank_size=...)``, MoCo's queue),

.. math::
    E = \sum_i c_i \log\Big(e^{s_i} + \sum_{k \in K(i)} w_{ik}\, e^{a_i \cdot n_k}\Big)
        - \sum_i v_i\, s_i, \qquad s_i = a_i \cdot p_i,

with anchors :math:`a`, positives :math:`p`, bank entries :math:`n`, anchor weights :math:`c`
(default 1) and positive-pair weights :math:`v` (default 1; attention weights). :math:`K(i)` is
the whole bank (dense: a bipartite affinity graph computed with matmuls, tile by tile above the
tiling threshold, no per-edge index lists) or the edges of a sparse affinity graph with
importance weights :math:`w` (e.g. a kNN head plus a sampled tail). The negatives' part is the
uniformity of :func:`~mp_contrastive.nn.functional.uniformity` on the bipartite graph
bank -> anchors; the positive joins each denominator through the row log-sum-exp it returns.
"""

# Runtime annotations (no __future__ import): pdoc resolves the NamedTuple fields.
from typing import NamedTuple

import torch
from torch import Tensor

from mp_contrastive.nn.functional._affinity import uniformity
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling

__all__ = ["BankContrast", "bank_contrast"]


class BankContrast(NamedTuple):
    """The energy and its gradients w.r.t. the anchors and the positives (the bank gets none)."""

    energy: Tensor
    grad_anchor: Tensor
    grad_positive: Tensor


def bank_contrast(anchor: Tensor, positive: Tensor, negatives: Tensor, *,
                  negative_scale: float = 1.0, affinity_index: Tensor | None = None,
                  affinity_weight: Tensor | None = None, anchor_weight: Tensor | None = None,
                  positive_weight: Tensor | None = None, exclude: Tensor | None = None,
                  tiling: Tiling = DEFAULT_TILING) -> BankContrast:
    r"""The energy of the module docstring and its gradients, without an autograd graph.

    Args:
        anchor (Tensor): :math:`a`, ``[B, d]``. positive (Tensor): :math:`p`, ``[B, d]``.
        negatives (Tensor): the bank ``[K, d]`` (may be empty).
        negative_scale (float): the logits against the bank are
            ``negative_scale * a_i . n_k`` (a bank of unit vectors scored at temperature
            :math:`\tau` with :math:`a = z / \sqrt{\tau}`: ``1 / sqrt(tau)``), so the bank is never
            copied to rescale it.
        affinity_index (Tensor, optional): ``[2, E]`` sparse affinity graph (row 0 = bank slot,
            row 1 = anchor); dense when ``None``. affinity_weight (Tensor, optional): ``[E]``.
        anchor_weight, positive_weight (Tensor, optional): :math:`c` and :math:`v`, ``[B]``.
        exclude (Tensor, optional): ``[2, P]`` pairs (bank slot, anchor) left out of the dense
            graph (e.g. an anchor's own earlier keys); a sparse graph leaves them out itself.
        tiling (Tiling): when the dense bipartite graph is processed tile by tile.
    """
    with torch.no_grad():
        s = (anchor * positive).sum(-1)
        if negatives.size(0) == 0:
            lse, pulled = s, torch.zeros_like(anchor)
        else:
            query = anchor * negative_scale if negative_scale != 1.0 else anchor
            repulsion = uniformity(negatives, query, same_nodes=False, both_sides=False,
                                   affinity_index=affinity_index, affinity_weight=affinity_weight,
                                   need_step=True, need_energy=affinity_index is not None,
                                   tiling=tiling, exclude=exclude)
            negative_lse = repulsion.row_logsumexp
            assert repulsion.grad is not None and negative_lse is not None
            lse = torch.logaddexp(s, negative_lse)
            # The uniformity's gradient is the softmax over the negatives alone; its share of the
            # whole denominator rescales it (d/da of the negatives' logits brings the scale). An
            # anchor with no negative left (all excluded) has share 0 and an undefined softmax.
            share = (negative_lse - lse).exp_().mul_(negative_scale)
            pulled = repulsion.grad.mul_(share.unsqueeze(1))
            pulled = torch.where(negative_lse.isneginf().unsqueeze(1), 0.0, pulled)
        p_positive = (s - lse).exp()
        c = torch.ones_like(s) if anchor_weight is None else anchor_weight
        v = torch.ones_like(s) if positive_weight is None else positive_weight
        grad_anchor = pulled.add_(positive * p_positive.unsqueeze(1)).mul_(c.unsqueeze(1))
        grad_anchor.sub_(positive * v.unsqueeze(1))
        grad_positive = anchor * (c * p_positive - v).unsqueeze(1)
        energy = (c * lse - v * s).sum()
    return BankContrast(energy, grad_anchor, grad_positive)
