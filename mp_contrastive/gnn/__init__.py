"""The operators on real graphs: data loaders (Planetoid and the other graphs of
:func:`load_graph`), graph augmentations, GNN layers built from the operators, the GRACE-style
encoder and loss, supervised and contrastive training (full-batch and mini-batch) and the linear
probe that evaluates frozen embeddings. The experiment harness (presets, command lines, the
oversmoothing study) is :mod:`mp_contrastive.experiments`."""

from mp_contrastive.gnn.augment import GraphAugment, augment_graph
from mp_contrastive.gnn.data import load_graph, load_planetoid, planted_partition_graph
from mp_contrastive.gnn.grace_config import GRACEConfig
from mp_contrastive.gnn.grace_loss import (
    AffinitySchedule,
    GraphContrastiveLoss,
    MultiStageAlignment,
)
from mp_contrastive.gnn.grace_model import GRACEEncoder, GRACEModel
from mp_contrastive.gnn.grace_training import train_grace
from mp_contrastive.gnn.minibatch import embed_nodes, train_grace_minibatch
from mp_contrastive.gnn.models import AlignmentGCNConv, AttentionAlignmentGATConv, NodeClassifier
from mp_contrastive.gnn.training import (
    SupervisedConfig,
    fit_node_classifier,
    linear_probe,
    seed_everything,
    train_node_classifier,
)

__all__ = [
    # data
    "load_planetoid",
    "load_graph",
    "planted_partition_graph",
    # augmentations
    "GraphAugment",
    "augment_graph",
    # models
    "AlignmentGCNConv",
    "AttentionAlignmentGATConv",
    "NodeClassifier",
    "GRACEEncoder",
    "GRACEModel",
    # losses
    "GraphContrastiveLoss",
    "AffinitySchedule",
    "MultiStageAlignment",
    # training and embedding
    "seed_everything",
    "SupervisedConfig",
    "train_node_classifier",
    "fit_node_classifier",
    "GRACEConfig",
    "train_grace",
    "train_grace_minibatch",
    "embed_nodes",
    # evaluation
    "linear_probe",
]
