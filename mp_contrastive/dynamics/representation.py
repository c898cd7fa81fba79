r"""Representation quality: Wang & Isola's alignment and uniformity, the singular spectrum and
effective rank (dimensional collapse), and the intra- / inter-class distance ratio."""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter

from mp_contrastive._validation import (
    check_edge_index,
    check_features,
    check_index_vector,
    check_labels,
    check_positive,
)
from mp_contrastive.graph import augmentation_edges

__all__ = ["alignment_metric", "uniformity_metric", "singular_spectrum", "effective_rank",
           "spectrum_effective_rank", "ClassDistances", "class_distances"]


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
    labels, num_classes = check_labels(labels, x.size(0))
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
