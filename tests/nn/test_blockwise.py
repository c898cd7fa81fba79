"""The blockwise dense path equals the plain dense path (values and autograd gradients), keeps
its memory to a tile, and is taken automatically above the threshold; the sparse-kernel (CSR)
path equals the gather path."""

import pytest
import torch

from benchmarks._measure import peak_memory
from mp_contrastive.graph import augmentation_graph, view_sample_index
from mp_contrastive.losses import SimCLRLoss
from mp_contrastive.losses import _plain_nt_xent as plain_nt_xent
from mp_contrastive.nn import ContrastiveConv, UniformityConv
from mp_contrastive.nn.functional import (
    DEFAULT_TILING,
    AttentionSpec,
    Tiling,
)
from mp_contrastive.nn.functional._dense import dense_uniformity
from tests.reference import random_graph

PLAIN = 1 << 62
# Tile sizes (entries) against 23 anchors x 31 candidates: column chunks (1, 7: multi-pass
# log-sum-exp), several whole rows per tile (60), one tile (10**6).
BLOCKS = [1, 7, 60, 10**6]


def tiling(blockwise, block):
    return Tiling(elements=block, threshold=0 if blockwise else PLAIN)


def assert_same(block, fn, atol=1e-6):
    """``fn(tiling)`` on the plain and on the blockwise path with tiles of ``block`` entries."""
    plain = fn(tiling(False, block))
    blockwise = fn(tiling(True, block))
    for p, b in zip(plain, blockwise, strict=True):
        torch.testing.assert_close(b, p, atol=atol, rtol=1e-6)


def values_and_gradients(conv, x, *args, **kwargs):
    """The step and energy, and autograd of a fixed linear functional of both (through the step:
    the second-order path a GNN layer trains through)."""
    leaves = [t.detach().clone().requires_grad_() for t in (x if isinstance(x, tuple) else (x,))]
    inputs = tuple(leaves) if isinstance(x, tuple) else leaves[0]
    step, energy = conv.step_and_energy(inputs, *args, **kwargs)
    probe = torch.linspace(-1, 1, step.numel(), dtype=step.dtype).view_as(step)
    grads = torch.autograd.grad((step * probe).sum() + 0.7 * energy, leaves)
    with torch.no_grad():
        step_ng, energy_ng = conv.step_and_energy(x, *args, **kwargs)
    return (step_ng, energy_ng, step.detach(), *grads)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
@pytest.mark.parametrize("detach", [False, True])
def test_uniformity_same_nodes(gen, block, kernel, detach):
    h = torch.randn(23, 5, generator=gen, dtype=torch.float64)
    anchor = torch.rand(23, generator=gen, dtype=torch.float64) + 0.5
    for weight in [None, anchor]:
        assert_same(block, lambda t, w=weight: values_and_gradients(
            UniformityConv(0.3, kernel, detach, tiling=t), h, anchor_weight=w))


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
def test_uniformity_bipartite_bank(gen, block, kernel):
    bank = torch.randn(31, 5, generator=gen, dtype=torch.float64)
    h = torch.randn(23, 5, generator=gen, dtype=torch.float64)
    assert_same(block, lambda t: values_and_gradients(UniformityConv(0.3, kernel, tiling=t),
                                                      (bank, h)))


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
@pytest.mark.parametrize("detach", [False, True])
def test_contrastive_attraction_folded_per_tile(gen, block, kernel, detach):
    """The positive-edge coefficients are folded into each tile; gradients reach the (gcn_norm
    differentiable) edge weights as well."""
    sample = torch.tensor([i % 7 for i in range(23)])[torch.randperm(23, generator=gen)]
    graph = augmentation_graph(sample=sample)
    h = torch.randn(23, 5, generator=gen, dtype=torch.float64)
    def fn(t):
        conv = ContrastiveConv(0.3, kernel, detach, tiling=t)
        weight = graph.edge_weight.double().clone().requires_grad_()
        out = values_and_gradients(conv, h, graph.edge_index, weight)
        (w_grad,) = torch.autograd.grad(conv.energy(h.clone().requires_grad_(), graph.edge_index,
                                                    weight) + conv.step(h, graph.edge_index,
                                                                        weight).sum(), weight)
        return (*out, w_grad)

    assert_same(block, fn)


@pytest.mark.parametrize("normalize,beta", [("positives", 0.7), ("neighbors", 0.7),
                                           ("negatives", 0.7), ("negatives", 1.0)])
def test_contrastive_with_attention(gen, normalize, beta):
    """Attention weights (and, for the official normalisation, anchor weights) on the folded
    attraction. The plain path shares its similarity matrix with "negatives" attention (and at
    beta = 1 its row log-sum-exp); the blockwise path builds neither and must agree."""
    graph = augmentation_graph(sample=torch.arange(8).repeat(3))
    h = torch.randn(24, 5, generator=gen, dtype=torch.float64)
    attention = AttentionSpec(beta=beta, normalize=normalize)
    assert_same(50, lambda t: values_and_gradients(
        ContrastiveConv(0.5, attention=attention, tiling=t), h, graph.edge_index))


def test_gradients_of_anchor_and_attraction_weights(gen):
    """Autograd through anchor weights and attraction values that require grad (the operators
    detach anchor weights, but the private function must not silently drop them)."""
    h = torch.randn(17, 4, generator=gen, dtype=torch.float64)
    edge_index, weight = random_graph(17, 0.3, gen)
    for kernel in ["infonce", "spectral"]:
        def fn(t, kernel=kernel):
            anchor = (torch.rand(17, generator=torch.Generator().manual_seed(1),
                                 dtype=torch.float64) + 0.5).requires_grad_()
            value = weight.clone().requires_grad_()
            x = h.clone().requires_grad_()
            grad, energy, *_ = dense_uniformity(x, x, True, True, anchor, kernel, True, True,
                                                attraction=(edge_index, value),
                                                tiling=t)
            probe = torch.linspace(-1, 1, grad.numel(), dtype=grad.dtype).view_as(grad)
            return torch.autograd.grad((grad * probe).sum() + energy, [x, anchor, value])

        assert_same(40, fn, atol=1e-9)


@pytest.mark.parametrize("block", [100, 5000])
def test_float32_folding_near_equilibrium(gen, block):
    """Near convergence (views almost equal, temperature 0.05) the update is a small difference of
    large terms: with the attraction folded into each tile, SimCLR's float32 gradient stays within
    5e-5 of the float64 reference, the bound the plain path meets (tests/test_losses.py)."""
    z0 = torch.randn(64, 32, generator=gen, dtype=torch.float64)
    z1 = z0 + 1e-3 * torch.randn(64, 32, generator=gen, dtype=torch.float64)
    ref = [z.clone().requires_grad_() for z in (z0, z1)]
    plain_nt_xent(torch.cat(ref), view_sample_index(64, 2), 0.05).backward()
    ours = [z.float().requires_grad_() for z in (z0, z1)]
    SimCLRLoss(0.05, tiling=tiling(True, block))(*ours).backward()
    for a, b in zip(ours, ref, strict=True):
        rel = (a.grad.double() - b.grad).norm() / b.grad.norm()
        assert rel < 5e-5, rel


def test_taken_automatically_with_bounded_memory(gen):
    """Above the threshold (default settings) the dense path holds tiles, not the matrix: at
    N = 8192 the peak of a step is a small fraction of one N x N float matrix."""
    n = 8192
    assert DEFAULT_TILING.blockwise(n, n) and not DEFAULT_TILING.blockwise(1024, 1024)
    h = torch.nn.functional.normalize(torch.randn(n, 32, generator=gen), dim=1) * 3
    conv = UniformityConv()
    with torch.no_grad():
        peak = peak_memory(lambda: conv.step_and_energy(h))
    assert peak < 0.1 * n * n * 4


@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
@pytest.mark.parametrize("detach", [False, True])
def test_sparse_kernel_path_equals_gather_path(gen, kernel, detach):
    """Without autograd the sparse affinity graph is scored and aggregated with CSR kernels;
    unsorted and repeated edges, weights, anchor weights and the bipartite case must agree with
    the gather path that autograd uses."""
    n = 15
    h = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    bank = torch.randn(25, 4, generator=gen, dtype=torch.float64)
    edge_index, _ = random_graph(n, 0.3, gen, symmetric=False, weighted=False)
    edge_index = torch.cat([edge_index, edge_index[:, :5]], 1)  # repeated edges
    edge_index = edge_index[:, torch.randperm(edge_index.size(1), generator=gen)]  # unsorted
    weight = torch.rand(edge_index.size(1), generator=gen, dtype=torch.float64) + 0.1
    anchor = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    bank_edges = torch.stack([torch.randint(0, 25, (60,), generator=gen),
                              torch.randint(0, n, (60,), generator=gen)])
    conv = UniformityConv(0.4, kernel, detach)
    for x, index in [(h, edge_index), ((bank, h), bank_edges)]:
        w = weight if index is edge_index else None
        with torch.no_grad():
            fast = conv.step_and_energy(x, index, w, anchor_weight=anchor)
        tracked = (h.clone().requires_grad_() if not isinstance(x, tuple)
                   else (bank, h.clone().requires_grad_()))
        slow = conv.step_and_energy(tracked, index, w, anchor_weight=anchor)
        for f, s in zip(fast, slow, strict=True):
            torch.testing.assert_close(f, s.detach(), atol=1e-10, rtol=0)
