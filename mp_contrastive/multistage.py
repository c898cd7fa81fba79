r"""Multi-stage aggregation (paper section 3.3.1): JumpingKnowledge over epochs or over layers.

A stack of stages ``[k, N, d]`` (the features of the last ``k`` epochs of each sample, or the
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
    check_features,
    check_index_vector,
    check_positive_int,
)
from mp_contrastive.distributed import gather_no_grad, rank_and_world

__all__ = ["AGGREGATIONS", "aggregate_stages", "StageAggregation", "MultiStageMemory"]

AGGREGATIONS = ("sum", "mean", "max", "decay")


def aggregate_stages(stages: Tensor, aggr: str, valid: Tensor | None = None,
                     gamma: float = 0.5) -> Tensor:
    """Aggregate ``stages`` ``[k, N, d]`` (index 0 = the most recent stage) over ``k``.

    ``valid`` ``[k, N]`` marks the stages present for each node (all by default); a node with no
    valid stage aggregates to zeros.
    """
    check_choice(aggr, "aggr", AGGREGATIONS)
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
        self.gamma = gamma

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
        self.gamma = gamma
        self.register_buffer("features", torch.zeros(num_stages, num_samples, dim, dtype=dtype))
        self.register_buffer("written", torch.full((num_stages, num_samples), -1, dtype=torch.long))

    def _check_index(self, index: Tensor) -> Tensor:
        index = check_index_vector(index, "index").to(self.written.device)
        if index.numel() and int(index.max()) >= self.num_samples:
            raise ValueError(f"'index' must lie in [0, {self.num_samples}), got maximum "
                             f"{int(index.max())}")
        return index

    @torch.no_grad()
    def read(self, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """``(aggregate [B, dim], number of valid stages [B])`` for samples ``index`` at ``epoch``:
        stage ``s`` is the feature written at epoch ``epoch - s``, ``1 <= s <= k``."""
        index = self._check_index(index)
        written = self.written[:, index]  # [k, B], -1 = never
        age = epoch - written
        valid = (written >= 0) & (age >= 1) & (age <= self.num_stages)
        # Order the ring slots by age so that stage index 0 is the most recent (s = 1).
        order = torch.argsort(torch.where(valid, age, self.num_stages + 1), dim=0)
        stages = self.features[:, index].float().gather(
            0, order.unsqueeze(-1).expand(-1, -1, self.dim))
        valid = valid.gather(0, order)
        return aggregate_stages(stages, self.aggr, valid, self.gamma), valid.sum(0)

    @torch.no_grad()
    def write(self, index: Tensor, features: Tensor, epoch: int) -> None:
        """Store ``features`` ``[B, dim]`` of samples ``index`` as their epoch-``epoch`` stage
        (over DDP, every rank's batch is written on every rank)."""
        index = self._check_index(index)
        features = check_features(features, "features")
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
