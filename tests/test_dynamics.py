"""Diagnostics against closed forms, numpy and the paper's propositions."""

import math

import numpy as np
import pytest
import torch

from mp_contrastive.dynamics import (
    algebraic_connectivity,
    alignment_contraction_bound,
    alignment_metric,
    class_algebraic_connectivity,
    class_distances,
    class_subspace_distance,
    effective_rank,
    equilibrium_gap,
    normalized_laplacian,
    singular_spectrum,
    spectrum_effective_rank,
    uniformity_metric,
)
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.losses import plain_nt_xent
from mp_contrastive.nn import AlignmentConv, ContrastiveConv

# -- graphs with known spectra ---------------------------------------------------------------------


def undirected(pairs) -> torch.Tensor:
    """Edge index with both directions of every (i, j) in ``pairs``."""
    a = torch.tensor(pairs, dtype=torch.long).T
    return torch.cat([a, a.flip(0)], 1)


def path(n: int) -> torch.Tensor:
    return undirected([(i, i + 1) for i in range(n - 1)])


def cycle(n: int) -> torch.Tensor:
    return undirected([(i, (i + 1) % n) for i in range(n)])


def complete(n: int) -> torch.Tensor:
    return undirected([(i, j) for i in range(n) for j in range(i + 1, n)])


def two_cliques(m: int, bridges: int) -> torch.Tensor:
    """Two copies of K_m; node i of the first joined to node i of the second for i < bridges."""
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    pairs += [(m + i, m + j) for i, j in pairs]
    pairs += [(i, m + i) for i in range(bridges)]
    return undirected(pairs)


def numpy_lambda2(edge_index: torch.Tensor, num_nodes: int, weight=None) -> float:
    """Independent reference: dense numpy eigvalsh of L = I - D^-1/2 A D^-1/2."""
    a = np.zeros((num_nodes, num_nodes))
    w = np.ones(edge_index.size(1)) if weight is None else weight.numpy()
    np.add.at(a, (edge_index[1].numpy(), edge_index[0].numpy()), w)
    d = a.sum(1)
    lap = np.eye(num_nodes) - a / np.sqrt(np.outer(d, d))
    return float(np.linalg.eigvalsh(lap)[1])


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


# -- Proposition 3: the equilibrium gap ------------------------------------------------------------


def _doubly_stochastic(n: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.rand(n, n, generator=gen, dtype=torch.float64) + 0.2
    m = m + m.T
    m.fill_diagonal_(0)
    for _ in range(500):  # symmetric Sinkhorn: rows (and columns) sum to one
        r = m.sum(1).rsqrt()
        m = r[:, None] * m * r[None, :]
    return m


def _equilibrium(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features whose affinity softmax is exactly Abar (Gram = log Abar off the diagonal)."""
    abar = _doubly_stochastic(n, gen)
    gram = abar.log().fill_diagonal_(0)
    gram += torch.eye(n, dtype=torch.float64) * (gram.abs().sum(1).max() + 1)
    h = torch.linalg.cholesky(gram)
    dst, src = (abar > 0).nonzero().T
    return h, torch.stack([src, dst]), abar[dst, src]


def test_equilibrium_gap_is_zero_exactly_at_proposition3_equilibrium(gen):
    h, ei, w = _equilibrium(8, gen)
    for normalize in (False, True):  # rows sum to one: gcn_norm leaves Abar unchanged
        gap = equilibrium_gap(h, ei, w, normalize=normalize)
        assert gap.total_variation.item() < 1e-12 and abs(gap.kl.item()) < 1e-12
    step = ContrastiveConv(alpha=1.0, detach_targets=True, normalize=False).step(h, ei, w)
    assert step.abs().max() < 1e-10  # the operator agrees: no update at the equilibrium
    moved = h + 0.1 * torch.randn(h.shape, generator=gen, dtype=h.dtype)
    gap = equilibrium_gap(moved, ei, w, normalize=False)
    assert gap.total_variation > 1e-3 and gap.kl > 1e-4


def test_equilibrium_gap_matches_dense_numpy(gen):
    n = 9
    mask = torch.rand(n, n, generator=gen) < 0.4
    mask = (mask | mask.T).fill_diagonal_(False)
    mask[0, 1] = mask[1, 0] = True
    dst, src = mask.nonzero().T
    ei = torch.stack([src, dst])
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    a = np.zeros((n, n))
    a[dst.numpy(), src.numpy()] = 1
    d = a.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        abar = np.nan_to_num(a / np.sqrt(np.outer(d, d)))
    sim = x.numpy() @ x.numpy().T
    np.fill_diagonal(sim, -np.inf)
    ahat = np.exp(sim - sim.max(1, keepdims=True))
    ahat /= ahat.sum(1, keepdims=True)
    off = ~np.eye(n, dtype=bool)
    tv = 0.5 * np.where(off, np.abs(abar - ahat), 0).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_terms = np.where(abar > 0, abar * np.log(abar / ahat), 0) - abar + ahat
    kl = np.where(off, kl_terms, 0).sum(1)
    gap = equilibrium_gap(x, ei, reduction="none")
    np.testing.assert_allclose(gap.total_variation.numpy(), tv, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gap.kl.numpy(), kl, rtol=1e-10, atol=1e-14)
    anchors = torch.tensor([7, 2, 2])
    sub = equilibrium_gap(x, ei, anchors=anchors, reduction="none")
    torch.testing.assert_close(sub.kl, gap.kl[anchors])
    assert equilibrium_gap(x, ei).total_variation.item() == pytest.approx(tv.mean(), rel=1e-12)


@pytest.mark.parametrize("views", [2, 3])
def test_equilibrium_kl_is_simclr_loss_minus_positive_entropy(gen, views):
    """With rows of Abar uniform over V - 1 positives, KL(Abar_i || Ahat_i) = cross-entropy -
    log(V - 1), and the cross-entropy averaged over anchors is NT-Xent (independent reference)."""
    num_samples, tau = 6, 0.5
    z = torch.randn(num_samples * views, 5, generator=gen, dtype=torch.float64)
    g = augmentation_graph(num_samples, views, dtype=torch.float64)
    h = torch.nn.functional.normalize(z, dim=1) / math.sqrt(tau)
    kl = equilibrium_gap(h, g.edge_index, g.edge_weight).kl
    loss = plain_nt_xent(z, g.sample, temperature=tau)
    assert kl.item() == pytest.approx(loss.item() - math.log(views - 1), rel=1e-10)


# -- Wang & Isola ----------------------------------------------------------------------------------


def test_alignment_metric_matches_wang_isola_for_two_views(gen):
    z0 = torch.randn(6, 4, generator=gen)
    z1 = torch.randn(6, 4, generator=gen)
    f0, f1 = (torch.nn.functional.normalize(z, dim=1) for z in (z0, z1))
    for alpha in (2.0, 1.0):
        expected = (f0 - f1).norm(dim=1).pow(alpha).mean()  # Wang & Isola's align_loss
        z, sample = torch.cat([z0, z1]), torch.arange(6).repeat(2)
        torch.testing.assert_close(alignment_metric(z, sample=sample, alpha=alpha), expected)
        g = augmentation_graph(6, 2)
        torch.testing.assert_close(alignment_metric(z, g.edge_index, alpha=alpha), expected)


def test_uniformity_metric_matches_reference_and_limits(gen):
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    f = torch.nn.functional.normalize(x, dim=1).numpy()
    vals = [np.exp(-2 * np.sum((f[i] - f[j]) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    assert uniformity_metric(x).item() == pytest.approx(np.log(np.mean(vals)), rel=1e-12)
    collapsed = torch.ones(5, 3)
    assert uniformity_metric(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity_metric(antipodal).item() == pytest.approx(-8.0)  # |f_i - f_j|^2 = 4, t = 2


# -- effective rank --------------------------------------------------------------------------------


@pytest.mark.parametrize(("spectrum", "expected"), [
    ([3.0, 3.0, 3.0, 3.0], 4.0),
    ([1.0, 0.0, 0.0], 1.0),
    ([2.0, 2.0, 0.0, 0.0], 2.0),
    ([2.0, 1.0, 1.0], 2 ** 1.5),  # p = (1/2, 1/4, 1/4): entropy 1.5 log 2
    ([0.0, 0.0], 0.0),
])
def test_effective_rank_of_known_spectra(spectrum, expected):
    value = spectrum_effective_rank(torch.tensor(spectrum, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_effective_rank_of_features_with_prescribed_singular_values(gen):
    s = torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(20, 4, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    x = u @ torch.diag(s) @ v.T
    torch.testing.assert_close(singular_spectrum(x)[:4], s)
    p = (s / s.sum()).numpy()
    assert effective_rank(x).item() == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-10)
    # A complete collapse: rank one uncentred, nothing left once centred.
    point = torch.ones(10, 1, dtype=torch.float64) @ torch.randn(1, 6, generator=gen, dtype=torch.float64)
    assert effective_rank(point).item() == pytest.approx(1.0)
    assert singular_spectrum(point, center=True).max() < 1e-5
    assert effective_rank(torch.zeros(3, 2)).item() == 0.0


# -- class distances -------------------------------------------------------------------------------


def test_class_distances_match_brute_force_and_are_scale_free(gen):
    x = torch.randn(15, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0] * 4 + [1] * 6 + [2] * 5)
    d2 = torch.cdist(x, x).pow(2)
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(15, dtype=torch.bool)
    intra = d2[same & off].mean().sqrt()
    inter = d2[~same].mean().sqrt()
    got = class_distances(x, labels)
    torch.testing.assert_close(got.intra, intra)
    torch.testing.assert_close(got.inter, inter)
    torch.testing.assert_close(class_distances(3 * x, labels).ratio, intra / inter)


def test_class_distances_of_collapsed_classes():
    x = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    got = class_distances(x, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert got.intra.item() == 0 and got.inter.item() == pytest.approx(math.sqrt(2))


# -- bad input -------------------------------------------------------------------------------------


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
    with pytest.raises(ValueError, match="self loops"):
        equilibrium_gap(x, torch.tensor([[0], [0]]))
    with pytest.raises(ValueError, match="edge_index"):
        equilibrium_gap(x, torch.tensor([[0], [9]]))
    with pytest.raises(ValueError, match="reduction"):
        equilibrium_gap(x, ei, reduction="sum")
    with pytest.raises(ValueError, match="anchors"):
        equilibrium_gap(x, ei, anchors=torch.tensor([4]))
    with pytest.raises(TypeError, match="'x'"):
        uniformity_metric(x.numpy())
    with pytest.raises(ValueError, match="'x'"):
        uniformity_metric(torch.randn(4))
    with pytest.raises(TypeError, match="edge_index.*sample"):
        alignment_metric(x)
    with pytest.raises(ValueError, match="sample"):
        alignment_metric(x, sample=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="singular_values"):
        spectrum_effective_rank(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="single class"):
        class_distances(x, torch.zeros(4, dtype=torch.long))
