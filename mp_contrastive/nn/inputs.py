"""The operators' input handling: feature pairs, graphs in any PyG layout, per-anchor weights."""

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
)

__all__ = ["KERNELS", "split_pair", "as_edge_index", "check_anchor_weight", "check_kernel",
           "check_batch"]

#: The uniformity's kernels: ``"infonce"`` (log-sum-exp of similarities) or ``"spectral"``
#: (sum of squared similarities).
KERNELS = ("infonce", "spectral")


def split_pair(x: Tensor | PairTensor, name: str = "x") -> tuple[Tensor, Tensor, bool]:
    """``(x_src, x_dst, same_nodes)`` for a tensor or a bipartite pair ``(x_src, x_dst)``."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2 or not all(isinstance(part, Tensor) for part in x):
            raise TypeError(f"'{name}' must be a torch.Tensor or a pair (x_src, x_dst) of "
                            f"tensors, got a {type(x).__name__} of {len(x)} items")
        x_src = check_features(x[0], f"{name}[0] (x_src)")
        x_dst = check_features(x[1], f"{name}[1] (x_dst)")
        if x_src.size(1) != x_dst.size(1):
            raise ValueError(f"'{name}' pair has mismatched feature dimensions: x_src has "
                             f"{x_src.size(1)}, x_dst has {x_dst.size(1)}")
        check_device(x_dst, f"{name}[1] (x_dst)", x_src.device, f"{name}[0] (x_src)")
        if x_src.dtype != x_dst.dtype:
            raise TypeError(f"'{name}' pair has mismatched dtypes {x_src.dtype} and "
                            f"{x_dst.dtype}")
        return x_src, x_dst, False
    x = check_features(x, name)
    return x, x, True



def as_edge_index(adj: Adj, edge_weight: Tensor | None, num_src: int, num_dst: int,
                  name: str, weight_name: str, dtype: torch.dtype, *,
                  nonnegative: bool = False, device: torch.device | None = None,
                  ref: str = "x") -> tuple[Tensor, Tensor | None]:
    """Bring an ``edge_index`` tensor, a torch sparse ``adj_t`` or a ``SparseTensor`` ``adj_t`` to
    ``(edge_index, edge_weight)`` form with checked ranges, finite weights (non-negative with
    ``nonnegative``: weights whose logarithm or square root is taken) and the features' dtype, on
    ``device`` (that of the features ``ref``) when given."""
    if is_sparse(adj):
        adj_device = adj.device() if callable(adj.device) else adj.device  # SparseTensor: a method
        if device is not None and adj_device != device:
            raise ValueError(f"'{name}' is on device {adj_device} but '{ref}' is on device "
                             f"{device}: move both to the same device")
        if edge_weight is not None:
            raise ValueError(f"'{weight_name}' must be None when '{name}' is a sparse matrix "
                             f"(its values are the weights)")
        if tuple(adj.size()) != (num_dst, num_src):  # adj_t: rows are targets
            raise ValueError(f"sparse '{name}' (adj_t) must have size [num_dst, num_src] = "
                             f"[{num_dst}, {num_src}], got {list(adj.size())}")
        index, edge_weight = to_edge_index(adj)
        edge_index = index.flip(0)
        if edge_weight is not None:  # the matrix's values are the weights: checked like them
            edge_weight = check_weight_values(edge_weight.to(dtype), weight_name,
                                              nonnegative=nonnegative)
    else:
        edge_index = check_edge_index(adj, num_src, num_dst, name, device=device, ref=ref)
        if edge_weight is not None:
            edge_weight = check_edge_values(edge_weight, edge_index.size(1), weight_name,
                                            nonnegative=nonnegative, device=device, ref=ref)
    if edge_weight is not None:
        edge_weight = edge_weight.to(dtype)
    return edge_index, edge_weight


def check_anchor_weight(anchor_weight: Tensor | None, num_dst: int, dtype: torch.dtype,
                        device: torch.device | None = None) -> Tensor | None:
    """A per-anchor weight ``[num_dst]`` (detached: it is a loss coefficient), or ``None``."""
    if anchor_weight is None:
        return None
    if not isinstance(anchor_weight, Tensor) or not anchor_weight.is_floating_point():
        raise TypeError("'anchor_weight' must be a floating-point tensor of shape [num_nodes]")
    if anchor_weight.dim() != 1 or anchor_weight.numel() != num_dst:
        raise ValueError(f"'anchor_weight' must have shape [num_nodes] = [{num_dst}], "
                         f"got {tuple(anchor_weight.shape)}")
    check_edge_values(anchor_weight, num_dst, "anchor_weight", nonnegative=True, device=device)
    return anchor_weight.detach().to(dtype)


def check_kernel(kernel: str) -> str:
    """``kernel`` must be one of the uniformity's :data:`~mp_contrastive.nn.functional.KERNELS`."""
    return check_choice(kernel, "kernel", KERNELS)


def check_batch(batch: Tensor | tuple[Tensor, Tensor] | None, num_src: int, num_dst: int,
                same_nodes: bool, dense: bool) -> tuple[Tensor, Tensor] | None:
    """``(batch_src, batch_dst)``: each node's graph in a PyG ``Batch`` (one vector for one node
    set, a pair for ``(x_src, x_dst)``), or ``None``. Only the dense affinity graph takes it, and
    every graph then needs a second node to contrast with."""
    if batch is None:
        return None
    if not dense:
        raise ValueError("'batch' keeps the dense affinity graph within each graph of a batch; "
                         "with an affinity edge_index the edges already say which pairs count")
    if isinstance(batch, (tuple, list)):
        if same_nodes or len(batch) != 2:
            raise TypeError("'batch' must be one vector for one node set, or a pair "
                            "(batch_src, batch_dst) for a pair (x_src, x_dst)")
        batch_src = check_index_vector(batch[0], "batch[0] (batch_src)", length=num_src)
        batch_dst = check_index_vector(batch[1], "batch[1] (batch_dst)", length=num_dst)
    else:
        if not same_nodes:
            raise TypeError("'batch' must be a pair (batch_src, batch_dst) for a pair "
                            "(x_src, x_dst)")
        batch_src = batch_dst = check_index_vector(batch, "batch", length=num_dst)
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
    return batch_src.to(batch_dst.device), batch_dst
