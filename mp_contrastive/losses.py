r"""Losses derived from the operators.

For any operator ``conv`` that performs a gradient step on an energy :math:`E`,

.. math::
    L_{mp}(H) = \frac{1}{2\alpha} \big\| H - \mathrm{sg}(\mathrm{conv}(H)) \big\|_F^2
    \quad\text{has}\quad \frac{\partial L_{mp}}{\partial H} = \frac{H - \mathrm{conv}(H)}{\alpha}
    = \nabla E(H),

so back-propagating :math:`L_{mp}` into an encoder gives exactly the gradient of the original loss.
We evaluate that gradient as ``-conv.step(H) / alpha`` (the step is computed directly, not as the
difference ``H - conv(H)``, which would lose precision in float32 once the step is small), under
``torch.no_grad``: no ``N x N`` matrix is kept for the backward pass.

Second derivatives (``torch.autograd.grad(loss, z, create_graph=True)``, Hessian-vector products)
are those of the original loss: when a graph of the gradient is requested, the backward pass
recomputes the step differentiably from the saved :math:`H` (:func:`descent_loss`'s ``step_fn``),
and the plain first-order backward pass is unchanged. A loss whose gradient is a stop-gradient
semi-gradient (an operator with ``detach_targets=True`` in :class:`MessagePassingLoss`) raises a
``RuntimeError`` there instead of returning a wrong second derivative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from mp_contrastive._validation import (
    check_affinity_edges,
    check_choice,
    check_device,
    check_features,
    check_index_vector,
    check_positive,
    unit_rows,
)
from mp_contrastive.bank_loss import MemoryBankContrast, _bank_size
from mp_contrastive.graph import augmentation_edges, sphere_projection, view_sample_index
from mp_contrastive.knn import BankIndex
from mp_contrastive.nn import ContrastiveConv, StepConv
from mp_contrastive.nn.functional import DEFAULT_TILING, AttentionSpec, Tiling

__all__ = [
    "MessagePassingLoss",
    "SimCLRLoss",
    "AttentionSimCLRLoss",
    "descent_loss",
]

REDUCTIONS = ("mean", "sum", "none")

#: ``step_fn(h)``: the step recomputed from ``h`` with autograd (for second derivatives).
StepFn = Callable[[Tensor], Tensor]


class _DescentLoss(torch.autograd.Function):
    """``value`` forward; ``-step / alpha`` backward (precomputed), or, when a graph of the
    gradient is requested, ``-step_fn(h) / alpha`` recomputed differentiably."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, value: Tensor, step: Tensor, alpha: float,
                step_fn: StepFn | None, unsupported: str | None) -> Tensor:
        ctx.save_for_backward(h, step)
        ctx.alpha, ctx.step_fn, ctx.unsupported = alpha, step_fn, unsupported
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_value: Tensor) -> tuple[Tensor | None, ...]:
        h, step = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            if ctx.unsupported is not None or ctx.step_fn is None:
                raise RuntimeError(
                    ctx.unsupported or "this descent_loss was built without a 'step_fn', so its "
                    "gradient cannot be differentiated (create_graph=True); pass step_fn, or "
                    "compute the loss with plain autograd for second derivatives")
            step = ctx.step_fn(h)
        return step * (-(grad_value / ctx.alpha)), None, None, None, None, None


def descent_loss(h: Tensor, step: Tensor, alpha: float, value: Tensor,
                 step_fn: StepFn | None = None, *, unsupported: str | None = None) -> Tensor:
    r"""A scalar whose value is ``value`` and whose gradient w.r.t. ``h`` is ``-step / alpha``
    (:math:`= \nabla E(h)` for ``step = conv.step(h)``).

    ``step_fn(h)`` recomputes the step from ``h`` with autograd: it is called only when a graph of
    the gradient is requested (``create_graph=True``), so that second derivatives are the
    derivatives of the gradient. Without it (or with an ``unsupported`` message, which is raised)
    such a request raises a ``RuntimeError`` rather than silently returning zero curvature."""
    for name, tensor in (("h", h), ("step", step), ("value", value)):
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            raise TypeError(f"'{name}' must be a floating-point torch.Tensor, got "
                            f"{type(tensor).__name__}")
    if step.shape != h.shape:
        raise ValueError(f"'step' must have the shape of 'h' {tuple(h.shape)}, "
                         f"got {tuple(step.shape)}")
    if value.numel() != 1:
        raise ValueError(f"'value' must be a scalar, got shape {tuple(value.shape)}")
    check_device(step, "step", h.device, "h")
    alpha = check_positive(alpha, "alpha")
    return _DescentLoss.apply(h, value.detach(), step.detach(), alpha, step_fn, unsupported)


class MessagePassingLoss(nn.Module):
    r"""The loss of an operator: :math:`\frac{1}{2\alpha} \| H - \mathrm{sg}(\mathrm{conv}(H)) \|_F^2`.

    Its gradient w.r.t. :math:`H` is :math:`\nabla E(H)` of the operator's energy, so
    ``MessagePassingLoss(conv)(H, ...)`` trains an encoder with the learning dynamics ``conv``
    describes. Call it with the operator's own arguments; for a pair ``(x_src, x_dst)`` the loss is
    on ``x_dst``.

    Example:
        >>> loss = MessagePassingLoss(ContrastiveConv(alpha=1.0))
        >>> value = loss(h, graph.edge_index, graph.edge_weight)
    """

    def __init__(self, conv: StepConv) -> None:
        super().__init__()
        if not isinstance(conv, StepConv):
            raise TypeError(f"'conv' must be one of the mp_contrastive.nn operators, "
                            f"got {type(conv).__name__}")
        self.conv = conv

    def forward(self, x: Tensor | tuple[Tensor, Tensor], *args: object,
                **kwargs: object) -> Tensor:
        # The loss is the boundary: its inputs are checked once, on the host (once per step),
        # and the operator's trusted computation runs twice on them (the step, and step_fn).
        self.conv._check(x, *args, sync=True, **kwargs)
        pair = isinstance(x, (tuple, list))
        h = x[1] if pair else x
        with torch.no_grad():
            step = self.conv._step(x, *args, **kwargs)
        value = step.pow(2).sum() / (2 * self.conv.alpha)

        def step_fn(h: Tensor) -> Tensor:
            return self.conv._step((x[0], h) if pair else h, *args, **kwargs)

        unsupported = None
        if self.conv.detach_targets:
            unsupported = (
                f"second derivatives of MessagePassingLoss({self.conv}) are not available: with "
                f"detach_targets=True its gradient is a stop-gradient semi-gradient, whose "
                f"Jacobian is not the Hessian of the stop-gradient loss; use "
                f"detach_targets=False, or write the stop-gradient loss with plain autograd")
        return descent_loss(h, step, self.conv.alpha, value, step_fn, unsupported=unsupported)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.conv})"


class _ViewContrastiveLoss(nn.Module):
    """Shared input handling of the view-based losses: ``loss(z0, z1)`` or ``loss(z, sample)``."""

    def __init__(self, conv: ContrastiveConv, temperature: float, reduction: str,
                 memory_bank_size: int | tuple[int, int], affinity: str | BankIndex,
                 tiling: Tiling) -> None:
        super().__init__()
        self.conv = conv
        self.temperature = check_positive(temperature, "temperature")
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)
        self._graph_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        size, dim = _bank_size(memory_bank_size)
        self.memory: MemoryBankContrast | None = None
        if size > 0:
            if self.reduction == "none":
                raise ValueError("reduction='none' is not available with a memory bank: use "
                                 "'mean' or 'sum'")
            self.memory = MemoryBankContrast(size, dim, affinity, tiling)
        elif affinity != "dense":
            raise ValueError(f"affinity={affinity!r} is a graph over a memory bank: it needs "
                             f"memory_bank_size > 0")

    def _bank_loss(self, z0: Tensor, z1: object, attention_x: Tensor | None = None,
                   sample_ids: Tensor | None = None) -> Tensor:
        """lightly's memory-bank NT-Xent (:mod:`mp_contrastive.bank_loss`)."""
        assert self.memory is not None
        if not isinstance(z1, Tensor) or not z1.is_floating_point():
            raise ValueError("a loss with a memory bank takes two views, loss(z0, z1): z0 are the "
                             "anchors, z1 their positives and the bank's next entries")
        z, _, _ = self._nodes(z0, z1)
        b = z0.size(0)
        if self.memory.bank.dim not in (None, z0.size(1)):
            raise ValueError(f"'z0' must have shape [batch_size, {self.memory.bank.dim}] (the "
                             f"memory bank's dim), got {tuple(z0.shape)}")
        if sample_ids is not None:
            sample_ids = check_index_vector(sample_ids, "sample_ids", length=b, device=z0.device,
                                            ref="z0", move=True)
        pair = None if attention_x is None else (attention_x[:b], attention_x[b:])
        h = sphere_projection(z, self.temperature)
        result = self.memory.contrast(h[:b].detach(), h[b:].detach(), self.temperature,
                                      self.conv.attention, pair, sample_ids)
        if z0.requires_grad:  # lightly's rule: a batch without gradient leaves the bank as it is
            self.memory.push(z1, sample_ids)
        step = -torch.cat([result.grad_anchor, result.grad_positive])
        loss = descent_loss(h, step, 1.0, result.energy, unsupported=(
            "second derivatives of a loss with a memory bank are not available (the bank "
            "changes after each call): compute them without memory_bank_size"))
        return loss / b if self.reduction == "mean" else loss

    def _nodes(self, z0: Tensor, z1_or_sample: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Features of all views and the batch's augmentation graph."""
        z0 = check_features(z0, "z0")
        if not isinstance(z1_or_sample, Tensor):
            raise TypeError(f"the second argument must be the second view z1 (float tensor) or "
                            f"'sample' (integer tensor), got {type(z1_or_sample).__name__}")
        if z1_or_sample.is_floating_point():
            # The device first: a value check on a tensor of another device would fail in torch.
            check_device(z1_or_sample, "z1", z0.device, "z0")
            z1 = check_features(z1_or_sample, "z1")
            if z1.shape != z0.shape:
                raise ValueError(f"'z1' must have the same shape as 'z0' {tuple(z0.shape)}, "
                                 f"got {tuple(z1.shape)}")
            return self._views(z0, z1)
        sample = check_index_vector(z1_or_sample, "sample", length=z0.size(0), device=z0.device,
                                    ref="z0", move=True)
        edge_index, edge_weight, _ = augmentation_edges(sample, z0.dtype)
        return z0, edge_index, edge_weight

    def _views(self, z0: Tensor, z1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_nodes` of two checked views."""
        key = (z0.size(0), z0.device, z0.dtype)
        if key not in self._graph_cache:
            sample = view_sample_index(z0.size(0), 2, device=z0.device)
            edge_index, edge_weight, _ = augmentation_edges(sample, z0.dtype)
            self._graph_cache = {key: (edge_index, edge_weight)}
        return torch.cat([z0, z1]), *self._graph_cache[key]

    def _checked_loss(self, z: Tensor, edge_index: Tensor, edge_weight: Tensor,
                      attention_x: Tensor | None = None, affinity_index: Tensor | None = None,
                      affinity_weight: Tensor | None = None) -> Tensor:
        """:meth:`_loss` after checking a caller's affinity graph (``z``, ``attention_x`` and the
        augmentation graph are checked or built by the caller: :meth:`_nodes`,
        :meth:`_attention_rows`)."""
        if affinity_index is not None:
            if self.reduction == "none":
                raise ValueError("reduction='none' needs the dense affinity graph: pass "
                                 "affinity_index=None, or use reduction='sum'/'mean'")
            affinity_index, affinity_weight = check_affinity_edges(
                affinity_index, affinity_weight, z.size(0), ("affinity_index", "affinity_weight"),
                device=z.device, ref="z0", move=True)
            if affinity_weight is not None:
                affinity_weight = affinity_weight.to(z.dtype)
        elif affinity_weight is not None:
            raise TypeError("'affinity_weight' needs 'affinity_index'")
        return self._loss(z, edge_index, edge_weight, attention_x, affinity_index,
                          affinity_weight)

    def _loss(self, z: Tensor, edge_index: Tensor, edge_weight: Tensor,
              attention_x: Tensor | None = None, affinity_index: Tensor | None = None,
              affinity_weight: Tensor | None = None) -> Tensor:
        """The loss of checked inputs."""
        h = sphere_projection(z, self.temperature)
        if self.reduction == "none":
            return self._per_view(h, edge_index, edge_weight, attention_x)
        # z and the graphs were checked (or built) above: the operator's trusted computation.
        with torch.no_grad():
            step, energy = self.conv._step_and_energy(h, edge_index, edge_weight,
                                                      affinity_index=affinity_index,
                                                      affinity_weight=affinity_weight,
                                                      attention_x=attention_x)

        def step_fn(h: Tensor) -> Tensor:
            return self.conv._step(h, edge_index, edge_weight, affinity_index=affinity_index,
                                   affinity_weight=affinity_weight, attention_x=attention_x)

        loss = descent_loss(h, step, self.conv.alpha, energy, step_fn)
        return loss / z.size(0) if self.reduction == "mean" else loss

    def _per_view(self, h: Tensor, edge_index: Tensor, edge_weight: Tensor,
                  attention_x: Tensor | None) -> Tensor:
        r"""``reduction="none"``: each view's term of the energy,
        :math:`c_i \log \sum_{k \ne i} e^{H_i \cdot H_k} - \sum_j W_{ij} H_i \cdot H_j`, by plain
        autograd (it keeps the ``N x N`` similarity matrix for the backward pass, as a per-sample
        cross-entropy does). Their sum is the ``"sum"`` loss, with the same gradient."""
        num_nodes = h.size(0)
        weight, anchor = edge_weight, None
        attention = self.conv.attention
        if attention is not None:  # the detached attention weights, as in the operator
            with torch.no_grad():
                edge_index, weight = attention._weights(h.detach(), edge_index, edge_weight,
                                                        attention_x=attention_x)
            weight = weight.detach()
            if attention.normalize == "positives":
                anchor = scatter(weight, edge_index[1], 0, num_nodes, reduce="sum")
        eye = torch.eye(num_nodes, dtype=torch.bool, device=h.device)
        uniformity = torch.logsumexp((h @ h.T).masked_fill(eye, -math.inf), dim=1)
        if anchor is not None:
            uniformity = anchor * uniformity
        src, dst = edge_index
        pull = weight * (h.index_select(0, dst) * h.index_select(0, src)).sum(-1)
        return uniformity - scatter(pull, dst, 0, num_nodes, reduce="sum")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.extra_repr()})"


class SimCLRLoss(_ViewContrastiveLoss):
    r"""SimCLR's NT-Xent loss, as the loss of :class:`~mp_contrastive.nn.ContrastiveConv`.

    With :math:`H = \mathrm{normalize}(Z) / \sqrt{\tau}`, the value is the contrastive energy
    :math:`\sum_i \big[-\sum_j \bar{A}_{ij} H_i \cdot H_j + \log \sum_{k \ne i} e^{H_i \cdot H_k}\big]`
    (divided by the number of views :math:`N` for ``reduction="mean"``): for two views exactly
    NT-Xent (lightly's ``NTXentLoss``), for :math:`V` views the average over the :math:`V-1`
    positives of each anchor. The gradient comes from the operator's step.

    Call as ``loss(z0, z1)`` with two ``[B, D]`` views, or ``loss(z, sample)`` with all views
    ``[N, D]`` and each row's sample id (any number of views per sample, at least two).
    Second derivatives (``create_graph=True``) are those of the plain NT-Xent.

    Multi-crop (more than two views of a sample): with :math:`s_{ik} = \cos(z_i, z_k)` and
    :math:`P(i)` the other views of anchor :math:`i`'s sample, the ``"mean"`` loss is

    .. math::
        \frac{1}{N} \sum_i \frac{1}{|P(i)|} \sum_{p \in P(i)}
        -\log \frac{e^{s_{ip}/\tau}}{\sum_{k \ne i} e^{s_{ik}/\tau}},

    SupCon's :math:`\mathcal{L}^{sup}_{out}` (Khosla et al. 2020) with sample ids for labels,
    the form pytorch-metric-learning's ``SupConLoss`` computes. solo-learn's
    ``simclr_loss_func`` (``solo/losses/simclr.py``, multi-crop through ``indexes``) puts the sum
    over positives inside the logarithm,
    :math:`\frac{1}{N} \sum_i -\log \frac{\sum_{p \in P(i)} e^{s_{ip}/\tau}}
    {\sum_{k \ne i} e^{s_{ik}/\tau}}`, which is lower by at least :math:`\log |P(i)|` (Jensen;
    equal to ours minus :math:`\log |P(i)|` only when an anchor's positives are equally similar)
    and weighs each positive's gradient by its share of the positives' exponentials instead of
    :math:`1/|P(i)|`. With two views (:math:`|P(i)| = 1`) the two are the same NT-Xent.
    ``docs/guide.md`` (Multi-crop) gives measured values.

    ``affinity_index`` ``[2, E]`` (optional) replaces the dense affinity graph by a sparse one
    among the :math:`N` views (source = negative, target = anchor, node order of
    ``torch.cat([z0, z1])``), with optional importance weights ``affinity_weight`` ``[E]``, e.g.
    from :func:`~mp_contrastive.knn.sampled_affinity_graph`: each anchor's log-sum-exp then runs
    over its edges only, so add the positive pairs to keep them in the denominator, as NT-Xent
    does. No :math:`N \times N` matrix is formed.

    Args:
        temperature (float): :math:`\tau > 0` (default ``0.5``).
        reduction (str): ``"mean"`` (over views), ``"sum"``, or ``"none"``: one loss per view,
            shape ``[N]`` (``[2B]`` for two views, ``z0``'s rows first), by plain autograd (it
            keeps the ``N x N`` similarities, as a per-sample cross-entropy does).
        tiling (Tiling): when and how large batches are processed tile by tile (default
            :data:`~mp_contrastive.nn.functional.DEFAULT_TILING`).
        memory_bank_size (int or tuple): ``K > 0`` (or lightly's ``(K, D)``): lightly's
            ``NTXentLoss(memory_bank_size=(K, D))``. Each anchor of ``z0`` is contrasted with its
            positive in ``z1`` and the bank's ``K`` entries (not with the rest of the batch), and
            when ``z0`` requires a gradient the bank is then refreshed with the normalised ``z1``
            (gathered from every rank under DDP). Once the bank is full, value and gradient are
            lightly's; the bank starts empty here (lightly's starts with random unit vectors), so
            the first call has no negatives (loss 0). The bank is a buffer: ``state_dict`` holds it.
            See :mod:`mp_contrastive.bank_loss`. Default ``0``: no bank.
        affinity (str or BankIndex): with a bank, ``"dense"`` (every entry, default) or ``"knn"``:
            a :class:`~mp_contrastive.knn.BankIndex` graph (kNN head from an index maintained as
            the bank turns over, plus an importance-sampled tail), or a configured ``BankIndex``.
    """

    def __init__(self, temperature: float = 0.5, reduction: str = "mean",
                 tiling: Tiling = DEFAULT_TILING, memory_bank_size: int | tuple[int, int] = 0,
                 affinity: str | BankIndex = "dense") -> None:
        super().__init__(ContrastiveConv(alpha=1.0, normalize=False, tiling=tiling), temperature,
                         reduction, memory_bank_size, affinity, tiling)

    def forward(self, z0: Tensor, z1_or_sample: Tensor, *, affinity_index: Tensor | None = None,
                affinity_weight: Tensor | None = None,
                sample_ids: Tensor | None = None) -> Tensor:
        """``sample_ids`` (with a memory bank only): each row's sample (e.g. dataset index); bank
        entries pushed with an anchor's own id (its keys from earlier epochs) are left out of its
        negatives. lightly has no such option: without it the values are lightly's."""
        if self.memory is not None:
            if affinity_index is not None or affinity_weight is not None:
                raise ValueError("a loss with a memory bank builds its own affinity graph "
                                 "(affinity='dense' or 'knn'): pass no affinity_index")
            return self._bank_loss(z0, z1_or_sample, sample_ids=sample_ids)
        if sample_ids is not None:
            raise ValueError("'sample_ids' names the memory bank's entries: it needs "
                             "memory_bank_size > 0")
        return self._checked_loss(*self._nodes(z0, z1_or_sample), affinity_index=affinity_index,
                                  affinity_weight=affinity_weight)

    def extra_repr(self) -> str:
        bank = "" if self.memory is None else f", memory_bank_size={self.memory.bank.size}, " \
            f"{self.memory.extra_repr()}"
        return f"temperature={self.temperature}, reduction='{self.reduction}'{bank}"


class AttentionSimCLRLoss(_ViewContrastiveLoss):
    r"""SimCLR with attention alignment (paper section 3.3.2): positive pairs are reweighted by the
    detached attention of :class:`~mp_contrastive.nn.AttentionAlignmentConv`, uniformity unchanged.

    ``normalize="negatives"`` is the paper (scores :math:`\beta H_i \cdot H_j`, normalised by the
    mean over in-batch negatives); ``normalize="positives"`` is the official code (scores
    :math:`\beta \cos(h_i, h_j)` on ``attention_features``, e.g. backbone features before the
    projector, a softmax over the batch's positive pairs scaled to mean one, and each anchor's whole
    term weighted); ``"neighbors"`` is GAT's per-node softmax. All three equal :class:`SimCLRLoss`
    at ``beta=0`` (see :class:`~mp_contrastive.nn.AttentionAlignmentConv` for why).

    Args:
        temperature (float): :math:`\tau > 0` (default ``0.5``).
        beta (float): attention sharpness :math:`\ge 0` (default ``1.0``).
        normalize (str): ``"negatives"`` (paper), ``"positives"`` (official) or ``"neighbors"``.
        score (str, optional): ``"dot"`` or ``"cosine"``; default ``"dot"`` for ``"negatives"``
            and ``"cosine"`` otherwise.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` (one loss per view, ``[N]``; see
            :class:`SimCLRLoss`).
        tiling (Tiling): as in :class:`SimCLRLoss`.
        memory_bank_size (int or tuple), affinity (str or BankIndex): a memory bank, as in
            :class:`SimCLRLoss`. Each anchor then has one positive pair: ``"neighbors"`` weighs it
            1, ``"positives"`` normalises over the batch's pairs (on this rank's batch under DDP),
            ``"negatives"`` over the bank's entries (``score="dot"`` on the projections only).
    """

    def __init__(self, temperature: float = 0.5, beta: float = 1.0, normalize: str = "negatives",
                 score: str | None = None, reduction: str = "mean",
                 tiling: Tiling = DEFAULT_TILING, memory_bank_size: int | tuple[int, int] = 0,
                 affinity: str | BankIndex = "dense") -> None:
        if score is None:
            score = "dot" if normalize == "negatives" else "cosine"
        attention = AttentionSpec(beta=beta, normalize=normalize, score=score)
        super().__init__(ContrastiveConv(alpha=1.0, normalize=False, attention=attention,
                                         tiling=tiling), temperature, reduction,
                         memory_bank_size, affinity, tiling)

    def forward(self, z0: Tensor, z1_or_sample: Tensor,
                attention_features: Tensor | tuple[Tensor, Tensor] | None = None, *,
                affinity_index: Tensor | None = None,
                affinity_weight: Tensor | None = None,
                sample_ids: Tensor | None = None) -> Tensor:
        """``attention_features``: features to compute the attention on, one row per view (or a
        pair of per-view tensors matching ``(z0, z1)``); default the normalised ``z``.
        ``affinity_index``, ``affinity_weight``: a sparse affinity graph, and ``sample_ids``: the
        rows' samples for a memory bank, as in :class:`SimCLRLoss`."""
        attention_features = self._attention_features(attention_features)
        if self.memory is not None:
            if affinity_index is not None or affinity_weight is not None:
                raise ValueError("a loss with a memory bank builds its own affinity graph "
                                 "(affinity='dense' or 'knn'): pass no affinity_index")
            if attention_features is not None:
                if attention_features.size(0) != 2 * z0.size(0):
                    raise ValueError(f"'attention_features' must have one row per view "
                                     f"({2 * z0.size(0)}), got {attention_features.size(0)}")
                attention_features = attention_features.detach().to(z0.dtype)
            return self._bank_loss(z0, z1_or_sample, attention_features, sample_ids)
        if sample_ids is not None:
            raise ValueError("'sample_ids' names the memory bank's entries: it needs "
                             "memory_bank_size > 0")
        z, edge_index, edge_weight = self._nodes(z0, z1_or_sample)
        self._attention_rows(attention_features, z)
        return self._checked_loss(z, edge_index, edge_weight, attention_features,
                                  affinity_index=affinity_index, affinity_weight=affinity_weight)

    @staticmethod
    def _attention_rows(attention_x: Tensor | None, z: Tensor) -> None:
        """Checked attention features must have one row per view of ``z``, on its device."""
        if attention_x is not None:
            if attention_x.size(0) != z.size(0):
                raise ValueError(f"'attention_features' must have one row per view "
                                 f"({z.size(0)}), got {attention_x.size(0)}")
            check_device(attention_x, "attention_features", z.device, "z0")

    @staticmethod
    def _attention_features(attention_features: object) -> Tensor | None:
        """One tensor of checked attention features (the operator below runs on trusted
        inputs), or ``None``."""
        if isinstance(attention_features, (tuple, list)):
            attention_features = torch.cat(list(attention_features))
        if attention_features is None:
            return None
        return check_features(attention_features, "attention_features")

    def extra_repr(self) -> str:
        att = self.conv.attention
        assert att is not None
        bank = "" if self.memory is None else f", memory_bank_size={self.memory.bank.size}, " \
            f"{self.memory.extra_repr()}"
        return (f"temperature={self.temperature}, beta={att.beta}, normalize='{att.normalize}', "
                f"score='{att.score}', reduction='{self.reduction}'{bank}")


def _plain_nt_xent(z: Tensor, sample: Tensor, temperature: float = 0.5,
                   reduction: str = "mean") -> Tensor:
    """A plain reference NT-Xent by autograd: normalise, one matmul, masked cross-entropy. For
    ``V`` views, each anchor averages the log-probabilities of its ``V - 1`` positives. Not part
    of the API: GRACE's ``"reference"`` variant (:mod:`mp_contrastive.gnn`) trains with it, and
    the tests and benchmarks use it as an independent implementation (one copy, here).
    ``reduction``: ``"mean"``, ``"sum"`` or ``"none"`` (one value per row)."""
    z = check_features(z, "z")
    sample = check_index_vector(sample, "sample", length=z.size(0), device=z.device, ref="z")
    temperature = check_positive(temperature, "temperature")
    check_choice(reduction, "reduction", REDUCTIONS)
    h = unit_rows(z)
    logits = h @ h.T / temperature
    logits.fill_diagonal_(-math.inf)
    positive = sample.unsqueeze(0) == sample.unsqueeze(1)
    positive.fill_diagonal_(False)
    counts = positive.sum(1)
    if bool((counts == 1).all()):
        per_row = F.cross_entropy(logits, positive.float().argmax(1), reduction="none")
    else:
        log_prob = torch.log_softmax(logits, 1)
        per_row = -(log_prob.masked_fill(~positive, 0).sum(1) / counts)
    if reduction == "none":
        return per_row
    loss = per_row.sum()
    return loss / z.size(0) if reduction == "mean" else loss
