"""Gathering features across processes with gradients (torchrun / DDP).

Contrastive losses need every other sample of the global batch as a negative. ``all_gather``
alone does not pass gradients back; :func:`gather_with_grad` does, so that each rank computes the
full-batch loss and, after DDP averages the parameter gradients, the update equals that of one
process holding the whole batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_with_grad", "gather_no_grad", "rank_and_world", "setup_distributed"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherLayer(torch.autograd.Function):
    """``all_gather`` whose backward sums the incoming gradients over ranks (every rank's loss
    depends on every rank's features) and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:  # noqa: ANN001
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:  # noqa: ANN001
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over ranks (rank order), differentiably; ``x`` itself without DDP."""
    _, world = rank_and_world()
    return x if world == 1 else torch.cat(_GatherLayer.apply(x))


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` over ranks (rank order), without gradients."""
    _, world = rank_and_world()
    if world == 1:
        return x
    out = [torch.zeros_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def setup_distributed(device: str | None) -> torch.device:
    """Initialise the process group under torchrun (NCCL on GPU, gloo on CPU); return the device."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
    return torch.device(device)
