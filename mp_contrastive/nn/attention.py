"""Attention alignment: alignment on an attention-reweighted augmentation graph (GAT / AGNN)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import add_remaining_self_loops, scatter, softmax

from mp_contrastive._validation import check_choice, check_features, check_nonnegative
from mp_contrastive.nn._base import StepConv, _scatter_logsumexp, as_edge_index

__all__ = ["AttentionAlignmentConv", "NORMALIZATIONS", "ATTENTION_KERNELS"]

NORMALIZATIONS = ("negatives", "positives", "neighbors")
ATTENTION_KERNELS = ("dot", "cosine")


class AttentionAlignmentConv(StepConv):
    r"""Attention alignment (paper eq. 14-16): one gradient step of size :math:`\alpha` on

    .. math::
        E(H) = \tfrac{1}{2} \sum_i \sum_{j \in \mathrm{pos}(i)} w_{ij} \| H_i - H_j \|^2,

    the Laplacian energy of the attention graph :math:`W`, whose weights are computed from the
    features and then detached (they are loss coefficients). With ``detach_targets=True`` the step is
    :math:`H - \alpha (D_W - W) H` (:math:`D_W` = row sums); for row-stochastic :math:`W` it is
    :math:`(1 - \alpha) H + \alpha W H`, and :math:`\alpha = 1` gives GAT/AGNN propagation
    :math:`W H`. Without detaching, the step adds the transposed term
    :math:`-\alpha (D_{W^\top} - W^\top) H`.

    The score of an edge is :math:`s_{ij} = \beta\, q_i \cdot q_j` with :math:`q` the attention
    features (``attention_x``, default ``x``; unit-normalised first when ``kernel="cosine"``).
    With base weights :math:`b_{ij}` (``edge_weight``; default :math:`1/\deg(i)`, i.e.
    :math:`\bar{A}` for a batch of views), the three normalisations are:

    * ``"negatives"`` (the paper): :math:`w_{ij} = b_{ij}\, e^{s_{ij}} /
      \mathrm{mean}_{k \in \mathrm{neg}(i)} e^{s_{ik}}`, negatives = every node that is neither
      ``i`` nor a positive of ``i`` (dense), or the sources of ``affinity_index`` that are not. The
      paper writes a *sum* over negatives; we divide by the mean (the sum over
      :math:`|\mathrm{neg}(i)|`), else the alignment term would shrink by :math:`1/(2B)` against
      uniformity. With it, :math:`\beta = 0` gives :math:`w = b`.
    * ``"positives"`` (the official code, ``GRAPH-ATTENTION/models/losses.py``):
      :math:`w_{ij} = b_{ij}\, e^{s_{ij}} / \mathrm{mean}_{(k, l) \in E} e^{s_{kl}}`, a softmax over
      all positive pairs of the batch scaled to mean one. The official code uses ``kernel="cosine"``
      on backbone features (before the projector) and :math:`\beta = 1`.
    * ``"neighbors"`` (GAT / AGNN): :math:`w_{ij} = \mathrm{softmax}_{j \in \mathrm{pos}(i)}
      (s_{ij} + \log b_{ij})`. With ``kernel="cosine"``, ``add_self_loops=True``,
      ``detach_targets=True`` and :math:`\alpha = 1` this is exactly PyG's ``AGNNConv`` with the same
      :math:`\beta`.

    All three give :math:`w = b` at :math:`\beta = 0`, so attention alignment then reduces to plain
    alignment (and :class:`~mp_contrastive.losses.AttentionSimCLRLoss` to SimCLR).

    Args:
        alpha (float): step size (default ``0.5``).
        beta (float): attention sharpness :math:`\beta \ge 0` (default ``1.0``).
        normalize (str): ``"negatives"``, ``"positives"`` or ``"neighbors"``.
        kernel (str): ``"dot"`` (:math:`q_i \cdot q_j`, the paper on :math:`H`) or ``"cosine"``.
        detach_targets (bool): stop-gradient on the neighbours (default ``False``).
        add_self_loops (bool): add self loops (weight 1 before normalisation), as ``AGNNConv``.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 1.0, normalize: str = "negatives",
                 kernel: str = "dot", detach_targets: bool = False, add_self_loops: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(alpha, detach_targets, **kwargs)
        self.beta = check_nonnegative(beta, "beta")
        self.normalize = check_choice(normalize, "normalize", NORMALIZATIONS)
        self.kernel = check_choice(kernel, "kernel", ATTENTION_KERNELS)
        self.add_self_loops = bool(add_self_loops)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                affinity_index: Adj | None = None, attention_x: OptTensor = None,
                return_attention_weights: bool | None = None
                ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """``return_attention_weights=True`` also returns ``(edge_index, weights)`` like
        ``GATConv`` (the edge index includes the added self loops, if any)."""
        attention = self.attention(x, edge_index, edge_weight, affinity_index, attention_x)
        grad, _ = self._compute(x, *attention, need_step=True, need_energy=False)
        out = x - self.alpha * grad
        return (out, attention) if return_attention_weights else out

    def step(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,  # type: ignore[override]
             affinity_index: Adj | None = None, attention_x: OptTensor = None) -> Tensor:
        return super().step(x, *self.attention(x, edge_index, edge_weight, affinity_index,
                                               attention_x))

    def energy(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,  # type: ignore[override]
               affinity_index: Adj | None = None, attention_x: OptTensor = None) -> Tensor:
        return super().energy(x, *self.attention(x, edge_index, edge_weight, affinity_index,
                                                 attention_x))

    def step_and_energy(self, x: Tensor, edge_index: Adj,  # type: ignore[override]
                        edge_weight: OptTensor = None, affinity_index: Adj | None = None,
                        attention_x: OptTensor = None) -> tuple[Tensor, Tensor]:
        return super().step_and_energy(x, *self.attention(x, edge_index, edge_weight,
                                                          affinity_index, attention_x))

    def _compute(self, x: Tensor, edge_index: Tensor, weight: Tensor, *, need_step: bool,
                 need_energy: bool) -> tuple[Tensor | None, Tensor | None]:
        src, dst = edge_index
        num_nodes = x.size(0)
        grad = energy = None
        if need_energy:
            energy = 0.5 * (weight * (x.index_select(0, dst) - x.index_select(0, src))
                            .pow(2).sum(-1)).sum()
        if need_step:
            out_degree = scatter(weight, dst, 0, num_nodes, reduce="sum")
            grad = out_degree.unsqueeze(1) * x - self.weighted_sum(edge_index, weight, x, num_nodes)
            if not self.detach_targets:
                in_degree = scatter(weight, src, 0, num_nodes, reduce="sum")
                grad = grad + in_degree.unsqueeze(1) * x - self.weighted_sum(
                    edge_index.flip(0), weight, x, num_nodes)
        return grad, energy

    @torch.no_grad()
    def attention(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                  affinity_index: Adj | None = None, attention_x: OptTensor = None, *,
                  similarity: OptTensor = None,
                  row_logsumexp: OptTensor = None) -> tuple[Tensor, Tensor]:
        """The (detached) attention graph ``(edge_index, weights)`` over the positive pairs.

        For the dense ``"negatives"`` normalisation with ``kernel="dot"`` and no ``attention_x``, a
        caller that already has ``similarity = x @ x.T`` (read, not modified) or, for ``beta = 1``,
        each node's ``row_logsumexp`` over all other nodes (the uniformity's normaliser) may pass
        it: the attention then costs no extra matmul or pass over an ``N x N`` matrix.
        """
        x = check_features(x)
        num_nodes = x.size(0)
        edge_index, base = as_edge_index(edge_index, edge_weight, num_nodes, num_nodes,
                                         "edge_index", "edge_weight", x.dtype)
        if self.add_self_loops:
            edge_index, base = add_remaining_self_loops(edge_index, base, 1.0, num_nodes)
        src, dst = edge_index
        if base is None:
            degree = scatter(torch.ones_like(dst, dtype=x.dtype), dst, 0, num_nodes, reduce="sum")
            base = 1.0 / degree.index_select(0, dst)
        query = self._attention_features(x, attention_x)
        reusable = attention_x is None and self.kernel == "dot"
        score = self._edge_scores(query, edge_index, similarity if reusable else None)
        if self.normalize == "neighbors":
            weight = softmax(score + base.log(), dst, num_nodes=num_nodes)
        elif self.normalize == "positives":
            log_mean = torch.logsumexp(score, 0) - math.log(score.numel())
            weight = base * (score - log_mean).exp()
        else:
            log_mean = self._log_mean_negatives(
                query, edge_index, score, affinity_index,
                similarity if reusable else None,
                row_logsumexp if reusable and self.beta == 1.0 else None)
            weight = base * (score - log_mean.index_select(0, dst)).exp()
        return edge_index, weight

    def _attention_features(self, x: Tensor, attention_x: OptTensor) -> Tensor:
        if attention_x is None:
            query = x
        else:
            query = check_features(attention_x, "attention_x")
            if query.size(0) != x.size(0):
                raise ValueError(f"'attention_x' must have one row per node of 'x' "
                                 f"({x.size(0)}), got {query.size(0)} rows")
            query = query.to(x.dtype)
        return F.normalize(query, dim=-1) if self.kernel == "cosine" else query

    def _edge_scores(self, query: Tensor, edge_index: Tensor, similarity: OptTensor) -> Tensor:
        """``beta q_i . q_j`` per edge, read off a dense ``similarity`` when one is given (its
        diagonal may already be masked, so self loops are recomputed)."""
        src, dst = edge_index
        if similarity is None:
            return self.beta * (query.index_select(0, dst) * query.index_select(0, src)).sum(-1)
        score = similarity[dst, src]
        self_loop = src == dst
        if bool(self_loop.any()):
            score = torch.where(self_loop, query.pow(2).sum(-1).index_select(0, dst), score)
        return self.beta * score

    def _log_mean_negatives(self, query: Tensor, edge_index: Tensor, score: Tensor,
                            affinity_index: Adj | None, similarity: OptTensor,
                            row_logsumexp: OptTensor) -> Tensor:
        r"""Per node :math:`\log \mathrm{mean}_{k \in \mathrm{neg}(i)} e^{\beta q_i \cdot q_k}`."""
        num_nodes = query.size(0)
        # Distinct positive pairs, self loops excluded: neg(i) = all nodes - {i} - pos(i).
        src, dst = edge_index
        not_self = src != dst
        key, slot = torch.unique(dst[not_self] * num_nodes + src[not_self], return_inverse=True)
        pos_dst, pos_src = key // num_nodes, key % num_nodes
        if affinity_index is None:
            total = (row_logsumexp if row_logsumexp is not None
                     else self._dense_row_logsumexp(query, similarity))
            # Duplicate edges carry the same score: any one of them stands for the pair.
            pos_score = score.new_empty(key.numel()).index_put_((slot,), score[not_self])
            # The positives' share of each row's softmax mass; the negatives hold the rest, so
            # log sum_neg = total + log(1 - share) needs no masked N x N matrix. Rows whose
            # positives hold most of the mass would lose precision to cancellation: those are
            # recomputed exactly.
            share = scatter((pos_score - total.index_select(0, pos_dst)).exp(), pos_dst, 0,
                            num_nodes, reduce="sum")
            negative = total + torch.log1p(-share.clamp(max=0.5))
            unstable = (share > 0.5).nonzero().view(-1)
            if unstable.numel() > 0:
                negative[unstable] = self._exact_negative_logsumexp(query, unstable, pos_dst,
                                                                    pos_src)
            count = num_nodes - 1 - scatter(torch.ones_like(pos_dst), pos_dst, 0, num_nodes,
                                            reduce="sum")
        else:
            negative_index, _ = as_edge_index(affinity_index, None, num_nodes, num_nodes,
                                              "affinity_index", "affinity_weight", query.dtype)
            src, dst = negative_index
            keep = (src != dst) & ~torch.isin(dst * num_nodes + src, key)
            src, dst = src[keep], dst[keep]
            score = self.beta * (query.index_select(0, dst) * query.index_select(0, src)).sum(-1)
            negative, _ = _scatter_logsumexp(score, dst, num_nodes)
            count = scatter(torch.ones_like(dst), dst, 0, num_nodes, reduce="sum")
        if bool((count.index_select(0, edge_index[1]) == 0).any()):
            raise ValueError("normalize='negatives' needs at least one negative for every node "
                             "with a positive pair (a batch of one sample has none)")
        return negative - count.clamp_min(1).to(query.dtype).log()

    def _dense_row_logsumexp(self, query: Tensor, similarity: OptTensor,
                             block: int = 1024) -> Tensor:
        """``logsumexp_{k != i} beta q_i . q_k`` row block by row block (no N x N buffer)."""
        num_nodes = query.size(0)
        out = query.new_empty(num_nodes)
        for start in range(0, num_nodes, block):
            rows = slice(start, min(start + block, num_nodes))
            scores = (query[rows] @ query.T if similarity is None
                      else similarity[rows].clone()).mul_(self.beta)
            scores.diagonal(offset=start).fill_(-math.inf)
            out[rows] = torch.logsumexp(scores, 1)
        return out

    def _exact_negative_logsumexp(self, query: Tensor, rows: Tensor, pos_dst: Tensor,
                                  pos_src: Tensor) -> Tensor:
        scores = (query[rows] @ query.T).mul_(self.beta)
        local = torch.full((query.size(0),), -1, dtype=torch.long, device=query.device)
        local[rows] = torch.arange(rows.numel(), device=query.device)
        scores[torch.arange(rows.numel(), device=query.device), rows] = -math.inf
        on_rows = local[pos_dst] >= 0
        scores[local[pos_dst[on_rows]], pos_src[on_rows]] = -math.inf
        return torch.logsumexp(scores, 1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(alpha={self.alpha}, beta={self.beta}, "
                f"normalize='{self.normalize}')")
