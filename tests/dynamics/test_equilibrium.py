"""Proposition 3's equilibrium gap against its closed form, dense numpy and the SimCLR loss."""

import math

import numpy as np
import pytest
import torch

from mp_contrastive.dynamics import equilibrium_gap
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.nn import ContrastiveConv
from tests.dynamics.known_graphs import path


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


def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 2)
    ei = path(4)
    with pytest.raises(ValueError, match="self loops"):
        equilibrium_gap(x, torch.tensor([[0], [0]]))
    with pytest.raises(ValueError, match="edge_index"):
        equilibrium_gap(x, torch.tensor([[0], [9]]))
    with pytest.raises(ValueError, match="reduction"):
        equilibrium_gap(x, ei, reduction="sum")
    with pytest.raises(ValueError, match="anchors"):
        equilibrium_gap(x, ei, anchors=torch.tensor([4]))
