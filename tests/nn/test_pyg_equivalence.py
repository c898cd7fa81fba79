"""AlignmentConv's GCN form against PyG's GCNConv, set up as PyG's own layer tests are.

GCNConv(x) = bias + Ā (x Θ); the operator reproduces it as ``Linear`` (GCNConv's ``lin`` weight,
no bias) -> ``AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=True)`` -> GCNConv's
bias. Outputs and gradients w.r.t. ``x`` and ``edge_weight`` must agree to 1e-6 in float64 over
the variants PyG's test_gcn_conv.py exercises (edge weights, sparse layouts, flow, static graphs,
caching, decomposed layers, torch.compile), and on random weighted and directed graphs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

from mp_contrastive.nn import AlignmentConv
from tests.reference import random_graph

IN, OUT = 16, 8
TOL = {"atol": 1e-6, "rtol": 0.0}
STAR = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])  # PyG's test graph


def gcn_form(**kwargs: object) -> AlignmentConv:
    return AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=True, **kwargs)


def pair(gen: torch.Generator, **kwargs: object) -> tuple[GCNConv, Callable[..., Tensor]]:
    """A GCNConv (random bias) and the operator pipeline sharing its weights."""
    gcn = GCNConv(IN, OUT, **kwargs).double()
    with torch.no_grad():
        gcn.bias.copy_(torch.randn(OUT, generator=gen, dtype=torch.float64))
    lin = torch.nn.Linear(IN, OUT, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(gcn.lin.weight)
    conv = gcn_form(**{k: v for k, v in kwargs.items() if k in ("flow", "cached")})

    def ours(x: Tensor, edge_index: object, edge_weight: Tensor | None = None) -> Tensor:
        return conv(lin(x), edge_index, edge_weight) + gcn.bias

    ours.conv = conv  # type: ignore[attr-defined]
    return gcn, ours


def assert_same(gcn: Callable[..., Tensor], ours: Callable[..., Tensor], x: Tensor,
                edge_index: object, edge_weight: Tensor | None = None) -> Tensor:
    """Same output, and same vector-Jacobian products w.r.t. x and edge_weight."""
    x = x.detach().requires_grad_()
    inputs = [x]
    if edge_weight is not None:
        edge_weight = edge_weight.detach().requires_grad_()
        inputs.append(edge_weight)
    expected, out = gcn(x, edge_index, edge_weight), ours(x, edge_index, edge_weight)
    torch.testing.assert_close(out, expected, **TOL)
    v = torch.randn_like(expected)
    for mine, theirs in zip(torch.autograd.grad(out, inputs, v),
                            torch.autograd.grad(expected, inputs, v), strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)
    return out


def features(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, IN, generator=gen, dtype=torch.float64)


def graphs(gen: torch.Generator) -> dict[str, tuple[Tensor, Tensor | None, int]]:
    n = 20
    directed, weight = random_graph(n, 0.2, gen, symmetric=False)
    undirected, sym_weight = random_graph(n, 0.2, gen, symmetric=True)
    unweighted, _ = random_graph(n, 0.2, gen, symmetric=False, weighted=False)
    return {
        "star": (STAR, None, 4),
        "star_weighted": (STAR, torch.rand(6, generator=gen, dtype=torch.float64), 4),
        "directed_unweighted": (unweighted, None, n),
        "directed_weighted": (directed, weight, n),
        "undirected_weighted": (undirected, sym_weight, n),
        # nodes 20..24 have no edges: only their self loop
        "isolated_nodes": (directed, weight, n + 5),
        # self loops already in the graph (node 3 twice, equal weights): add_remaining_self_loops
        # keeps their weight; these take gcn_norm's path, the others _loops_apart
        "self_loops": (torch.cat([directed, torch.tensor([[3, 5, 3], [3, 5, 3]])], 1),
                       torch.cat([weight, torch.tensor([0.5, 2.0, 0.5], dtype=torch.float64)]), n),
    }


GRAPHS = ["star", "star_weighted", "directed_unweighted", "directed_weighted",
          "undirected_weighted", "isolated_nodes", "self_loops"]


@pytest.mark.parametrize("name", GRAPHS)
def test_gcn_form_equals_gcnconv(gen, name):
    edge_index, edge_weight, n = graphs(gen)[name]
    gcn, ours = pair(gen)
    assert_same(gcn, ours, features(gen, n), edge_index, edge_weight)


@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
@pytest.mark.parametrize("self_loops", [True, False])
def test_loops_apart_path_equals_gcn_norm_path(gen, monkeypatch, name, flow, self_loops):
    """The propagation with the self loops' messages added after the sum (no edge list rebuilt)
    is gcn_norm's propagation, bitwise (the same products, summed in the same order), with
    gradients to 1e-12 in float64; and gcn_norm is not called on a graph without self loops
    (the fast path really runs)."""
    edge_index, edge_weight, n = graphs(gen)[name]
    x = features(gen, n).requires_grad_()
    weight = None if edge_weight is None else edge_weight.detach().requires_grad_()
    conv = AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=self_loops, flow=flow)
    loops_apart = conv._loops_apart(edge_index, weight, x)
    adj, normed = conv._normalized_adjacency(edge_index, weight, n, x)
    reference = conv._propagate(adj, normed, x)
    if not (self_loops and name == "self_loops"):  # there the gcn_norm path keeps loop weights
        assert torch.equal(loops_apart, reference)
        inputs = [x] if weight is None else [x, weight]
        v = torch.randn_like(reference)
        for a, b in zip(torch.autograd.grad(loops_apart, inputs, v, retain_graph=True),
                        torch.autograd.grad(reference, inputs, v), strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0.0)

        def no_gcn_norm(*args: object, **kwargs: object) -> None:
            raise AssertionError("gcn_norm called on the row-scaled path")
        monkeypatch.setattr("mp_contrastive.nn.alignment.gcn_norm", no_gcn_norm)
        assert torch.equal(conv(x, edge_index, weight), reference)
    else:  # self loops present: the gcn_norm path, not the fast one, gives the layer's output
        def no_fast_path(*args: object, **kwargs: object) -> None:
            raise AssertionError("the fast path ran on a graph with self loops")
        monkeypatch.setattr(conv, "_loops_apart", no_fast_path)
        assert torch.equal(conv(x, edge_index, weight), reference)


def test_gradient_step_form_is_not_gcn_on_directed_graphs(gen):
    """The documented distinction: the symmetric gradient-step form at alpha=1/2 matches GCN's
    output on an undirected unweighted graph only; the GCN form matches it everywhere."""
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    x = features(gen, n)
    gcn = GCNConv(IN, IN, bias=False).double()
    with torch.no_grad():
        gcn.lin.weight.copy_(torch.eye(IN, dtype=torch.float64))
    step_form = AlignmentConv(alpha=0.5, add_self_loops=True)
    assert (step_form(x, edge_index, weight) - gcn(x, edge_index, weight)).abs().max() > 1e-3
    torch.testing.assert_close(gcn_form()(x, edge_index, weight), gcn(x, edge_index, weight),
                               **TOL)


@pytest.mark.parametrize("weighted", [False, True])
def test_flow_target_to_source(gen, weighted):
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    weight = weight if weighted else None
    gcn, ours = pair(gen, flow="target_to_source")
    x = features(gen, n)
    out = assert_same(gcn, ours, x, edge_index, weight)
    # PyG's test_gcn_conv_norm: reversing the flow and the edges gives the same layer.
    ours.conv.flow = "source_to_target"
    torch.testing.assert_close(ours(x, edge_index.flip(0), weight), out, **TOL)


def test_flow_with_sparse_adj_is_rejected(gen):
    conv = gcn_form(flow="target_to_source")
    adj_t = to_torch_csr_tensor(STAR.flip(0), size=(4, 4))
    with pytest.raises(ValueError, match="target_to_source"):
        conv(torch.randn(4, 3, generator=gen), adj_t)


@pytest.mark.parametrize("to_sparse", [to_torch_coo_tensor, to_torch_csr_tensor,
                                       to_torch_csc_tensor])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_layouts(gen, to_sparse, weighted):
    """adj_t = to_torch_*_tensor(edge_index).t() as PyG's tests build it: the same output as the
    edge_index form, and as GCNConv with the same layout (GCNConv's gcn_norm has no CSC branch:
    there only the edge_index form is compared)."""
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    weight = weight if weighted else None
    gcn, ours = pair(gen)
    x = features(gen, n).requires_grad_()
    adj_t = to_sparse(edge_index, weight, size=(n, n)).t()
    expected = ours(x, edge_index, weight)
    out = ours(x, adj_t)
    torch.testing.assert_close(out, expected, **TOL)
    v = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, v)[0],
                               torch.autograd.grad(expected, x, v)[0], **TOL)
    if adj_t.layout == torch.sparse_csc:
        with pytest.raises(NotImplementedError):
            gcn(x, adj_t)
    else:  # an unweighted adj_t holds float32 ones, which GCNConv does not cast (the operator does)
        torch.testing.assert_close(out, gcn(x, adj_t.to(torch.float64)), **TOL)


def test_sparse_tensor_input(gen):
    """torch_sparse.SparseTensor adj_t (only where the optional extra is installed)."""
    torch_sparse = pytest.importorskip("torch_sparse")
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    gcn, ours = pair(gen)
    x = features(gen, n)
    adj_t = torch_sparse.SparseTensor.from_edge_index(edge_index, weight, (n, n)).t()
    torch.testing.assert_close(ours(x, adj_t), ours(x, edge_index, weight), **TOL)
    torch.testing.assert_close(ours(x, adj_t), gcn(x, adj_t), **TOL)


def test_static_graph_batch(gen):
    """x of shape [batch, nodes, features] on one graph (GCNConv's node_dim=-2)."""
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    gcn, ours = pair(gen)
    x = features(gen, 3, n)
    out = assert_same(gcn, ours, x, edge_index, weight)
    assert out.shape == (3, n, OUT)
    torch.testing.assert_close(out[1], ours(x[1], edge_index, weight), **TOL)
    # The energy and step of a batch: its members' summed / stacked.
    conv = AlignmentConv(alpha=0.3)
    h = x[..., :4]
    torch.testing.assert_close(conv.energy(h, edge_index, weight),
                               sum(conv.energy(part, edge_index, weight) for part in h), **TOL)
    torch.testing.assert_close(conv.step(h, edge_index, weight),
                               torch.stack([conv.step(part, edge_index, weight) for part in h]),
                               **TOL)
    with pytest.raises(ValueError, match="batch, num_nodes, num_features"):
        conv(torch.randn(2, 2, n, 4), edge_index)


def test_cached(gen):
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    gcn, ours = pair(gen, cached=True)
    conv = ours.conv
    x = features(gen, n)
    out = assert_same(gcn, ours, x, edge_index, weight)
    assert conv._cached_adj is not None
    # As GCNConv: the cached normalisation is used whatever graph comes next.
    torch.testing.assert_close(ours(x, STAR), out, **TOL)
    torch.testing.assert_close(ours(x, STAR), gcn(x, STAR), **TOL)
    conv.reset_parameters()
    assert conv._cached_adj is None
    gcn.cached, gcn._cached_edge_index = False, None
    torch.testing.assert_close(ours(x[:4], STAR), gcn(x[:4], STAR), **TOL)
    assert conv._cached_adj is not None  # the new graph is cached from here on


def test_decomposed_layers(gen):
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    x = features(gen, n)
    for detach in (False, True):
        conv = AlignmentConv(alpha=0.7, detach_targets=detach, add_self_loops=True)
        decomposed = copy.deepcopy(conv)
        decomposed.decomposed_layers = 2
        torch.testing.assert_close(decomposed(x, edge_index, weight), conv(x, edge_index, weight),
                                   **TOL)
    gcn, ours = pair(gen, decomposed_layers=2)
    ours.conv.decomposed_layers = 2
    assert_same(gcn, ours, x, edge_index, weight)


def test_torch_compile(gen):
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    x = torch.randn(n, 4, generator=gen)
    weight = weight.float()
    conv = gcn_form()
    compiled = torch.compile(conv, fullgraph=True)
    torch.testing.assert_close(compiled(x, edge_index, weight), conv(x, edge_index, weight),
                               atol=1e-6, rtol=1e-6)


def test_alpha_one_is_exactly_propagation(gen):
    """The GCN form is A x as computed, not x - (x - A x): bitwise equal to GCNConv with an identity
    weight (x @ I is exact)."""
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    x = torch.randn(n, 4, generator=gen)
    gcn = GCNConv(4, 4, bias=False)
    with torch.no_grad():
        gcn.lin.weight.copy_(torch.eye(4))
    assert torch.equal(gcn_form()(x, edge_index, weight.float()), gcn(x, edge_index, weight.float()))


def test_bad_edge_weights_are_rejected(gen):
    edge_index, weight, n = graphs(gen)["directed_weighted"]
    x = features(gen, n)
    negative = weight.clone()
    negative[3] = -0.5
    with pytest.raises(ValueError, match="'edge_weight' must be non-negative"):
        gcn_form()(x, edge_index, negative)
    with pytest.raises(ValueError, match="'edge_weight' must be non-negative"):
        AlignmentConv()(x, to_torch_csr_tensor(edge_index.flip(0), negative, size=(n, n)))
    nan = weight.clone()
    nan[0] = float("nan")
    with pytest.raises(ValueError, match="'edge_weight' contains non-finite"):
        gcn_form()(x, edge_index, nan)
    # Signed weights are fine without the normalisation.
    out = AlignmentConv(alpha=1.0, detach_targets=True, normalize=False)(x, edge_index, negative)
    assert torch.isfinite(out).all()


def test_repr_shows_every_non_default_setting():
    assert repr(AlignmentConv()) == "AlignmentConv(alpha=0.5)"
    assert repr(AlignmentConv(alpha=0.5, add_self_loops=True)) == \
        "AlignmentConv(alpha=0.5, add_self_loops=True)"
    assert repr(gcn_form(cached=True, flow="target_to_source", decomposed_layers=2)) == (
        "AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=True, cached=True, "
        "flow='target_to_source', decomposed_layers=2)")
    assert repr(AlignmentConv(0.2, normalize=False)) == "AlignmentConv(alpha=0.2, normalize=False)"
