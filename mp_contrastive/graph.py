r"""A mini-batch of augmented views as a graph.

Nodes are views; an **augmentation edge** joins two different views of the same natural sample.
Nodes are ordered the way contrastive code concatenates views, ``torch.cat([z_0, z_1, ...])``:
node ``v * B + b`` is view ``v`` of sample ``b``. The normalised edge weight is the entry of

.. math::
    \bar{A} = D^{-1/2} A D^{-1/2}, \qquad A_{ij} = 1[\mathrm{sample}_i = \mathrm{sample}_j,\ i \ne j],

which for a sample with :math:`c` views is :math:`1/(c-1)` on each of its edges, so every row of
:math:`\bar{A}` sums to one and PyG's ``gcn_norm`` leaves it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.data import Data

from mp_contrastive._validation import (
    check_device_arg,
    check_features,
    check_float_dtype,
    check_index_vector,
    check_positive,
    check_positive_int,
    unit_rows,
)

__all__ = ["AugmentationGraph", "augmentation_graph", "view_sample_index", "augmentation_edges",
           "sphere_projection"]


class AugmentationGraph(Data):
    """A :class:`~torch_geometric.data.Data` for a batch of views.

    ``Data`` inherits a ``view()`` method from PyG's feature-store interface, which would hide the
    ``view`` attribute; here ``graph.view`` is the per-node view number, as one would expect.
    """

    @property
    def view(self) -> Tensor:  # type: ignore[override]
        return self["view"]


def view_sample_index(num_samples: int, num_views: int,
                      device: torch.device | str | None = None) -> Tensor:
    """The ``sample`` vector of ``num_views`` concatenated views of ``num_samples`` samples."""
    check_positive_int(num_samples, "num_samples")
    if check_positive_int(num_views, "num_views") < 2:
        raise ValueError(f"'num_views' must be >= 2 (a positive pair needs at least 2 views), "
                         f"got {num_views}")
    return torch.arange(num_samples, device=check_device_arg(device)).repeat(num_views)


def augmentation_edges(sample: Tensor,
                       dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Augmentation edges of the nodes described by ``sample`` (one sample id per node).

    Returns ``(edge_index, edge_weight, view)``: every ordered pair ``(j, i)`` of distinct nodes with
    the same sample id (source ``j``, target ``i``), its normalised weight :math:`1/(c-1)` for a
    sample with ``c`` views (in ``dtype``, default ``torch.get_default_dtype()``), and each node's
    view number (its rank among the nodes of its sample, in node order). Runs in
    :math:`O(N \\log N + |E|)` without any :math:`N \\times N` intermediate.
    """
    sample = check_index_vector(sample, "sample")
    num_nodes = sample.numel()
    if num_nodes == 0:
        raise ValueError("'sample' is empty: an empty batch has no augmentation graph")
    _, group, counts = torch.unique(sample, return_inverse=True, return_counts=True)
    if int(counts.min()) < 2:
        lonely = int(torch.unique(sample)[counts < 2][0])
        raise ValueError(f"every sample needs at least 2 views to form a positive pair, but sample "
                         f"{lonely} in 'sample' has only one")
    # Sort nodes by group (stable, so views keep node order), then enumerate all pairs in a group.
    order = torch.argsort(group, stable=True)
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=sample.device)
    ptr[1:] = torch.cumsum(counts, 0)
    view = torch.empty_like(sample)
    sorted_group = group[order]
    view[order] = torch.arange(num_nodes, device=sample.device) - ptr[sorted_group]

    size = counts[sorted_group]  # group size per sorted position
    pos = torch.repeat_interleave(torch.arange(num_nodes, device=sample.device), size)
    start = torch.repeat_interleave(torch.cumsum(size, 0) - size, size)
    offset = torch.arange(pos.numel(), device=sample.device) - start
    partner = ptr[sorted_group[pos]] + offset
    keep = partner != pos
    dst, src = order[pos[keep]], order[partner[keep]]
    edge_index = torch.stack([src, dst])
    dtype = torch.get_default_dtype() if dtype is None else check_float_dtype(dtype)
    edge_weight = 1.0 / (counts[group[dst]] - 1).to(dtype)
    return edge_index, edge_weight, view


def augmentation_graph(num_samples: int | None = None, num_views: int | None = None, *,
                       sample: Tensor | None = None,
                       device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> AugmentationGraph:
    """Build the augmentation graph of a mini-batch as a :class:`torch_geometric.data.Data`.

    Call it either with ``(num_samples, num_views)`` for equally many views per sample, ordered as
    ``torch.cat(views)``, or with an explicit ``sample`` vector (one sample id per node), e.g. for
    multi-crop batches with unequal view counts.

    Returns an :class:`AugmentationGraph` (a ``Data``) with ``edge_index`` (augmentation edges,
    no self loops), ``edge_weight`` (normalised, :math:`\\bar{A}`, in ``dtype``), ``sample``,
    ``view`` and ``num_nodes``.
    """
    device = check_device_arg(device)
    check_float_dtype(dtype)
    if sample is None:
        if num_samples is None or num_views is None:
            raise TypeError("augmentation_graph() needs either (num_samples, num_views) or sample=")
        sample = view_sample_index(num_samples, num_views, device=device)
    else:
        if num_samples is not None or num_views is not None:
            raise TypeError("augmentation_graph() takes either (num_samples, num_views) or "
                            "sample=, not both")
        sample = check_index_vector(sample, "sample")
        if device is not None:
            sample = sample.to(device)
    edge_index, edge_weight, view = augmentation_edges(sample, dtype)
    return AugmentationGraph(edge_index=edge_index, edge_weight=edge_weight, sample=sample,
                             view=view, num_nodes=sample.numel())


def sphere_projection(z: Tensor, temperature: float) -> Tensor:
    r"""The feature space of the contrastive losses and operators: every row of ``z`` projected
    onto the sphere of radius :math:`1 / \sqrt{\tau}`,

    .. math::
        H = \mathrm{normalize}(Z) / \sqrt{\tau}, \qquad H_i \cdot H_j = \cos(z_i, z_j) / \tau,

    so that the inner products the affinity graph exponentiates are the temperature-scaled cosine
    similarities of SimCLR's NT-Xent (NodeNorm with temperature, in the paper's words). Rows of
    zeros stay zero. Differentiable; no value is read (no synchronisation), so it can sit inside a
    training step.

    Args:
        z (Tensor): features :math:`(N, d)`, floating point.
        temperature (float): :math:`\tau > 0`.
    """
    z = check_features(z, "z", finite=False)
    temperature = check_positive(temperature, "temperature")
    # unit_rows, not F.normalize: a row of norm 1e-13 (below F.normalize's eps) or 1e200 (whose
    # squared norm overflows) has the same direction, so the same cosines, as one of norm 1.
    return unit_rows(z) / math.sqrt(temperature)

