"""LARS, the parameter split it needs, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["LARS", "lars_param_groups", "warmup_cosine", "build_optimizer"]


class LARS(torch.optim.Optimizer):
    r"""Layer-wise adaptive rate scaling (You et al., 2017) as in SimCLR and the official code:

    .. math::
        g \leftarrow \nabla + \lambda w, \qquad
        g \leftarrow \eta \frac{\|w\|}{\|g\|} g \ \ (\text{if } \|w\|, \|g\| > 0), \qquad
        v \leftarrow \mu v + g, \qquad w \leftarrow w - \mathrm{lr}\, v,

    where groups with ``exclude=True`` (batch-norm parameters and biases) skip both the weight
    decay and the adaptation (they take plain SGD-momentum steps).

    Args:
        params: parameters or groups (see :func:`lars_param_groups`).
        lr (float): learning rate.
        momentum (float): :math:`\mu` (default 0.9).
        weight_decay (float): :math:`\lambda` (default 1e-6).
        trust_coefficient (float): :math:`\eta` (default 0.001).
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9,
                 weight_decay: float = 1e-6, trust_coefficient: float = 0.001) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr >= 0, momentum >= 0, weight_decay >= 0 and "
                             "trust_coefficient > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch.optim signature
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["exclude"]:
                    if group["weight_decay"] != 0:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    param_norm, grad_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where((param_norm > 0) & (grad_norm > 0),
                                        group["trust_coefficient"] * param_norm / grad_norm,
                                        torch.ones_like(param_norm))
                    grad = grad * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decay + adaptation) and biases / norm parameters (neither)."""
    regular: list[Tensor] = []
    excluded: list[Tensor] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm,
                                          nn.LayerNorm))
            (excluded if is_norm or name == "bias" else regular).append(param)
    return [{"params": regular, "weight_decay": weight_decay, "exclude": False},
            {"params": excluded, "weight_decay": 0.0, "exclude": True}]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``lars`` (BN and biases excluded), ``sgd`` (momentum) or ``adamw``. A model with a
    ``param_groups()`` method supplies its own groups for SGD/AdamW (e.g. a ``static_lr`` group
    that the trainer's schedule leaves alone)."""
    if name == "lars":
        return LARS(lars_param_groups(model, weight_decay), lr=lr, momentum=momentum,
                    weight_decay=weight_decay)
    groups = getattr(model, "param_groups", None)
    params = groups() if callable(groups) else [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"'optimizer' must be one of ('lars', 'sgd', 'adamw'), got {name!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                  final_lr: float = 0.0) -> float:
    r"""Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``final_lr``:

    .. math::
        \mathrm{lr}(t) = \mathrm{base}\,\tfrac{t+1}{T_w} \ (t < T_w), \qquad
        \mathrm{final} + \tfrac{1}{2}(\mathrm{base} - \mathrm{final})
        \big(1 + \cos(\pi \tfrac{t - T_w}{T - T_w})\big) \ (t \ge T_w).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * progress))
