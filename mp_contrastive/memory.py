r"""Memories of past features, kept as module buffers (they follow ``.to(device)`` and round-trip
through ``state_dict``), and the multi-stage aggregation they share with JumpingKnowledge.

* :class:`NegativeBank`: a FIFO queue of past features used as extra negatives (MoCo's queue,
  lightly's ``MemoryBankModule``): the neighbour side of a bipartite affinity graph,
  ``UniformityConv()((bank.features, h))`` or, sparse, with an
  :func:`~mp_contrastive.knn.affinity_graph` of the batch against the bank.
* :class:`MultiStageMemory`: each sample's features from its last k epochs (multi-stage
  aggregation, paper eq. 13), read through :func:`aggregate_stages`.
* :class:`StageAggregation`: the same aggregation as JumpingKnowledge over GNN layers.

Multi-stage aggregation (paper section 3.3.1) is JumpingKnowledge over epochs or over layers. A
stack of stages ``[k, N, d]`` (the features of the last ``k`` epochs of each sample, or the
outputs of ``k`` GNN layers) is aggregated per node, skipping stages that are not there yet:

.. math::
    \mathrm{sum}: \sum_s h^{(s)}, \quad \mathrm{mean}: \tfrac{1}{|S|} \sum_s h^{(s)}, \quad
    \mathrm{max}: \max_s h^{(s)}, \quad \mathrm{decay}: \sum_{s=1}^{k} \gamma^{s} h^{(s)},

with stage :math:`s = 1` the most recent; ``decay`` is APPNP-style geometric weighting (a natural
extension the paper does not try), ``cat`` concatenates (layers only).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_contrastive._validation import (
    check_choice,
    check_device,
    check_device_arg,
    check_feature_dim,
    check_features,
    check_float_dtype,
    check_index_vector,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    has_values,
)
from mp_contrastive.distributed import gather_no_grad, rank_and_world

__all__ = ["NegativeBank", "AGGREGATIONS", "aggregate_stages", "StageAggregation",
           "MultiStageMemory"]


# -- negatives ------------------------------------------------------------------------------------
class NegativeBank(nn.Module):
    r"""A first-in-first-out queue of the last ``size`` feature vectors pushed into it.

    Each :meth:`push` of a batch :math:`Z \in \mathbb{R}^{B \times d}` (detached) overwrites the
    oldest entries; a batch larger than the bank keeps its last ``size`` rows. Unlike lightly's
    ``MemoryBankModule`` the bank starts empty (no random vectors posing as negatives) and a batch
    that runs past the end wraps around instead of being truncated, so any batch size works and
    no pushed feature is lost before ``size`` newer ones arrive.

    Example (MoCo-style; the current keys are not their own negatives)::

        bank = NegativeBank(65536, 128)
        loss = MessagePassingLoss(UniformityConv())((bank.features, h)) if len(bank) else 0
        bank.push(h)

    Args:
        size (int): capacity (number of feature vectors).
        dim (int, optional): feature dimension; ``None`` takes it (and the storage's device and,
            unless ``dtype`` is given, its dtype) from the first :meth:`push`, or from the state
            dict a checkpoint loads, as lightly's ``memory_bank_size=K`` does.
        dtype (torch.dtype, optional): floating-point storage dtype (default
            ``torch.get_default_dtype()``); pushed features are cast to it.
        device (torch.device, optional): storage device.
    """

    bank: Tensor
    ids: Tensor
    ptr: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int | None = None, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.size = check_positive_int(size, "size")
        self.dim = None if dim is None else check_positive_int(dim, "dim")
        check_float_dtype(dtype)  # an integer bank would truncate the features it stores
        device = check_device_arg(device)
        # A bank whose dim comes from its first push also takes that push's dtype, unless given.
        self._dtype_given = dtype is not None
        rows, cols = (self.size, self.dim) if self.dim is not None else (0, 0)
        self.register_buffer("bank", torch.zeros(rows, cols, dtype=dtype, device=device))
        # Each entry's sample id when the pushes named them (-1: unknown), for same_sample().
        self.register_buffer("ids", torch.full((self.size,), -1, dtype=torch.long, device=device))
        # Next slot to write, and number of filled slots (the oldest entry is at `ptr` once full).
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=device))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # A bank whose dim comes from its first push takes the checkpoint's storage shape.
        stored = state_dict.get(prefix + "bank")
        if self.dim is None and isinstance(stored, Tensor) and stored.dim() == 2 \
                and stored.size(0) == self.size:
            self.bank = self.bank.new_zeros(stored.shape)
            self.dim = stored.size(1)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def __len__(self) -> int:
        return int(self.count)

    @property
    def full(self) -> bool:
        return len(self) == self.size

    @property
    def features(self) -> Tensor:
        """The stored features ``[len(self), dim]`` in storage order (a view, no copy): the order
        is irrelevant to the uniformity energy, which sums over the negatives."""
        return self.bank[: len(self)]

    def oldest_first(self) -> Tensor:
        """The stored features ``[len(self), dim]`` from the oldest to the newest (a copy once the
        queue has wrapped around)."""
        count, ptr = len(self), int(self.ptr)
        if count < self.size:
            return self.bank[:count]
        return torch.cat([self.bank[ptr:], self.bank[:ptr]])

    @torch.no_grad()
    def push(self, x: Tensor, ids: Tensor | None = None) -> Tensor:
        """Enqueue the rows of ``x`` (``[B, dim]``, detached), dropping the oldest entries, with
        their sample ids ``ids`` (``[B]``, optional; see :meth:`same_sample`).
        Returns the slots written (``[min(B, size)]``, in the order of the rows kept), so that an
        index over the bank can replace exactly those entries."""
        x = check_features(x, "x")
        if ids is not None:
            ids = check_index_vector(ids, "ids", length=x.size(0), device=x.device, ref="x",
                                     move=True)
        else:
            ids = torch.full((x.size(0),), -1, dtype=torch.long, device=x.device)
        if self.dim is None:
            self.dim = x.size(1)
            self.bank = self.bank.new_zeros(self.size, self.dim,
                                            dtype=None if self._dtype_given else x.dtype,
                                            device=x.device)
            self.ids, self.ptr, self.count = (t.to(x.device) for t in (self.ids, self.ptr,
                                                                      self.count))
        x = check_feature_dim(x, "x", self.dim, "batch_size", "the bank's dim")
        if x.device != self.bank.device:
            raise ValueError(f"'x' must be on the bank's device {self.bank.device}, got {x.device} "
                             f"(move the bank with .to(device))")
        n, ptr = x.size(0), int(self.ptr)
        if n >= self.size:
            self.bank.copy_(x[n - self.size:])
            self.ids.copy_(ids[n - self.size:])
            self.ptr.zero_()
            self.count.fill_(self.size)
            return torch.arange(self.size, device=self.bank.device)
        first = min(n, self.size - ptr)
        self.bank[ptr:ptr + first] = x[:first]
        self.ids[ptr:ptr + first] = ids[:first]
        if first < n:  # wrap around
            self.bank[: n - first] = x[first:]
            self.ids[: n - first] = ids[first:]
        self.ptr.fill_((ptr + n) % self.size)
        self.count.fill_(min(self.size, len(self) + n))
        return torch.arange(ptr, ptr + n, device=self.bank.device) % self.size

    def same_sample(self, ids: Tensor) -> Tensor:
        """``[2, P]`` pairs ``(slot, row)``: the filled slots whose sample id equals ``ids[row]``
        (e.g. a sample's own keys from earlier epochs, which are not its negatives)."""
        ids = check_index_vector(ids, "ids", device=self.ids.device, ref="the bank", move=True)
        stored = self.ids[: len(self)]
        order = torch.argsort(stored, stable=True)
        sorted_ids = stored[order]
        lo = torch.searchsorted(sorted_ids, ids)
        hi = torch.searchsorted(sorted_ids, ids, right=True)
        count = (hi - lo).clamp_min(0)
        row = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), count)
        # Position of each pair inside its row's run of equal ids.
        offset = torch.arange(row.numel(), device=ids.device) - \
            torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        return torch.stack([order[lo[row] + offset], row])

    def forward(self, x: Tensor, update: bool = True) -> Tensor:
        """lightly's ``MemoryBankModule`` protocol: the negatives *before* this batch (a copy, so
        that the update cannot change them), then ``push(x)`` if ``update``. ``features`` +
        :meth:`push` avoid the copy."""
        negatives = self.features.clone()
        if update:
            self.push(x)
        return negatives

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the bank."""
        self.bank.zero_()
        self.ids.fill_(-1)
        self.ptr.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


# -- multi-stage aggregation -------------------------------------------------------------------
AGGREGATIONS = ("sum", "mean", "max", "decay")


def aggregate_stages(stages: Tensor, aggr: str, valid: Tensor | None = None,
                     gamma: float = 0.5) -> Tensor:
    """Aggregate ``stages`` ``[k, N, d]`` (index 0 = the most recent stage) over ``k``.

    ``valid`` ``[k, N]`` marks the stages present for each node (all by default); a node with no
    valid stage aggregates to zeros.
    """
    check_choice(aggr, "aggr", AGGREGATIONS)
    gamma = check_positive(gamma, "gamma")  # a NaN or negative decay would spread into every row
    if not isinstance(stages, Tensor) or not stages.is_floating_point():
        raise TypeError(f"'stages' must be a floating-point torch.Tensor, got "
                        f"{type(stages).__name__}")
    if stages.dim() != 3:
        raise ValueError(f"'stages' must have shape [k, num_nodes, dim], got {tuple(stages.shape)}")
    k = stages.size(0)
    if valid is None:
        valid = torch.ones(stages.shape[:2], dtype=torch.bool, device=stages.device)
    mask = valid.unsqueeze(-1).to(stages.dtype)
    if aggr == "max":
        filled = stages.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(0)
        return torch.where(valid.any(0).unsqueeze(-1), filled, torch.zeros_like(filled))
    if aggr == "decay":
        weight = gamma ** torch.arange(1, k + 1, device=stages.device, dtype=stages.dtype)
        return (stages * mask * weight.view(k, 1, 1)).sum(0)
    total = (stages * mask).sum(0)
    if aggr == "sum":
        return total
    return total / mask.sum(0).clamp_min(1.0)


class StageAggregation(nn.Module):
    """JumpingKnowledge over GNN layers with the multi-stage modes: ``forward(xs)`` for a list of
    layer outputs (first = earliest). ``mode="max"`` equals PyG's ``JumpingKnowledge("max")``,
    ``"cat"`` its ``"cat"``; ``"sum"``, ``"mean"`` and ``"decay"`` (most recent layer = stage 1)
    are the modes above."""

    def __init__(self, mode: str = "sum", gamma: float = 0.5) -> None:
        super().__init__()
        self.mode = check_choice(mode, "mode", (*AGGREGATIONS, "cat"))
        self.gamma = check_positive(gamma, "gamma")

    def forward(self, xs: list[Tensor]) -> Tensor:
        if not xs:
            raise ValueError("'xs' must hold at least one layer output")
        if self.mode == "cat":
            return torch.cat(xs, dim=-1)
        return aggregate_stages(torch.stack(xs[::-1]), self.mode, gamma=self.gamma)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(mode='{self.mode}')"


class MultiStageMemory(nn.Module):
    """Each dataset sample's features from its last ``num_stages`` epochs, in a ring buffer
    indexed by sample id (paper eq. 13's memory bank).

    Per step: :meth:`read` the aggregate of a batch's stored stages (epochs ``t-1 .. t-k`` for the
    current epoch ``t``; samples not seen yet, or not seen recently because of ``drop_last``, have
    fewer valid stages, reported by the mask), then :meth:`write` the batch's new features. Writes
    are gathered over DDP ranks, so every rank holds every rank's writes. State (features and the
    epoch each slot was written) lives in buffers: it goes into ``state_dict`` and checkpoints.

    Args:
        num_samples (int): dataset size (sample ids are ``0 .. num_samples-1``).
        dim (int): feature dimension.
        num_stages (int): ``k``, the number of past epochs kept.
        aggr (str): ``"sum"`` (the paper), ``"mean"``, ``"max"`` or ``"decay"``.
        gamma (float): decay factor for ``aggr="decay"``.
        dtype (torch.dtype): storage type (``torch.float16`` halves the memory).
    """

    def __init__(self, num_samples: int, dim: int, num_stages: int = 1, aggr: str = "sum",
                 gamma: float = 0.5, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        for name, value in (("num_samples", num_samples), ("dim", dim),
                            ("num_stages", num_stages)):
            check_positive_int(value, name)
        self.num_samples, self.dim, self.num_stages = num_samples, dim, num_stages
        self.aggr = check_choice(aggr, "aggr", AGGREGATIONS)
        self.gamma = check_positive(gamma, "gamma")
        check_float_dtype(dtype)
        self.register_buffer("features", torch.zeros(num_stages, num_samples, dim, dtype=dtype))
        self.register_buffer("written", torch.full((num_stages, num_samples), -1, dtype=torch.long))

    def _check_index(self, index: Tensor) -> Tensor:
        index = check_index_vector(index, "index", device=self.written.device,
                                   ref="the memory", move=True)
        if index.numel() and has_values(index) and int(index.max()) >= self.num_samples:
            raise ValueError(f"'index' must lie in [0, {self.num_samples}), got maximum "
                             f"{int(index.max())}")
        return index

    @torch.no_grad()
    def read(self, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """``(aggregate [B, dim], number of valid stages [B])`` for samples ``index`` at ``epoch``:
        stage ``s`` is the feature written at epoch ``epoch - s``, ``1 <= s <= k``."""
        index = self._check_index(index)
        check_nonnegative_int(epoch, "epoch")
        # Stage s (index s - 1) is the epoch t - s, stored in ring slot (t - s) % k: read it from
        # there, valid when that slot still holds epoch t - s. (Sorting the valid slots by age
        # would shift an older stage into a missing newer one's place, and "decay" would weight
        # it as the newer one.)
        stage_epoch = epoch - torch.arange(1, self.num_stages + 1, device=self.written.device)
        slot = stage_epoch.remainder(self.num_stages)
        valid = self.written[slot][:, index] == stage_epoch.unsqueeze(1)  # [k, B]
        valid &= (stage_epoch >= 0).unsqueeze(1)
        stages = self.features[slot][:, index]
        if stages.dtype in (torch.float16, torch.bfloat16):  # aggregated in float32; float64 kept
            stages = stages.float()
        return aggregate_stages(stages, self.aggr, valid, self.gamma), valid.sum(0)

    @torch.no_grad()
    def write(self, index: Tensor, features: Tensor, epoch: int) -> None:
        """Store ``features`` ``[B, dim]`` of samples ``index`` as their epoch-``epoch`` stage
        (over DDP, every rank's batch is written on every rank)."""
        index = self._check_index(index)
        check_nonnegative_int(epoch, "epoch")
        features = check_features(features, "features")
        check_device(features, "features", self.features.device, "the memory")
        if features.size(0) != index.numel() or features.size(1) != self.dim:
            raise ValueError(f"'features' must have shape [len(index), dim] = [{index.numel()}, "
                             f"{self.dim}], got {tuple(features.shape)}")
        if rank_and_world()[1] > 1:
            index, features = gather_no_grad(index), gather_no_grad(features)
        slot = epoch % self.num_stages
        self.features[slot, index] = features.detach().to(self.features.dtype)
        self.written[slot, index] = epoch

    def extra_repr(self) -> str:
        return (f"num_samples={self.num_samples}, dim={self.dim}, num_stages={self.num_stages}, "
                f"aggr='{self.aggr}', dtype={self.features.dtype}")
