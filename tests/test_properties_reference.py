"""Valid random input into the public entry points -> the result of an independent reference
(issue 26): autograd of the plain dense energies in :mod:`tests.reference`, PyG's ``GCNConv``,
lightly's ``NTXentLoss``, brute-force top-k, plain-Python queues and histories. Everything runs in
float64 and must agree to 1e-6 (relative where the values span many scales).

Also the two classes of input the user sweep found answered wrongly: zero weights (an edge of
weight zero must act as no edge, all-zero weights as no edges at all) and features of extreme
scale (1e-13 .. 1e100: every cosine-normalised loss or score is scale-free and must give the
scale-1 result, not the one ``F.normalize``'s ``eps`` or an overflowing square makes of it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from lightly.loss import NTXentLoss
from torch import Tensor
from torch_geometric.nn import GCNConv

from mp_contrastive import AttentionSimCLRLoss, MessagePassingLoss, SimCLRLoss, augmentation_graph
from mp_contrastive.graph import augmentation_edges, sphere_projection, view_sample_index
from mp_contrastive.knn import (
    BACKENDS,
    AffinityIndex,
    affinity_graph,
    choose_backend,
    sampled_affinity_graph,
)
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.losses import descent_loss
from mp_contrastive.memory import (
    AGGREGATIONS,
    MultiStageMemory,
    NegativeBank,
    StageAggregation,
    aggregate_stages,
)
from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv, ContrastiveConv, UniformityConv
from tests.properties import FAST, THOROUGH, Batch, batches, extreme_scales, randn, seeds, zero_some
from tests.reference import (
    contrastive_energy,
    dense,
    step_from_autograd,
    sym_normalize,
    uniformity_energy,
)

TOL = {"atol": 1e-6, "rtol": 1e-6}


def assert_close(actual: Tensor, expected: Tensor, **tol: float) -> None:
    torch.testing.assert_close(actual, expected, **(tol or TOL))


# -- operators against autograd of the dense energies ---------------------------------------------
@THOROUGH
@given(batch=batches(), kernel=st.sampled_from(["infonce", "spectral"]), detach=st.booleans(),
       alpha=st.floats(0.1, 1.0), seed=seeds, all_zero=st.booleans())
def test_uniformity_step_is_the_gradient_step_and_zero_weights_are_no_edges(
        batch: Batch, kernel: str, detach: bool, alpha: float, seed: int, all_zero: bool) -> None:
    n = batch.num_nodes
    weight, keep = zero_some(batch.affinity_weight, seed, all_zero)
    anchor = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    # The reference knows nothing of zero weights: its neighbour sets are the edges kept.
    kept = batch.affinity_index[:, keep]
    mask = dense(kept, None, n) > 0
    w = dense(kept, weight[keep], n).clamp_min(1e-300)
    conv = UniformityConv(alpha=alpha, kernel=kernel, detach_targets=detach)
    out = conv(batch.x, batch.affinity_index, weight, anchor_weight=anchor)
    expected = step_from_autograd(
        lambda h: uniformity_energy(h, h, mask, w, anchor, kernel, detach), batch.x, alpha)
    assert_close(out, expected)
    assert_close(out, conv(batch.x, kept, weight[keep], anchor_weight=anchor))


@FAST
@given(batch=batches(), kernel=st.sampled_from(["infonce", "spectral"]), detach=st.booleans(),
       seed=seeds, all_zero=st.booleans())
def test_contrastive_step_is_the_gradient_step(batch: Batch, kernel: str, detach: bool, seed: int,
                                               all_zero: bool) -> None:
    n = batch.num_nodes
    graph = augmentation_graph(sample=batch.sample, dtype=torch.float64)
    abar = sym_normalize(dense(graph.edge_index, graph.edge_weight, n))
    weight, keep = zero_some(batch.affinity_weight, seed, all_zero)
    kept = batch.affinity_index[:, keep]
    mask = dense(kept, None, n) > 0
    w = dense(kept, weight[keep], n).clamp_min(1e-300)
    conv = ContrastiveConv(alpha=0.6, kernel=kernel, detach_targets=detach)
    out = conv(batch.x, graph.edge_index, graph.edge_weight, batch.affinity_index, weight)
    expected = step_from_autograd(
        lambda h: contrastive_energy(h, abar, mask, kernel, detach, w), batch.x, 0.6)
    assert_close(out, expected)


@FAST
@given(batch=batches(), seed=seeds)
def test_message_passing_loss_gradient_is_the_energy_gradient(batch: Batch, seed: int) -> None:
    n = batch.num_nodes
    mask = dense(batch.affinity_index, None, n) > 0
    w = dense(batch.affinity_index, batch.affinity_weight, n).clamp_min(1e-300)
    h = batch.x.clone().requires_grad_()
    MessagePassingLoss(UniformityConv(alpha=0.5))(h, batch.affinity_index,
                                                  batch.affinity_weight).backward()
    ref = batch.x.clone().requires_grad_()
    uniformity_energy(ref, ref, mask, w, None, "infonce", False).backward()
    assert_close(h.grad, ref.grad)


@FAST
@given(batch=batches(), alpha=st.floats(0.1, 2.0), seed=seeds)
def test_descent_loss_has_value_and_gradient_minus_step_over_alpha(batch: Batch, alpha: float,
                                                                   seed: int) -> None:
    h = batch.x.clone().requires_grad_()
    step = randn(seed, *batch.x.shape)
    value = torch.tensor(float(seed % 97), dtype=torch.float64)
    loss = descent_loss(h, step, alpha, value)
    loss.backward()
    assert float(loss) == float(value)
    assert_close(h.grad, -step / alpha)


@FAST
@given(batch=batches(), seed=seeds, self_loops=st.booleans())
def test_alignment_gcn_form_equals_pyg_gcnconv(batch: Batch, seed: int, self_loops: bool) -> None:
    """``AlignmentConv(alpha=1, detach_targets=True)`` is GCN propagation: GCNConv with an identity
    weight and no bias, zero-weight edges included (both keep them in the degrees as zeros)."""
    weight, _ = zero_some(batch.affinity_weight, seed, all_zero=False)
    # A symmetric graph, as GCN's normalisation assumes.
    index = torch.cat([batch.affinity_index, batch.affinity_index.flip(0)], 1)
    weight = torch.cat([weight, weight])
    dim = batch.x.size(1)
    gcn = GCNConv(dim, dim, bias=False, add_self_loops=self_loops).double()
    with torch.no_grad():
        gcn.lin.weight.copy_(torch.eye(dim, dtype=torch.float64))
    ours = AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=self_loops)
    assert_close(ours(batch.x, index, weight), gcn(batch.x, index, weight))


# -- attention: zero-weight edges, no edges, scale ------------------------------------------------
@THOROUGH
@given(batch=batches(), normalize=st.sampled_from(["negatives", "positives", "neighbors"]),
       score=st.sampled_from(["dot", "cosine"]), beta=st.floats(0.0, 3.0), seed=seeds)
def test_attention_zero_weight_edges_are_no_edges(batch: Batch, normalize: str, score: str,
                                                  beta: float, seed: int) -> None:
    graph = augmentation_graph(sample=batch.sample, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    n = batch.num_nodes
    extra = torch.randint(0, n, (2, 3), generator=gen)  # any pairs, self pairs included
    index = torch.cat([graph.edge_index, extra], 1)
    weight = torch.cat([graph.edge_weight, torch.zeros(3, dtype=torch.float64)])
    conv = AttentionAlignmentConv(alpha=0.5, beta=beta, normalize=normalize, score=score)
    assert_close(conv(batch.x, index, weight), conv(batch.x, graph.edge_index, graph.edge_weight))
    _, attention = conv.attention(batch.x, index, weight)
    assert bool((attention[-3:] == 0).all())


@FAST
@given(batch=batches(), normalize=st.sampled_from(["negatives", "positives", "neighbors"]))
def test_attention_with_no_edges_is_the_identity(batch: Batch, normalize: str) -> None:
    none = torch.empty(2, 0, dtype=torch.long)
    assert_close(AttentionAlignmentConv(normalize=normalize)(batch.x, none), batch.x)


@FAST
@given(batch=batches(), normalize=st.sampled_from(["negatives", "positives", "neighbors"]),
       scale=extreme_scales)
def test_cosine_attention_is_scale_free(batch: Batch, normalize: str, scale: float) -> None:
    graph = augmentation_graph(sample=batch.sample, dtype=torch.float64)
    conv = AttentionAlignmentConv(beta=2.0, normalize=normalize, score="cosine")
    _, ours = conv.attention(batch.x, graph.edge_index, attention_x=batch.x * scale)
    _, unit = conv.attention(batch.x, graph.edge_index, attention_x=batch.x)
    assert_close(ours, unit)


# -- the losses against lightly, and scale -------------------------------------------------------
def value_and_grads(loss_fn: Callable[[Tensor, Tensor], Tensor], z0: Tensor,
                    z1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    z0, z1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    value = loss_fn(z0, z1)
    value.backward()
    return value.detach(), z0.grad, z1.grad


@FAST
@given(seed=seeds, size=st.integers(2, 8), dim=st.integers(2, 6), temperature=st.floats(0.1, 1.0),
       reduction=st.sampled_from(["mean", "sum"]))
def test_simclr_equals_lightly_ntxent(seed: int, size: int, dim: int, temperature: float,
                                      reduction: str) -> None:
    z0, z1 = randn(seed, size, dim), randn(seed + 1, size, dim)
    ours = value_and_grads(SimCLRLoss(temperature, reduction=reduction), z0, z1)
    theirs = value_and_grads(NTXentLoss(temperature), z0, z1)
    factor = 2 * size if reduction == "sum" else 1  # lightly averages over the 2B views
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b * factor)
    plain = value_and_grads(
        lambda a, b: plain_nt_xent(torch.cat([a, b]), view_sample_index(size, 2), temperature,
                                   reduction), z0, z1)
    for a, b in zip(ours, plain, strict=True):
        assert_close(a, b)


@FAST
@given(batch=batches(), scale=extreme_scales, temperature=st.floats(0.1, 1.0))
def test_cosine_losses_are_scale_free(batch: Batch, scale: float, temperature: float) -> None:
    """loss(s z) = loss(z), hence grad(s z) = grad(z) / s, at scales F.normalize gets wrong."""
    for loss in (SimCLRLoss(temperature), AttentionSimCLRLoss(temperature),
                 AttentionSimCLRLoss(temperature, normalize="positives"),
                 AttentionSimCLRLoss(temperature, normalize="neighbors", score="cosine")):
        z = batch.x.clone().requires_grad_()
        zs = (batch.x * scale).requires_grad_()
        unit, scaled = loss(z, batch.sample), loss(zs, batch.sample)
        unit.backward()
        scaled.backward()
        assert_close(scaled.detach(), unit.detach())
        assert_close(zs.grad * scale, z.grad)
    assert_close(plain_nt_xent(batch.x * scale, batch.sample, temperature),
                 plain_nt_xent(batch.x, batch.sample, temperature))


@FAST
@given(batch=batches(), scale=extreme_scales)
def test_attention_features_are_scale_free_for_cosine_scores(batch: Batch, scale: float) -> None:
    loss = AttentionSimCLRLoss(normalize="positives", beta=1.5)
    q = randn(7, batch.num_nodes, 4)
    assert_close(loss(batch.x, batch.sample, q * scale), loss(batch.x, batch.sample, q))


@FAST
@given(batch=batches(), normalize=st.sampled_from(["negatives", "positives", "neighbors"]))
def test_attention_loss_at_beta_zero_is_simclr(batch: Batch, normalize: str) -> None:
    ours = AttentionSimCLRLoss(beta=0.0, normalize=normalize)(batch.x, batch.sample)
    assert_close(ours, SimCLRLoss()(batch.x, batch.sample))
    per_view = AttentionSimCLRLoss(normalize=normalize, reduction="none")(batch.x, batch.sample)
    assert_close(per_view.sum(), AttentionSimCLRLoss(normalize=normalize, reduction="sum")(
        batch.x, batch.sample))


@FAST
@given(seed=seeds, scale=extreme_scales, temperature=st.floats(0.05, 2.0))
def test_sphere_projection_is_the_scaled_unit_direction(seed: int, scale: float,
                                                        temperature: float) -> None:
    z = randn(seed, 5, 4)
    expected = z / z.norm(dim=1, keepdim=True) / math.sqrt(temperature)
    assert_close(sphere_projection(z * scale, temperature), expected)
    assert bool((sphere_projection(torch.zeros(2, 3), temperature) == 0).all())


# -- graphs --------------------------------------------------------------------------------------
@FAST
@given(counts=st.lists(st.integers(2, 4), min_size=1, max_size=5), seed=seeds)
def test_augmentation_graph_is_the_normalised_same_sample_matrix(counts: list[int],
                                                                 seed: int) -> None:
    sample = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sample = sample[torch.randperm(sample.numel(), generator=torch.Generator().manual_seed(seed))]
    graph = augmentation_graph(sample=sample, dtype=torch.float64)
    same = sample[:, None] == sample[None, :]
    same.fill_diagonal_(False)
    views = same.sum(1, keepdim=True).to(torch.float64)  # c - 1 per row
    assert_close(dense(graph.edge_index, graph.edge_weight, sample.numel()), same / views)
    edge_index, edge_weight, view = augmentation_edges(sample, torch.float64)
    assert torch.equal(edge_index, graph.edge_index) and torch.equal(view, graph.view)
    # A node's view number is its rank among its sample's nodes, in node order.
    for node in range(sample.numel()):
        assert int(view[node]) == int((sample[:node] == sample[node]).sum())


@FAST
@given(num_samples=st.integers(1, 6), num_views=st.integers(2, 4))
def test_view_sample_index_is_concatenated_views(num_samples: int, num_views: int) -> None:
    assert torch.equal(view_sample_index(num_samples, num_views),
                       torch.cat([torch.arange(num_samples)] * num_views))


# -- memories ------------------------------------------------------------------------------------
@THOROUGH
@given(size=st.integers(1, 8), pushes=st.lists(st.integers(1, 9), min_size=1, max_size=6),
       seed=seeds)
@example(size=5, pushes=[3, 3], seed=0)  # a push that runs past the end and wraps around
@example(size=3, pushes=[2, 7, 1], seed=1)  # a push larger than the bank
def test_negative_bank_is_a_fifo_of_the_last_size_rows(size: int, pushes: list[int],
                                                        seed: int) -> None:
    bank = NegativeBank(size, 3, dtype=torch.float64)
    queue: deque[Tensor] = deque(maxlen=size)
    for step, rows in enumerate(pushes):
        x = randn(seed + step, rows, 3)
        bank.push(x)
        queue.extend(x)
    assert len(bank) == len(queue)
    assert torch.equal(bank.oldest_first(), torch.stack(list(queue)))
    assert bank.features.dtype == torch.float64


@THOROUGH
@given(num_stages=st.integers(1, 4), aggr=st.sampled_from(AGGREGATIONS),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       writes=st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=7),
       seed=seeds, gamma=st.floats(0.1, 0.9))
def test_multi_stage_memory_reads_stage_s_from_epoch_t_minus_s(
        num_stages: int, aggr: str, dtype: torch.dtype, writes: list[list[bool]], seed: int,
        gamma: float) -> None:
    """Each epoch writes a random subset of 4 samples; a read at epoch t aggregates, per sample,
    the features written at epochs t-1 .. t-k (missing ones left out, each at its own stage)."""
    memory = MultiStageMemory(4, 2, num_stages=num_stages, aggr=aggr, gamma=gamma, dtype=dtype)
    history: dict[tuple[int, int], Tensor] = {}
    for epoch, chosen in enumerate(writes):
        index = torch.tensor([i for i in range(4) if chosen[i]], dtype=torch.long)
        features = randn(seed + epoch, index.numel(), 2, dtype=dtype)
        if index.numel():
            memory.write(index, features, epoch)
        for row, sample in enumerate(index.tolist()):
            history[(sample, epoch)] = features[row]
    now = len(writes)
    aggregate, count = memory.read(torch.arange(4), now)
    assert aggregate.dtype == dtype  # float64 is kept, float32 stays float32
    for sample in range(4):
        stages = [(s, history[(sample, now - s)]) for s in range(1, num_stages + 1)
                  if (sample, now - s) in history]
        assert int(count[sample]) == len(stages)
        if not stages:
            expected = torch.zeros(2, dtype=dtype)
        elif aggr == "sum":
            expected = sum(v for _, v in stages)
        elif aggr == "mean":
            expected = sum(v for _, v in stages) / len(stages)
        elif aggr == "max":
            expected = torch.stack([v for _, v in stages]).amax(0)
        else:
            expected = sum(gamma ** s * v for s, v in stages)
        assert_close(aggregate[sample], expected)


@FAST
@given(k=st.integers(1, 4), aggr=st.sampled_from([*AGGREGATIONS, "cat"]), seed=seeds)
def test_stage_aggregation_is_the_plain_formula(k: int, aggr: str, seed: int) -> None:
    xs = [randn(seed + s, 3, 2) for s in range(k)]
    stacked = torch.stack(xs)
    expected = {"sum": stacked.sum(0), "mean": stacked.mean(0), "max": stacked.amax(0),
                "decay": sum(0.5 ** (s + 1) * x for s, x in enumerate(xs)),
                "cat": torch.cat(xs, -1)}[aggr]
    assert_close(StageAggregation(aggr)(xs), expected)
    if aggr != "cat":
        assert_close(aggregate_stages(stacked, aggr), expected)


# -- nearest neighbours --------------------------------------------------------------------------
def brute_force(x: Tensor, k: int, metric: str) -> tuple[Tensor, Tensor]:
    """Per query (self excluded) its top-k candidates, best first, and their scores."""
    if metric == "cos":
        unit = x / x.norm(dim=1, keepdim=True)
        score = unit @ unit.T
    elif metric == "ip":
        score = x @ x.T
    else:
        score = -torch.cdist(x, x).pow(2)
    score.fill_diagonal_(-math.inf)
    best, index = score.topk(k, dim=1)
    return index, (-best if metric == "l2" else best)


@FAST
@given(seed=seeds, n=st.integers(4, 12), k=st.integers(1, 3),
       metric=st.sampled_from(["ip", "cos", "l2"]), backend=st.sampled_from(["exact", "faiss"]))
def test_affinity_graph_is_the_brute_force_top_k(seed: int, n: int, k: int, metric: str,
                                                 backend: str) -> None:
    x = randn(seed, n, 3)
    edge_index, score = affinity_graph(x, k, metric=metric, backend=backend)
    index, best = brute_force(x, k, metric)
    assert torch.equal(edge_index[1], torch.arange(n).repeat_interleave(k))
    assert torch.equal(edge_index[0], index.reshape(-1))
    # faiss scores in float32 arithmetic internally: 1e-5 there.
    tol = {"atol": 1e-5, "rtol": 1e-5} if backend == "faiss" else {}
    assert_close(score.to(torch.float64), best.reshape(-1), **tol)


@FAST
@given(seed=seeds, scale=extreme_scales, backend=st.sampled_from(["exact", "faiss"]))
def test_cosine_affinity_graph_is_scale_free(seed: int, scale: float, backend: str) -> None:
    x = randn(seed, 8, 3)
    ours = affinity_graph(x * scale, 2, metric="cos", backend=backend)
    unit = affinity_graph(x, 2, metric="cos", backend=backend)
    assert torch.equal(ours[0], unit[0])
    assert_close(ours[1], unit[1])


@FAST
@given(seed=seeds, k=st.integers(1, 3), num_samples=st.integers(1, 6),
       proposal=st.sampled_from(["cluster", "uniform"]))
def test_sampled_affinity_graph_keeps_the_top_k_head(seed: int, k: int, num_samples: int,
                                                      proposal: str) -> None:
    """The head of every anchor is its top-k (weight 1); tail draws lie outside it and outside
    the anchor itself, with finite positive importance weights."""
    x = randn(seed, 10, 3)
    edge_index, weight = sampled_affinity_graph(
        x, k, num_samples, proposal=proposal, generator=torch.Generator().manual_seed(seed))
    head, _ = affinity_graph(x, k)
    src, dst = edge_index
    assert bool((src != dst).all()) and bool((weight > 0).all()) and bool(weight.isfinite().all())
    for anchor in range(10):
        mine = src[dst == anchor]
        top = head[0][head[1] == anchor]
        assert torch.equal(mine[:k], top)
        assert not bool(torch.isin(mine[k:], top).any())


@FAST
@given(seed=seeds, n=st.integers(5, 12))
def test_affinity_index_search_matches_affinity_graph(seed: int, n: int) -> None:
    x = randn(seed, n, 3)
    queries = randn(seed + 1, 4, 3)
    index = AffinityIndex(x)
    ours = index.search(2, queries)
    expected = affinity_graph(x, 2, queries=queries)
    assert torch.equal(ours[0], expected[0])
    assert_close(ours[1], expected[1])


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_choose_backend_picks_a_backend(device: str | torch.device) -> None:
    assert choose_backend(10, 10, 2, device) in BACKENDS
