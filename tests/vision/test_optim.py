import math

import pytest
import torch
from torch import nn

from mp_contrastive.vision.optim import LARS, build_optimizer, lars_param_groups, warmup_cosine


def test_lars_matches_formula_on_hand_made_case():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "exclude": False},
                {"params": [b], "weight_decay": 0.0, "exclude": True}],
               lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    w.grad = torch.tensor([0.6, 0.8])
    b.grad = torch.tensor([2.0])
    opt.step()
    g = torch.tensor([0.6, 0.8]) + 0.1 * torch.tensor([3.0, 4.0])  # decay: (0.9, 1.2), norm 1.5
    trust = 0.01 * 5.0 / 1.5
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * g)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))  # plain SGD step
    # Second step: momentum buffer v = 0.9 v + g'.
    w_before = w.detach().clone()
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    g2 = torch.tensor([0.6, 0.8]) + 0.1 * w_before
    v = 0.9 * trust * g + (0.01 * w_before.norm() / g2.norm()) * g2
    torch.testing.assert_close(w.detach(), w_before - 0.5 * v)


def test_lars_zero_norms_fall_back_to_unit_trust():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=1.0, weight_decay=0.0)
    w.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(w.detach(), -torch.ones(3))


def test_param_groups_exclude_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    regular, excluded = lars_param_groups(model, 1e-6)
    assert {id(p) for p in regular["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in excluded["params"]} == {id(model[0].bias), id(model[1].weight),
                                                  id(model[1].bias), id(model[3].bias)}
    assert excluded["exclude"] and excluded["weight_decay"] == 0.0


def test_schedule_values():
    assert warmup_cosine(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(100, 100, 10, 1.0, final_lr=0.01) == pytest.approx(0.01)
    assert warmup_cosine(32, 100, 0, 2.0) == pytest.approx(1.0 + math.cos(math.pi * 0.32))


def test_build_optimizer():
    model = nn.Linear(3, 2)
    assert isinstance(build_optimizer("lars", model, 1.0, 1e-6), LARS)
    assert isinstance(build_optimizer("sgd", model, 1.0, 1e-6), torch.optim.SGD)
    assert isinstance(build_optimizer("adamw", model, 1.0, 1e-6), torch.optim.AdamW)
    with pytest.raises(ValueError, match="'optimizer' must be one of"):
        build_optimizer("adam", model, 1.0, 0.0)
