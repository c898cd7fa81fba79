"""GRACE's loss from the operators: dense and kNN paths against GRACE's own formula, and the
multi-stage term's gradient."""

import pytest
import torch
import torch.nn.functional as F

from mp_contrastive.gnn.grace_loss import GraphContrastiveLoss, MultiStageAlignment


def grace_reference(u, v, tau):
    """GRACE's loss as its authors wrote it (model.py: semi_loss, loss), by autograd."""
    def semi(a, b):
        refl = torch.exp(F.normalize(a) @ F.normalize(a).T / tau)
        between = torch.exp(F.normalize(a) @ F.normalize(b).T / tau)
        return -torch.log(between.diag() / (refl.sum(1) + between.sum(1) - refl.diag()))
    return (0.5 * (semi(u, v) + semi(v, u))).mean()


def views(gen, n=24, d=6):
    u = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    v = (u.detach() + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)).requires_grad_()
    return u, v


def value_and_grads(loss_fn, u, v, *args):
    loss = loss_fn(u, v, *args)
    gu, gv = torch.autograd.grad(loss, (u, v))
    return loss.detach(), gu, gv


@pytest.mark.parametrize("tau", [0.4, 0.9])
def test_dense_loss_is_grace(gen, tau):
    u, v = views(gen)
    loss = GraphContrastiveLoss(tau, negatives="dense")
    for ours, ref in zip(value_and_grads(loss, u, v), value_and_grads(
            lambda a, b: grace_reference(a, b, tau), u, v), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    assert loss.last_path == "dense"


@pytest.mark.parametrize("attention", [None, "positives", "negatives"])
def test_knn_path_with_every_node_is_the_dense_loss(gen, attention):
    """k covering all 2N - 2 candidates (all but the node and its positive) plus the positive edge:
    the sparse graph is the dense one, so value and gradients agree exactly."""
    u, v = views(gen)
    features = (torch.randn(24, 5, generator=gen, dtype=torch.float64),
                torch.randn(24, 5, generator=gen, dtype=torch.float64))
    args = (features,) if attention == "positives" else ()
    dense = GraphContrastiveLoss(0.5, attention, beta=0.7, negatives="dense")
    knn = GraphContrastiveLoss(0.5, attention, beta=0.7, negatives="knn", knn_k=46, knn_samples=4,
                               knn_index="flat")
    for ours, ref in zip(value_and_grads(knn, u, v, *args), value_and_grads(dense, u, v, *args),
                         strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-8)
    assert knn.last_path == "knn" and knn.last_affinity_edges == 48 * 47


def test_sampled_knn_loss_estimates_the_dense_loss(gen):
    """A small head plus uniform importance-weighted draws: close to the dense value and gradient."""
    u = torch.randn(300, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    v = (u.detach() + 0.3 * torch.randn(300, 8, generator=gen, dtype=torch.float64)).requires_grad_()
    dense = value_and_grads(GraphContrastiveLoss(0.5, negatives="dense"), u, v)
    knn = value_and_grads(GraphContrastiveLoss(0.5, negatives="knn", knn_k=32, knn_samples=256,
                                               knn_index="flat"), u, v)
    assert abs(float(knn[0] - dense[0])) < 0.01 * float(dense[0])
    for ours, ref in zip(knn[1:], dense[1:], strict=True):
        assert float(F.cosine_similarity(ours.flatten(), ref.flatten(), dim=0)) > 0.98


def test_multistage_alignment_gradient(gen):
    """No stored epoch: no term. Then the gradient is that of -lambda/(2N) sum h . sg(mean of the
    stored epochs), through the normalisation (the operator's extra radial term vanishes)."""
    tau, lam, n = 0.5, 0.7, 10
    ms = MultiStageAlignment(n, 4, tau, num_stages=2, weight=lam).double()
    stages = []
    for epoch in (1, 2, 3):
        u, v = views(gen, n, 4)
        loss = ms(u, v, epoch)
        gu, gv = torch.autograd.grad(loss, (u, v))
        h = F.normalize(torch.cat([u, v]), dim=1) / tau ** 0.5
        if epoch == 1:
            assert float(loss.detach()) == 0 and float(gu.abs().sum() + gv.abs().sum()) == 0
        else:
            # a float64 memory (.double()) reads its stages in float64: no float32 round trip
            target = torch.stack(stages[-2:]).mean(0)
            ref = -lam * (h * torch.cat([target, target])).sum() / (2 * n)
            ru, rv = torch.autograd.grad(ref, (u, v))
            torch.testing.assert_close(loss.detach(), ref.detach(), atol=1e-12, rtol=0)
            torch.testing.assert_close(gu, ru, atol=1e-12, rtol=0)
            torch.testing.assert_close(gv, rv, atol=1e-12, rtol=0)
        stages.append(0.5 * (h[:n] + h[n:]).detach())


def test_bad_input(gen):
    u, v = views(gen)
    with pytest.raises(ValueError, match="'tau'"):
        GraphContrastiveLoss(0.0)
    with pytest.raises(ValueError, match="'negatives'"):
        GraphContrastiveLoss(0.5, negatives="all")
    with pytest.raises(ValueError, match="'attention'"):
        GraphContrastiveLoss(0.5, attention="gat")
    with pytest.raises(ValueError, match="'knn_k'"):
        GraphContrastiveLoss(0.5, knn_k=0)
    with pytest.raises(ValueError, match="'v' must have the shape"):
        GraphContrastiveLoss(0.5)(u, v[:3])
    with pytest.raises(TypeError, match="'u'"):
        GraphContrastiveLoss(0.5)(u.long(), v)
