"""One boundary (issue 26): each public call checks each tensor once, with no switch to turn the
checks off; on an accelerator a layer's value checks are device-side asserts (no host sync), while
a loss checks on the host, once per step; a device mismatch is a clear error."""

import math
import sys
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar

import pytest
import torch

import mp_contrastive._validation as validation
from mp_contrastive.gnn import AlignmentGCNConv, AttentionAlignmentGATConv, NodeClassifier
from mp_contrastive.gnn.grace_loss import GraphContrastiveLoss
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.losses import MessagePassingLoss, SimCLRLoss
from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv, ContrastiveConv, UniformityConv

#: The checks that read a tensor (its metadata or its values).
CHECKS = ("check_features", "require_finite", "check_edge_index", "check_edge_values",
          "check_weight_values", "check_index_vector")

GRAPH = augmentation_graph(4, 2)
RING = torch.tensor([[0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 0, 1, 2, 3, 4, 5]])


@pytest.fixture
def checked(monkeypatch):
    """Count each check's calls per tensor, wherever the check was imported."""
    calls: Counter = Counter()
    originals = {name: getattr(validation, name) for name in CHECKS if hasattr(validation, name)}

    def counting(name, check):
        def wrapper(tensor, *args, **kwargs):
            calls[name, id(tensor)] += 1
            return check(tensor, *args, **kwargs)
        return wrapper

    for module in [m for key, m in sys.modules.items() if key.startswith("mp_contrastive")]:
        for name, check in originals.items():
            if getattr(module, name, None) is check:
                monkeypatch.setattr(module, name, counting(name, check))
    return calls


def assert_once(calls: Counter, *tensors: torch.Tensor) -> None:
    """No tensor checked twice by one check; each of ``tensors`` checked (by something)."""
    twice = {key: count for key, count in calls.items() if count > 1}
    assert not twice, f"checked more than once: {twice}"
    seen = {ident for _, ident in calls}
    for index, tensor in enumerate(tensors):
        assert id(tensor) in seen, f"argument {index} was not checked"


def test_trusted_inputs_is_gone():
    assert not hasattr(validation, "trusted_inputs")
    assert not any(isinstance(value, ContextVar) for value in vars(validation).values())
    with pytest.raises(ImportError):
        from mp_contrastive._validation import trusted_inputs  # noqa: F401


@pytest.mark.parametrize("conv", [UniformityConv(), ContrastiveConv(), AlignmentConv(),
                                  AttentionAlignmentConv()], ids=repr)
def test_each_operator_checks_each_argument_once(checked, conv):
    x = torch.randn(8, 4)
    edge_weight = torch.rand(GRAPH.edge_index.size(1))
    if isinstance(conv, UniformityConv):  # x and x_dst were checked twice per forward
        conv(x, GRAPH.edge_index, edge_weight)
    else:
        conv(x, GRAPH.edge_index, edge_weight)
    assert_once(checked, x, GRAPH.edge_index, edge_weight)


@pytest.mark.parametrize("method", ["step", "energy", "step_and_energy"])
def test_step_energy_check_once(checked, method):
    x, anchor = torch.randn(8, 4), torch.rand(8)
    affinity = torch.tensor([[1, 2, 3], [0, 0, 1]])
    getattr(ContrastiveConv(), method)(x, GRAPH.edge_index, GRAPH.edge_weight,
                                       affinity_index=affinity, anchor_weight=anchor)
    assert_once(checked, x, GRAPH.edge_index, GRAPH.edge_weight, affinity, anchor)


def test_attention_features_are_checked_once_like_features(checked):
    x, attention_x = torch.randn(8, 4), torch.randn(8, 3)
    ContrastiveConv(attention=AttentionAlignmentConv().spec)(x, GRAPH.edge_index,
                                                              attention_x=attention_x)
    assert_once(checked, x, GRAPH.edge_index, attention_x)
    assert checked["require_finite", id(attention_x)] == 1
    bad = attention_x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="attention_x"):
        ContrastiveConv(attention=AttentionAlignmentConv().spec)(x, GRAPH.edge_index,
                                                                  attention_x=bad)


@pytest.mark.parametrize("layer", [AlignmentGCNConv(5, 3), AttentionAlignmentGATConv(5, 3)],
                         ids=lambda layer: type(layer).__name__)
def test_gnn_layers_check_once_around_their_operator(checked, layer):
    x = torch.randn(6, 5)
    layer(x, RING)
    assert_once(checked, x, RING)
    assert checked["check_edge_index", id(RING)] == 1


def test_a_model_checks_its_graph_once_not_once_per_layer(checked):
    x = torch.randn(6, 5)
    model = NodeClassifier(5, 8, 3, num_layers=3).eval()
    model(x, RING)
    assert_once(checked, x, RING)
    bad = x.clone()
    bad[2, 1] = math.inf  # still an error: checked once, on the first layer's output
    with pytest.raises(ValueError, match="'x'"):
        model(bad, RING)


def test_losses_check_their_inputs_once(checked):
    u, v = torch.randn(5, 4), torch.randn(5, 4)
    GraphContrastiveLoss(tau=0.5, negatives="dense")(u, v)  # u and v were checked twice
    assert_once(checked, u, v)
    checked.clear()
    z0, z1 = torch.randn(5, 4), torch.randn(5, 4)
    SimCLRLoss()(z0, z1)
    assert_once(checked, z0, z1)
    checked.clear()
    h = torch.randn(8, 4, requires_grad=True)
    MessagePassingLoss(ContrastiveConv())(h, GRAPH.edge_index, GRAPH.edge_weight).backward()
    assert_once(checked, h, GRAPH.edge_index, GRAPH.edge_weight)


# -- the GPU policy, on the CPU: an "accelerator" is any device while device_side is patched ----
@contextmanager
def no_host_reads():
    """Fail on every way a tensor's value reaches the host."""
    saved = {name: getattr(torch.Tensor, name) for name in
             ("item", "tolist", "__bool__", "__int__", "__float__")}

    def refuse(*args, **kwargs):
        raise AssertionError("a host read (synchronisation) in a layer's checks")

    for name in saved:
        setattr(torch.Tensor, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@pytest.fixture
def accelerator(monkeypatch):
    """Treat every tensor as on an accelerator: layers check on the device, losses on the host."""
    monkeypatch.setattr(validation, "device_side", lambda reference, sync: not sync)


def test_device_side_applies_to_layers_on_accelerators_only():
    cpu, meta = torch.zeros(1), torch.zeros(1, device="meta")
    assert not validation.device_side(cpu, sync=False)  # reading a CPU tensor costs no sync
    assert validation.device_side(meta, sync=False)
    assert not validation.device_side(meta, sync=True)  # losses: host checks, named errors


def test_layer_checks_do_not_read_values_on_the_host(accelerator):
    x, weight = torch.randn(6, 5), torch.rand(RING.size(1))
    layer = AlignmentConv(alpha=1.0, detach_targets=True, add_self_loops=True)
    # Only the checks are under no_host_reads (the computation itself is PyG's and torch's).
    with no_host_reads():
        layer._check(x, RING, weight)
        AlignmentConv()._check(x, RING, weight)
        UniformityConv()._check(x, RING, weight, torch.rand(6))
        ContrastiveConv()._check(x, RING, weight, RING, weight, torch.rand(6))
    torch.testing.assert_close(layer(x, RING, weight), layer._forward(x, RING, weight))


@pytest.mark.parametrize("bad", ["x", "edge_index", "edge_weight"])
def test_layer_value_checks_still_fail_on_the_device(accelerator, bad):
    x, edge_index, weight = torch.randn(6, 5), RING.clone(), torch.rand(RING.size(1))
    if bad == "x":
        x[3, 2] = math.nan
    elif bad == "edge_index":
        edge_index[0, 4] = 6
    else:
        weight[1] = -1.0
    # torch._assert_async raises at once on the CPU; on a GPU at the next synchronisation.
    with pytest.raises(RuntimeError):
        AlignmentConv()(x, edge_index, weight)


def test_losses_check_values_on_the_host_even_on_accelerators(accelerator):
    h = torch.randn(8, 4)
    h[0, 0] = math.inf
    with pytest.raises(ValueError, match="'x'"):
        MessagePassingLoss(ContrastiveConv())(h, GRAPH.edge_index, GRAPH.edge_weight)
    with pytest.raises(ValueError, match="'z0'"):
        SimCLRLoss()(h[:4], h[4:])


def test_an_unchanged_graph_is_read_once_and_a_modified_one_again(monkeypatch):
    edge_index = RING.clone()
    reads = []
    monkeypatch.setattr(validation, "require", lambda ok, *a, **k: reads.append(bool(ok)))
    validation.check_edge_index(edge_index, 6, 6)
    validation.check_edge_index(edge_index, 6, 6)
    assert reads == [True]
    validation.check_edge_index(edge_index, 7, 7)  # other bounds: read again
    assert len(reads) == 2
    monkeypatch.undo()
    edge_index[1, 0] = 9  # an in-place write bumps the version: read again, and caught
    with pytest.raises(ValueError, match="out of range"):
        validation.check_edge_index(edge_index, 6, 6)
    with pytest.raises(ValueError, match="out of range"):
        AlignmentConv()(torch.randn(6, 2), edge_index)


def test_a_graph_whose_values_were_replaced_is_read_again():
    """``.data = ...`` gives the same tensor object new values without bumping its version
    counter: the range memo also compares where the values lie, so the graph is read again."""
    edge_index = RING.clone()
    validation.check_edge_index(edge_index, 6, 6)
    version = edge_index._version
    edge_index.data = torch.tensor([[0, 1], [9, 2]])
    assert edge_index._version == version
    with pytest.raises(ValueError, match="out of range"):
        validation.check_edge_index(edge_index, 6, 6)


@pytest.mark.parametrize("write", ["in place", "behind the version counter"])
def test_a_self_loop_written_into_the_graph_is_seen_at_the_next_call(write):
    """AlignmentGCNConv's fast path needs a graph without self loops. The test is not remembered,
    so a loop written into the graph, even through .data (which the version counter, and so the
    range memo, does not see), sends the next call to gcn_norm's path: GCNConv's output, bitwise."""
    from torch_geometric.nn import GCNConv

    edge_index, x = RING.clone(), torch.randn(6, 3)
    ours = AlignmentGCNConv(3, 4)
    pyg = GCNConv(3, 4)
    pyg.lin.weight.data.copy_(ours.lin.weight.data)
    pyg.bias.data.copy_(ours.bias.data)
    torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index), rtol=0, atol=0)
    target = edge_index if write == "in place" else edge_index.data
    target[1, 0] = 0  # the edge 0 -> 1 becomes a self loop on node 0
    torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index), rtol=0, atol=0)


def test_the_gcn_form_runs_on_meta_tensors():
    """A meta tensor has a shape and no values: the layer gives its output's shape."""
    meta = torch.device("meta")
    out = AlignmentGCNConv(3, 4).to(meta)(torch.randn(6, 3, device=meta), RING.to(meta))
    assert out.shape == (6, 4) and out.device == meta


def test_the_operators_run_under_inference_mode_and_check_every_call():
    """Tensors made under torch.inference_mode have no version counter: nothing is remembered
    about them (an out-of-range graph is caught at every call), and the outputs are the same."""
    x = torch.randn(8, 3)
    layers = [(AlignmentConv(), (GRAPH.edge_index,)), (UniformityConv(), ()),
              (ContrastiveConv(), (GRAPH.edge_index,)),
              (AttentionAlignmentConv(), (GRAPH.edge_index,)),
              (AlignmentGCNConv(3, 4), (GRAPH.edge_index,))]
    expected = [layer(x, *graph) for layer, graph in layers]
    with torch.inference_mode():
        frozen_x, frozen_graph = x.clone(), GRAPH.edge_index.clone()
        assert frozen_graph.is_inference()
        for (layer, graph), output in zip(layers, expected, strict=True):
            torch.testing.assert_close(layer(frozen_x, *([frozen_graph] if graph else [])), output)
        wrong = frozen_graph.clone()
        wrong[1, 0] = 8
        for _ in range(2):
            with pytest.raises(ValueError, match="out of range"):
                AlignmentConv()(frozen_x, wrong)


def test_a_non_finite_sum_of_finite_values_is_not_an_error():
    big = torch.full((4, 2), 3e38)  # the sum overflows; every value is finite
    validation.check_features(big)
    with pytest.raises(ValueError, match="non-finite"):
        validation.check_features(torch.tensor([[math.inf, -math.inf]]))


# -- device mismatch -------------------------------------------------------------------------------
META = torch.device("meta")


@pytest.mark.parametrize("call,name", [
    (lambda: AlignmentConv()(torch.randn(6, 2), RING.to(META)), "edge_index"),
    (lambda: AlignmentConv()(torch.randn(6, 2), RING, torch.rand(12, device=META)),
     "edge_weight"),
    (lambda: UniformityConv()(torch.randn(6, 2), anchor_weight=torch.rand(6, device=META)),
     "anchor_weight"),
    (lambda: UniformityConv()((torch.randn(6, 2, device=META), torch.randn(6, 2))), "x_src"),
    (lambda: ContrastiveConv(attention=AttentionAlignmentConv().spec)(
        torch.randn(8, 2), GRAPH.edge_index, attention_x=torch.randn(8, 2, device=META)),
     "attention_x"),
    (lambda: AttentionAlignmentConv()(torch.randn(8, 2), GRAPH.edge_index.to(META)),
     "edge_index"),
    (lambda: SimCLRLoss()(torch.randn(4, 2), torch.randn(4, 2, device=META)), "z1"),
])
def test_device_mismatch_is_a_clear_error(call, name):
    with pytest.raises(ValueError, match=f"{name}.*meta"):
        call()


def test_bipartite_attention_weights_checks_its_inputs():
    from mp_contrastive.nn.functional import bipartite_attention_weights
    x_src, x_dst = torch.randn(4, 3), torch.randn(2, 3)
    edge_index = torch.tensor([[0, 1, 3], [0, 1, 1]])
    weights = bipartite_attention_weights(x_src, x_dst, edge_index)
    assert weights.shape == (3,)
    with pytest.raises(ValueError, match="out of range"):
        bipartite_attention_weights(x_src, x_dst, torch.tensor([[0, 4], [0, 1]]))
    x_src[1, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        bipartite_attention_weights(x_src, x_dst, edge_index)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_layer_checks_do_not_synchronise_on_cuda():
    x, edge_index = torch.randn(6, 5, device="cuda"), RING.cuda()
    weight = torch.rand(RING.size(1), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        AlignmentConv()._check(x, edge_index, weight)
        ContrastiveConv()._check(x, edge_index, weight, edge_index, weight, torch.rand(6).cuda())
        UniformityConv()._check(x, edge_index, weight)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    with pytest.raises(ValueError, match="non-finite"):  # a loss: on the host, named
        SimCLRLoss()(torch.full((4, 5), math.nan, device="cuda"), x[:4])
