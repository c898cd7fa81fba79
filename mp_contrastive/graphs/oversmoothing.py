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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.nn import PairNorm
from torch_geometric.utils import add_remaining_self_loops

from mp_contrastive._validation import (
    check_choice,
    check_edge_index,
    check_features,
    check_positive,
    trusted_inputs,
)
from mp_contrastive.graphs.training import linear_probe
from mp_contrastive.knn import affinity_graph, sampled_affinity_graph
from mp_contrastive.nn import AlignmentConv, ContrastiveConv

__all__ = ["SCHEMES", "AFFINITIES", "propagate", "depth_study"]

SCHEMES = ("alignment", "contrastive", "pairnorm")
AFFINITIES = ("knn", "dense")


@torch.no_grad()
def propagate(x: Tensor, edge_index: Tensor, scheme: str, depths: Sequence[int], *,
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
    check_choice(scheme, "scheme", SCHEMES)
    check_choice(affinity, "affinity", AFFINITIES)
    alpha, tau = check_positive(alpha, "alpha"), check_positive(tau, "tau")
    if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
        raise ValueError(f"'depths' must be a non-empty sequence of ints >= 0, got {depths!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < x.size(0):
        raise ValueError(f"'k' must be an int in [1, {x.size(0)}), got {k!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"'num_samples' must be an int >= 0, got {num_samples!r}")
    num_nodes = x.size(0)
    loops, _ = add_remaining_self_loops(edge_index, num_nodes=num_nodes)
    align = AlignmentConv(alpha / (1 + alpha), detach_targets=True, add_self_loops=True)
    contrast = ContrastiveConv(alpha, detach_targets=True)
    pairnorm = PairNorm()
    generator = torch.Generator().manual_seed(seed)

    def node_norm(h: Tensor) -> Tensor:
        return F.normalize(h, dim=1) / math.sqrt(tau)

    h = node_norm(x) if scheme != "pairnorm" else pairnorm(x)
    out = {0: h} if 0 in depths else {}
    for step in range(1, max(depths) + 1):
        with trusted_inputs():
            if scheme == "contrastive":
                if affinity == "dense":
                    affinity_index, weight = None, None
                elif num_samples:
                    affinity_index, weight = sampled_affinity_graph(
                        h, k, num_samples, proposal="uniform", generator=generator)
                else:
                    affinity_index, weight = affinity_graph(h, k)[0], None
                h = node_norm(contrast(h, loops, None, affinity_index, weight))
            else:
                h = align(h, edge_index)
                h = node_norm(h) if scheme == "alignment" else pairnorm(h)
        if step in depths:
            out[step] = h
    return out


def depth_study(data: Data, depths: Sequence[int] = (2, 4, 8, 16, 32, 64),
                schemes: Sequence[str] = SCHEMES, seed: int = 0, probe_weight_decay: float = 5e-4,
                **kwargs: Any) -> list[dict[str, Any]]:
    """Linear-probe accuracy (:func:`~mp_contrastive.graphs.linear_probe`, public split) of the
    features after each depth of each scheme; ``kwargs`` go to :func:`propagate`. One row per
    (scheme, depth) with ``test_acc``, ``val_acc`` and the features' mean pairwise cosine
    ``mean_cosine`` (1 = complete collapse).

    The probe is SGC's: logistic regression with a *fixed* weight decay (default ``5e-4``, GCN's),
    the same for every scheme and depth. An unregularised probe would read class information off
    residuals a thousand times smaller than the features (nearly collapsed rows that still differ
    in the fourth decimal), which no trained GNN layer after the propagation could rely on."""
    rows = []
    for scheme in schemes:
        features = propagate(data.x, data.edge_index, scheme, depths, seed=seed, **kwargs)
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
