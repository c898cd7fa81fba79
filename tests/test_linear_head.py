"""The one optimisation loop of the linear probes (graph and image): full batch or shuffled
mini-batches, the optimiser and the schedule stepped after every batch."""

import torch
import torch.nn.functional as F
from torch import nn

from mp_contrastive._linear_head import fit_linear_head


def _data():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (40,), generator=gen)
    x = torch.randn(40, 5, generator=gen) + 2 * F.one_hot(y, 5).float()
    return x, y


def _head(seed):
    torch.manual_seed(seed)
    return nn.Linear(5, 3)


def test_full_batch_is_the_plain_loop():
    x, y = _data()
    head, reference = _head(1), _head(1)
    fit_linear_head(head, x, y, torch.optim.Adam(head.parameters(), lr=0.05), 20)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.05)
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        optimizer.step()
    assert torch.equal(head.weight, reference.weight) and torch.equal(head.bias, reference.bias)


def test_mini_batches_follow_the_generator_and_step_the_schedule():
    x, y = _data()
    heads = []
    for _ in range(2):
        head = _head(2)
        optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 3 * 3)
        out = fit_linear_head(head, x, y, optimizer, 3, batch_size=16,
                              generator=torch.Generator().manual_seed(5), scheduler=scheduler)
        assert out is head and scheduler.last_epoch == 3 * 3  # 3 batches (16, 16, 8) per epoch
        heads.append(head)
    assert torch.equal(heads[0].weight, heads[1].weight)
    assert (heads[0](x).argmax(1) == y).float().mean() > 0.8
