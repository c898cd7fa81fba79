"""The input handling of the operators and their kernels: feature pairs, graphs in any PyG layout,
per-anchor weights. Below both layers (mp_contrastive.nn and its functional kernels), so that the
kernels never import from the operators' package."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.typing import Adj, PairTensor
from torch_geometric.utils import is_sparse, to_edge_index

from mp_contrastive._validation import (
    check_choice,
    check_device,
    check_edge_index,
    check_edge_values,
    check_features,
    check_index_vector,
    check_weight_values,
    device_mismatch,
)

__all__ = ["KERNELS", "check_pair", "split_pair", "check_adjacency", "as_edge_index",
           "check_anchor_weight", "anchor_coefficients", "check_kernel", "check_batch",
           "batch_pair", "check_repulsion", "repulsion_inputs"]

#: The uniformity's kernels: ``"infonce"`` (log-sum-exp of similarities) or ``"spectral"``
#: (sum of squared similarities).
KERNELS = ("infonce", "spectral")

# Each input has a check (at the public entry point, once) and, where the operators need another
# form of it, an unchecked conversion (in the internal computation, for trusted tensors).


def check_pair(x: object, name: str = "x", *, sync: bool = True) -> tuple[Tensor, Tensor, bool]:
    """Check a tensor or a bipartite pair ``(x_src, x_dst)``; returns :func:`split_pair`'s."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2 or not all(isinstance(part, Tensor) for part in x):
            raise TypeError(f"'{name}' must be a torch.Tensor or a pair (x_src, x_dst) of "
                            f"tensors, got a {type(x).__name__} of {len(x)} items")
        # The device first: a value check on a tensor of another device would fail in torch.
        check_device(x[0], f"{name}[0] (x_src)", x[1].device, f"{name}[1] (x_dst)")
        x_src = check_features(x[0], f"{name}[0] (x_src)", sync=sync)
        x_dst = check_features(x[1], f"{name}[1] (x_dst)", sync=sync)
        if x_src.size(1) != x_dst.size(1):
            raise ValueError(f"'{name}' pair has mismatched feature dimensions: x_src has "
                             f"{x_src.size(1)}, x_dst has {x_dst.size(1)}")
        if x_src.dtype != x_dst.dtype:
            raise TypeError(f"'{name}' pair has mismatched dtypes {x_src.dtype} and "
                            f"{x_dst.dtype}")
        return x_src, x_dst, False
    x = check_features(x, name, sync=sync)
    return x, x, True


def split_pair(x: Tensor | PairTensor) -> tuple[Tensor, Tensor, bool]:
    """``(x_src, x_dst, same_nodes)`` for a checked tensor or bipartite pair ``(x_src, x_dst)``."""
    if isinstance(x, (tuple, list)):
        return x[0], x[1], False
    return x, x, True


def check_adjacency(adj: object, edge_weight: object, num_src: int, num_dst: int, name: str,
                    weight_name: str, reference: Tensor, *, nonnegative: bool = False,
                    ref: str = "x", sync: bool = True) -> None:
    """Check an ``edge_index`` tensor, a torch sparse ``adj_t`` or a ``SparseTensor`` ``adj_t``
    with its weights: ranges, finite weights (non-negative with ``nonnegative``: weights whose
    logarithm or square root is taken) and the device of ``reference`` (the argument ``ref``)."""
    device = reference.device
    if is_sparse(adj):
        adj_device = adj.device() if callable(adj.device) else adj.device  # SparseTensor: a method
        if adj_device != device:
            raise device_mismatch(name, adj_device, ref, device)
        if edge_weight is not None:
            raise ValueError(f"'{weight_name}' must be None when '{name}' is a sparse matrix "
                             f"(its values are the weights)")
        if tuple(adj.size()) != (num_dst, num_src):  # adj_t: rows are targets
            raise ValueError(f"sparse '{name}' (adj_t) must have size [num_dst, num_src] = "
                             f"[{num_dst}, {num_src}], got {list(adj.size())}")
        values = _sparse_values(adj)
        if values is not None:  # the matrix's values are the weights: checked like them
            if not values.is_floating_point():
                raise TypeError(f"sparse '{name}' must have floating-point values (its "
                                f"weights), got dtype {values.dtype}")
            check_weight_values(values, weight_name, nonnegative=nonnegative, sync=sync)
        return
    # The device first (check_device, inside each check, before any value is read): a value
    # check on a tensor of another device would fail in torch.
    check_edge_index(adj, num_src, num_dst, name, device=device, ref=ref, sync=sync)
    if edge_weight is not None:
        check_edge_values(edge_weight, adj.size(1), weight_name, nonnegative=nonnegative,
                          device=device, ref=ref, sync=sync)


def _sparse_values(adj: Adj) -> Tensor | None:
    """The stored values of a sparse ``adj_t`` (``None`` for a ``SparseTensor`` without)."""
    if isinstance(adj, Tensor):
        return adj._values() if adj.layout == torch.sparse_coo else adj.values()
    return adj.storage.value()  # torch_sparse.SparseTensor


def as_edge_index(adj: Adj, edge_weight: Tensor | None,
                  dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """A checked ``edge_index`` tensor, torch sparse ``adj_t`` or ``SparseTensor`` ``adj_t`` in
    ``(edge_index, edge_weight)`` form, with the weights in the features' ``dtype``."""
    if is_sparse(adj):
        index, edge_weight = to_edge_index(adj)
        adj = index.flip(0)
    if edge_weight is not None:
        edge_weight = edge_weight.to(dtype)
    return adj, edge_weight


def check_anchor_weight(anchor_weight: object, num_dst: int, reference: Tensor, *,
                        ref: str = "x", sync: bool = True) -> None:
    """A per-anchor weight ``[num_dst]``, non-negative and finite, on ``reference``'s device (the
    argument ``ref``), or ``None``."""
    if anchor_weight is None:
        return
    if not isinstance(anchor_weight, Tensor) or not anchor_weight.is_floating_point():
        raise TypeError("'anchor_weight' must be a floating-point tensor of shape [num_nodes]")
    if anchor_weight.dim() != 1 or anchor_weight.numel() != num_dst:
        raise ValueError(f"'anchor_weight' must have shape [num_nodes] = [{num_dst}], "
                         f"got {tuple(anchor_weight.shape)}")
    check_device(anchor_weight, "anchor_weight", reference.device, ref)
    check_weight_values(anchor_weight, "anchor_weight", nonnegative=True, sync=sync)


def anchor_coefficients(anchor_weight: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A checked per-anchor weight, detached (it is a loss coefficient) in ``dtype``."""
    return None if anchor_weight is None else anchor_weight.detach().to(dtype)


def check_kernel(kernel: str) -> str:
    """``kernel`` must be one of the uniformity's :data:`~mp_contrastive.nn.functional.KERNELS`."""
    return check_choice(kernel, "kernel", KERNELS)


def check_batch(batch: object, num_src: int, num_dst: int, same_nodes: bool, dense: bool,
                reference: Tensor) -> None:
    """``batch``: each node's graph in a PyG ``Batch`` (one vector for one node set, a pair
    ``(batch_src, batch_dst)`` for ``(x_src, x_dst)``), or ``None``. Only the dense affinity graph
    takes it, and every graph then needs a second node to contrast with. These checks read
    values on the host whatever the device: a batch vector is data, checked once per call."""
    if batch is None:
        return
    if not dense:
        raise ValueError("'batch' keeps the dense affinity graph within each graph of a batch; "
                         "with an affinity edge_index the edges already say which pairs count")
    if isinstance(batch, (tuple, list)):
        if same_nodes or len(batch) != 2:
            raise TypeError("'batch' must be one vector for one node set, or a pair "
                            "(batch_src, batch_dst) for a pair (x_src, x_dst)")
        batch_src = check_index_vector(batch[0], "batch[0] (batch_src)", length=num_src,
                                       device=reference.device)
        batch_dst = check_index_vector(batch[1], "batch[1] (batch_dst)", length=num_dst,
                                       device=reference.device)
    else:
        if not same_nodes:
            raise TypeError("'batch' must be a pair (batch_src, batch_dst) for a pair "
                            "(x_src, x_dst)")
        batch_src = batch_dst = check_index_vector(batch, "batch", length=num_dst,
                                                   device=reference.device)
    if same_nodes:
        sizes = torch.bincount(batch_dst)
        lonely = ((sizes == 1).nonzero().view(-1)).tolist()
        if lonely:
            raise ValueError(f"'batch' has graphs of one node ({lonely[:5]}): a node alone in its "
                             f"graph has no other node to contrast with")
    else:
        present = torch.isin(batch_dst, batch_src)
        if not bool(present.all()):
            raise ValueError("'batch': every target node's graph needs source nodes (a graph "
                             "with targets only has no negatives)")


def batch_pair(batch: Tensor | tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
    """A checked ``batch`` as ``(batch_src, batch_dst)`` (``long``), or ``None``."""
    if batch is None:
        return None
    if isinstance(batch, (tuple, list)):
        return batch[0].long(), batch[1].long()
    batch = batch.long()
    return batch, batch


def check_repulsion(x_src: Tensor, x_dst: Tensor, same_nodes: bool, affinity_index: object,
                    affinity_weight: object, anchor_weight: object, batch: object,
                    names: tuple[str, str], *, sync: bool) -> None:
    """The uniformity's inputs besides its features (checked by :func:`check_pair`): the affinity
    graph, called ``names`` (index, weight) by the operator (``None``: the dense graph, which is
    unweighted), the per-anchor weights and the batch vectors."""
    if affinity_index is not None:
        check_adjacency(affinity_index, affinity_weight, x_src.size(0), x_dst.size(0), *names,
                        x_dst, nonnegative=True, sync=sync)
    elif affinity_weight is not None:
        raise ValueError(f"'{names[1]}' needs an '{names[0]}' (the dense affinity graph is "
                         f"unweighted)")
    check_anchor_weight(anchor_weight, x_dst.size(0), x_dst, sync=sync)
    check_batch(batch, x_src.size(0), x_dst.size(0), same_nodes, affinity_index is None, x_dst)


def repulsion_inputs(affinity_index: Adj | None, affinity_weight: Tensor | None,
                     anchor_weight: Tensor | None, batch: Tensor | tuple[Tensor, Tensor] | None,
                     dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None, Tensor | None,
                                                  tuple[Tensor, Tensor] | None]:
    """:func:`check_repulsion`'s inputs, checked, in the form the uniformity kernel takes: the
    affinity graph as ``(edge_index, edge_weight)``, the anchor coefficients, the batch pair."""
    if affinity_index is not None:
        affinity_index, affinity_weight = as_edge_index(affinity_index, affinity_weight, dtype)
    return (affinity_index, affinity_weight, anchor_coefficients(anchor_weight, dtype),
            batch_pair(batch))
