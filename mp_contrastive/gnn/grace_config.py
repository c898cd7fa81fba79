"""Hyper-parameters of a GRACE-style run (:func:`~mp_contrastive.gnn.train_grace`); the published
settings per dataset are in :mod:`mp_contrastive.experiments.presets`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["VARIANTS", "GRACEConfig"]

#: ``"vanilla"`` (GRACE's loss from the operators), ``"attention"`` and ``"multistage"`` (the
#: paper's variants) and ``"reference"`` (GRACE as its authors' code computes it); see
#: :mod:`~mp_contrastive.gnn.grace_training`.
VARIANTS = ("vanilla", "attention", "multistage", "reference")


@dataclass(frozen=True)
class GRACEConfig:
    """Hyper-parameters of one GRACE-style run (GRACE's ``config.yaml`` names in brackets).

    ``hidden`` [num_hidden] is the encoder's output size (its first layer has ``2 * hidden``, as in
    GRACE's ``Encoder``), ``proj_hidden`` [num_proj_hidden] the projector's hidden size,
    ``drop_edge`` / ``drop_feature`` the rates of views 1 and 2, ``tau`` the temperature.
    ``variant`` is one of :data:`VARIANTS`; ``beta`` and ``attention_normalize`` set the attention
    variant, ``num_stages`` and ``multistage_weight`` the multi-stage one, the ``negatives`` and
    ``knn_*`` fields the negatives' path (see :class:`~mp_contrastive.gnn.GraphContrastiveLoss`).

    ``eval_every`` (not in GRACE's code): probe the encoder (:func:`~mp_contrastive.gnn.linear_probe`)
    every this many epochs and at the last one, and keep the encoder of the checkpoint with the best
    *validation* accuracy (ties: the earlier one); ``None`` keeps the last epoch's encoder.

    ``batch_size`` (not in GRACE's code): train in mini-batches of this many seed nodes
    (:func:`~mp_contrastive.gnn.train_grace_minibatch`), drawn by ``sampler`` (``"neighbor"``:
    PyG's ``NeighborLoader`` with ``num_neighbors`` per hop; ``"subgraph"``: ``RandomNodeLoader``;
    ``"auto"``: the first where pyg-lib or torch-sparse is installed), each batch's negatives
    taken as ``negatives`` says; ``None`` trains on the whole graph at once.
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
    # mini-batches
    batch_size: int | None = None
    sampler: str = "auto"
    num_neighbors: tuple[int, ...] = (10, 10)

    def replace(self, **changes: Any) -> GRACEConfig:
        return GRACEConfig(**{**asdict(self), **changes})
