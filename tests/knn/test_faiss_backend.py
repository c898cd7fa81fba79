import pytest
import torch
from torch_geometric.nn.pool import L2KNNIndex, MIPSKNNIndex

from mp_contrastive.knn import SIMILARITY_METRICS, AffinityIndex, affinity_graph
from tests.knn.reference import brute_force, clustered

METRICS = list(SIMILARITY_METRICS)  # the kNN metrics, parametrised


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("with_queries", [False, True])
def test_faiss_and_exact_agree_with_brute_force(gen, metric, with_queries):
    x = torch.randn(300, 12, generator=gen)
    q = torch.randn(40, 12, generator=gen) if with_queries else None
    ref_index, ref_score = brute_force(x, x if q is None else q, 7, metric, same=q is None)
    for backend in ["exact", "faiss"]:
        edge_index, score = affinity_graph(x, 7, queries=q, metric=metric, backend=backend)
        assert torch.equal(edge_index, ref_index), backend
        torch.testing.assert_close(score.double(), ref_score, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", ["exact", "faiss", "ivf"])
@pytest.mark.parametrize("metric", METRICS)
def test_self_and_excluded_pairs_never_appear(gen, backend, metric):
    x = clustered(400, 16, 8, gen)
    n = x.size(0)
    # Exclude each node's 5 nearest other nodes, e.g. the other views of its sample.
    near, _ = affinity_graph(x, 5, metric=metric, backend="exact")
    kwargs = {"index": "ivf", "nlist": 8, "nprobe": 8} if backend == "ivf" else {}
    edge_index, _ = affinity_graph(x, 10, metric=metric, backend="auto" if backend == "ivf"
                                   else backend, exclude=near, **kwargs)
    assert not bool((edge_index[0] == edge_index[1]).any())
    keys = set((edge_index[1] * n + edge_index[0]).tolist())
    assert keys.isdisjoint((near[1] * n + near[0]).tolist())
    assert edge_index.size(1) == 10 * n  # over-fetching kept k per node
    if backend == "ivf":  # all cells probed: exact
        assert torch.equal(edge_index, affinity_graph(x, 10, metric=metric, backend="exact",
                                                      exclude=near)[0])


def test_ivf_is_approximate_but_close(gen):
    x = clustered(4000, 32, 20, gen)
    q = clustered(64, 32, 20, gen)
    exact, _ = affinity_graph(x, 20, queries=q, backend="exact")
    approx, _ = affinity_graph(x, 20, queries=q, index="ivf", nlist=64, nprobe=8)
    recall = len(set((exact[1] * 4000 + exact[0]).tolist())
                 & set((approx[1] * 4000 + approx[0]).tolist())) / exact.size(1)
    assert recall > 0.9
    index = AffinityIndex(x, index="ivf", nlist=64, nprobe=1)
    index.search(20, q)  # builds the index with nprobe 1 ...
    index.nprobe = 64  # ... then visits every cell: exact
    assert torch.equal(index.search(20, q)[0], exact)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_matches_pyg_knn_index(gen, metric):
    """PyG's faiss wrappers as an independent implementation (exclude_links: no self pairs)."""
    x = torch.randn(500, 16, generator=gen)
    index_cls = MIPSKNNIndex if metric == "ip" else L2KNNIndex
    pyg = index_cls(x).search(x, 8, exclude_links=torch.arange(500).repeat(2, 1))
    edge_index, score = affinity_graph(x, 8, metric=metric)
    assert torch.equal(edge_index[0].view(500, 8), pyg.index)
    torch.testing.assert_close(score.view(500, 8), pyg.score, atol=1e-4, rtol=1e-5)
