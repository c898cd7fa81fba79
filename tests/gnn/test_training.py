import pytest
import torch
from torch_geometric.data import Data

from mp_contrastive.experiments.presets import SUPERVISED_PRESETS
from mp_contrastive.gnn import linear_probe, train_node_classifier


def test_operator_gcn_learns_cora(cora):
    """A short training (100 epochs, Kipf & Welling's protocol otherwise) of the GCN built from
    AlignmentConv reaches GCN-level accuracy on Cora's public split."""
    result = train_node_classifier(SUPERVISED_PRESETS["gcn"].replace(epochs=100), cora, seed=0)
    assert result["test_acc"] >= 75.0, result
    assert result["val_acc"] >= 75.0, result


def test_training_is_deterministic(cora):
    config = SUPERVISED_PRESETS["attention"].replace(epochs=3, heads=2)
    first, second = (train_node_classifier(config, cora, seed=4) for _ in range(2))
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def split_data(x, y):
    n = y.numel()
    masks = torch.zeros(3, n, dtype=torch.bool)
    masks[torch.arange(n) % 3, torch.arange(n)] = True
    return Data(x=x, y=y, edge_index=torch.zeros(2, 0, dtype=torch.long), train_mask=masks[0],
                val_mask=masks[1], test_mask=masks[2])


def test_linear_probe_separable_and_random_features(gen):
    y = torch.randint(0, 4, (300,), generator=gen)
    separable = torch.nn.functional.one_hot(y, 4).float() + 0.1 * torch.randn(300, 4, generator=gen)
    data = split_data(separable, y)
    assert linear_probe(separable, data)["test_acc"] == 100.0
    noise = torch.randn(300, 16, generator=gen)
    assert linear_probe(noise, data)["test_acc"] < 45.0  # chance is 25%
    chosen = linear_probe(separable, data, weight_decays=(1e-3,))
    assert chosen["weight_decay"] == 1e-3


def test_bad_input(cora, gen):
    with pytest.raises(ValueError, match="'embeddings' must have one row per node"):
        linear_probe(torch.randn(5, 3), cora)
    with pytest.raises(ValueError, match="'data' must have 'train_mask'"):
        linear_probe(torch.randn(4, 3), Data(x=torch.randn(4, 3), y=torch.zeros(4, dtype=torch.long),
                                            edge_index=torch.zeros(2, 0, dtype=torch.long)))
    with pytest.raises(ValueError, match="'lr'"):
        train_node_classifier(SUPERVISED_PRESETS["gcn"].replace(lr=0.0), cora)
    with pytest.raises(ValueError, match="'decay'"):
        train_node_classifier(SUPERVISED_PRESETS["gcn"].replace(decay="last"), cora)
