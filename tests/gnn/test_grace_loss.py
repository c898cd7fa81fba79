"""GRACE's loss from the operators: dense and kNN paths against GRACE's own formula, and the
multi-stage term's gradient."""

import pytest
import torch
import torch.nn.functional as F

from mp_contrastive.gnn.grace_loss import (
    AUTO_DENSE_MAX_VIEWS,
    AffinitySchedule,
    GraphContrastiveLoss,
    MultiStageAlignment,
)


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
    assert loss.path_for(24) == "dense"


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
    assert knn.path_for(24) == "knn" and knn.affinity_graph(u, v)[0].size(1) == 48 * 47


def test_path_is_a_function_of_configuration_and_size():
    assert GraphContrastiveLoss(0.5, negatives="knn").path_for(10) == "knn"
    assert GraphContrastiveLoss(0.5, negatives="dense").path_for(10**6) == "dense"
    auto = GraphContrastiveLoss(0.5)
    assert auto.path_for(AUTO_DENSE_MAX_VIEWS // 2) == "dense"
    assert auto.path_for(AUTO_DENSE_MAX_VIEWS // 2 + 1) == "knn"


def test_knn_loss_is_a_pure_function_of_its_inputs(gen):
    """No state between calls: the same inputs give the same value and gradients, whatever was
    called before (another graph size, other views), and an explicit affinity graph is used as
    given."""
    u, v = views(gen, n=40)
    loss = GraphContrastiveLoss(0.5, negatives="knn", knn_k=4, knn_samples=8, knn_index="flat")
    first = value_and_grads(loss, u, v)
    loss(*views(gen, n=30))
    loss(*views(gen, n=40))
    for a, b in zip(first, value_and_grads(loss, u, v), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # An affinity graph of other draws: another estimate, the same each time it is passed.
    other = loss.affinity_graph(u, v, torch.Generator().manual_seed(123))
    with_other = value_and_grads(lambda a, b: loss(a, b, affinity=other), u, v)
    assert not torch.equal(with_other[0], first[0])
    for a, b in zip(with_other, value_and_grads(lambda a, b: loss(a, b, affinity=other), u, v),
                    strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_affinity_schedule_refreshes_every_k_steps(gen):
    """The loop's schedule: one search, reused for `every` steps, then a new one (new tail
    draws); a new number of nodes searches at once; the dense path gets no edges."""
    u, v = views(gen, n=40)
    loss = GraphContrastiveLoss(0.5, negatives="knn", knn_k=4, knn_samples=8, knn_index="flat")
    schedule = AffinitySchedule(loss, every=3, seed=5)
    graphs = [schedule(u, v) for _ in range(4)]
    assert graphs[0] is graphs[1] is graphs[2] and graphs[3] is not graphs[2]
    assert not torch.equal(graphs[3][1], graphs[0][1])  # the generator moved on
    # The first search is the loss's own with the same seed.
    for a, b in zip(graphs[0], loss.affinity_graph(u, v, torch.Generator().manual_seed(5)),
                    strict=True):
        assert torch.equal(a, b)
    smaller = schedule(*views(gen, n=30))
    assert smaller[0].max() < 60
    assert AffinitySchedule(GraphContrastiveLoss(0.5, negatives="dense"))(u, v) is None


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
    with pytest.raises(ValueError, match="'every'"):
        AffinitySchedule(GraphContrastiveLoss(0.5), every=0)
    knn = GraphContrastiveLoss(0.5, negatives="knn", knn_k=4, knn_samples=4, knn_index="flat")
    index, weight = knn.affinity_graph(u, v)
    with pytest.raises(ValueError, match="'affinity'"):  # the dense path takes none
        GraphContrastiveLoss(0.5, negatives="dense")(u, v, affinity=(index, weight))
    with pytest.raises(ValueError, match="'affinity\\[0\\]'"):  # edges past the 2N views
        knn(u, v, affinity=(index + 2 * u.size(0), weight))
    with pytest.raises(ValueError, match="'affinity\\[1\\]'"):
        knn(u, v, affinity=(index, weight[1:]))
    with pytest.raises(TypeError, match="'affinity'"):
        knn(u, v, affinity=index)
    with pytest.raises(ValueError, match="'v' must have the shape"):
        GraphContrastiveLoss(0.5)(u, v[:3])
    with pytest.raises(TypeError, match="'u'"):
        GraphContrastiveLoss(0.5)(u.long(), v)
