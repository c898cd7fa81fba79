r"""Graph spectra and Proposition 2: the normalised Laplacian, the algebraic connectivity
:math:`\lambda_2` of a graph and of each class's subgraph, the alignment step's guaranteed
contraction and each class's distance to its top eigenvector (see :mod:`mp_contrastive.dynamics`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
import torch
from torch import Tensor
from torch_geometric.utils import scatter

from mp_contrastive._validation import (
    check_choice,
    check_edge_index,
    check_edge_values,
    check_features,
    check_labels,
    check_positive,
    check_positive_int,
)

__all__ = [
    "EIGEN_METHODS",
    "normalized_laplacian",
    "algebraic_connectivity",
    "class_algebraic_connectivity",
    "alignment_contraction_bound",
    "class_subspace_distance",
]

EIGEN_METHODS = ("auto", "dense", "sparse")
# Below this many nodes a dense eigendecomposition is faster and exact; above, shift-invert Lanczos.
DENSE_EIGEN_LIMIT = 512


def _num_nodes(edge_index: Tensor, num_nodes: int | None) -> int:
    if num_nodes is None:
        if edge_index.numel() == 0:
            raise ValueError("'num_nodes' is required when 'edge_index' has no edges")
        return int(edge_index.max()) + 1
    return check_positive_int(num_nodes, "num_nodes")


def _adjacency(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> sp.csr_array:
    """The weighted adjacency ``A[i, j]`` (edge ``j -> i``) as a float64 scipy matrix, duplicates
    summed, checked to be symmetric with non-negative finite weights."""
    check_edge_index(edge_index, num_nodes, num_nodes)
    if edge_weight is None:
        weight = np.ones(edge_index.size(1))
    else:
        weight = check_edge_values(edge_weight, edge_index.size(1), "edge_weight")
        weight = weight.detach().double().cpu().numpy()
        if not np.isfinite(weight).all() or (weight < 0).any():
            raise ValueError("'edge_weight' must be finite and non-negative")
    src, dst = edge_index.detach().cpu().numpy()
    adj = sp.csr_array((weight, (dst, src)), shape=(num_nodes, num_nodes))
    adj.sum_duplicates()
    asym = abs(adj - adj.T).max() if adj.nnz else 0.0
    if asym > 1e-12 * max(abs(adj).max() if adj.nnz else 1.0, 1.0):
        raise ValueError("'edge_index' (with 'edge_weight') must describe an undirected graph: "
                         "every edge in both directions with equal weight")
    return adj


def normalized_laplacian(edge_index: Tensor, edge_weight: Tensor | None = None,
                         num_nodes: int | None = None) -> sp.csr_array:
    r"""The symmetric normalised Laplacian :math:`L = I_{+} - D^{-1/2} A D^{-1/2}` of an undirected
    graph as a float64 ``scipy.sparse`` matrix (:math:`I_{+}`: ones on the diagonal of the nodes
    with non-zero degree, Chung's convention).

    Args:
        edge_index (Tensor): edges :math:`(2, |E|)`, each in both directions.
        edge_weight (Tensor, optional): non-negative weights :math:`(|E|)` of :math:`A` (default
            one); duplicate edges are summed.
        num_nodes (int, optional): number of nodes (default ``edge_index.max() + 1``).
    """
    num_nodes = _num_nodes(edge_index, num_nodes)
    adj = _adjacency(edge_index, edge_weight, num_nodes)
    return _laplacian(adj)


def _laplacian(adj: sp.csr_array) -> sp.csr_array:
    degree = np.asarray(adj.sum(axis=1)).ravel()
    nonzero = degree > 0
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[nonzero] = degree[nonzero] ** -0.5
    scale = sp.diags_array(inv_sqrt)
    return (sp.diags_array(nonzero.astype(np.float64)) - scale @ adj @ scale).tocsr()


def _lambda2(adj: sp.csr_array, method: str) -> float:
    n = adj.shape[0]
    num_components, _ = csgraph.connected_components(adj, directed=False)
    if num_components > 1:  # exactly zero: an eigensolver would return ~1e-16 instead
        return 0.0
    laplacian = _laplacian(adj)
    if method == "dense" or (method == "auto" and n <= DENSE_EIGEN_LIMIT) or n < 4:
        return float(max(np.linalg.eigvalsh(laplacian.toarray())[1], 0.0))
    # Shift-invert Lanczos around a point just below the spectrum: L + 1e-3 I is positive
    # definite, and the two eigenvalues closest to the shift are 0 and lambda_2. A fixed start
    # vector keeps the result reproducible.
    start = np.random.default_rng(0).standard_normal(n)
    values = spla.eigsh(laplacian.tocsc(), k=2, sigma=-1e-3, which="LM", v0=start,
                        return_eigenvectors=False)
    return float(max(np.sort(values)[1], 0.0))


def algebraic_connectivity(edge_index: Tensor, edge_weight: Tensor | None = None,
                           num_nodes: int | None = None, *, method: str = "auto") -> float:
    r"""The algebraic connectivity :math:`\lambda_2`: the second-smallest eigenvalue of the normalised
    Laplacian :math:`L = I - D^{-1/2} A D^{-1/2}` (see :func:`normalized_laplacian`). It is
    exactly ``0.0`` for a disconnected graph (found with a connected-components pass, not by an
    eigensolver's round-off), and at most :math:`n / (n - 1)`, reached by the complete graph.

    Args:
        edge_index (Tensor): undirected edges :math:`(2, |E|)`, each in both directions.
        edge_weight (Tensor, optional): non-negative weights of :math:`A` (default one).
        num_nodes (int, optional): number of nodes, at least 2 (default ``edge_index.max() + 1``).
        method (str): ``"dense"`` (``numpy.linalg.eigvalsh``), ``"sparse"`` (shift-invert Lanczos,
            ``scipy.sparse.linalg.eigsh``) or ``"auto"``: dense up to 512 nodes.
    """
    check_choice(method, "method", EIGEN_METHODS)
    num_nodes = _num_nodes(edge_index, num_nodes)
    if num_nodes < 2:
        raise ValueError(f"the algebraic connectivity needs a graph with at least 2 nodes, "
                         f"got num_nodes={num_nodes}")
    return _lambda2(_adjacency(edge_index, edge_weight, num_nodes), method)


def _intra_class_edges(edge_index: Tensor, edge_weight: Tensor | None,
                       labels: Tensor) -> tuple[Tensor, Tensor | None]:
    keep = labels[edge_index[0]] == labels[edge_index[1]]
    return edge_index[:, keep], None if edge_weight is None else edge_weight[keep]


def class_algebraic_connectivity(edge_index: Tensor, labels: Tensor,
                                 edge_weight: Tensor | None = None, *,
                                 method: str = "auto") -> Tensor:
    r""":math:`\lambda_2(L_c)` of every class's subgraph :math:`A_c` (the edges with both ends in
    class :math:`c`, normalised by the degrees *within* the class), as in Proposition 2.

    Args:
        edge_index (Tensor): undirected edges :math:`(2, |E|)`; cross-class edges are ignored.
        labels (Tensor): class of every node :math:`(|V|)`, integers in ``[0, num_classes)``.
        edge_weight (Tensor, optional): non-negative weights of :math:`A` (default one).
        method (str): eigensolver, see :func:`algebraic_connectivity`.

    Returns:
        A float64 tensor of shape ``[num_classes]`` (``num_classes = labels.max() + 1``); ``nan``
        for a class with fewer than two nodes, where :math:`\lambda_2` is undefined.
    """
    check_choice(method, "method", EIGEN_METHODS)
    labels, num_classes = check_labels(labels)
    num_nodes = labels.numel()
    labels = labels.cpu()
    edge_index = check_edge_index(edge_index, num_nodes, num_nodes).cpu()
    if edge_weight is not None:
        edge_weight = check_edge_values(edge_weight, edge_index.size(1), "edge_weight").cpu()
    edge_index, edge_weight = _intra_class_edges(edge_index, edge_weight, labels)
    adj = _adjacency(edge_index, edge_weight, num_nodes)
    labels_np = labels.cpu().numpy()
    out = torch.full((num_classes,), math.nan, dtype=torch.float64)
    for c in range(num_classes):
        members = np.flatnonzero(labels_np == c)
        if members.size >= 2:
            out[c] = _lambda2(adj[members][:, members].tocsr(), method)
    return out


def alignment_contraction_bound(lambda2: Tensor | float, alpha: float,
                                detach_targets: bool = True) -> Tensor:
    r"""Proposition 2's guaranteed per-step factor :math:`1 - \alpha_{\mathrm{eff}} \lambda_2` for
    ``AlignmentConv(alpha, detach_targets)``: :math:`\alpha_{\mathrm{eff}} = \alpha` for the
    detached step :math:`(1-\alpha) H + \alpha \bar{A} H`, and :math:`2\alpha` for the full-gradient
    step :math:`(1-2\alpha) H + 2\alpha \bar{A} H`.

    The factor bounds the step's contraction of the components orthogonal to :math:`u_c`, i.e.
    :math:`\max_{\mu \in \mathrm{spec}(L_c) \setminus 0} |1 - \alpha_{\mathrm{eff}} \mu|`, only
    when :math:`1 - \alpha_{\mathrm{eff}} \lambda_2 \ge \alpha_{\mathrm{eff}} \lambda_{\max} - 1`;
    since :math:`\lambda_{\max} \le 2`, :math:`\alpha_{\mathrm{eff}} \le 1/2` guarantees it, and
    larger steps raise a ``ValueError``.
    """
    alpha = check_positive(alpha, "alpha")
    effective = alpha if detach_targets else 2 * alpha
    if effective > 0.5:
        raise ValueError(f"Proposition 2's bound 1 - alpha * lambda_2 holds for an effective step "
                         f"<= 1/2 (alpha <= 1/2 detached, <= 1/4 full gradient), got 'alpha'="
                         f"{alpha} with detach_targets={detach_targets}")
    lambda2 = torch.as_tensor(lambda2, dtype=torch.float64)
    finite = lambda2[~torch.isnan(lambda2)]
    if bool(((finite < 0) | (finite > 2)).any()):
        raise ValueError("'lambda2' must lie in [0, 2] (eigenvalues of a normalised Laplacian)")
    return 1 - effective * lambda2


def class_subspace_distance(x: Tensor, edge_index: Tensor, labels: Tensor,
                            edge_weight: Tensor | None = None) -> Tensor:
    r"""Each class's Frobenius distance to the one-dimensional subspace of Proposition 2,

    .. math::
        \mathrm{dist}_c = \big\| H_c - u_c u_c^\top H_c \big\|_F, \qquad
        u_c = \sqrt{d_c} / \|\sqrt{d_c}\|,

    where :math:`d_c` are the degrees within class :math:`c` (cross-class edges are ignored) and
    :math:`u_c` is the top eigenvector of :math:`\bar{A}_c = D_c^{-1/2} A_c D_c^{-1/2}`
    (eigenvalue 1; unique when the class is connected). The residual is formed explicitly, not as
    :math:`\|H_c\|^2 - \|u_c^\top H_c\|^2`, so it stays accurate as it approaches zero.

    Returns:
        A tensor ``[num_classes]`` in ``x``'s dtype; ``nan`` for a class without intra-class edges
        (then :math:`u_c` is undefined) or without nodes.
    """
    x = check_features(x)
    num_nodes = x.size(0)
    labels, num_classes = check_labels(labels, num_nodes)
    labels = labels.to(x.device)
    check_edge_index(edge_index, num_nodes, num_nodes)
    weight = (torch.ones(edge_index.size(1), dtype=x.dtype, device=x.device) if edge_weight is None
              else check_edge_values(edge_weight, edge_index.size(1), "edge_weight").to(x.device,
                                                                                    x.dtype))
    edge_index, weight = _intra_class_edges(edge_index.to(x.device), weight, labels)
    degree = scatter(weight, edge_index[1], 0, num_nodes, reduce="sum")
    root = degree.clamp_min(0).sqrt()
    norm = scatter(degree, labels, 0, num_classes, reduce="sum").sqrt()
    u = root / norm.index_select(0, labels).clamp_min(torch.finfo(x.dtype).tiny)
    coef = scatter(u.unsqueeze(1) * x, labels, 0, num_classes, reduce="sum")  # u_c^T H_c
    residual = x - u.unsqueeze(1) * coef.index_select(0, labels)
    dist = scatter(residual.pow(2).sum(1), labels, 0, num_classes, reduce="sum").sqrt()
    return dist.masked_fill(norm == 0, math.nan)
