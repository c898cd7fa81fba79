"""Self-supervised methods as modules: ``method(views, index) -> loss``.

A method owns its model and computes the loss of one batch of augmented views; the trainer does
the rest. Across processes, features are gathered with gradients so that every rank computes the
loss of the global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_contrastive.distributed import gather_with_grad
from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss

__all__ = ["SimCLRMethod", "ATTENTION_MODES", "gathered_sample_ids"]

ATTENTION_MODES = ("off", "paper", "official")


class SimCLRMethod(nn.Module):
    """SimCLR, optionally with attention alignment.

    ``attention="off"``: :class:`~mp_contrastive.losses.SimCLRLoss`. ``"paper"``: attention on the
    projections, normalised over in-batch negatives, sharpness ``beta`` (paper eq. 15).
    ``"official"``: attention ``exp(beta cos(h_i, h_j))`` on backbone features ``h`` (before the
    projector), softmax over the batch's positive pairs, each anchor's whole term weighted, as in
    the official code. The model returns ``(z, h)``.
    """

    def __init__(self, model: nn.Module, temperature: float = 0.5, attention: str = "off",
                 beta: float = 1.0) -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"'attention' must be one of {ATTENTION_MODES}, got {attention!r}")
        self.model = model
        self.attention = attention
        if attention == "off":
            self.loss = SimCLRLoss(temperature)
        elif attention == "paper":
            self.loss = AttentionSimCLRLoss(temperature, beta, normalize="negatives")
        else:
            self.loss = AttentionSimCLRLoss(temperature, beta, normalize="positives",
                                            kernel="cosine")

    def forward(self, views: list[Tensor], index: Tensor) -> Tensor:
        z, h = self.model(torch.cat(views))
        z = gather_with_grad(_full_precision(z))
        sample = gathered_sample_ids(views[0].size(0), len(views), z.size(0), z.device)
        if self.attention == "official":
            features = gather_with_grad(_full_precision(h)).detach()
            return self.loss(z, sample, attention_features=features)
        return self.loss(z, sample)


def _full_precision(x: Tensor) -> Tensor:
    """The loss runs in float32 (or float64) even under bf16 autocast."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gathered_sample_ids(local: int, num_views: int, num_nodes: int,
                        device: torch.device) -> Tensor:
    """Sample ids of gathered nodes, ordered rank by rank and, within a rank, view by view:
    rank ``r``'s ``b``-th sample is ``r * local + b``."""
    world = num_nodes // (local * num_views)
    ids = torch.arange(world * local, device=device).view(world, 1, local)
    return ids.expand(world, num_views, local).reshape(-1)
