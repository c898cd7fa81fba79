r"""Attention weights over the positive pairs (paper eq. 14-16), as a function.

The score of an edge is :math:`s_{ij} = \beta\, q_i \cdot q_j` with :math:`q` the attention features
(unit-normalised first for ``score="cosine"``). With base weights :math:`b_{ij}` (default
:math:`1/\deg(i)`), ``normalize`` picks the normaliser: ``"negatives"`` (the paper: the mean of
:math:`e^{s}` over each anchor's negatives), ``"positives"`` (the official code: the mean over all
positive pairs of the batch) or ``"neighbors"`` (GAT / AGNN: a softmax over each anchor's
positives). All three give :math:`w = b` at :math:`\beta = 0`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.typing import Adj
from torch_geometric.utils import add_remaining_self_loops, scatter, softmax

from mp_contrastive._validation import (
    check_choice,
    check_device,
    check_features,
    check_nonnegative,
    require,
    unit_rows,
    value_checks_skipped,
)
from mp_contrastive.nn.functional._inputs import as_edge_index, check_adjacency, check_pair
from mp_contrastive.nn.functional._sparse import scatter_logsumexp
from mp_contrastive.nn.functional._tiling import DEFAULT_TILING, Tiling

__all__ = ["NORMALIZATIONS", "SCORES", "AttentionSpec", "attention_weights",
           "bipartite_attention_weights", "check_attention_inputs",
           "check_attention_x"]

#: What the attention's scores are normalised by.
NORMALIZATIONS = ("negatives", "positives", "neighbors")
#: How two attention features are scored: inner product or cosine.
SCORES = ("dot", "cosine")


@dataclass(frozen=True)
class AttentionSpec:
    """How positive pairs are reweighted by attention (see the module docstring).

    Args:
        beta (float): sharpness :math:`\\beta \\ge 0`.
        normalize (str): ``"negatives"``, ``"positives"`` or ``"neighbors"``.
        score (str): ``"dot"`` or ``"cosine"``.
        add_self_loops (bool): add self loops (base weight 1) first, as ``AGNNConv``.
    """

    beta: float = 1.0
    normalize: str = "negatives"
    score: str = "dot"
    add_self_loops: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_nonnegative(self.beta, "beta"))
        check_choice(self.normalize, "normalize", NORMALIZATIONS)
        check_choice(self.score, "score", SCORES)
        object.__setattr__(self, "add_self_loops", bool(self.add_self_loops))

    def shares_similarity(self) -> bool:
        """Whether a dense uniformity's ``x @ x.T`` (and, at beta 1, its row log-sum-exp) can
        serve this attention when it is computed on the same features."""
        return self.normalize == "negatives" and self.score == "dot"

    def weights(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                affinity_index: Tensor | None = None, attention_x: Tensor | None = None,
                similarity: Tensor | None = None, row_logsumexp: Tensor | None = None,
                tiling: Tiling = DEFAULT_TILING) -> tuple[Tensor, Tensor]:
        """:func:`attention_weights` with this specification."""
        check_attention_inputs(x, edge_index, edge_weight, affinity_index, attention_x)
        return self._weights(x, edge_index, edge_weight, affinity_index=affinity_index,
                             attention_x=attention_x, similarity=similarity,
                             row_logsumexp=row_logsumexp, tiling=tiling, sync=True)

    def _weights(self, x: Tensor, edge_index: Adj, edge_weight: Tensor | None = None, *,
                 affinity_index: Adj | None = None, attention_x: Tensor | None = None,
                 similarity: Tensor | None = None, row_logsumexp: Tensor | None = None,
                 tiling: Tiling = DEFAULT_TILING, sync: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`weights` of checked inputs (``sync``: see :func:`_attention_weights`)."""
        return _attention_weights(x, edge_index, edge_weight, beta=self.beta,
                                 normalize=self.normalize, score=self.score,
                                 add_self_loops=self.add_self_loops,
                                 affinity_index=affinity_index, attention_x=attention_x,
                                 similarity=similarity, row_logsumexp=row_logsumexp,
                                 tiling=tiling, sync=sync)


def attention_weights(x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                      beta: float | Tensor = 1.0, normalize: str = "negatives",
                      score: str = "dot", add_self_loops: bool = False,
                      affinity_index: Tensor | None = None, attention_x: Tensor | None = None,
                      similarity: Tensor | None = None, row_logsumexp: Tensor | None = None,
                      tiling: Tiling = DEFAULT_TILING) -> tuple[Tensor, Tensor]:
    """The attention graph ``(edge_index, weights)`` over the positive pairs ``edge_index``
    (including added self loops). Differentiable w.r.t. ``x``, ``attention_x`` and a tensor
    ``beta``; callers that use the weights as loss coefficients detach them.

    ``affinity_index``: the negatives of ``"negatives"`` (default: every node that is neither the
    anchor nor one of its positives). For the dense ``"negatives"`` normalisation with ``score="dot"``
    and no ``attention_x``, a caller that already has ``similarity = x @ x.T`` (read, not modified)
    may pass it: the attention then costs no extra matmul, only its own log-sum-exp pass over it
    (tile by tile); for ``beta = 1`` a caller that has each row's ``row_logsumexp`` over the other
    nodes may pass that instead, and the pass is saved too.
    """
    check_attention_inputs(x, edge_index, edge_weight, affinity_index, attention_x)
    return _attention_weights(x, edge_index, edge_weight, beta=beta, normalize=normalize,
                              score=score, add_self_loops=add_self_loops,
                              affinity_index=affinity_index, attention_x=attention_x,
                              similarity=similarity, row_logsumexp=row_logsumexp, tiling=tiling,
                              sync=True)


def check_attention_inputs(x: object, edge_index: object, edge_weight: object = None,
                           affinity_index: object = None, attention_x: object = None, *,
                           sync: bool = True) -> None:
    """The checks of :func:`attention_weights`' tensors (``sync``: see
    :func:`~mp_contrastive._validation.require`)."""
    x = check_features(x, sync=sync)
    num_nodes = x.size(0)
    check_adjacency(edge_index, edge_weight, num_nodes, num_nodes, "edge_index", "edge_weight",
                    x, nonnegative=True, sync=sync)
    if affinity_index is not None:
        check_adjacency(affinity_index, None, num_nodes, num_nodes, "affinity_index",
                        "affinity_weight", x, sync=sync)
    if attention_x is not None:
        check_attention_x(attention_x, x, sync=sync)


def check_attention_x(attention_x: object, x: Tensor, *, sync: bool = True) -> None:
    """Attention features: checked like features, one row per node of ``x``, on its device."""
    if isinstance(attention_x, Tensor):  # the device first: values are read on it
        check_device(attention_x, "attention_x", x.device, "x")
    query = check_features(attention_x, "attention_x", sync=sync)
    if query.size(0) != x.size(0):
        raise ValueError(f"'attention_x' must have one row per node of 'x' "
                         f"({x.size(0)}), got {query.size(0)} rows")


def _attention_weights(x: Tensor, edge_index: Adj, edge_weight: Tensor | None = None, *,
                       beta: float | Tensor = 1.0, normalize: str = "negatives",
                       score: str = "dot", add_self_loops: bool = False,
                       affinity_index: Adj | None = None, attention_x: Tensor | None = None,
                       similarity: Tensor | None = None, row_logsumexp: Tensor | None = None,
                       tiling: Tiling = DEFAULT_TILING,
                       sync: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`attention_weights` of checked inputs. ``sync``: how the weights' own check (an
    overflow) fails, see :func:`~mp_contrastive._validation.require` (``False`` for the layers:
    a device-side assert on an accelerator)."""
    num_nodes = x.size(0)
    edge_index, base = as_edge_index(edge_index, edge_weight, x.dtype)
    if add_self_loops:
        edge_index, base = add_remaining_self_loops(edge_index, base, 1.0, num_nodes)
    dst = edge_index[1]
    if base is None:
        degree = scatter(torch.ones_like(dst, dtype=x.dtype), dst, 0, num_nodes, reduce="sum")
        base = 1.0 / degree.index_select(0, dst)
    query = _attention_features(x, attention_x, score)
    reusable = attention_x is None and score == "dot"
    similarity = similarity if reusable else None
    scores = beta * _edge_dots(query, edge_index, similarity)
    # An edge of weight zero is no edge: it takes no part in any normaliser (nor, for
    # "negatives", does it stop its source from being a negative of its target).
    present = base > 0
    no_negative = None
    if normalize == "neighbors":
        # Absent edges get the dtype's lowest finite logit, not log 0 = -inf: a node whose every
        # edge is absent would otherwise softmax -inf - (-inf) = NaN.
        logit = torch.where(present, scores + base.masked_fill(~present, 1.0).log(),
                            torch.finfo(scores.dtype).min)
        weight = torch.where(present, softmax(logit, dst, num_nodes=num_nodes), 0.0)
    elif normalize == "positives":
        if scores.numel() == 0:  # no positive pair: no weight to normalise
            return edge_index, base
        masked = scores.masked_fill(~present, -math.inf)
        count = present.sum().to(scores.dtype).clamp_min(1)
        log_mean = torch.logsumexp(masked, 0) - count.log()
        weight = torch.where(present, base * (masked - log_mean).exp(), 0.0)
    else:
        unit_beta = isinstance(beta, (int, float)) and beta == 1.0
        log_mean, no_negative = _log_mean_negatives(
            query, edge_index, scores, present, beta, affinity_index, similarity,
            row_logsumexp if reusable and unit_beta else None, tiling)
        weight = torch.where(present, base * (scores - log_mean.index_select(0, dst)).exp(), 0.0)
    _check_attention(weight, no_negative, attention_x is not None, sync)
    return edge_index, weight


def _check_attention(weight: Tensor, no_negative: Tensor | None, own_features: bool,
                     sync: bool) -> None:
    """A node with positives but no negatives (``"negatives"``), or weights that overflowed
    (``exp`` of a score far above the normaliser: ``beta`` times the features' inner products
    too large for the dtype), fail here with the arguments named. The ``"negatives"`` path reads
    both in the one synchronisation it always had; the others, whose softmax-style normalisers
    cannot overflow from finite scores, check by :func:`~mp_contrastive._validation.require`
    (``sync=False`` from a layer: a device-side assert on an accelerator, no host sync; a
    ``ValueError`` on the CPU), and not while ``torch.compile`` traces."""
    if weight.device.type == "meta":
        return
    features = "'attention_x'" if own_features else "'x'"
    overflow = (f"the attention weights overflow (exp of 'beta' times the inner products "
                f"of {features} exceeds the dtype's range): use a smaller 'beta', "
                f"score='cosine', or features of smaller norm")
    if no_negative is None:
        if not value_checks_skipped() and weight.numel() > 0:
            require(torch.isfinite(weight.detach()).all(), overflow, sync=sync)
        return
    flags = torch.stack([no_negative, ~torch.isfinite(weight.detach()).all()]).tolist()
    if flags[0]:
        raise ValueError("normalize='negatives' needs at least one negative for every node "
                         "with a positive pair (a batch of one sample has none)")
    if flags[1]:
        raise ValueError(overflow)


def bipartite_attention_weights(x_src: Tensor, x_dst: Tensor, edge_index: Tensor,
                                edge_weight: Tensor | None = None, *, beta: float | Tensor = 1.0,
                                score: str = "dot") -> Tensor:
    r"""GAT / AGNN attention (``normalize="neighbors"``) from sources ``x_src`` to targets
    ``x_dst``: :math:`w_{ji} = \mathrm{softmax}_{j \to i}(\beta\, q_i \cdot q_j + \log b_{ji})`
    over each target's incoming edges, with base weights :math:`b` (default :math:`1/\deg(i)`).
    The other normalisations compare a node with the rest of its own node set, which a bipartite
    pair does not give. Differentiable w.r.t. the features and a tensor ``beta``."""
    x_src, x_dst, _ = check_pair((x_src, x_dst))
    check_adjacency(edge_index, edge_weight, x_src.size(0), x_dst.size(0), "edge_index",
                    "edge_weight", x_dst, nonnegative=True)
    edge_index, edge_weight = as_edge_index(edge_index, edge_weight, x_dst.dtype)
    return _bipartite_attention_weights(x_src, x_dst, edge_index, edge_weight, beta=beta,
                                        score=score)


def _bipartite_attention_weights(x_src: Tensor, x_dst: Tensor, edge_index: Tensor,
                                 edge_weight: Tensor | None = None, *,
                                 beta: float | Tensor = 1.0, score: str = "dot") -> Tensor:
    """:func:`bipartite_attention_weights` of checked inputs."""
    src, dst = edge_index
    num_dst = x_dst.size(0)
    if edge_weight is None:
        degree = scatter(torch.ones_like(dst, dtype=x_dst.dtype), dst, 0, num_dst, reduce="sum")
        edge_weight = 1.0 / degree.index_select(0, dst)
    q_src, q_dst = (unit_rows(x_src), unit_rows(x_dst)) if score == "cosine" else (x_src, x_dst)
    scores = beta * (q_dst.index_select(0, dst) * q_src.index_select(0, src)).sum(-1)
    return softmax(scores + edge_weight.log(), dst, num_nodes=num_dst)


def _attention_features(x: Tensor, attention_x: Tensor | None, score: str) -> Tensor:
    query = x if attention_x is None else attention_x.to(x.dtype)
    # unit_rows, not F.normalize: cosines are scale-free, also for rows of norm 1e-13 or 1e200.
    return unit_rows(query) if score == "cosine" else query


def _edge_dots(query: Tensor, edge_index: Tensor, similarity: Tensor | None) -> Tensor:
    """``q_i . q_j`` per edge, read off a dense ``similarity`` when one is given (its diagonal may
    already be masked, so self loops are recomputed)."""
    src, dst = edge_index
    if similarity is None:
        return (query.index_select(0, dst) * query.index_select(0, src)).sum(-1)
    dots = similarity[dst, src]
    self_loop = src == dst
    if bool(self_loop.any()):
        dots = torch.where(self_loop, query.pow(2).sum(-1).index_select(0, dst), dots)
    return dots


def _log_mean_negatives(query: Tensor, edge_index: Tensor, scores: Tensor, present: Tensor,
                        beta: float | Tensor, affinity_index: Tensor | None,
                        similarity: Tensor | None, row_logsumexp: Tensor | None,
                        tiling: Tiling) -> tuple[Tensor, Tensor]:
    r"""Per node :math:`\log \mathrm{mean}_{k \in \mathrm{neg}(i)} e^{\beta q_i \cdot q_k}`, and
    whether a node with a positive pair has no negative (a 0-dim bool tensor, not yet read)."""
    num_nodes = query.size(0)
    # Distinct positive pairs (edges of weight > 0), self loops excluded:
    # neg(i) = all nodes - {i} - pos(i).
    src, dst = edge_index
    not_self = (src != dst) & present
    key, slot = torch.unique(dst[not_self] * num_nodes + src[not_self], return_inverse=True)
    pos_dst, pos_src = key // num_nodes, key % num_nodes
    if affinity_index is None:
        total = (row_logsumexp if row_logsumexp is not None
                 else _dense_row_logsumexp(query, beta, similarity, tiling))
        # Duplicate edges carry the same score: any one of them stands for the pair.
        pos_score = scores.new_zeros(key.numel()).index_put((slot,), scores[not_self])
        # The positives' share of each row's softmax mass; the negatives hold the rest, so
        # log sum_neg = total + log(1 - share) needs no masked N x N matrix. Rows whose positives
        # hold most of the mass would lose precision to cancellation: those are recomputed exactly.
        share = scatter((pos_score - total.index_select(0, pos_dst)).exp(), pos_dst, 0,
                        num_nodes, reduce="sum")
        negative = total + torch.log1p(-share.clamp(max=0.5))
        unstable = (share > 0.5).nonzero().view(-1)
        if unstable.numel() > 0:
            negative = negative.index_put(
                (unstable,), _exact_negative_logsumexp(query, beta, unstable, pos_dst, pos_src))
        count = num_nodes - 1 - scatter(torch.ones_like(pos_dst), pos_dst, 0, num_nodes,
                                        reduce="sum")
    else:
        negative_index, _ = as_edge_index(affinity_index, None, query.dtype)
        src, dst = negative_index
        keep = (src != dst) & ~torch.isin(dst * num_nodes + src, key)
        negative_index = negative_index[:, keep]
        dst = negative_index[1]
        negative_scores = beta * _edge_dots(query, negative_index, None)
        negative, _ = scatter_logsumexp(negative_scores, dst, num_nodes)
        count = scatter(torch.ones_like(dst), dst, 0, num_nodes, reduce="sum")
    no_negative = ((count.index_select(0, edge_index[1]) == 0) & present).any()
    return negative - count.clamp_min(1).to(query.dtype).log(), no_negative


def _dense_row_logsumexp(query: Tensor, beta: float | Tensor, similarity: Tensor | None,
                         tiling: Tiling) -> Tensor:
    """``logsumexp_{k != i} beta q_i . q_k``, one tile of rows at a time (no N x N buffer)."""
    num_nodes = query.size(0)
    rows, _ = tiling.shape(num_nodes, num_nodes)
    parts = []
    for start, stop in tiling.spans(num_nodes, rows):
        dots = query[start:stop] @ query.T if similarity is None else similarity[start:stop]
        scores = beta * dots  # a new tensor: the diagonal can be masked in place
        scores.diagonal(offset=start).fill_(-math.inf)
        parts.append(torch.logsumexp(scores, 1))
    return torch.cat(parts)


def _exact_negative_logsumexp(query: Tensor, beta: float | Tensor, rows: Tensor, pos_dst: Tensor,
                              pos_src: Tensor) -> Tensor:
    scores = beta * (query[rows] @ query.T)
    local = torch.full((query.size(0),), -1, dtype=torch.long, device=query.device)
    local[rows] = torch.arange(rows.numel(), device=query.device)
    scores[torch.arange(rows.numel(), device=query.device), rows] = -math.inf
    on_rows = local[pos_dst] >= 0
    scores[local[pos_dst[on_rows]], pos_src[on_rows]] = -math.inf
    return torch.logsumexp(scores, 1)
