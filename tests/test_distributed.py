"""Two gloo processes compute the same loss and gradients as one process with the whole batch,
and a multi-stage memory receives every rank's writes."""

import pytest
import torch
from torch import nn

from mp_contrastive.distributed import gather_no_grad, gather_with_grad, rank_and_world
from mp_contrastive.memory import MultiStageMemory
from mp_contrastive.vision.methods import SimCLRMethod
from tests.process_group import run_on_ranks

BATCH, VIEWS, WORLD = 8, 2, 2


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.Tanh()).double()
        self.projector = nn.Linear(16, 8).double()

    def forward(self, x):
        h = self.backbone(x)
        return self.projector(h), h


def batch_views():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 6, generator=g, dtype=torch.float64) for _ in range(VIEWS)]


def loss_and_grads(method, views, index=None):
    method.zero_grad()
    loss = method(views, torch.arange(views[0].size(0)) if index is None else index).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in method.parameters()]


def worker(rank, attention):
    method = SimCLRMethod(TinyModel(), temperature=0.3, attention=attention)
    ddp = nn.parallel.DistributedDataParallel(method)
    local = BATCH // WORLD
    views = [v[rank * local:(rank + 1) * local] for v in batch_views()]
    loss, grads = loss_and_grads(ddp, views)
    # Also: the gathers return every rank's rows in rank order.
    gathered = gather_no_grad(torch.full((2,), float(rank)))
    assert gathered.tolist() == [0.0, 0.0, 1.0, 1.0] and rank_and_world() == (rank, WORLD)
    # And a multi-stage memory holds every rank's writes on every rank.
    memory = MultiStageMemory(num_samples=6, dim=2, num_stages=1)
    memory.write(torch.arange(3) + 3 * rank, torch.full((3, 2), float(rank + 1)), epoch=0)
    return (loss, grads, memory.read(torch.arange(6), epoch=1))


@pytest.mark.parametrize("attention", ["off", "paper", "official"])
def test_ddp_equals_single_process(tmp_path, attention):
    expected_loss, expected_grads = loss_and_grads(
        SimCLRMethod(TinyModel(), temperature=0.3, attention=attention), batch_views())
    results = run_on_ranks(worker, tmp_path, attention, world=WORLD)
    for rank in range(WORLD):
        loss, grads, (aggregate, count) = results[rank]
        torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=0)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        expected_memory = torch.tensor([[1.0, 1.0]] * 3 + [[2.0, 2.0]] * 3, dtype=aggregate.dtype)
        torch.testing.assert_close(aggregate, expected_memory)
        assert count.tolist() == [1] * 6


def test_single_process_gather_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x and gather_no_grad(x) is x



BANK_STEPS = 4


def bank_steps(method, views_per_step, index):
    """Loss and parameter gradients of each step (the bank fills up along the way; the samples
    recur every two steps, so the bank holds each anchor's own earlier keys, left out)."""
    return [loss_and_grads(method, views, index) for views in views_per_step]


def bank_views():
    g = torch.Generator().manual_seed(2)
    return [[torch.randn(BATCH, 6, generator=g, dtype=torch.float64) for _ in range(VIEWS)]
            for _ in range(BANK_STEPS)]


def bank_worker(rank):
    method = SimCLRMethod(TinyModel(), temperature=0.3, memory_bank_size=2 * BATCH)
    ddp = nn.parallel.DistributedDataParallel(method)
    local = BATCH // WORLD
    rows = slice(rank * local, (rank + 1) * local)
    steps = bank_steps(ddp, [[v[rows] for v in views] for views in bank_views()],
                       torch.arange(BATCH)[rows] % (BATCH // 2))
    return (steps, method.loss.memory.bank.oldest_first())


def test_ddp_with_a_memory_bank_equals_single_process(tmp_path):
    """Each rank contrasts its own anchors against a bank that receives every rank's keys: after
    DDP averages the gradients, every step equals one process holding the global batch."""
    single = SimCLRMethod(TinyModel(), temperature=0.3, memory_bank_size=2 * BATCH)
    expected = bank_steps(single, bank_views(), torch.arange(BATCH) % (BATCH // 2))
    results = run_on_ranks(bank_worker, tmp_path, world=WORLD)
    for step, (want_loss, want_grads) in enumerate(expected):
        # The global batch's loss is the mean of the ranks' (equal-sized) local losses.
        losses = [results[rank][0][step][0] for rank in range(WORLD)]
        torch.testing.assert_close(sum(losses) / WORLD, want_loss, atol=1e-10, rtol=0)
        for rank in range(WORLD):
            for got, want in zip(results[rank][0][step][1], want_grads, strict=True):
                torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    for rank in range(WORLD):
        torch.testing.assert_close(results[rank][1], single.loss.memory.bank.oldest_first())
