"""The operators on real graphs: Planetoid data, GNN layers built from the operators, graph
augmentations, supervised and contrastive (GRACE-style) training, and the oversmoothing study."""

from mp_contrastive.graphs.augment import GraphAugment, augment_graph
from mp_contrastive.graphs.contrastive import (
    GRACE_PRESETS,
    GRACEConfig,
    GRACEEncoder,
    GRACEModel,
    GraphContrastiveLoss,
    MultiStageAlignment,
    train_grace,
)
from mp_contrastive.graphs.data import load_planetoid, planted_partition_graph
from mp_contrastive.graphs.models import AlignmentGCNConv, AttentionAlignmentGATConv, NodeClassifier
from mp_contrastive.graphs.oversmoothing import depth_study, propagate
from mp_contrastive.graphs.training import (
    SUPERVISED_PRESETS,
    SupervisedConfig,
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
    "SUPERVISED_PRESETS",
    "SupervisedConfig",
    "seed_everything",
    "train_node_classifier",
    "linear_probe",
    "GRACEConfig",
    "GRACE_PRESETS",
    "GRACEEncoder",
    "GRACEModel",
    "GraphContrastiveLoss",
    "MultiStageAlignment",
    "train_grace",
    "propagate",
    "depth_study",
]
