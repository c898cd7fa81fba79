import math

import pytest
import torch

import mp_contrastive.knn as knn
from mp_contrastive.knn import AffinityIndex, affinity_graph, choose_backend, sampled_affinity_graph
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling


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
    with pytest.raises(ValueError, match="'k' must be a positive int, got 0"):
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
    with pytest.raises(ValueError, match="'num_samples' must be a positive int, got 0"):
        sampled_affinity_graph(x, 2, 0)
    with pytest.raises(ValueError, match="'nprobe' must be a positive int, got -1"):
        AffinityIndex(x, nprobe=-1)
    with pytest.raises(TypeError, match="'nlist' must be an int, got float"):
        AffinityIndex(x, nlist=2.0)
    with pytest.raises(TypeError, match="'tiling' must be a Tiling"):
        AffinityIndex(x, tiling=40)
    with pytest.raises(ValueError, match="needs metric='ip'"):
        AffinityIndex(x, metric="cos").sample(2, 4)


def test_repr_shows_a_non_default_tiling(gen):
    x = torch.randn(50, 4, generator=gen)
    assert repr(AffinityIndex(x)) == ("AffinityIndex(num_candidates=50, dim=4, metric='ip', "
                                      "backend='auto', index='flat')")
    assert repr(AffinityIndex(x, tiling=DEFAULT_TILING)) == repr(AffinityIndex(x))
    small = AffinityIndex(x, metric="l2", tiling=Tiling(elements=40))
    assert small.tiling == Tiling(elements=40)
    assert repr(small) == ("AffinityIndex(num_candidates=50, dim=4, metric='l2', backend='auto', "
                           "index='flat', tiling=Tiling(elements=40, threshold=16777216, "
                           "cuda_threshold=134217728))")


def test_resolve_backend(gen):
    x = torch.randn(50, 4, generator=gen)
    assert AffinityIndex(x).resolve_backend(10, 5) == "exact"
    assert AffinityIndex(x, backend="faiss").resolve_backend(10, 5) == "faiss"
    assert AffinityIndex(x, index="ivf", nlist=1).resolve_backend(10, 5) == "faiss"


def test_nprobe_is_capped_at_nlist(gen):
    index = AffinityIndex(torch.randn(400, 4, generator=gen), index="ivf", nlist=8)
    assert index.nprobe == 1  # max(1, nlist // 32)
    index.nprobe = 100
    assert index.nprobe == 8
