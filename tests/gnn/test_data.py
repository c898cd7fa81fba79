import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import is_undirected

from mp_contrastive.gnn import load_planetoid, planted_partition_graph
from mp_contrastive.gnn.data import PUBMED_SIZE, load_graph


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


def fake_graph(num_nodes=400, wikics=False):
    """A graph of the form PyG's Amazon / Coauthor (no split) or WikiCS (20 splits) give."""
    g = torch.Generator().manual_seed(0)
    data = Data(x=torch.rand(num_nodes, 12, generator=g) * 3,
                edge_index=torch.randint(0, num_nodes, (2, 4 * num_nodes), generator=g),
                y=torch.randint(0, 4, (num_nodes,), generator=g))
    if wikics:
        data.train_mask = torch.rand(num_nodes, 20, generator=g) < 0.05
        data.val_mask = torch.rand(num_nodes, 20, generator=g) < 0.15
        data.test_mask = torch.rand(num_nodes, generator=g) < 0.5
    return data


class FakeDataset:
    """Stands in for a PyG dataset class: records its arguments, returns ``fake_graph``."""
    calls = []

    def __init__(self, root, name=None, transform=None, is_undirected=None):
        FakeDataset.calls.append((root, name))
        data = fake_graph(wikics=name is None)
        self.data = transform(data) if transform is not None else data

    def __getitem__(self, index):
        return self.data


@pytest.mark.parametrize("name,family,short", [("Amazon-Computers", "Amazon", "Computers"),
                                               ("Coauthor-CS", "Coauthor", "CS")])
def test_graphs_without_a_split_get_grace_random_split(name, family, short, tmp_path,
                                                      monkeypatch):
    import torch_geometric.datasets as datasets

    monkeypatch.setattr(datasets, family, FakeDataset)
    (tmp_path / family / short).mkdir(parents=True)
    data = load_graph(name, cache_dir=tmp_path, seed=1)
    assert FakeDataset.calls[-1] == (str(tmp_path / family), short)
    sizes = [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)]
    assert sizes == [40, 40, 320]  # 10% / 10% / 80%
    assert not bool((data.train_mask & data.test_mask).any())
    torch.testing.assert_close(data.x.sum(1), torch.ones(400))  # NormalizeFeatures
    assert torch.equal(load_graph(name, cache_dir=tmp_path, seed=1).train_mask, data.train_mask)
    assert not torch.equal(load_graph(name, cache_dir=tmp_path, seed=2).train_mask,
                           data.train_mask)


def test_wikics_takes_one_of_its_twenty_splits(tmp_path, monkeypatch):
    import torch_geometric.datasets as datasets

    monkeypatch.setattr(datasets, "WikiCS", FakeDataset)
    (tmp_path / "WikiCS" / "WikiCS").mkdir(parents=True)
    data = load_graph("WikiCS", cache_dir=tmp_path, seed=23)
    expected = fake_graph(wikics=True)
    assert torch.equal(data.train_mask, expected.train_mask[:, 3])  # 23 % 20
    assert torch.equal(data.val_mask, expected.val_mask[:, 3])
    assert data.test_mask.dim() == 1


def test_download_errors_are_clear(tmp_path, monkeypatch):
    import urllib.error

    import torch_geometric.datasets as datasets

    with pytest.raises(FileNotFoundError, match="download"):
        load_graph("Coauthor-Physics", cache_dir=tmp_path)

    class Offline:
        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets, "Amazon", Offline)
    with pytest.raises(OSError, match="offline"):
        load_graph("Amazon-Photo", cache_dir=tmp_path, download=True)
    with pytest.raises(ValueError, match="name"):
        load_graph("Reddit", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="SBM"):
        load_graph("SBM-12", cache_dir=tmp_path)


def test_ogbn_arxiv_needs_ogb(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ogb(name, *args, **kwargs):
        if name.startswith("ogb"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ogb)
    with pytest.raises(ImportError, match="pip install ogb"):
        load_graph("ogbn-arxiv", cache_dir=tmp_path, download=True)


def test_sbm_by_size_is_the_planted_partition_graph():
    data = load_graph("SBM-3000", seed=2)
    expected = planted_partition_graph(3000, PUBMED_SIZE["num_features"], 3, 15000, seed=2)
    assert torch.equal(data.edge_index, expected.edge_index) and torch.equal(data.x, expected.x)
    assert data.num_edges / data.num_nodes > 9  # average degree about 10


def test_cora_through_load_graph(cora, data_root, tmp_path):
    data = load_graph("cora", data_root, cache_dir=tmp_path)
    assert torch.equal(data.edge_index, cora.edge_index) and torch.equal(data.x, cora.x)
