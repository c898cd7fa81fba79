import pytest
import torch
import torch.nn.functional as F

import mp_contrastive.nn._base as base
from benchmarks._measure import peak_memory
from mp_contrastive.gnn import planted_partition_graph
from mp_contrastive.gnn.contrastive import (
    GRACE_PRESETS,
    GRACEEncoder,
    GraphContrastiveLoss,
    MultiStageAlignment,
    train_grace,
)
from mp_contrastive.gnn.training import linear_probe


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
            # the memory reads its stages in float32
            target = torch.stack(stages[-2:]).float().mean(0).double()
            ref = -lam * (h * torch.cat([target, target])).sum() / (2 * n)
            ru, rv = torch.autograd.grad(ref, (u, v))
            torch.testing.assert_close(loss.detach(), ref.detach(), atol=1e-12, rtol=0)
            torch.testing.assert_close(gu, ru, atol=1e-12, rtol=0)
            torch.testing.assert_close(gv, rv, atol=1e-12, rtol=0)
        stages.append(0.5 * (h[:n] + h[n:]).detach())


def test_pubmed_size_step_takes_the_knn_path_with_bounded_memory(monkeypatch):
    """One GRACE step on a 19,717-node graph (39,434 views): the dense affinity graph would be a
    39,434^2 matrix (6.2 GB in float32); the kNN path never takes the dense code path and peaks far
    below one such matrix."""
    data = planted_partition_graph()

    def no_dense(*args, **kwargs):
        raise AssertionError("the dense affinity graph was used")

    monkeypatch.setattr(base, "_dense_uniformity", no_dense)
    config = GRACE_PRESETS["PubMed"].replace(hidden=16, proj_hidden=16, epochs=1, knn_k=8,
                                             knn_samples=32)
    result = {}
    peak = peak_memory(lambda: result.update(train_grace(config, data, evaluate=False)))
    assert result["path"] == "knn"
    views_ = 2 * data.num_nodes
    assert peak < 0.1 * views_ ** 2 * 4, f"peak {peak / 2**20:.0f} MiB"
    assert torch.isfinite(torch.tensor(result["losses"])).all()


def test_variants_train_on_a_small_planted_graph():
    data = planted_partition_graph(600, 32, 3, 1500, signal=1.0, num_val=100, num_test=200, seed=2)
    accuracy = {}
    for variant in ("vanilla", "attention", "multistage"):
        config = GRACE_PRESETS["Cora"].replace(hidden=32, proj_hidden=32, epochs=40, lr=5e-3,
                                               variant=variant)
        result = train_grace(config, data, seed=0)
        assert result["path"] == "dense"
        assert result["losses"][-1] < result["losses"][0]
        accuracy[variant] = result["test_acc"]
    assert min(accuracy.values()) > 70, accuracy  # chance is 33%


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
    with pytest.raises(ValueError, match="'num_layers'"):
        GRACEEncoder(8, 4, num_layers=1)
    with pytest.raises(ValueError, match="'activation'"):
        GRACEEncoder(8, 4, activation="gelu")
    data = planted_partition_graph(300, 8, 3, 600, num_val=50, num_test=50)
    with pytest.raises(ValueError, match="'variant'"):
        train_grace(GRACE_PRESETS["Cora"].replace(variant="bgrl"), data)


def test_operator_grace_trains_like_the_reference():
    """Same seed: PyG GCNConv + autograd NT-Xent (GRACE's own code path) and the operator GCN +
    operator loss start from the same weights and views and follow the same trajectory."""
    data = planted_partition_graph(300, 24, 3, 900, num_val=50, num_test=100, seed=4)
    config = GRACE_PRESETS["CiteSeer"].replace(hidden=16, proj_hidden=16, epochs=15)
    ours = train_grace(config, data, seed=1, evaluate=False)
    reference = train_grace(config.replace(variant="reference"), data, seed=1, evaluate=False)
    torch.testing.assert_close(torch.tensor(ours["losses"]), torch.tensor(reference["losses"]),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["embeddings"], reference["embeddings"], atol=1e-4, rtol=1e-4)


def test_eval_every_keeps_the_best_validation_checkpoint():
    """Probing during training leaves the trajectory as it is; the encoder returned is the one of
    the checkpoint with the best validation accuracy (ties: the earlier), and its probe is reported."""
    data = planted_partition_graph(300, 24, 3, 900, num_val=50, num_test=100, seed=4)
    config = GRACE_PRESETS["Cora"].replace(hidden=16, proj_hidden=16, epochs=12, lr=5e-3)
    plain = train_grace(config, data, seed=3, evaluate=False)
    selected = train_grace(config.replace(eval_every=5), data, seed=3)
    assert selected["losses"] == plain["losses"]
    epochs = [epoch for epoch, _, _ in selected["checkpoints"]]
    assert epochs == [5, 10, 12]
    best_val = max(val for _, val, _ in selected["checkpoints"])
    first_best = next(epoch for epoch, val, _ in selected["checkpoints"] if val == best_val)
    assert selected["best_epoch"] == first_best and selected["val_acc"] == best_val
    model = selected["model"]
    with torch.no_grad():
        torch.testing.assert_close(model(data.x, data.edge_index), selected["embeddings"])
    probe = linear_probe(selected["embeddings"], data, seed=3)
    assert probe["test_acc"] == selected["test_acc"]
    assert (first_best, best_val, probe["test_acc"]) in selected["checkpoints"]
    if first_best == 12:  # the last checkpoint: the same encoder as without selection
        torch.testing.assert_close(selected["embeddings"], plain["embeddings"])
    unprobed = train_grace(config.replace(eval_every=5), data, seed=3, evaluate=False)
    assert "test_acc" not in unprobed and unprobed["best_epoch"] == first_best


@pytest.mark.parametrize("eval_every", [0, -5, 2.5, True])
def test_eval_every_must_be_a_positive_int(eval_every):
    data = planted_partition_graph(300, 8, 3, 600, num_val=50, num_test=50)
    with pytest.raises(ValueError, match="'eval_every'"):
        train_grace(GRACE_PRESETS["Cora"].replace(epochs=1, eval_every=eval_every), data)
