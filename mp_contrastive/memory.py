r"""Memories of past features, kept as module buffers (they follow ``.to(device)`` and round-trip
through ``state_dict``).

* :class:`NegativeBank`: a FIFO queue of past features used as extra negatives (MoCo's queue,
  lightly's ``MemoryBankModule``): the neighbour side of a bipartite affinity graph,
  ``UniformityConv()((bank.features, h))`` or, sparse, with an
  :func:`~mp_contrastive.knn.affinity_graph` of the batch against the bank.
* :class:`~mp_contrastive.multistage.MultiStageMemory`: each sample's features from its last k
  epochs (multi-stage aggregation, paper eq. 13), defined with the aggregation it shares with
  JumpingKnowledge over layers in :mod:`mp_contrastive.multistage`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_contrastive._validation import check_features
from mp_contrastive.multistage import MultiStageMemory

__all__ = ["NegativeBank", "MultiStageMemory"]


def _check_size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"'{name}' must be positive, got {value}")
    return value


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
        dim (int): feature dimension.
        dtype (torch.dtype, optional): storage dtype (default ``torch.get_default_dtype()``);
            pushed features are cast to it.
        device (torch.device, optional): storage device.
    """

    bank: Tensor
    ptr: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.size = _check_size(size, "size")
        self.dim = _check_size(dim, "dim")
        self.register_buffer("bank", torch.zeros(self.size, self.dim, dtype=dtype, device=device))
        # Next slot to write, and number of filled slots (the oldest entry is at `ptr` once full).
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=device))

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
    def push(self, x: Tensor) -> None:
        """Enqueue the rows of ``x`` (``[B, dim]``, detached), dropping the oldest entries."""
        x = check_features(x, "x")
        if x.size(1) != self.dim:
            raise ValueError(f"'x' must have shape [batch_size, {self.dim}] (the bank's dim), "
                             f"got {tuple(x.shape)}")
        if x.device != self.bank.device:
            raise ValueError(f"'x' must be on the bank's device {self.bank.device}, got {x.device} "
                             f"(move the bank with .to(device))")
        n, ptr = x.size(0), int(self.ptr)
        if n >= self.size:
            self.bank.copy_(x[n - self.size:])
            self.ptr.zero_()
            self.count.fill_(self.size)
            return
        first = min(n, self.size - ptr)
        self.bank[ptr:ptr + first] = x[:first]
        if first < n:  # wrap around
            self.bank[: n - first] = x[first:]
        self.ptr.fill_((ptr + n) % self.size)
        self.count.fill_(min(self.size, len(self) + n))

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
        self.ptr.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
