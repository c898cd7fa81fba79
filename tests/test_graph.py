import pytest
import torch
from torch_geometric.data import Data

from mp_contrastive.graph import augmentation_edges, augmentation_graph, sphere_projection, view_sample_index


def brute_force_edges(sample: torch.Tensor) -> set[tuple[int, int]]:
    n = sample.numel()
    return {(j, i) for i in range(n) for j in range(n) if i != j and sample[i] == sample[j]}


def test_equal_views_layout():
    graph = augmentation_graph(3, 2)
    assert isinstance(graph, Data)
    assert graph.num_nodes == 6
    assert graph.sample.tolist() == [0, 1, 2, 0, 1, 2]  # torch.cat([z0, z1]) order
    assert graph.view.tolist() == [0, 0, 0, 1, 1, 1]
    assert set(map(tuple, graph.edge_index.T.tolist())) == {(3, 0), (4, 1), (5, 2), (0, 3),
                                                           (1, 4), (2, 5)}
    assert torch.all(graph.edge_weight == 1.0)
    assert not graph.has_self_loops()
    assert graph.is_undirected()


@pytest.mark.parametrize("sample", [[0, 1, 0, 2, 1, 0, 2, 2, 2], [5, 5, 9, 9, 9], [3, 3]])
def test_explicit_sample_matches_brute_force(sample):
    sample = torch.tensor(sample)
    graph = augmentation_graph(sample=sample)
    assert set(map(tuple, graph.edge_index.T.tolist())) == brute_force_edges(sample)
    counts = {s: int((sample == s).sum()) for s in sample.tolist()}
    dst = graph.edge_index[1]
    expected = torch.tensor([1.0 / (counts[int(sample[i])] - 1) for i in dst])
    torch.testing.assert_close(graph.edge_weight, expected)
    for s in counts:  # views are 0..c-1 in node order within each sample
        assert graph.view[sample == s].tolist() == list(range(counts[s]))


def test_weights_are_symmetric_normalised_adjacency():
    sample = torch.tensor([0, 1, 0, 1, 1, 2, 2, 0, 0])
    graph = augmentation_graph(sample=sample, dtype=torch.float64)
    n = sample.numel()
    a = (sample[:, None] == sample[None, :]).double() - torch.eye(n, dtype=torch.float64)
    d = a.sum(1)
    abar = a / torch.sqrt(d[:, None] * d[None, :])
    src, dst = graph.edge_index
    torch.testing.assert_close(graph.edge_weight, abar[dst, src])
    assert graph.edge_weight.dtype == torch.float64


def test_many_views_scale_linearly():
    edge_index, _, _ = augmentation_edges(view_sample_index(1000, 4))
    assert edge_index.size(1) == 4000 * 3


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((3, 1), {}, ValueError, "num_views"),
    ((0, 2), {}, ValueError, "num_samples"),
    ((3.0, 2), {}, TypeError, "num_samples"),
    ((), {"sample": torch.tensor([0, 1, 0])}, ValueError, "sample 1 .* only one"),
    ((), {"sample": torch.tensor([], dtype=torch.long)}, ValueError, "empty"),
    ((), {"sample": torch.tensor([0.0, 0.0])}, TypeError, "sample"),
    ((), {"sample": torch.tensor([[0, 0]])}, ValueError, "sample"),
    ((), {"sample": torch.tensor([-1, -1])}, ValueError, "non-negative"),
    ((3, 2), {"sample": torch.tensor([0, 0])}, TypeError, "not both"),
    ((3,), {}, TypeError, "num_views"),
])
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        augmentation_graph(*args, **kwargs)


def test_subpackages_load_on_first_access():
    import subprocess
    import sys

    code = ("import sys, mp_contrastive as m; assert 'faiss' not in sys.modules; "
            "assert m.knn.affinity_graph and m.memory.NegativeBank and m.gnn.load_planetoid; "
            "assert 'mp_contrastive.knn' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_sphere_projection(gen, temperature):
    z = torch.randn(9, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    h = sphere_projection(z, temperature)
    torch.testing.assert_close(h.norm(dim=1), torch.full((9,), temperature ** -0.5,
                                                         dtype=torch.float64))
    # inner products are the temperature-scaled cosines
    cos = torch.nn.functional.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2)
    torch.testing.assert_close(h @ h.T, cos / temperature)
    # differentiable: the gradient of a radial function vanishes on the sphere
    (grad,) = torch.autograd.grad(h.pow(2).sum(), z)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-12, rtol=0)
    assert sphere_projection(torch.zeros(2, 3), temperature).abs().sum() == 0  # zero rows stay


@pytest.mark.parametrize(("z", "temperature", "error", "match"), [
    (torch.randn(4, 3), 0.0, ValueError, "'temperature'"),
    (torch.randn(4, 3), "0.5", TypeError, "'temperature'"),
    (torch.randn(4), 0.5, ValueError, "'z' must have shape"),
    (torch.ones(4, 3, dtype=torch.long), 0.5, TypeError, "'z' must be a floating-point"),
    ([[1.0, 2.0]], 0.5, TypeError, "'z' must be a torch.Tensor"),
])
def test_sphere_projection_bad_input(z, temperature, error, match):
    with pytest.raises(error, match=match):
        sphere_projection(z, temperature)
