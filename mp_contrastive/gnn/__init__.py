"""The operators on real graphs: Planetoid data, GNN layers built from the operators, graph
augmentations, supervised and contrastive (GRACE-style) training."""

from mp_contrastive.gnn.augment import GraphAugment, augment_graph
from mp_contrastive.gnn.data import load_planetoid, planted_partition_graph
from mp_contrastive.gnn.grace_config import GRACEConfig
from mp_contrastive.gnn.grace_loss import GraphContrastiveLoss, MultiStageAlignment
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
    "load_planetoid",
    "planted_partition_graph",
    "GraphAugment",
    "augment_graph",
    "AlignmentGCNConv",
    "AttentionAlignmentGATConv",
    "NodeClassifier",
    "SupervisedConfig",
    "seed_everything",
    "train_node_classifier",
    "fit_node_classifier",
    "linear_probe",
    "GRACEConfig",
    "GRACEEncoder",
    "GRACEModel",
    "GraphContrastiveLoss",
    "MultiStageAlignment",
    "train_grace",
    "train_grace_minibatch",
    "embed_nodes",
]
