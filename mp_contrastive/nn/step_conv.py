"""The base class of every operator: a ``MessagePassing`` layer that is one gradient step."""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, PairTensor
from torch_geometric.utils import is_sparse, spmm

from mp_contrastive._validation import check_positive

__all__ = ["StepConv"]


class StepConv(MessagePassing):
    r"""Base class: a ``MessagePassing`` layer that performs one gradient step on an energy
    :math:`E`, ``forward(x) = x + step(x)`` with ``step(x) = -alpha * grad E(x)``.

    Subclasses implement ``_compute(x, ..., need_step, need_energy) -> (grad, energy)``; the step,
    the energy and the forward pass all come from it, so the three can never disagree. The
    arguments after ``x`` are the subclass's ``forward`` arguments. Each public method checks its
    inputs once with ``_check`` and then runs the unchecked ``_compute``; callers that hold
    checked inputs (a loss, a layer wrapping the operator) call ``_step``, ``_energy``,
    ``_step_and_energy`` or ``_forward`` directly.

    Args:
        alpha (float): step size :math:`\alpha > 0`.
        detach_targets (bool): if ``True``, the energy's neighbour side is treated as a constant
            (stop-gradient on the targets), so each node only follows the gradient of its own terms.
        **kwargs: ``MessagePassing`` arguments. ``flow`` and ``decomposed_layers`` are accepted
            only by operators that honour them (:attr:`supports_flow`); the others reject them
            instead of silently ignoring them.
    """

    #: Whether the operator honours ``flow="target_to_source"`` and ``decomposed_layers > 1``.
    supports_flow: bool = False

    def __init__(self, alpha: float, detach_targets: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("aggr", "add")
        if not self.supports_flow:
            if kwargs.get("flow", "source_to_target") != "source_to_target":
                raise ValueError(f"{type(self).__name__} supports only flow='source_to_target' "
                                 f"(its edges run from neighbour to anchor), got "
                                 f"flow={kwargs['flow']!r}")
            if kwargs.get("decomposed_layers", 1) != 1:
                raise ValueError(f"{type(self).__name__} does not support decomposed_layers, "
                                 f"got {kwargs['decomposed_layers']!r}")
        super().__init__(**kwargs)
        self.alpha = check_positive(alpha, "alpha")
        self.detach_targets = bool(detach_targets)

    def reset_parameters(self) -> None:
        super().reset_parameters()

    # -- the public entry points: check once, then the trusted computation ---------------------
    def step(self, x: Tensor | PairTensor, *args: Any, **kwargs: Any) -> Tensor:
        r"""The update :math:`\mathrm{conv}(x) - x = -\alpha \nabla E(x)`, computed directly (not as
        a difference, so it keeps full precision when it is small against :math:`x`). Takes the
        arguments of ``forward``."""
        self._check(x, *args, **kwargs)
        return self._step(x, *args, **kwargs)

    def energy(self, x: Tensor | PairTensor, *args: Any, **kwargs: Any) -> Tensor:
        """The energy :math:`E(x)` whose gradient step this operator performs (a scalar)."""
        self._check(x, *args, **kwargs)
        return self._energy(x, *args, **kwargs)

    def step_and_energy(self, x: Tensor | PairTensor, *args: Any,
                        **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Both at the cost of one: ``(step(x), energy(x))``."""
        self._check(x, *args, **kwargs)
        return self._step_and_energy(x, *args, **kwargs)

    # -- for callers that hold checked inputs (the losses, wrapping layers) -----------------------
    def _check(self, x: Any, *args: Any, sync: bool = False, **kwargs: Any) -> None:
        """Check the arguments of ``forward`` once (shape, dtype, device, values), raising a
        ``TypeError`` or ``ValueError`` that names the bad one. ``sync=False`` (a layer call):
        on an accelerator the value checks are device-side asserts; a loss checks with
        ``sync=True``, once per step (``mp_contrastive._validation``)."""
        raise NotImplementedError

    def _step(self, x: Any, *args: Any, **kwargs: Any) -> Tensor:
        grad, _ = self._compute(x, *args, need_step=True, need_energy=False, **kwargs)
        return -self.alpha * grad

    def _energy(self, x: Any, *args: Any, **kwargs: Any) -> Tensor:
        _, energy = self._compute(x, *args, need_step=False, need_energy=True, **kwargs)
        return energy

    def _step_and_energy(self, x: Any, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        grad, energy = self._compute(x, *args, need_step=True, need_energy=True, **kwargs)
        return -self.alpha * grad, energy

    def _compute(self, x: Any, *args: Any, need_step: bool, need_energy: bool,
                 **kwargs: Any) -> tuple[Tensor | None, Tensor | None]:
        """``(grad, energy)`` of checked inputs: no checks here."""
        raise NotImplementedError

    def __prepare_scriptable__(self) -> StepConv:
        # torch.jit.script calls this first: fail with a reason instead of deep inside the compiler.
        raise TypeError(f"{type(self).__name__} cannot be compiled by torch.jit.script (deprecated "
                        f"since torch 2.10; the operators check their inputs in Python): use "
                        f"torch.compile(conv), which is supported and tested")

    # -- message passing -------------------------------------------------------------------------
    def message(self, x_j: Tensor, weight: Tensor | None) -> Tensor:
        return x_j if weight is None else weight.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor | PairTensor) -> Tensor:
        x_src = x[0] if isinstance(x, (tuple, list)) else x
        return spmm(adj_t, x_src, reduce=self.aggr)

    def weighted_sum(self, edge_index: Adj, weight: Tensor | None, x_src: Tensor,
                     num_dst: int) -> Tensor:
        r""":math:`\mathrm{out}_i = \sum_{(j, i) \in E} w_{ji} x_j` by message passing."""
        return self.propagate(edge_index, x=(x_src, None),
                              weight=None if is_sparse(edge_index) else weight,
                              size=(x_src.size(0), num_dst))

    # -- printing --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._repr_args())})"

    def _repr_args(self) -> list[str]:
        """``alpha``, then every setting that differs from its ``__init__`` default."""
        args = [f"alpha={self.alpha}"]
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "alpha") or parameter.kind is parameter.VAR_KEYWORD:
                continue
            value = getattr(self, name, parameter.default)
            if isinstance(value, Tensor) and value.numel() == 1:
                value = float(value.detach())
            if value != parameter.default:
                args.append(f"{name}={value!r}")
        if self.flow != "source_to_target":
            args.append(f"flow={self.flow!r}")
        if self.decomposed_layers != 1:
            args.append(f"decomposed_layers={self.decomposed_layers}")
        return args
