"""What the uniformity computation takes and returns: the attraction it may fold in, its result."""

from typing import NamedTuple

from torch import Tensor

__all__ = ["Attraction", "Repulsion"]

#: ``(edge_index, value)``: an attraction to subtract from a dense uniformity's coefficient
#: matrix entry by entry (edges ``k -> i``), computed by the caller beforehand (attention weights
#: included: they take their own log-sum-exp pass), so that the kernel owns its buffers.
Attraction = tuple[Tensor, Tensor]


class Repulsion(NamedTuple):
    """The uniformity's result: the gradient w.r.t. the anchors, the energy and (dense InfoNCE,
    or sparse with the energy) each anchor's log-sum-exp over its neighbours."""

    grad: Tensor | None
    energy: Tensor | None
    row_logsumexp: Tensor | None = None
