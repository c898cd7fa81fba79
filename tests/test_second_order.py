"""Second derivatives of the operator losses, and SimCLR's per-view reduction.

The losses are built from a precomputed step; when a graph of the gradient is requested
(``create_graph=True``) they must give the second derivatives of the loss they stand for, or
raise. Hessian-vector products are compared with plain autograd in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import Tensor

from mp_contrastive.gnn.grace_loss import GraphContrastiveLoss, MultiStageAlignment
from mp_contrastive.graph import augmentation_graph, view_sample_index
from mp_contrastive.losses import (
    AttentionSimCLRLoss,
    MessagePassingLoss,
    SimCLRLoss,
    descent_loss,
)
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.nn import AlignmentConv, ContrastiveConv, UniformityConv
from mp_contrastive.nn.functional import Tiling
from tests.reference import random_graph

TOL = {"atol": 1e-6, "rtol": 1e-6}


def hvp(loss: Callable[..., Tensor], inputs: Sequence[Tensor],
        vectors: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """First gradient and Hessian-vector product of ``loss(*inputs)`` by double backward."""
    inputs = [x.detach().requires_grad_() for x in inputs]
    grads = torch.autograd.grad(loss(*inputs), inputs, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vectors, strict=True))
    return (*[g.detach() for g in grads], *torch.autograd.grad(dot, inputs))


def assert_hvp_equal(ours: Callable[..., Tensor], reference: Callable[..., Tensor],
                     inputs: Sequence[Tensor], gen: torch.Generator) -> None:
    vectors = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in inputs]
    for mine, theirs in zip(hvp(ours, inputs, vectors), hvp(reference, inputs, vectors),
                            strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)


def views(gen: torch.Generator, batch: int = 12, dim: int = 5) -> tuple[Tensor, Tensor]:
    z0, z1 = torch.randn(2, batch, dim, generator=gen, dtype=torch.float64).unbind(0)
    return z0, z1


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_simclr_hvp_equals_plain_nt_xent(gen, reduction):
    z0, z1 = views(gen)
    sample = view_sample_index(z0.size(0), 2)
    assert_hvp_equal(SimCLRLoss(0.3, reduction),
                     lambda a, b: plain_nt_xent(torch.cat([a, b]), sample, 0.3, reduction),
                     [z0, z1], gen)


def test_simclr_hvp_equals_lightly(gen):
    z0, z1 = views(gen)
    assert_hvp_equal(SimCLRLoss(0.5), NTXentLoss(0.5), [z0, z1], gen)


def test_simclr_hvp_multi_view(gen):
    z = torch.randn(15, 4, generator=gen, dtype=torch.float64)
    sample = torch.arange(5).repeat(3)
    assert_hvp_equal(lambda x: SimCLRLoss(0.5)(x, sample),
                     lambda x: plain_nt_xent(x, sample, 0.5), [z], gen)


def test_simclr_hvp_on_the_blockwise_path(gen):
    """The tiled path (large N) is differentiated through its own backward: same HVP."""
    tiling = Tiling(elements=40, threshold=64)
    assert tiling.blockwise(24, 24)
    z0, z1 = views(gen)
    sample = view_sample_index(z0.size(0), 2)
    assert_hvp_equal(SimCLRLoss(0.5, tiling=tiling),
                     lambda a, b: plain_nt_xent(torch.cat([a, b]), sample, 0.5), [z0, z1], gen)


def test_attention_at_beta_zero_has_simclr_hvp(gen):
    z0, z1 = views(gen)
    sample = view_sample_index(z0.size(0), 2)
    plain = lambda a, b: plain_nt_xent(torch.cat([a, b]), sample, 0.5)  # noqa: E731
    for normalize in ("negatives", "positives", "neighbors"):
        assert_hvp_equal(AttentionSimCLRLoss(0.5, beta=0.0, normalize=normalize), plain,
                         [z0, z1], gen)


def test_attention_hvp_treats_the_attention_as_constant(gen):
    """beta > 0: the second derivative of the loss with detached attention weights (the weights
    are loss coefficients, as in the official code)."""
    z0, z1 = views(gen)
    loss = AttentionSimCLRLoss(0.5, beta=1.0, normalize="negatives")
    graph = augmentation_graph(z0.size(0), 2, dtype=torch.float64)

    def reference(a: Tensor, b: Tensor) -> Tensor:
        h = F.normalize(torch.cat([a, b]), dim=1) / math.sqrt(0.5)
        index, weight = loss.conv.attention.weights(h.detach(), graph.edge_index,
                                                    graph.edge_weight)
        logits = (h @ h.T).masked_fill(torch.eye(h.size(0), dtype=torch.bool), -math.inf)
        src, dst = index
        pull = (weight * (h[dst] * h[src]).sum(-1)).sum()
        return (torch.logsumexp(logits, 1).sum() - pull) / h.size(0)

    assert_hvp_equal(loss, reference, [z0, z1], gen)


@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
def test_message_passing_loss_hvp_equals_energy_hessian(gen, kernel):
    n = 14
    edge_index, weight = random_graph(n, 0.3, gen)
    conv = ContrastiveConv(alpha=0.7, kernel=kernel)
    energy = lambda h: conv.energy(h, edge_index, weight)  # noqa: E731
    h = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.5
    assert_hvp_equal(lambda x: MessagePassingLoss(conv)(x, edge_index, weight), energy, [h], gen)


def test_message_passing_loss_hvp_sparse_affinity(gen):
    """A sparse affinity graph: the step under autograd takes the sparse-kernel Function, whose
    backward supplies the second derivative."""
    n = 14
    edge_index, weight = random_graph(n, 0.3, gen)
    affinity, _ = random_graph(n, 0.5, gen, weighted=False)
    conv = ContrastiveConv(alpha=1.0)
    h = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.5
    assert_hvp_equal(lambda x: MessagePassingLoss(conv)(x, edge_index, weight, affinity),
                     lambda x: conv.energy(x, edge_index, weight, affinity), [h], gen)


def test_message_passing_loss_hvp_memory_bank_pair(gen):
    bank = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    h = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    conv = UniformityConv(alpha=0.5)
    assert_hvp_equal(lambda x: MessagePassingLoss(conv)((bank, x)),
                     lambda x: conv.energy((bank, x)), [h], gen)


def test_second_order_errors_where_not_defined(gen):
    h = torch.randn(8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    graph = augmentation_graph(4, 2, dtype=torch.float64)
    loss = MessagePassingLoss(AlignmentConv(alpha=0.5, detach_targets=True))
    # First order: fine.
    assert torch.isfinite(torch.autograd.grad(loss(h, graph.edge_index), h)[0]).all()
    with pytest.raises(RuntimeError, match="detach_targets=True"):
        torch.autograd.grad(loss(h, graph.edge_index), h, create_graph=True)
    step = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="step_fn"):
        torch.autograd.grad(descent_loss(h, step, 1.0, h.sum()), h, create_graph=True)
    # Without create_graph the gradient is -step / alpha.
    torch.testing.assert_close(torch.autograd.grad(descent_loss(h, step, 0.5, h.sum()), h)[0],
                               -step / 0.5)


def test_grace_knn_hvp(gen):
    n = 10
    u, v = torch.randn(2, n, 4, generator=gen, dtype=torch.float64).unbind(0)
    loss = GraphContrastiveLoss(0.5, negatives="knn", knn_k=3, knn_samples=4, knn_index="flat")
    index, weight = loss.affinity_graph(u, v)  # fixed edges: the loss is then smooth in u, v
    graph = augmentation_graph(n, 2, dtype=torch.float64)

    def reference(a: Tensor, b: Tensor) -> Tensor:
        h = F.normalize(torch.cat([a, b]), dim=1) / math.sqrt(0.5)
        return loss.loss.conv.energy(h, graph.edge_index, graph.edge_weight, index, weight) / (2 * n)

    assert_hvp_equal(lambda a, b: loss(a, b, affinity=(index, weight)), reference, [u, v], gen)


def test_multistage_hvp_equals_plain_loss(gen):
    n = 6
    u, v = torch.randn(2, n, 4, generator=gen, dtype=torch.float64).unbind(0)
    stage = MultiStageAlignment(n, 4, tau=0.5, weight=0.5)
    stage(u + 0.3, v - 0.2, epoch=0)  # stores a first stage
    target = stage.memory.read(torch.arange(n), 1)[0].clone()
    memory = stage.memory.features.clone()

    def ours(a: Tensor, b: Tensor) -> Tensor:
        stage.memory.features.copy_(memory)  # each call writes its stage: restore the first
        return stage(a, b, epoch=1)

    def reference(a: Tensor, b: Tensor) -> Tensor:
        h = F.normalize(torch.cat([a, b]), dim=1) / math.sqrt(0.5)
        return -0.5 * ((h[:n] * target).sum() + (h[n:] * target).sum()) / (2 * n)

    assert_hvp_equal(ours, reference, [u, v], gen)


# -- reduction="none" --------------------------------------------------------------------------------
@pytest.mark.parametrize("num_views", [2, 3])
def test_simclr_per_view_losses(gen, num_views):
    batch = 7
    z = torch.randn(num_views * batch, 5, generator=gen, dtype=torch.float64)
    sample = torch.arange(batch).repeat(num_views)
    per_view = SimCLRLoss(0.4, reduction="none")(z, sample)
    assert per_view.shape == (num_views * batch,)
    torch.testing.assert_close(per_view, plain_nt_xent(z, sample, 0.4, reduction="none"), **TOL)
    torch.testing.assert_close(per_view.mean(), SimCLRLoss(0.4)(z, sample), **TOL)
    x = z.clone().requires_grad_()
    x_sum = z.clone().requires_grad_()
    SimCLRLoss(0.4, reduction="none")(x, sample).sum().backward()
    SimCLRLoss(0.4, reduction="sum")(x_sum, sample).backward()
    torch.testing.assert_close(x.grad, x_sum.grad, **TOL)


def test_simclr_per_view_two_tensors_matches_lightly(gen):
    z0, z1 = views(gen)
    per_view = SimCLRLoss(0.5, reduction="none")(z0, z1)
    assert per_view.shape == (2 * z0.size(0),)
    torch.testing.assert_close(per_view.mean(), NTXentLoss(0.5)(z0, z1), **TOL)
    logits = F.normalize(torch.cat([z0, z1]), dim=1) @ F.normalize(torch.cat([z0, z1]), dim=1).T
    logits = logits.fill_diagonal_(-math.inf) / 0.5
    b = z0.size(0)
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    torch.testing.assert_close(per_view, F.cross_entropy(logits, positive, reduction="none"),
                               **TOL)


@pytest.mark.parametrize("normalize", ["negatives", "positives", "neighbors"])
def test_attention_per_view_losses(gen, normalize):
    z0, z1 = views(gen)
    features = torch.randn(2 * z0.size(0), 6, generator=gen, dtype=torch.float64)
    kwargs = {"attention_features": features} if normalize == "positives" else {}
    make = lambda reduction: AttentionSimCLRLoss(0.5, beta=1.3, normalize=normalize,  # noqa: E731
                                                 reduction=reduction)
    per_view = make("none")(z0, z1, **kwargs)
    assert per_view.shape == (2 * z0.size(0),)
    torch.testing.assert_close(per_view.mean(), make("mean")(z0, z1, **kwargs), **TOL)
    grads = []
    for reduction in ("none", "sum"):
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        value = make(reduction)(a, b, **kwargs)
        grads.append(torch.autograd.grad(value.sum(), (a, b)))
    for mine, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)
    # beta = 0: SimCLR's per-view losses.
    torch.testing.assert_close(
        AttentionSimCLRLoss(0.5, beta=0.0, normalize=normalize, reduction="none")(z0, z1, **kwargs),
        SimCLRLoss(0.5, reduction="none")(z0, z1), **TOL)


def test_reduction_is_checked():
    with pytest.raises(ValueError, match="reduction"):
        SimCLRLoss(reduction="batchmean")
