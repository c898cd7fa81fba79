import pytest
import torch
from torch_geometric.utils import is_undirected

from mp_contrastive.gnn import load_planetoid, planted_partition_graph
from mp_contrastive.gnn.data import PUBMED_SIZE


def test_cora_public_split(cora):
    assert (cora.num_nodes, cora.num_features, int(cora.y.max()) + 1) == (2708, 1433, 7)
    assert cora.edge_index.size(1) == 10556 and is_undirected(cora.edge_index)
    assert [int(m.sum()) for m in (cora.train_mask, cora.val_mask, cora.test_mask)] == [140, 500, 1000]
    assert torch.bincount(cora.y[cora.train_mask]).tolist() == [20] * 7
    assert not bool((cora.train_mask & cora.test_mask).any())
    torch.testing.assert_close(cora.x.sum(1), torch.ones(2708))  # row-normalised features


def test_raw_files_are_copied_not_written_next_to(data_root, tmp_path):
    data = load_planetoid("citeseer", data_root, cache_dir=tmp_path)
    assert data.num_nodes == 3327
    assert sorted(p.name for p in (tmp_path / "Planetoid" / "CiteSeer" / "raw").iterdir())[0] \
        == "ind.citeseer.allx"
    assert (tmp_path / "Planetoid" / "CiteSeer" / "processed").is_dir()
    # The raw folder itself is accepted as the root, too.
    again = load_planetoid("CiteSeer", data_root / "Planetoid" / "CiteSeer" / "raw",
                           cache_dir=tmp_path)
    assert torch.equal(again.edge_index, data.edge_index)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root'.*Planetoid/Cora/raw"):
        load_planetoid("Cora", tmp_path / "nowhere", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_planetoid("Cora", tmp_path / "empty", cache_dir=tmp_path / "cache")


def test_bad_name(tmp_path):
    with pytest.raises(ValueError, match="'name' must be one of"):
        load_planetoid("Reddit", tmp_path)
    with pytest.raises(TypeError, match="'name'"):
        load_planetoid(3, tmp_path)


def test_planted_partition_has_pubmed_size_and_is_deterministic():
    data = planted_partition_graph(seed=1)
    assert (data.num_nodes, data.num_features) == (19717, 500)
    assert int(data.y.max()) + 1 == 3
    assert is_undirected(data.edge_index)
    assert not bool((data.edge_index[0] == data.edge_index[1]).any())
    # ~PubMed's 88,648 directed edges (duplicates removed), and homophilous as asked
    assert 0.95 * 2 * PUBMED_SIZE["num_edges"] < data.edge_index.size(1) <= 2 * PUBMED_SIZE["num_edges"]
    same = (data.y[data.edge_index[0]] == data.y[data.edge_index[1]]).float().mean()
    assert abs(float(same) - 0.8) < 0.01
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [60, 500, 1000]
    assert not bool((data.train_mask & data.val_mask).any() | (data.val_mask & data.test_mask).any())
    again = planted_partition_graph(seed=1)
    assert torch.equal(again.x, data.x) and torch.equal(again.edge_index, data.edge_index)


def test_planted_partition_bad_input():
    with pytest.raises(ValueError, match="'num_nodes'"):
        planted_partition_graph(num_nodes=0)
    with pytest.raises(ValueError, match="'homophily'"):
        planted_partition_graph(100, 8, 2, 200, homophily=1.5)
    with pytest.raises(ValueError, match="split"):
        planted_partition_graph(100, 8, 2, 200)
