"""The optimisation loop of the linear probes on fixed features: the graph probe
(:func:`mp_contrastive.gnn.training.linear_probe`, full-batch Adam per weight decay) and the
image ``fast`` probe (:func:`mp_contrastive.vision.evaluation.linear_probe`, shuffled SGD
mini-batches with a cosine schedule) each build their head and optimiser and train it here."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fit_linear_head"]


def fit_linear_head(head: nn.Module, features: Tensor, labels: Tensor,
                    optimizer: torch.optim.Optimizer, epochs: int, *,
                    batch_size: int | None = None, generator: torch.Generator | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> nn.Module:
    """Train ``head`` on ``features`` ``[N, D]`` and ``labels`` ``[N]`` with the cross-entropy:
    ``epochs`` passes, each one full batch when ``batch_size`` is ``None``, else consecutive
    batches of ``batch_size`` from a fresh random order (``torch.randperm`` with ``generator``).
    ``optimizer`` (and ``scheduler``, when given) steps after every batch. Returns ``head``."""
    size = features.size(0)
    for _ in range(epochs):
        if batch_size is None:
            batches: list[Tensor | None] = [None]
        else:
            order = torch.randperm(size, generator=generator)
            batches = [order[start:start + batch_size] for start in range(0, size, batch_size)]
        for batch in batches:
            x, y = (features, labels) if batch is None else (features[batch], labels[batch])
            optimizer.zero_grad()
            F.cross_entropy(head(x), y).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    return head
