"""Graph spectra and Proposition 2 against closed forms, numpy and AlignmentConv's steps."""

import math

import numpy as np
import pytest
import torch

from mp_contrastive.dynamics import (
    algebraic_connectivity,
    alignment_contraction_bound,
    class_algebraic_connectivity,
    class_subspace_distance,
    normalized_laplacian,
)
from mp_contrastive.nn import AlignmentConv
from tests.dynamics.known_graphs import complete, cycle, numpy_lambda2, path, two_cliques, undirected


@pytest.mark.parametrize(("n", "method"), [(4, "dense"), (7, "dense"), (12, "dense"), (12, "sparse"),
                                            (200, "dense"), (600, "sparse")])
def test_lambda2_of_path_and_cycle_match_closed_forms(n, method):
    # Normalised Laplacian spectra (Chung 1997): path 1 - cos(pi k / (n-1)), cycle 1 - cos(2 pi k / n).
    assert algebraic_connectivity(path(n), method=method) == pytest.approx(
        1 - math.cos(math.pi / (n - 1)), rel=1e-6, abs=1e-12)
    assert algebraic_connectivity(cycle(n), method=method) == pytest.approx(
        1 - math.cos(2 * math.pi / n), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 10, 40])
def test_lambda2_of_complete_graph_is_n_over_n_minus_1(n):
    for method in ("dense", "sparse"):
        assert algebraic_connectivity(complete(n), method=method) == pytest.approx(n / (n - 1))


def test_lambda2_of_two_joined_cliques_matches_numpy_and_grows_with_bridges():
    m = 8
    values = []
    for bridges in (1, 2, 4, 8):
        ei = two_cliques(m, bridges)
        expected = numpy_lambda2(ei, 2 * m)
        for method in ("dense", "sparse"):
            assert algebraic_connectivity(ei, method=method) == pytest.approx(expected, rel=1e-8)
        values.append(expected)
    assert values == sorted(values) and values[0] < 0.1 < values[-1]
    # Two K_m joined by a perfect matching is (m)-regular: L = I - A/m, the "difference" vector
    # (1 on one clique, -1 on the other) has A v = (m-1-1) v, so lambda_2 = 2/m.
    assert values[-1] == pytest.approx(2 / m)


def test_lambda2_weighted_and_large_sparse_graph_match_numpy(gen):
    n = 700  # above the dense limit: the auto method takes the shift-invert Lanczos path
    mask = torch.rand(n, n, generator=gen) < 0.01
    mask = (mask | mask.T).fill_diagonal_(False)
    mask |= torch.diag(torch.ones(n - 1, dtype=torch.bool), 1) | torch.diag(
        torch.ones(n - 1, dtype=torch.bool), -1)  # a spanning path keeps it connected
    w = torch.rand(n, n, generator=gen, dtype=torch.float64) + 0.5
    w = w + w.T
    dst, src = mask.nonzero().T
    ei, weight = torch.stack([src, dst]), w[dst, src]
    expected = numpy_lambda2(ei, n, weight)
    assert algebraic_connectivity(ei, weight) == pytest.approx(expected, rel=1e-7)
    assert algebraic_connectivity(ei, weight, method="dense") == pytest.approx(expected, rel=1e-9)


def test_lambda2_is_exactly_zero_when_disconnected():
    ei = torch.cat([complete(4), complete(4) + 4], 1)
    assert algebraic_connectivity(ei) == 0.0
    assert algebraic_connectivity(complete(4), num_nodes=5) == 0.0  # an isolated node
    assert algebraic_connectivity(ei, method="sparse") == 0.0


def test_normalized_laplacian_matches_numpy_and_uses_chung_convention():
    ei = path(4)
    lap = normalized_laplacian(ei, num_nodes=5).toarray()
    a = np.zeros((4, 4))
    for s, t in ei.T.tolist():
        a[t, s] = 1
    d = a.sum(1)
    np.testing.assert_allclose(lap[:4, :4], np.eye(4) - a / np.sqrt(np.outer(d, d)), atol=1e-15)
    assert lap[4, 4] == 0  # isolated node: a zero row, so it counts as a component


def test_class_lambda2_uses_each_class_subgraph_and_ignores_cross_edges():
    # class 0: path on 0..4; class 1: cycle on 5..10; class 2: K_4 on 11..14; class 3: singleton.
    parts = [path(5), cycle(6) + 5, complete(4) + 11]
    cross = undirected([(0, 5), (4, 11), (10, 14), (3, 15)])
    ei = torch.cat(parts + [cross], 1)
    labels = torch.tensor([0] * 5 + [1] * 6 + [2] * 4 + [3])
    lam = class_algebraic_connectivity(ei, labels)
    expected = [1 - math.cos(math.pi / 4), 1 - math.cos(2 * math.pi / 6), 4 / 3]
    torch.testing.assert_close(lam[:3], torch.tensor(expected, dtype=torch.float64))
    assert math.isnan(lam[3])


# -- Proposition 2 ---------------------------------------------------------------------------------


def test_class_subspace_distance_matches_numpy_top_eigenvector(gen):
    sizes, dim = [5, 7], 3
    blocks, offset, pairs = [], 0, []
    for size in sizes:
        for i in range(size):
            for j in range(i + 1, size):
                if torch.rand((), generator=gen) < 0.7 or j == i + 1:
                    pairs.append((offset + i, offset + j))
        blocks.append(slice(offset, offset + size))
        offset += size
    ei = undirected(pairs + [(0, 5)])  # one cross-class edge, which the subgraphs ignore
    weight = torch.rand(ei.size(1) // 2, generator=gen, dtype=torch.float64) + 0.1
    weight = torch.cat([weight, weight])
    labels = torch.tensor([0] * 5 + [1] * 7)
    x = torch.randn(offset, dim, generator=gen, dtype=torch.float64)
    got = class_subspace_distance(x, ei, labels, weight)
    a = np.zeros((offset, offset))
    np.add.at(a, (ei[1].numpy(), ei[0].numpy()), weight.numpy())
    for c, rows in enumerate(blocks):
        ac = a[rows, rows]
        d = ac.sum(1)
        _, vectors = np.linalg.eigh(ac / np.sqrt(np.outer(d, d)))
        u = vectors[:, -1:]
        xc = x[rows].numpy()
        assert got[c].item() == pytest.approx(np.linalg.norm(xc - u @ (u.T @ xc)), rel=1e-10)


@pytest.mark.parametrize("detach", [True, False])
def test_proposition2_bound_holds_for_alignment_conv(gen, detach):
    """The diagnostics compose: dist(step) <= bound * dist for every class, and the bound is
    nearly attained after a few steps (a loose bound could not fail)."""
    labels = torch.tensor([0] * 10 + [1] * 12 + [2] * 9)
    ei = torch.cat([cycle(10), two_cliques(6, 2) + 10, path(9) + 22], 1)
    alpha = 0.4 if detach else 0.2
    conv = AlignmentConv(alpha, detach_targets=detach)
    bound = alignment_contraction_bound(class_algebraic_connectivity(ei, labels), alpha, detach)
    h = torch.randn(31, 4, generator=gen, dtype=torch.float64)
    ratios = []
    for _ in range(30):
        before = class_subspace_distance(h, ei, labels)
        h = conv(h, ei)
        ratio = class_subspace_distance(h, ei, labels) / before
        assert bool((ratio <= bound + 1e-12).all()), (ratio, bound)
        ratios.append(ratio / bound)
    assert float(torch.stack(ratios)[-1].min()) > 0.97


def test_alignment_contraction_bound_values_and_limits():
    torch.testing.assert_close(alignment_contraction_bound(torch.tensor([0.0, 1.0]), 0.5),
                               torch.tensor([1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(alignment_contraction_bound(1.0, 0.25, detach_targets=False),
                               torch.tensor(0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        alignment_contraction_bound(1.0, 0.3, detach_targets=False)
    with pytest.raises(ValueError, match="lambda2"):
        alignment_contraction_bound(2.5, 0.1)


def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 2)
    ei = path(4)
    with pytest.raises(ValueError, match="undirected"):
        algebraic_connectivity(torch.tensor([[0, 1], [1, 2]]))
    with pytest.raises(ValueError, match="num_nodes"):
        algebraic_connectivity(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 nodes"):
        algebraic_connectivity(torch.zeros(2, 0, dtype=torch.long), num_nodes=1)
    with pytest.raises(ValueError, match="method"):
        algebraic_connectivity(ei, method="qr")
    with pytest.raises(ValueError, match="edge_weight"):
        algebraic_connectivity(ei, -torch.ones(ei.size(1)))
    with pytest.raises(TypeError, match="labels"):
        class_algebraic_connectivity(ei, torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        class_subspace_distance(x, ei, torch.zeros(3, dtype=torch.long))
