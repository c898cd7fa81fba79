"""AttentionAlignmentConv's AGNN form against PyG's AGNNConv, set up as PyG's layer tests are.

``AGNNConv(x) = softmax_j(beta cos(x_i, x_j)) x_j`` over the neighbours and a self loop. The
operator reproduces it, outputs *and training*, as ``AttentionAlignmentConv(alpha=1.0, beta,
"neighbors", "cosine", detach_targets=True, add_self_loops=True, detach_attention=False)``; with
``learn_beta=True`` it is ``AGNNConv(requires_grad=True)``. Compared through a shared ``Linear``
in float64, to 1e-6: outputs, gradients w.r.t. ``x`` and (learnable) beta, and a few optimiser
steps, on PyG's star graph and random directed graphs, from an ``edge_index`` and from torch's
COO, CSR and CSC ``adj_t``; and under ``torch.compile``. (``AGNNConv`` has no static-graph
``[batch, nodes, features]`` form, nor does the attention operator; ``torch.jit.script`` is
refused with a reason, tests/nn/test_step_conv.py.)
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch_geometric.nn import AGNNConv

from mp_contrastive.nn import AttentionAlignmentConv
from tests.reference import random_graph

TOL = {"atol": 1e-6, "rtol": 0.0}
STAR = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])


def agnn_form(beta: float = 1.0, **kwargs: object) -> AttentionAlignmentConv:
    return AttentionAlignmentConv(alpha=1.0, beta=beta, normalize="neighbors", score="cosine",
                                  detach_targets=True, add_self_loops=True,
                                  detach_attention=False, **kwargs)


def graphs(gen: torch.Generator) -> dict[str, tuple[Tensor, int]]:
    directed, _ = random_graph(30, 0.15, gen, symmetric=False, weighted=False)
    return {"star": (STAR, 4), "directed": (directed, 30), "isolated_nodes": (directed, 34)}


def assert_same_training(theirs: torch.nn.Module, ours: torch.nn.Module, x: Tensor,
                         edge_index: Tensor, extra: list[tuple[Tensor, Tensor]]) -> None:
    """Same output and same vector-Jacobian products w.r.t. x and the ``extra`` parameter pairs."""
    x = x.detach().requires_grad_()
    expected, out = theirs(x, edge_index), ours(x, edge_index)
    torch.testing.assert_close(out, expected, **TOL)
    v = torch.randn_like(expected)
    mine = torch.autograd.grad(out, [x, *(a for a, _ in extra)], v)
    reference = torch.autograd.grad(expected, [x, *(b for _, b in extra)], v)
    for a, b in zip(mine, reference, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("name", ["star", "directed", "isolated_nodes"])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_fixed_beta_matches_agnnconv_outputs_and_gradients(gen, name, beta):
    edge_index, n = graphs(gen)[name]
    agnn = AGNNConv(requires_grad=False).double()
    agnn.beta.fill_(beta)
    lin = torch.nn.Linear(8, 5, dtype=torch.float64)
    x = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    conv = agnn_form(beta)
    assert_same_training(lambda h, e: agnn(lin(h), e), lambda h, e: conv(lin(h), e), x,
                         edge_index, [(lin.weight, lin.weight)])


@pytest.mark.parametrize("name", ["star", "directed"])
def test_learnable_beta_matches_agnnconv_requires_grad(gen, name):
    edge_index, n = graphs(gen)[name]
    agnn = AGNNConv(requires_grad=True).double()
    with torch.no_grad():
        agnn.beta.fill_(0.7)
    conv = agnn_form(0.7, learn_beta=True).double()
    assert [name for name, _ in conv.named_parameters()] == ["beta"]
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    assert_same_training(agnn, conv, x, edge_index, [(conv.beta, agnn.beta)])


def test_training_follows_agnnconv(gen):
    """Five Adam steps on a shared-initialisation model: same beta and weights throughout."""
    edge_index, n = graphs(gen)["directed"]
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    target = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    lin_a = torch.nn.Linear(6, 3, dtype=torch.float64)
    lin_b = torch.nn.Linear(6, 3, dtype=torch.float64)
    lin_b.load_state_dict(lin_a.state_dict())
    agnn, conv = AGNNConv(requires_grad=True).double(), agnn_form(1.0, learn_beta=True).double()
    models = [(torch.nn.ModuleList([lin_a, agnn]), lambda: agnn(lin_a(x), edge_index)),
              (torch.nn.ModuleList([lin_b, conv]), lambda: conv(lin_b(x), edge_index))]
    optimisers = [torch.optim.Adam(m.parameters(), lr=0.05) for m, _ in models]
    for _ in range(5):
        for (_, forward), optimiser in zip(models, optimisers, strict=True):
            optimiser.zero_grad()
            torch.nn.functional.mse_loss(forward(), target).backward()
            optimiser.step()
        torch.testing.assert_close(conv.beta.detach(), agnn.beta.detach(), **TOL)
        torch.testing.assert_close(lin_b.weight, lin_a.weight, **TOL)
    assert abs(float(conv.beta.detach()) - 1.0) > 1e-3  # beta did move


def test_detached_attention_differs_from_agnnconv_in_the_gradient_only(gen):
    """The default (loss-coefficient) form matches AGNNConv's output but not its x-gradient."""
    edge_index, n = graphs(gen)["directed"]
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    agnn = AGNNConv(requires_grad=False).double()
    detached = AttentionAlignmentConv(1.0, 1.0, "neighbors", "cosine", detach_targets=True,
                                      add_self_loops=True)
    torch.testing.assert_close(detached(x, edge_index), agnn(x, edge_index), **TOL)
    v = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    (g_detached,) = torch.autograd.grad(detached(x, edge_index), x, v)
    (g_agnn,) = torch.autograd.grad(agnn(x, edge_index), x, v)
    assert (g_detached - g_agnn).abs().max() > 1e-3


def test_reset_parameters_restores_the_initial_beta():
    conv = agnn_form(0.3, learn_beta=True)
    with torch.no_grad():
        conv.beta.fill_(2.0)
    conv.reset_parameters()
    assert float(conv.beta.detach()) == pytest.approx(0.3)


def test_learn_beta_needs_differentiable_attention():
    with pytest.raises(ValueError, match="'learn_beta=True' needs 'detach_attention=False'"):
        AttentionAlignmentConv(learn_beta=True)


def test_torch_compile(gen):
    edge_index, n = graphs(gen)["directed"]
    x = torch.randn(n, 4, generator=gen)
    conv = agnn_form(0.5)
    compiled = torch.compile(conv)
    torch.testing.assert_close(compiled(x, edge_index), conv(x, edge_index), atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
def test_sparse_adj_t_layouts_match_agnnconv(gen, layout):
    """A torch sparse ``adj_t`` (rows = targets) gives AGNNConv's output on the edge_index."""
    from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

    convert = {"coo": to_torch_coo_tensor, "csr": to_torch_csr_tensor,
               "csc": to_torch_csc_tensor}[layout]
    edge_index, n = graphs(gen)["directed"]
    adj_t = convert(edge_index.flip(0), size=(n, n)).to(torch.float64)
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    agnn = AGNNConv(requires_grad=False).double()
    conv = agnn_form(1.0)
    v = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    out, expected = conv(x, adj_t), agnn(x, edge_index)
    torch.testing.assert_close(out, expected, **TOL)
    (mine,) = torch.autograd.grad(out, x, v)
    (theirs,) = torch.autograd.grad(expected, x, v)
    torch.testing.assert_close(mine, theirs, **TOL)
