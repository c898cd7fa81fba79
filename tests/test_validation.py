"""Bad input fails at the boundary with a ValueError/TypeError that names the argument."""

import math

import pytest
import torch

from mp_contrastive._validation import check_labels, check_positive_int, check_rate
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.knn import AffinityIndex
from mp_contrastive.losses import AttentionSimCLRLoss, MessagePassingLoss, SimCLRLoss
from mp_contrastive.memory import MultiStageMemory
from mp_contrastive.nn import (
    AlignmentConv,
    AttentionAlignmentConv,
    ContrastiveConv,
    UniformityConv,
)

GRAPH = augmentation_graph(3, 2)
H = torch.randn(6, 4)
CONVS = [AlignmentConv(), UniformityConv(), ContrastiveConv(), AttentionAlignmentConv()]


def call(conv, x, edge_index=GRAPH.edge_index, **kwargs):
    if isinstance(conv, UniformityConv):
        return conv(x, **kwargs)
    return conv(x, edge_index, **kwargs)


@pytest.mark.parametrize("conv", CONVS, ids=repr)
@pytest.mark.parametrize("x,exc,match", [
    (torch.randn(6), ValueError, "'x' must have shape \\[num_nodes, num_features\\]"),
    (torch.randn(6, 4, 1), ValueError, "3 dimensions"),
    (torch.ones(6, 4, dtype=torch.long), TypeError, "'x' must be a floating-point"),
    (torch.full((6, 4), math.nan), ValueError, "'x' contains non-finite"),
    (torch.full((6, 4), math.inf), ValueError, "'x' contains non-finite"),
    (torch.empty(0, 4), ValueError, "'x' is empty"),
    ([[1.0]], TypeError, "'x' must be a torch.Tensor"),
    ((H, H, H), TypeError, "'x' must be a torch.Tensor"),
])
def test_bad_features(conv, x, exc, match):
    if isinstance(conv, AlignmentConv) and isinstance(x, torch.Tensor) and x.dim() == 3:
        # AlignmentConv takes a static-graph batch [batch, nodes, features]: 4 dimensions fail.
        x, match = x.unsqueeze(0), "or \\(a static graph\\) \\[batch, num_nodes, num_features\\]"
    with pytest.raises(exc, match=match):
        call(conv, x)


@pytest.mark.parametrize("conv", [c for c in CONVS if not isinstance(c, UniformityConv)], ids=repr)
@pytest.mark.parametrize("edge_index,match", [
    (torch.tensor([[0, 6], [1, 0]]), "'edge_index' is out of range"),
    (torch.tensor([[0, -1], [1, 0]]), "'edge_index' is out of range"),
    (torch.tensor([0, 1]), "'edge_index' must have shape \\[2, num_edges\\]"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "'edge_index' must be an int64"),
])
def test_bad_edge_index(conv, edge_index, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(conv, H, edge_index)


def test_bad_edge_weight_and_affinity():
    with pytest.raises(ValueError, match="'edge_weight' must have shape \\[num_edges\\]"):
        AlignmentConv()(H, GRAPH.edge_index, torch.ones(3))
    with pytest.raises(ValueError, match="'affinity_index' is out of range"):
        ContrastiveConv()(H, GRAPH.edge_index, affinity_index=torch.tensor([[9], [0]]))
    with pytest.raises(ValueError, match="'edge_index' is out of range"):
        UniformityConv()(H, torch.tensor([[0], [7]]))
    with pytest.raises(ValueError, match="'affinity_weight' needs an 'affinity_index'"):
        ContrastiveConv()(H, GRAPH.edge_index, affinity_weight=torch.ones(3))
    with pytest.raises(ValueError, match="'anchor_weight' must have shape \\[num_nodes\\]"):
        UniformityConv()(H, anchor_weight=torch.ones(5))
    with pytest.raises(ValueError, match="mismatched feature dimensions"):
        UniformityConv()((torch.randn(9, 3), H))
    with pytest.raises(ValueError, match="'attention_x' must have one row per node"):
        AttentionAlignmentConv()(H, GRAPH.edge_index, attention_x=torch.randn(5, 2))
    with pytest.raises(ValueError, match="at least 2 nodes"):
        UniformityConv()(torch.randn(1, 3))
    with pytest.raises(ValueError, match="at least one negative"):
        AttentionAlignmentConv()(torch.randn(2, 3), augmentation_graph(1, 2).edge_index)


@pytest.mark.parametrize("make,match", [
    (lambda: AlignmentConv(alpha=0.0), "'alpha' must be a finite number > 0"),
    (lambda: UniformityConv(alpha=-1.0), "'alpha' must be a finite number > 0"),
    (lambda: ContrastiveConv(alpha=math.nan), "'alpha'"),
    (lambda: UniformityConv(kernel="cosine"), "'kernel' must be one of"),
    (lambda: AttentionAlignmentConv(beta=-0.1), "'beta' must be a finite number >= 0"),
    (lambda: AttentionAlignmentConv(normalize="rows"), "'normalize' must be one of"),
    (lambda: AlignmentConv(normalize=False, add_self_loops=True), "'add_self_loops=True' needs"),
    (lambda: ContrastiveConv(attention=AlignmentConv()), "'attention' must be an"),
    (lambda: SimCLRLoss(temperature=0.0), "'temperature' must be a finite number > 0"),
    (lambda: SimCLRLoss(temperature=-0.5), "'temperature'"),
    (lambda: SimCLRLoss(reduction="batchmean"), "'reduction' must be one of"),
    (lambda: AttentionSimCLRLoss(beta=-1.0), "'beta'"),
    (lambda: AttentionSimCLRLoss(normalize="x"), "'normalize'"),
    (lambda: MessagePassingLoss(torch.nn.Linear(2, 2)), "'conv' must be one of"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("loss", [SimCLRLoss(), AttentionSimCLRLoss()], ids=repr)
def test_bad_loss_input(loss):
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="'z1' must have the same shape as 'z0'"):
        loss(z, torch.randn(5, 8))
    with pytest.raises(ValueError, match="'sample' must have one entry per node \\(4\\)"):
        loss(z, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="sample 1 .* only one"):
        loss(z, torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="'z0' is empty"):
        loss(torch.empty(0, 8), torch.empty(0, 8))
    with pytest.raises(ValueError, match="'z0' must have shape"):
        loss(torch.randn(8), torch.randn(8))
    with pytest.raises(ValueError, match="'z1' contains non-finite"):
        loss(z, torch.full((4, 8), math.nan))
    with pytest.raises(TypeError, match="second view z1 .* or 'sample'"):
        loss(z, [0, 0, 1, 1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_matches_isfinite(dtype):
    from mp_contrastive._validation import all_finite

    x = torch.randn(7, 5).to(dtype)
    assert all_finite(x)
    for bad in (math.nan, math.inf, -math.inf):
        y = x.clone()
        y[3, 2] = bad
        assert not all_finite(y)
        assert not all_finite(y.to_sparse()) and not all_finite(y.to_sparse_csr())
    assert all_finite(x.to_sparse_csr()) and all_finite(torch.empty(0, 3, dtype=dtype))


@pytest.mark.parametrize("value", [0, -3])
def test_check_positive_int_names_the_argument(value):
    with pytest.raises(ValueError, match=r"'depth' must be a positive int, got"):
        check_positive_int(value, "depth")


@pytest.mark.parametrize("value", [2.0, True, "4", None])
def test_check_positive_int_rejects_other_types(value):
    with pytest.raises(TypeError, match=r"'depth' must be an int, got"):
        check_positive_int(value, "depth")


@pytest.mark.parametrize(("value", "error"), [(-0.1, ValueError), (1.0, ValueError),
                                              (math.nan, ValueError), ("0.1", TypeError),
                                              (False, TypeError)])
def test_check_rate_names_the_argument(value, error):
    with pytest.raises(error, match="'dropout' must"):
        check_rate(value, "dropout")
    assert check_rate(0, "dropout") == 0.0 and check_rate(0.5, "dropout") == 0.5


def test_check_positive_int_returns_the_value():
    assert check_positive_int(7, "depth") == 7


def test_check_labels():
    labels, num_classes = check_labels(torch.tensor([2, 0, 2]), 3)
    assert labels.dtype == torch.long and num_classes == 3
    with pytest.raises(ValueError, match="'labels' must have one entry per node"):
        check_labels(torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="'y' is empty"):
        check_labels(torch.tensor([], dtype=torch.long), name="y")
    with pytest.raises(TypeError, match="'labels' must be an integer tensor"):
        check_labels(torch.zeros(3), 3)


# -- silent wrong results found by a sweep of the public API (issue 26): now clear errors ------
BAD_WEIGHTS = [(math.nan, "non-finite"), (math.inf, "non-finite"), (-1.0, "non-negative")]


@pytest.mark.parametrize("value,match", BAD_WEIGHTS)
def test_bad_weights_are_named(value, match):
    h = torch.randn(6, 4)
    edges = GRAPH.edge_index
    bad = torch.ones(edges.size(1))
    bad[0] = value
    with pytest.raises(ValueError, match=f"'edge_weight' .*{match}|'edge_weight' contains {match}"):
        UniformityConv()(h, edges, bad)
    with pytest.raises(ValueError, match=f"'affinity_weight'.*{match}|'affinity_weight' contains"):
        ContrastiveConv()(h, edges, affinity_index=edges, affinity_weight=bad)
    with pytest.raises(ValueError, match="'edge_weight'"):
        AttentionAlignmentConv()(h, edges, bad)
    anchor = torch.ones(6)
    anchor[2] = value
    with pytest.raises(ValueError, match="'anchor_weight'"):
        UniformityConv()(h, anchor_weight=anchor)
    with pytest.raises(ValueError, match="'affinity_weight'"):  # the loss checks at its boundary
        SimCLRLoss()(h[:3], h[3:], affinity_index=edges, affinity_weight=bad)


def test_non_finite_attention_features_are_named():
    z0, z1 = torch.randn(2, 4, 3).unbind(0)
    features = torch.randn(8, 5)
    features[1, 2] = math.nan
    with pytest.raises(ValueError, match="'attention_features' contains non-finite"):
        AttentionSimCLRLoss(normalize="positives")(z0, z1, attention_features=features)


def test_dtypes_that_would_truncate_are_refused():
    with pytest.raises(TypeError, match="'dtype' must be a floating-point"):
        augmentation_graph(4, 2, dtype=torch.bool)
    with pytest.raises(TypeError, match="'dtype' must be a floating-point"):
        augmentation_graph(4, 2, dtype=torch.int64)
    with pytest.raises(TypeError, match="'dtype' must be a floating-point"):
        MultiStageMemory(4, 2, dtype=torch.int32)
    for gamma in (math.nan, -2.0, 0.0):
        with pytest.raises(ValueError, match="'gamma'"):
            MultiStageMemory(4, 2, aggr="decay", gamma=gamma)


@pytest.mark.parametrize("make", [lambda t: UniformityConv(tiling=t),
                                  lambda t: ContrastiveConv(tiling=t),
                                  lambda t: AttentionAlignmentConv(tiling=t),
                                  lambda t: SimCLRLoss(tiling=t)])
def test_tiling_must_be_a_tiling(make):
    with pytest.raises(TypeError, match="'tiling' must be a Tiling"):
        make("big")


def test_confusing_errors_are_clear():
    h = torch.randn(6, 4)
    with pytest.raises(TypeError, match="'edge_index' must be an int64"):
        AlignmentConv()(h, GRAPH.edge_index.to(torch.uint8))
    for normalize in ("negatives", "positives", "neighbors"):  # no positive pair: no update
        no_edges = torch.zeros(2, 0, dtype=torch.long)
        torch.testing.assert_close(AttentionAlignmentConv(normalize=normalize)(h, no_edges), h)
    memory = MultiStageMemory(4, 2)
    with pytest.raises(TypeError, match="'epoch' must be an int"):
        memory.write(torch.arange(2), torch.randn(2, 2), epoch=0.5)
    with pytest.raises(TypeError, match="'epoch' must be an int"):
        memory.read(torch.arange(2), epoch=1.5)
    x = torch.randn(50, 4)
    with pytest.raises(TypeError, match="'seed' must be an int"):
        AffinityIndex(x, seed="a")
    with pytest.raises(TypeError, match="'generator' must be a torch.Generator"):
        AffinityIndex(x).sample(4, 8, x[:3], generator=0)


def test_non_finite_values_of_a_sparse_adj_t_are_named():
    """A sparse adj_t's values are the weights: checked like an edge_weight, for every layer."""
    from torch_geometric.utils import to_torch_csr_tensor

    h = torch.randn(6, 4)
    values = torch.ones(GRAPH.edge_index.size(1))
    values[1] = math.nan
    adj_t = to_torch_csr_tensor(GRAPH.edge_index.flip(0), values, size=(6, 6))
    for conv in (AlignmentConv(), UniformityConv()):
        with pytest.raises(ValueError, match="'edge_weight' contains non-finite"):
            conv(h, adj_t)
