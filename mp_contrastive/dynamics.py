r"""Diagnostics of contrastive learning dynamics: the paper's theory as measurements.

Every function takes plain tensors (features ``x`` of shape ``[num_nodes, num_features]``, an
``edge_index`` in PyG's source-to-target convention, integer ``labels``) and returns tensors or
floats, so it can be called on a toy graph, a training batch or a whole graph alike.

**Graph spectra.** The Laplacian used throughout is the symmetric normalised Laplacian of
DESIGN.md and Proposition 2,

.. math::
    L = I_{+} - \bar{A}, \qquad \bar{A} = D^{-1/2} A D^{-1/2},

where :math:`I_{+}` has a one on the diagonal of every node with non-zero degree (Chung's
convention; it equals :math:`I` when no node is isolated, which is the case for any augmentation
graph). Its eigenvalues lie in :math:`[0, 2]`; the multiplicity of :math:`0` is the number of
connected components (an isolated node is a component), so the **algebraic connectivity**
:math:`\lambda_2`, the second-smallest eigenvalue, is positive iff the graph is connected.

**Proposition 2.** For a label-preserving augmentation graph, one alignment step
:math:`H' = (1-\alpha) H + \alpha \bar{A} H` (``AlignmentConv(alpha, detach_targets=True)``) shrinks
each class's distance to the top eigenvector :math:`u_c \propto \sqrt{d_c}` of
:math:`\bar{A}_c`,

.. math::
    \| H'_c - u_c u_c^\top H'_c \|_F \le (1 - \alpha \lambda_2(L_c))\,
    \| H_c - u_c u_c^\top H_c \|_F \qquad (0 < \alpha \le 1/2),

see :func:`class_algebraic_connectivity`, :func:`class_subspace_distance` and
:func:`alignment_contraction_bound`.

**Proposition 3.** The contrastive step vanishes when the affinity graph
:math:`\hat{A}_{ij} = e^{H_i \cdot H_j} / \sum_{k \ne i} e^{H_i \cdot H_k}` equals :math:`\bar{A}` row
by row; :func:`equilibrium_gap` measures how far the two graphs are apart.

**Representation quality.** Wang & Isola's alignment and uniformity (:func:`alignment_metric`,
:func:`uniformity_metric`), the singular spectrum and effective rank of the features (dimensional
collapse: :func:`singular_spectrum`, :func:`effective_rank`) and the intra- / inter-class
distance ratio (:func:`class_distances`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import coalesce, scatter

from mp_contrastive._validation import (
    check_choice,
    check_edge_index,
    check_edge_values,
    check_features,
    check_index_vector,
    check_positive,
    check_positive_int,
)
from mp_contrastive.graph import augmentation_edges

__all__ = [
    "normalized_laplacian",
    "algebraic_connectivity",
    "class_algebraic_connectivity",
    "alignment_contraction_bound",
    "class_subspace_distance",
    "EquilibriumGap",
    "equilibrium_gap",
    "alignment_metric",
    "uniformity_metric",
    "singular_spectrum",
    "effective_rank",
    "spectrum_effective_rank",
    "ClassDistances",
    "class_distances",
]

EIGEN_METHODS = ("auto", "dense", "sparse")
REDUCTIONS = ("mean", "none")
# Below this many nodes a dense eigendecomposition is faster and exact; above, shift-invert Lanczos.
DENSE_EIGEN_LIMIT = 512


# -- graph spectra ---------------------------------------------------------------------------------


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


def _class_index(labels: object, num_nodes: int) -> tuple[Tensor, int]:
    labels = check_index_vector(labels, "labels", length=num_nodes)
    return labels, int(labels.max()) + 1


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
    labels = check_index_vector(labels, "labels")
    if labels.numel() == 0:
        raise ValueError("'labels' is empty: one class label per node is needed")
    num_nodes, num_classes = labels.numel(), int(labels.max()) + 1
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
    labels, num_classes = _class_index(labels, num_nodes)
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


# -- Proposition 3: the equilibrium gap ------------------------------------------------------------


class EquilibriumGap(NamedTuple):
    """Row-wise distances between the augmentation graph and the affinity graph."""

    total_variation: Tensor
    kl: Tensor


def equilibrium_gap(x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                    normalize: bool = True, anchors: Tensor | None = None,
                    reduction: str = "mean") -> EquilibriumGap:
    r"""How far the features are from the contrastive equilibrium of Proposition 3,
    :math:`\bar{A} = \hat{A}`, row by row. With the dense affinity graph
    :math:`\hat{A}_{ij} = e^{x_i \cdot x_j} / \sum_{k \ne i} e^{x_i \cdot x_k}`,

    .. math::
        \mathrm{TV}_i = \tfrac{1}{2} \sum_{j \ne i} |\bar{A}_{ij} - \hat{A}_{ij}|, \qquad
        \mathrm{KL}_i = \sum_{j \ne i} \Big[\bar{A}_{ij} \log \frac{\bar{A}_{ij}}{\hat{A}_{ij}}
        - \bar{A}_{ij} + \hat{A}_{ij}\Big].

    :math:`\mathrm{KL}_i` is the generalised (unnormalised) Kullback-Leibler divergence: the usual
    KL when row :math:`i` of :math:`\bar{A}` sums to one (any batch of views), and in every case
    non-negative and zero iff the rows agree. Both are zero exactly at the equilibrium, where the
    contrastive step of :class:`~mp_contrastive.nn.ContrastiveConv` vanishes. Runs in
    :math:`O(m N d + |E|)` for :math:`m` anchors, without forming :math:`\bar{A}` densely.

    Args:
        x (Tensor): features in the loss's feature space, :math:`H = \mathrm{normalize}(Z) /
            \sqrt{\tau}`, shape :math:`(N, d)`.
        edge_index (Tensor): augmentation edges :math:`(2, |E|)` (source, target), no self loops.
        edge_weight (Tensor, optional): edge weights (default one).
        normalize (bool): apply :math:`D^{-1/2} A D^{-1/2}` (PyG's ``gcn_norm``, as
            :class:`~mp_contrastive.nn.ContrastiveConv` does); a batch graph from
            :func:`~mp_contrastive.graph.augmentation_graph` is unchanged by it. (default ``True``)
        anchors (Tensor, optional): indices of the rows to measure (default all); the softmax
            still runs over all other nodes, so a random subset estimates the mean without bias.
        reduction (str): ``"mean"`` over anchors, or ``"none"`` for one value per anchor.
    """
    x = check_features(x)
    check_choice(reduction, "reduction", REDUCTIONS)
    num_nodes, device = x.size(0), x.device
    if num_nodes < 2:
        raise ValueError("'x' needs at least 2 rows: the affinity graph excludes each node itself")
    check_edge_index(edge_index, num_nodes, num_nodes)
    if edge_weight is not None:
        edge_weight = check_edge_values(edge_weight, edge_index.size(1), "edge_weight")
        edge_weight = edge_weight.to(device, torch.float64)
    edge_index = edge_index.to(device)
    if bool((edge_index[0] == edge_index[1]).any()):
        raise ValueError("'edge_index' has self loops, but the affinity graph Ahat excludes each "
                         "node itself: remove them")
    inverse = None
    if anchors is None:
        anchors = torch.arange(num_nodes, device=device)
    else:
        anchors = check_index_vector(anchors, "anchors").to(device)
        if anchors.numel() == 0 or int(anchors.max()) >= num_nodes:
            raise ValueError(f"'anchors' must be non-empty node indices in [0, {num_nodes})")
        anchors, inverse = torch.unique(anchors, return_inverse=True)  # repeats allowed

    with torch.no_grad():
        x = x.detach()
        if normalize:
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_nodes,
                                               add_self_loops=False, dtype=torch.float64)
        elif edge_weight is None:
            edge_weight = torch.ones(edge_index.size(1), dtype=torch.float64, device=device)
        edge_index, edge_weight = coalesce(edge_index, edge_weight, num_nodes)
        # Position of each node among the anchors (-1 if not an anchor).
        slot = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        slot[anchors] = torch.arange(anchors.numel(), device=device)
        keep = slot[edge_index[1]] >= 0
        src, dst = edge_index[:, keep]
        abar = edge_weight[keep]
        row = slot[dst]

        sim = x.index_select(0, anchors) @ x.T
        sim[torch.arange(anchors.numel(), device=device), anchors] = -math.inf
        # The m x N pass stays in the features' dtype (it dominates the cost); only the per-edge
        # quantities below are float64, where the TV and KL sums could otherwise cancel.
        lse = torch.logsumexp(sim, dim=1).double()
        log_ahat = (x.index_select(0, dst) * x.index_select(0, src)).sum(1).double() - lse[row]
        ahat = log_ahat.exp()
        m = anchors.numel()
        # Ahat's rows sum to one, so the mass off the augmentation edges is 1 - (mass on them).
        on_edges = scatter(ahat, row, 0, m, reduce="sum")
        tv = 0.5 * (scatter((abar - ahat).abs(), row, 0, m, reduce="sum") + (1 - on_edges).clamp_min(0))
        kl_terms = torch.xlogy(abar, abar) - abar * log_ahat - abar
        kl = (scatter(kl_terms, row, 0, m, reduce="sum") + 1).clamp_min(0)
    if inverse is not None:
        tv, kl = tv[inverse], kl[inverse]
    if reduction == "mean":
        return EquilibriumGap(tv.mean(), kl.mean())
    return EquilibriumGap(tv, kl)


# -- Wang & Isola's alignment and uniformity -------------------------------------------------------


def _positive_pairs(num_nodes: int, edge_index: Tensor | None, sample: Tensor | None,
                    device: torch.device) -> Tensor:
    if (edge_index is None) == (sample is None):
        raise TypeError("pass exactly one of 'edge_index' (positive pairs) or 'sample' (the "
                        "sample id of every view)")
    if sample is not None:
        sample = check_index_vector(sample, "sample", length=num_nodes)
        edge_index, _, _ = augmentation_edges(sample.to(device))
        return edge_index
    assert edge_index is not None
    edge_index = check_edge_index(edge_index, num_nodes, num_nodes)
    if edge_index.size(1) == 0:
        raise ValueError("'edge_index' has no edges: the alignment needs positive pairs")
    return edge_index.to(device)


def alignment_metric(x: Tensor, edge_index: Tensor | None = None, *, sample: Tensor | None = None,
                     alpha: float = 2.0, normalize: bool = True) -> Tensor:
    r"""Wang & Isola's alignment, the mean distance between positive pairs,

    .. math::
        \mathcal{L}_{\mathrm{align}} = \mathbb{E}_{(i, j) \in E}\, \| f_i - f_j \|_2^{\alpha},

    with :math:`f = x / \|x\|` (``normalize=True``, the hypersphere of their paper). Lower is
    better aligned. The pairs are the edges of ``edge_index`` or, given ``sample`` (the sample id of
    every view), all pairs of views of the same sample.
    """
    x = check_features(x)
    alpha = check_positive(alpha, "alpha")
    src, dst = _positive_pairs(x.size(0), edge_index, sample, x.device)
    with torch.no_grad():
        f = F.normalize(x.detach(), dim=1) if normalize else x.detach()
        return (f.index_select(0, src) - f.index_select(0, dst)).norm(dim=1).pow(alpha).mean()


def uniformity_metric(x: Tensor, *, t: float = 2.0, normalize: bool = True) -> Tensor:
    r"""Wang & Isola's uniformity, the log of the mean Gaussian potential over distinct pairs,

    .. math::
        \mathcal{L}_{\mathrm{uniform}} = \log \frac{2}{N(N-1)} \sum_{i < j} e^{-t \|f_i - f_j\|_2^2},

    with :math:`f = x / \|x\|` (``normalize=True``). Lower is more uniform; it is :math:`0` when all
    features coincide and, on :math:`S^{d-1}`, bounded below by its value for the uniform
    distribution (:math:`-4` for ``t = 2`` as :math:`d \to \infty`). Computed with a log-sum-exp
    over the :math:`N \times N` Gram matrix (memory :math:`O(N^2)`: subsample large sets).
    """
    x = check_features(x)
    t = check_positive(t, "t")
    if x.size(0) < 2:
        raise ValueError("'x' needs at least 2 rows to form a pair")
    num_nodes = x.size(0)
    with torch.no_grad():
        f = F.normalize(x.detach(), dim=1) if normalize else x.detach()
        # -t |f_i - f_j|^2 = t (2 f_i.f_j - |f_i|^2 - |f_j|^2) from one matmul, in place (a BLAS
        # Gram matrix is several times faster than torch.pdist); the diagonal is left out, and
        # the mean over ordered pairs i != j equals the mean over i < j.
        sq = f.pow(2).sum(1)
        potential = (f @ f.T).mul_(2).sub_(sq.unsqueeze(1)).sub_(sq.unsqueeze(0)).clamp_max_(0)
        potential.mul_(t).fill_diagonal_(-math.inf)
        return torch.logsumexp(potential.view(-1), 0) - math.log(num_nodes * (num_nodes - 1))


# -- dimensional collapse --------------------------------------------------------------------------


def singular_spectrum(x: Tensor, *, center: bool = False) -> Tensor:
    r"""Singular values :math:`\sigma_1 \ge \sigma_2 \ge \dots` of the feature matrix (of
    :math:`x - \bar{x}` with ``center=True``, i.e. the square roots of :math:`N` times the
    covariance spectrum). A collapsed representation has few non-negligible values."""
    x = check_features(x)
    with torch.no_grad():
        x = x.detach()
        if center:
            x = x - x.mean(0, keepdim=True)
        return torch.linalg.svdvals(x)


def spectrum_effective_rank(singular_values: Tensor) -> Tensor:
    r"""Roy & Vetterli's effective rank of a spectrum:

    .. math::
        \mathrm{erank} = \exp\Big(-\sum_k p_k \log p_k\Big), \qquad
        p_k = \sigma_k / \textstyle\sum_l \sigma_l,

    with :math:`0 \log 0 = 0`. It lies in :math:`[1, \#\{\sigma_k > 0\}]`: :math:`k` equal non-zero
    values give exactly :math:`k`. An all-zero spectrum (a zero matrix) has effective rank ``0``.
    """
    if not isinstance(singular_values, Tensor) or not singular_values.is_floating_point():
        raise TypeError("'singular_values' must be a floating-point tensor of shape [k]")
    if singular_values.dim() != 1 or singular_values.numel() == 0:
        raise ValueError(f"'singular_values' must have shape [k] with k >= 1, "
                         f"got {tuple(singular_values.shape)}")
    s = singular_values.detach()
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError("'singular_values' must be finite and non-negative")
    total = s.sum()
    if total == 0:
        return torch.zeros((), dtype=s.dtype, device=s.device)
    p = s / total
    return torch.exp(-torch.xlogy(p, p).sum())


def effective_rank(x: Tensor, *, center: bool = False) -> Tensor:
    """Effective rank (Roy & Vetterli) of the features' singular spectrum, see
    :func:`spectrum_effective_rank` and :func:`singular_spectrum`. The uncentred default (as in
    RankMe) gives ``1`` for a complete collapse to one point; ``center=True`` measures the spread
    around the mean (then a complete collapse gives ``0``)."""
    return spectrum_effective_rank(singular_spectrum(x, center=center))


# -- class separation ------------------------------------------------------------------------------


class ClassDistances(NamedTuple):
    """Root-mean-square distances between pairs of distinct nodes of the same / different
    classes, and their ratio ``intra / inter`` (small = well clustered)."""

    intra: Tensor
    inter: Tensor
    ratio: Tensor


def class_distances(x: Tensor, labels: Tensor) -> ClassDistances:
    r"""Intra- and inter-class root-mean-square pairwise distances and their ratio,

    .. math::
        \mathrm{intra}^2 = \frac{\sum_c \sum_{i \ne j \in c} \|x_i - x_j\|^2}{\sum_c n_c (n_c - 1)},
        \qquad
        \mathrm{inter}^2 = \frac{\sum_{c(i) \ne c(j)} \|x_i - x_j\|^2}{N^2 - \sum_c n_c^2},

    computed in :math:`O(Nd)` from the identity :math:`\sum_{i,j \in S} \|x_i - x_j\|^2 = 2|S|
    \sum_{i \in S} \|x_i - \bar{x}_S\|^2` (centred first, so it does not cancel catastrophically
    when the features collapse). The ratio is invariant to a global scale of ``x``.
    """
    x = check_features(x)
    labels, num_classes = _class_index(labels, x.size(0))
    labels = labels.to(x.device)
    with torch.no_grad():
        x = x.detach().double()
        count = torch.bincount(labels, minlength=num_classes).double()
        mean = scatter(x, labels, 0, num_classes, reduce="sum") / count.clamp_min(1).unsqueeze(1)
        spread = scatter((x - mean.index_select(0, labels)).pow(2).sum(1), labels, 0, num_classes,
                         reduce="sum")
        intra_sum = (2 * count * spread).sum()
        total_sum = 2 * x.size(0) * (x - x.mean(0, keepdim=True)).pow(2).sum()
        intra_pairs = (count * (count - 1)).sum()
        inter_pairs = x.size(0) ** 2 - count.pow(2).sum()
    if intra_pairs == 0:
        raise ValueError("'labels' has no class with two or more nodes: no intra-class pair")
    if inter_pairs == 0:
        raise ValueError("'labels' has a single class: no inter-class pair")
    intra = (intra_sum / intra_pairs).sqrt()
    inter = ((total_sum - intra_sum).clamp_min(0) / inter_pairs).sqrt()
    return ClassDistances(intra, inter, intra / inter)
