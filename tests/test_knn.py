import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.pool import L2KNNIndex, MIPSKNNIndex

import mp_contrastive.knn as knn
import mp_contrastive.nn.functional.affinity as affinity_module
from benchmarks._measure import peak_memory
from mp_contrastive.knn import AffinityIndex, affinity_graph, choose_backend, sampled_affinity_graph
from mp_contrastive.nn import ContrastiveConv, UniformityConv

METRICS = ["ip", "cos", "l2"]


def brute_force(x, q, k, metric, same, exclude=None):
    """Independent reference: the full score matrix, one stable sort per row (ties by index)."""
    if metric == "cos":
        x, q = F.normalize(x, dim=1), F.normalize(q, dim=1)
    score = torch.cdist(q.double(), x.double()).pow(2) if metric == "l2" else q.double() @ x.double().T
    rank = -score if metric == "l2" else score.clone()
    if same:
        rank.fill_diagonal_(-math.inf)
    if exclude is not None:
        rank[exclude[1], exclude[0]] = -math.inf
    order = torch.sort(rank, dim=1, descending=True, stable=True).indices[:, :k]
    keep = torch.gather(rank, 1, order) > -math.inf
    dst = torch.arange(q.size(0)).unsqueeze(1).expand_as(order)
    return torch.stack([order[keep], dst[keep]]), score.gather(1, order)[keep]


def clustered(n, d, clusters, gen, spread=0.3):
    centers = F.normalize(torch.randn(clusters, d, generator=gen), dim=1)
    label = torch.randint(0, clusters, (n,), generator=gen)
    noise = torch.randn(n, d, generator=gen) * (spread / math.sqrt(d))  # norm ~ spread
    return F.normalize(centers[label] + noise, dim=1)


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


@pytest.mark.parametrize("metric", METRICS)
def test_ties_broken_by_index_across_tiles(gen, metric, monkeypatch):
    """Sign vectors in 16 dimensions have exactly representable scores (in any summation order)
    and many exact ties; with tiny tiles the running merge must still return the brute-force
    answer (smaller index first), and faiss the same up to ties."""
    monkeypatch.setattr(knn, "TILE_COLUMNS", 7)
    monkeypatch.setattr(knn, "TILE_ELEMENTS", 40)
    x = torch.randint(0, 2, (90, 16), generator=gen).float() * 2 - 1
    exclude = torch.stack([torch.randint(0, 90, (60,), generator=gen),
                           torch.randint(0, 90, (60,), generator=gen)])
    ref_index, ref_score = brute_force(x, x, 9, metric, same=True, exclude=exclude)
    edge_index, score = affinity_graph(x, 9, metric=metric, backend="exact", exclude=exclude)
    assert torch.equal(edge_index, ref_index)
    # faiss: the same per-query score multiset; the chosen tied neighbours may differ.
    f_index, f_score = affinity_graph(x, 9, metric=metric, backend="faiss", exclude=exclude)
    assert torch.equal(f_index[1], ref_index[1])
    torch.testing.assert_close(f_score.double(), ref_score, atol=1e-4, rtol=1e-4)
    again = affinity_graph(x, 9, metric=metric, backend="exact", exclude=exclude)
    assert torch.equal(again[0], edge_index) and torch.equal(again[1], score)  # deterministic


@pytest.mark.parametrize("k", [5, 50])
def test_ties_within_one_tile(gen, k):
    """Three distinct scores among 100 candidates: torch.topk alone picks arbitrary tied entries
    here; the result must be the smaller indices."""
    x = torch.randint(0, 3, (100, 1), generator=gen).float()
    q = torch.ones(4, 1)
    ref_index, _ = brute_force(x, q, k, "ip", same=False)
    assert torch.equal(affinity_graph(x, k, queries=q, backend="exact")[0], ref_index)


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


def test_exact_search_memory_is_bounded(gen):
    """200k candidates x 512 queries would be 400 MB of scores: the tiles keep far below it."""
    x = torch.randn(200_000, 32, generator=gen)
    q = torch.randn(512, 32, generator=gen)
    index = AffinityIndex(x, backend="exact")
    peak = peak_memory(lambda: index.search(16, q))
    assert peak < 0.15 * 200_000 * 512 * 4


def test_choose_backend_rule():
    cpu = torch.device("cpu")
    assert choose_backend(65536, 512, 64, cpu) == "exact"
    assert choose_backend(65536, 8192, 64, cpu) == "faiss"
    assert choose_backend(1000, 1000, 10, cpu) == "exact"
    expected = "faiss" if knn.faiss_gpu_available() else "exact"
    assert choose_backend(65536, 512, 64, torch.device("cuda")) == expected  # no GPU needed
    assert choose_backend(65536, 512, 4096, torch.device("cuda")) == "exact"  # faiss GPU k cap


def test_bad_input(gen):
    x = torch.randn(20, 4, generator=gen)
    with pytest.raises(ValueError, match="'k' must be a positive"):
        affinity_graph(x, 0)
    with pytest.raises(TypeError, match="'k' must be an int"):
        affinity_graph(x, 2.0)
    with pytest.raises(ValueError, match="'k' must be below the number of nodes"):
        affinity_graph(x, 20)
    with pytest.raises(ValueError, match="'k' must be at most the number of candidates"):
        affinity_graph(x, 21, queries=x[:3])
    with pytest.raises(ValueError, match=r"'queries' must have shape \[num_queries, 4\]"):
        affinity_graph(x, 2, queries=torch.randn(3, 5))
    with pytest.raises(ValueError, match="'x' contains non-finite"):
        affinity_graph(torch.cat([x, torch.full((1, 4), math.nan)]), 2)
    with pytest.raises(ValueError, match="'queries' contains non-finite"):
        affinity_graph(x, 2, queries=torch.full((2, 4), math.inf))
    with pytest.raises(TypeError, match="'x' must be a floating-point"):
        affinity_graph(torch.ones(20, 4, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="'queries' must be a floating-point"):
        affinity_graph(x, 2, queries=torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="'queries' must have the candidates' dtype"):
        affinity_graph(x, 2, queries=x.double())
    with pytest.raises(ValueError, match="'metric' must be one of"):
        affinity_graph(x, 2, metric="dot")
    with pytest.raises(ValueError, match="index='ivf' is a faiss index"):
        affinity_graph(x, 2, backend="exact", index="ivf")
    with pytest.raises(ValueError, match="'exclude' is out of range"):
        affinity_graph(x, 2, exclude=torch.tensor([[0], [25]]))
    with pytest.raises(ValueError, match="'num_samples' must be a positive"):
        sampled_affinity_graph(x, 2, 0)
    with pytest.raises(ValueError, match="needs metric='ip'"):
        AffinityIndex(x, metric="cos").sample(2, 4)


# -- kNN uniformity against the dense one ---------------------------------------------------------
def test_knn_uniformity_equals_dense_at_k_n_minus_1(gen):
    h = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    edge_index, _ = affinity_graph(h, 39)
    for conv in [UniformityConv(0.3), UniformityConv(0.3, detach_targets=True),
                 UniformityConv(0.3, "spectral")]:
        torch.testing.assert_close(conv(h, edge_index), conv(h), atol=1e-10, rtol=0)
        torch.testing.assert_close(conv.energy(h, edge_index), conv.energy(h), atol=1e-10,
                                   rtol=0)


def test_knn_gradient_approaches_dense_as_k_grows(gen):
    """Captured softmax mass and gradient cosine rise with k, reaching 1 at k = N - 1."""
    h = clustered(600, 16, 6, gen).double() / math.sqrt(0.2)
    conv = UniformityConv()
    dense = conv.step(h)
    prob = torch.softmax((h @ h.T).fill_diagonal_(-math.inf), 1)
    masses, cosines = [], []
    for k in [4, 16, 64, 256, 599]:
        edge_index, _ = affinity_graph(h, k)
        masses.append(float(prob[edge_index[1], edge_index[0]].sum() / 600))
        cosines.append(float(F.cosine_similarity(conv.step(h, edge_index).flatten(),
                                                 dense.flatten(), 0)))
    assert all(b > a for a, b in zip(masses, masses[1:], strict=False))
    assert all(b > a for a, b in zip(cosines, cosines[1:], strict=False))
    assert masses[-1] == pytest.approx(1.0) and cosines[-1] == pytest.approx(1.0, abs=1e-12)
    assert cosines[0] < 0.99  # the small heads do miss something: the test can fail


@pytest.mark.parametrize("proposal", ["uniform", "cluster"])
def test_sampled_partition_function_is_unbiased(gen, proposal):
    """E[sum_k w_ik exp(h_i.h_k)] over the draws equals the full sum over the candidates."""
    bank = clustered(3000, 8, 10, gen) / math.sqrt(0.25)
    q = clustered(8, 8, 10, gen) / math.sqrt(0.25)
    index = AffinityIndex(bank, nlist=20)
    exact = torch.logsumexp(q @ bank.T, 1).exp()
    draws = []
    for seed in range(200):
        edge_index, weight = index.sample(10, 30, q, proposal=proposal,
                                          generator=torch.Generator().manual_seed(seed))
        score = (q[edge_index[1]] * bank[edge_index[0]]).sum(1)
        draws.append(torch.zeros(8).index_add_(0, edge_index[1], weight * score.exp()))
    draws = torch.stack(draws)
    # Within 4 standard errors of the mean, per query.
    assert bool(((draws.mean(0) - exact).abs() < 4 * draws.std(0) / math.sqrt(200) + 1e-3 * exact)
                .all())


def test_sampled_graph_structure(gen):
    bank = clustered(2000, 8, 10, gen)
    exclude = torch.tensor([[5, 6, 7], [0, 0, 1]])
    edge_index, weight = sampled_affinity_graph(bank, 16, 64, exclude=exclude,
                                                generator=torch.Generator().manual_seed(0))
    n = 2000
    assert bool((edge_index[1][1:] >= edge_index[1][:-1]).all())  # grouped by anchor
    assert not bool((edge_index[0] == edge_index[1]).any())
    assert set((edge_index[1] * n + edge_index[0]).tolist()).isdisjoint([5, 6, n + 7])
    assert bool((weight > 0).all()) and int((weight == 1).sum()) >= 16 * n
    head, _ = affinity_graph(bank, 16, exclude=exclude)
    tail = weight != 1
    # no tail draw repeats a head edge
    assert set((edge_index[1][tail] * n + edge_index[0][tail]).tolist()).isdisjoint(
        (head[1] * n + head[0]).tolist())


def test_sampled_gradient_close_to_dense_on_clustered_features(gen):
    """The estimator's purpose, on a bank of 16k clustered negatives at temperature 0.1: the step
    matches the dense one in direction and size, where the renormalised head alone does not."""
    bank = clustered(16384, 32, 64, gen, spread=0.6) / math.sqrt(0.1)
    q = clustered(256, 32, 64, gen, spread=0.6) / math.sqrt(0.1)
    conv = UniformityConv()
    dense = conv.step((bank, q))
    index = AffinityIndex(bank)
    head, _ = index.search(64, q)
    head_only = conv.step((bank, q), head)
    edge_index, weight = index.sample(64, 512, q, generator=torch.Generator().manual_seed(0))
    sampled = conv.step((bank, q), edge_index, weight)
    cos = F.cosine_similarity(sampled.flatten(), dense.flatten(), 0)
    assert cos > 0.99 and abs(sampled.norm() / dense.norm() - 1) < 0.05
    assert abs(head_only.norm() / dense.norm() - 1) > 0.1  # what the tail is for


# -- a ContrastiveConv GNN layer with a kNN affinity graph at PubMed size ----------------------------
def test_contrastive_gnn_layer_on_pubmed_size_graph_in_bounded_memory(gen, monkeypatch):
    """19,717 nodes x 500 features (PubMed's sizes), a random 3-block graph with PubMed's 44k
    edges: encoder -> ContrastiveConv with a k = 10 kNN affinity graph -> loss -> backward. The
    dense path must not run, and the peak stays far below one N x N float matrix (1.55 GB), which
    the dense path would need several of."""
    n, features, hidden = 19717, 500, 64
    block = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.randn(3, features, generator=gen)
    x = centers[block] + 2.0 * torch.randn(n, features, generator=gen)
    src = torch.randint(0, n, (3 * 44_338,), generator=gen)
    dst = torch.randint(0, n, (3 * 44_338,), generator=gen)
    keep = (block[src] == block[dst]) & (src != dst)  # assortative: edges within blocks
    edge_index = torch.cat([torch.stack([src[keep], dst[keep]]),
                            torch.stack([dst[keep], src[keep]])], 1)
    encoder = torch.nn.Linear(features, hidden)
    conv = ContrastiveConv(alpha=0.5)

    def dense_forbidden(*args, **kwargs):
        raise AssertionError("the dense affinity path ran")

    monkeypatch.setattr(affinity_module, "dense_uniformity", dense_forbidden)

    def layer():
        h = F.normalize(encoder(x), dim=1) / math.sqrt(0.5)
        affinity, _ = affinity_graph(h.detach(), 10, backend="exact")  # torch: measured
        out = conv(h, edge_index, affinity_index=affinity)
        out.pow(2).sum().backward()
        return affinity

    peak = peak_memory(layer)
    # O((N k + |E|) d): autograd keeps a few [E, d] gathers (about 360 MB here), where the dense
    # path would keep several N x N matrices.
    assert peak < 0.3 * n * n * 4
    assert encoder.weight.grad is not None and bool(torch.isfinite(encoder.weight.grad).all())
