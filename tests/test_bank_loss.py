"""SimCLRLoss / AttentionSimCLRLoss with a memory bank: lightly's values and gradients once the
bank is full, exact resumption from state_dict, the kNN path's estimator, and clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from mp_contrastive.knn import BankIndex
from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss

SIZE, DIM, BATCH = 64, 8, 16


def batches(count, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, BATCH, DIM, generator=gen, dtype=dtype).unbind(0) for _ in range(count)]


def value_and_grads(loss, z0, z1):
    z0, z1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    value = loss(z0, z1)
    return (value.detach(), *torch.autograd.grad(value, [z0, z1]))


def test_equals_lightly_once_the_bank_is_full():
    ours = SimCLRLoss(0.3, memory_bank_size=SIZE)
    theirs = NTXentLoss(0.3, memory_bank_size=(SIZE, DIM)).double()
    for step, (z0, z1) in enumerate(batches(SIZE // BATCH + 5)):
        got, want = value_and_grads(ours, z0, z1), value_and_grads(theirs, z0, z1)
        if step == 0:  # an empty bank: the positive alone, loss 0 and no gradient
            assert got[0].item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in got[1:])
        if step >= SIZE // BATCH:  # both banks hold the same keys from here on
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ours.memory.bank.bank.dtype == torch.float64  # dim and dtype from the first batch


def test_lightly_size_pair_and_sum_reduction():
    ours = SimCLRLoss(0.5, reduction="sum", memory_bank_size=(SIZE, DIM)).double()
    theirs = NTXentLoss(0.5, memory_bank_size=(SIZE, DIM)).double()
    for step, (z0, z1) in enumerate(batches(SIZE // BATCH + 2, seed=3)):
        got, want = value_and_grads(ours, z0, z1), value_and_grads(theirs, z0, z1)
        if step >= SIZE // BATCH:
            torch.testing.assert_close(got[0], want[0] * BATCH, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("normalize", ["negatives", "positives", "neighbors"])
def test_attention_at_beta_zero_is_the_plain_bank_loss(normalize):
    plain = SimCLRLoss(0.4, memory_bank_size=SIZE)
    attention = AttentionSimCLRLoss(0.4, beta=0.0, normalize=normalize, memory_bank_size=SIZE)
    for z0, z1 in batches(6, seed=1):
        for a, b in zip(value_and_grads(attention, z0, z1), value_and_grads(plain, z0, z1),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_official_attention_weights_each_anchor_term():
    """normalize="positives": w_i = e^{beta cos(q0_i, q1_i)} / mean_j(...), each anchor's whole
    term weighted: sum_i w_i [log(e^{s_i} + sum_k e^{l_ik}) - s_i] / B, by autograd."""
    loss = AttentionSimCLRLoss(0.4, beta=2.0, normalize="positives", memory_bank_size=SIZE)
    gen = torch.Generator().manual_seed(5)
    for z0, z1 in batches(SIZE // BATCH + 2, seed=2):
        bank = loss.memory.bank.features.clone().reshape(-1, DIM).double()
        q = torch.randn(2 * BATCH, 3, generator=gen, dtype=torch.float64)
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        value = loss(a, b, attention_features=q)
        got = (value.detach(), *torch.autograd.grad(value, [a, b]))
        x0, x1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        n0, n1 = F.normalize(x0, dim=1), F.normalize(x1, dim=1)
        score = 2.0 * F.cosine_similarity(q[:BATCH], q[BATCH:])
        w = (score - (torch.logsumexp(score, 0) - math.log(BATCH))).exp()
        s = (n0 * n1).sum(1) / 0.4
        logits = torch.cat([s.unsqueeze(1), n0 @ bank.T / 0.4], 1)
        expected = (w * (torch.logsumexp(logits, 1) - s)).mean()
        want = (expected.detach(), *torch.autograd.grad(expected, [x0, x1]))
        for x, y in zip(got, want, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("affinity", ["dense", "knn"])
def test_resume_from_state_dict_is_bit_exact(affinity):
    def make():
        index = BankIndex(k=8, num_samples=16, nlist=2, retrain_every=3)
        return SimCLRLoss(0.3, memory_bank_size=SIZE,
                          affinity=index if affinity == "knn" else "dense")

    data = batches(14, seed=4, dtype=torch.float32)
    straight = make()
    expected = [value_and_grads(straight, z0, z1) for z0, z1 in data]
    first = make()
    for z0, z1 in data[:7]:
        value_and_grads(first, z0, z1)
    state = {k: v.clone() for k, v in first.state_dict().items()}
    resumed = make()  # a fresh loss: the bank's dim and the index's cells come from the state
    resumed.load_state_dict(state)
    if affinity == "knn":
        assert resumed.memory.index.trained
    for (z0, z1), want in zip(data[7:], expected[7:], strict=True):
        for a, b in zip(value_and_grads(resumed, z0, z1), want, strict=True):
            assert torch.equal(a, b)


def test_knn_estimator_converges_to_the_dense_loss():
    """The kNN head + sampled tail: over many independent draws the mean loss and the mean
    gradient approach the dense ones (the partition function's estimate is unbiased; the log and
    the self-normalised gradient carry an O(1/num_samples) bias, well inside these tolerances)."""
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(8, DIM, generator=gen), dim=1)
    keys = centres[torch.randint(0, 8, (1024,), generator=gen)] + 0.3 * torch.randn(1024, DIM,
                                                                                       generator=gen)
    z0, z1 = (centres[torch.randint(0, 8, (BATCH,), generator=gen)]
              + 0.3 * torch.randn(BATCH, DIM, generator=gen) for _ in range(2))
    dense = SimCLRLoss(0.2, memory_bank_size=1024)
    knn = SimCLRLoss(0.2, memory_bank_size=1024,
                     affinity=BankIndex(k=4, num_samples=8, nlist=8, seed=1))
    for loss in (dense, knn):
        loss.memory.push(keys)
    h = torch.cat([z0, z1])
    exact = dense.memory.contrast(*F.normalize(h, dim=1).div(0.2**0.5).chunk(2), 0.2)
    draws = [knn.memory.contrast(*F.normalize(h, dim=1).div(0.2**0.5).chunk(2), 0.2)
             for _ in range(400)]
    mean_energy = sum(d.energy for d in draws) / len(draws)
    mean_grad = sum(d.grad_anchor for d in draws) / len(draws)
    assert abs(mean_energy / exact.energy - 1) < 0.01
    assert F.cosine_similarity(mean_grad.flatten(), exact.grad_anchor.flatten(), 0) > 0.999
    # One draw is noisy (8 samples a row), the mean over many is not: the estimator, not luck.
    single = F.cosine_similarity(draws[0].grad_anchor.flatten(), exact.grad_anchor.flatten(), 0)
    assert single < F.cosine_similarity(mean_grad.flatten(), exact.grad_anchor.flatten(), 0)


def test_bank_errors_name_the_problem():
    with pytest.raises(ValueError, match="memory_bank_size"):
        SimCLRLoss(memory_bank_size=-1)
    with pytest.raises(TypeError, match="memory_bank_size"):
        SimCLRLoss(memory_bank_size=2.5)
    with pytest.raises(ValueError, match="memory_bank_size"):
        SimCLRLoss(memory_bank_size=(4, 2, 1))
    with pytest.raises(ValueError, match="affinity"):
        SimCLRLoss(affinity="knn")
    with pytest.raises(ValueError, match="affinity"):
        SimCLRLoss(memory_bank_size=8, affinity="sparse")
    with pytest.raises(ValueError, match="reduction"):
        SimCLRLoss(memory_bank_size=8, reduction="none")
    loss = SimCLRLoss(memory_bank_size=8)
    z = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="two views"):
        loss(z, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="affinity_index"):
        loss(z, z, affinity_index=torch.zeros(2, 1, dtype=torch.long))
    loss(z, z.detach() + 1)
    with pytest.raises(ValueError, match="dim"):
        loss(torch.randn(4, 5), torch.randn(4, 5))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(loss(z, torch.randn(4, 3)), z, create_graph=True)
    with pytest.raises(ValueError, match="attention features"):
        AttentionSimCLRLoss(memory_bank_size=8)(z, z.detach(), attention_features=torch.randn(8, 2))


@pytest.mark.parametrize("tiny_tiles", [False, True])
def test_sample_ids_leave_an_anchors_own_keys_out(tiny_tiles):
    """Bank entries pushed with an anchor's own id are not its negatives: the value and gradient
    of a masked cross-entropy, by autograd (dense plain and tiled paths)."""
    from mp_contrastive.nn.functional import Tiling

    tiling = Tiling(elements=5, threshold=0) if tiny_tiles else Tiling()
    loss = SimCLRLoss(0.3, memory_bank_size=SIZE, tiling=tiling)
    ids_per_step = [torch.arange(BATCH) % 10 + 10 * (step % 3) for step in range(8)]
    for step, (z0, z1) in enumerate(batches(8, seed=6)):
        ids = ids_per_step[step]
        stored = loss.memory.bank
        bank, bank_ids = stored.features.clone(), stored.ids[:len(stored)].clone()
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        value = loss(a, b, sample_ids=ids)
        got = (value.detach(), *torch.autograd.grad(value, [a, b]))
        x0, x1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        n0, n1 = F.normalize(x0, dim=1), F.normalize(x1, dim=1)
        s = (n0 * n1).sum(1, keepdim=True) / 0.3
        negatives = (n0 @ bank.reshape(-1, DIM).double().T / 0.3).masked_fill(
            ids.unsqueeze(1) == bank_ids.unsqueeze(0), -math.inf)
        expected = (torch.logsumexp(torch.cat([s, negatives], 1), 1) - s.squeeze(1)).mean()
        want = (expected.detach(), *torch.autograd.grad(expected, [x0, x1]))
        for x, y in zip(got, want, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
        if step >= 3:
            assert bool((ids.unsqueeze(1) == bank_ids.unsqueeze(0)).any())  # exclusions happened


def test_knn_graph_never_contains_excluded_pairs():
    index = BankIndex(k=6, num_samples=32, nlist=4)
    loss = SimCLRLoss(0.3, memory_bank_size=256, affinity=index)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        ids = torch.randint(0, 40, (BATCH,), generator=gen)
        z0, z1 = torch.randn(2, BATCH, DIM, generator=gen).unbind(0)
        bank = loss.memory.bank
        if index.trained:
            q = F.normalize(z0, dim=1) / 0.3
            exclude = bank.same_sample(ids)
            (src, dst), _ = index.graph(bank.bank, len(bank), q, exclude)
            assert exclude.size(1) > 0
            pairs = set(zip(exclude[0].tolist(), exclude[1].tolist(), strict=True))
            assert not pairs & set(zip(src.tolist(), dst.tolist(), strict=True))
        loss(z0.requires_grad_(), z1, sample_ids=ids)
    assert index.trained
