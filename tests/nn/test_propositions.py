"""The paper's three propositions, checked on the operators."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mp_contrastive.losses import MessagePassingLoss
from mp_contrastive.nn import AlignmentConv, ContrastiveConv
from tests.reference import complete_graph

# -- Proposition 1: the feature-space loss equals the encoder loss ---------------------------------


def test_proposition1_spectral_loss_in_feature_space(gen):
    """On a discrete augmentation graph with joint weights A (sum 1) and marginals d, HaoChen's
    loss of an encoder f,  -2 E_{x,x+} f(x).f(x+) + E_{x,x'} (f(x).f(x'))^2,  equals the spectral
    contrastive energy of F = sqrt(d) f on Abar = D^-1/2 A D^-1/2 with a complete affinity graph
    (self pairs included: x' is drawn independently of x). The gradients w.r.t. f agree too."""
    m, k = 7, 3
    a = torch.rand(m, m, generator=gen, dtype=torch.float64)
    a = a + a.T
    a.fill_diagonal_(0)
    a /= a.sum()
    d = a.sum(1)
    table = torch.randn(m, k, generator=gen, dtype=torch.float64, requires_grad=True)

    # The encoder loss, written as explicit expectations over the pair distributions.
    loss_f = 0
    for x in range(m):
        for y in range(m):
            inner = table[x] @ table[y]
            loss_f = loss_f - 2 * a[x, y] * inner + d[x] * d[y] * inner**2
    (grad_f,) = torch.autograd.grad(loss_f, table)

    mask = a > 0
    dst, src = mask.nonzero().T
    edge_index = torch.stack([src, dst])
    edge_weight = (a / torch.sqrt(d[:, None] * d[None, :]))[dst, src]
    affinity = torch.cat([complete_graph(m), torch.arange(m).repeat(2, 1)], 1)  # with self pairs
    conv = ContrastiveConv(kernel="spectral", normalize=False)
    features = d.sqrt()[:, None] * table
    energy = conv.energy(features, edge_index, edge_weight, affinity)
    torch.testing.assert_close(energy, loss_f, atol=1e-12, rtol=0)

    mp_loss = MessagePassingLoss(conv)(features, edge_index, edge_weight, affinity)
    (grad_mp,) = torch.autograd.grad(mp_loss, table)
    torch.testing.assert_close(grad_mp, grad_f, atol=1e-12, rtol=0)


# -- Proposition 2: alignment shrinks each class towards its top eigenvector ----------------------


@st.composite
def class_graphs(draw):
    """A label-preserving augmentation graph: 1-3 classes, each a random weighted graph that may be
    disconnected; random features; a step size."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sizes = draw(st.lists(st.integers(2, 7), min_size=1, max_size=3))
    density = draw(st.floats(0.2, 1.0))
    blocks = []
    for size in sizes:
        w = rng.uniform(0.1, 2.0, (size, size)) * (rng.uniform(size=(size, size)) < density)
        w = np.triu(w, 1)
        w = w + w.T
        if w.sum(1).min() == 0:  # every view needs a positive: link isolated nodes
            for i in np.flatnonzero(w.sum(1) == 0):
                j = (i + 1) % size
                w[i, j] = w[j, i] = rng.uniform(0.1, 2.0)
        blocks.append(w)
    alpha = draw(st.floats(0.01, 0.5))
    dim = draw(st.integers(1, 4))
    return blocks, alpha, rng.standard_normal((sum(sizes), dim))


def _top_eigenvector_distance(h_class: np.ndarray, abar_class: np.ndarray) -> tuple[float, float]:
    """Distance of the class features to span(u) (u = top eigenvector of Abar_c, ∝ sqrt(d)) and the
    class's algebraic connectivity lambda_2 of L_c = I - Abar_c."""
    eigenvalues, eigenvectors = np.linalg.eigh(abar_class)
    u = eigenvectors[:, -1:]
    distance = np.linalg.norm(h_class - u @ (u.T @ h_class))
    laplacian_eigenvalues = np.sort(1 - eigenvalues)
    return distance, laplacian_eigenvalues[1]


@settings(max_examples=60, deadline=None)
@given(class_graphs())
def test_proposition2_alignment_contracts_each_class(case):
    """detach_targets=True: one step H - alpha L H shrinks each class's distance to its top
    eigenvector subspace by at least (1 - alpha lambda_2) for alpha <= 1/2. The full-gradient step
    (1-2alpha) H + 2alpha Abar H is the same step with 2 alpha, so its factor is 1 - 2 alpha lambda_2
    for alpha <= 1/4. A disconnected class has lambda_2 = 0: no guaranteed shrinkage."""
    blocks, alpha, h_np = case
    n = h_np.shape[0]
    adjacency = np.zeros((n, n))
    offset, ranges = 0, []
    for w in blocks:
        adjacency[offset:offset + len(w), offset:offset + len(w)] = w
        ranges.append(slice(offset, offset + len(w)))
        offset += len(w)
    dst, src = np.nonzero(adjacency)
    edge_index = torch.as_tensor(np.stack([src, dst]))
    edge_weight = torch.as_tensor(adjacency[dst, src])
    degree = adjacency.sum(1)
    abar = adjacency / np.sqrt(np.outer(degree, degree))
    h = torch.as_tensor(h_np)
    for detach, effective_alpha in [(True, alpha), (False, alpha / 2)]:
        conv = AlignmentConv(alpha=effective_alpha, detach_targets=detach)
        stepped = conv(h, edge_index, edge_weight).numpy()
        for rows in ranges:
            before, lambda2 = _top_eigenvector_distance(h_np[rows], abar[rows, rows])
            after, _ = _top_eigenvector_distance(stepped[rows], abar[rows, rows])
            bound = 1 - alpha * lambda2
            assert after <= bound * before + 1e-9, (after, before, bound)


def test_proposition2_disconnected_class_need_not_shrink():
    """Two components in one class: lambda_2 = 0, and features constant per component (scaled by
    sqrt(d)) sit at a fixed point away from the top eigenvector: the distance stays the same."""
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    h = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]], dtype=torch.float64)
    out = AlignmentConv(alpha=0.3, detach_targets=True)(h, edge_index)
    torch.testing.assert_close(out, h)


# -- Proposition 3: the contrastive step vanishes at the equilibrium Abar == Ahat ------------------


def _doubly_stochastic(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random symmetric matrix with zero diagonal whose rows sum to 1 (symmetric Sinkhorn)."""
    m = torch.rand(n, n, generator=gen, dtype=torch.float64) + 0.2
    m = m + m.T
    m.fill_diagonal_(0)
    for _ in range(500):
        r = m.sum(1).rsqrt()
        m = r[:, None] * m * r[None, :]
    return m


def test_proposition3_equilibrium(gen):
    """Pick features whose affinity softmax equals Abar: Gram G_ij = log Abar_ij (i != j), with a
    large enough diagonal to be positive definite. Then the contrastive step is zero in both modes;
    perturbed features move."""
    n = 8
    abar = _doubly_stochastic(n, gen)
    torch.testing.assert_close(abar.sum(1), torch.ones(n, dtype=torch.float64))
    gram = abar.clamp_min(1e-300).log()
    gram.fill_diagonal_(0)
    gram += torch.eye(n, dtype=torch.float64) * (gram.abs().sum(1).max() + 1)
    h = torch.linalg.cholesky(gram)  # h @ h.T == gram
    ahat = torch.softmax((h @ h.T).fill_diagonal_(float("-inf")), 1)
    torch.testing.assert_close(ahat, abar, atol=1e-12, rtol=0)

    dst, src = (abar > 0).nonzero().T
    edge_index, edge_weight = torch.stack([src, dst]), abar[dst, src]
    for detach in (False, True):
        conv = ContrastiveConv(alpha=1.0, detach_targets=detach, normalize=False)
        step = conv.step(h, edge_index, edge_weight)
        assert step.abs().max() < 1e-10
        moved = conv.step(h + 0.1 * torch.randn(h.shape, generator=gen, dtype=h.dtype),
                          edge_index, edge_weight)
        assert moved.abs().max() > 1e-3
