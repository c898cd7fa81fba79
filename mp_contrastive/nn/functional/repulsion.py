"""What the uniformity computation takes and returns: the attraction it may fold in, its result."""

from typing import NamedTuple, Protocol

from torch import Tensor

__all__ = ["Attraction", "Repulsion", "FixedAttraction"]


class Attraction(Protocol):
    r"""An attraction to subtract from a dense uniformity gradient, entry by entry.

    Called once, with each anchor's log-sum-exp over its neighbours (``None`` for the spectral
    kernel, or when ``needs_logsumexp`` is ``False``), it returns ``(edge_index, value)``: edges
    ``k -> i`` whose ``value`` is subtracted from the coefficient matrix before the matmul. Attention
    weights may depend on the log-sum-exp, hence the call. On the plain path it is called while the
    similarity matrix still holds the similarities, so it may read a matrix it shares with the
    caller. ``needs_logsumexp = False`` spares the blockwise path the extra pass over the tiles that
    computing the log-sum-exp first costs.
    """

    needs_logsumexp: bool

    def __call__(self, row_logsumexp: Tensor | None) -> tuple[Tensor, Tensor]: ...


class FixedAttraction(NamedTuple):
    """An :class:`Attraction` with edges and values known in advance."""

    edge_index: Tensor
    value: Tensor
    needs_logsumexp: bool = False

    def __call__(self, row_logsumexp: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.edge_index, self.value


class Repulsion(NamedTuple):
    """The uniformity's result: the gradient w.r.t. the anchors, the energy, (dense InfoNCE) each
    anchor's log-sum-exp over its neighbours, and the ``(edge_index, value)`` of the attraction
    that was folded in, if any."""

    grad: Tensor | None
    energy: Tensor | None
    row_logsumexp: Tensor | None = None
    attraction: tuple[Tensor, Tensor] | None = None
