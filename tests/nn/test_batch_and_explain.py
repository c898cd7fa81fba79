"""Operators as layers on a PyG Batch (batch= keeps the dense affinity graph within each graph:
the same as one call per graph) and under PyG's Explainer."""

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.explain import Explainer, GNNExplainer

from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv, ContrastiveConv, UniformityConv
from mp_contrastive.nn.functional import AttentionSpec, Tiling

TILINGS = [Tiling(), Tiling(elements=7, threshold=0)]  # plain, and tile by tile


def graphs(gen, sizes=(5, 3, 6)):
    parts = []
    for n in sizes:
        x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        src = torch.arange(n)
        edge_index = torch.stack([src, (src + 1) % n])  # a ring: augmentation edges
        parts.append(Data(x=x, edge_index=torch.cat([edge_index, edge_index.flip(0)], 1)))
    return parts, Batch.from_data_list(parts)


def per_graph_and_batched(conv, parts, batch, call):
    """(concatenated per-graph results, batched result) of ``call(conv, x, edge_index, batch)``
    returning (output, energy, gradient of a probe w.r.t. x)."""
    def run(data, b):
        x = data.x.clone().requires_grad_()
        out = call(conv, x, data.edge_index, b)
        energy = conv.energy(x, data.edge_index, batch=b) if b is not None else \
            conv.energy(x, data.edge_index)
        (grad,) = torch.autograd.grad(out.pow(3).sum() + energy, x)  # a per-node probe
        return out.detach(), energy.detach(), grad

    singles = [run(d, None) for d in parts]
    batched = run(batch, batch.batch)
    return (torch.cat([s[0] for s in singles]), sum(s[1] for s in singles),
            torch.cat([s[2] for s in singles])), batched


@pytest.mark.parametrize("tiling", TILINGS, ids=["plain", "tiled"])
@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
@pytest.mark.parametrize("detach_targets", [False, True])
@pytest.mark.parametrize("operator", ["uniformity", "contrastive", "contrastive-attention"])
def test_batch_equals_one_call_per_graph(gen, tiling, kernel, detach_targets, operator):
    parts, batch = graphs(gen)
    if operator == "uniformity":
        conv = UniformityConv(0.3, kernel=kernel, detach_targets=detach_targets, tiling=tiling)

        def call(conv, x, edge_index, b):
            return conv(x, batch=b) if b is not None else conv(x)

        # energy() takes the operator's own arguments: no edge_index for a dense uniformity
        conv_energy = conv.energy
        conv.energy = lambda x, edge_index, **kw: conv_energy(x, **kw)
    else:
        attention = (AttentionSpec(0.5, "neighbors", "cosine")  # a per-anchor softmax
                     if operator == "contrastive-attention" else None)
        conv = ContrastiveConv(0.3, kernel=kernel, detach_targets=detach_targets,
                               attention=attention, tiling=tiling)

        def call(conv, x, edge_index, b):
            return conv(x, edge_index, batch=b) if b is not None else conv(x, edge_index)
    expected, got = per_graph_and_batched(conv, parts, batch, call)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_batch_errors_name_the_problem(gen):
    parts, batch = graphs(gen, sizes=(4, 1, 3))
    with pytest.raises(ValueError, match="one node"):
        UniformityConv()(batch.x, batch=batch.batch)
    _, batch = graphs(gen)
    with pytest.raises(ValueError, match="'batch'"):
        UniformityConv()(batch.x, batch.edge_index, batch=batch.batch)
    with pytest.raises(ValueError, match="'batch'"):
        UniformityConv()(batch.x, batch=batch.batch[:-1])
    with pytest.raises(ValueError, match="batch= with a 'negatives' attention"):
        ContrastiveConv(attention=AttentionSpec())(batch.x, batch.edge_index, batch=batch.batch)


class Model(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4).double()
        self.conv = conv

    def forward(self, x, edge_index):
        return self.conv(self.lin(x), edge_index)


@pytest.mark.parametrize("conv", [
    ContrastiveConv(0.2), ContrastiveConv(0.2, attention=AttentionSpec(0.5, "positives", "cosine")),
    AlignmentConv(0.4), AttentionAlignmentConv(0.4, 0.5, "neighbors", "cosine"),
    UniformityConv(0.2), UniformityConv(0.2, kernel="spectral", detach_targets=True)],
    ids=["contrastive", "contrastive-attention", "alignment", "attention-alignment",
         "uniformity-sparse", "uniformity-spectral"])
def test_explainer_masks_the_augmentation_edges(gen, conv):
    """GNNExplainer trains an edge mask through the operator: every edge gets a mask value, and
    the mask changes the output (the edges go through propagate, where the mask applies)."""
    _, batch = graphs(gen, sizes=(6,))
    torch.manual_seed(0)
    explainer = Explainer(Model(conv), GNNExplainer(epochs=3), explanation_type="model",
                          node_mask_type=None, edge_mask_type="object",
                          model_config=dict(mode="regression", task_level="node",
                                            return_type="raw"))
    explanation = explainer(batch.x, batch.edge_index, index=0)
    mask = explanation.edge_mask
    assert mask.shape == (batch.edge_index.size(1),) and torch.isfinite(mask).all()
    assert mask.abs().sum() > 0


@pytest.mark.parametrize("kernel", ["infonce", "spectral"])
@pytest.mark.parametrize("detach_targets", [False, True])
def test_explained_sparse_uniformity_is_the_same_step(gen, kernel, detach_targets):
    """Under an explainer the sparse uniformity's edges go through propagate: same step."""
    from mp_contrastive.nn.functional import uniformity

    _, batch = graphs(gen, sizes=(7,))
    weight = torch.rand(batch.edge_index.size(1), generator=gen, dtype=torch.float64) + 0.1
    anchor = torch.rand(7, generator=gen, dtype=torch.float64) + 0.5
    conv = UniformityConv(0.3, kernel=kernel, detach_targets=detach_targets)
    expected = conv.step(batch.x, batch.edge_index, weight, anchor)
    explained = uniformity(batch.x, batch.x, same_nodes=True, both_sides=not detach_targets,
                           affinity_index=batch.edge_index, affinity_weight=weight,
                           anchor_weight=anchor, kernel=kernel, aggregate=conv.weighted_sum)
    torch.testing.assert_close(-0.3 * explained.grad, expected, atol=1e-12, rtol=0)
