import pytest
import torch

from benchmarks._measure import peak_memory
from mp_contrastive.knn import SIMILARITY_METRICS, AffinityIndex, affinity_graph
from mp_contrastive.knn._exact import TILE_COLUMNS, contains, sort_by_key_then_index
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling
from tests.knn.reference import brute_force

METRICS = list(SIMILARITY_METRICS)  # the kNN metrics, parametrised


@pytest.mark.parametrize("metric", METRICS)
def test_ties_broken_by_index_across_tiles(gen, metric):
    """Sign vectors in 16 dimensions have exactly representable scores (in any summation order)
    and many exact ties; with tiny tiles the running merge must still return the brute-force
    answer (smaller index first), and faiss the same up to ties."""
    tiling = Tiling(elements=40)
    x = torch.randint(0, 2, (90, 16), generator=gen).float() * 2 - 1
    exclude = torch.stack([torch.randint(0, 90, (60,), generator=gen),
                           torch.randint(0, 90, (60,), generator=gen)])
    ref_index, ref_score = brute_force(x, x, 9, metric, same=True, exclude=exclude)
    edge_index, score = affinity_graph(x, 9, metric=metric, backend="exact", exclude=exclude,
                                       tiling=tiling)
    assert torch.equal(edge_index, ref_index)
    # faiss: the same per-query score multiset; the chosen tied neighbours may differ.
    f_index, f_score = affinity_graph(x, 9, metric=metric, backend="faiss", exclude=exclude)
    assert torch.equal(f_index[1], ref_index[1])
    torch.testing.assert_close(f_score.double(), ref_score, atol=1e-4, rtol=1e-4)
    again = affinity_graph(x, 9, metric=metric, backend="exact", exclude=exclude, tiling=tiling)
    assert torch.equal(again[0], edge_index) and torch.equal(again[1], score)  # deterministic


# Integer features make every ip/l2 score exact; not cos, whose normalised ties then differ by
# rounding and may swap.
@pytest.mark.parametrize("data,metric", [("gaussian", m) for m in METRICS]
                         + [("integer", "ip"), ("integer", "l2")])
@pytest.mark.parametrize("with_queries", [False, True])
@pytest.mark.parametrize("elements", [40, 200])
def test_tiling_does_not_change_results(gen, metric, with_queries, elements, data):
    """Tiles of one row of 40 columns, or of two whole rows, give the default's (one tile) edges,
    exclusions included, and its scores: bit for bit where every dot product is exact (integer
    features), else up to the rounding of BLAS's shape-dependent summation order."""
    def features(n):
        if data == "integer":
            return torch.randint(-3, 4, (n, 12), generator=gen).float()
        return torch.randn(n, 12, generator=gen)

    x = features(90)
    q = features(30) if with_queries else None
    exclude = torch.stack([torch.randint(0, 90, (50,), generator=gen),
                           torch.randint(0, 30, (50,), generator=gen)])
    kwargs = {"queries": q, "metric": metric, "backend": "exact", "exclude": exclude}
    small = Tiling(elements=elements)
    assert small.shape(30, 90, min_cols=7, max_cols=TILE_COLUMNS)[0] < 30  # several row tiles
    edge_index, score = affinity_graph(x, 7, tiling=small, **kwargs)
    ref_index, ref_score = affinity_graph(x, 7, tiling=DEFAULT_TILING, **kwargs)
    assert torch.equal(edge_index, ref_index)
    if data == "integer":
        assert torch.equal(score, ref_score)
    else:
        torch.testing.assert_close(score, ref_score, atol=1e-5, rtol=1e-6)


def test_tile_shape_of_the_default():
    """The shape the exact search asks for reproduces the former rule
    ``cols = min(N, max(k, TILE_COLUMNS)); rows = max(1, min(Q, elements // cols))``."""
    for num_queries, n, k in [(512, 200_000, 16), (19_717, 19_717, 10), (3, 20, 2),
                              (100, 50_000, 10_000)]:
        cols = min(n, max(k, TILE_COLUMNS))
        rows = max(1, min(num_queries, DEFAULT_TILING.elements // cols))
        assert DEFAULT_TILING.shape(num_queries, n, min_cols=k, max_cols=TILE_COLUMNS) == (rows, cols)


@pytest.mark.parametrize("k", [5, 50])
def test_ties_within_one_tile(gen, k):
    """Three distinct scores among 100 candidates: torch.topk alone picks arbitrary tied entries
    here; the result must be the smaller indices."""
    x = torch.randint(0, 3, (100, 1), generator=gen).float()
    q = torch.ones(4, 1)
    ref_index, _ = brute_force(x, q, k, "ip", same=False)
    assert torch.equal(affinity_graph(x, k, queries=q, backend="exact")[0], ref_index)


def test_helpers():
    assert contains(torch.tensor([5, 1, 3]), torch.tensor([[1, 2], [3, 6]])).tolist() == \
        [[True, False], [True, False]]
    assert not contains(torch.tensor([], dtype=torch.long), torch.tensor([1, 2])).any()
    key, index = sort_by_key_then_index(torch.tensor([[1.0, 2.0, 2.0, 1.0]]),
                                        torch.tensor([[3, 7, 4, 0]]))
    assert key.tolist() == [[2.0, 2.0, 1.0, 1.0]] and index.tolist() == [[4, 7, 0, 3]]


def test_exact_search_memory_is_bounded(gen):
    """200k candidates x 512 queries would be 400 MB of scores: the tiles keep far below it."""
    x = torch.randn(200_000, 32, generator=gen)
    q = torch.randn(512, 32, generator=gen)
    index = AffinityIndex(x, backend="exact")
    peak = peak_memory(lambda: index.search(16, q))
    assert peak < 0.15 * 200_000 * 512 * 4
