"""GRACE-style training: the kNN path at PubMed's size, the variants, the reference code path and
model selection by validation accuracy."""

import pytest
import torch

import mp_contrastive.nn.functional._affinity as affinity_module
from benchmarks._measure import peak_memory
from mp_contrastive.experiments.presets import GRACE_PRESETS
from mp_contrastive.gnn import planted_partition_graph, train_grace
from mp_contrastive.gnn.training import linear_probe


def test_pubmed_size_step_takes_the_knn_path_with_bounded_memory(monkeypatch):
    """One GRACE step on a 19,717-node graph (39,434 views): the dense affinity graph would be a
    39,434^2 matrix (6.2 GB in float32); the kNN path never takes the dense code path and peaks far
    below one such matrix."""
    data = planted_partition_graph()

    def no_dense(*args, **kwargs):
        raise AssertionError("the dense affinity graph was used")

    monkeypatch.setattr(affinity_module, "dense_uniformity", no_dense)
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


@pytest.mark.parametrize(("eval_every", "error"), [(0, ValueError), (-5, ValueError),
                                                   (2.5, TypeError), (True, TypeError)])
def test_eval_every_must_be_a_positive_int(eval_every, error):
    data = planted_partition_graph(300, 8, 3, 600, num_val=50, num_test=50)
    with pytest.raises(error, match="'eval_every'"):
        train_grace(GRACE_PRESETS["Cora"].replace(epochs=1, eval_every=eval_every), data)


def test_unknown_variant():
    data = planted_partition_graph(300, 8, 3, 600, num_val=50, num_test=50)
    with pytest.raises(ValueError, match="'variant'"):
        train_grace(GRACE_PRESETS["Cora"].replace(variant="bgrl"), data)
