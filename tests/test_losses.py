import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from mp_contrastive.graph import view_sample_index
from mp_contrastive.losses import (
    AttentionSimCLRLoss,
    MessagePassingLoss,
    SimCLRLoss,
)
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv, ContrastiveConv, UniformityConv
from tests.reference import complete_graph


def encoder(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 8)).double()


def value_and_grads(model, loss_fn, *inputs):
    model.zero_grad()
    loss = loss_fn(*[model(x) for x in inputs])
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same(a, b, atol=1e-10):
    value_a, grads_a = a
    value_b, grads_b = b
    torch.testing.assert_close(value_a, value_b, atol=atol, rtol=0)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, atol=atol, rtol=0)


@pytest.mark.parametrize("batch_size", [2, 8, 33])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_simclr_equals_plain_reference_and_lightly(gen, batch_size, temperature):
    model = encoder()
    x0 = torch.randn(batch_size, 6, generator=gen, dtype=torch.float64)
    x1 = x0 + 0.3 * torch.randn(batch_size, 6, generator=gen, dtype=torch.float64)
    sample = view_sample_index(batch_size, 2)
    ours = value_and_grads(model, SimCLRLoss(temperature), x0, x1)
    plain = value_and_grads(
        model, lambda a, b: plain_nt_xent(torch.cat([a, b]), sample, temperature), x0, x1)
    lightly = value_and_grads(model, NTXentLoss(temperature), x0, x1)
    assert_same(ours, plain)
    assert_same(ours, lightly)
    as_sample = value_and_grads(
        model, lambda a, b: SimCLRLoss(temperature)(torch.cat([a, b]), sample), x0, x1)
    assert_same(ours, as_sample)


def test_simclr_sum_reduction(gen):
    z0, z1 = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(SimCLRLoss(reduction="sum")(z0, z1),
                               SimCLRLoss(reduction="mean")(z0, z1) * 10)


@pytest.mark.parametrize("sample", [[0, 1, 2, 0, 1, 2, 0, 1, 2],  # 3 views
                                    [0, 1, 0, 1, 0, 2, 2, 0, 1]])  # unequal (multi-crop)
def test_simclr_multiview_equals_plain_reference(gen, sample):
    sample = torch.tensor(sample)
    model = encoder()
    x = torch.randn(len(sample), 6, generator=gen, dtype=torch.float64)
    ours = value_and_grads(model, lambda z: SimCLRLoss(0.3)(z, sample), x)
    plain = value_and_grads(model, lambda z: plain_nt_xent(z, sample, 0.3), x)
    assert_same(ours, plain)


@pytest.mark.parametrize("noise,temperature", [(1e-3, 0.05), (1e-2, 0.1), (0.1, 0.5)])
def test_simclr_float32_gradient_keeps_precision(gen, noise, temperature):
    """Near convergence (views almost equal, low temperature) the update is a small difference of
    large terms. The step folds Abar into the softmax matrix before the matmul and the loss uses
    -step/alpha, not H - conv(H); in float32 the gradient then stays within 5e-5 of the float64
    reference in the hardest case (forming H - conv(H) by subtraction gave 3e-3 there)."""
    z0 = torch.randn(64, 32, generator=gen, dtype=torch.float64)
    z1 = z0 + noise * torch.randn(64, 32, generator=gen, dtype=torch.float64)
    ref = [z.clone().requires_grad_() for z in (z0, z1)]
    plain_nt_xent(torch.cat(ref), view_sample_index(64, 2), temperature).backward()
    ours = [z.float().requires_grad_() for z in (z0, z1)]
    SimCLRLoss(temperature)(*ours).backward()
    for a, b in zip(ours, ref, strict=True):
        rel = (a.grad.double() - b.grad).norm() / b.grad.norm()
        assert rel < 5e-5, rel


@pytest.mark.parametrize("normalize", ["negatives", "positives", "neighbors"])
@pytest.mark.parametrize("sample", [None, [0, 1, 2, 0, 1, 2, 0, 1, 2]])
def test_attention_beta_zero_is_simclr(gen, normalize, sample):
    model = encoder()
    if sample is None:
        x = torch.randn(2, 7, 6, generator=gen, dtype=torch.float64)
        inputs = (x[0], x[1])
        simclr, attention = SimCLRLoss(0.5), AttentionSimCLRLoss(0.5, 0.0, normalize)
    else:
        sample = torch.tensor(sample)
        inputs = (torch.randn(9, 6, generator=gen, dtype=torch.float64),)
        simclr = lambda z: SimCLRLoss(0.5)(z, sample)  # noqa: E731
        attention = lambda z: AttentionSimCLRLoss(0.5, 0.0, normalize)(z, sample)  # noqa: E731
    assert_same(value_and_grads(model, attention, *inputs), value_and_grads(model, simclr, *inputs))


def official_attention_loss(z, backbone, tau, multiplier=2):
    """A transcription of NTXent.forward in GRAPH-ATTENTION/models/losses.py of
    PKU-ML/Message-Passing-Contrastive-Learning (single process, cur_iter >= 0)."""
    n = z.shape[0]
    z_2 = F.normalize(backbone, p=2, dim=1)
    z = F.normalize(z, p=2, dim=1) / np.sqrt(tau)
    logits = z @ z.t()
    logits[np.arange(n), np.arange(n)] = -1e9
    m = multiplier
    labels = (np.repeat(np.arange(n), m) + np.tile(np.arange(m) * n // m, n)) % n
    labels = labels.reshape(n, m)[:, 1:].reshape(-1)
    logprob = F.log_softmax(logits, dim=1)
    sims = torch.exp(z_2 @ z_2.t() + 1)
    logprob = torch.mul(logprob, sims.detach())
    weight_sum = sims[np.repeat(np.arange(n), m - 1), labels].sum().item()
    return -logprob[np.repeat(np.arange(n), m - 1), labels].sum() / weight_sum / (m - 1)


@pytest.mark.parametrize("temperature", [0.2, 0.7])
def test_attention_positives_equals_official_code(gen, temperature):
    model = encoder()
    backbone_model = torch.nn.Linear(6, 10).double()
    x0 = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    x1 = x0 + 0.5 * torch.randn(12, 6, generator=gen, dtype=torch.float64)
    backbone = backbone_model(torch.cat([x0, x1])).detach()
    loss = AttentionSimCLRLoss(temperature, beta=1.0, normalize="positives")
    ours = value_and_grads(model, lambda a, b: loss(a, b, attention_features=backbone), x0, x1)
    official = value_and_grads(
        model, lambda a, b: official_attention_loss(torch.cat([a, b]), backbone, temperature),
        x0, x1)
    assert_same(ours, official)


def paper_attention_loss(z, sample, tau, beta):
    """Paper eq. 15 as a plain loss: positives reweighted by exp(beta H_i.H_j) / mean over
    negatives (detached), times Abar; uniformity unchanged; mean over anchors."""
    h = F.normalize(z, dim=1) / math.sqrt(tau)
    s = h @ h.T
    n = z.size(0)
    eye = torch.eye(n, dtype=torch.bool)
    positive = (sample[:, None] == sample[None, :]) & ~eye
    negative = ~positive & ~eye
    abar = positive / positive.sum(1, keepdim=True)
    with torch.no_grad():
        bs = beta * s
        log_mean = torch.logsumexp(bs.masked_fill(~negative, -math.inf), 1) - \
            negative.sum(1).double().log()
        w = abar * torch.exp(bs - log_mean[:, None])
    lse = torch.logsumexp(s.masked_fill(eye, -math.inf), 1)
    return (-(w * s).sum(1) + lse).mean()


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("views", [2, 3])
def test_attention_negatives_equals_paper_formula(gen, beta, views):
    model = encoder()
    x = torch.randn(5 * views, 6, generator=gen, dtype=torch.float64)
    sample = view_sample_index(5, views)
    loss = AttentionSimCLRLoss(0.5, beta=beta, normalize="negatives")
    ours = value_and_grads(model, lambda z: loss(z, sample), x)
    paper = value_and_grads(model, lambda z: paper_attention_loss(z, sample, 0.5, beta), x)
    assert_same(ours, paper)


@pytest.mark.parametrize("conv", [
    AlignmentConv(alpha=0.3), AlignmentConv(alpha=0.7, detach_targets=True),
    UniformityConv(alpha=0.4), UniformityConv(alpha=0.2, kernel="spectral", detach_targets=True),
    ContrastiveConv(alpha=0.5), ContrastiveConv(alpha=0.9, detach_targets=True),
    AttentionAlignmentConv(alpha=0.6, beta=1.5),
], ids=repr)
def test_message_passing_loss_value_and_gradient(gen, conv):
    """L_mp = 1/(2 alpha) ||H - sg(conv(H))||^2 and dL_mp/dH = grad E(H) (E's mode: detached
    energies differentiate only their anchor side, which conv.step already encodes)."""
    h = torch.randn(8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    args = () if isinstance(conv, UniformityConv) else (view_sample_index(4, 2),)
    if args:
        from mp_contrastive.graph import augmentation_edges

        args = (augmentation_edges(args[0])[0],)
    loss = MessagePassingLoss(conv)(h, *args)
    out = conv(h, *args).detach()
    torch.testing.assert_close(loss, (h - out).pow(2).sum().detach() / (2 * conv.alpha))
    (grad,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(grad, (h - out).detach() / conv.alpha, atol=1e-10, rtol=0)
    if not getattr(conv, "detach_targets", False) and not isinstance(conv,
                                                                     AttentionAlignmentConv):
        (energy_grad,) = torch.autograd.grad(conv.energy(h, *args), h)
        torch.testing.assert_close(grad, energy_grad, atol=1e-10, rtol=0)


def test_message_passing_loss_bipartite(gen):
    bank = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    h = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    conv = UniformityConv(alpha=0.5)
    loss = MessagePassingLoss(conv)((bank, h))
    (grad,) = torch.autograd.grad(loss, h)
    (expected,) = torch.autograd.grad(conv.energy((bank, h)), h)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)
    sparse = MessagePassingLoss(conv)((bank, h), complete_graph(10)[:, :0])
    assert sparse == 0  # no affinity edges: no update


def test_repr():
    assert repr(SimCLRLoss()) == "SimCLRLoss(temperature=0.5, reduction='mean')"
    assert "normalize='positives'" in repr(AttentionSimCLRLoss(normalize="positives"))
    assert repr(MessagePassingLoss(AlignmentConv())) == \
        "MessagePassingLoss(AlignmentConv(alpha=0.5))"


@pytest.mark.parametrize("attention", [None, "negatives"])
def test_sparse_affinity_graph_with_every_pair_is_the_dense_loss(gen, attention):
    model = encoder()
    x0 = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    x1 = x0 + 0.3 * torch.randn(7, 6, generator=gen, dtype=torch.float64)
    loss = SimCLRLoss(0.3) if attention is None else AttentionSimCLRLoss(0.3, normalize=attention)
    dense = value_and_grads(model, loss, x0, x1)
    every_pair = complete_graph(14)
    sparse = value_and_grads(model, lambda a, b: loss(a, b, affinity_index=every_pair), x0, x1)
    assert_same(sparse, dense)
    weighted = value_and_grads(model, lambda a, b: loss(
        a, b, affinity_index=every_pair,
        affinity_weight=torch.ones(every_pair.size(1), dtype=torch.float64)), x0, x1)
    assert_same(weighted, dense)


def test_sparse_affinity_graph_is_a_weighted_log_sum_exp_over_its_edges(gen):
    """Each anchor's partition function runs over its affinity edges only, each term scaled by
    the edge's importance weight: an independent autograd formula of that NT-Xent."""
    z0 = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    z1 = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    positives = torch.stack([torch.arange(10), (torch.arange(10) + 5) % 10])
    negatives = torch.tensor([[3, 7, 9, 0, 2, 8], [0, 0, 1, 4, 6, 6]])
    index = torch.cat([negatives, positives], 1)
    weight = torch.cat([torch.rand(6, generator=gen, dtype=torch.float64) + 0.5,
                        torch.ones(10, dtype=torch.float64)])
    ours = SimCLRLoss(0.5)(z0, z1, affinity_index=index, affinity_weight=weight)

    h = F.normalize(torch.cat([z0, z1]), dim=1) / math.sqrt(0.5)
    logit = (h[index[0]] * h[index[1]]).sum(1) + weight.log()
    lse = torch.stack([torch.logsumexp(logit[index[1] == i], 0) for i in range(10)])
    alignment = (h[positives[0]] * h[positives[1]]).sum(1)
    reference = (lse - alignment).mean()
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(ours, (z0, z1)), torch.autograd.grad(reference, (z0, z1)),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_sparse_affinity_graph_bad_input(gen):
    z0, z1 = torch.randn(2, 4, 3, generator=gen)
    with pytest.raises(ValueError, match="'affinity_index' is out of range"):
        SimCLRLoss()(z0, z1, affinity_index=torch.tensor([[0], [8]]))
    with pytest.raises(ValueError, match=r"'affinity_weight' must have shape \[num_edges\] = \[1\]"):
        SimCLRLoss()(z0, z1, affinity_index=torch.tensor([[0], [1]]),
                     affinity_weight=torch.ones(2))
    with pytest.raises(TypeError, match="'affinity_weight' needs 'affinity_index'"):
        AttentionSimCLRLoss()(z0, z1, affinity_weight=torch.ones(2))
