r"""Oversmoothing as the paper's section 3.1 reads it: alignment alone collapses the features,
uniformity keeps them apart.

Node features are propagated for many steps, with no learning in between (as in SGC), and a linear
probe measures what is left at each depth. Every scheme starts from :math:`H_0 = N(X)` and
takes the same alignment step on the input graph with self loops,
:math:`\bar{A} = \tilde{D}^{-1/2} (A + I) \tilde{D}^{-1/2}`:

* ``"alignment"``: :math:`H_{t+1} = N\big(H_t + \alpha \bar{A} H_t\big)`, one
  :class:`~mp_contrastive.nn.AlignmentConv` step (stop-gradient targets, step size
  :math:`\alpha / (1 + \alpha)`, the same direction up to scale); on a connected graph every row
  converges to one vector per component (complete collapse);
* ``"contrastive"``: :math:`H_{t+1} = N\big(H_t + \alpha (\bar{A} - \hat{A}_t) H_t\big)`, one
  :class:`~mp_contrastive.nn.ContrastiveConv` step (stop-gradient targets), the uniformity on the
  affinity graph :math:`\hat{A}_t` of the *current* features: each node's ``k`` nearest nodes by
  inner product (:func:`~mp_contrastive.knn.affinity_graph`), or with ``num_samples`` that head
  plus importance-weighted uniform draws (:func:`~mp_contrastive.knn.sampled_affinity_graph`),
  or with ``affinity="dense"`` every other node (exact, :math:`O(N^2)` per step: small graphs),
  softmax-weighted by :math:`e^{H_i \cdot H_k}`;
* ``"pairnorm"`` (the anchor): :math:`H_{t+1} = \mathrm{PairNorm}\big(H_t + \alpha \bar{A} H_t\big)`,
  PyG's :class:`~torch_geometric.nn.norm.PairNorm` (centre, rescale) in place of :math:`N`,

with :math:`N(H) = \mathrm{normalize}(H) / \sqrt{\tau}` the paper's feature space (NodeNorm and
temperature), which sets the softmax's sharpness and does not by itself prevent the collapse.

:func:`depth_study` reads depth this way, with no learning between the steps.
:func:`trained_depth_study` reads it as the deep-GCN experiments of PairNorm and ContraNorm do: a
:class:`_DeepPropagationClassifier` of that many layers, each a learned linear map followed by the
same :class:`_PropagationStep`, trained end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import PairNorm
from torch_geometric.utils import add_remaining_self_loops

from mp_contrastive._validation import (
    check_choice,
    check_edge_index,
    check_features,
    check_positive,
    check_positive_int,
    check_rate,
)
from mp_contrastive.gnn.training import fit_node_classifier, linear_probe, seed_everything
from mp_contrastive.graph import sphere_projection
from mp_contrastive.knn import AFFINITIES, affinity_graph, sampled_affinity_graph
from mp_contrastive.nn import AlignmentConv, ContrastiveConv

__all__ = ["SCHEMES", "depth_study", "trained_depth_study"]

SCHEMES = ("alignment", "contrastive", "pairnorm")


@torch.no_grad()
def _propagate(x: Tensor, edge_index: Tensor, scheme: str, depths: Sequence[int], *,
               alpha: float = 4.0, tau: float = 2.0, k: int = 8, num_samples: int = 64,
               affinity: str = "knn", seed: int = 0) -> dict[int, Tensor]:
    r"""Propagate ``x`` by ``scheme`` (see the module docs) up to ``max(depths)`` steps and return
    the features after each number of steps in ``depths``.

    Args:
        x (Tensor): node features ``[N, F]``. edge_index (Tensor): the graph ``[2, E]``.
        scheme (str): ``"alignment"``, ``"contrastive"`` or ``"pairnorm"``.
        depths (sequence of int): numbers of steps to report (each >= 0).
        alpha (float): step size :math:`\alpha` (default 4: the alignment step is
            :math:`0.2 H + 0.8 \bar{A} H` up to scale). tau (float): temperature :math:`\tau` of
            :math:`N` (default 2: a flat softmax, so that the uniformity acts on the whole graph,
            not only on each node's nearest, which are mostly its own class).
        k (int): affinity neighbours per node (``"contrastive"``, default 8).
        num_samples (int): uniform tail draws per node on top of the ``k`` nearest (default 64;
            0 = the ``k`` nearest only, which repels each node from its own class: on Cora 24%
            accuracy after 64 steps with ``k=16, tau=0.5, alpha=1``).
        affinity (str): ``"knn"`` (the ``k`` nearest and ``num_samples`` tail draws) or
            ``"dense"`` (every other node; ``k`` and ``num_samples`` are then unused).
        seed (int): seed of the tail draws.
    """
    x = check_features(x, "x")
    edge_index = check_edge_index(edge_index, x.size(0), x.size(0), "edge_index")
    if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
        raise ValueError(f"'depths' must be a non-empty sequence of ints >= 0, got {depths!r}")
    _check_affinity(k, num_samples, affinity, x.size(0))
    step = _PropagationStep(scheme, alpha=alpha, tau=tau)
    loops, _ = add_remaining_self_loops(edge_index, num_nodes=x.size(0))
    generator = torch.Generator().manual_seed(seed)
    h = step.normalize(x)
    out = {0: h} if 0 in depths else {}
    for index in range(1, max(depths) + 1):
        affinity_index, weight = (_affinity_edges(h, k, num_samples, affinity, generator)
                                  if scheme == "contrastive" else (None, None))
        h = step._forward(h, edge_index, loops, affinity_index, weight)
        if index in depths:
            out[index] = h
    return out


def _check_affinity(k: int, num_samples: int, affinity: str, num_nodes: int) -> None:
    check_choice(affinity, "affinity", AFFINITIES)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < num_nodes:
        raise ValueError(f"'k' must be an int in [1, {num_nodes}), got {k!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"'num_samples' must be an int >= 0, got {num_samples!r}")


def _affinity_edges(h: Tensor, k: int, num_samples: int, affinity: str,
                    generator: torch.Generator | None = None) -> tuple[Tensor | None, Tensor | None]:
    """The uniformity's affinity graph of the features ``h`` as ``(edge_index, edge_weight)``: each
    node's ``k`` nearest by inner product plus ``num_samples`` importance-weighted uniform draws
    (:func:`~mp_contrastive.knn.sampled_affinity_graph`; the ``k`` nearest only when
    ``num_samples=0``), or ``(None, None)`` for ``affinity="dense"`` (every other node)."""
    if affinity == "dense":
        return None, None
    h = h.detach()
    if num_samples:
        return sampled_affinity_graph(h, k, num_samples, proposal="uniform", generator=generator)
    return affinity_graph(h, k)[0], None


class _PropagationStep(nn.Module):
    r"""One step of a depth-study scheme (see the module docs): the alignment step on the input
    graph, the uniformity on an affinity graph for ``"contrastive"``, then the scheme's
    normalisation (:math:`N` or PyG's ``PairNorm``). Shared by :func:`_propagate` (no learning
    between steps) and :class:`_DeepPropagationClassifier` (a learned linear map before each)."""

    def __init__(self, scheme: str, alpha: float = 4.0, tau: float = 2.0) -> None:
        super().__init__()
        self.scheme = check_choice(scheme, "scheme", SCHEMES)
        self.alpha, self.tau = check_positive(alpha, "alpha"), check_positive(tau, "tau")
        self.align = AlignmentConv(alpha / (1 + alpha), detach_targets=True, add_self_loops=True)
        self.contrast = ContrastiveConv(alpha, detach_targets=True)
        self.pairnorm = PairNorm()

    def normalize(self, h: Tensor) -> Tensor:
        """The scheme's normalisation: :math:`N(H)` or ``PairNorm``."""
        if self.scheme == "pairnorm":
            return self.pairnorm(h)
        return sphere_projection(h, self.tau)

    def forward(self, h: Tensor, edge_index: Tensor, loops: Tensor,
                affinity_index: Tensor | None = None, affinity_weight: Tensor | None = None
                ) -> Tensor:
        """``loops``: ``edge_index`` with self loops (the contrastive step's alignment graph);
        ``affinity_*``: from :func:`_affinity_edges` (``"contrastive"`` only)."""
        if self.scheme == "contrastive":
            self.contrast._check(h, loops, None, affinity_index, affinity_weight)
        else:
            self.align._check(h, edge_index)
        return self._forward(h, edge_index, loops, affinity_index, affinity_weight)

    def _forward(self, h: Tensor, edge_index: Tensor, loops: Tensor,
                 affinity_index: Tensor | None = None, affinity_weight: Tensor | None = None
                 ) -> Tensor:
        """``forward`` of checked inputs (:func:`_propagate` and
        :class:`_DeepPropagationClassifier` check theirs once, then step many times)."""
        if self.scheme == "contrastive":
            h = self.contrast._forward(h, loops, None, affinity_index, affinity_weight)
        else:
            h = self.align._forward(h, edge_index)
        return self.normalize(h)

    def extra_repr(self) -> str:
        return f"scheme='{self.scheme}', alpha={self.alpha}, tau={self.tau}"


def depth_study(data: Data, depths: Sequence[int] = (2, 4, 8, 16, 32, 64),
                schemes: Sequence[str] = SCHEMES, seed: int = 0, probe_weight_decay: float = 5e-4,
                **kwargs: Any) -> list[dict[str, Any]]:
    """Linear-probe accuracy (:func:`~mp_contrastive.gnn.linear_probe`, public split) of the
    features after each depth of each scheme; ``kwargs`` (``alpha``, ``tau``, ``k``,
    ``num_samples``, ``affinity``) set the propagation, as in the module docs. One row per
    (scheme, depth) with ``test_acc``, ``val_acc`` and the features' mean pairwise cosine
    ``mean_cosine`` (1 = complete collapse).

    The probe is SGC's: logistic regression with a *fixed* weight decay (default ``5e-4``, GCN's),
    the same for every scheme and depth. An unregularised probe would read class information off
    residuals a thousand times smaller than the features (nearly collapsed rows that still differ
    in the fourth decimal), which no trained GNN layer after the propagation could rely on."""
    rows = []
    for scheme in schemes:
        features = _propagate(data.x, data.edge_index, scheme, depths, seed=seed, **kwargs)
        for depth in depths:
            h = F.normalize(features[depth], dim=1)
            mean = h.mean(0)
            # mean over pairs i != j of cos(h_i, h_j), from the squared norm of the mean row
            n = h.size(0)
            mean_cosine = float((n * n * mean.pow(2).sum() - n) / (n * (n - 1)))
            probe = linear_probe(features[depth], data, seed=seed,
                                 weight_decays=(probe_weight_decay,))
            rows.append({"scheme": scheme, "depth": depth, "test_acc": probe["test_acc"],
                         "val_acc": probe["val_acc"], "mean_cosine": mean_cosine})
    return rows


class _DeepPropagationClassifier(nn.Module):
    r"""The depth study with learning between the steps (the deep-GCN experiments of PairNorm and
    ContraNorm): ``depth`` layers :math:`H_l = \mathrm{ReLU}\big(\mathrm{step}(H_{l-1} W_l)\big)`,
    each with one scheme's :class:`_PropagationStep`, then a linear classifier; dropout on the input
    and before the classifier. Alignment alone makes deep stacks collapse (and untrainable);
    the uniformity keeps the layers' features apart.

    For ``"contrastive"`` each layer searches the affinity graph of its current features (see
    :func:`_affinity_edges`) on the first forward pass and then on every ``refresh_every``-th
    training pass, since the search costs more than the rest of the layer. In between, the
    neighbours are kept and their softmax weights :math:`e^{H_i \cdot H_k}` follow the current
    features (the ``knn_refresh`` of :class:`~mp_contrastive.gnn.GRACEConfig`).

    Args:
        in_channels (int), hidden_channels (int), out_channels (int): widths.
        depth (int): propagation layers. scheme (str): one of :data:`SCHEMES`.
        alpha, tau, k, num_samples, affinity: as in :func:`_propagate`.
        dropout (float): dropout rate (default ``0.5``).
        refresh_every (int): training passes between affinity searches (default ``10``).
        seed (int): seed of the affinity graph's tail draws.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, depth: int,
                 scheme: str, *, alpha: float = 4.0, tau: float = 2.0, k: int = 8,
                 num_samples: int = 64, affinity: str = "knn", dropout: float = 0.5,
                 refresh_every: int = 10, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("out_channels", out_channels)):
            check_positive_int(value, name)
        check_positive_int(depth, "depth")
        check_positive_int(refresh_every, "refresh_every")
        check_rate(dropout, "dropout")
        check_choice(affinity, "affinity", AFFINITIES)
        self.step = _PropagationStep(scheme, alpha=alpha, tau=tau)
        self.lins = nn.ModuleList(nn.Linear(in_channels if i == 0 else hidden_channels,
                                            hidden_channels) for i in range(depth))
        self.classifier = nn.Linear(hidden_channels, out_channels)
        self.k, self.num_samples, self.affinity = k, num_samples, affinity
        self.dropout, self.refresh_every, self.seed = dropout, refresh_every, seed
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.lins:
            lin.reset_parameters()
        self.classifier.reset_parameters()
        self._generator = torch.Generator().manual_seed(self.seed)
        self._graphs: list[tuple[Tensor | None, Tensor | None]] = []
        self._passes = 0

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = check_features(x, "x")
        edge_index = check_edge_index(edge_index, x.size(0), x.size(0), "edge_index")
        contrastive = self.step.scheme == "contrastive"
        if contrastive:
            _check_affinity(self.k, self.num_samples, self.affinity, x.size(0))
        loops, _ = add_remaining_self_loops(edge_index, num_nodes=x.size(0))
        stale = bool(self._graphs) and self._graphs[0][0] is not None and (
            self._graphs[0][0].device != x.device)  # the model moved since the last search
        search = contrastive and (not self._graphs or stale or (
            self.training and self._passes % self.refresh_every == 0))
        if self.training:
            self._passes += 1
        if search:
            self._graphs = []
        h = F.dropout(x, self.dropout, self.training)
        for index, lin in enumerate(self.lins):
            h = lin(h)
            if search:
                self._graphs.append(_affinity_edges(h, self.k, self.num_samples, self.affinity,
                                                    self._generator))
            graph = self._graphs[index] if contrastive else (None, None)
            h = F.relu(self.step._forward(h, edge_index, loops, *graph))
        return self.classifier(F.dropout(h, self.dropout, self.training))

    def extra_repr(self) -> str:
        return (f"depth={len(self.lins)}, k={self.k}, num_samples={self.num_samples}, "
                f"affinity='{self.affinity}', refresh_every={self.refresh_every}")


def trained_depth_study(data: Data, depths: Sequence[int] = (2, 4, 8, 16, 32, 64),
                        schemes: Sequence[str] = SCHEMES, seed: int = 0, *,
                        hidden_channels: int = 64, epochs: int = 100, lr: float = 0.005,
                        weight_decay: float = 5e-4, **kwargs: Any) -> list[dict[str, Any]]:
    """Test accuracy of a deep propagation classifier (a learned linear map before each step) of
    each depth and scheme, trained on the public split (Adam, full batch; the epoch of best
    validation accuracy,
    :func:`~mp_contrastive.gnn.training.fit_node_classifier`); ``kwargs`` go to the model. One
    row per (scheme, depth) with ``test_acc``, ``val_acc``, ``best_epoch`` and ``seconds``."""
    rows = []
    for scheme in schemes:
        for depth in depths:
            seed_everything(seed)
            model = _DeepPropagationClassifier(data.num_features, hidden_channels,
                                               int(data.y.max()) + 1, depth, scheme, seed=seed,
                                               **kwargs)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
            rows.append({"scheme": scheme, "depth": depth,
                         **fit_node_classifier(model, data, optimizer, epochs)})
    return rows
