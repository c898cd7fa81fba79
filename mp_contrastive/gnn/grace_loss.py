r"""GRACE's loss (Zhu et al., 2020) from the operators, and the paper's multi-stage term.

Two views of one graph go through one encoder :math:`f` and a projector :math:`g`; with
:math:`u = g(f(\tilde{X}_1, \tilde{A}_1))`, :math:`v = g(f(\tilde{X}_2, \tilde{A}_2))` and
:math:`\theta(a, b) = \cos(a, b) / \tau`, GRACE's loss for node :math:`i` of view 1 is

.. math::
    \ell(u_i, v_i) = -\log \frac{e^{\theta(u_i, v_i)}}{e^{\theta(u_i, v_i)}
    + \sum_{k \ne i} e^{\theta(u_i, v_k)} + \sum_{k \ne i} e^{\theta(u_i, u_k)}},

inter-view *and* intra-view negatives, averaged over both views' :math:`2N` anchors. That is
SimCLR's NT-Xent on the batch of :math:`2N` views whose augmentation graph pairs node :math:`i` of
one view with node :math:`i` of the other, so it is the energy of
:class:`~mp_contrastive.nn.ContrastiveConv` on that graph with the dense affinity graph
(:class:`~mp_contrastive.losses.SimCLRLoss`), and its gradient is the operator's step.

On graphs of PubMed's size the dense affinity graph has :math:`(2N)^2 \approx 1.6 \cdot 10^9`
entries. There the negatives come from :func:`~mp_contrastive.knn.sampled_affinity_graph`: each
anchor's top-:math:`k` by inner product plus importance-weighted uniform draws from the rest
(an unbiased estimate of the partition function), with the positive pair added with weight one, as
it is in GRACE's denominator. The loss is then the same ``SimCLRLoss`` on that sparse affinity
graph, and no :math:`N \times N` matrix is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_contrastive._validation import (
    check_affinity_edges,
    check_choice,
    check_device,
    check_features,
    check_positive,
    check_positive_int,
)
from mp_contrastive.graph import augmentation_graph, sphere_projection
from mp_contrastive.knn import sampled_affinity_graph
from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss, descent_loss
from mp_contrastive.memory import MultiStageMemory
from mp_contrastive.nn import AlignmentConv
from mp_contrastive.nn.functional import NORMALIZATIONS

__all__ = ["NEGATIVES", "AUTO_DENSE_MAX_VIEWS", "AffinitySchedule", "GraphContrastiveLoss",
           "MultiStageAlignment"]

NEGATIVES = ("auto", "dense", "knn")
#: ``negatives="auto"`` uses the dense affinity graph up to this many views (2 x nodes): Cora and
#: CiteSeer (5,416 and 6,654) are dense, PubMed (39,434) takes the kNN path. The dense cost grows
#: as the square of it, the kNN path's search too but with a smaller constant (faiss, IVF).
AUTO_DENSE_MAX_VIEWS = 16384


class GraphContrastiveLoss(nn.Module):
    r"""GRACE's loss (inter- and intra-view negatives), from the operators; see the module docs.

    ``loss(u, v)`` with the two views' projections ``[N, d]`` returns the mean over the :math:`2N`
    anchors. ``attention_features`` (attention only) are per-view features the attention is
    computed on (a pair, e.g. the encoder outputs), default the projections.

    The loss is a pure function of its inputs and configuration: it keeps no state between calls.
    The path (:meth:`path_for`) follows from ``negatives`` and :math:`N`. On the kNN path,
    ``affinity`` is the sparse affinity graph ``(edge_index, edge_weight)`` over the :math:`2N`
    views (:meth:`affinity_graph`). **A training loop on the kNN path passes it**, from an
    :class:`AffinitySchedule` (fresh tail draws at every search, edges reused for ``every``
    steps): without it the loss builds one with a generator seeded by ``seed``, so every call
    with the same number of nodes draws the *same* sampled negatives (right for a one-off
    evaluation, a fixed subset of negatives if used for training).

    Args:
        tau (float): temperature :math:`\tau`.
        attention (str, optional): attention alignment's normalisation, ``"positives"`` (official
            code), ``"negatives"`` (paper) or ``"neighbors"``; ``None`` for plain GRACE.
        beta (float): attention sharpness.
        negatives (str): ``"dense"``, ``"knn"`` or ``"auto"`` (kNN for more than
            :data:`AUTO_DENSE_MAX_VIEWS` views, i.e. :math:`2N`; below it the dense graph, processed
            in tiles once it is large, costs less than the kNN search).
        knn_k (int): top-:math:`k` head per anchor. knn_samples (int): uniform tail draws per anchor.
        knn_index (str): ``"ivf"`` (default: faiss IVF, an approximate head, several times faster
            on the CPU; the tail keeps the estimate unbiased) or ``"flat"`` (exact head).
        seed (int): seed of the tail draws when the loss builds the affinity graph itself.
    """

    def __init__(self, tau: float, attention: str | None = None, beta: float = 1.0,
                 negatives: str = "auto", knn_k: int = 64, knn_samples: int = 256,
                 knn_index: str = "ivf", seed: int = 0) -> None:
        super().__init__()
        self.tau = check_positive(tau, "tau")
        self.negatives = check_choice(negatives, "negatives", NEGATIVES)
        if attention is not None:
            check_choice(attention, "attention", NORMALIZATIONS)
        self.attention = attention
        for name, value in (("knn_k", knn_k), ("knn_samples", knn_samples)):
            check_positive_int(value, name)
        self.knn_k, self.knn_samples = knn_k, knn_samples
        self.knn_index = check_choice(knn_index, "knn_index", ("ivf", "flat"))
        score = "dot" if attention == "negatives" else "cosine"
        #: the NT-Xent of both paths: dense, or on the sparse affinity graph of the kNN path.
        self.loss = (SimCLRLoss(tau) if attention is None else
                     AttentionSimCLRLoss(tau, beta=beta, normalize=attention, score=score))
        self.seed = seed

    def uses_knn(self, num_nodes: int) -> bool:
        """Whether ``num_nodes`` nodes per view take the kNN path."""
        if self.negatives == "auto":
            return 2 * num_nodes > AUTO_DENSE_MAX_VIEWS
        return self.negatives == "knn"

    def path_for(self, num_nodes: int) -> str:
        """The path a call with ``num_nodes`` nodes per view takes: ``"dense"`` or ``"knn"``."""
        return "knn" if self.uses_knn(num_nodes) else "dense"

    def forward(self, u: Tensor, v: Tensor,
                attention_features: tuple[Tensor, Tensor] | None = None,
                affinity: tuple[Tensor, Tensor] | None = None) -> Tensor:
        # The boundary: u, v (and the attention features) are checked here, once; the NT-Xent
        # below and its operator run on them, and on the graphs built here, unchecked.
        u, v = _check_views(u, v)
        attention_x = None
        if attention_features is not None:
            if self.attention is None:
                raise ValueError("'attention_features' needs an attention variant")
            attention_x = AttentionSimCLRLoss._attention_features(attention_features)
        knn = self.uses_knn(u.size(0))
        if affinity is not None:
            if not knn:
                raise ValueError(f"'affinity' is for the kNN path; with negatives="
                                 f"'{self.negatives}' and {u.size(0)} nodes the loss is dense")
            affinity = _check_affinity(affinity, 2 * u.size(0), u.device)
        z, edge_index, edge_weight = self.loss._views(u, v)
        AttentionSimCLRLoss._attention_rows(attention_x, z)
        if not knn:
            return self.loss._loss(z, edge_index, edge_weight, attention_x)
        if affinity is None:
            affinity = self._affinity_graph(u, v, None)
        return self.loss._loss(z, edge_index, edge_weight, attention_x, *affinity)

    def affinity_graph(self, u: Tensor, v: Tensor, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
        """The kNN path's affinity graph for views ``u``, ``v``: ``(edge_index, edge_weight)`` over
        the :math:`2N` views, each anchor's top-``knn_k`` head, ``knn_samples`` importance-weighted
        tail draws (from ``generator``, on the views' device; default a fresh one seeded by
        ``seed``) and its positive with weight one. No gradient flows through it: the loss
        recomputes the weights' softmax from the current features."""
        u, v = _check_views(u, v)
        return self._affinity_graph(u, v, generator)

    def _affinity_graph(self, u: Tensor, v: Tensor, generator: torch.Generator | None
                        ) -> tuple[Tensor, Tensor]:
        n = u.size(0)
        if generator is None:
            generator = torch.Generator(u.device).manual_seed(self.seed)
        with torch.no_grad():
            h = sphere_projection(torch.cat([u, v]), self.tau)
            graph = augmentation_graph(n, 2, device=h.device, dtype=h.dtype)
            edges, weights = sampled_affinity_graph(
                h, min(self.knn_k, 2 * n - 2), self.knn_samples, proposal="uniform",
                exclude=graph.edge_index, index=self.knn_index, generator=generator)
        # The positive is part of every anchor's partition function (GRACE's denominator).
        return (torch.cat([edges, graph.edge_index], 1),
                torch.cat([weights, torch.ones_like(graph.edge_weight)]))

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, attention={self.attention!r}, negatives='{self.negatives}', "
                f"knn_k={self.knn_k}, knn_samples={self.knn_samples}")


class AffinitySchedule:
    """A training loop's kNN affinity edges: ``schedule(u, v)`` at each step returns the
    ``affinity`` to pass to ``loss(u, v, affinity=...)``, ``None`` where the loss is dense.

    The edges are searched at the first step and then every ``every`` steps (their weights and
    softmax always use the current features; a stale head keeps the estimate unbiased), and at
    any step whose number of nodes differs from that of the stored edges; the tail draws come
    from one generator seeded by ``seed``, advanced by every search. The schedule is the loop's
    state; the loss keeps none.

    Args:
        loss (GraphContrastiveLoss): the loss the edges are for (its path and kNN settings).
        every (int): steps between searches. seed (int): seed of the tail draws.
    """

    def __init__(self, loss: GraphContrastiveLoss, every: int = 1, seed: int = 0) -> None:
        self.loss = loss
        self.every = check_positive_int(every, "every")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.affinity: tuple[Tensor, Tensor] | None = None
        self._views = 0  # the number of views the stored edges were built for

    def __call__(self, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor] | None:
        if not self.loss.uses_knn(u.size(0)):
            return None
        stale = self._views != 2 * u.size(0)  # another graph: never reuse its edges
        if stale or self.affinity is None or self.steps % self.every == 0:
            if self.generator.device != u.device:  # torch draws need a generator there
                self.generator = torch.Generator(u.device).manual_seed(self.seed)
            self.affinity = self.loss.affinity_graph(u, v, self.generator)
            self._views = 2 * u.size(0)
        self.steps += 1
        return self.affinity


class MultiStageAlignment(nn.Module):
    r"""Multi-stage alignment (paper eq. 13) for full-graph training, where one epoch is one step:

    .. math::
        L_{ms} = -\frac{\lambda}{2N} \sum_{v=1}^{2} \sum_i h^{(v)}_i \cdot
        \mathrm{sg}\Big(\tfrac{1}{|S_i|} \sum_{s \in S_i} m^{(t-s)}_i\Big),

    :math:`h = \mathrm{normalize}(g(f(\cdot))) / \sqrt{\tau}`, :math:`m^{(t)}_i` the mean of node
    :math:`i`'s two views at epoch :math:`t`, :math:`S_i` the stored epochs among the last
    ``num_stages`` (none at the first epoch: no term), kept in a
    :class:`~mp_contrastive.memory.MultiStageMemory`. The gradient is the step of an
    :class:`~mp_contrastive.nn.AlignmentConv` (:math:`\alpha = 1`, stop-gradient targets, weights
    :math:`\lambda`) on the bipartite graph from each memory row to its node's two views; on the
    sphere it equals the gradient of :math:`L_{ms}` (the two differ by a radial term that the
    normalisation's Jacobian removes).

    Args:
        num_nodes (int): graph nodes. dim (int): projection size.
        tau (float): temperature. num_stages (int): epochs kept (:math:`k`).
        weight (float): :math:`\lambda`.
    """

    def __init__(self, num_nodes: int, dim: int, tau: float, num_stages: int = 1,
                 weight: float = 0.5) -> None:
        super().__init__()
        self.tau = check_positive(tau, "tau")
        self.weight = check_positive(weight, "weight")
        self.memory = MultiStageMemory(num_nodes, dim, num_stages=num_stages, aggr="mean")
        self.conv = AlignmentConv(alpha=1.0, detach_targets=True, normalize=False)

    def forward(self, u: Tensor, v: Tensor, epoch: int, index: Tensor | None = None) -> Tensor:
        """The term at ``epoch`` for projections ``u``, ``v`` of nodes ``index`` (default: every
        node, in order; a mini-batch passes its node ids); then stores this epoch's stage of those
        nodes (under DDP the memory receives every rank's nodes)."""
        u, v = _check_views(u, v)  # the step below runs unchecked on them
        n = u.size(0)
        h = sphere_projection(torch.cat([u, v]), self.tau)
        rows = torch.arange(n, device=h.device) if index is None else index
        target, count = self.memory.read(rows, epoch)
        self.memory.write(rows, 0.5 * (h[:n] + h[n:]).detach(), epoch)
        nodes = torch.arange(n, device=h.device)[count > 0]
        if nodes.numel() == 0:
            return h.sum() * 0.0
        src = (2 * n + nodes).repeat(2)
        edge_index = torch.stack([src, torch.cat([nodes, nodes + n])])
        edge_weight = torch.full((edge_index.size(1),), self.weight, dtype=h.dtype, device=h.device)
        target = target.to(h.dtype)
        x = torch.cat([h, target])
        with torch.no_grad():  # u, v and the graph are checked or built here
            step = self.conv._step(x, edge_index, edge_weight)[: 2 * n]
        value = -(self.weight * (h[nodes] * target[nodes]).sum()
                  + self.weight * (h[nodes + n] * target[nodes]).sum())

        def step_fn(h: Tensor) -> Tensor:  # the targets are memory rows: constants, as in L_ms
            return self.conv._step(torch.cat([h, target]), edge_index, edge_weight)[: 2 * n]

        return descent_loss(h, step, self.conv.alpha, value, step_fn) / (2 * n)


def _check_views(u: object, v: object) -> tuple[Tensor, Tensor]:
    """Two views' projections: features of one shape, on one device."""
    u = check_features(u, "u")
    if isinstance(v, Tensor):  # the device first: values are read on it
        check_device(v, "v", u.device, "u")
    v = check_features(v, "v")
    if u.shape != v.shape:
        raise ValueError(f"'v' must have the shape of 'u' {tuple(u.shape)}, got {tuple(v.shape)}")
    return u, v


def _check_affinity(affinity: object, num_views: int, device: torch.device
                    ) -> tuple[Tensor, Tensor]:
    """A kNN affinity graph over ``num_views`` views: ``(edge_index, edge_weight)``."""
    if not isinstance(affinity, tuple | list) or len(affinity) != 2:
        raise TypeError("'affinity' must be a pair (edge_index, edge_weight), got "
                        f"{type(affinity).__name__}")
    if affinity[1] is None:
        raise TypeError("'affinity[1]' must be the edges' weights (a tensor [num_edges]), got None")
    return check_affinity_edges(affinity[0], affinity[1], num_views, ("affinity[0]", "affinity[1]"),
                                device=device, ref="u")
