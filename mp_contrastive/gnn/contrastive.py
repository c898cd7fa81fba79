r"""Graph contrastive learning in the style of GRACE (Zhu et al., 2020), with its loss taken from the
operators, and the paper's two variants (attention alignment, multi-stage alignment).

Two views :math:`(\tilde{X}_1, \tilde{A}_1), (\tilde{X}_2, \tilde{A}_2)` of one graph (edge
dropping, feature masking: :mod:`~mp_contrastive.gnn.augment`) go through one GCN encoder
:math:`f` and a projector :math:`g`; with :math:`u = g(f(\tilde{X}_1, \tilde{A}_1))`,
:math:`v = g(f(\tilde{X}_2, \tilde{A}_2))` and :math:`\theta(a, b) = \cos(a, b) / \tau`, GRACE's
loss for node :math:`i` of view 1 is

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
it is in GRACE's denominator. The loss is then ``ContrastiveConv``'s energy on that sparse graph,
and no :math:`N \times N` matrix is built.

Variants:

* ``variant="reference"``: GRACE as its authors' code computes it, for comparison in the same run:
  PyG's ``GCNConv`` encoder and the NT-Xent by autograd (:func:`~mp_contrastive.losses.plain_nt_xent`),
  dense negatives; the same seed gives the same initial weights and views as ``"vanilla"``.
* ``variant="attention"``: positive pairs reweighted by :class:`~mp_contrastive.nn.AttentionAlignmentConv`
  (the official code's ``normalize="positives"`` on the encoder outputs by default, or the paper's
  ``"negatives"``); :class:`~mp_contrastive.losses.AttentionSimCLRLoss` on the dense path.
* ``variant="multistage"``: the paper's eq. 13 added to the loss, each node pulled towards the mean
  of its own features from the last ``num_stages`` epochs (a
  :class:`~mp_contrastive.multistage.MultiStageMemory`), through an
  :class:`~mp_contrastive.nn.AlignmentConv` step on the bipartite memory-to-node graph.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv

from mp_contrastive._validation import (
    check_choice,
    check_features,
    check_nonnegative,
    check_positive,
    check_positive_int,
    trusted_inputs,
)
from mp_contrastive.gnn.augment import GraphAugment
from mp_contrastive.gnn.models import AlignmentGCNConv
from mp_contrastive.gnn.training import linear_probe, seed_everything
from mp_contrastive.graph import augmentation_graph
from mp_contrastive.knn import sampled_affinity_graph
from mp_contrastive.losses import AttentionSimCLRLoss, SimCLRLoss, descent_loss, plain_nt_xent
from mp_contrastive.multistage import MultiStageMemory
from mp_contrastive.nn import AlignmentConv, AttentionAlignmentConv, ContrastiveConv
from mp_contrastive.nn.attention import NORMALIZATIONS

__all__ = [
    "VARIANTS",
    "AUTO_DENSE_MAX_VIEWS",
    "NEGATIVES",
    "GRACEConfig",
    "GRACE_PRESETS",
    "GRACE_CONFIG_YAML",
    "GRACEEncoder",
    "GRACEModel",
    "GraphContrastiveLoss",
    "MultiStageAlignment",
    "train_grace",
]

VARIANTS = ("vanilla", "attention", "multistage", "reference")
NEGATIVES = ("auto", "dense", "knn")
ACTIVATIONS = ("relu", "prelu")
#: ``negatives="auto"`` uses the dense affinity graph up to this many views (2 x nodes): Cora and
#: CiteSeer (5,416 and 6,654) are dense, PubMed (39,434) takes the kNN path. The dense cost grows
#: as the square of it, the kNN path's search too but with a smaller constant (faiss, IVF).
AUTO_DENSE_MAX_VIEWS = 16384
#: Features with fewer non-zeros than this share are trained as a sparse CSR matrix.
SPARSE_FEATURES_BELOW = 0.1


@dataclass(frozen=True)
class GRACEConfig:
    """Hyper-parameters of one GRACE-style run (GRACE's ``config.yaml`` names in brackets).

    ``hidden`` [num_hidden] is the encoder's output size (its first layer has ``2 * hidden``, as in
    GRACE's ``Encoder``), ``proj_hidden`` [num_proj_hidden] the projector's hidden size,
    ``drop_edge`` / ``drop_feature`` the rates of views 1 and 2, ``tau`` the temperature.

    ``eval_every`` (not in GRACE's code): probe the encoder (:func:`~mp_contrastive.gnn.linear_probe`)
    every this many epochs and at the last one, and keep the encoder of the checkpoint with the best
    *validation* accuracy (ties: the earlier one); ``None`` keeps the last epoch's encoder.
    """

    lr: float = 5e-4
    hidden: int = 128
    proj_hidden: int = 128
    activation: str = "relu"
    num_layers: int = 2
    drop_edge: tuple[float, float] = (0.2, 0.4)
    drop_feature: tuple[float, float] = (0.3, 0.4)
    tau: float = 0.4
    epochs: int = 200
    weight_decay: float = 1e-5
    encoder_layer: str = "gcn"
    variant: str = "vanilla"
    # attention alignment
    beta: float = 1.0
    attention_normalize: str = "positives"
    # multi-stage alignment
    num_stages: int = 1
    multistage_weight: float = 0.5
    # negatives
    negatives: str = "auto"
    knn_k: int = 64
    knn_samples: int = 256
    knn_refresh: int = 1
    knn_index: str = "ivf"
    # model selection
    eval_every: int | None = None

    def replace(self, **changes: Any) -> GRACEConfig:
        return GRACEConfig(**{**asdict(self), **changes})


#: GRACE's own settings and protocol, per dataset (``config.yaml`` of CRIPAC-DIG/GRACE, tuned on
#: random splits; the last epoch's encoder is evaluated).
GRACE_CONFIG_YAML: dict[str, GRACEConfig] = {
    "Cora": GRACEConfig(),
    "CiteSeer": GRACEConfig(lr=1e-3, hidden=256, proj_hidden=256, activation="prelu",
                            drop_edge=(0.2, 0.0), drop_feature=(0.3, 0.2), tau=0.9),
    "PubMed": GRACEConfig(lr=1e-3, hidden=256, proj_hidden=256, drop_edge=(0.4, 0.1),
                          drop_feature=(0.0, 0.2), tau=0.7, epochs=1500),
}

#: The defaults of :func:`train_grace`'s examples. Cora: the settings DGL's GRACE example re-tuned
#: for the public split (hidden 256, drop_edge (0.3, 0.4), 400 epochs; the rest as in
#: ``config.yaml``), with the encoder selected by the probe's validation accuracy every 25 epochs
#: (DGL and GRACE evaluate the last epoch). Over seeds 0-9 the selected encoders reach validation
#: 81.4 and test 82.1 +- 0.8, against 81.1 +- 0.9 for ``config.yaml``'s settings trained 500
#: epochs under the same selection. CiteSeer: ``config.yaml`` (DGL's public-split settings, hidden
#: 512, 100 epochs, gave 66.0 and 68.3 on seeds 0 and 5 here; the validation-selected epoch of 400
#: gave 69.0 and 70.1 on seeds 0 and 1, the last of 200 gave 70.2 and 68.4). PubMed: ``config.yaml`` with
#: negatives through the kNN path (39,434 views), its edges refreshed every 10 epochs, since the
#: search costs most of a CPU step (benchmarks/gnn.py).
GRACE_PRESETS: dict[str, GRACEConfig] = {
    "Cora": GRACE_CONFIG_YAML["Cora"].replace(hidden=256, proj_hidden=256, drop_edge=(0.3, 0.4),
                                              epochs=400, eval_every=25),
    "CiteSeer": GRACE_CONFIG_YAML["CiteSeer"],
    "PubMed": GRACE_CONFIG_YAML["PubMed"].replace(knn_k=32, knn_samples=128, knn_refresh=10),
}

class GRACEEncoder(nn.Module):
    r"""GRACE's encoder: ``num_layers`` GCN layers of widths ``in -> 2 hidden -> ... -> hidden``, each
    followed by the activation (one shared ``PReLU`` for ``"prelu"``, as in GRACE).

    Args:
        in_channels (int): input features. hidden (int): output features.
        activation (str): ``"relu"`` or ``"prelu"``.
        num_layers (int): at least 2 (default 2).
        layer (str): ``"gcn"`` (:class:`~mp_contrastive.gnn.AlignmentGCNConv`, ours) or
            ``"pyg_gcn"`` (PyG's ``GCNConv``, GRACE's own).
    """

    def __init__(self, in_channels: int, hidden: int, activation: str = "relu", num_layers: int = 2,
                 layer: str = "gcn") -> None:
        super().__init__()
        check_choice(activation, "activation", ACTIVATIONS)
        check_choice(layer, "layer", ("gcn", "pyg_gcn"))
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 2:
            raise ValueError(f"'num_layers' must be an int >= 2 (GRACE's encoder), got {num_layers!r}")
        conv = AlignmentGCNConv if layer == "gcn" else GCNConv
        widths = [in_channels] + [2 * hidden] * (num_layers - 1) + [hidden]
        self.convs = nn.ModuleList(conv(i, o) for i, o in zip(widths[:-1], widths[1:], strict=True))
        self.activation: nn.Module = nn.PReLU() if activation == "prelu" else nn.ReLU()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        for conv in self.convs:
            x = self.activation(conv(x, edge_index))
        return x


class GRACEModel(nn.Module):
    """Encoder and GRACE's projector :math:`g(z) = W_2\\, \\mathrm{ELU}(W_1 z)` (``hidden ->
    proj_hidden -> hidden``)."""

    def __init__(self, encoder: GRACEEncoder, hidden: int, proj_hidden: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc1 = nn.Linear(hidden, proj_hidden)
        self.fc2 = nn.Linear(proj_hidden, hidden)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.encoder(x, edge_index)

    def projection(self, z: Tensor) -> Tensor:
        return self.fc2(F.elu(self.fc1(z)))


class GraphContrastiveLoss(nn.Module):
    r"""GRACE's loss (inter- and intra-view negatives), from the operators; see the module docs.

    ``loss(u, v)`` with the two views' projections ``[N, d]`` returns the mean over the :math:`2N`
    anchors. ``attention_features`` (attention only) are per-view features the attention is
    computed on (a pair, e.g. the encoder outputs), default the projections.

    Args:
        tau (float): temperature :math:`\tau`.
        attention (str, optional): attention alignment's normalisation, ``"positives"`` (official
            code), ``"negatives"`` (paper) or ``"neighbors"``; ``None`` for plain GRACE.
        beta (float): attention sharpness.
        negatives (str): ``"dense"``, ``"knn"`` or ``"auto"`` (kNN for more than
            :data:`AUTO_DENSE_MAX_VIEWS` views, i.e. :math:`2N`; below it the dense graph, processed
            in tiles above :data:`~mp_contrastive.nn._base.BLOCKWISE_THRESHOLD` entries, costs
            less than the kNN search).
        knn_k (int): top-:math:`k` head per anchor. knn_samples (int): uniform tail draws per anchor.
        knn_refresh (int): recompute the affinity *edges* every this many calls (their weights and
            softmax always use the current features; a stale head keeps the estimate unbiased).
        knn_index (str): ``"ivf"`` (default: faiss IVF, an approximate head, several times faster
            on the CPU; the tail keeps the estimate unbiased) or ``"flat"`` (exact head).
        seed (int): seed of the tail draws.
    """

    def __init__(self, tau: float, attention: str | None = None, beta: float = 1.0,
                 negatives: str = "auto", knn_k: int = 64, knn_samples: int = 256,
                 knn_refresh: int = 1, knn_index: str = "ivf", seed: int = 0) -> None:
        super().__init__()
        self.tau = check_positive(tau, "tau")
        self.negatives = check_choice(negatives, "negatives", NEGATIVES)
        if attention is not None:
            check_choice(attention, "attention", NORMALIZATIONS)
        self.attention = attention
        for name, value in (("knn_k", knn_k), ("knn_samples", knn_samples),
                            ("knn_refresh", knn_refresh)):
            check_positive_int(value, name)
        self.knn_k, self.knn_samples, self.knn_refresh = knn_k, knn_samples, knn_refresh
        self.knn_index = check_choice(knn_index, "knn_index", ("ivf", "flat"))
        kernel = "dot" if attention == "negatives" else "cosine"
        att = None if attention is None else AttentionAlignmentConv(beta=beta, normalize=attention,
                                                                     kernel=kernel)
        self.dense = (SimCLRLoss(tau) if attention is None else
                      AttentionSimCLRLoss(tau, beta=beta, normalize=attention, kernel=kernel))
        self.conv = ContrastiveConv(alpha=1.0, normalize=False, attention=att)
        self.generator = torch.Generator().manual_seed(seed)
        #: ``"dense"`` or ``"knn"``: the path the last call took.
        self.last_path: str | None = None
        #: number of affinity edges of the last kNN call (``None`` after a dense call).
        self.last_affinity_edges: int | None = None
        self._calls = 0
        self._affinity: tuple[Tensor, Tensor] | None = None
        self._affinity_views = 0  # the number of views the cached edges were built for

    def uses_knn(self, num_nodes: int) -> bool:
        """Whether ``num_nodes`` nodes per view take the kNN path."""
        if self.negatives == "auto":
            return 2 * num_nodes > AUTO_DENSE_MAX_VIEWS
        return self.negatives == "knn"

    def forward(self, u: Tensor, v: Tensor,
                attention_features: tuple[Tensor, Tensor] | None = None) -> Tensor:
        u, v = check_features(u, "u"), check_features(v, "v")
        if u.shape != v.shape:
            raise ValueError(f"'v' must have the shape of 'u' {tuple(u.shape)}, got {tuple(v.shape)}")
        if attention_features is not None and self.attention is None:
            raise ValueError("'attention_features' needs an attention variant")
        if not self.uses_knn(u.size(0)):
            self.last_path, self.last_affinity_edges = "dense", None
            if self.attention is None:
                return self.dense(u, v)
            return self.dense(u, v, attention_features=attention_features)
        return self._knn_loss(u, v, attention_features)

    def _knn_loss(self, u: Tensor, v: Tensor,
                  attention_features: tuple[Tensor, Tensor] | None) -> Tensor:
        n = u.size(0)
        h = F.normalize(torch.cat([u, v]), dim=1) / math.sqrt(self.tau)
        graph = augmentation_graph(n, 2, device=h.device, dtype=h.dtype)
        stale = self._affinity_views != 2 * n  # another graph: never reuse its edges
        if stale or self._calls % self.knn_refresh == 0:
            with torch.no_grad():
                edges, weights = sampled_affinity_graph(
                    h.detach(), min(self.knn_k, 2 * n - 2), self.knn_samples, proposal="uniform",
                    exclude=graph.edge_index, index=self.knn_index, generator=self.generator)
            # The positive is part of every anchor's partition function (GRACE's denominator).
            self._affinity = (torch.cat([edges, graph.edge_index], 1),
                              torch.cat([weights, torch.ones_like(graph.edge_weight)]))
            self._affinity_views = 2 * n
        self._calls += 1
        affinity_index, affinity_weight = self._affinity
        attention_x = None
        if attention_features is not None:
            attention_x = torch.cat(list(attention_features)).detach().to(h.dtype)
        with torch.no_grad(), trusted_inputs():
            step, energy = self.conv.step_and_energy(h, graph.edge_index, graph.edge_weight,
                                                     affinity_index, affinity_weight,
                                                     attention_x=attention_x)
        self.last_path, self.last_affinity_edges = "knn", affinity_index.size(1)

        def step_fn(h: Tensor) -> Tensor:  # second derivatives only (create_graph=True)
            return self.conv.step(h, graph.edge_index, graph.edge_weight, affinity_index,
                                  affinity_weight, attention_x=attention_x)

        return descent_loss(h, step, self.conv.alpha, energy, step_fn) / (2 * n)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, attention={self.attention!r}, negatives='{self.negatives}', "
                f"knn_k={self.knn_k}, knn_samples={self.knn_samples}")


class MultiStageAlignment(nn.Module):
    r"""Multi-stage alignment (paper eq. 13) for full-graph training, where one epoch is one step:

    .. math::
        L_{ms} = -\frac{\lambda}{2N} \sum_{v=1}^{2} \sum_i h^{(v)}_i \cdot
        \mathrm{sg}\Big(\tfrac{1}{|S_i|} \sum_{s \in S_i} m^{(t-s)}_i\Big),

    :math:`h = \mathrm{normalize}(g(f(\cdot))) / \sqrt{\tau}`, :math:`m^{(t)}_i` the mean of node
    :math:`i`'s two views at epoch :math:`t`, :math:`S_i` the stored epochs among the last
    ``num_stages`` (none at the first epoch: no term). The gradient is the step of an
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

    def forward(self, u: Tensor, v: Tensor, epoch: int) -> Tensor:
        """The term at ``epoch`` for projections ``u``, ``v``; then stores this epoch's stage."""
        n = u.size(0)
        h = F.normalize(torch.cat([u, v]), dim=1) / math.sqrt(self.tau)
        index = torch.arange(n, device=h.device)
        target, count = self.memory.read(index, epoch)
        self.memory.write(index, 0.5 * (h[:n] + h[n:]).detach(), epoch)
        nodes = index[count > 0]
        if nodes.numel() == 0:
            return h.sum() * 0.0
        src = (2 * n + nodes).repeat(2)
        edge_index = torch.stack([src, torch.cat([nodes, nodes + n])])
        edge_weight = torch.full((edge_index.size(1),), self.weight, dtype=h.dtype, device=h.device)
        x = torch.cat([h, target.to(h.dtype)])
        with torch.no_grad(), trusted_inputs():
            step = self.conv.step(x, edge_index, edge_weight)[: 2 * n]
        value = -(self.weight * (h[nodes] * target[nodes]).sum()
                  + self.weight * (h[nodes + n] * target[nodes]).sum())

        def step_fn(h: Tensor) -> Tensor:  # the targets are memory rows: constants, as in L_ms
            return self.conv.step(torch.cat([h, target.to(h.dtype)]), edge_index,
                                  edge_weight)[: 2 * n]

        return descent_loss(h, step, self.conv.alpha, value, step_fn) / (2 * n)


def train_grace(config: GRACEConfig, data: Data, seed: int = 0, *,
                progress: Callable[[int, float], None] | None = None,
                evaluate: bool = True) -> dict[str, Any]:
    r"""Train a GRACE-style model on ``data`` and, with ``evaluate``, probe its frozen encoder
    linearly on the data's split (:func:`~mp_contrastive.gnn.linear_probe`).

    Returns ``test_acc``, ``val_acc`` (%), ``losses`` (per epoch), ``seconds``, ``path`` (the
    negatives' path, ``"dense"`` or ``"knn"``), ``embeddings`` and ``model``. ``progress(epoch,
    loss)`` is called after every epoch.

    With ``config.eval_every`` the encoder is probed every that many epochs and at the last one
    (validation accuracy only selects; the global generator is forked around the probes, so the
    training trajectory is that of ``eval_every=None``); ``model`` and ``embeddings`` are those of the
    checkpoint with the best validation accuracy (ties: the earlier epoch), the result adds
    ``best_epoch`` and ``checkpoints`` (``(epoch, val_acc, test_acc)`` of every probe; the test
    accuracies are reported, never used) and, with ``evaluate``, holds that checkpoint's probe.
    ``seconds`` counts training only, not the probes. The data needs its split masks then, even
    with ``evaluate=False``.

    Raises:
        ValueError: an unknown variant, a non-positive learning rate, a negative weight decay, or an
            ``eval_every`` that is not a positive int (or ``None``).
    """
    check_choice(config.variant, "variant", VARIANTS)
    check_positive(config.lr, "lr")
    check_nonnegative(config.weight_decay, "weight_decay")
    eval_every = config.eval_every
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int)
                                   or eval_every < 1):
        raise ValueError(f"'eval_every' must be a positive int or None, got {eval_every!r}")
    seed_everything(seed)
    x = check_features(data.x, "data.x")
    if float((x != 0).float().mean()) < SPARSE_FEATURES_BELOW:
        with warnings.catch_warnings():  # the CSR layout's "beta" notice
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            x = x.to_sparse_csr()  # same views and results, the first layer costs O(nnz)
    reference = config.variant == "reference"
    encoder = GRACEEncoder(data.num_features, config.hidden, config.activation, config.num_layers,
                           "pyg_gcn" if reference else config.encoder_layer)
    model = GRACEModel(encoder, config.hidden, config.proj_hidden).to(x.device)
    views = [GraphAugment(e, f) for e, f in zip(config.drop_edge, config.drop_feature, strict=True)]
    attention = config.attention_normalize if config.variant == "attention" else None
    loss_fn = GraphContrastiveLoss(config.tau, attention, config.beta, config.negatives,
                                   config.knn_k, config.knn_samples, config.knn_refresh,
                                   config.knn_index, seed=seed)
    multistage = (MultiStageAlignment(data.num_nodes, config.hidden, config.tau, config.num_stages,
                                      config.multistage_weight).to(x.device)
                  if config.variant == "multistage" else None)
    sample = torch.arange(data.num_nodes, device=x.device).repeat(2)  # the reference's pairs
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    checkpoints: list[tuple[int, float, float]] = []
    best: dict[str, Any] | None = None  # the best checkpoint: epoch, probe, embeddings, weights
    probing = 0.0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        optimizer.zero_grad()
        z1, z2 = (model(*view(x, data.edge_index)) for view in views)
        u, v = model.projection(z1), model.projection(z2)
        # The official attention code scores positive pairs on backbone features (the encoder).
        features = (z1, z2) if attention == "positives" else None
        if reference:
            loss = plain_nt_xent(torch.cat([u, v]), sample, config.tau)
        else:
            loss = loss_fn(u, v, features)
        if multistage is not None:
            loss = loss + multistage(u, v, epoch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if eval_every is not None and (epoch % eval_every == 0 or epoch == config.epochs):
            probe_started = time.perf_counter()
            model.eval()
            # The probe's classifier is built by nn.Linear, which draws from the global generator:
            # fork it so that the views after this epoch are those of a run without probes.
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                with torch.no_grad():
                    embeddings = model(x, data.edge_index)
                probe = linear_probe(embeddings, data, seed=seed)
            checkpoints.append((epoch, probe["val_acc"], probe["test_acc"]))
            if best is None or probe["val_acc"] > best["probe"]["val_acc"]:
                best = {"epoch": epoch, "probe": probe, "embeddings": embeddings,
                        "state": {k: t.detach().clone() for k, t in model.state_dict().items()}}
            probing += time.perf_counter() - probe_started
        if progress is not None:
            progress(epoch, losses[-1])
    result: dict[str, Any] = {"losses": losses, "seconds": time.perf_counter() - started - probing,
                              "path": "dense" if reference else loss_fn.last_path, "model": model}
    model.eval()
    if best is not None:
        model.load_state_dict(best["state"])
        result.update(embeddings=best["embeddings"], best_epoch=best["epoch"],
                      checkpoints=checkpoints)
        if evaluate:
            result.update(best["probe"])
        return result
    with torch.no_grad():
        result["embeddings"] = model(x, data.edge_index)
    if evaluate:
        result.update(linear_probe(result["embeddings"], data, seed=seed))
    return result
