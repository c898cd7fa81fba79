r"""The memory bank of :class:`~mp_contrastive.losses.SimCLRLoss` and
:class:`~mp_contrastive.losses.AttentionSimCLRLoss` (``memory_bank_size=K``): lightly's
``NTXentLoss(memory_bank_size=(K, D))``.

Each anchor :math:`h_0^{(i)}` is contrasted with its own positive :math:`h_1^{(i)}` and the bank's
:math:`K` entries only (not with the rest of the batch), over the anchors of the first view only,

.. math::
    L = \frac{1}{B} \sum_i \Big[c_i \log\Big(e^{s_i} + \sum_{k} w_{ik}\, e^{h_0^{(i)} \cdot n_k
    / \sqrt{\tau}}\Big) - v_i\, s_i\Big], \qquad s_i = h_0^{(i)} \cdot h_1^{(i)}
    = \cos(z_0^{(i)}, z_1^{(i)}) / \tau,

and when the first view requires a gradient (lightly's rule) the bank is then refreshed with the
normalised second view, gathered from every rank under DDP. The sum runs over the whole bank
(``affinity="dense"``: matmuls, tile by tile above the tiling threshold) or over a
:class:`~mp_contrastive.knn.BankIndex` graph (``affinity="knn"``: a kNN head plus an
importance-sampled tail, with weights :math:`w_{ik}`); :math:`c = v = 1` without attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mp_contrastive._validation import check_positive_int, unit_rows
from mp_contrastive.distributed import gather_no_grad
from mp_contrastive.knn import AFFINITIES, BankIndex
from mp_contrastive.memory import NegativeBank
from mp_contrastive.nn.functional._affinity import uniformity
from mp_contrastive.nn.functional._attention import AttentionSpec
from mp_contrastive.nn.functional._bank import BankContrast, bank_contrast
from mp_contrastive.nn.functional._tiling import Tiling

__all__ = ["MemoryBankContrast"]


def _bank_size(memory_bank_size: object) -> tuple[int, int | None]:
    """``(K, D)`` from lightly's forms: ``K`` (the dimension taken from the first batch) or
    ``(K, D)``; ``0`` means no bank."""
    if isinstance(memory_bank_size, (tuple, list)):
        if len(memory_bank_size) != 2:
            raise ValueError(f"'memory_bank_size' must be an int K or a pair (K, D), got "
                             f"{memory_bank_size!r}")
        size, dim = memory_bank_size
        return check_positive_int(size, "memory_bank_size"), check_positive_int(dim, "memory_bank_size")
    if isinstance(memory_bank_size, bool) or not isinstance(memory_bank_size, int):
        raise TypeError(f"'memory_bank_size' must be an int K or a pair (K, D), got "
                        f"{type(memory_bank_size).__name__}")
    if memory_bank_size < 0:
        raise ValueError(f"'memory_bank_size' must be at least 0 (0: no bank), got "
                         f"{memory_bank_size}")
    return memory_bank_size, None


class MemoryBankContrast(nn.Module):
    """The bank (a :class:`~mp_contrastive.memory.NegativeBank` buffer, so ``state_dict`` holds
    it) and, for ``affinity="knn"``, the :class:`~mp_contrastive.knn.BankIndex` that follows it."""

    def __init__(self, size: int, dim: int | None, affinity: str | BankIndex,
                 tiling: Tiling) -> None:
        super().__init__()
        self.bank = NegativeBank(size, dim)
        if isinstance(affinity, BankIndex):
            self.index: BankIndex | None = affinity
        elif affinity in AFFINITIES:
            self.index = BankIndex(tiling=tiling) if affinity == "knn" else None
        else:
            raise ValueError(f"'affinity' must be one of {AFFINITIES} or a BankIndex, "
                             f"got {affinity!r}")
        self.tiling = tiling

    def contrast(self, h0: Tensor, h1: Tensor, temperature: float,
                 attention: AttentionSpec | None = None,
                 attention_x: tuple[Tensor, Tensor] | None = None,
                 sample_ids: Tensor | None = None) -> BankContrast:
        """The energy (summed over anchors) and its gradients w.r.t. ``h0`` and ``h1`` (points of
        :func:`~mp_contrastive.graph.sphere_projection`), against the bank as it is now; entries
        pushed with an anchor's own ``sample_ids`` are not its negatives."""
        with torch.no_grad():
            scale = 1.0 / math.sqrt(temperature)
            count = len(self.bank)
            storage = self.bank.bank.to(h0.dtype)  # one copy at most, for the kernel and index
            negatives = storage[:count]
            exclude = None if sample_ids is None else self.bank.same_sample(sample_ids)
            graph = None
            if self.index is not None and count > 0:
                graph = self.index.graph(storage, count, (h0 * scale).detach(), exclude)
            affinity_index, affinity_weight = graph if graph is not None else (None, None)
            dense_exclude = exclude if graph is None else None
            anchor_weight = positive_weight = None
            if attention is not None:
                anchor_weight, positive_weight = self._attention(
                    attention, h0, h1, attention_x, negatives, scale, affinity_index,
                    affinity_weight, exclude)
            return bank_contrast(h0, h1, negatives, negative_scale=scale,
                                 affinity_index=affinity_index, affinity_weight=affinity_weight,
                                 anchor_weight=anchor_weight, positive_weight=positive_weight,
                                 exclude=dense_exclude, tiling=self.tiling)

    @torch.no_grad()
    def push(self, z1: Tensor, sample_ids: Tensor | None = None) -> None:
        """lightly's update: the normalised second view, from every rank, replaces the oldest
        entries (and the index follows), with its sample ids when given."""
        ids = None if sample_ids is None else gather_no_grad(sample_ids.to(z1.device))
        slots = self.bank.push(gather_no_grad(unit_rows(z1.detach())), ids)
        if self.index is not None:
            self.index.update(self.bank.bank, len(self.bank), slots)

    def _attention(self, spec: AttentionSpec, h0: Tensor, h1: Tensor,
                   attention_x: tuple[Tensor, Tensor] | None, negatives: Tensor, scale: float,
                   affinity_index: Tensor | None, affinity_weight: Tensor | None,
                   exclude: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """``(anchor_weight, positive_weight)`` of the attention on each anchor's one positive
        pair, with the normalisers of
        :func:`~mp_contrastive.nn.functional.attention_weights`: ``"neighbors"`` is a softmax over
        one positive (weight 1), ``"positives"`` the mean over the batch's pairs (each anchor's
        whole term weighted), ``"negatives"`` the mean over the bank's entries."""
        if spec.normalize == "neighbors":
            return None, None
        q0, q1 = (h0, h1) if attention_x is None else attention_x
        if spec.score == "cosine":
            q0, q1 = unit_rows(q0), unit_rows(q1)
        score = spec.beta * (q0 * q1).sum(-1)
        if spec.normalize == "positives":
            weight = (score - (torch.logsumexp(score, 0) - math.log(score.numel()))).exp()
            return weight, weight
        if attention_x is not None or spec.score != "dot":
            raise ValueError("normalize='negatives' with a memory bank scores the anchors "
                             "against the bank's entries, which hold no attention features: use "
                             "score='dot' and no attention_features, or normalize='positives'")
        if negatives.size(0) == 0:
            return None, torch.ones_like(score)
        # mean_k e^{beta h0 . n_k / sqrt(tau)} over the bank (an unbiased estimate on a kNN graph).
        total = uniformity(negatives, h0 * (scale * spec.beta), same_nodes=False,
                           both_sides=False, affinity_index=affinity_index,
                           affinity_weight=affinity_weight, need_step=False, tiling=self.tiling,
                           exclude=exclude if affinity_index is None else None).row_logsumexp
        assert total is not None
        count = torch.full_like(score, negatives.size(0))
        if exclude is not None:  # an anchor's own keys are not among its negatives
            count -= torch.bincount(exclude[1], minlength=score.numel()).to(score.dtype)
        return None, (score - (total - count.clamp_min(1).log())).exp()

    def extra_repr(self) -> str:
        return "affinity='knn'" if self.index is not None else "affinity='dense'"
